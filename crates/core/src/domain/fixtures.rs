//! Test fixtures shared by the planning modules' tests: groups, instances and a scan input.

use std::collections::BTreeMap;

use crate::domain::housekeeping::{housekeeping, MaxRepair, Orphan, Stalled};
use crate::domain::model::{
    Epoch, Group, Hold, Instance, InstanceState, LaunchSource, Lifecycle, Member, TemplateVersion, TAG_GROUP,
    TAG_REPLACES,
};
use crate::domain::plan::{plan_groups, GroupPlan, ScanInput};
use crate::domain::policy::{Policy, TAG_MAX_IN_FLIGHT};
use crate::domain::state::GroupState;

/// What one scan plans, group by group and in housekeeping, as the scanner puts it together.
#[derive(Debug)]
pub struct Planned {
    pub groups: Vec<GroupPlan>,
    pub orphans: Vec<Orphan>,
    pub stalled: Vec<Stalled>,
    pub repairs: Vec<MaxRepair>,
    pub stale_tags: Vec<(String, Vec<String>)>,
    pub notes: Vec<String>,
}

/// Reads every group's state from its tags (as the scanner does), then plans.
pub fn plan_scan(input: &ScanInput) -> Planned {
    let mut input = input.clone();
    input.states = GroupState::read_all(input.opted_in.iter().chain(&input.raised), &input.defaults);
    let h = housekeeping(&input);
    Planned {
        groups: plan_groups(&input),
        orphans: h.orphans,
        stalled: h.stalled,
        repairs: h.repairs,
        stale_tags: h.stale_tags,
        notes: h.notes,
    }
}

pub const NOW: Epoch = 1_800_000_000;

pub fn member(id: &str, lifecycle: &str) -> Member {
    Member { id: id.into(), lifecycle: Lifecycle::parse(lifecycle), healthy: true, protected_from_scale_in: false }
}

pub fn group(name: &str, desired: i32, members: Vec<Member>) -> Group {
    Group {
        name: name.into(),
        min: 1,
        max: desired + 2,
        desired,
        tags: [("AsgOptimiser".to_string(), "true".to_string())].into(),
        members,
        launch: LaunchSource::Template { id: "lt-1".into(), version: "$Latest".into() },
        ..Default::default()
    }
}

pub fn od(id: &str, launched: Epoch) -> Instance {
    Instance {
        id: id.into(),
        state: InstanceState::Running,
        instance_type: "m5.large".into(),
        launch_time: launched,
        ..Default::default()
    }
}

pub fn spot(id: &str, group: &str, replaces: &str, launched: Epoch) -> Instance {
    Instance {
        spot: true,
        tags: [(TAG_GROUP.to_string(), group.to_string()), (TAG_REPLACES.to_string(), replaces.to_string())].into(),
        ..od(id, launched)
    }
}

pub fn with_tag(mut i: Instance, k: &str, v: &str) -> Instance {
    i.tags.insert(k.into(), v.into());
    i
}

pub fn input(groups: Vec<Group>, instances: Vec<Instance>, spots: Vec<Instance>) -> ScanInput {
    ScanInput {
        opted_in: groups,
        instances,
        spots,
        now: NOW,
        defaults: Policy::default(),
        orphan_deadline: 1200,
        ..Default::default()
    }
}

pub fn floor_group(n: usize, on_demand: usize, tags: &[(&str, &str)]) -> (Group, Vec<Instance>) {
    let ids: Vec<String> = (1..=n).map(|k| format!("i-{k:08x}")).collect();
    let mut g = group("web", n as i32, ids.iter().map(|id| member(id, "InService")).collect());
    g.tags.insert(TAG_MAX_IN_FLIGHT.into(), "100%".into());
    for (k, v) in tags {
        g.tags.insert(k.to_string(), v.to_string());
    }
    let instances = ids
        .iter()
        .enumerate()
        .map(|(k, id)| Instance {
            spot: k >= on_demand,
            availability_zone: Some("eu-west-1a".into()),
            ..od(id, k as i64)
        })
        .collect();
    (g, instances)
}
pub fn outdated(mut i: Instance, version: &str) -> Instance {
    i.tags.insert(crate::domain::drift::TAG_TEMPLATE_ID.into(), "lt-1".into());
    i.tags.insert(crate::domain::drift::TAG_TEMPLATE_VERSION.into(), version.into());
    i
}
pub fn current() -> BTreeMap<String, TemplateVersion> {
    let v = TemplateVersion { template_id: "lt-1".into(), number: 2, image_id: None, instance_type: None };
    [("web".to_string(), v)].into()
}

/// A scan's claim on an instance, for a move to the other market.
pub fn claim(until: Epoch) -> Hold {
    Hold::Claim { until, same_market: false }
}
