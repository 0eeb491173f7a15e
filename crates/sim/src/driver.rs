//! The deterministic simulation: from one seed, a random account and a random life for it, with
//! the four functions' real handlers running on it as Lambda would run them.
//!
//! One generator decides everything: which invocation runs its next AWS call, when one crashes
//! (after any call: its messages come back after the visibility timeout), which queue is polled
//! and how many records a batch takes, when time moves and by how much, what the world does
//! (interruptions, deaths, empty Spot pools, new template versions, operators changing tags,
//! protection, desired capacity and MaxSize). The handlers read time only from the virtual clock
//! they are given. After a chaotic phase, faults stop, pools refill and the account is left to
//! come to rest; then the end state is checked.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use asg_core::aws::ApiCalls;
use asg_core::config::{Config, Function};
use asg_core::domain::model::{Epoch, Tags};
use asg_core::domain::policy::{
    TAG_HEALTHY_DEADLINE, TAG_LAUNCH_HOOKS, TAG_MAX_IN_FLIGHT, TAG_MIN_ON_DEMAND, TAG_MODE, TAG_ROLLOUT_MAX_IN_FLIGHT,
};
use asg_core::domain::reserved::Reservation;
use asg_core::lambda::{App, Clock};
use asg_core::workflows::scan::ScanSummary;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Context as LambdaContext, LambdaEvent};
use serde_json::{json, Value};

use crate::check::{Checker, Violation};
use crate::cloud::{OperatorChange, Sim, SimCloud};
use crate::iam::Role;
use crate::rng::Rng;
use crate::sqs::Queue;
use crate::world::{SimHook, World};
use crate::START;
use asg_core::domain::model::Hook;

pub const OPT_IN: (&str, &str) = ("AsgOptimiser", "true");
pub const SPOT_QUEUE: &str = "https://sqs.sim/asg-optimizer-spot-creator.fifo";
pub const SWAP_QUEUE: &str = "https://sqs.sim/asg-optimizer-swapper";
/// The template's queue settings: visibility 6 x the function timeout, MaxReceiveCount 5.
const VISIBILITY: Epoch = 360;
const MAX_RECEIVE: u32 = 5;
const SCAN_EVERY: Epoch = 120;

/// Minutes of chaos, then of rest at most.
const CHAOS_MINUTES: i64 = 90;
const REST_MINUTES: i64 = 150;

/// What one seed did.
pub struct Report {
    pub seed: u64,
    pub violations: Vec<Violation>,
    pub trace: Vec<String>,
    pub calls: BTreeMap<String, u64>,
    pub checks: u64,
    pub invocations: u64,
    pub crashes: u64,
    /// The account as it started.
    pub account: String,
}

impl Report {
    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }

    /// The first violation, where it happened and the calls that led there.
    pub fn explain(&self) -> String {
        let Some(first) = self.violations.first() else { return format!("seed {}: no violation", self.seed) };
        let upto = self
            .trace
            .iter()
            .position(|l| {
                l.trim_start().split(' ').next().and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s > first.step)
            })
            .unwrap_or(self.trace.len());
        let from = upto.saturating_sub(120);
        format!(
            "seed {} broke an invariant\n  {first}\n{} more violation(s)\naccount:\n{}\nthe last {} calls and events before it:\n{}\nreplay: SIM_SEED={} cargo test -p asg-sim --test seeds replay -- --ignored --nocapture",
            self.seed,
            self.violations.len() - 1,
            self.account,
            upto - from,
            self.trace[from..upto].join("\n"),
            self.seed,
        )
    }
}

type Run<'a> = Pin<Box<dyn Future<Output = Ended> + 'a>>;

enum Ended {
    Scan(Option<Box<ScanSummary>>),
    Batch(Option<SqsBatchResponse>),
    Event(bool),
}

enum Kind {
    Scan,
    Batch { queue: &'static str, receipts: Vec<(String, u64)> },
    Event { event: Value, attempt: u32 },
}

struct Task<'a> {
    name: String,
    kind: Kind,
    run: Run<'a>,
}

struct Apps {
    scanner: App<SimCloud>,
    creator: App<SimCloud>,
    swapper: App<SimCloud>,
    interruption: App<SimCloud>,
}

fn noop_waker() -> Waker {
    fn clone(_: *const ()) -> RawWaker {
        RawWaker::new(std::ptr::null(), &VTABLE)
    }
    fn noop(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    // SAFETY: the vtable's functions do nothing and never read the data pointer.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}

/// The configuration each function reads from the environment the template sets, with the
/// template's defaults and the seed's choice of a few knobs.
fn config(function: Function, rng: &mut Rng) -> Config {
    let rebalance = *rng.pick(&["ignore", "backoff", "replace"]).unwrap_or(&"backoff");
    let env: BTreeMap<&str, String> = [
        ("SPOT_CREATOR_QUEUE_URL", SPOT_QUEUE.to_string()),
        ("SWAPPER_QUEUE_URL", SWAP_QUEUE.to_string()),
        ("REBALANCE_ACTION", rebalance.to_string()),
        ("MAX_IN_FLIGHT_PERCENT", rng.pick(&["10", "25", "50"]).unwrap_or(&"10").to_string()),
    ]
    .into();
    Config::from_lookup(function, |k| env.get(k).cloned()).expect("the simulation's configuration is valid")
}

/// A random account: zones, templates (some with a KMS key the tool may not use), groups of
/// every shape (desired == max, == min, min == max), policy tags, lifecycle hooks (launch hooks
/// that install the application or not, said or not with `launch-hooks=ignore`), target groups
/// and Classic Load Balancers with real health checks, reservations, Spot pools that are short.
fn account(seed: u64, rng: &mut Rng) -> World {
    let zones: Vec<&str> = ["us-east-1a", "us-east-1b", "us-east-1c"][..rng.range(2, 3) as usize].to_vec();
    let mut w = World::new(seed, START, &zones);
    w.timing.never_ready = *rng.pick(&[0.0, 0.0, 0.1, 0.3]).unwrap_or(&0.0);
    w.timing.checks = (rng.range(10, 60), rng.range(90, 400));
    w.timing.visibility_lag = rng.range(0, 5);
    w.timing.deregistration_delay = rng.range(0, 300);
    let types = ["m5.large", "c5.xlarge", "m6g.large"];
    let templates: Vec<String> = (0..rng.range(1, 2))
        .map(|n| w.add_template(&format!("ami-{:08x}", n + 1), rng.pick(&types).unwrap_or(&"m5.large")))
        .collect();
    if rng.chance(0.25) {
        let t = rng.pick(&templates).cloned().unwrap_or_default();
        w.templates.get_mut(&t).expect("template").kms_key_denied = true;
    }
    let n_groups = rng.range(2, 5);
    for n in 0..n_groups {
        let name = format!("g{n}");
        let desired = rng.range(1, 6) as i32;
        let (min, max) = match rng.below(4) {
            0 => (desired, desired),                             // min == max
            1 => (rng.range(0, desired as i64) as i32, desired), // desired == max
            2 => (desired, desired + rng.range(1, 2) as i32),    // desired == min
            _ => (rng.range(0, desired as i64) as i32, desired + rng.range(0, 2) as i32),
        };
        let mut tags: Vec<(String, String)> = vec![("team".into(), "platform".into())];
        // The last group never opts in.
        if n + 1 < n_groups || rng.chance(0.2) {
            tags.push((OPT_IN.0.into(), OPT_IN.1.into()));
        }
        if rng.chance(0.3) {
            tags.push((TAG_MIN_ON_DEMAND.into(), rng.range(0, 2).to_string()));
        }
        if rng.chance(0.3) {
            tags.push((TAG_MAX_IN_FLIGHT.into(), rng.pick(&["1", "2", "50%", "0"]).unwrap_or(&"1").to_string()));
        }
        if rng.chance(0.2) {
            tags.push((TAG_ROLLOUT_MAX_IN_FLIGHT.into(), rng.pick(&["1", "2", "0"]).unwrap_or(&"1").to_string()));
        }
        if rng.chance(0.15) {
            tags.push((TAG_HEALTHY_DEADLINE.into(), rng.pick(&["300", "900"]).unwrap_or(&"300").to_string()));
        }
        // A launch hook that installs nothing a copy needs, said so (or, by mistake, one that
        // does).
        let launch_hook = rng.chance(0.3).then(|| rng.chance(0.7));
        if let Some(installs_app) = launch_hook {
            if rng.chance(if installs_app { 0.1 } else { 0.6 }) {
                tags.push((TAG_LAUNCH_HOOKS.into(), "ignore".into()));
            }
        }
        if rng.chance(0.15) {
            tags.push((
                TAG_MODE.into(),
                rng.pick(&["dry-run", "disabled", "sometimes"]).unwrap_or(&"enabled").to_string(),
            ));
        }
        let template = rng.pick(&templates).cloned().unwrap_or_default();
        let tag_refs: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        w.add_group(&name, min, desired, max, &template, &tag_refs);
        let g = w.groups.get_mut(&name).expect("group");
        if rng.chance(0.3) {
            g.hooks.push(SimHook { kind: Hook::Terminating, installs_app: false });
        }
        if let Some(installs_app) = launch_hook {
            g.hooks.push(SimHook { kind: Hook::Launching, installs_app });
        }
        match rng.below(10) {
            0..=3 => drop(w.add_target_group(&name)),
            4..=5 => drop(w.add_classic_load_balancer(&name)),
            _ => {}
        }
    }
    if rng.chance(0.3) {
        let t = rng.pick(&types).unwrap_or(&"m5.large").to_string();
        w.reservations.push(Reservation {
            instance_type: t,
            availability_zone: None,
            count: rng.range(1, 3) as u32,
            platform: "Linux/UNIX".into(),
            tenancy: "default".into(),
        });
    }
    // Some pools are short from the start.
    for z in w.zones.clone() {
        for t in ["m5.large", "m5a.large", "c5.xlarge", "m6g.large"] {
            if rng.chance(0.15) {
                w.spot_capacity.insert((t.to_string(), z.clone()), rng.range(0, 2) as u32);
            }
        }
    }
    let mut spot = Queue::new("asg-optimizer-spot-creator.fifo", VISIBILITY, MAX_RECEIVE);
    spot.duplicate_chance = 0.0;
    let mut swap = Queue::new("asg-optimizer-swapper", VISIBILITY, MAX_RECEIVE);
    swap.duplicate_chance = 0.05;
    w.queues.insert(SPOT_QUEUE.into(), spot);
    w.queues.insert(SWAP_QUEUE.into(), swap);
    w
}

fn describe(w: &World) -> String {
    let mut out = String::new();
    for (name, g) in &w.groups {
        let tags: Vec<String> =
            g.tags.iter().filter(|(k, _)| k.as_str() != "team").map(|(k, v)| format!("{k}={v}")).collect();
        let hooks: Vec<String> = g
            .hooks
            .iter()
            .map(|h| format!("{:?}{}", h.kind, if h.installs_app { "(installs app)" } else { "" }))
            .collect();
        out.push_str(&format!(
            "  {name}: min/desired/max {}/{}/{}, template {}{}, {} target group(s), {} Classic Load Balancer(s), hooks {hooks:?}, tags {tags:?}\n",
            g.min,
            g.desired,
            g.max,
            g.template,
            if w.templates[&g.template].kms_key_denied { " (KMS key denied to the tool)" } else { "" },
            g.target_groups.len(),
            g.load_balancers.len()
        ));
    }
    out.push_str(&format!(
        "  reservations {:?}; short pools {:?}; timing {:?}\n",
        w.reservations.iter().map(|r| format!("{}x{}", r.count, r.instance_type)).collect::<Vec<_>>(),
        w.spot_capacity,
        w.timing
    ));
    out
}

fn warning(id: &str, detail_type: &str) -> Value {
    json!({
        "version": "0", "id": format!("evt-{id}"), "detail-type": detail_type, "source": "aws.ec2",
        "account": "123456789012", "time": "2026-11-30T00:00:00Z", "region": "us-east-1",
        "resources": [format!("arn:aws:ec2:us-east-1a:instance/{id}")],
        "detail": {"instance-id": id, "instance-action": "terminate"}
    })
}

fn sqs_event(queue: &str, deliveries: &[crate::sqs::Delivery]) -> SqsEvent {
    let records: Vec<Value> = deliveries
        .iter()
        .map(|d| {
            json!({
                "messageId": d.message_id, "receiptHandle": d.receipt.to_string(), "body": d.body,
                "attributes": {"ApproximateReceiveCount": d.receive_count.to_string()},
                "messageAttributes": {}, "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{}", queue.rsplit('/').next().unwrap_or_default()),
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("an SQS event")
}

/// Plays one seed through: chaos, then rest, then the end-state checks.
pub fn run(seed: u64) -> Report {
    let mut rng = Rng::new(seed);
    let world = account(seed, &mut rng);
    let account = describe(&world);
    let check = Checker::new(&world, OPT_IN.0, OPT_IN.1);
    let sim = Arc::new(Mutex::new(Sim::new(world, check, seed)));
    {
        let mut s = sim.lock().unwrap_or_else(|e| e.into_inner());
        s.faults.throttle = *rng.pick(&[0.0, 0.01, 0.05]).unwrap_or(&0.0);
        s.faults.server_error = *rng.pick(&[0.0, 0.005, 0.02]).unwrap_or(&0.0);
    }
    let clock = Arc::new(AtomicI64::new(START));
    let app = |function, rng: &mut Rng| App {
        cloud: SimCloud::new(
            sim.clone(),
            match function {
                Function::Scanner => Role::Scanner,
                Function::SpotCreator => Role::SpotCreator,
                Function::Swapper => Role::Swapper,
                Function::Interruption => Role::Interruption,
                Function::Cli => Role::ReadOnly,
            },
        ),
        config: config(function, rng),
        calls: ApiCalls::default(),
        emit_metrics: false,
        clock: Clock::Virtual(clock.clone()),
    };
    let apps = Apps {
        scanner: app(Function::Scanner, &mut rng.clone()),
        creator: app(Function::SpotCreator, &mut rng.clone()),
        swapper: app(Function::Swapper, &mut rng.clone()),
        interruption: app(Function::Interruption, &mut rng.clone()),
    };
    rng.next_u64();
    let crash_chance = *rng.pick(&[0.0, 0.005, 0.02]).unwrap_or(&0.0);
    let overlapping_scans = rng.chance(0.2);
    let mut driver = Driver {
        sim: sim.clone(),
        clock,
        rng,
        apps: &apps,
        tasks: Vec::new(),
        next_scan: START + 5,
        events: Vec::new(),
        chaos_until: START + CHAOS_MINUTES * 60,
        end: START + (CHAOS_MINUTES + REST_MINUTES) * 60,
        crash_chance,
        overlapping_scans,
        invocations: 0,
        crashes: 0,
        quiet_scans: 0,
        serial: 0,
        restored: false,
    };
    driver.play();
    let config = apps.scanner.config.clone();
    let (invocations, crashes) = (driver.invocations, driver.crashes);
    drop(driver);
    drop(apps);
    let mut s = sim.lock().unwrap_or_else(|e| e.into_inner());
    let s = &mut *s;
    let step = s.step;
    s.check.at_rest(&s.world, &config, step);
    Report {
        seed,
        violations: s.check.violations.clone(),
        trace: std::mem::take(&mut s.trace),
        calls: s.calls.clone(),
        checks: s.check.checks,
        invocations,
        crashes,
        account,
    }
}

struct Driver<'a> {
    sim: Arc<Mutex<Sim>>,
    clock: Arc<AtomicI64>,
    rng: Rng,
    apps: &'a Apps,
    tasks: Vec<Task<'a>>,
    next_scan: Epoch,
    /// EventBridge events to deliver: (when, event, attempt).
    events: Vec<(Epoch, Value, u32)>,
    chaos_until: Epoch,
    end: Epoch,
    crash_chance: f64,
    overlapping_scans: bool,
    invocations: u64,
    crashes: u64,
    /// Scans in a row, at rest, that found nothing to do.
    quiet_scans: u32,
    serial: u64,
    restored: bool,
}

impl<'a> Driver<'a> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Sim> {
        self.sim.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> Epoch {
        self.lock().world.now
    }

    fn play(&mut self) {
        loop {
            if !self.tasks.is_empty() && self.rng.chance(0.97) {
                self.run_one();
                continue;
            }
            let now = self.now();
            if now >= self.end
                || (now > self.chaos_until + 45 * 60 && self.quiet_scans >= 3 && self.tasks.is_empty() && self.idle())
            {
                break;
            }
            let dt = self.rng.range(1, 5);
            self.advance(now + dt);
            if self.now() < self.chaos_until {
                self.chaos();
            } else if !self.restored {
                self.rest();
            }
            self.start_due();
        }
        // Let what is running finish, as Lambda would.
        while !self.tasks.is_empty() {
            self.run_one();
        }
    }

    /// Nothing queued, nothing due, and no hold or backoff still to end: the scans that follow
    /// see everything there is to do.
    fn idle(&self) -> bool {
        let s = self.lock();
        let now = s.world.now;
        let held = s.world.instances.values().any(|i| {
            i.state.is_live()
                && i.tags
                    .get(asg_core::domain::model::TAG_HOLD)
                    .and_then(|v| asg_core::domain::model::Hold::parse(v))
                    .is_some_and(|h| h.until() + SCAN_EVERY > now)
        });
        let backed_off = s.world.groups.values().any(|g| {
            asg_core::domain::pools::Backoffs::from_tags(&g.tags).0 .0.values().any(|until| until + SCAN_EVERY > now)
        });
        s.world.queues.values().all(|q| q.depth() == 0) && self.events.is_empty() && !held && !backed_off
    }

    fn advance(&mut self, to: Epoch) {
        let mut s = self.lock();
        let s = &mut *s;
        while s.world.now < to {
            let next = s.world.now + 1;
            s.world.advance(next);
            s.caller = "world".into();
            s.trace_sizes();
            let step = s.step;
            s.check.after(&s.world, step);
        }
        self.clock.store(s.world.now, Ordering::SeqCst);
    }

    fn log(&self, line: String) {
        let mut s = self.lock();
        s.caller = "world".into();
        s.log(line);
    }

    /// Polls one invocation up to its next AWS call (which the call then makes), or crashes it
    /// there.
    fn run_one(&mut self) {
        let k = self.rng.below(self.tasks.len() as u64) as usize;
        if self.rng.chance(self.crash_chance) {
            let task = self.tasks.swap_remove(k);
            self.crashes += 1;
            self.log(format!("CRASH {} (its messages come back after the visibility timeout)", task.name));
            if let Kind::Event { event, attempt } = task.kind {
                self.retry_event(event, attempt);
            }
            return;
        }
        self.lock().caller = self.tasks[k].name.clone();
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let Poll::Ready(ended) = self.tasks[k].run.as_mut().poll(&mut cx) else { return };
        let task = self.tasks.swap_remove(k);
        self.finish(task, ended);
    }

    fn retry_event(&mut self, event: Value, attempt: u32) {
        // Asynchronous invocation: two retries, a minute and then two minutes later.
        if attempt < 2 {
            let when = self.now() + 60 * (attempt as Epoch + 1);
            self.events.push((when, event, attempt + 1));
        }
    }

    fn finish(&mut self, task: Task<'a>, ended: Ended) {
        match (task.kind, ended) {
            (Kind::Scan, Ended::Scan(Some(summary))) => {
                let busy =
                    summary.enqueued > 0 || summary.in_flight > 0 || summary.cleaned_up > 0 || summary.repaired > 0;
                self.quiet_scans = if busy { 0 } else { self.quiet_scans + 1 };
                self.log(format!(
                    "{} ended: enqueued {}, in flight {}, cleaned up {}, resumed {}, repaired {}, errors {:?}",
                    task.name,
                    summary.enqueued,
                    summary.in_flight,
                    summary.cleaned_up,
                    summary.resumed,
                    summary.repaired,
                    summary.errors
                ));
            }
            (Kind::Scan, _) => self.quiet_scans = 0,
            (Kind::Batch { queue, receipts }, Ended::Batch(response)) => {
                let failed: Vec<String> = response
                    .map(|r| r.batch_item_failures.into_iter().map(|f| f.item_identifier).collect())
                    .unwrap_or_else(|| receipts.iter().map(|(id, _)| id.clone()).collect());
                let mut s = self.lock();
                let now = s.world.now;
                let q = s.world.queues.get_mut(queue).expect("queue");
                for (id, receipt) in &receipts {
                    if !failed.contains(id) {
                        q.delete(*receipt);
                    }
                }
                s.caller = "world".into();
                s.log(format!("{} ended at {now}: {} of {} failed", task.name, failed.len(), receipts.len()));
            }
            (Kind::Event { event, attempt }, Ended::Event(false)) => self.retry_event(event, attempt),
            _ => {}
        }
    }

    /// Starts what is due: the scheduled scan, the event source mappings' batches, the events.
    fn start_due(&mut self) {
        let now = self.now();
        let apps = self.apps;
        if now >= self.next_scan {
            self.next_scan = now + SCAN_EVERY;
            let running = self.tasks.iter().any(|t| matches!(t.kind, Kind::Scan));
            if !running || self.overlapping_scans {
                self.serial += 1;
                let event = LambdaEvent::new(
                    json!({"id": format!("scan-{}", self.serial), "detail-type": "Scheduled Event", "source": "aws.events"}),
                    LambdaContext::default(),
                );
                let run: Run<'a> =
                    Box::pin(
                        async move { Ended::Scan(scanner::handler(&apps.scanner, event).await.ok().map(Box::new)) },
                    );
                self.spawn(format!("scanner#{}", self.serial), Kind::Scan, run);
            }
        }
        for queue in [SPOT_QUEUE, SWAP_QUEUE] {
            // Lambda's pollers: a batch now and then while messages are visible, several in
            // flight at once.
            if !self.rng.chance(0.5) {
                continue;
            }
            let max = self.rng.range(1, 10) as usize;
            let deliveries = {
                let mut s = self.lock();
                let s = &mut *s;
                let now = s.world.now;
                let rng = &mut s.rng;
                s.world.queues.get_mut(queue).expect("queue").receive(max, now, rng)
            };
            if deliveries.is_empty() {
                continue;
            }
            let event = LambdaEvent::new(sqs_event(queue, &deliveries), LambdaContext::default());
            let receipts = deliveries.iter().map(|d| (d.message_id.clone(), d.receipt)).collect();
            self.serial += 1;
            let (name, run): (String, Run<'a>) = if queue == SPOT_QUEUE {
                (
                    format!("spot-creator#{}", self.serial),
                    Box::pin(async move { Ended::Batch(spot_creator::handler(&apps.creator, event).await.ok()) }),
                )
            } else {
                (
                    format!("swapper#{}", self.serial),
                    Box::pin(async move { Ended::Batch(swapper::handler(&apps.swapper, event).await.ok()) }),
                )
            };
            self.spawn(name, Kind::Batch { queue, receipts }, run);
        }
        let due: Vec<(Epoch, Value, u32)> = {
            let (due, later) = std::mem::take(&mut self.events).into_iter().partition(|(t, _, _)| *t <= now);
            self.events = later;
            due
        };
        for (_, event, attempt) in due {
            self.serial += 1;
            let payload = event.clone();
            let run: Run<'a> = Box::pin(async move {
                Ended::Event(
                    interruption::handler(&apps.interruption, LambdaEvent::new(payload, LambdaContext::default()))
                        .await
                        .is_ok(),
                )
            });
            self.spawn(format!("interruption#{}", self.serial), Kind::Event { event, attempt }, run);
        }
    }

    fn spawn(&mut self, name: String, kind: Kind, run: Run<'a>) {
        self.invocations += 1;
        self.log(format!("start {name}"));
        self.tasks.push(Task { name, kind, run });
    }

    /// What the world and the people in it do during the chaotic phase.
    fn chaos(&mut self) {
        let r = self.rng.below(1000);
        let sim = self.sim.clone();
        let mut guard = sim.lock().unwrap_or_else(|e| e.into_inner());
        let Sim { world: w, check, .. } = &mut *guard;
        let mut said = Vec::new();
        match r {
            // A Spot interruption warning for one of ours, or a rebalance recommendation.
            0..=3 => {
                let spots: Vec<String> = w
                    .instances
                    .values()
                    .filter(|i| i.spot && i.state.is_live() && i.dies_at.is_none())
                    .map(|i| i.id.clone())
                    .collect();
                if let Some(id) = self.rng.pick(&spots).cloned() {
                    let rebalance = self.rng.chance(0.3);
                    let delay = self.rng.range(0, 5);
                    if rebalance {
                        said.push(format!("rebalance recommendation for {id}"));
                        self.events.push((w.now + delay, warning(&id, "EC2 Instance Rebalance Recommendation"), 0));
                    } else {
                        check.doomed(w, &id);
                        w.interrupt(&id);
                        said.push(format!("Spot interruption warning for {id}: it ends in 2 minutes"));
                        self.events.push((w.now + delay, warning(&id, "EC2 Spot Instance Interruption Warning"), 0));
                    }
                }
            }
            // An instance dies (hardware, someone's TerminateInstances), a copy mid-swap among
            // them.
            4 => {
                let live: Vec<String> =
                    w.instances.values().filter(|i| i.state.is_live()).map(|i| i.id.clone()).collect();
                if let Some(id) = self.rng.pick(&live).cloned() {
                    check.doomed(w, &id);
                    w.kill(&id, "Client.UserInitiatedShutdown");
                    said.push(format!("{id} is terminated by someone else"));
                }
            }
            // A Spot pool runs dry, or fills again.
            5..=6 => {
                let t = *self
                    .rng
                    .pick(&["m5.large", "m5a.large", "m5d.large", "m6i.large", "c5.xlarge", "m6g.large"])
                    .unwrap_or(&"m5.large");
                let z = self.rng.pick(&w.zones).cloned().unwrap_or_default();
                let left = self.rng.range(0, 3) as u32;
                w.spot_capacity.insert((t.to_string(), z.clone()), left);
                said.push(format!("Spot pool {t}@{z} has {left} left"));
            }
            // A new launch template version (a new AMI): a rollout.
            7 => {
                let t = self.rng.pick(&w.templates.keys().cloned().collect::<Vec<_>>()).cloned().unwrap_or_default();
                let image = format!("ami-{:08x}", self.rng.below(1 << 30));
                let v = w.new_version(&t, &image);
                said.push(format!("template {t} version {v} published ({image})"));
            }
            // An operator opts a group out, or back in, or changes its mode.
            8 => {
                let names: Vec<String> = w.groups.keys().cloned().collect();
                let g = self.rng.pick(&names).cloned().unwrap_or_default();
                let group = w.groups.get_mut(&g).expect("group");
                let was_in = group.tags.get(OPT_IN.0).is_some_and(|v| v == OPT_IN.1);
                let choice = self.rng.below(4);
                let tags: Tags = match choice {
                    0 if was_in => [(OPT_IN.0.to_string(), "false".to_string())].into(),
                    0 => return,
                    1 if !was_in && check.was_opted_in(&g) => [(OPT_IN.0.to_string(), OPT_IN.1.to_string())].into(),
                    _ => [(
                        TAG_MODE.to_string(),
                        self.rng.pick(&["enabled", "dry-run", "disabled", "enabled"]).unwrap_or(&"enabled").to_string(),
                    )]
                    .into(),
                };
                group.tags.extend(tags.clone());
                said.push(format!("operator tags {g}: {tags:?}"));
            }
            // An operator protects a member from scale-in, or lifts it.
            9 => {
                let names: Vec<String> = w.groups.keys().cloned().collect();
                let g = self.rng.pick(&names).cloned().unwrap_or_default();
                let members = w.groups[&g].members.len();
                if members > 0 {
                    let k = self.rng.below(members as u64) as usize;
                    let m = &mut w.groups.get_mut(&g).expect("group").members[k];
                    m.protected = !m.protected;
                    let (id, p) = (m.id.clone(), m.protected);
                    said.push(format!("operator sets scale-in protection of {id} in {g} to {p}"));
                }
            }
            // Bad input: a forged or mixed-up swap message naming two members of a group, or a
            // copy of ours with an instance it does not replace. Nothing may change for it.
            14..=15 => {
                let live: Vec<(String, Option<String>)> = w
                    .instances
                    .values()
                    .filter(|i| i.state.is_live())
                    .map(|i| (i.id.clone(), i.tags.get(crate::world::GROUP_NAME_TAG).cloned()))
                    .collect();
                let (Some((old, Some(group))), Some((new, _))) =
                    (self.rng.pick(&live).cloned(), self.rng.pick(&live).cloned())
                else {
                    return;
                };
                if old == new {
                    return;
                }
                let body = asg_core::message::to_body(&asg_core::message::SwapRequest::new(
                    &group,
                    &old,
                    &new,
                    asg_core::domain::model::Market::Spot,
                ));
                let now = w.now;
                let out = asg_core::cloud::Outgoing { body, delay_seconds: 0, group_id: None, dedup_id: None };
                w.queues.get_mut(SWAP_QUEUE).expect("queue").send(&[out], now);
                said.push(format!("a forged swap message: {new} in for {old} in {group}"));
            }
            // A scaling policy or an operator moves desired capacity (within the MaxSize the
            // operator set: a MaxSize raised for an attach keeps room for it alone), or MaxSize.
            10..=13 => {
                let names: Vec<String> = w.groups.keys().cloned().collect();
                let g = self.rng.pick(&names).cloned().unwrap_or_default();
                let (min, max, desired) = (w.groups[&g].min, w.groups[&g].max, w.groups[&g].desired);
                let what = if r <= 12 {
                    let ceiling = check.operator.get(&g).map_or(max, |o| o.1).min(max);
                    let to = self.rng.range(min as i64, ceiling.max(min) as i64) as i32;
                    if to == desired || w.set_desired(&g, to).is_err() {
                        return;
                    }
                    check.operator_set(w, &g, Some(to), None);
                    format!("desired {desired} -> {to}")
                } else {
                    let to = (max as i64 + self.rng.range(-2, 2)).max(min as i64) as i32;
                    if to == max || w.update_group(&g, None, Some(to)).is_err() {
                        return;
                    }
                    check.operator_set(w, &g, None, Some(to));
                    format!("MaxSize {max} -> {to}")
                };
                said.push(format!("operator or scaling policy on {g}: {what}"));
            }
            _ => {}
        }
        guard.caller = "world".into();
        for line in said {
            guard.log(line);
        }
    }

    /// The end of the chaos: faults stop, every pool fills again; the account is left to rest.
    fn rest(&mut self) {
        self.restored = true;
        self.crash_chance = 0.0;
        let mut s = self.lock();
        s.faults = Default::default();
        s.world.spot_capacity.clear();
        s.world.timing.never_ready = 0.0;
        for t in s.world.templates.values_mut() {
            t.kms_key_denied = false;
        }
        s.caller = "world".into();
        s.log("rest: no more faults, crashes or chaos; every Spot pool has capacity".into());
    }
}

/// Runs a future whose only pending points are the simulated calls' yields.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// Which of two functions running at once pauses right before a given call (see
/// [`Harness::deliver_meanwhile`]).
#[derive(Debug, Clone, Copy)]
pub enum Paused {
    /// The batch of the queue delivered.
    Batch,
    /// The interruption handler.
    Handler,
}

/// Polls `f` up to its call of `before` (each poll runs it up to its next call, which it makes
/// on the next poll); its output if it ended first.
fn run_until<F: Future + Unpin + ?Sized>(sim: &Mutex<Sim>, f: &mut F, before: &str) -> Option<F::Output> {
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = Pin::new(&mut *f).poll(&mut cx) {
            return Some(out);
        }
        if sim.lock().unwrap_or_else(|e| e.into_inner()).next == before {
            return None;
        }
    }
}

/// Scripted scenarios: the simulation's account, checker and handlers, driven one step at a
/// time by a test instead of by a seed.
pub struct Harness {
    pub sim: Arc<Mutex<Sim>>,
    clock: Arc<AtomicI64>,
    apps: Apps,
    rng: Rng,
}

impl Harness {
    /// `world` with the two queues of the template added, and the functions' default settings.
    pub fn new(world: World) -> Harness {
        Harness::with_settings(world, &[])
    }

    /// As [`Harness::new`], with these environment variables set for every function (e.g.
    /// `REBALANCE_ACTION=replace`).
    pub fn with_settings(mut world: World, settings: &[(&str, &str)]) -> Harness {
        world.queues.insert(SPOT_QUEUE.into(), Queue::new("asg-optimizer-spot-creator.fifo", VISIBILITY, MAX_RECEIVE));
        world.queues.insert(SWAP_QUEUE.into(), Queue::new("asg-optimizer-swapper", VISIBILITY, MAX_RECEIVE));
        let check = Checker::new(&world, OPT_IN.0, OPT_IN.1);
        let clock = Arc::new(AtomicI64::new(world.now));
        let sim = Arc::new(Mutex::new(Sim::new(world, check, 1)));
        let mut env: BTreeMap<&str, String> =
            [("SPOT_CREATOR_QUEUE_URL", SPOT_QUEUE.to_string()), ("SWAPPER_QUEUE_URL", SWAP_QUEUE.to_string())].into();
        env.extend(settings.iter().map(|(k, v)| (*k, v.to_string())));
        let app = |function, role| App {
            cloud: SimCloud::new(sim.clone(), role),
            config: Config::from_lookup(function, |k| env.get(k).cloned()).expect("valid configuration"),
            calls: ApiCalls::default(),
            emit_metrics: false,
            clock: Clock::Virtual(clock.clone()),
        };
        let apps = Apps {
            scanner: app(Function::Scanner, Role::Scanner),
            creator: app(Function::SpotCreator, Role::SpotCreator),
            swapper: app(Function::Swapper, Role::Swapper),
            interruption: app(Function::Interruption, Role::Interruption),
        };
        Harness { sim, clock, apps, rng: Rng::new(1) }
    }

    pub fn world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        let mut s = self.sim.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut s.world);
        let step = s.step;
        let s = &mut *s;
        s.check.after(&s.world, step);
        r
    }

    /// Lets the world live `seconds` on, checking capacity every second.
    pub fn advance(&self, seconds: Epoch) {
        let mut s = self.sim.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut *s;
        for _ in 0..seconds {
            let next = s.world.now + 1;
            s.world.advance(next);
            let step = s.step;
            s.check.after(&s.world, step);
        }
        self.clock.store(s.world.now, Ordering::SeqCst);
    }

    /// An operator or a scaling policy sets desired capacity and/or MaxSize of `group` now (see
    /// [`Sim::operator`]).
    pub fn operator(&self, group: &str, desired: Option<i32>, max: Option<i32>) {
        let change = OperatorChange { group: group.into(), desired, max, ..Default::default() };
        self.sim.lock().unwrap_or_else(|e| e.into_inner()).operator(&change);
    }

    /// As [`Harness::operator`], right after the next call of `operation` is made, before
    /// anything else is called.
    pub fn operator_after_next(&self, operation: &str, change: OperatorChange) {
        self.sim.lock().unwrap_or_else(|e| e.into_inner()).faults.operator_after_next.push((operation.into(), change));
    }

    /// The world takes `id`: EC2 reclaims it two minutes from now (`warned`, as after a Spot
    /// interruption warning), or someone terminates it now. The checker counts it as lost to
    /// the world, not to the tool.
    pub fn lose(&self, id: &str, warned: bool) {
        let mut s = self.sim.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut *s;
        s.check.doomed(&s.world, id);
        match warned {
            true => s.world.interrupt(id),
            false => s.world.kill(id, "Client.UserInitiatedShutdown"),
        }
    }

    /// The messages on `queue` that name `needle` reach the dead-letter queue, as after their
    /// last failed receive; how many.
    pub fn dead_letter(&self, queue: &str, needle: &str) -> usize {
        self.world(|w| w.queues.get_mut(queue).expect("queue").dead_letter(needle))
    }

    /// Throttles the next call of `operation` (e.g. `ec2:DescribeSpotInstanceRequests`).
    pub fn throttle_next(&self, operation: &str) {
        self.sim.lock().unwrap_or_else(|e| e.into_inner()).faults.throttle_next.push(operation.into());
    }

    /// The next call of `operation` answers a 5xx (`InternalError`), having made its change
    /// (`made`) or not.
    pub fn server_error_next(&self, operation: &str, made: bool) {
        self.sim.lock().unwrap_or_else(|e| e.into_inner()).faults.server_error_next.push((operation.into(), made));
    }

    pub fn scan(&self) -> ScanSummary {
        self.sim.lock().unwrap_or_else(|e| e.into_inner()).caller = "scanner".into();
        let event = LambdaEvent::new(json!({"id": "scan"}), LambdaContext::default());
        block_on(scanner::handler(&self.apps.scanner, event)).expect("a scan")
    }

    /// One batch of everything visible on `queue` through its function; returns the records
    /// delivered. Failed records stay for the visibility timeout, as with Lambda.
    pub fn deliver(&mut self, queue: &str) -> usize {
        self.deliver_meanwhile(queue, None).0
    }

    /// As [`Harness::deliver`]; and with `event` (`(paused, operation, id, detail_type)`), the
    /// interruption handler takes an EC2 event for `id` meanwhile: the `paused` one of the two
    /// runs up to its call of `operation`, the other runs to its end there, then the first goes
    /// on. Two functions in the same second, in an order that one after the other cannot show.
    /// The records delivered, and what the handler answered, if it ran.
    pub fn deliver_meanwhile(
        &mut self,
        queue: &str,
        event: Option<(Paused, &str, &str, &str)>,
    ) -> (usize, Option<Result<Value, String>>) {
        let deliveries = {
            let mut s = self.sim.lock().unwrap_or_else(|e| e.into_inner());
            let now = s.world.now;
            s.caller = queue.rsplit('/').next().unwrap_or_default().into();
            s.world.queues.get_mut(queue).expect("queue").receive(10, now, &mut self.rng)
        };
        if deliveries.is_empty() {
            return (0, None);
        }
        let event_of = |e: SqsEvent| LambdaEvent::new(e, LambdaContext::default());
        let batch = event_of(sqs_event(queue, &deliveries));
        let apps = &self.apps;
        let mut batch: Pin<Box<dyn Future<Output = _> + '_>> = match queue == SPOT_QUEUE {
            true => Box::pin(spot_creator::handler(&apps.creator, batch)),
            false => Box::pin(swapper::handler(&apps.swapper, batch)),
        };
        let (response, answered) = match event {
            None => (block_on(batch), None),
            Some((paused, before, id, detail_type)) => {
                let sim = &self.sim;
                let batch_caller = sim.lock().unwrap_or_else(|e| e.into_inner()).caller.clone();
                let call_as = |caller: &str| sim.lock().unwrap_or_else(|e| e.into_inner()).caller = caller.into();
                let event = LambdaEvent::new(warning(id, detail_type), LambdaContext::default());
                let mut handler: Pin<Box<dyn Future<Output = _> + '_>> =
                    Box::pin(interruption::handler(&apps.interruption, event));
                let (response, answered) = match paused {
                    Paused::Batch => {
                        let done = run_until(sim, &mut batch, before);
                        call_as("interruption");
                        let answered = block_on(handler);
                        call_as(&batch_caller);
                        (done.unwrap_or_else(|| block_on(batch)), answered)
                    }
                    Paused::Handler => {
                        call_as("interruption");
                        let done = run_until(sim, &mut handler, before);
                        call_as(&batch_caller);
                        let response = block_on(batch);
                        call_as("interruption");
                        (response, done.unwrap_or_else(|| block_on(handler)))
                    }
                };
                call_as(&batch_caller);
                (response, Some(answered.map_err(|e| e.to_string())))
            }
        };
        let response = response.expect("an SQS handler never fails its whole batch");
        let failed: Vec<String> = response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
        let mut s = self.sim.lock().unwrap_or_else(|e| e.into_inner());
        let q = s.world.queues.get_mut(queue).expect("queue");
        for d in &deliveries {
            if !failed.contains(&d.message_id) {
                q.delete(d.receipt);
            }
        }
        (deliveries.len(), answered)
    }

    /// An EC2 event (a warning or a rebalance recommendation) for `id` to the interruption
    /// handler; what it answered.
    pub fn event(&self, id: &str, detail_type: &str) -> Result<Value, String> {
        self.sim.lock().unwrap_or_else(|e| e.into_inner()).caller = "interruption".into();
        let event = LambdaEvent::new(warning(id, detail_type), LambdaContext::default());
        block_on(interruption::handler(&self.apps.interruption, event)).map_err(|e| e.to_string())
    }

    pub fn violations(&self) -> Vec<Violation> {
        self.sim.lock().unwrap_or_else(|e| e.into_inner()).check.violations.clone()
    }

    /// The end-state checks, as at the end of a seed.
    pub fn at_rest(&self) -> Vec<Violation> {
        let mut s = self.sim.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut *s;
        let step = s.step;
        s.check.at_rest(&s.world, &self.apps.scanner.config, step);
        s.check.violations.clone()
    }

    pub fn trace(&self) -> String {
        self.sim.lock().unwrap_or_else(|e| e.into_inner()).trace.join("\n")
    }
}
