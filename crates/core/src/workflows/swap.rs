//! The swapper's work on one message: swap a copy (Spot, or On-Demand for the floor) in for the
//! instance it replaces. Each step re-reads what it depends on, so the message can
//! be delivered any number of times, or resumed after a crash, and do each change once:
//! verify -> wait for readiness (by re-enqueueing, never sleeping) -> make room -> attach ->
//! confirm InService -> retire the replaced instance through the group -> put MaxSize back.

use tracing::{info, warn};

use crate::actions::{current_template, on_error, paused, put_max_back, read_group, record_ids, send_swaps, set_aside};
use crate::cloud::{Cloud, InstanceQuery, ANY_STATE, LIVE};
use crate::config::Config;
use crate::domain::drift::{drift, fingerprint, pause_value, TAG_ROLLOUT_PAUSED};
use crate::domain::housekeeping::busy;
use crate::domain::model::{
    Epoch, Group, Health, Instance, Lifecycle, Market, Tags, TAG_GROUP, TAG_ORIGINAL_MAX, TAG_REPLACES,
    TAG_SWAP_UNDER_WAY,
};
use crate::domain::policy::Mode;
use crate::domain::state::GroupState;
use crate::message::{Outcome, SwapRequest};
use crate::metrics::{self, Metrics};

pub async fn swap<C: Cloud>(cloud: &C, config: &Config, metrics: &Metrics, body: &str, now: Epoch) -> Outcome {
    let req = match SwapRequest::parse(body) {
        Ok(r) => r,
        Err(why) => return Outcome::Rejected(why),
    };
    record_ids(&req.group, &req.old, Some(&req.new));
    Swap { cloud, config, metrics, req: &req, now }.run().await
}

fn not_ready(id: &str, h: &Health) -> String {
    format!("{id} has not passed its status checks (state {}, system {}, instance {})", h.state, h.system, h.instance)
}

struct Swap<'a, C> {
    cloud: &'a C,
    config: &'a Config,
    metrics: &'a Metrics,
    req: &'a SwapRequest,
    now: Epoch,
}

impl<C: Cloud> Swap<'_, C> {
    async fn run(&self) -> Outcome {
        let SwapRequest { group: group_name, old: od, new: spot_id, market, .. } = self.req;
        // While the copy only waits for its status checks (and its deadline is not near), its
        // status is all there is to read; everything else is read once it is ready, before any
        // change. A forged message gains nothing here: this reads, and re-sends itself.
        let mut checked = None;
        if self.req.launched.is_some_and(|t| self.now < t + self.config.ready_deadline) {
            match self.cloud.health(std::slice::from_ref(spot_id)).await {
                Ok(mut found) => match found.remove(spot_id) {
                    Some(h) if h.state.is_live() && !h.passed() => return self.later(&not_ready(spot_id, &h)).await,
                    other => checked = other,
                },
                Err(e) if e.is_not_found() => {}
                Err(e) => return on_error("could not read the copy's status", e),
            }
        }
        let spot = match self.cloud.instances(&InstanceQuery::Ids(vec![spot_id.clone()]), ANY_STATE).await {
            Ok(found) => match found.into_iter().next() {
                Some(s) => s,
                None => return Outcome::Rejected(format!("instance {spot_id} does not exist")),
            },
            Err(e) => return on_error("could not describe the copy", e),
        };
        // A forged or mixed-up message names an instance we did not launch for this pair.
        if Market::of(&spot) != *market
            || spot.tag(TAG_REPLACES) != Some(od.as_str())
            || spot.tag(TAG_GROUP) != Some(group_name.as_str())
        {
            return Outcome::Rejected(format!(
                "{spot_id} is not a {} copy launched by asg-optimizer to replace {od} in {group_name}; nothing changed",
                market.as_str()
            ));
        }
        if !spot.is_live() {
            return Outcome::Dropped(format!("{spot_id} is {}; {od} kept", spot.state));
        }
        let group = match self.group().await {
            Ok(Some(g)) => g,
            Ok(None) => {
                return Outcome::Dropped(format!("group {group_name} is gone; the scanner will clean up {spot_id}"))
            }
            Err(outcome) => return outcome,
        };
        let attached = group.member(spot_id).is_some();
        if !group.opted_in(&self.config.opt_in_key, &self.config.opt_in_value) {
            // Opted out mid-swap: nothing goes on, and a copy already attached comes back out,
            // so that the group is as its operator left it.
            if attached && group.replaced_still_here(&spot) {
                return self.roll_back(&group, format!("group {group_name} was opted out mid-swap")).await;
            }
            return Outcome::Dropped(format!(
                "group {group_name} is no longer opted in; the scanner will clean up {spot_id}"
            ));
        }
        // Dry-run changes nothing; a disabled group starts nothing new, but a swap already past
        // its attach is finished, so that no extra instance is left in the group.
        let policy = GroupState::read(&group.tags, &self.config.policy).policy;
        if policy.mode == Mode::DryRun || (policy.mode == Mode::Disabled && !attached) {
            if let Some(outcome) = paused(&policy, group_name, &format!("swap {spot_id} in for {od}")) {
                return outcome;
            }
        }
        if attached {
            // Attached by an earlier delivery: resume after the attach, with the group just read.
            return self.finish(&spot, Some(group)).await;
        }
        self.attach(&spot, group, checked).await
    }

    async fn group(&self) -> Result<Option<Group>, Outcome> {
        read_group(self.cloud, &self.req.group).await.map_err(|e| on_error("could not describe the group", e))
    }

    /// `checked`: the copy's status as this delivery has read it already, if it has.
    async fn attach(&self, spot: &Instance, group: Group, checked: Option<Health>) -> Outcome {
        let (od, spot_id) = (&self.req.old, &self.req.new);
        let Some(member) = group.member(od) else {
            return Outcome::Dropped(format!(
                "{od} is no longer in {}; the scanner will clean up {spot_id}",
                group.name
            ));
        };
        if member.protected_from_scale_in {
            return self.abandon(spot, format!("{od} is now protected from scale-in")).await;
        }
        // Why not now, and whether it is the copy's own status checks.
        let wait = if member.lifecycle != Lifecycle::InService {
            Some((format!("{od} is {}", member.lifecycle), false))
        } else if let Some(why) = group.unsupported() {
            Some((format!("group {why}"), false))
        } else {
            let health = match checked {
                Some(h) => Some(h),
                None => match self.cloud.health(std::slice::from_ref(spot_id)).await {
                    Ok(mut found) => found.remove(spot_id),
                    Err(e) => return on_error("could not read the copy's status", e),
                },
            };
            match health {
                Some(h) if h.passed() => None,
                Some(h) => Some((not_ready(spot_id, &h), true)),
                None => Some((format!("{spot_id} has no status yet"), true)),
            }
        };
        if let Some((why, checks)) = wait {
            if self.now >= spot.launch_time + self.config.ready_deadline {
                // Only a copy that failed its own checks says anything about its configuration.
                if checks {
                    self.pause_rollout(spot, &group).await;
                }
                return self
                    .abandon(spot, format!("not ready {} s after launch: {why}", self.config.ready_deadline))
                    .await;
            }
            return self.later(&why).await;
        }

        // Mark the group first: a swap of ours may be attached here from now on, which lets a
        // later step finish or undo it even if the group is opted out meanwhile. Then make room:
        // AttachInstances fails when desired + 1 > MaxSize; the original MaxSize is recorded in
        // the same call, before the raise, so a crash here can be repaired by a scan.
        let raise = group.desired + 1 > group.max;
        let mut tags = Tags::new();
        if !group.tags.contains_key(TAG_SWAP_UNDER_WAY) {
            tags.insert(TAG_SWAP_UNDER_WAY.to_string(), self.now.to_string());
        }
        if raise && !group.tags.contains_key(TAG_ORIGINAL_MAX) {
            tags.insert(TAG_ORIGINAL_MAX.to_string(), group.max.to_string());
        }
        if !tags.is_empty() {
            if let Err(e) = self.cloud.tag_group(&group.name, &tags).await {
                return on_error("could not mark the group before the attach", e);
            }
        }
        if raise {
            if let Err(e) = self.cloud.set_max_size(&group.name, group.desired + 1).await {
                return on_error("could not raise MaxSize", e);
            }
            info!(asg = %group.name, from = group.max, to = group.desired + 1, "raised MaxSize to attach");
        }
        if let Err(e) = self.cloud.attach(&group.name, std::slice::from_ref(spot_id)).await {
            // A concurrent delivery may have attached it: the re-read in finish() decides.
            warn!(code = e.code(), error = %e, "attach failed; re-reading the group");
            if !matches!(self.group().await, Ok(Some(g)) if g.member(spot_id).is_some()) {
                if e.transient {
                    return on_error("could not attach the copy", e);
                }
                // Refused (AMI gone, AZ not in the group, ...): retrying will not help.
                return self.abandon(spot, format!("attach refused: {e}")).await;
            }
        } else {
            info!(asg = %group.name, spot = %spot_id, "attached");
        }
        self.finish(spot, None).await
    }

    /// The copy is in the group: once it is InService, retire the replaced instance. `fresh` is
    /// the group as the caller has just read it, if it has; otherwise it is read here.
    async fn finish(&self, spot: &Instance, fresh: Option<Group>) -> Outcome {
        let (od, spot_id) = (&self.req.old, &self.req.new);
        let group = match fresh {
            Some(g) => g,
            None => match self.group().await {
                Ok(Some(g)) => g,
                Ok(None) => return Outcome::Dropped(format!("group {} vanished after attach", self.req.group)),
                Err(outcome) => return outcome,
            },
        };
        let Some(spot_member) = group.member(spot_id) else {
            return Outcome::Retry(format!("{spot_id} is not in {} right after attach", group.name));
        };
        if spot_member.lifecycle != Lifecycle::InService {
            if self.now >= spot.launch_time + self.config.orphan_deadline {
                return self.roll_back(&group, format!("{spot_id} still {} after attach", spot_member.lifecycle)).await;
            }
            return self.later(&format!("{spot_id} is {} in the group", spot_member.lifecycle)).await;
        }
        let done = match group.member(od) {
            None => format!("{od} already left {}", group.name),
            Some(m) if m.lifecycle.is_leaving() => format!("{od} is already {}", m.lifecycle),
            Some(m) if m.lifecycle != Lifecycle::InService || m.protected_from_scale_in => {
                let why = if m.protected_from_scale_in {
                    "protected from scale-in".to_string()
                } else {
                    m.lifecycle.to_string()
                };
                return self.roll_back(&group, format!("{od} is now {why}")).await;
            }
            Some(_) if group.desired - 1 < group.min => {
                // Only if MinSize was raised under us; both instances stay, nothing is lost.
                return Outcome::Dropped(format!(
                    "retiring {od} would take {} below MinSize {}; both instances kept",
                    group.name, group.min
                ));
            }
            Some(_) => {
                // A copy EC2 has given an interruption notice ends within two minutes: keep the
                // instance it was to replace. The notice is read here, right before the retire,
                // because its event may reach the interruption handler after this swap.
                if self.req.market == Market::Spot {
                    match self.cloud.interruption_notice(spot_id).await {
                        Ok(false) => {}
                        Ok(true) => {
                            return self.roll_back(&group, format!("{spot_id} has a Spot interruption notice")).await
                        }
                        Err(e) => return on_error("could not read the copy's Spot request", e),
                    }
                }
                // Through the group, decrementing desired: it nets out the attach, and the
                // group's termination lifecycle hooks (draining) run.
                if let Err(e) = self.cloud.terminate_in_group(od, true).await {
                    return on_error("could not retire the replaced instance", e);
                }
                info!(asg = %group.name, od = %od, spot = %spot_id, "swapped");
                self.metrics.incr(metrics::REPLACEMENTS_COMPLETED);
                format!("swapped {od} for {spot_id}")
            }
        };
        // The read above was made after any raise of this swap, so it shows the tag if one
        // is there.
        if group.tags.contains_key(TAG_ORIGINAL_MAX) {
            self.restore_max().await;
        }
        Outcome::Done(done)
    }

    /// Put MaxSize back once no other swap of this group needs the room; otherwise the last one
    /// (or the scanner) does.
    async fn restore_max(&self) {
        let group = match self.group().await {
            Ok(Some(g)) if g.tags.contains_key(TAG_ORIGINAL_MAX) => g,
            _ => return,
        };
        let copies = match self
            .cloud
            .instances(&InstanceQuery::Tagged { key: TAG_GROUP.into(), value: Some(group.name.clone()) }, LIVE)
            .await
        {
            Ok(s) => s,
            Err(e) => return warn!(error = %e, "could not check other swaps; the scanner will restore MaxSize"),
        };
        if busy(&group, &copies) {
            return info!(asg = %group.name, "other swaps under way; MaxSize restored later");
        }
        if let Err(e) = put_max_back(self.cloud, &group, &GroupState::read(&group.tags, &self.config.policy)).await {
            warn!(error = %e, "could not restore MaxSize; the scanner will");
        }
    }

    async fn later(&self, why: &str) -> Outcome {
        match send_swaps(self.cloud, self.config, std::slice::from_ref(self.req), self.config.ready_delay).await {
            Ok(0) => Outcome::Done(format!("waiting: {why}; checking again in {} s", self.config.ready_delay)),
            Ok(_) => Outcome::Retry(format!("waiting: {why}; could not re-enqueue")),
            Err(e) => on_error("could not re-enqueue the swap", e),
        }
    }

    /// The copy never became ready. If it runs the group's current configuration and the
    /// instance it replaces does not, that configuration is being rolled out and is bad: pause
    /// it for the whole group (see [`crate::domain::drift`]), not just for this instance.
    async fn pause_rollout(&self, spot: &Instance, group: &Group) {
        let state = GroupState::read(&group.tags, &self.config.policy);
        if !state.policy.rollout {
            return;
        }
        let current = match current_template(self.cloud, group).await {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => return warn!(error = %e, "could not read the launch template; rollout not paused"),
        };
        if drift(spot, &current).is_some() || state.paused_since(&current).is_some() {
            // Launched from a configuration the group has left already, or paused already.
            return;
        }
        let old = match self.cloud.instances(&InstanceQuery::Ids(vec![self.req.old.clone()]), ANY_STATE).await {
            Ok(found) => found.into_iter().next(),
            Err(e) => return warn!(error = %e, "could not read the replaced instance; rollout not paused"),
        };
        if old.is_none_or(|o| drift(&o, &current).is_none()) {
            return;
        }
        let tags = Tags::from([(TAG_ROLLOUT_PAUSED.to_string(), pause_value(&current, self.now))]);
        match self.cloud.tag_group(&group.name, &tags).await {
            Ok(()) => {
                self.metrics.incr(metrics::ROLLOUTS_PAUSED);
                warn!(asg = %group.name, configuration = %fingerprint(&current), spot = %spot.id, "rollout paused: a new instance failed its status checks");
            }
            Err(e) => warn!(asg = %group.name, error = %e, "could not pause the rollout"),
        }
    }

    /// Not attached and not going to be: terminate our copy, keep the replaced instance.
    async fn abandon(&self, spot: &Instance, why: String) -> Outcome {
        if let Err(e) = self.cloud.terminate(std::slice::from_ref(&spot.id)).await {
            return on_error("could not terminate the abandoned Spot instance", e);
        }
        warn!(spot = %spot.id, reason = %why, "abandoned swap; copy terminated");
        self.metrics.incr(metrics::REPLACEMENTS_FAILED);
        self.restore_max().await;
        set_aside(self.cloud, self.config, &self.req.old, self.now, format!("{why}; terminated {}", spot.id)).await
    }

    /// Attached but the replaced instance must stay: take the copy back out through
    /// the group, decrementing desired, so the group ends as it began.
    async fn roll_back(&self, group: &Group, why: String) -> Outcome {
        let spot_id = &self.req.new;
        if group.desired - 1 < group.min {
            return Outcome::Dropped(format!(
                "{why}; rolling back {spot_id} would go below MinSize, both instances kept"
            ));
        }
        if let Err(e) = self.cloud.terminate_in_group(spot_id, true).await {
            return on_error("could not roll back the copy", e);
        }
        warn!(spot = %spot_id, reason = %why, "rolled back: copy terminated through the group");
        self.metrics.incr(metrics::REPLACEMENTS_FAILED);
        self.restore_max().await;
        Outcome::Dropped(format!("{why}; rolled back {spot_id}, {} kept", self.req.old))
    }
}
