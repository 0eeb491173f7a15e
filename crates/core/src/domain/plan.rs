//! Pure decisions of the scanner, group by group: which instances to replace now (On-Demand by
//! Spot, Spot by On-Demand to hold a group's On-Demand floor, and either by its like to roll out
//! the group's current launch template), within the group's limits. What is left over from
//! earlier swaps is [`crate::domain::housekeeping`]'s.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::drift::{drift, Cause, TAG_ROLLOUT_PAUSED};
use crate::domain::model::{
    rfc3339, Epoch, Group, Hold, Instance, InstanceState, Lifecycle, Market, Member, TemplateVersion, TAG_REPLACES,
};
use crate::domain::policy::{floor_moves, Mode, Policy, TAG_LAUNCH_HOOKS, TAG_MODE};
use crate::domain::pools::{spot_choices, ALL_POOLS};
use crate::domain::state::GroupState;

/// What the scanner read.
#[derive(Debug, Clone, Default)]
pub struct ScanInput {
    /// The groups to plan: those carrying the opt-in tag (the scanner's), or those the command
    /// line plans as if they carried it.
    pub opted_in: Vec<Group>,
    /// Groups carrying a tag a swap leaves ([`crate::domain::model::TAG_SWAP_UNDER_WAY`] or
    /// [`crate::domain::model::TAG_ORIGINAL_MAX`]), opted in or not.
    pub raised: Vec<Group>,
    /// What the tags of each group in `opted_in` and `raised` say, read once: see
    /// [`GroupState::read_all`].
    pub states: BTreeMap<String, GroupState>,
    /// Live members of the opted-in groups.
    pub instances: Vec<Instance>,
    /// Every not-terminated instance carrying [`TAG_REPLACES`]: the copies we launched.
    pub spots: Vec<Instance>,
    /// Compatible Spot types per On-Demand instance type, before the groups' policies: looked up
    /// only for groups with backed-off pools. A type missing here is never held back by
    /// per-type backoffs (the spot-creator still skips those pools).
    pub compatible: BTreeMap<String, Vec<String>>,
    /// What each group launches now (by group name), for every opted-in group with a launch
    /// template. A group missing here has no rollout this scan.
    pub current: BTreeMap<String, TemplateVersion>,
    /// On-Demand instances that Reserved Instances pay for: kept On-Demand.
    pub reserved: BTreeSet<String>,
    /// Groups with a launch lifecycle hook, which an attached copy would skip: left alone
    /// (unless their policy ignores launch hooks). Read only for groups with work to start.
    pub launch_hooked: BTreeSet<String>,
    pub now: Epoch,
    /// The configured policy every group starts from.
    pub defaults: Policy,
    pub orphan_deadline: i64,
}

impl ScanInput {
    /// `group`'s state, or the defaults' for a group the scan did not read.
    pub fn state(&self, group: &str) -> GroupState {
        self.states
            .get(group)
            .cloned()
            .unwrap_or_else(|| GroupState { policy: self.defaults.clone(), ..GroupState::default() })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct GroupPlan {
    pub name: String,
    pub mode: Mode,
    pub desired: i32,
    pub on_demand: usize,
    pub spot: usize,
    /// On-Demand instances the group's policy keeps.
    pub on_demand_floor: usize,
    pub limit: usize,
    pub in_flight: usize,
    /// On-Demand instances to replace by Spot now, oldest first.
    pub candidates: Vec<String>,
    /// Spot instances to replace by On-Demand now (the group is below its floor).
    pub to_on_demand: Vec<String>,
    /// On-Demand instances kept because Reserved Instances pay for them.
    pub reserved: usize,
    /// Instances running another launch template, version or AMI than the group's current
    /// one, not counting those being replaced.
    pub outdated: usize,
    /// Replacements of outdated instances under way, and how many may be at once.
    pub rollout_in_flight: usize,
    pub rollout_limit: usize,
    /// Outdated instances to replace now by a copy in their own market (those moving market
    /// are in `candidates` / `to_on_demand`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rollout: BTreeMap<String, Market>,
    /// Why no instance is launched for this group now: its current configuration failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_paused: Option<String>,
    /// Spot pools of the group backed off now.
    pub backed_off_pools: usize,
    /// On-Demand instances left alone because every compatible Spot pool in their zone is
    /// backed off.
    pub held_back: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Swaps under way, by copy: what each waits on (`status checks` before its attach, then
    /// `InService`, then `load balancer health` where the group has load balancers).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub waiting: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// On-Demand members not replaced now, and why (the command line's `plan` shows them; the
    /// scan summary leaves them out).
    #[serde(skip)]
    pub left_alone: Vec<(String, String)>,
    /// On-Demand members that would run on Spot once every replacement this group's policy
    /// allows is done: this scan's candidates, then those waiting for room in flight, oldest
    /// first, down to the floor (for the command line's estimate).
    #[serde(skip)]
    pub replaceable: Vec<String>,
}

/// The plan of every opted-in group.
pub fn plan_groups(input: &ScanInput) -> Vec<GroupPlan> {
    let details: BTreeMap<&str, &Instance> = input.instances.iter().map(|i| (i.id.as_str(), i)).collect();
    // Replaced instance id -> the live copies of ours that replace it.
    let mut replacing: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
    for s in input.spots.iter().filter(|s| s.is_live() && !s.swap_over()) {
        if let Some(old) = s.tag(TAG_REPLACES) {
            replacing.entry(old).or_default().push(s);
        }
    }
    input.opted_in.iter().map(|g| plan_group(g, &input.state(&g.name), &details, &replacing, input)).collect()
}

fn plan_group(
    g: &Group,
    state: &GroupState,
    details: &BTreeMap<&str, &Instance>,
    replacing: &BTreeMap<&str, Vec<&Instance>>,
    input: &ScanInput,
) -> GroupPlan {
    let now = input.now;
    let policy = &state.policy;
    let mut plan = GroupPlan {
        name: g.name.clone(),
        mode: policy.mode,
        desired: g.desired,
        on_demand_floor: policy.on_demand_floor(g.desired),
        limit: policy.in_flight_limit(g.desired),
        rollout_limit: policy.rollout_limit(g.desired),
        backed_off_pools: state.backoffs.active(now),
        notes: state.notes.clone(),
        ..Default::default()
    };
    let balanced = !(g.target_groups.is_empty() && g.load_balancers.is_empty());
    for copy in input.spots.iter().filter(|s| s.is_live() && s.tag(crate::domain::model::TAG_GROUP) == Some(&g.name)) {
        let gate = match g.member(&copy.id) {
            None => "status checks",
            Some(_) if !g.replaced_still_here(copy) => continue,
            Some(m) if m.lifecycle != Lifecycle::InService => "InService",
            Some(_) if balanced => "load balancer health",
            Some(_) => "the retire",
        };
        plan.waiting.insert(copy.id.clone(), gate.to_string());
    }
    let current = input.current.get(&g.name);
    // Outdated instances this scan may roll out (none when the group's rollout is disabled).
    let mut rolling: BTreeSet<&str> = BTreeSet::new();
    let mut in_flight = BTreeSet::new();
    // On-Demand instances on their way out, and On-Demand copies on their way in.
    let (mut leaving, mut arriving) = (0, 0);
    let (mut on_demand, mut spot): (Vec<&Instance>, Vec<&Instance>) = (Vec::new(), Vec::new());
    for m in &g.members {
        let Some(i) = details.get(m.id.as_str()) else {
            // Attached by hand without our tags, or launched between our two reads: next scan.
            continue;
        };
        if i.spot {
            plan.spot += 1;
        } else {
            plan.on_demand += 1;
        }
        let hold = i.hold().filter(|h| h.until() > now);
        let copies = replacing.get(m.id.as_str());
        // A copy of ours attached while the instance it replaces is still here: its own swap is
        // not finished, so it is not to be replaced in turn (that swap counts as in flight).
        if g.replaced_still_here(i) {
            continue;
        }
        if input.reserved.contains(&m.id) {
            plan.reserved += 1;
        }
        let outdated = current.is_some_and(|c| drift(i, c).is_some());
        if !i.spot {
            if let Some(why) = not_eligible(m, i, hold, copies.is_some(), input.reserved.contains(&m.id)) {
                plan.left_alone.push((m.id.clone(), why));
            }
        }
        if copies.is_some() || matches!(hold, Some(Hold::Claim { .. })) {
            in_flight.insert(m.id.as_str());
            plan.rollout_in_flight += usize::from(outdated);
            // A copy in the instance's own market (a rollout) changes nothing for the floor.
            let same_market = match copies.and_then(|cs| cs.first()) {
                Some(copy) => Market::of(copy) == Market::of(i),
                None => matches!(hold, Some(Hold::Claim { same_market: true, .. })),
            };
            if same_market {
                continue;
            }
            if !i.spot {
                leaving += 1;
            } else if !copies.is_some_and(|cs| cs.iter().any(|c| g.member(&c.id).is_some())) {
                // Once attached, the copy counts as an On-Demand member already.
                arriving += 1;
            }
            continue;
        }
        plan.outdated += usize::from(outdated);
        if outdated && policy.rollout {
            rolling.insert(m.id.as_str());
        }
        if hold.is_none()
            && m.lifecycle == Lifecycle::InService
            // An unhealthy instance is about to be replaced by the group itself.
            && m.healthy
            && !m.protected_from_scale_in
            && i.state == InstanceState::Running
        {
            if i.spot { &mut spot } else { &mut on_demand }.push(i);
        }
    }
    plan.in_flight = in_flight.len();
    if policy.mode == Mode::Disabled {
        plan.skipped = Some(format!("disabled by tag {TAG_MODE}"));
        return plan;
    }
    if let Some(reason) = g.unsupported() {
        plan.skipped = Some(reason);
        return plan;
    }
    if input.launch_hooked.contains(&g.name) && !policy.ignore_launch_hooks {
        plan.skipped = Some(format!(
            "has a launch lifecycle hook, which an attached copy would skip; tag {TAG_LAUNCH_HOOKS}=ignore \
             if it does nothing a copy needs"
        ));
        return plan;
    }
    let serving = g.members.iter().filter(|m| matches!(m.lifecycle, Lifecycle::InService | Lifecycle::Standby)).count();
    if (serving as i32) < g.desired {
        plan.skipped = Some(format!("only {serving} of {} desired instances are in service", g.desired));
        return plan;
    }
    if state.rollout_pause.is_some() {
        // Every copy is launched from the current configuration: while it is known bad (or
        // cannot be compared with the one that was), nothing is launched for this group.
        plan.rollout_paused = match current {
            Some(c) => state.paused_since(c).map(|since| {
                let failed = match state.rollout_pause.as_ref().map(|p| p.cause) {
                    Some(Cause::Unserved) => "never served behind the group's load balancers after their attach",
                    _ => "failed their status checks",
                };
                format!(
                    "new instances of {}:{} ({}) {failed} at {}; old instances kept. \
                     Publish a new version or remove the tag {TAG_ROLLOUT_PAUSED} to resume",
                    c.template_id,
                    c.number,
                    c.image_id.as_deref().unwrap_or("no AMI"),
                    rfc3339(since)
                )
            }),
            None => Some(format!("{TAG_ROLLOUT_PAUSED} is set and the launch template could not be read")),
        };
        if plan.rollout_paused.is_some() {
            return plan;
        }
    }
    // Outdated first (their replacement also rolls them out), then oldest, then by id: two
    // overlapping scans that see the same group pick the same instances, and the FIFO queue's
    // deduplication collapses them.
    let order = |a: &&Instance, b: &&Instance| {
        (!rolling.contains(a.id.as_str()), a.launch_time, &a.id).cmp(&(
            !rolling.contains(b.id.as_str()),
            b.launch_time,
            &b.id,
        ))
    };
    on_demand.sort_by(order);
    spot.sort_by(order);
    let room = plan.limit.saturating_sub(plan.in_flight);
    let mut rollout_room = plan.rollout_limit.saturating_sub(plan.rollout_in_flight);
    // Takes one rollout slot if `i` is outdated; false when there is none left.
    let mut slot = |i: &Instance| {
        if !rolling.contains(i.id.as_str()) {
            return true;
        }
        let free = rollout_room > 0;
        rollout_room = rollout_room.saturating_sub(1);
        free
    };
    let (to_spot, to_on_demand) = floor_moves(plan.on_demand, leaving, arriving, plan.on_demand_floor, room);
    // Without the in-flight limit: how many could go once the replacements under way are done.
    let (beyond_floor, _) = floor_moves(plan.on_demand, leaving, arriving, plan.on_demand_floor, usize::MAX);
    let mut waiting = 0;
    for i in on_demand.iter().filter(|i| !input.reserved.contains(&i.id)) {
        if plan.candidates.len() == to_spot {
            let why = if plan.candidates.len() + waiting < beyond_floor {
                waiting += 1;
                plan.replaceable.push(i.id.clone());
                format!("in-flight limit: {} at once, {} under way", plan.limit, plan.in_flight)
            } else {
                format!("kept On-Demand: the group's On-Demand floor is {}", plan.on_demand_floor)
            };
            plan.left_alone.push((i.id.clone(), why));
            continue;
        }
        match held_back(i, state, &input.compatible, now) {
            Some(why) => {
                if plan.held_back == 0 {
                    plan.notes.push(format!("On-Demand instances left alone: {why}"));
                }
                plan.held_back += 1;
                plan.left_alone.push((i.id.clone(), why));
            }
            None if slot(i) => plan.candidates.push(i.id.clone()),
            None => plan.left_alone.push((
                i.id.clone(),
                format!("rollout limit: {} outdated instances replaced at once", plan.rollout_limit),
            )),
        }
    }
    plan.replaceable.splice(0..0, plan.candidates.iter().cloned());
    for i in &spot {
        if plan.to_on_demand.len() == to_on_demand {
            break;
        }
        if slot(i) {
            plan.to_on_demand.push(i.id.clone());
        }
    }
    // The outdated instances left keep their market, within both limits.
    let mut left = room - plan.candidates.len() - plan.to_on_demand.len();
    let picked: BTreeSet<String> = plan.candidates.iter().chain(&plan.to_on_demand).cloned().collect();
    let mut rest: Vec<&&Instance> =
        on_demand.iter().chain(&spot).filter(|i| rolling.contains(i.id.as_str()) && !picked.contains(&i.id)).collect();
    rest.sort_by(|a, b| (a.launch_time, &a.id).cmp(&(b.launch_time, &b.id)));
    for i in rest {
        if left == 0 || rollout_room == 0 {
            break;
        }
        if i.spot && held_back(i, state, &input.compatible, now).is_some() {
            continue;
        }
        plan.rollout.insert(i.id.clone(), Market::of(i));
        left -= 1;
        rollout_room -= 1;
    }
    plan
}

/// Why an On-Demand member is not a candidate whatever the group's counts, if it is not.
fn not_eligible(m: &Member, i: &Instance, hold: Option<Hold>, copied: bool, reserved: bool) -> Option<String> {
    Some(match hold {
        _ if copied => "its replacement is under way".into(),
        Some(Hold::Claim { .. }) => "claimed: its replacement is about to start".into(),
        Some(Hold::Skip { until }) => format!("set aside until {} after a replacement failed", rfc3339(until)),
        None if m.lifecycle != Lifecycle::InService => format!("lifecycle state {}", m.lifecycle.as_str()),
        None if !m.healthy => "unhealthy: the group replaces it itself".into(),
        None if m.protected_from_scale_in => "protected from scale-in".into(),
        None if i.state != InstanceState::Running => format!("instance state {}", i.state.as_str()),
        None if reserved => "a Reserved Instance pays for it".into(),
        None => return None,
    })
}

/// Why this instance cannot go to Spot now, if no Spot pool it could use is open: every pool of
/// its zone is backed off, or (when its compatible types are known) every compatible type the
/// policy allows is. The spot-creator decides on the same [`spot_choices`].
fn held_back(
    i: &Instance,
    state: &GroupState,
    compatible: &BTreeMap<String, Vec<String>>,
    now: Epoch,
) -> Option<String> {
    let az = i.availability_zone.as_deref().unwrap_or_default();
    if let Some(until) = state.backoffs.until(az, ALL_POOLS, now) {
        return Some(format!("every Spot pool in {az} is backed off until {}", rfc3339(until)));
    }
    let compatible = compatible.get(&i.instance_type)?;
    spot_choices(&i.instance_type, compatible, &state.policy, &state.backoffs, az, now).err()
}

/// Our Spot instances serving in opted-in groups, as (instance type, Availability Zone).
pub fn managed_spots(input: &ScanInput) -> Vec<(String, String)> {
    let members: BTreeSet<&str> = input.opted_in.iter().flat_map(|g| g.members.iter().map(|m| m.id.as_str())).collect();
    input
        .spots
        .iter()
        .filter(|s| s.spot && s.is_live() && members.contains(s.id.as_str()))
        .map(|s| (s.instance_type.clone(), s.availability_zone.clone().unwrap_or_default()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::*;
    use crate::domain::model::{LaunchSource, TAG_HOLD};
    use crate::domain::policy::{TAG_MAX_IN_FLIGHT, TAG_MIN_ON_DEMAND, TAG_MODE};
    use crate::domain::pools::TAG_BACKOFF_PREFIX;

    #[test]
    fn candidates_are_in_service_unprotected_on_demand_oldest_first() {
        let mut protected = member("i-00000003", "InService");
        protected.protected_from_scale_in = true;
        let mut unhealthy = member("i-00000007", "InService");
        unhealthy.healthy = false;
        let g = Group {
            tags: [("AsgOptimiser".into(), "true".into()), (TAG_MAX_IN_FLIGHT.into(), "10".into())].into(),
            ..group(
                "web",
                6,
                vec![
                    member("i-00000001", "InService"),
                    member("i-00000002", "InService"),
                    protected,
                    member("i-00000004", "Standby"),
                    member("i-00000005", "InService"),
                    member("i-00000006", "InService"),
                    unhealthy,
                ],
            )
        };
        let instances = vec![
            od("i-00000001", 300),
            od("i-00000002", 100),
            od("i-00000003", 50),
            od("i-00000004", 50),
            Instance { spot: true, ..od("i-00000005", 10) },
            with_tag(od("i-00000006", 10), TAG_HOLD, &Hold::Skip { until: NOW + 60 }.value()),
            od("i-00000007", 1),
        ];
        let plan = plan_scan(&input(vec![g], instances, vec![]));
        let gp = &plan.groups[0];
        assert_eq!(gp.candidates, ["i-00000002", "i-00000001"]);
        assert_eq!((gp.on_demand, gp.spot, gp.in_flight), (6, 1, 0));
    }

    #[test]
    fn every_on_demand_instance_not_replaced_says_why() {
        let mut protected = member("i-00000003", "InService");
        protected.protected_from_scale_in = true;
        let mut members: Vec<Member> = (1..=9).map(|n| member(&format!("i-0000000{n}"), "InService")).collect();
        members[2] = protected;
        members[3] = member("i-00000004", "Standby");
        let g = Group {
            tags: [
                ("AsgOptimiser".into(), "true".into()),
                (TAG_MAX_IN_FLIGHT.into(), "2".into()),
                (TAG_MIN_ON_DEMAND.into(), "5".into()),
            ]
            .into(),
            ..group("web", 9, members)
        };
        let instances = vec![
            with_tag(od("i-00000001", 1), TAG_HOLD, &claim(NOW + 60).value()),
            with_tag(od("i-00000002", 2), TAG_HOLD, &Hold::Skip { until: NOW + 60 }.value()),
            od("i-00000003", 3),
            od("i-00000004", 4),
            od("i-00000005", 5),
            od("i-00000006", 6),
            od("i-00000007", 7),
            od("i-00000008", 8),
            od("i-00000009", 9),
        ];
        let mut input = input(vec![g], instances, vec![]);
        input.reserved.insert("i-00000009".into());
        let gp = &plan_scan(&input).groups[0];
        // 9 On-Demand (those left alone count for the floor too), 1 leaving, floor 5: 3 may go,
        // 1 of them now (2 in flight, 1 under way).
        assert_eq!(gp.candidates, ["i-00000005"]);
        let why: BTreeMap<&str, &str> = gp.left_alone.iter().map(|(id, why)| (id.as_str(), why.as_str())).collect();
        let expected = [
            ("i-00000001", "claimed: its replacement is about to start"),
            ("i-00000002", "set aside until"),
            ("i-00000003", "protected from scale-in"),
            ("i-00000004", "lifecycle state Standby"),
            ("i-00000006", "in-flight limit: 2 at once, 1 under way"),
            ("i-00000007", "in-flight limit"),
            ("i-00000008", "kept On-Demand: the group's On-Demand floor is 5"),
            ("i-00000009", "a Reserved Instance pays for it"),
        ];
        assert_eq!(why.len(), expected.len(), "{why:?}");
        for (id, start) in expected {
            assert!(why[id].starts_with(start), "{id}: {}", why[id]);
        }
        // Once the limit lets them: the candidate and the two waiting for room.
        assert_eq!(gp.replaceable, ["i-00000005", "i-00000006", "i-00000007"]);
    }

    #[test]
    fn in_flight_replacements_count_against_the_limit_and_are_not_enqueued_twice() {
        let members = (1..=4).map(|n| member(&format!("i-0000000{n}"), "InService")).collect();
        let g = Group {
            tags: [("AsgOptimiser".into(), "true".into()), (TAG_MAX_IN_FLIGHT.into(), "2".into())].into(),
            ..group("web", 4, members)
        };
        let claimed = with_tag(od("i-00000001", 1), TAG_HOLD, &claim(NOW + 60).value());
        let expired = with_tag(od("i-00000003", 3), TAG_HOLD, &claim(NOW - 1).value());
        let instances = vec![claimed, od("i-00000002", 2), expired, od("i-00000004", 4)];

        let plan = plan_scan(&input(vec![g.clone()], instances.clone(), vec![]));
        assert_eq!(plan.groups[0].in_flight, 1);
        assert_eq!(plan.groups[0].candidates, ["i-00000002"]);

        // A Spot copy of i-00000002 is under way: the group is at its limit.
        let spots = vec![spot("i-0000000a", "web", "i-00000002", NOW - 30)];
        let plan = plan_scan(&input(vec![g], instances, spots));
        assert_eq!((plan.groups[0].in_flight, plan.groups[0].candidates.len()), (2, 0));
        assert!(plan.orphans.is_empty());
    }

    #[test]
    fn groups_that_are_short_or_unsupported_get_no_candidates() {
        let g = group("short", 3, vec![member("i-00000001", "InService"), member("i-00000002", "Pending")]);
        let plan = plan_scan(&input(vec![g], vec![od("i-00000001", 1), od("i-00000002", 2)], vec![]));
        assert!(plan.groups[0].candidates.is_empty());
        assert!(plan.groups[0].skipped.as_deref().unwrap().contains("1 of 3"));

        let g = Group {
            launch: LaunchSource::MixedInstances,
            ..group("mixed", 1, vec![member("i-00000001", "InService")])
        };
        let plan = plan_scan(&input(vec![g], vec![od("i-00000001", 1)], vec![]));
        assert_eq!(plan.groups[0].skipped.as_deref(), Some("uses a mixed instances policy"));
        assert!(plan.groups[0].candidates.is_empty());
    }

    #[test]
    fn the_on_demand_floor_holds_both_ways() {
        // (members, On-Demand among them, tags) -> (to Spot, to On-Demand)
        type Case<'a> = (usize, usize, &'a [(&'a str, &'a str)], usize, usize);
        let cases: &[Case] = &[
            (4, 4, &[], 4, 0),
            (4, 4, &[(TAG_MIN_ON_DEMAND, "1")], 3, 0),
            (4, 4, &[(crate::domain::policy::TAG_MIN_ON_DEMAND_PERCENT, "50")], 2, 0),
            (4, 2, &[(TAG_MIN_ON_DEMAND, "2")], 0, 0),
            (4, 1, &[(TAG_MIN_ON_DEMAND, "3")], 0, 2), // the floor was raised: Spot goes back
            (4, 0, &[(TAG_MIN_ON_DEMAND, "9")], 0, 4), // never more than desired
            (4, 4, &[(TAG_MIN_ON_DEMAND, "x")], 4, 0), // invalid: default floor 0, and a note
        ];
        for &(n, on_demand, tags, want_spot, want_od) in cases {
            let (g, instances) = floor_group(n, on_demand, tags);
            let plan = plan_scan(&input(vec![g], instances, vec![]));
            let gp = &plan.groups[0];
            assert_eq!((gp.candidates.len(), gp.to_on_demand.len()), (want_spot, want_od), "{tags:?}: {gp:?}");
        }
        // An On-Demand copy already under way counts toward the floor.
        let (g, instances) = floor_group(4, 1, &[(TAG_MIN_ON_DEMAND, "3")]);
        let copy = Instance { spot: false, ..spot("i-000000aa", "web", "i-00000002", NOW - 30) };
        let plan = plan_scan(&input(vec![g], instances, vec![copy]));
        assert_eq!(plan.groups[0].to_on_demand, ["i-00000003"]);
        assert_eq!(plan.groups[0].in_flight, 1);
    }

    #[test]
    fn on_demand_instances_wait_while_every_compatible_pool_is_backed_off() {
        let backoff = format!("{TAG_BACKOFF_PREFIX}eu-west-1a");
        let compatible: BTreeMap<String, Vec<String>> =
            [("m5.large".to_string(), vec!["m5.large".to_string(), "m5a.large".to_string()])].into();
        // (backoff tag value, policy tags, candidates)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], usize);
        let cases: &[Case] = &[
            ("", &[], 2),
            (&format!("*={}", NOW + 60), &[], 0),
            (&format!("*={}", NOW - 60), &[], 2),        // ended
            (&format!("m5.large={}", NOW + 60), &[], 2), // m5a.large is still open
            (&format!("m5.large={} m5a.large={}", NOW + 60, NOW + 90), &[], 0),
            // The policy allows only m5.large, and that pool is backed off.
            (&format!("m5.large={}", NOW + 60), &[(crate::domain::policy::TAG_ALLOWED_TYPES, "m5.*")], 0),
        ];
        for &(value, tags, want) in cases {
            let (mut g, instances) = floor_group(2, 2, tags);
            if !value.is_empty() {
                g.tags.insert(backoff.clone(), value.to_string());
            }
            let plan = plan_scan(&ScanInput { compatible: compatible.clone(), ..input(vec![g], instances, vec![]) });
            let gp = &plan.groups[0];
            assert_eq!(gp.candidates.len(), want, "{value} {tags:?}");
            assert_eq!(gp.held_back, 2 - want, "{value}");
            assert_eq!(gp.notes.iter().any(|n| n.contains("backed off")), want == 0, "{value}: {:?}", gp.notes);
        }
        // A tag whose entries all ended is cleaned up, except in dry-run.
        let (mut g, instances) = floor_group(2, 2, &[]);
        g.tags.insert(backoff.clone(), format!("*={}", NOW - 1));
        let plan = plan_scan(&input(vec![g.clone()], instances.clone(), vec![]));
        assert_eq!(plan.stale_tags, [("web".to_string(), vec![backoff])]);
        g.tags.insert(TAG_MODE.into(), "dry-run".into());
        assert!(plan_scan(&input(vec![g], instances, vec![])).stale_tags.is_empty());
    }

    #[test]
    fn disabled_groups_get_no_work() {
        let (g, instances) = floor_group(2, 2, &[(TAG_MODE, "disabled")]);
        let plan = plan_scan(&input(vec![g], instances, vec![]));
        assert!(plan.groups[0].candidates.is_empty());
        assert!(plan.groups[0].skipped.as_deref().unwrap().contains("disabled"));
    }

    #[test]
    fn a_copy_whose_own_swap_is_unfinished_is_not_replaced_in_turn() {
        // web: i-1 On-Demand being replaced by Spot copy i-a, attached; the floor asks for 2.
        let (g, mut instances) = floor_group(2, 1, &[(TAG_MIN_ON_DEMAND, "2")]);
        let mut g = g;
        g.members.push(member("i-0000000a", "InService"));
        let copy = spot("i-0000000a", "web", "i-00000001", NOW - 30);
        instances.push(copy.clone());
        let plan = plan_scan(&input(vec![g], instances, vec![copy]));
        let gp = &plan.groups[0];
        assert!(!gp.to_on_demand.contains(&"i-0000000a".to_string()), "{gp:?}");
        assert_eq!(gp.to_on_demand, ["i-00000002"]);
    }

    #[test]
    fn outdated_instances_roll_within_the_rollout_limit_in_the_market_the_policy_wants() {
        use crate::domain::policy::{TAG_ROLLOUT, TAG_ROLLOUT_MAX_IN_FLIGHT};
        // (members, On-Demand among them, version they run, tags) ->
        // (to Spot, to On-Demand, rolled in their own market, outdated)
        type Case<'a> = (usize, usize, &'a str, &'a [(&'a str, &'a str)], usize, usize, usize, usize);
        let cases: &[Case] = &[
            (10, 10, "2", &[], 10, 0, 0, 0), // current: only the cost moves
            (10, 10, "1", &[], 1, 0, 0, 10), // default rollout limit: 10% of 10
            (10, 10, "1", &[(TAG_ROLLOUT_MAX_IN_FLIGHT, "3")], 3, 0, 0, 10),
            // The floor keeps them On-Demand: rolled On-Demand to On-Demand.
            (10, 10, "1", &[(TAG_ROLLOUT_MAX_IN_FLIGHT, "3"), (TAG_MIN_ON_DEMAND, "10")], 0, 0, 3, 10),
            (4, 0, "1", &[(TAG_ROLLOUT_MAX_IN_FLIGHT, "3")], 0, 0, 3, 4), // Spot to Spot
            // Below the floor: the Spot instances going On-Demand are the outdated ones first.
            (4, 0, "1", &[(TAG_ROLLOUT_MAX_IN_FLIGHT, "1"), (TAG_MIN_ON_DEMAND, "2")], 0, 1, 0, 4),
            // The group-wide limit bounds rollouts too.
            (10, 10, "1", &[(TAG_ROLLOUT_MAX_IN_FLIGHT, "5"), (TAG_MAX_IN_FLIGHT, "2")], 2, 0, 0, 10),
            (10, 10, "1", &[(TAG_ROLLOUT, "disabled")], 10, 0, 0, 10), // counted, not limited
        ];
        for &(n, on_demand, version, tags, want_spot, want_od, want_rolled, want_outdated) in cases {
            let (g, instances) = floor_group(n, on_demand, tags);
            let instances = instances.into_iter().map(|i| outdated(i, version)).collect();
            let plan = plan_scan(&ScanInput { current: current(), ..input(vec![g], instances, vec![]) });
            let gp = &plan.groups[0];
            let got = (gp.candidates.len(), gp.to_on_demand.len(), gp.rollout.len(), gp.outdated);
            assert_eq!(got, (want_spot, want_od, want_rolled, want_outdated), "{version} {tags:?}: {gp:?}");
            let market = if on_demand == n { Market::OnDemand } else { Market::Spot };
            assert!(gp.rollout.values().all(|m| *m == market), "{gp:?}");
        }
    }

    #[test]
    fn rollouts_under_way_use_up_the_rollout_limit() {
        let (g, instances) = floor_group(4, 0, &[(crate::domain::policy::TAG_ROLLOUT_MAX_IN_FLIGHT, "2")]);
        let mut instances: Vec<Instance> = instances.into_iter().map(|i| outdated(i, "1")).collect();
        instances[0] = with_tag(instances[0].clone(), TAG_HOLD, &claim(NOW + 60).value());
        let plan = plan_scan(&ScanInput { current: current(), ..input(vec![g], instances, vec![]) });
        let gp = &plan.groups[0];
        assert_eq!((gp.rollout_in_flight, gp.outdated, gp.rollout.len()), (1, 3, 1), "{gp:?}");
        assert_eq!(gp.rollout.keys().collect::<Vec<_>>(), ["i-00000002"]);
    }

    #[test]
    fn a_paused_rollout_launches_nothing_until_the_configuration_changes() {
        let (mut g, instances) = floor_group(4, 4, &[]);
        let instances: Vec<Instance> = instances.into_iter().map(|i| outdated(i, "1")).collect();
        let cur = current();
        g.tags.insert(
            TAG_ROLLOUT_PAUSED.into(),
            crate::domain::drift::pause_value(&cur["web"], NOW - 60, crate::domain::drift::Cause::Checks),
        );
        let plan = plan_scan(&ScanInput { current: cur.clone(), ..input(vec![g.clone()], instances.clone(), vec![]) });
        let gp = &plan.groups[0];
        assert!(gp.candidates.is_empty() && gp.rollout.is_empty(), "{gp:?}");
        assert!(gp.rollout_paused.as_deref().is_some_and(|w| w.contains("lt-1:2")), "{gp:?}");
        assert_eq!(gp.outdated, 4);
        // Version 3 is published: the pause named version 2 and no longer holds.
        let mut next = cur.clone();
        next.get_mut("web").unwrap().number = 3;
        let plan = plan_scan(&ScanInput { current: next, ..input(vec![g.clone()], instances.clone(), vec![]) });
        assert_eq!((plan.groups[0].rollout_paused.as_ref(), plan.groups[0].candidates.len()), (None, 1));
        assert_eq!(plan.stale_tags, [("web".to_string(), vec![TAG_ROLLOUT_PAUSED.to_string()])]);
        // The template could not be read: a pause tag is enough to hold.
        let plan = plan_scan(&input(vec![g], instances, vec![]));
        assert!(plan.groups[0].rollout_paused.is_some() && plan.groups[0].candidates.is_empty());
    }

    #[test]
    fn instances_reservations_pay_for_stay_on_demand() {
        let (g, instances) = floor_group(4, 4, &[]);
        let reserved: BTreeSet<String> = ["i-00000001".to_string(), "i-00000003".to_string()].into();
        let plan = plan_scan(&ScanInput { reserved, ..input(vec![g], instances, vec![]) });
        let gp = &plan.groups[0];
        assert_eq!(gp.candidates, ["i-00000002", "i-00000004"]);
        assert_eq!(gp.reserved, 2);
    }

    #[test]
    fn a_rollout_in_flight_in_its_own_market_leaves_the_floor_alone() {
        use crate::domain::policy::TAG_ROLLOUT_MAX_IN_FLIGHT;
        let tags: &[(&str, &str)] = &[(TAG_MIN_ON_DEMAND, "2"), (TAG_ROLLOUT_MAX_IN_FLIGHT, "2")];
        let (g, instances) = floor_group(4, 2, tags); // i-1, i-2 On-Demand; i-3, i-4 Spot
        let instances: Vec<Instance> = instances.into_iter().map(|i| outdated(i, "1")).collect();
        let same = Hold::Claim { until: NOW + 60, same_market: true }.value();
        // (what is in flight for which instance) -> Spot instances moved to On-Demand
        let spot_copy = spot("i-000000aa", "web", "i-00000003", NOW - 30);
        let od_copy = Instance { spot: false, ..spot("i-000000bb", "web", "i-00000001", NOW - 30) };
        type Case<'a> = (&'a str, Vec<Instance>, Option<(usize, String)>, usize);
        let cases: Vec<Case> = vec![
            ("Spot copy of a Spot instance", vec![spot_copy], None, 0),
            ("On-Demand copy of an On-Demand instance", vec![od_copy], None, 0),
            ("claimed for its own market, no copy yet", vec![], Some((0, same)), 0),
            // A claim for a market move: the On-Demand instance is leaving, a Spot one replaces it.
            ("claimed to move to Spot", vec![], Some((0, claim(NOW + 60).value())), 1),
        ];
        for (what, copies, hold, want) in cases {
            let mut instances = instances.clone();
            if let Some((k, value)) = hold {
                instances[k] = with_tag(instances[k].clone(), TAG_HOLD, &value);
            }
            let plan = plan_scan(&ScanInput { current: current(), ..input(vec![g.clone()], instances, copies) });
            let gp = &plan.groups[0];
            assert_eq!(
                (gp.to_on_demand.len(), gp.candidates.len(), gp.rollout_in_flight),
                (want, 0, 1),
                "{what}: {gp:?}"
            );
        }
    }
}
