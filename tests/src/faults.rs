//! What moto cannot do by itself: Spot instances that never pass their status checks, and Spot
//! pools with no capacity. Injected at the port, around the real SDK adapter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use asg_core::cloud::{Cloud, GroupQuery, InstanceQuery, Outgoing, Result};
use asg_core::model::{Group, Health, Instance, LaunchResult, SpotLaunch, Tags};

#[derive(Debug, Default)]
pub struct Faults {
    /// Every instance reports `initializing` status checks.
    pub never_ready: AtomicBool,
    /// CreateFleet answers 200 with no instance and an InsufficientInstanceCapacity error.
    pub no_capacity: AtomicBool,
    /// TerminateInstanceInAutoScalingGroup fails as throttled: a swap stops right after attach,
    /// as if the function had crashed there.
    pub fail_retire: AtomicBool,
}

#[derive(Debug, Clone)]
pub struct Faulty<C> {
    pub inner: C,
    pub faults: Arc<Faults>,
}

impl<C: Cloud> Cloud for Faulty<C> {
    async fn groups(&self, query: &GroupQuery) -> Result<Vec<Group>> {
        self.inner.groups(query).await
    }
    async fn instances(&self, query: &InstanceQuery, states: &[&str]) -> Result<Vec<Instance>> {
        self.inner.instances(query, states).await
    }
    async fn health(&self, ids: &[String]) -> Result<BTreeMap<String, Health>> {
        let mut health = self.inner.health(ids).await?;
        if self.faults.never_ready.load(Ordering::SeqCst) {
            for h in health.values_mut() {
                h.instance = "initializing".into();
                h.system = "initializing".into();
            }
        }
        Ok(health)
    }
    async fn group_of(&self, ids: &[String]) -> Result<BTreeMap<String, String>> {
        self.inner.group_of(ids).await
    }
    async fn spot_prices(&self, types: &[String]) -> Result<BTreeMap<(String, String), f64>> {
        self.inner.spot_prices(types).await
    }
    async fn on_demand_prices(&self, types: &[String]) -> Result<BTreeMap<String, f64>> {
        self.inner.on_demand_prices(types).await
    }
    async fn termination_protected(&self, id: &str) -> Result<bool> {
        self.inner.termination_protected(id).await
    }
    async fn launch_spot(&self, launch: &SpotLaunch) -> Result<LaunchResult> {
        if self.faults.no_capacity.load(Ordering::SeqCst) {
            return Ok(asg_core::model::launch_failure(
                "InsufficientInstanceCapacity",
                "There is no Spot capacity available that matches your request.",
            ));
        }
        self.inner.launch_spot(launch).await
    }
    async fn tag_instances(&self, ids: &[String], tags: &Tags) -> Result<()> {
        self.inner.tag_instances(ids, tags).await
    }
    async fn terminate(&self, ids: &[String]) -> Result<()> {
        self.inner.terminate(ids).await
    }
    async fn attach(&self, group: &str, ids: &[String]) -> Result<()> {
        self.inner.attach(group, ids).await
    }
    async fn terminate_in_group(&self, id: &str, decrement_desired: bool) -> Result<()> {
        if self.faults.fail_retire.load(Ordering::SeqCst) {
            return Err(asg_core::error::AwsError::new(
                "autoscaling:TerminateInstanceInAutoScalingGroup",
                Some("Throttling".into()),
                Some("Rate exceeded".into()),
                false,
            ));
        }
        self.inner.terminate_in_group(id, decrement_desired).await
    }
    async fn set_max_size(&self, group: &str, max: i32) -> Result<()> {
        self.inner.set_max_size(group, max).await
    }
    async fn tag_group(&self, group: &str, key: &str, value: &str) -> Result<()> {
        self.inner.tag_group(group, key, value).await
    }
    async fn untag_group(&self, group: &str, key: &str) -> Result<()> {
        self.inner.untag_group(group, key).await
    }
    async fn send(&self, queue_url: &str, messages: Vec<Outgoing>) -> Result<usize> {
        self.inner.send(queue_url, messages).await
    }
}
