//! The port: every AWS call the logic makes, over crate-owned types. [`crate::aws::AwsCloud`]
//! implements it with the SDK; the simulated account (crate `asg-sim`) implements it in memory
//! with AWS's semantics, and the moto tests wrap the SDK adapter to inject what moto cannot
//! produce.

use std::collections::BTreeMap;
use std::future::Future;

use crate::domain::model::{
    Activity, Group, Health, Hook, Instance, InstanceState, Launch, LaunchResult, Tags, TemplateVersion,
};
use crate::domain::pools::TypeInfo;
use crate::domain::reserved::Reservation;
use crate::error::AwsError;

pub type Result<T> = std::result::Result<T, AwsError>;

/// Which groups to describe. Pagination is the adapter's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupQuery {
    /// Server-side filter `tag:<key>` = `value`.
    Tagged {
        key: String,
        value: String,
    },
    /// Server-side filter `tag-key` = any of `keys`.
    HavingAnyTag {
        keys: Vec<String>,
    },
    Named(Vec<String>),
    /// Every group of the account (the command line's `--all-groups`; no function asks it).
    All,
}

/// Which instances to describe; only instances in `states` are returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceQuery {
    /// Members of these groups, by their `aws:autoscaling:groupName` tag.
    InGroups(Vec<String>),
    /// Instances carrying tag `key` (any value), or `key` = `value`.
    Tagged {
        key: String,
        value: Option<String>,
    },
    Ids(Vec<String>),
    /// Instances of these types.
    Types(Vec<String>),
}

/// Which instance types to describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeQuery {
    Named(Vec<String>),
    /// Types that support Spot, run `architecture`, and have one of these vCPU counts.
    SpotCapable {
        architecture: String,
        vcpus: std::ops::RangeInclusive<i32>,
    },
}

use InstanceState::{Pending, Running, Stopped, Stopping};

pub const LIVE: &[InstanceState] = &[Pending, Running];
pub const NOT_TERMINATED: &[InstanceState] = &[Pending, Running, Stopping, Stopped];
pub const ANY_STATE: &[InstanceState] = &InstanceState::ALL;

/// A message to send; `group_id` and `dedup_id` only for FIFO queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub body: String,
    pub delay_seconds: i32,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
}

pub trait Cloud: Send + Sync {
    fn groups(&self, query: &GroupQuery) -> impl Future<Output = Result<Vec<Group>>> + Send;
    fn instances(
        &self,
        query: &InstanceQuery,
        states: &[InstanceState],
    ) -> impl Future<Output = Result<Vec<Instance>>> + Send;
    /// DescribeInstanceStatus, including instances that are not running yet.
    fn health(&self, ids: &[String]) -> impl Future<Output = Result<BTreeMap<String, Health>>> + Send;
    /// DescribeAutoScalingInstances: which group, if any, each instance belongs to.
    fn group_of(&self, ids: &[String]) -> impl Future<Output = Result<BTreeMap<String, String>>> + Send;
    /// Current Spot price per (instance type, Availability Zone), Linux/UNIX, in USD per hour.
    fn spot_prices(&self, types: &[String]) -> impl Future<Output = Result<BTreeMap<(String, String), f64>>> + Send;
    /// On-Demand price per instance type in this Region (Linux, shared tenancy), USD per hour.
    /// The adapter caches these across invocations: they change a few times a year.
    fn on_demand_prices(&self, types: &[String]) -> impl Future<Output = Result<BTreeMap<String, f64>>> + Send;
    /// DescribeInstanceAttribute disableApiTermination.
    fn termination_protected(&self, id: &str) -> impl Future<Output = Result<bool>> + Send;

    /// DescribeInstanceTypes. The adapter caches answers for the life of the process: the
    /// catalog changes when AWS launches a type, not between two invocations.
    fn instance_types(&self, query: &TypeQuery) -> impl Future<Output = Result<Vec<TypeInfo>>> + Send;
    /// DescribeLaunchTemplateVersions: what each (template id, version) names now, the version
    /// being a number, `$Latest` or `$Default`. A template that does not exist is left out.
    fn template_versions(
        &self,
        wanted: &[(String, String)],
    ) -> impl Future<Output = Result<BTreeMap<(String, String), TemplateVersion>>> + Send;
    /// DescribeReservedInstances: the active reservations of this account and Region.
    fn reserved_instances(&self) -> impl Future<Output = Result<Vec<Reservation>>> + Send;
    /// DescribeSpotInstanceRequests: whether EC2 has given this Spot instance an interruption
    /// notice (its request's status is `marked-for-termination`, `-stop` or `-hibernation`),
    /// whether or not the EventBridge event has reached us yet.
    fn interruption_notice(&self, id: &str) -> impl Future<Output = Result<bool>> + Send;
    /// DescribeLifecycleHooks: the group's hooks, by transition.
    fn lifecycle_hooks(&self, group: &str) -> impl Future<Output = Result<Vec<Hook>>> + Send;
    /// DescribeScalingActivities: the group's newest activities (one page, up to 100), newest
    /// first.
    fn scaling_activities(&self, group: &str) -> impl Future<Output = Result<Vec<Activity>>> + Send;
    /// DescribeTargetHealth: the state of each of `ids` in the target group (`initial`,
    /// `healthy`, `unhealthy`, `unused`, `draining`, `unavailable`); an id it does not list is
    /// left out.
    fn target_health(
        &self,
        target_group: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, String>>> + Send;
    /// DescribeInstanceHealth (Classic Load Balancer): `InService`, `OutOfService` or `Unknown`.
    fn load_balancer_health(
        &self,
        load_balancer: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, String>>> + Send;

    /// CreateFleet, instant: one instance.
    fn launch(&self, launch: &Launch) -> impl Future<Output = Result<LaunchResult>> + Send;
    fn tag_instances(&self, ids: &[String], tags: &Tags) -> impl Future<Output = Result<()>> + Send;
    fn terminate(&self, ids: &[String]) -> impl Future<Output = Result<()>> + Send;
    fn attach(&self, group: &str, ids: &[String]) -> impl Future<Output = Result<()>> + Send;
    /// TerminateInstanceInAutoScalingGroup: runs termination lifecycle hooks.
    fn terminate_in_group(&self, id: &str, decrement_desired: bool) -> impl Future<Output = Result<()>> + Send;
    /// DetachInstances: no lifecycle hooks run; load balancers drain it.
    fn detach(&self, group: &str, id: &str, decrement_desired: bool) -> impl Future<Output = Result<()>> + Send;
    fn set_max_size(&self, group: &str, max: i32) -> impl Future<Output = Result<()>> + Send;
    /// SetDesiredCapacity (honouring no cooldown): to give back the one our own attach added
    /// when no retire can.
    fn set_desired(&self, group: &str, desired: i32) -> impl Future<Output = Result<()>> + Send;
    fn tag_group(&self, group: &str, tags: &Tags) -> impl Future<Output = Result<()>> + Send;
    fn untag_group(&self, group: &str, keys: &[String]) -> impl Future<Output = Result<()>> + Send;
    /// Sends in batches of 10; returns how many messages could not be sent.
    fn send(&self, queue_url: &str, messages: Vec<Outgoing>) -> impl Future<Output = Result<usize>> + Send;
}
