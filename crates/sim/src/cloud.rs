//! [`SimCloud`]: the [`Cloud`] port over the simulated account. Every call
//!
//! 1. yields once before it acts, so that the driver decides which invocation runs next (and may
//!    end one there: a crash after its previous call);
//! 2. may fail as throttled (nothing done) or with a 5xx (done or not, as the seed decides);
//! 3. is checked before it acts (does the tool own what it changes?) and the invariants after;
//! 4. is counted as the SDK adapter would count it (one per page or batch), and traced.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use asg_core::cloud::{Cloud, GroupQuery, InstanceQuery, Outgoing, Result, TypeQuery};
use asg_core::domain::model::{
    Activity, Group, Health, Hook, Instance, InstanceState, Launch, LaunchResult, Tags, TemplateVersion,
};
use asg_core::domain::pools::TypeInfo;
use asg_core::domain::reserved::Reservation;
use asg_core::error::AwsError;

use crate::check::{Call, Checker};

/// The step of the latest simulated call on this thread's simulation, for a replay to stamp the
/// functions' own log lines with (they interleave with the trace by it).
pub static LAST_STEP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
use crate::iam::{refuses, Role};
use crate::rng::Rng;
use crate::world::World;

/// Throttling and server errors, per call.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub throttle: f64,
    /// A 5xx; on a mutating call, the change is made or not, half and half.
    pub server_error: f64,
    /// Operations whose next call is throttled, once each (scripted scenarios).
    pub throttle_next: Vec<String>,
    /// Operations whose next call answers a 5xx, once each, having made its change or not.
    pub server_error_next: Vec<(String, bool)>,
    /// Operations whose next call an operator follows at once, setting a group's sizes or tags
    /// before anything else is called (scripted scenarios).
    pub operator_after_next: Vec<(String, OperatorChange)>,
}

/// An operator or a scaling policy setting a group's sizes, and an operator its tags.
#[derive(Debug, Clone, Default)]
pub struct OperatorChange {
    pub group: String,
    pub desired: Option<i32>,
    pub max: Option<i32>,
    pub tags: Tags,
}

/// The account and everything that watches it, shared by the four functions' [`SimCloud`]s.
pub struct Sim {
    pub world: World,
    pub check: Checker,
    pub faults: Faults,
    /// Decides the faults; separate from the world's generator so that turning faults on or off
    /// does not change how the world behaves.
    pub rng: Rng,
    /// Calls per `service:Operation`, counted as the SDK adapter makes them.
    pub calls: BTreeMap<String, u64>,
    /// The same per function: (function, operation).
    pub calls_by_function: BTreeMap<(&'static str, String), u64>,
    /// Keep a trace of every call, and check the invariants around it (both off for benchmarks
    /// of large accounts, whose figures are the tool's own work).
    pub tracing: bool,
    pub checking: bool,
    pub trace: Vec<String>,
    /// Calls made so far (the step a violation is reported at).
    pub step: u64,
    /// Who is calling now: the invocation the driver is polling.
    pub caller: String,
    /// The operation the invocation polled last is about to call.
    pub next: &'static str,
    /// Each group's (min, max, desired) when last traced.
    sizes: BTreeMap<String, (i32, i32, i32)>,
}

impl Sim {
    pub fn new(world: World, check: Checker, seed: u64) -> Sim {
        Sim {
            world,
            check,
            faults: Faults::default(),
            rng: Rng::new(seed ^ 0xFA17),
            calls: BTreeMap::new(),
            calls_by_function: BTreeMap::new(),
            tracing: true,
            checking: true,
            trace: Vec::new(),
            step: 0,
            caller: "-".into(),
            next: "",
            sizes: BTreeMap::new(),
        }
    }

    /// An operator or a scaling policy sets a group's sizes, as Auto Scaling would take them (and
    /// an operator its tags); the checker learns what the operator now expects.
    pub fn operator(&mut self, change: &OperatorChange) {
        let OperatorChange { group, desired, max, tags } = change;
        self.world.groups.get_mut(group).expect("a group").tags.extend(tags.clone());
        if let Some(max) = *max {
            self.world.update_group(group, None, Some(max)).expect("a valid MaxSize");
        }
        if let Some(desired) = *desired {
            self.world.set_desired(group, desired).expect("a valid desired capacity");
        }
        self.check.operator_set(&self.world, group, *desired, *max);
    }

    /// Traces every change to a group's min/max/desired since the last call.
    pub fn trace_sizes(&mut self) {
        let now: Vec<(String, (i32, i32, i32))> =
            self.world.groups.values().map(|g| (g.name.clone(), (g.min, g.max, g.desired))).collect();
        for (name, sizes) in now {
            let before = self.sizes.insert(name.clone(), sizes);
            if before.is_some_and(|b| b != sizes) {
                let (min, max, desired) = sizes;
                self.log(format!("  {name} min/max/desired now {min}/{max}/{desired}"));
            }
        }
    }

    pub fn log(&mut self, line: String) {
        if !self.tracing {
            return;
        }
        let t = self.world.now - crate::START;
        self.trace.push(format!(
            "{:>6} {:>3}:{:02}:{:02} {:<22} {line}",
            self.step,
            t / 3600,
            t / 60 % 60,
            t % 60,
            self.caller
        ));
    }
}

/// One function's view of the account. The adapter caches instance types and On-Demand prices
/// for the life of the process; so does this, per function.
#[derive(Clone)]
pub struct SimCloud {
    pub sim: Arc<Mutex<Sim>>,
    /// Whose role the calls are made with.
    pub role: Role,
    cache: Arc<Mutex<BTreeMap<String, Vec<TypeInfo>>>>,
    priced: Arc<Mutex<BTreeMap<String, f64>>>,
}

impl SimCloud {
    pub fn new(sim: Arc<Mutex<Sim>>, role: Role) -> SimCloud {
        SimCloud { sim, role, cache: Arc::default(), priced: Arc::default() }
    }

    pub fn lock(&self) -> MutexGuard<'_, Sim> {
        self.sim.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The frame of every call: yield, fault, check, act, count, trace, check.
    async fn call<T: std::fmt::Debug>(
        &self,
        op: &'static str,
        pages: u64,
        what: String,
        mutation: Option<Call>,
        act: impl FnOnce(&mut World) -> Result<T>,
    ) -> Result<T> {
        self.lock().next = op;
        YieldNow(false).await;
        let mut sim = self.lock();
        let sim = &mut *sim;
        sim.step += 1;
        LAST_STEP.store(sim.step, std::sync::atomic::Ordering::Relaxed);
        *sim.calls.entry(op.to_string()).or_default() += pages.max(1);
        *sim.calls_by_function.entry((self.role.name(), op.to_string())).or_default() += pages.max(1);
        let scripted =
            sim.faults.throttle_next.iter().position(|o| o == op).map(|k| sim.faults.throttle_next.remove(k));
        if scripted.is_some() || sim.rng.chance(sim.faults.throttle) {
            sim.log(format!("{op} {what} -> Throttling (injected)"));
            return Err(AwsError::new(op, Some("Throttling".into()), Some("Rate exceeded".into()), false));
        }
        let scripted = sim.faults.server_error_next.iter().position(|(o, _)| o == op);
        let scripted = scripted.map(|k| sim.faults.server_error_next.remove(k).1);
        let server_error = scripted.is_some() || sim.rng.chance(sim.faults.server_error);
        let before_acting = match scripted {
            Some(made) => !made,
            None => server_error && (mutation.is_none() || sim.rng.chance(0.5)),
        };
        if before_acting {
            sim.log(format!("{op} {what} -> InternalError before acting (injected)"));
            return Err(AwsError::new(op, Some("InternalError".into()), Some("injected".into()), true));
        }
        if let Some(call) = mutation.as_ref().filter(|_| sim.checking) {
            sim.check.before(&sim.world, call, sim.step, &sim.caller);
            if let Some(why) = refuses(self.role, call, &sim.world, sim.check.opt_in(), false) {
                sim.log(format!("{op} {what} -> AccessDenied: {why}"));
                // Refused only because the group was opted out, or a tag the policy's conditions
                // name moved, since the caller read it: AWS says no, and the tool lives with it.
                // Refused even so: the template lacks it.
                if refuses(self.role, call, &sim.world, sim.check.opt_in(), true).is_some()
                    && refuses(self.role, call, &sim.check.as_read(&sim.world, &sim.caller), sim.check.opt_in(), true)
                        .is_some()
                {
                    sim.check.denied(&sim.world, sim.step, why.clone());
                }
                return Err(AwsError::new(op, Some("AccessDenied".into()), Some(why), false));
            }
        }
        let result = act(&mut sim.world);
        let shown = match &result {
            Ok(v) if mutation.is_some() => format!("{v:?}"),
            Ok(_) => "ok".into(),
            Err(e) => format!("{}: {}", e.code(), e.message.as_deref().unwrap_or_default()),
        };
        if server_error {
            sim.log(format!("{op} {what} -> {shown}, then InternalError (injected)"));
        } else {
            sim.log(format!("{op} {what} -> {shown}"));
        }
        if sim.checking {
            sim.trace_sizes();
            sim.check.after(&sim.world, sim.step);
        }
        if let Some(k) = sim.faults.operator_after_next.iter().position(|(o, _)| o == op) {
            let (_, change) = sim.faults.operator_after_next.remove(k);
            sim.operator(&change);
            sim.log(format!("  then the operator (scripted): {change:?}"));
            sim.trace_sizes();
            sim.check.after(&sim.world, sim.step);
        }
        if server_error {
            return Err(AwsError::new(op, Some("InternalError".into()), Some("injected".into()), true));
        }
        result
    }
}

/// Ready on its second poll: the point where the driver chooses what runs next.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn pages(n: usize, per: usize) -> u64 {
    n.div_ceil(per).max(1) as u64
}

fn ids(v: &[String]) -> String {
    if v.len() > 3 {
        format!("{} ids", v.len())
    } else {
        v.join(",")
    }
}

impl Cloud for SimCloud {
    async fn groups(&self, query: &GroupQuery) -> Result<Vec<Group>> {
        let n = match query {
            GroupQuery::Named(names) => pages(names.len(), 100),
            // Every group, 100 to a page.
            GroupQuery::All => pages(self.lock().world.groups.len(), 100),
            _ => 1,
        };
        let groups = self
            .call("autoscaling:DescribeAutoScalingGroups", n, format!("{query:?}"), None, |w| {
                Ok(w.describe_groups(query))
            })
            .await?;
        let mut sim = self.lock();
        let sim = &mut *sim;
        sim.check.read_groups(&sim.world, &sim.caller, &groups);
        Ok(groups)
    }

    async fn instances(&self, query: &InstanceQuery, states: &[InstanceState]) -> Result<Vec<Instance>> {
        let (what, filters) = match query {
            InstanceQuery::InGroups(v) => (format!("in {} groups", v.len()), v.len()),
            InstanceQuery::Ids(v) => (ids(v), v.len()),
            InstanceQuery::Types(v) => (format!("{} types", v.len()), v.len()),
            InstanceQuery::Tagged { key, value } => (format!("{key}={value:?}"), 1),
        };
        let found =
            self.call("ec2:DescribeInstances", 0, what, None, |w| Ok(w.describe_instances(query, states))).await?;
        // One page per 1,000 instances per chunk of 100 filter values; the first page was counted.
        let extra = pages(filters, 100).max(pages(found.len(), 1000)) - 1;
        let mut sim = self.lock();
        let sim = &mut *sim;
        sim.check.read_instances(&sim.world, &sim.caller, &found);
        *sim.calls.entry("ec2:DescribeInstances".into()).or_default() += extra;
        *sim.calls_by_function.entry((self.role.name(), "ec2:DescribeInstances".into())).or_default() += extra;
        Ok(found)
    }

    async fn health(&self, ids_: &[String]) -> Result<BTreeMap<String, Health>> {
        self.call("ec2:DescribeInstanceStatus", pages(ids_.len(), 100), ids(ids_), None, |w| w.instance_status(ids_))
            .await
    }

    async fn group_of(&self, ids_: &[String]) -> Result<BTreeMap<String, String>> {
        self.call("autoscaling:DescribeAutoScalingInstances", pages(ids_.len(), 50), ids(ids_), None, |w| {
            Ok(w.group_of(ids_))
        })
        .await
    }

    async fn spot_prices(&self, types: &[String]) -> Result<BTreeMap<(String, String), f64>> {
        self.call("ec2:DescribeSpotPriceHistory", 1, format!("{} types", types.len()), None, |w| {
            Ok(types
                .iter()
                .flat_map(|t| w.zones.iter().map(move |z| (t, z)))
                .filter_map(|(t, z)| Some(((t.clone(), z.clone()), crate::catalog::spot_price(t, z)?)))
                .collect())
        })
        .await
    }

    async fn on_demand_prices(&self, types: &[String]) -> Result<BTreeMap<String, f64>> {
        let missing: Vec<String> = {
            let priced = self.priced.lock().unwrap_or_else(|e| e.into_inner());
            types.iter().filter(|t| !priced.contains_key(*t)).cloned().collect()
        };
        if !missing.is_empty() {
            let found = self
                .call("pricing:GetProducts", missing.len() as u64, format!("{} types", missing.len()), None, |_| {
                    Ok(crate::catalog::on_demand_prices())
                })
                .await?;
            let mut priced = self.priced.lock().unwrap_or_else(|e| e.into_inner());
            for t in missing {
                if let Some(p) = found.get(&t) {
                    priced.insert(t, *p);
                }
            }
        }
        let priced = self.priced.lock().unwrap_or_else(|e| e.into_inner());
        Ok(types.iter().filter_map(|t| Some((t.clone(), *priced.get(t)?))).collect())
    }

    async fn termination_protected(&self, id: &str) -> Result<bool> {
        self.call("ec2:DescribeInstanceAttribute", 1, id.to_string(), None, |w| w.termination_protected(id)).await
    }

    async fn instance_types(&self, query: &TypeQuery) -> Result<Vec<TypeInfo>> {
        let key = format!("{query:?}");
        if let Some(hit) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(hit.clone());
        }
        let found =
            self.call("ec2:DescribeInstanceTypes", 1, key.clone(), None, |w| Ok(w.instance_types(query))).await?;
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, found.clone());
        Ok(found)
    }

    async fn template_versions(
        &self,
        wanted: &[(String, String)],
    ) -> Result<BTreeMap<(String, String), TemplateVersion>> {
        let templates: std::collections::BTreeSet<&String> = wanted.iter().map(|(t, _)| t).collect();
        let aliased = templates.len() > 1 && wanted.iter().any(|(_, v)| v.starts_with('$'));
        let n = if aliased { 1 } else { templates.len() as u64 };
        self.call("ec2:DescribeLaunchTemplateVersions", n, format!("{} versions", wanted.len()), None, |w| {
            Ok(w.template_versions(wanted))
        })
        .await
    }

    async fn reserved_instances(&self) -> Result<Vec<Reservation>> {
        self.call("ec2:DescribeReservedInstances", 1, String::new(), None, |w| Ok(w.reservations.clone())).await
    }

    async fn interruption_notice(&self, id: &str) -> Result<bool> {
        self.call("ec2:DescribeSpotInstanceRequests", 1, id.to_string(), None, |w| Ok(w.interruption_notice(id))).await
    }

    async fn lifecycle_hooks(&self, group: &str) -> Result<Vec<Hook>> {
        self.call("autoscaling:DescribeLifecycleHooks", 1, group.to_string(), None, |w| w.lifecycle_hooks(group)).await
    }

    async fn scaling_activities(&self, group: &str) -> Result<Vec<Activity>> {
        let op = "autoscaling:DescribeScalingActivities";
        self.call(op, 1, group.to_string(), None, |w| w.scaling_activities(group)).await
    }

    async fn target_health(&self, target_group: &str, ids_: &[String]) -> Result<BTreeMap<String, String>> {
        let what = format!("{target_group} {}", ids(ids_));
        self.call("elasticloadbalancing:DescribeTargetHealth", 1, what, None, |w| w.target_health(target_group, ids_))
            .await
    }

    async fn load_balancer_health(&self, load_balancer: &str, ids_: &[String]) -> Result<BTreeMap<String, String>> {
        let what = format!("{load_balancer} {}", ids(ids_));
        self.call("elasticloadbalancing:DescribeInstanceHealth", 1, what, None, |w| {
            w.load_balancer_health(load_balancer, ids_)
        })
        .await
    }

    async fn launch(&self, launch: &Launch) -> Result<LaunchResult> {
        let what = format!(
            "{} {} in {} for {}",
            launch.market.as_str(),
            launch.instance_types.join(","),
            launch.subnet_id,
            launch.client_token
        );
        self.call("ec2:CreateFleet", 1, what, Some(Call::Launch(launch.clone())), |w| w.create_fleet(launch)).await
    }

    async fn tag_instances(&self, ids_: &[String], tags: &Tags) -> Result<()> {
        let what = format!("{} {tags:?}", ids(ids_));
        let call = Call::TagInstances(ids_.to_vec(), tags.clone());
        self.call("ec2:CreateTags", pages(ids_.len(), 500), what, Some(call), |w| w.create_tags(ids_, tags)).await
    }

    async fn terminate(&self, ids_: &[String]) -> Result<()> {
        let call = Call::Terminate(ids_.to_vec());
        self.call("ec2:TerminateInstances", pages(ids_.len(), 100), ids(ids_), Some(call), |w| {
            w.terminate_instances(ids_)
        })
        .await
    }

    async fn attach(&self, group: &str, ids_: &[String]) -> Result<()> {
        let call = Call::Attach(group.to_string(), ids_.to_vec());
        self.call(
            "autoscaling:AttachInstances",
            pages(ids_.len(), 20),
            format!("{group} {}", ids(ids_)),
            Some(call),
            |w| w.attach(group, ids_),
        )
        .await
    }

    async fn terminate_in_group(&self, id: &str, decrement: bool) -> Result<()> {
        let call = Call::TerminateInGroup(id.to_string(), decrement);
        self.call(
            "autoscaling:TerminateInstanceInAutoScalingGroup",
            1,
            format!("{id} decrement={decrement}"),
            Some(call),
            |w| w.terminate_in_group(id, decrement),
        )
        .await
    }

    async fn detach(&self, group: &str, id: &str, decrement: bool) -> Result<()> {
        let call = Call::Detach(group.to_string(), id.to_string(), decrement);
        self.call("autoscaling:DetachInstances", 1, format!("{group} {id} decrement={decrement}"), Some(call), |w| {
            w.detach(group, id, decrement)
        })
        .await
    }

    async fn set_max_size(&self, group: &str, max: i32) -> Result<()> {
        let call = Call::SetMax(group.to_string(), max);
        self.call("autoscaling:UpdateAutoScalingGroup", 1, format!("{group} MaxSize={max}"), Some(call), |w| {
            w.set_max_size(group, max)
        })
        .await
    }

    async fn set_desired(&self, group: &str, desired: i32) -> Result<()> {
        let call = Call::SetDesired(group.to_string(), desired);
        self.call("autoscaling:SetDesiredCapacity", 1, format!("{group} {desired}"), Some(call), |w| {
            w.set_desired(group, desired)
        })
        .await
    }

    async fn tag_group(&self, group: &str, tags: &Tags) -> Result<()> {
        let call = Call::TagGroup(group.to_string(), tags.clone());
        self.call("autoscaling:CreateOrUpdateTags", 1, format!("{group} {tags:?}"), Some(call), |w| {
            w.tag_group(group, tags)
        })
        .await
    }

    async fn untag_group(&self, group: &str, keys: &[String]) -> Result<()> {
        let call = Call::UntagGroup(group.to_string(), keys.to_vec());
        self.call("autoscaling:DeleteTags", 1, format!("{group} {keys:?}"), Some(call), |w| w.untag_group(group, keys))
            .await
    }

    async fn send(&self, queue_url: &str, messages: Vec<Outgoing>) -> Result<usize> {
        let what = format!("{} to {queue_url}", messages.len());
        let call = Call::Send(queue_url.to_string(), messages.len());
        self.call("sqs:SendMessageBatch", pages(messages.len(), 10), what, Some(call), |w| w.send(queue_url, &messages))
            .await
    }
}
