//! An SQS queue with the semantics the functions live with: at-least-once delivery (a standard
//! queue may deliver a message again after it was received, even after it was deleted through
//! another copy), `DelaySeconds`, a visibility timeout after each receive, a receive count and
//! redrive to a dead-letter queue after `max_receive` receives, and for FIFO queues ordering
//! within a message group, deduplication by id for five minutes (deleted or not), and no
//! per-message delay.

use asg_core::cloud::Outgoing;
use asg_core::domain::model::Epoch;

use crate::rng::Rng;

/// SQS keeps a FIFO deduplication id this long, whether or not the message was deleted.
pub const FIFO_DEDUP_WINDOW: Epoch = 5 * 60;
pub const MAX_DELAY: i32 = 900;

#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub body: String,
    pub group_id: Option<String>,
    /// When it may be received: after its delay, or after the visibility timeout of its last
    /// receive.
    pub visible_at: Epoch,
    pub receive_count: u32,
    /// The handle of its latest receive: only that one deletes it.
    pub receipt: Option<u64>,
    pub sent_at: Epoch,
}

/// One received message, as the event source mapping hands it to a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_id: String,
    pub receipt: u64,
    pub body: String,
    pub receive_count: u32,
}

#[derive(Debug, Clone)]
pub struct Queue {
    pub name: String,
    pub fifo: bool,
    pub visibility_timeout: Epoch,
    pub max_receive: u32,
    /// Chance that a receive leaves a second copy behind, delivered again later (standard only).
    pub duplicate_chance: f64,
    pub messages: Vec<Message>,
    pub dead_letters: Vec<Message>,
    dedup: Vec<(String, Epoch)>,
    seq: u64,
}

impl Queue {
    pub fn new(name: &str, visibility_timeout: Epoch, max_receive: u32) -> Queue {
        Queue {
            name: name.to_string(),
            fifo: name.ends_with(".fifo"),
            visibility_timeout,
            max_receive,
            duplicate_chance: 0.0,
            messages: Vec::new(),
            dead_letters: Vec::new(),
            dedup: Vec::new(),
            seq: 0,
        }
    }

    /// SendMessageBatch: how many entries were refused (each for a reason SQS would give).
    pub fn send(&mut self, entries: &[Outgoing], now: Epoch) -> usize {
        let mut refused = 0;
        self.dedup.retain(|(_, until)| *until > now);
        for e in entries {
            let delay = if self.fifo {
                // FIFO queues take no per-message delay and need both ids (no content-based
                // deduplication here).
                if e.delay_seconds != 0 || e.group_id.is_none() || e.dedup_id.is_none() {
                    refused += 1;
                    continue;
                }
                let dedup = e.dedup_id.clone().unwrap_or_default();
                if self.dedup.iter().any(|(id, _)| *id == dedup) {
                    // Accepted, and dropped as a duplicate.
                    continue;
                }
                self.dedup.push((dedup, now + FIFO_DEDUP_WINDOW));
                0
            } else {
                if !(0..=MAX_DELAY).contains(&e.delay_seconds) {
                    refused += 1;
                    continue;
                }
                e.delay_seconds
            };
            self.seq += 1;
            self.messages.push(Message {
                id: format!("{}-{:06}", self.name.trim_end_matches(".fifo"), self.seq),
                body: e.body.clone(),
                group_id: e.group_id.clone(),
                visible_at: now + Epoch::from(delay),
                receive_count: 0,
                receipt: None,
                sent_at: now,
            });
        }
        refused
    }

    /// ReceiveMessage of up to `max` messages. A message already received `max_receive` times is
    /// moved to the dead-letter queue instead of being delivered again.
    pub fn receive(&mut self, max: usize, now: Epoch, rng: &mut Rng) -> Vec<Delivery> {
        let mut order: Vec<usize> = (0..self.messages.len()).filter(|&i| self.messages[i].visible_at <= now).collect();
        if !self.fifo {
            rng.shuffle(&mut order);
        }
        let mut busy_groups: Vec<String> = if self.fifo {
            self.messages
                .iter()
                .filter(|m| m.visible_at > now && m.receipt.is_some())
                .filter_map(|m| m.group_id.clone())
                .collect()
        } else {
            Vec::new()
        };
        let mut out = Vec::new();
        let mut dead = Vec::new();
        let mut copies = Vec::new();
        for i in order {
            if out.len() == max {
                break;
            }
            let m = &mut self.messages[i];
            if let Some(g) = &m.group_id {
                if busy_groups.contains(g) {
                    continue;
                }
            }
            if m.receive_count >= self.max_receive {
                dead.push(i);
                continue;
            }
            self.seq += 1;
            m.receive_count += 1;
            m.receipt = Some(self.seq);
            m.visible_at = now + self.visibility_timeout;
            if let Some(g) = &m.group_id {
                busy_groups.push(g.clone());
            }
            out.push(Delivery {
                message_id: m.id.clone(),
                receipt: self.seq,
                body: m.body.clone(),
                receive_count: m.receive_count,
            });
            if !self.fifo && rng.chance(self.duplicate_chance) {
                let mut copy = m.clone();
                copy.receipt = None;
                copy.visible_at = now + rng.range(1, 120);
                copies.push(copy);
            }
        }
        dead.sort_unstable();
        for i in dead.into_iter().rev() {
            let m = self.messages.remove(i);
            self.dead_letters.push(m);
        }
        self.messages.extend(copies);
        out
    }

    /// Moves the messages whose body contains `needle` to the dead-letter queue, as if each had
    /// failed its last receive; how many.
    pub fn dead_letter(&mut self, needle: &str) -> usize {
        let before = self.dead_letters.len();
        let (gone, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.messages).into_iter().partition(|m| m.body.contains(needle));
        self.messages = kept;
        self.dead_letters.extend(gone);
        self.dead_letters.len() - before
    }

    /// DeleteMessage: only the latest receipt of a message deletes it.
    pub fn delete(&mut self, receipt: u64) -> bool {
        let before = self.messages.len();
        self.messages.retain(|m| m.receipt != Some(receipt));
        self.messages.len() < before
    }

    /// Messages waiting, in flight or delayed.
    pub fn depth(&self) -> usize {
        self.messages.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(body: &str, delay: i32, id: Option<&str>) -> Outgoing {
        Outgoing {
            body: body.into(),
            delay_seconds: delay,
            group_id: id.map(str::to_string),
            dedup_id: id.map(str::to_string),
        }
    }

    #[test]
    fn delayed_messages_wait_and_received_ones_come_back_after_the_visibility_timeout() {
        let mut rng = Rng::new(1);
        let mut q = Queue::new("swap", 60, 3);
        assert_eq!(q.send(&[out("a", 30, None), out("b", 901, None)], 0), 1, "a delay over 900 s is refused");
        assert!(q.receive(10, 29, &mut rng).is_empty());
        let got = q.receive(10, 30, &mut rng);
        assert_eq!(got.len(), 1);
        assert!(q.receive(10, 89, &mut rng).is_empty(), "invisible until the timeout ends");
        let again = q.receive(10, 90, &mut rng);
        assert_eq!((again.len(), again[0].receive_count), (1, 2));
        assert!(!q.delete(got[0].receipt), "a stale receipt deletes nothing");
        assert!(q.delete(again[0].receipt));
        assert_eq!(q.depth(), 0);
    }

    #[test]
    fn a_message_received_max_receive_times_is_dead_lettered() {
        let mut rng = Rng::new(1);
        let mut q = Queue::new("swap", 10, 2);
        q.send(&[out("a", 0, None)], 0);
        assert_eq!(q.receive(1, 0, &mut rng).len(), 1);
        assert_eq!(q.receive(1, 10, &mut rng).len(), 1);
        assert!(q.receive(1, 20, &mut rng).is_empty());
        assert_eq!((q.depth(), q.dead_letters.len()), (0, 1));
    }

    #[test]
    fn fifo_queues_deduplicate_for_five_minutes_keep_group_order_and_refuse_delays() {
        let mut rng = Rng::new(1);
        let mut q = Queue::new("spot.fifo", 60, 3);
        assert_eq!(q.send(&[out("a", 0, Some("i-1")), out("a again", 0, Some("i-1")), out("b", 5, Some("i-2"))], 0), 1);
        assert_eq!(q.depth(), 1, "the duplicate is accepted and dropped, the delayed one refused");
        let got = q.receive(10, 0, &mut rng);
        assert!(q.delete(got[0].receipt));
        assert_eq!(q.send(&[out("a", 0, Some("i-1"))], 299), 0);
        assert_eq!(q.depth(), 0, "deduplicated even after deletion");
        q.send(&[out("a", 0, Some("i-1"))], 300);
        q.send(&[out("c", 0, Some("i-1"))], 301);
        assert_eq!(q.receive(10, 301, &mut rng).len(), 1, "one message of a group in flight at a time");
    }

    #[test]
    fn a_standard_queue_may_deliver_a_message_twice() {
        let mut rng = Rng::new(3);
        let mut q = Queue::new("swap", 600, 5);
        q.duplicate_chance = 1.0;
        q.send(&[out("a", 0, None)], 0);
        let first = q.receive(10, 0, &mut rng);
        assert!(q.delete(first[0].receipt));
        let second = q.receive(10, 200, &mut rng);
        assert_eq!((second.len(), second[0].message_id.as_str()), (1, first[0].message_id.as_str()));
    }
}
