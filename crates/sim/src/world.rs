//! The simulated account: groups, instances, launch templates, target groups, lifecycle hooks,
//! reservations, Spot pools and queues, in memory, answering as AWS does where
//! `../shared/AWS-NOTES.md` says so (not as moto does):
//!
//! - AttachInstances takes running instances in the group's zones only, raises desired, fails with
//!   `ValidationError` over MaxSize, runs no lifecycle hook, puts the instance InService at once
//!   and registers it with the group's target groups, where it is `initial` until its health
//!   checks pass (never, if the application a launch hook installs is missing);
//! - the group launches its own instances from its template (On-Demand), through its launch
//!   hooks (`Pending:Wait`), registers them, and replaces members that died or failed their
//!   health checks; it scales in by the default termination policy, and a MaxSize set below the
//!   desired capacity lowers it;
//! - TerminateInstanceInAutoScalingGroup deregisters (draining), runs termination hooks
//!   (`Terminating:Wait`) and fails with `ValidationError` when a decrement would go below
//!   MinSize; DetachInstances runs no hook;
//! - CreateFleet draws from Spot pools that run dry, answers HTTP 200 with only `Errors[]`, keeps
//!   ClientToken idempotency (`IdempotentParameterMismatch` for other parameters); a copy
//!   launched with a customer-managed KMS key the caller may not use starts and dies;
//! - each launch, attach, detach and termination of a group is a scaling activity whose cause
//!   says why as AWS words it (a scale-in "shrinking the capacity from 4 to 3"); the newest 100
//!   are described;
//! - status checks pass after a delay, or never; Spot instances are interrupted two minutes
//!   after a warning; an instance just launched is invisible to Describe and CreateTags for a
//!   moment; a resource holds at most 50 tags.
//!
//! Time is the world's virtual clock, moved only by [`World::advance`].

use std::collections::{BTreeMap, BTreeSet};

use asg_core::cloud::{GroupQuery, InstanceQuery, Outgoing, TypeQuery};
use asg_core::domain::model::Launch;
use asg_core::domain::model::{
    rfc3339, Activity, Epoch, Group, Health, Hook, Instance, InstanceState, LaunchResult, LaunchSource, Lifecycle,
    Market, Member, Tags, TemplateVersion,
};
use asg_core::domain::pools::TypeInfo;
use asg_core::domain::reserved::Reservation;
use asg_core::error::AwsError;

use crate::rng::Rng;
use crate::sqs::Queue;

pub const GROUP_NAME_TAG: &str = "aws:autoscaling:groupName";
pub const LT_ID_TAG: &str = "aws:ec2launchtemplate:id";
pub const LT_VERSION_TAG: &str = "aws:ec2launchtemplate:version";
const FLEET_TAG: &str = "aws:ec2:fleet-id";
/// EC2 and Auto Scaling: tags per resource, `aws:` tags not counted.
pub const MAX_TAGS: usize = 50;
/// Seconds between a Spot interruption warning and the end of the instance.
pub const WARNING_LEAD: Epoch = 120;
/// DescribeScalingActivities: activities per page (its MaxRecords at most).
pub const ACTIVITIES_PER_PAGE: usize = 100;

/// How fast things happen in this account.
#[derive(Debug, Clone)]
pub struct Timing {
    /// From launch to `running`.
    pub boot: (Epoch, Epoch),
    /// From `running` to both status checks `ok`.
    pub checks: (Epoch, Epoch),
    /// Chance that a copy launched by the tool never passes its status checks.
    pub never_ready: f64,
    /// How long a new instance may stay invisible to Describe and CreateTags.
    pub visibility_lag: Epoch,
    /// From registration to `healthy` in a target group (interval x healthy threshold).
    pub target_healthy: (Epoch, Epoch),
    /// How long a deregistered target drains.
    pub deregistration_delay: Epoch,
    /// How long a lifecycle hook's action takes before it completes the hook.
    pub hook: (Epoch, Epoch),
    /// From `shutting-down` to `terminated`.
    pub shutdown: (Epoch, Epoch),
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            boot: (5, 30),
            checks: (30, 240),
            never_ready: 0.0,
            visibility_lag: 3,
            target_healthy: (60, 150),
            deregistration_delay: 60,
            hook: (30, 300),
            shutdown: (5, 30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Template {
    pub id: String,
    /// Versions 1, 2, ...: (AMI, instance type).
    pub versions: Vec<(String, String)>,
    pub default_version: i64,
    /// Its volumes use a customer-managed KMS key the tool's launching role may not use: the
    /// instances the tool launches from it start, then die. (A group's own launches use its
    /// service-linked role and live.)
    pub kms_key_denied: bool,
}

/// A lifecycle hook of a simulated group.
#[derive(Debug, Clone)]
pub struct SimHook {
    pub kind: Hook,
    /// A launch hook that installs the application (CodeDeploy, a bootstrap gate): an instance
    /// that did not go through it never becomes healthy behind a load balancer.
    pub installs_app: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimMember {
    pub id: String,
    pub lifecycle: Lifecycle,
    /// When the current lifecycle state ends (a wait, a drain), if it ends by itself.
    pub until: Option<Epoch>,
    pub protected: bool,
    /// Marked unhealthy (its instance died, or failed its load balancer's health checks).
    pub unhealthy: bool,
    /// When it went InService (launched through the group, or attached): the health-check
    /// grace period counts from then.
    pub since: Epoch,
}

#[derive(Debug, Clone)]
pub struct SimGroup {
    pub name: String,
    pub min: i32,
    pub max: i32,
    pub desired: i32,
    pub tags: Tags,
    /// Tag keys propagated to the instances it launches (and attaches).
    pub propagate: BTreeSet<String>,
    pub template: String,
    /// The version the group names: a number, `$Latest` or `$Default`.
    pub version: String,
    pub zones: Vec<String>,
    pub suspended: Vec<String>,
    pub members: Vec<SimMember>,
    /// ELBv2 target groups and Classic Load Balancers it registers its members with: both are
    /// entries of [`World::target_groups`] (a Classic one's states read `InService` /
    /// `OutOfService` through [`World::load_balancer_health`]).
    pub target_groups: Vec<String>,
    pub load_balancers: Vec<String>,
    pub hooks: Vec<SimHook>,
    /// Health check type ELB: a member unhealthy in a target group after the grace period is
    /// replaced.
    pub elb_health: bool,
    pub grace: Epoch,
}

impl SimGroup {
    pub fn member(&self, id: &str) -> Option<&SimMember> {
        self.members.iter().find(|m| m.id == id)
    }

    fn member_mut(&mut self, id: &str) -> Option<&mut SimMember> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    pub fn has_hook(&self, kind: Hook) -> bool {
        self.hooks.iter().any(|h| h.kind == kind)
    }

    /// Members that count toward desired capacity: every one not on its way out.
    pub fn counted(&self) -> usize {
        self.members.iter().filter(|m| !m.lifecycle.is_leaving()).count()
    }
}

#[derive(Debug, Clone)]
pub struct SimInstance {
    pub id: String,
    pub state: InstanceState,
    pub spot: bool,
    pub instance_type: String,
    pub subnet: String,
    pub az: String,
    pub launch_time: Epoch,
    pub tags: Tags,
    pub image: String,
    pub running_at: Epoch,
    /// When `shutting-down` becomes `terminated`.
    pub ends_at: Epoch,
    /// When both status checks pass; `None`: never.
    pub checks_ok_at: Option<Epoch>,
    /// Describe and CreateTags see it from then on (eventual consistency).
    pub visible_at: Epoch,
    /// When it ends by itself, and why (a state reason code).
    pub dies_at: Option<(Epoch, &'static str)>,
    pub state_reason: Option<String>,
    pub termination_protected: bool,
    /// Launched by the tool (CreateFleet), or by a group.
    pub by_tool: bool,
    pub by_group: bool,
    /// The application runs on it (it went through the launch hook that installs it, or none
    /// does).
    pub app: bool,
}

impl SimInstance {
    fn user_tags(&self) -> usize {
        self.tags.keys().filter(|k| !k.starts_with("aws:")).count()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    Initial,
    Healthy,
    Unhealthy,
    Draining,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub state: TargetState,
    /// When `initial` resolves, or `draining` ends.
    pub until: Epoch,
}

/// Everything the account holds, and its clock.
#[derive(Debug, Clone)]
pub struct World {
    pub now: Epoch,
    pub rng: Rng,
    pub timing: Timing,
    pub zones: Vec<String>,
    pub templates: BTreeMap<String, Template>,
    pub groups: BTreeMap<String, SimGroup>,
    pub instances: BTreeMap<String, SimInstance>,
    /// Target group name -> instance id -> its state there.
    pub target_groups: BTreeMap<String, BTreeMap<String, Target>>,
    pub reservations: Vec<Reservation>,
    pub catalog: Vec<TypeInfo>,
    /// Spot capacity left per (type, zone); a pool not listed has plenty.
    pub spot_capacity: BTreeMap<(String, String), u32>,
    pub queues: BTreeMap<String, Queue>,
    /// Members a group chose to terminate when its desired capacity fell below its count.
    pub scale_in_victims: BTreeSet<String>,
    /// Group name -> its scaling activities, oldest first: the newest
    /// [`ACTIVITIES_PER_PAGE`], as many as one DescribeScalingActivities page holds.
    pub activities: BTreeMap<String, Vec<Activity>>,
    /// CreateFleet ClientToken -> (the request it came with, the instance it launched).
    tokens: BTreeMap<String, (String, String, String)>,
    next_id: u64,
}

fn aws_err(operation: &'static str, code: &str, message: String) -> AwsError {
    AwsError::new(operation, Some(code.to_string()), Some(message), false)
}

fn validation(operation: &'static str, message: String) -> AwsError {
    aws_err(operation, "ValidationError", message)
}

fn not_found(operation: &'static str, id: &str) -> AwsError {
    aws_err(operation, "InvalidInstanceID.NotFound", format!("The instance ID '{id}' does not exist"))
}

pub fn subnet_of(zone: &str) -> String {
    format!("subnet-{}", zone.replace('-', ""))
}

impl World {
    pub fn new(seed: u64, now: Epoch, zones: &[&str]) -> World {
        World {
            now,
            rng: Rng::new(seed ^ 0x05EE_D0FA),
            timing: Timing::default(),
            zones: zones.iter().map(|z| z.to_string()).collect(),
            templates: BTreeMap::new(),
            groups: BTreeMap::new(),
            instances: BTreeMap::new(),
            target_groups: BTreeMap::new(),
            reservations: Vec::new(),
            catalog: crate::catalog::types(),
            spot_capacity: BTreeMap::new(),
            queues: BTreeMap::new(),
            scale_in_victims: BTreeSet::new(),
            activities: BTreeMap::new(),
            tokens: BTreeMap::new(),
            next_id: 0x10_0000,
        }
    }

    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:017x}", self.next_id)
    }

    // ---- set-up and what operators do, outside the tool -----------------------------------

    pub fn add_template(&mut self, image: &str, instance_type: &str) -> String {
        let id = self.new_id("lt");
        self.templates.insert(
            id.clone(),
            Template {
                id: id.clone(),
                versions: vec![(image.to_string(), instance_type.to_string())],
                default_version: 1,
                kms_key_denied: false,
            },
        );
        id
    }

    /// Publishes a new version of a template (groups on `$Latest` launch it from now on).
    pub fn new_version(&mut self, template: &str, image: &str) -> i64 {
        let t = self.templates.get_mut(template).expect("template");
        let instance_type = t.versions.last().map(|v| v.1.clone()).unwrap_or_default();
        t.versions.push((image.to_string(), instance_type));
        t.versions.len() as i64
    }

    /// A group of `desired` InService, healthy On-Demand instances, settled as if long running.
    #[allow(clippy::too_many_arguments)]
    pub fn add_group(&mut self, name: &str, min: i32, desired: i32, max: i32, template: &str, tags: &[(&str, &str)]) {
        let group = SimGroup {
            name: name.to_string(),
            min,
            max,
            desired,
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            propagate: tags.iter().map(|(k, _)| k.to_string()).collect(),
            template: template.to_string(),
            version: "$Latest".into(),
            zones: self.zones.clone(),
            suspended: Vec::new(),
            members: Vec::new(),
            target_groups: Vec::new(),
            load_balancers: Vec::new(),
            hooks: Vec::new(),
            elb_health: false,
            grace: 300,
        };
        self.groups.insert(name.to_string(), group);
        for _ in 0..desired {
            let id = self.group_launch(name);
            let i = self.instances.get_mut(&id).expect("launched");
            i.state = InstanceState::Running;
            i.launch_time -= 86_400;
            i.running_at = i.launch_time;
            i.checks_ok_at = Some(i.launch_time);
            i.visible_at = i.launch_time;
            let m = self.groups.get_mut(name).and_then(|g| g.member_mut(&id)).expect("member");
            m.lifecycle = Lifecycle::InService;
            m.until = None;
            m.since = self.now - 86_400;
        }
    }

    /// Puts a group behind a (new) Classic Load Balancer; its InService members are InService.
    pub fn add_classic_load_balancer(&mut self, group: &str) -> String {
        let lb = format!("clb-{group}-{}", self.target_groups.len());
        let tg = self.add_target_group(group);
        let targets = self.target_groups.remove(&tg).unwrap_or_default();
        self.target_groups.insert(lb.clone(), targets);
        let g = self.groups.get_mut(group).expect("group");
        g.target_groups.retain(|t| *t != tg);
        g.load_balancers.push(lb.clone());
        lb
    }

    /// Puts a group behind a (new) target group; its InService members are registered healthy.
    pub fn add_target_group(&mut self, group: &str) -> String {
        let tg = format!(
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/tg-{group}-{}/0",
            self.target_groups.len()
        );
        let members: Vec<String> = self.groups[group]
            .members
            .iter()
            .filter(|m| m.lifecycle == Lifecycle::InService)
            .map(|m| m.id.clone())
            .collect();
        let targets = members.into_iter().map(|id| (id, Target { state: TargetState::Healthy, until: 0 })).collect();
        self.target_groups.insert(tg.clone(), targets);
        let g = self.groups.get_mut(group).expect("group");
        g.target_groups.push(tg.clone());
        g.elb_health = true;
        tg
    }

    /// SetDesiredCapacity, as the tool, a scaling policy or an operator calls it.
    pub fn set_desired(&mut self, group: &str, desired: i32) -> Result<(), AwsError> {
        let g = self.groups.get_mut(group).ok_or_else(|| {
            validation("autoscaling:SetDesiredCapacity", format!("AutoScalingGroup name not found - {group}"))
        })?;
        if desired < g.min || desired > g.max {
            return Err(validation(
                "autoscaling:SetDesiredCapacity",
                format!("New SetDesiredCapacity value {desired} is below min value {} or above max value {} for the AutoScalingGroup.", g.min, g.max),
            ));
        }
        g.desired = desired;
        Ok(())
    }

    /// UpdateAutoScalingGroup as an operator or a stack update does it: a MaxSize below desired
    /// capacity lowers desired to it, a MinSize above raises it.
    pub fn update_group(&mut self, group: &str, min: Option<i32>, max: Option<i32>) -> Result<(), AwsError> {
        let g = self.groups.get_mut(group).expect("group");
        let (min, max) = (min.unwrap_or(g.min), max.unwrap_or(g.max));
        if min > max {
            return Err(validation(
                "autoscaling:UpdateAutoScalingGroup",
                format!("Max bound, {max}, must be greater than or equal to min bound, {min}"),
            ));
        }
        g.min = min;
        g.max = max;
        g.desired = g.desired.clamp(min, max);
        Ok(())
    }

    /// The account's own mishaps and other people's actions on an instance: it dies now.
    pub fn kill(&mut self, id: &str, reason: &'static str) {
        if let Some(i) = self.instances.get_mut(id) {
            if i.state.is_live() {
                i.dies_at = Some((self.now, reason));
            }
        }
    }

    /// An EC2 Spot interruption warning: the instance ends in two minutes.
    pub fn interrupt(&mut self, id: &str) {
        let now = self.now;
        if let Some(i) = self.instances.get_mut(id) {
            if i.spot && i.state.is_live() && i.dies_at.is_none() {
                i.dies_at = Some((now + WARNING_LEAD, "Server.SpotInstanceTermination"));
            }
        }
    }

    // ---- the world moving on by itself ------------------------------------------------------

    /// Moves the clock to `to`, one second at a time where something is due.
    pub fn advance(&mut self, to: Epoch) {
        while self.now < to {
            self.now += 1;
            self.step();
        }
    }

    /// What happens at `now`: instances boot, die and shut down; targets pass their checks or
    /// finish draining; hooks complete; groups replace the dead and unhealthy and move toward
    /// their desired capacity.
    fn step(&mut self) {
        let now = self.now;
        let mut died = Vec::new();
        for i in self.instances.values_mut() {
            match i.state {
                InstanceState::Pending if i.dies_at.is_some_and(|(t, _)| t <= now) => {
                    let (_, reason) = i.dies_at.take().unwrap_or_default();
                    i.state = InstanceState::ShuttingDown;
                    i.state_reason = Some(reason.to_string());
                    died.push(i.id.clone());
                }
                InstanceState::Pending if i.running_at <= now => i.state = InstanceState::Running,
                InstanceState::Running if i.dies_at.is_some_and(|(t, _)| t <= now) => {
                    let (_, reason) = i.dies_at.take().unwrap_or_default();
                    i.state = InstanceState::ShuttingDown;
                    i.state_reason = Some(reason.to_string());
                    died.push(i.id.clone());
                }
                InstanceState::ShuttingDown if i.ends_at <= now => i.state = InstanceState::Terminated,
                _ => {}
            }
        }
        for id in died {
            let end = now + self.rng.range(self.timing.shutdown.0, self.timing.shutdown.1);
            if let Some(i) = self.instances.get_mut(&id) {
                i.ends_at = end;
            }
        }
        self.step_targets();
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for name in names {
            self.step_group(&name);
        }
    }

    fn step_targets(&mut self) {
        let now = self.now;
        for targets in self.target_groups.values_mut() {
            targets.retain(|_, t| !(t.state == TargetState::Draining && t.until <= now));
            for (id, t) in targets.iter_mut() {
                if t.state == TargetState::Initial && t.until <= now {
                    let serves = self.instances.get(id).is_some_and(|i| i.app && i.state == InstanceState::Running);
                    t.state = if serves { TargetState::Healthy } else { TargetState::Unhealthy };
                }
                if t.state == TargetState::Healthy
                    && !self.instances.get(id).is_some_and(|i| i.state == InstanceState::Running)
                {
                    t.state = TargetState::Unhealthy;
                }
            }
        }
    }

    /// Every target group and Classic Load Balancer of the group.
    fn balancers(&self, group: &str) -> Vec<String> {
        let g = &self.groups[group];
        g.target_groups.iter().chain(&g.load_balancers).cloned().collect()
    }

    fn register(&mut self, group: &str, id: &str) {
        let delay = self.rng.range(self.timing.target_healthy.0, self.timing.target_healthy.1);
        let now = self.now;
        for tg in self.balancers(group) {
            if let Some(targets) = self.target_groups.get_mut(&tg) {
                targets.insert(id.to_string(), Target { state: TargetState::Initial, until: now + delay });
            }
        }
    }

    fn deregister(&mut self, group: &str, id: &str) {
        let until = self.now + self.timing.deregistration_delay;
        for tg in self.balancers(group) {
            if let Some(t) = self.target_groups.get_mut(&tg).and_then(|ts| ts.get_mut(id)) {
                if t.state != TargetState::Draining {
                    *t = Target { state: TargetState::Draining, until };
                }
            }
        }
    }

    /// Healthy in every target group and Classic Load Balancer of `group` (true when it has
    /// none).
    pub fn healthy_behind(&self, group: &str, id: &str) -> bool {
        let g = &self.groups[group];
        g.target_groups.iter().chain(&g.load_balancers).all(|tg| {
            self.target_groups.get(tg).and_then(|ts| ts.get(id)).is_some_and(|t| t.state == TargetState::Healthy)
        })
    }

    fn step_group(&mut self, name: &str) {
        let now = self.now;
        // Lifecycle transitions that end by themselves.
        let ids: Vec<String> = self.groups[name].members.iter().map(|m| m.id.clone()).collect();
        for id in ids {
            let Some(m) = self.groups[name].member(&id).cloned() else { continue };
            let instance_state = self.instances.get(&id).map(|i| i.state);
            let dead = !instance_state.is_some_and(|s| s.is_live());
            match m.lifecycle {
                Lifecycle::Pending if dead => {
                    self.record_termination(name, &id, "an instance was taken out of service in response to an EC2 health check indicating it has been terminated or stopped".into());
                    self.set_lifecycle(name, &id, Lifecycle::Terminating, Some(now));
                }
                Lifecycle::Pending if instance_state == Some(InstanceState::Running) => {
                    if self.groups[name].has_hook(Hook::Launching) {
                        let takes = self.rng.range(self.timing.hook.0, self.timing.hook.1);
                        self.set_lifecycle(name, &id, Lifecycle::PendingWait, Some(now + takes));
                    } else {
                        self.set_lifecycle(name, &id, Lifecycle::PendingProceed, Some(now));
                    }
                }
                Lifecycle::PendingWait if m.until.is_some_and(|t| t <= now) => {
                    if let Some(i) = self.instances.get_mut(&id) {
                        i.app = true;
                    }
                    self.set_lifecycle(name, &id, Lifecycle::PendingProceed, Some(now));
                }
                Lifecycle::PendingProceed if m.until.is_some_and(|t| t <= now) => {
                    self.register(name, &id);
                    self.set_lifecycle(name, &id, Lifecycle::InService, None);
                    if let Some(m) = self.groups.get_mut(name).and_then(|g| g.member_mut(&id)) {
                        m.since = now;
                    }
                }
                Lifecycle::InService | Lifecycle::Standby if dead && !m.unhealthy => {
                    self.mark_unhealthy(name, &id);
                }
                Lifecycle::InService if !m.unhealthy && self.groups[name].elb_health => {
                    let failing = self.balancers(name).iter().any(|tg| {
                        self.target_groups
                            .get(tg)
                            .and_then(|ts| ts.get(&id))
                            .is_some_and(|t| t.state == TargetState::Unhealthy)
                    });
                    // The grace period applies to attached instances too, from their attach.
                    if failing && now - m.since > self.groups[name].grace {
                        self.mark_unhealthy(name, &id);
                    }
                }
                Lifecycle::Terminating => {
                    if self.groups[name].has_hook(Hook::Terminating) && !dead {
                        let takes = self.rng.range(self.timing.hook.0, self.timing.hook.1);
                        self.set_lifecycle(name, &id, Lifecycle::TerminatingWait, Some(now + takes));
                    } else {
                        self.set_lifecycle(name, &id, Lifecycle::TerminatingProceed, Some(now));
                    }
                }
                Lifecycle::TerminatingWait if m.until.is_some_and(|t| t <= now) => {
                    self.set_lifecycle(name, &id, Lifecycle::TerminatingProceed, Some(now));
                }
                Lifecycle::TerminatingProceed if m.until.is_some_and(|t| t <= now) => {
                    self.shut_down(&id);
                    if let Some(g) = self.groups.get_mut(name) {
                        g.members.retain(|x| x.id != id);
                    }
                }
                Lifecycle::Detaching if m.until.is_some_and(|t| t <= now) => {
                    if let Some(g) = self.groups.get_mut(name) {
                        g.members.retain(|x| x.id != id);
                    }
                    if let Some(i) = self.instances.get_mut(&id) {
                        i.tags.remove(GROUP_NAME_TAG);
                    }
                }
                _ => {}
            }
        }
        // Unhealthy members are terminated and replaced, desired unchanged.
        let unhealthy: Vec<String> = self.groups[name]
            .members
            .iter()
            .filter(|m| m.unhealthy && !m.lifecycle.is_leaving())
            .map(|m| m.id.clone())
            .collect();
        for id in unhealthy {
            let why = match self.instances.get(&id).is_some_and(|i| i.state.is_live()) {
                true => "an instance was taken out of service in response to an ELB system health check failure",
                false => "an instance was taken out of service in response to an EC2 health check indicating it has been terminated or stopped",
            };
            self.record_termination(name, &id, why.into());
            self.begin_termination(name, &id);
        }
        // Toward desired capacity.
        let (counted, desired) = (self.groups[name].counted() as i32, self.groups[name].desired);
        if self.groups[name].suspended.iter().any(|p| p == "Launch") {
            return;
        }
        for _ in counted..desired {
            let id = self.group_launch(name);
            let why = format!("an instance was started in response to a difference between desired and actual capacity, increasing the capacity from {counted} to {desired}");
            self.record_activity(name, format!("Launching a new EC2 instance: {id}"), why);
        }
        if counted > desired && !self.groups[name].suspended.iter().any(|p| p == "Terminate") {
            for _ in desired..counted {
                match self.scale_in_victim(name) {
                    Some(id) => {
                        let why = format!("an instance was taken out of service in response to a difference between desired and actual capacity, shrinking the capacity from {counted} to {desired}");
                        self.record_termination(name, &id, why);
                        self.scale_in_victims.insert(id.clone());
                        self.begin_termination(name, &id);
                    }
                    None => break,
                }
            }
        }
    }

    fn set_lifecycle(&mut self, group: &str, id: &str, lifecycle: Lifecycle, until: Option<Epoch>) {
        if let Some(m) = self.groups.get_mut(group).and_then(|g| g.member_mut(id)) {
            m.lifecycle = lifecycle;
            m.until = until;
        }
    }

    fn mark_unhealthy(&mut self, group: &str, id: &str) {
        if let Some(m) = self.groups.get_mut(group).and_then(|g| g.member_mut(id)) {
            m.unhealthy = true;
        }
    }

    /// A scaling activity of `group`, as DescribeScalingActivities will describe it.
    fn record_activity(&mut self, group: &str, description: String, why: String) {
        let cause = format!("At {} {why}.", rfc3339(self.now));
        let activities = self.activities.entry(group.to_string()).or_default();
        activities.push(Activity { description, cause });
        if activities.len() > ACTIVITIES_PER_PAGE {
            activities.remove(0);
        }
    }

    fn record_termination(&mut self, group: &str, id: &str, why: String) {
        self.record_activity(group, format!("Terminating EC2 instance: {id}"), why);
    }

    /// DescribeScalingActivities, one page: newest first.
    pub fn scaling_activities(&self, group: &str) -> Result<Vec<Activity>, AwsError> {
        Ok(self.activities.get(group).map(|a| a.iter().rev().cloned().collect()).unwrap_or_default())
    }

    /// Deregisters (the target drains), then Terminating: the hooks and the end follow.
    fn begin_termination(&mut self, group: &str, id: &str) {
        self.deregister(group, id);
        self.set_lifecycle(group, id, Lifecycle::Terminating, Some(self.now));
    }

    fn shut_down(&mut self, id: &str) {
        let end = self.now + self.rng.range(self.timing.shutdown.0, self.timing.shutdown.1);
        if let Some(i) = self.instances.get_mut(id) {
            if i.state.is_live() || i.state == InstanceState::Stopped {
                i.state = InstanceState::ShuttingDown;
                i.ends_at = end;
                i.dies_at = None;
            }
        }
    }

    /// The default termination policy: the zone with the most members, then instances of the
    /// oldest launch template version, then any (the seeded generator picks). Protected
    /// members are spared.
    fn scale_in_victim(&mut self, group: &str) -> Option<String> {
        let g = &self.groups[group];
        let candidates: Vec<&SimMember> =
            g.members.iter().filter(|m| !m.lifecycle.is_leaving() && !m.protected).collect();
        let zone_of = |id: &str| self.instances.get(id).map(|i| i.az.clone()).unwrap_or_default();
        let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
        for m in &candidates {
            *per_zone.entry(zone_of(&m.id)).or_default() += 1;
        }
        let busiest = per_zone.iter().max_by_key(|(z, n)| (**n, std::cmp::Reverse((*z).clone())))?.0.clone();
        let version = |id: &str| {
            self.instances.get(id).and_then(|i| i.tags.get(LT_VERSION_TAG)?.parse::<i64>().ok()).unwrap_or(0)
        };
        let in_zone: Vec<&SimMember> = candidates.into_iter().filter(|m| zone_of(&m.id) == busiest).collect();
        let oldest = in_zone.iter().map(|m| version(&m.id)).min()?;
        let pool: Vec<String> = in_zone.iter().filter(|m| version(&m.id) == oldest).map(|m| m.id.clone()).collect();
        let pick = self.rng.below(pool.len() as u64) as usize;
        pool.get(pick).cloned()
    }

    /// The group launches one On-Demand instance from its template into its emptiest zone.
    fn group_launch(&mut self, group: &str) -> String {
        let g = &self.groups[group];
        let zone = g
            .zones
            .iter()
            .min_by_key(|z| {
                g.members
                    .iter()
                    .filter(|m| !m.lifecycle.is_leaving())
                    .filter(|m| self.instances.get(&m.id).is_some_and(|i| &i.az == *z))
                    .count()
            })
            .cloned()
            .unwrap_or_default();
        let (number, image, instance_type) = self.resolve(&g.template, &g.version).unwrap_or_default();
        let mut tags: Tags =
            g.tags.iter().filter(|(k, _)| g.propagate.contains(*k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        tags.insert(GROUP_NAME_TAG.into(), group.to_string());
        tags.insert(LT_ID_TAG.into(), g.template.clone());
        tags.insert(LT_VERSION_TAG.into(), number.to_string());
        let app = !g.has_hook(Hook::Launching);
        let id = self.new_instance(false, &instance_type, &zone, tags, &image, false);
        if let Some(i) = self.instances.get_mut(&id) {
            i.by_group = true;
            i.app = app;
        }
        let g = self.groups.get_mut(group).expect("group");
        g.members.push(SimMember {
            id: id.clone(),
            lifecycle: Lifecycle::Pending,
            until: None,
            protected: false,
            unhealthy: false,
            since: 0,
        });
        id
    }

    fn new_instance(
        &mut self,
        spot: bool,
        instance_type: &str,
        zone: &str,
        tags: Tags,
        image: &str,
        by_tool: bool,
    ) -> String {
        let id = self.new_id("i");
        let now = self.now;
        let running_at = now + self.rng.range(self.timing.boot.0, self.timing.boot.1);
        let never = by_tool && self.rng.chance(self.timing.never_ready);
        let checks = self.rng.range(self.timing.checks.0, self.timing.checks.1);
        let lag = self.rng.range(0, self.timing.visibility_lag);
        self.instances.insert(
            id.clone(),
            SimInstance {
                id: id.clone(),
                state: InstanceState::Pending,
                spot,
                instance_type: instance_type.to_string(),
                subnet: subnet_of(zone),
                az: zone.to_string(),
                launch_time: now,
                tags,
                image: image.to_string(),
                running_at,
                ends_at: 0,
                checks_ok_at: (!never).then_some(running_at + checks),
                visible_at: now + lag,
                dies_at: None,
                state_reason: None,
                termination_protected: false,
                by_tool,
                by_group: false,
                app: true,
            },
        );
        id
    }

    /// (version number, AMI, instance type) that `version` of `template` names now.
    fn resolve(&self, template: &str, version: &str) -> Option<(i64, String, String)> {
        let t = self.templates.get(template)?;
        let n = match version {
            "$Latest" => t.versions.len() as i64,
            "$Default" => t.default_version,
            n => n.parse().ok()?,
        };
        let (image, ty) = t.versions.get(usize::try_from(n).ok()?.checked_sub(1)?)?;
        Some((n, image.clone(), ty.clone()))
    }

    // ---- the API: what the port's calls do ------------------------------------------------

    fn visible(&self, id: &str) -> Option<&SimInstance> {
        self.instances.get(id).filter(|i| i.visible_at <= self.now)
    }

    fn to_instance(i: &SimInstance) -> Instance {
        Instance {
            id: i.id.clone(),
            state: i.state,
            spot: i.spot,
            instance_type: i.instance_type.clone(),
            subnet_id: Some(i.subnet.clone()),
            availability_zone: Some(i.az.clone()),
            launch_time: i.launch_time,
            tags: i.tags.clone(),
            image_id: Some(i.image.clone()),
            platform: "Linux/UNIX".into(),
            tenancy: "default".into(),
            state_reason: i.state_reason.clone(),
        }
    }

    pub fn to_group(&self, g: &SimGroup) -> Group {
        Group {
            name: g.name.clone(),
            min: g.min,
            max: g.max,
            desired: g.desired,
            tags: g.tags.clone(),
            members: g
                .members
                .iter()
                .map(|m| Member {
                    id: m.id.clone(),
                    lifecycle: m.lifecycle.clone(),
                    healthy: !m.unhealthy,
                    protected_from_scale_in: m.protected,
                })
                .collect(),
            launch: LaunchSource::Template { id: g.template.clone(), version: g.version.clone() },
            suspended: g.suspended.clone(),
            target_groups: g.target_groups.clone(),
            load_balancers: g.load_balancers.clone(),
        }
    }

    /// DescribeAutoScalingGroups.
    pub fn describe_groups(&self, query: &GroupQuery) -> Vec<Group> {
        self.groups
            .values()
            .filter(|g| match query {
                GroupQuery::Tagged { key, value } => g.tags.get(key) == Some(value),
                GroupQuery::HavingAnyTag { keys } => keys.iter().any(|k| g.tags.contains_key(k)),
                GroupQuery::Named(names) => names.contains(&g.name),
                GroupQuery::All => true,
            })
            .map(|g| self.to_group(g))
            .collect()
    }

    /// DescribeInstances: only instances the account shows already, in `states`.
    pub fn describe_instances(&self, query: &InstanceQuery, states: &[InstanceState]) -> Vec<Instance> {
        let values: BTreeSet<&str> = match query {
            InstanceQuery::InGroups(v) | InstanceQuery::Ids(v) | InstanceQuery::Types(v) => {
                v.iter().map(String::as_str).collect()
            }
            InstanceQuery::Tagged { .. } => BTreeSet::new(),
        };
        self.instances
            .values()
            .filter(|i| i.visible_at <= self.now && states.contains(&i.state))
            .filter(|i| match query {
                InstanceQuery::InGroups(_) => i.tags.get(GROUP_NAME_TAG).is_some_and(|g| values.contains(g.as_str())),
                InstanceQuery::Tagged { key, value: None } => i.tags.contains_key(key),
                InstanceQuery::Tagged { key, value: Some(v) } => i.tags.get(key) == Some(v),
                InstanceQuery::Ids(_) => values.contains(i.id.as_str()),
                InstanceQuery::Types(_) => values.contains(i.instance_type.as_str()),
            })
            .map(Self::to_instance)
            .collect()
    }

    /// DescribeInstanceStatus with IncludeAllInstances: an id the account does not show fails
    /// the whole call.
    pub fn instance_status(&self, ids: &[String]) -> Result<BTreeMap<String, Health>, AwsError> {
        let mut out = BTreeMap::new();
        for id in ids {
            let i = self.visible(id).ok_or_else(|| not_found("ec2:DescribeInstanceStatus", id))?;
            let (system, instance) = match (i.state, i.checks_ok_at) {
                (InstanceState::Running, Some(t)) if t <= self.now => ("ok", "ok"),
                (InstanceState::Running, _) => ("initializing", "initializing"),
                _ => ("not-applicable", "not-applicable"),
            };
            out.insert(
                id.clone(),
                Health { state: i.state, system: system.into(), instance: instance.into(), ebs: None },
            );
        }
        Ok(out)
    }

    /// DescribeAutoScalingInstances.
    pub fn group_of(&self, ids: &[String]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for g in self.groups.values() {
            for m in &g.members {
                if ids.contains(&m.id) {
                    out.insert(m.id.clone(), g.name.clone());
                }
            }
        }
        out
    }

    pub fn termination_protected(&self, id: &str) -> Result<bool, AwsError> {
        Ok(self.visible(id).ok_or_else(|| not_found("ec2:DescribeInstanceAttribute", id))?.termination_protected)
    }

    pub fn instance_types(&self, query: &TypeQuery) -> Vec<TypeInfo> {
        self.catalog
            .iter()
            .filter(|t| match query {
                TypeQuery::Named(names) => names.contains(&t.name),
                TypeQuery::SpotCapable { architecture, vcpus } => {
                    t.spot && t.architectures.contains(architecture) && vcpus.contains(&t.vcpus)
                }
            })
            .cloned()
            .collect()
    }

    pub fn template_versions(&self, wanted: &[(String, String)]) -> BTreeMap<(String, String), TemplateVersion> {
        wanted
            .iter()
            .filter_map(|(id, v)| {
                let (number, image, ty) = self.resolve(id, v)?;
                Some((
                    (id.clone(), v.clone()),
                    TemplateVersion { template_id: id.clone(), number, image_id: Some(image), instance_type: Some(ty) },
                ))
            })
            .collect()
    }

    /// DescribeSpotInstanceRequests: the request of a Spot instance EC2 has warned is
    /// `marked-for-termination` from the notice on.
    pub fn interruption_notice(&self, id: &str) -> bool {
        self.instances.get(id).is_some_and(|i| {
            i.spot
                && i.state.is_live()
                && i.dies_at.is_some_and(|(_, reason)| reason == "Server.SpotInstanceTermination")
        })
    }

    /// DescribeLifecycleHooks.
    pub fn lifecycle_hooks(&self, group: &str) -> Result<Vec<Hook>, AwsError> {
        let g = self
            .groups
            .get(group)
            .ok_or_else(|| validation("autoscaling:DescribeLifecycleHooks", format!("Group {group} not found")))?;
        Ok(g.hooks.iter().map(|h| h.kind).collect())
    }

    /// DescribeTargetHealth for these ids: registered ones only.
    pub fn target_health(&self, target_group: &str, ids: &[String]) -> Result<BTreeMap<String, String>, AwsError> {
        let targets = self.target_groups.get(target_group).ok_or_else(|| {
            aws_err(
                "elasticloadbalancing:DescribeTargetHealth",
                "TargetGroupNotFound",
                format!("{target_group} not found"),
            )
        })?;
        Ok(ids
            .iter()
            .filter_map(|id| {
                let state = match targets.get(id)?.state {
                    TargetState::Initial => "initial",
                    TargetState::Healthy => "healthy",
                    TargetState::Unhealthy => "unhealthy",
                    TargetState::Draining => "draining",
                };
                Some((id.clone(), state.to_string()))
            })
            .collect())
    }

    /// DescribeInstanceHealth of a Classic Load Balancer: `InService` once healthy, else
    /// `OutOfService`.
    pub fn load_balancer_health(&self, lb: &str, ids: &[String]) -> Result<BTreeMap<String, String>, AwsError> {
        let targets = self.target_groups.get(lb).ok_or_else(|| {
            aws_err("elasticloadbalancing:DescribeInstanceHealth", "LoadBalancerNotFound", format!("{lb} not found"))
        })?;
        Ok(ids
            .iter()
            .filter_map(|id| {
                let state = if targets.get(id)?.state == TargetState::Healthy { "InService" } else { "OutOfService" };
                Some((id.clone(), state.to_string()))
            })
            .collect())
    }

    /// CreateFleet, instant, one instance.
    pub fn create_fleet(&mut self, launch: &Launch) -> Result<LaunchResult, AwsError> {
        const OP: &str = "ec2:CreateFleet";
        let request = format!(
            "{:?}|{}|{}|{:?}|{}|{:?}",
            launch.market,
            launch.template_id,
            launch.template_version,
            launch.instance_types,
            launch.subnet_id,
            launch.tags
        );
        if let Some((seen, instance_id, instance_type)) = self.tokens.get(&launch.client_token) {
            if *seen != request {
                return Err(aws_err(
                    OP,
                    "IdempotentParameterMismatch",
                    "The client token you have provided is associated with a resource that is already deleted, or the parameters differ".into(),
                ));
            }
            return Ok(LaunchResult::Launched {
                instance_id: instance_id.clone(),
                instance_type: instance_type.clone(),
                empty_pools: Vec::new(),
            });
        }
        let Some((number, image, _)) = self.resolve(&launch.template_id, &launch.template_version) else {
            return Ok(LaunchResult::Refused {
                code: "InvalidLaunchTemplateId.VersionNotFound".into(),
                message: format!("version {} of {} does not exist", launch.template_version, launch.template_id),
            });
        };
        if launch.tags.iter().filter(|(k, _)| !k.starts_with("aws:")).count() > MAX_TAGS {
            return Ok(LaunchResult::Refused { code: "TagLimitExceeded".into(), message: "too many tags".into() });
        }
        let Some(zone) = self.zones.iter().find(|z| subnet_of(z) == launch.subnet_id).cloned() else {
            return Ok(LaunchResult::Refused {
                code: "InvalidSubnetID.NotFound".into(),
                message: format!("subnet {} does not exist", launch.subnet_id),
            });
        };
        let spot = launch.market == Market::Spot;
        let open: Vec<&String> = launch
            .instance_types
            .iter()
            .filter(|t| !spot || self.spot_capacity.get(&((*t).clone(), zone.clone())).is_none_or(|n| *n > 0))
            .collect();
        let empty_pools: Vec<String> = launch.instance_types.iter().filter(|t| !open.contains(t)).cloned().collect();
        let Some(chosen) = self.rng.pick(&open).map(|t| (*t).clone()) else {
            return Ok(LaunchResult::NoCapacity {
                code: "InsufficientInstanceCapacity".into(),
                message: "There is no Spot capacity available that matches your request.".into(),
            });
        };
        if spot {
            if let Some(n) = self.spot_capacity.get_mut(&(chosen.clone(), zone.clone())) {
                *n -= 1;
            }
        }
        let mut tags: Tags = launch.tags.iter().cloned().collect();
        let fleet = self.new_id("fleet");
        tags.insert(LT_ID_TAG.into(), launch.template_id.clone());
        tags.insert(LT_VERSION_TAG.into(), number.to_string());
        tags.insert(FLEET_TAG.into(), fleet);
        let id = self.new_instance(spot, &chosen, &zone, tags, &image, true);
        if self.templates.get(&launch.template_id).is_some_and(|t| t.kms_key_denied) {
            let dies = self.now + self.rng.range(3, 20);
            if let Some(i) = self.instances.get_mut(&id) {
                i.dies_at = Some((dies, "Client.InvalidKMSKey.InvalidState"));
                i.checks_ok_at = None;
            }
        }
        self.tokens.insert(launch.client_token.clone(), (request, id.clone(), chosen.clone()));
        Ok(LaunchResult::Launched { instance_id: id, instance_type: chosen, empty_pools })
    }

    /// CreateTags: every id must be visible, and no resource may end with over 50 tags; either
    /// fails the whole call.
    pub fn create_tags(&mut self, ids: &[String], tags: &Tags) -> Result<(), AwsError> {
        const OP: &str = "ec2:CreateTags";
        for id in ids {
            let i = self.visible(id).ok_or_else(|| not_found(OP, id))?;
            let added = tags.keys().filter(|k| !i.tags.contains_key(*k) && !k.starts_with("aws:")).count();
            if i.user_tags() + added > MAX_TAGS {
                return Err(aws_err(
                    OP,
                    "TagLimitExceeded",
                    format!("The maximum number of tags for {id} is {MAX_TAGS}"),
                ));
            }
        }
        for id in ids {
            if let Some(i) = self.instances.get_mut(id) {
                i.tags.extend(tags.clone());
            }
        }
        Ok(())
    }

    /// TerminateInstances: unknown ids and termination protection fail the whole call.
    pub fn terminate_instances(&mut self, ids: &[String]) -> Result<(), AwsError> {
        const OP: &str = "ec2:TerminateInstances";
        for id in ids {
            let i = self.visible(id).ok_or_else(|| not_found(OP, id))?;
            if i.termination_protected {
                return Err(aws_err(OP, "OperationNotPermitted", format!("The instance '{id}' may not be terminated")));
            }
        }
        for id in ids {
            self.shut_down(id);
        }
        Ok(())
    }

    /// AttachInstances.
    pub fn attach(&mut self, group: &str, ids: &[String]) -> Result<(), AwsError> {
        const OP: &str = "autoscaling:AttachInstances";
        let g = self
            .groups
            .get(group)
            .ok_or_else(|| validation(OP, format!("AutoScalingGroup name not found - {group}")))?;
        for id in ids {
            let Some(i) = self.visible(id) else {
                return Err(validation(OP, format!("Instance {id} is not in correct state")));
            };
            if i.state != InstanceState::Running {
                return Err(validation(OP, format!("Instance {id} is not in correct state")));
            }
            if !g.zones.contains(&i.az) {
                return Err(validation(OP, format!("Instance {id} is in {}, not in the group's zones", i.az)));
            }
            if let Some(other) = self.groups.values().find(|o| o.member(id).is_some()) {
                return Err(validation(
                    OP,
                    format!("The Instance: {id} is already part of AutoScalingGroup:{}", other.name),
                ));
            }
        }
        if g.desired + ids.len() as i32 > g.max {
            return Err(validation(
                OP,
                format!(
                    "AutoScalingGroup {group} has min-size={}, max-size={}, and desired-size={}. To attach {} instance, please update the AutoScalingGroup sizes appropriately.",
                    g.min, g.max, g.desired, ids.len()
                ),
            ));
        }
        let app = !g.hooks.iter().any(|h| h.kind == Hook::Launching && h.installs_app);
        let propagated: Tags =
            g.tags.iter().filter(|(k, _)| g.propagate.contains(*k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let now = self.now;
        for id in ids {
            let g = self.groups.get_mut(group).expect("group");
            g.desired += 1;
            g.members.push(SimMember {
                id: id.clone(),
                lifecycle: Lifecycle::InService,
                until: None,
                protected: false,
                unhealthy: false,
                since: now,
            });
            if let Some(i) = self.instances.get_mut(id) {
                i.tags.extend(propagated.clone());
                i.tags.insert(GROUP_NAME_TAG.into(), group.to_string());
                // No launch hook ran on it.
                i.app = i.app && app;
            }
            self.register(group, id);
            let why = format!(
                "an instance was added in response to user request. Keeping the capacity at the new {}",
                self.groups[group].desired
            );
            self.record_activity(group, format!("Attaching an existing EC2 instance: {id}"), why);
        }
        Ok(())
    }

    /// TerminateInstanceInAutoScalingGroup.
    pub fn terminate_in_group(&mut self, id: &str, decrement: bool) -> Result<(), AwsError> {
        const OP: &str = "autoscaling:TerminateInstanceInAutoScalingGroup";
        let Some(group) = self.groups.values().find(|g| g.member(id).is_some()).map(|g| g.name.clone()) else {
            return Err(validation(
                OP,
                format!("Instance Id not found - No managed instance found for instance ID: {id}"),
            ));
        };
        let g = &self.groups[&group];
        if g.member(id).is_some_and(|m| m.lifecycle.is_leaving()) {
            return Err(aws_err(
                OP,
                "ScalingActivityInProgress",
                format!(
                    "Instance {id} is already {}",
                    g.member(id).map(|m| m.lifecycle.to_string()).unwrap_or_default()
                ),
            ));
        }
        if decrement && g.desired <= g.min {
            return Err(validation(
                OP,
                format!("Currently, desiredSize equals minSize ({}). Terminating instance without replacement will violate group's min size constraint. Either set shouldDecrementDesiredCapacity flag to false or lower group's min size.", g.min),
            ));
        }
        let why = match decrement {
            true => format!("instance {id} was taken out of service in response to a user request, shrinking the capacity from {} to {}", g.desired, g.desired - 1),
            false => format!("instance {id} was taken out of service in response to a user request"),
        };
        if decrement {
            self.groups.get_mut(&group).expect("group").desired -= 1;
        }
        self.record_termination(&group, id, why);
        self.begin_termination(&group, id);
        Ok(())
    }

    /// DetachInstances: no hook runs; the instance drains from the load balancers and leaves.
    pub fn detach(&mut self, group: &str, id: &str, decrement: bool) -> Result<(), AwsError> {
        const OP: &str = "autoscaling:DetachInstances";
        let g = self
            .groups
            .get(group)
            .ok_or_else(|| validation(OP, format!("AutoScalingGroup name not found - {group}")))?;
        let Some(m) = g.member(id) else {
            return Err(validation(OP, format!("The instance {id} is not part of Auto Scaling group {group}.")));
        };
        if !matches!(m.lifecycle, Lifecycle::InService | Lifecycle::Standby) {
            return Err(validation(OP, format!("The instance {id} is not in InService or Standby.")));
        }
        if decrement && g.desired <= g.min {
            return Err(validation(
                OP,
                format!(
                    "AutoScalingGroup {group} has min-size={}, max-size={}, and desired-size={}. To detach 1 instance, please update the AutoScalingGroup sizes appropriately.",
                    g.min, g.max, g.desired
                ),
            ));
        }
        let drain = if g.target_groups.is_empty() { 1 } else { self.timing.deregistration_delay.max(1) };
        let why = match decrement {
            true => format!(
                "an instance was detached in response to a user request, shrinking the capacity from {} to {}",
                g.desired,
                g.desired - 1
            ),
            false => "an instance was detached in response to a user request, keeping the capacity".to_string(),
        };
        self.record_activity(group, format!("Detaching EC2 instance: {id}"), why);
        if decrement {
            self.groups.get_mut(group).expect("group").desired -= 1;
        }
        self.deregister(group, id);
        let until = self.now + drain;
        self.set_lifecycle(group, id, Lifecycle::Detaching, Some(until));
        Ok(())
    }

    /// UpdateAutoScalingGroup with only MaxSize, as the tool calls it.
    pub fn set_max_size(&mut self, group: &str, max: i32) -> Result<(), AwsError> {
        if !self.groups.contains_key(group) {
            return Err(validation(
                "autoscaling:UpdateAutoScalingGroup",
                format!("AutoScalingGroup name not found - {group}"),
            ));
        }
        self.update_group(group, None, Some(max))
    }

    /// CreateOrUpdateTags on a group (not propagated).
    pub fn tag_group(&mut self, group: &str, tags: &Tags) -> Result<(), AwsError> {
        const OP: &str = "autoscaling:CreateOrUpdateTags";
        let g = self
            .groups
            .get_mut(group)
            .ok_or_else(|| validation(OP, format!("AutoScalingGroup name not found - {group}")))?;
        if let Some((k, v)) = tags.iter().find(|(k, v)| k.len() > 128 || v.len() > 256) {
            return Err(validation(OP, format!("tag {k}={v:?} is too long")));
        }
        let added = tags.keys().filter(|k| !g.tags.contains_key(*k)).count();
        if g.tags.keys().filter(|k| !k.starts_with("aws:")).count() + added > MAX_TAGS {
            return Err(aws_err(OP, "LimitExceeded", format!("The maximum number of tags for {group} is {MAX_TAGS}")));
        }
        g.tags.extend(tags.clone());
        Ok(())
    }

    pub fn untag_group(&mut self, group: &str, keys: &[String]) -> Result<(), AwsError> {
        let g = self.groups.get_mut(group).ok_or_else(|| {
            validation("autoscaling:DeleteTags", format!("AutoScalingGroup name not found - {group}"))
        })?;
        for k in keys {
            g.tags.remove(k);
            g.propagate.remove(k);
        }
        Ok(())
    }

    /// SendMessageBatch (the adapter's batches of 10 are one call here).
    pub fn send(&mut self, queue_url: &str, messages: &[Outgoing]) -> Result<usize, AwsError> {
        let now = self.now;
        let q = self.queues.get_mut(queue_url).ok_or_else(|| {
            aws_err("sqs:SendMessageBatch", "AWS.SimpleQueueService.NonExistentQueue", format!("no queue {queue_url}"))
        })?;
        Ok(q.send(messages, now))
    }
}
