//! The Lambda plumbing shared by the four functions: what a function builds once per cold start
//! ([`App`]: the SDK adapter, the configuration, the clock), and the SQS batch runner that hands
//! each record to a workflow and sorts its [`Outcome`] into the partial batch response. No
//! workflow imports this module; the function crates compose the two.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use futures::StreamExt;
use tracing::{error, info, info_span, warn, Instrument};

use crate::aws::{ApiCalls, AwsCloud};
use crate::config::{Config, Function};
use crate::domain::model::Epoch;
use crate::error::ConfigError;
use crate::message::{subject, Outcome};
use crate::metrics::{Metrics, MESSAGES_REJECTED, MESSAGES_RETRIED};

/// Where a function reads the time: the system clock under Lambda, a virtual one in simulation.
/// The workflows never read a clock; they are handed `now`.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// Seconds since the Unix epoch, set by whoever drives the simulation.
    Virtual(Arc<AtomicI64>),
}

impl Clock {
    pub fn now(&self) -> Epoch {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default(),
            Clock::Virtual(t) => t.load(Ordering::SeqCst),
        }
    }
}

/// What a function builds once per cold start and hands to every invocation.
#[derive(Debug, Clone)]
pub struct App<C> {
    pub cloud: C,
    pub config: Config,
    /// The calls `cloud` makes, when it is the SDK adapter built with them.
    pub calls: ApiCalls,
    /// Write EMF metric documents to stdout: on under Lambda, off when the handlers run
    /// in-process (tests, demo, simulation), where stdout is for people.
    pub emit_metrics: bool,
    pub clock: Clock,
}

impl App<AwsCloud> {
    /// Reads the function's configuration (failing with the variable's name) and builds the SDK
    /// clients from the standard AWS environment.
    pub async fn from_env(function: Function) -> Result<Self, ConfigError> {
        let config = Config::from_env(function)?;
        let calls = ApiCalls::default();
        let cloud = AwsCloud::from_env(calls.clone()).await;
        Ok(App { cloud, config, calls, emit_metrics: true, clock: Clock::System })
    }
}

/// Counts of outcomes, for the invocation's log line and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BatchTally {
    pub done: usize,
    pub dropped: usize,
    pub rejected: usize,
    pub retried: usize,
}

fn log_outcome(outcome: &Outcome) {
    match outcome {
        Outcome::Done(what) => info!(outcome = "done", "{what}"),
        Outcome::Dropped(why) => warn!(outcome = "dropped", reason = %why, "message dropped"),
        Outcome::Rejected(why) => {
            warn!(outcome = "rejected", reason = %why, "message rejected; it will reach the dead-letter queue")
        }
        Outcome::Retry(why) => warn!(outcome = "retry", reason = %why, "message will be retried"),
    }
}

/// One invocation of an SQS-fed function: every record through `work` (which gets the body and
/// the invocation's metrics), the outcomes counted, the metrics published, one summary line.
pub async fn invocation<C, F, Fut>(app: &App<C>, event: SqsEvent, function: &str, work: F) -> SqsBatchResponse
where
    F: Fn(String, Arc<Metrics>) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let metrics = Arc::new(Metrics::default());
    let (response, tally) = handle_batch(event, app.config.concurrency, |body| work(body, metrics.clone())).await;
    metrics.add(MESSAGES_REJECTED, tally.rejected as f64);
    metrics.add(MESSAGES_RETRIED, tally.retried as f64);
    if app.emit_metrics {
        metrics.publish(&app.config.metrics_namespace, function);
    }
    info!(
        done = tally.done,
        dropped = tally.dropped,
        rejected = tally.rejected,
        retried = tally.retried,
        "batch complete"
    );
    response
}

/// Runs `work` on every record's body, at most `concurrency` at once, and returns the partial
/// batch response. Records about the same work in one batch (a duplicate delivery, or two
/// messages of one swap: see [`subject`]) are worked on once, with the first one's body, and
/// share the outcome. A record without a message id cannot be reported as failed (an
/// empty identifier fails the whole batch), so it is logged and dropped without any work.
pub async fn handle_batch<F, Fut>(event: SqsEvent, concurrency: usize, work: F) -> (SqsBatchResponse, BatchTally)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let mut by_subject: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let mut tally = BatchTally::default();
    for record in event.records {
        let Some(id) = record.message_id.filter(|id| !id.is_empty()) else {
            error!(reason = "record has no messageId", "record dropped");
            tally.dropped += 1;
            continue;
        };
        let body = record.body.unwrap_or_default();
        by_subject.entry(subject(&body)).or_insert_with(|| (body, Vec::new())).1.push(id);
    }

    let outcomes: Vec<(Vec<String>, Outcome)> = futures::stream::iter(by_subject.into_values())
        .map(|(body, ids)| {
            // The workflows fill in asg, old and new (see `record_ids`), so every line logged
            // for this record, the outcome included, carries them.
            let span = info_span!(
                "record",
                message_id = %ids[0],
                duplicates = ids.len() - 1,
                asg = tracing::field::Empty,
                old = tracing::field::Empty,
                new = tracing::field::Empty,
            );
            let fut = work(body);
            async move {
                let outcome = fut.await;
                log_outcome(&outcome);
                (ids, outcome)
            }
            .instrument(span)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;

    let mut response = SqsBatchResponse::default();
    for (ids, outcome) in outcomes {
        let n = ids.len();
        match outcome {
            Outcome::Done(_) => tally.done += n,
            Outcome::Dropped(_) => tally.dropped += n,
            Outcome::Rejected(_) => tally.rejected += n,
            Outcome::Retry(_) => tally.retried += n,
        }
        if !outcome.acked() {
            for id in ids {
                response.add_failure(id);
            }
        }
    }
    (response, tally)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn event(records: &[(Option<&str>, &str)]) -> SqsEvent {
        let records: Vec<serde_json::Value> = records
            .iter()
            .map(|(id, body)| match id {
                Some(id) => serde_json::json!({"messageId": id, "body": body}),
                None => serde_json::json!({"body": body}),
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
    }

    #[tokio::test]
    async fn failures_are_reported_per_record_and_duplicates_worked_once() {
        let calls = AtomicUsize::new(0);
        let ev = event(&[
            (Some("1"), "ok"),
            (Some("2"), "bad"),
            (Some("3"), "later"),
            (Some("4"), "ok"),
            (Some("5"), "gone"),
            (None, "ok-without-id"),
        ]);
        let (resp, tally) = handle_batch(ev, 2, |body| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                match body.as_str() {
                    "ok" => Outcome::Done("did it".into()),
                    "bad" => Outcome::Rejected("malformed".into()),
                    "later" => Outcome::Retry("throttled".into()),
                    _ => Outcome::Dropped("group gone".into()),
                }
            }
        })
        .await;
        let mut failed: Vec<&str> = resp.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        failed.sort();
        assert_eq!(failed, ["2", "3"]);
        assert_eq!(calls.load(Ordering::SeqCst), 4, "the duplicate body and the id-less record are not worked on");
        assert_eq!(tally, BatchTally { done: 2, dropped: 2, rejected: 1, retried: 1 });
    }

    #[tokio::test]
    async fn two_messages_of_one_swap_in_a_batch_are_worked_on_once() {
        let swap = |extra: &str| format!(r#"{{"v":2,"group":"web","old":"i-0a","new":"i-0b","market":"spot"{extra}}}"#);
        let other = r#"{"v":2,"group":"web","old":"i-0c","new":"i-0d","market":"spot"}"#;
        let forged = r#"{"v":2,"group":"api","old":"i-0a","new":"i-0b","market":"spot"}"#;
        let (first, second) = (swap(""), swap(r#","launched":1800000000"#));
        let ev = event(&[(Some("1"), &first), (Some("2"), &second), (Some("3"), other), (Some("4"), forged)]);
        let calls = AtomicUsize::new(0);
        let (resp, tally) = handle_batch(ev, 4, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Outcome::Retry("later".into()) }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3, "the two bodies of one swap are one piece of work");
        assert_eq!(resp.batch_item_failures.len(), 4, "both records of the swap share its outcome");
        assert_eq!(tally.retried, 4);
    }
}
