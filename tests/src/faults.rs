//! What moto cannot do by itself: Spot instances that never pass their status checks, and Spot
//! pools with no capacity (all of them, or some types). Injected at the port, around the real
//! SDK adapter, which also records every launch request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use asg_core::cloud::{Cloud, GroupQuery, InstanceQuery, Outgoing, Result, TypeQuery};
use asg_core::domain::model::{
    Activity, Group, Health, Hook, Instance, InstanceState, Launch, LaunchResult, Market, Tags, TemplateVersion,
};
use asg_core::domain::pools::TypeInfo;
use asg_core::domain::reserved::Reservation;

#[derive(Debug, Default)]
pub struct Faults {
    /// Every instance reports `initializing` status checks.
    pub never_ready: AtomicBool,
    /// CreateFleet answers 200 with no instance and an InsufficientInstanceCapacity error.
    pub no_capacity: AtomicBool,
    /// TerminateInstanceInAutoScalingGroup fails as throttled: a swap stops right after attach,
    /// as if the function had crashed there.
    pub fail_retire: AtomicBool,
    /// Spot pools of these types have no capacity: CreateFleet reports them in Errors[] and
    /// launches from the others, as EC2 does.
    pub empty_types: Mutex<BTreeSet<String>>,
    /// The account's active Reserved Instances (moto has no DescribeReservedInstances); `None`
    /// passes the call through.
    pub reservations: Mutex<Option<Vec<Reservation>>>,
    /// Every registered target reads `initial` in its target groups (its health checks not
    /// passed yet): moto calls every running target `healthy` at once.
    pub targets_initial: AtomicBool,
    /// Every launch request, as the adapter received it.
    pub launches: Mutex<Vec<Launch>>,
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
    async fn instances(&self, query: &InstanceQuery, states: &[InstanceState]) -> Result<Vec<Instance>> {
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
    async fn instance_types(&self, query: &TypeQuery) -> Result<Vec<TypeInfo>> {
        self.inner.instance_types(query).await
    }
    async fn template_versions(
        &self,
        wanted: &[(String, String)],
    ) -> Result<BTreeMap<(String, String), TemplateVersion>> {
        self.inner.template_versions(wanted).await
    }
    async fn reserved_instances(&self) -> Result<Vec<Reservation>> {
        let fake = self.faults.reservations.lock().unwrap().clone();
        match fake {
            Some(reservations) => Ok(reservations),
            None => self.inner.reserved_instances().await,
        }
    }
    async fn interruption_notice(&self, id: &str) -> Result<bool> {
        self.inner.interruption_notice(id).await
    }
    async fn lifecycle_hooks(&self, group: &str) -> Result<Vec<Hook>> {
        self.inner.lifecycle_hooks(group).await
    }
    async fn scaling_activities(&self, group: &str) -> Result<Vec<Activity>> {
        self.inner.scaling_activities(group).await
    }
    async fn target_health(&self, target_group: &str, ids: &[String]) -> Result<BTreeMap<String, String>> {
        let mut states = self.inner.target_health(target_group, ids).await?;
        if self.faults.targets_initial.load(Ordering::SeqCst) {
            states.values_mut().for_each(|s| *s = "initial".into());
        }
        Ok(states)
    }
    async fn load_balancer_health(&self, load_balancer: &str, ids: &[String]) -> Result<BTreeMap<String, String>> {
        self.inner.load_balancer_health(load_balancer, ids).await
    }
    async fn launch(&self, launch: &Launch) -> Result<LaunchResult> {
        self.faults.launches.lock().unwrap().push(launch.clone());
        let no_capacity = || {
            Ok(asg_core::domain::model::launch_failure(
                "InsufficientInstanceCapacity",
                "There is no Spot capacity available that matches your request.",
            ))
        };
        if launch.market != Market::Spot {
            return self.inner.launch(launch).await;
        }
        if self.faults.no_capacity.load(Ordering::SeqCst) {
            return no_capacity();
        }
        let empty = self.faults.empty_types.lock().unwrap().clone();
        let (dry, open): (Vec<String>, Vec<String>) =
            launch.instance_types.iter().cloned().partition(|t| empty.contains(t));
        if open.is_empty() {
            return no_capacity();
        }
        let result = self.inner.launch(&Launch { instance_types: open, ..launch.clone() }).await?;
        Ok(match result {
            LaunchResult::Launched { instance_id, instance_type, mut empty_pools } => {
                empty_pools.extend(dry);
                LaunchResult::Launched { instance_id, instance_type, empty_pools }
            }
            other => other,
        })
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
    async fn detach(&self, group: &str, id: &str, decrement_desired: bool) -> Result<()> {
        self.inner.detach(group, id, decrement_desired).await
    }
    async fn set_max_size(&self, group: &str, max: i32) -> Result<()> {
        self.inner.set_max_size(group, max).await
    }
    async fn set_desired(&self, group: &str, desired: i32) -> Result<()> {
        self.inner.set_desired(group, desired).await
    }
    async fn tag_group(&self, group: &str, tags: &Tags) -> Result<()> {
        self.inner.tag_group(group, tags).await
    }
    async fn untag_group(&self, group: &str, keys: &[String]) -> Result<()> {
        self.inner.untag_group(group, keys).await
    }
    async fn send(&self, queue_url: &str, messages: Vec<Outgoing>) -> Result<usize> {
        self.inner.send(queue_url, messages).await
    }
}
