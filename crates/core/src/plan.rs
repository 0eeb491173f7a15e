//! Pure decisions of the scanner: which On-Demand instances to replace now, which Spot instances
//! are orphans, which swaps stalled, which groups need their MaxSize put back.

use std::collections::{BTreeMap, BTreeSet};

use crate::message::SwapRequest;
use crate::model::{
    Epoch, Group, Hold, Instance, LIFECYCLE_IN_SERVICE, TAG_GROUP, TAG_MAX_IN_FLIGHT, TAG_ORIGINAL_MAX, TAG_REPLACES,
};

/// The per-group limit on replacements in flight: the group's tag (`3` or `25%`) if valid,
/// else `max(1, percent% of desired)`. Returns a note when the tag was unreadable.
pub fn in_flight_limit(desired: i32, default_percent: u32, tag: Option<&str>) -> (usize, Option<String>) {
    let of_desired = |pct: u32| (desired.max(0) as usize * pct as usize / 100).max(1);
    let default = of_desired(default_percent);
    let Some(raw) = tag.map(str::trim) else { return (default, None) };
    let parsed = match raw.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<u32>().ok().filter(|p| (1..=100).contains(p)).map(of_desired),
        None => raw.parse::<usize>().ok(),
    };
    match parsed {
        Some(limit) => (limit, None),
        None => (
            default,
            Some(format!(
                "tag {TAG_MAX_IN_FLIGHT}={raw:?} is not a count or a percentage from 1% to 100%; using {default}"
            )),
        ),
    }
}

/// What the scanner read.
#[derive(Debug, Clone, Default)]
pub struct ScanInput {
    /// Groups carrying the opt-in tag.
    pub opted_in: Vec<Group>,
    /// Groups carrying [`TAG_ORIGINAL_MAX`], opted in or not.
    pub raised: Vec<Group>,
    /// Live members of the opted-in groups.
    pub instances: Vec<Instance>,
    /// Every not-terminated instance carrying [`TAG_REPLACES`].
    pub spots: Vec<Instance>,
    pub now: Epoch,
    pub default_percent: u32,
    pub orphan_deadline: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupPlan {
    pub name: String,
    pub desired: i32,
    pub on_demand: usize,
    pub spot: usize,
    pub limit: usize,
    pub in_flight: usize,
    /// On-Demand instances to enqueue now, oldest first.
    pub candidates: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub spot: String,
    pub group: String,
    pub reason: String,
}

/// Put a raised MaxSize back: set it to `set_max` (if any), and drop the tag when `clear_tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxRepair {
    pub group: String,
    pub set_max: Option<i32>,
    pub clear_tag: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPlan {
    pub groups: Vec<GroupPlan>,
    pub orphans: Vec<Orphan>,
    pub stalled: Vec<SwapRequest>,
    pub repairs: Vec<MaxRepair>,
    pub notes: Vec<String>,
}

pub fn plan_scan(input: &ScanInput) -> ScanPlan {
    let now = input.now;
    let details: BTreeMap<&str, &Instance> = input.instances.iter().map(|i| (i.id.as_str(), i)).collect();
    let known_groups: BTreeMap<&str, &Group> =
        input.raised.iter().chain(&input.opted_in).map(|g| (g.name.as_str(), g)).collect();
    let member_of: BTreeMap<&str, &str> =
        known_groups.values().flat_map(|g| g.members.iter().map(move |m| (m.id.as_str(), g.name.as_str()))).collect();
    // On-Demand id -> the live Spot instances of ours that replace it.
    let mut replacing: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
    for s in input.spots.iter().filter(|s| s.is_live()) {
        if let Some(od) = s.tag(TAG_REPLACES) {
            replacing.entry(od).or_default().push(s);
        }
    }

    let mut plan = ScanPlan::default();
    for g in &input.opted_in {
        plan.groups.push(plan_group(g, &details, &replacing, input));
    }

    for s in &input.spots {
        let (group, od) = (s.tag(TAG_GROUP).unwrap_or_default(), s.tag(TAG_REPLACES).unwrap_or_default());
        if !s.spot {
            plan.notes.push(format!("{} carries {TAG_REPLACES} but is not a Spot instance: left alone", s.id));
            continue;
        }
        if let Some(&attached_to) = member_of.get(s.id.as_str()) {
            let od_still_there = known_groups
                .get(attached_to)
                .is_some_and(|g| g.member(od).is_some_and(|m| !m.lifecycle.starts_with("Terminating")));
            if attached_to == group && od_still_there && now - s.launch_time > input.orphan_deadline {
                plan.stalled.push(SwapRequest::new(group, od, &s.id));
            }
            continue;
        }
        let reason = if !s.is_live() {
            Some(format!("it is {}", s.state))
        } else if group.is_empty() || od.is_empty() {
            Some(format!("it lacks the {TAG_GROUP} or {TAG_REPLACES} tag"))
        } else if !input.opted_in.iter().any(|g| g.name == group) {
            Some(format!("group {group} is gone or no longer opted in"))
        } else if member_of.get(od) != Some(&group) {
            Some(format!("its On-Demand instance {od} is no longer in {group}"))
        } else if now - s.launch_time > input.orphan_deadline {
            Some(format!("it is still not attached {} s after launch", now - s.launch_time))
        } else {
            None
        };
        if let Some(reason) = reason {
            plan.orphans.push(Orphan { spot: s.id.clone(), group: group.to_string(), reason });
        }
    }

    for g in known_groups.values().filter(|g| g.tags.contains_key(TAG_ORIGINAL_MAX)) {
        if busy(g, &input.spots) {
            continue;
        }
        match max_repair(g) {
            Ok(Some(repair)) => plan.repairs.push(repair),
            Ok(None) => {}
            Err(note) => plan.notes.push(note),
        }
    }
    plan
}

fn plan_group(
    g: &Group,
    details: &BTreeMap<&str, &Instance>,
    replacing: &BTreeMap<&str, Vec<&Instance>>,
    input: &ScanInput,
) -> GroupPlan {
    let (limit, note) =
        in_flight_limit(g.desired, input.default_percent, g.tags.get(TAG_MAX_IN_FLIGHT).map(String::as_str));
    let mut plan = GroupPlan {
        name: g.name.clone(),
        desired: g.desired,
        limit,
        notes: note.into_iter().collect(),
        ..Default::default()
    };
    let mut in_flight = BTreeSet::new();
    let mut eligible: Vec<&Instance> = Vec::new();
    for m in &g.members {
        let Some(i) = details.get(m.id.as_str()) else {
            // Attached by hand without our tags, or launched between our two reads: next scan.
            continue;
        };
        if i.spot {
            plan.spot += 1;
            continue;
        }
        plan.on_demand += 1;
        let hold = i.hold().filter(|h| h.until() > input.now);
        if replacing.contains_key(m.id.as_str()) || matches!(hold, Some(Hold::Claim { .. })) {
            in_flight.insert(m.id.as_str());
        } else if hold.is_none()
            && m.lifecycle == LIFECYCLE_IN_SERVICE
            // An unhealthy instance is about to be replaced by the group itself.
            && m.healthy
            && !m.protected_from_scale_in
            && i.state == "running"
        {
            eligible.push(i);
        }
    }
    plan.in_flight = in_flight.len();
    if let Some(reason) = g.unsupported() {
        plan.skipped = Some(reason);
        return plan;
    }
    let serving = g.members.iter().filter(|m| matches!(m.lifecycle.as_str(), "InService" | "Standby")).count();
    if (serving as i32) < g.desired {
        plan.skipped = Some(format!("only {serving} of {} desired instances are in service", g.desired));
        return plan;
    }
    // Oldest first, then by id: two overlapping scans that see the same group pick the same
    // instances, and the FIFO queue's deduplication collapses them.
    eligible.sort_by(|a, b| (a.launch_time, &a.id).cmp(&(b.launch_time, &b.id)));
    plan.candidates = eligible.iter().take(limit.saturating_sub(plan.in_flight)).map(|i| i.id.clone()).collect();
    plan
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

/// A swap of this group is under way: a live Spot instance of ours for it is not attached yet,
/// or is attached while the On-Demand instance it replaces is still a member.
pub fn busy(g: &Group, spots: &[Instance]) -> bool {
    spots.iter().filter(|s| s.is_live() && s.tag(TAG_GROUP) == Some(g.name.as_str())).any(|s| {
        g.member(&s.id).is_none()
            || s.tag(TAG_REPLACES)
                .is_some_and(|od| g.member(od).is_some_and(|m| !m.lifecycle.starts_with("Terminating")))
    })
}

/// Put back the MaxSize we raised, never below the current desired capacity (a MaxSize below
/// it would make the group terminate an instance). Call only when the group is not [`busy`].
pub fn max_repair(g: &Group) -> Result<Option<MaxRepair>, String> {
    let Some(raw) = g.tags.get(TAG_ORIGINAL_MAX) else { return Ok(None) };
    let original: i32 = raw
        .parse()
        .map_err(|_| format!("group {}: tag {TAG_ORIGINAL_MAX}={raw:?} is not a number; left alone", g.name))?;
    let target = original.max(g.desired);
    let set_max = (target < g.max).then_some(target);
    let clear_tag = target == original;
    Ok((set_max.is_some() || clear_tag).then(|| MaxRepair { group: g.name.clone(), set_max, clear_tag }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LaunchSource, Member, TAG_HOLD};

    const NOW: Epoch = 1_800_000_000;

    fn member(id: &str, lifecycle: &str) -> Member {
        Member { id: id.into(), lifecycle: lifecycle.into(), healthy: true, protected_from_scale_in: false }
    }

    fn group(name: &str, desired: i32, members: Vec<Member>) -> Group {
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

    fn od(id: &str, launched: Epoch) -> Instance {
        Instance {
            id: id.into(),
            state: "running".into(),
            instance_type: "m5.large".into(),
            launch_time: launched,
            ..Default::default()
        }
    }

    fn spot(id: &str, group: &str, replaces: &str, launched: Epoch) -> Instance {
        Instance {
            spot: true,
            tags: [(TAG_GROUP.to_string(), group.to_string()), (TAG_REPLACES.to_string(), replaces.to_string())].into(),
            ..od(id, launched)
        }
    }

    fn with_tag(mut i: Instance, k: &str, v: &str) -> Instance {
        i.tags.insert(k.into(), v.into());
        i
    }

    fn input(groups: Vec<Group>, instances: Vec<Instance>, spots: Vec<Instance>) -> ScanInput {
        ScanInput {
            opted_in: groups,
            instances,
            spots,
            now: NOW,
            default_percent: 10,
            orphan_deadline: 1200,
            ..Default::default()
        }
    }

    #[test]
    fn in_flight_limit_table() {
        let cases: &[(i32, u32, Option<&str>, usize, bool)] = &[
            (0, 10, None, 1, false),
            (5, 10, None, 1, false),
            (10, 10, None, 1, false),
            (25, 10, None, 2, false),
            (100, 10, None, 10, false),
            (20, 50, None, 10, false),
            (10, 10, Some("3"), 3, false),
            (10, 10, Some("0"), 0, false),
            (10, 10, Some("50%"), 5, false),
            (10, 10, Some(" 5% "), 1, false),
            (10, 10, Some("0%"), 1, true),
            (10, 10, Some("150%"), 1, true),
            (30, 10, Some("lots"), 3, true),
            (10, 10, Some("-2"), 1, true),
        ];
        for &(desired, pct, tag, want, noted) in cases {
            let (limit, note) = in_flight_limit(desired, pct, tag);
            assert_eq!((limit, note.is_some()), (want, noted), "desired={desired} pct={pct} tag={tag:?}");
        }
    }

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
    fn in_flight_replacements_count_against_the_limit_and_are_not_enqueued_twice() {
        let members = (1..=4).map(|n| member(&format!("i-0000000{n}"), "InService")).collect();
        let g = Group {
            tags: [("AsgOptimiser".into(), "true".into()), (TAG_MAX_IN_FLIGHT.into(), "2".into())].into(),
            ..group("web", 4, members)
        };
        let claimed = with_tag(od("i-00000001", 1), TAG_HOLD, &Hold::Claim { until: NOW + 60 }.value());
        let expired = with_tag(od("i-00000003", 3), TAG_HOLD, &Hold::Claim { until: NOW - 1 }.value());
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
    fn orphans_table() {
        let g = group("web", 2, vec![member("i-00000001", "InService"), member("i-0000000b", "InService")]);
        let stopped = Instance { state: "stopped".into(), ..spot("i-0000000f", "web", "i-00000001", NOW - 10) };
        let spots = vec![
            spot("i-0000000a", "web", "i-00000001", NOW - 60), // young, On-Demand still there: in flight
            spot("i-0000000b", "web", "i-00000099", NOW - 9999), // attached after a finished swap
            spot("i-0000000c", "web", "i-00000001", NOW - 1300), // never attached, too old
            spot("i-0000000d", "gone", "i-00000001", NOW - 10), // group not opted in
            spot("i-0000000e", "web", "i-00000077", NOW - 10), // On-Demand instance gone
            stopped,
            Instance { spot: false, ..spot("i-00000010", "web", "i-00000077", NOW - 9999) }, // not Spot: never ours to kill
        ];
        let plan = plan_scan(&input(vec![g], vec![od("i-00000001", 1)], spots));
        let got: Vec<(&str, &str)> = plan.orphans.iter().map(|o| (o.spot.as_str(), o.reason.as_str())).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].0 == "i-0000000c" && got[0].1.contains("not attached"));
        assert!(got[1].0 == "i-0000000d" && got[1].1.contains("no longer opted in"));
        assert!(got[2].0 == "i-0000000e" && got[2].1.contains("no longer in web"));
        assert!(got[3].0 == "i-0000000f" && got[3].1.contains("stopped"));
        assert_eq!(plan.notes.len(), 1);
        assert!(plan.stalled.is_empty());
    }

    #[test]
    fn an_attached_spot_whose_on_demand_was_never_retired_is_resumed() {
        let g = group("web", 3, vec![member("i-00000001", "InService"), member("i-0000000a", "InService")]);
        let fresh = plan_scan(&input(
            vec![g.clone()],
            vec![od("i-00000001", 1)],
            vec![spot("i-0000000a", "web", "i-00000001", NOW - 60)],
        ));
        assert!(fresh.stalled.is_empty());
        assert_eq!(fresh.groups[0].in_flight, 1);
        let old = plan_scan(&input(
            vec![g],
            vec![od("i-00000001", 1)],
            vec![spot("i-0000000a", "web", "i-00000001", NOW - 5000)],
        ));
        assert_eq!(old.stalled, [SwapRequest::new("web", "i-00000001", "i-0000000a")]);
    }

    #[test]
    fn max_repair_never_goes_below_desired() {
        let cases: &[(&str, i32, i32, Option<(Option<i32>, bool)>)] = &[
            // original, desired, max -> (set_max, clear_tag)
            ("4", 4, 5, Some((Some(4), true))),
            ("4", 5, 5, None), // a swap's Spot instance is still counted: wait
            ("4", 5, 6, Some((Some(5), false))),
            ("4", 3, 4, Some((None, true))), // already back (crash after the update)
            ("4", 3, 7, Some((Some(4), true))),
        ];
        for &(orig, desired, max, want) in cases {
            let mut g = group("web", desired, vec![]);
            g.max = max;
            g.tags.insert(TAG_ORIGINAL_MAX.into(), orig.into());
            let got = max_repair(&g).unwrap().map(|r| (r.set_max, r.clear_tag));
            assert_eq!(got, want, "orig={orig} desired={desired} max={max}");
        }
        let mut g = group("web", 1, vec![]);
        g.tags.insert(TAG_ORIGINAL_MAX.into(), "x".into());
        assert!(max_repair(&g).is_err());
    }

    #[test]
    fn raised_groups_are_not_repaired_while_a_swap_is_under_way() {
        let mut g = group("web", 3, vec![member("i-00000001", "InService")]);
        g.max = 4;
        g.tags.insert(TAG_ORIGINAL_MAX.into(), "3".into());
        let spots = vec![spot("i-0000000a", "web", "i-00000001", NOW - 60)];
        let plan = plan_scan(&ScanInput { raised: vec![g.clone()], ..input(vec![], vec![], spots) });
        assert!(plan.repairs.is_empty());
        let plan = plan_scan(&ScanInput { raised: vec![g], ..input(vec![], vec![], vec![]) });
        assert_eq!(plan.repairs, [MaxRepair { group: "web".into(), set_max: Some(3), clear_tag: true }]);
    }
}
