//! The four functions, called through the same handlers Lambda calls, fed the way Lambda's
//! event sources feed them: the scanner by a scheduled event, the interruption handler by
//! EventBridge events, the others by an SQS poller with partial batch responses. Between every invocation it samples each group's InService count.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use asg_core::aws::{ApiCalls, AwsCloud};
use asg_core::cloud::Cloud;
use asg_core::config::{Config, Function};
use asg_core::lambda::{App, Clock};
use asg_core::workflows::scan::ScanSummary;
use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::json;

use crate::account::Account;
use crate::runtime::{build_binaries, template_function, Lambda};

/// The four functions as processes, when the pipeline runs the real binaries.
pub struct Binaries {
    pub scanner: Lambda,
    pub creator: Lambda,
    pub swapper: Lambda,
    pub interruption: Lambda,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumer {
    SpotCreator,
    Swapper,
}

pub struct Pipeline<C> {
    pub account: Account,
    pub scanner: App<C>,
    pub creator: App<C>,
    pub swapper: App<C>,
    pub interruption: App<C>,
    /// Deliver every SQS batch twice before deleting anything (at-least-once delivery).
    pub duplicate_delivery: bool,
    /// InService count per group when watching started.
    pub baseline: BTreeMap<String, usize>,
    /// Every time a group was seen below its baseline, and every invalid batch response.
    pub violations: Vec<String>,
    /// Handler invocations so far, per function.
    pub invocations: BTreeMap<&'static str, usize>,
    /// When set, invocations go to these processes instead of the in-process handlers.
    pub binaries: Option<Binaries>,
}

/// The environment `template.yaml` gives the functions, pointed at this account's queues;
/// `overrides` change or add variables. Timings are short so tests do not wait for minutes.
pub fn environment(account: &Account, overrides: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        ("SPOT_CREATOR_QUEUE_URL", account.spot_queue.as_str()),
        ("SWAPPER_QUEUE_URL", account.swap_queue.as_str()),
        ("READY_CHECK_DELAY_SECONDS", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

impl<C: Cloud + Clone> Pipeline<C> {
    /// Builds each function's [`App`] from `env` exactly as its `main` would, each with its own
    /// call counter, its SDK adapter wrapped by `wrap` (identity, or fault injection).
    pub fn new(
        account: Account,
        sdk: &SdkConfig,
        env: &BTreeMap<String, String>,
        wrap: impl Fn(AwsCloud) -> C,
    ) -> Self {
        let app = |function| {
            let config = Config::from_lookup(function, |k| env.get(k).cloned()).expect("valid configuration");
            let calls = ApiCalls::default();
            App {
                cloud: wrap(AwsCloud::new(sdk, calls.clone())),
                config,
                calls,
                emit_metrics: false,
                clock: Clock::System,
            }
        };
        Pipeline {
            scanner: app(Function::Scanner),
            creator: app(Function::SpotCreator),
            swapper: app(Function::Swapper),
            interruption: app(Function::Interruption),
            account,
            duplicate_delivery: false,
            baseline: BTreeMap::new(),
            violations: Vec::new(),
            invocations: BTreeMap::new(),
            binaries: None,
        }
    }

    /// From now on, run the function binaries as Lambda would: each process started with the
    /// environment `template.yaml` declares (parameters at their defaults unless given in
    /// `parameters`), the account's endpoint in `AWS_ENDPOINT_URL`, fed through a Runtime API.
    pub async fn use_binaries(&mut self, endpoint: &str, parameters: &[(&str, &str)], extra_env: &[(&str, &str)]) {
        let dir = build_binaries();
        let (spot_queue, swap_queue) = (self.account.spot_queue.clone(), self.account.swap_queue.clone());
        let start = |logical_id: &'static str| {
            let function = template_function(logical_id, parameters, |name| match name {
                "SpotCreatorQueue" => Some(spot_queue.clone()),
                "SwapperQueue" => Some(swap_queue.clone()),
                _ => None,
            });
            let mut env = function.environment;
            for (k, v) in [
                ("AWS_REGION", "us-east-1"),
                ("AWS_ENDPOINT_URL", endpoint),
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
            ]
            .into_iter()
            .chain(extra_env.iter().copied())
            {
                env.insert(k.into(), v.into());
            }
            let binary = dir.join(&function.binary);
            async move { Lambda::start(logical_id, &binary, &env).await }
        };
        self.binaries = Some(Binaries {
            scanner: start("ScannerFunction").await,
            creator: start("SpotCreatorFunction").await,
            swapper: start("SwapperFunction").await,
            interruption: start("InterruptionFunction").await,
        });
    }

    pub async fn watch(&mut self) {
        self.baseline = self.account.groups().await.iter().map(|g| (g.name.clone(), g.in_service())).collect();
    }

    async fn check(&mut self, after: &str) {
        if self.baseline.is_empty() {
            return;
        }
        for g in self.account.groups().await {
            if let Some(&start) = self.baseline.get(&g.name) {
                if g.in_service() < start {
                    self.violations.push(format!(
                        "after {after}: {} has {} InService, started with {start}",
                        g.name,
                        g.in_service()
                    ));
                }
            }
        }
    }

    /// One scheduled scan through the scanner's handler.
    pub async fn scan(&mut self) -> ScanSummary {
        let event = json!({
            "version": "0", "id": "5f1e8f7c-0000-0000-0000-000000000000", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2026-11-22T10:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/asg-optimizer-scan"], "detail": {}
        });
        let summary = match &mut self.binaries {
            Some(b) => serde_json::from_value(b.scanner.invoke(&event).await.expect("scan")).expect("a scan summary"),
            None => scanner::handler(&self.scanner, LambdaEvent::new(event, Context::default())).await.expect("scan"),
        };
        *self.invocations.entry("scanner").or_default() += 1;
        self.check("scan").await;
        summary
    }

    /// An EventBridge event to the interruption handler, as the template's rule delivers it.
    /// Returns what it answered, or the error Lambda would retry on.
    pub async fn interrupt(&mut self, event: serde_json::Value) -> Result<serde_json::Value, String> {
        let answer = match &mut self.binaries {
            Some(b) => b.interruption.invoke(&event).await.map_err(|e| e.to_string()),
            None => interruption::handler(&self.interruption, LambdaEvent::new(event, Context::default()))
                .await
                .map_err(|e| e.to_string()),
        };
        *self.invocations.entry("interruption").or_default() += 1;
        self.check("interruption").await;
        answer
    }

    /// Calls a consumer's handler on an event, as Lambda would.
    pub async fn invoke(&mut self, consumer: Consumer, event: SqsEvent) -> SqsBatchResponse {
        if let Some(b) = &mut self.binaries {
            let (name, lambda) = match consumer {
                Consumer::SpotCreator => ("spot-creator", &mut b.creator),
                Consumer::Swapper => ("swapper", &mut b.swapper),
            };
            let json = serde_json::to_value(&event).expect("serializable event");
            let answer = lambda.invoke(&json).await.expect("an SQS handler never fails its whole batch");
            *self.invocations.entry(name).or_default() += 1;
            self.check(name).await;
            return serde_json::from_value(answer).expect("a batch response");
        }
        let event = LambdaEvent::new(event, Context::default());
        let (name, response) = match consumer {
            Consumer::SpotCreator => ("spot-creator", spot_creator::handler(&self.creator, event).await),
            Consumer::Swapper => ("swapper", swapper::handler(&self.swapper, event).await),
        };
        *self.invocations.entry(name).or_default() += 1;
        self.check(name).await;
        response.expect("an SQS handler never fails its whole batch")
    }

    fn queue(&self, consumer: Consumer) -> String {
        match consumer {
            Consumer::SpotCreator => self.account.spot_queue.clone(),
            Consumer::Swapper => self.account.swap_queue.clone(),
        }
    }

    /// One poll of the event-source mapping: receive up to 10, invoke, delete what succeeded.
    /// Failed records stay and come back after the visibility timeout; the queue's redrive
    /// policy moves them to the dead-letter queue. Returns how many records were delivered.
    pub async fn poll(&mut self, consumer: Consumer) -> usize {
        let queue = self.queue(consumer);
        let sqs = self.account.sqs.clone();
        let out = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive");
        let messages = out.messages().to_vec();
        if messages.is_empty() {
            return 0;
        }
        let records: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| {
                json!({
                    "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                    "attributes": m.attributes().map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), v.clone())).collect::<BTreeMap<_, _>>()),
                    "messageAttributes": {}, "md5OfBody": m.md5_of_body(), "eventSource": "aws:sqs",
                    "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{}", queue.rsplit('/').next().unwrap_or_default()),
                    "awsRegion": "us-east-1"
                })
            })
            .collect();
        let event: SqsEvent = serde_json::from_value(json!({ "Records": records })).expect("an SQS event");
        let ids: BTreeSet<String> = messages.iter().filter_map(|m| m.message_id().map(str::to_string)).collect();
        let mut failed = BTreeSet::new();
        let deliveries = if self.duplicate_delivery { 2 } else { 1 };
        for _ in 0..deliveries {
            let response = self.invoke(consumer, event.clone()).await;
            for f in &response.batch_item_failures {
                if !ids.contains(&f.item_identifier) {
                    // Lambda fails the whole batch on an unknown or empty identifier.
                    self.violations.push(format!("invalid batch item identifier {:?}", f.item_identifier));
                    failed.extend(ids.iter().cloned());
                }
                failed.insert(f.item_identifier.clone());
            }
        }
        let entries: Vec<_> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.message_id().is_some_and(|id| failed.contains(id)))
            .map(|(n, m)| {
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(n.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
                    .expect("delete entry")
            })
            .collect();
        if !entries.is_empty() {
            sqs.delete_message_batch().queue_url(&queue).set_entries(Some(entries)).send().await.expect("delete batch");
        }
        messages.len()
    }

    /// Polls until the queue is empty: in-flight and delayed messages are waited for, as the
    /// event-source mapping keeps polling. Panics after `limit`.
    pub async fn drain(&mut self, consumer: Consumer, limit: Duration) -> usize {
        let started = Instant::now();
        let mut delivered = 0;
        loop {
            let n = self.poll(consumer).await;
            delivered += n;
            if n == 0 {
                if self.account.depth(&self.queue(consumer)).await == 0 {
                    return delivered;
                }
                assert!(started.elapsed() < limit, "{consumer:?} queue not drained within {limit:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// A scan, then everything it set in motion, to the end.
    pub async fn round(&mut self) -> ScanSummary {
        let summary = self.scan().await;
        self.drain(Consumer::SpotCreator, Duration::from_secs(60)).await;
        self.drain(Consumer::Swapper, Duration::from_secs(90)).await;
        summary
    }

    /// Rounds until a scan finds no On-Demand instance left in any opted-in group and nothing
    /// in flight; returns the number of rounds, the final scan included.
    pub async fn run_until_replaced(&mut self, max_rounds: usize) -> usize {
        for round in 1..=max_rounds {
            let summary = self.round().await;
            let left: usize = summary.per_group.iter().map(|g| g.on_demand).sum();
            if left == 0 && summary.in_flight == 0 {
                return round;
            }
        }
        panic!("On-Demand instances left after {max_rounds} rounds");
    }

    /// Rounds until a scan starts nothing and finds nothing in flight (every group at its
    /// policy's mix); returns the number of rounds, the final scan included.
    pub async fn run_until_settled(&mut self, max_rounds: usize) -> usize {
        for round in 1..=max_rounds {
            let summary = self.round().await;
            if summary.enqueued == 0 && summary.in_flight == 0 {
                return round;
            }
        }
        panic!("still replacing after {max_rounds} rounds");
    }

    /// Swaps the swapper completed so far (for the benchmark): On-Demand instances retired.
    pub async fn swapper_completed(&self) -> usize {
        self.swapper.calls.snapshot().get("autoscaling:TerminateInstanceInAutoScalingGroup").copied().unwrap_or(0)
            as usize
    }

    /// Calls per `service:Operation`, per function.
    pub fn api_calls(&self) -> BTreeMap<&'static str, BTreeMap<String, u64>> {
        [
            ("scanner", &self.scanner),
            ("spot-creator", &self.creator),
            ("swapper", &self.swapper),
            ("interruption", &self.interruption),
        ]
        .into_iter()
        .map(|(name, app)| (name, app.calls.snapshot()))
        .collect()
    }
}
