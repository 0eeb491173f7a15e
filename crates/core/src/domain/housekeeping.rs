//! Pure decisions of the scanner about what earlier swaps left behind: copies of ours that are
//! orphans, swaps that stalled after their attach, MaxSize values a swap left raised, and tags of
//! ours that no longer mean anything.

use std::collections::BTreeMap;

use crate::domain::drift::TAG_ROLLOUT_PAUSED;
use crate::domain::model::{
    Attached, Epoch, Group, Instance, InstanceState, Market, MaxRaise, TemplateVersion, TAG_GROUP, TAG_ORIGINAL_MAX,
    TAG_REPLACES, TAG_SWAP_UNDER_WAY,
};
use crate::domain::plan::ScanInput;
use crate::domain::policy::{Mode, Policy};
use crate::domain::pools::TAG_BACKOFF_PREFIX;
use crate::domain::state::GroupState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub spot: String,
    pub group: String,
    pub reason: String,
    /// The attach recorded on the live copy (written before the call) and not netted out, while
    /// the instance it replaces is still in the group and the copy in none: that attach was never
    /// made. The record is marked over before the copy goes, or, dead, it would count as an
    /// attach the group undid, and the group's other swaps would find desired capacity one off
    /// what they expect.
    pub unmade_attach: Option<Attached>,
}

/// A swap whose copy was attached but whose replaced instance was never retired, or whose +1 is
/// still to give back (the swapper's message was lost): to hand back to the swapper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stalled {
    pub group: String,
    pub old: String,
    pub new: String,
    pub market: Market,
}

/// Put a raised MaxSize back: set it to `set_max` (if any); then drop the tag (`tag: None`) or,
/// when MaxSize could only come part of the way back, record where it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxRepair {
    pub group: String,
    pub set_max: Option<i32>,
    pub tag: Option<MaxRaise>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Housekeeping {
    pub orphans: Vec<Orphan>,
    pub stalled: Vec<Stalled>,
    pub repairs: Vec<MaxRepair>,
    /// Tags of ours that no longer mean anything, per group: see [`stale_tags`].
    pub stale_tags: Vec<(String, Vec<String>)>,
    pub notes: Vec<String>,
}

/// Whether a group's leftovers stay as they are: an opted-in group by its own mode, any other
/// group (it has no policy of ours to go by) by the configured default.
pub fn in_dry_run(opted_in: bool, state: &GroupState, defaults: &Policy) -> bool {
    match opted_in {
        true => state.policy.mode == Mode::DryRun,
        false => defaults.mode == Mode::DryRun,
    }
}

/// What to tidy up after this scan. Dry-run groups change nothing at all, leftovers included:
/// the notes say what would happen instead. A group that is not opted in (any more) has no tags
/// of ours to go by: the configured default mode decides.
pub fn housekeeping(input: &ScanInput) -> Housekeeping {
    let now = input.now;
    let known_groups: BTreeMap<&str, &Group> =
        input.raised.iter().chain(&input.opted_in).map(|g| (g.name.as_str(), g)).collect();
    let member_of: BTreeMap<&str, &str> =
        known_groups.values().flat_map(|g| g.members.iter().map(move |m| (m.id.as_str(), g.name.as_str()))).collect();
    let is_dry =
        |group: &str| in_dry_run(input.opted_in.iter().any(|g| g.name == group), &input.state(group), &input.defaults);

    let mut out = Housekeeping::default();
    for g in known_groups.values().filter(|g| !is_dry(&g.name)) {
        let opted_in = input.opted_in.iter().any(|o| o.name == g.name);
        let stale = stale_tags(&input.state(&g.name), opted_in, input.current.get(&g.name), busy_now(input, g), now);
        if !stale.is_empty() {
            out.stale_tags.push((g.name.clone(), stale));
        }
    }

    // (Copies shutting down or terminated are read only for `busy`: nothing to clean up.)
    for s in input.spots.iter().filter(|s| !matches!(s.state, InstanceState::ShuttingDown | InstanceState::Terminated))
    {
        let (group, old) = (s.tag(TAG_GROUP).unwrap_or_default(), s.tag(TAG_REPLACES).unwrap_or_default());
        if let Some(&attached_to) = member_of.get(s.id.as_str()) {
            let unfinished = known_groups.get(attached_to).is_some_and(|g| g.replaced_still_here(s));
            // Or the instance it replaces left by another path, the +1 of its attach still to
            // give back: the swap settles that.
            let owed = s.attached().is_some_and(|r| r.netting.is_none());
            if attached_to == group && (unfinished || owed) && now - s.launch_time > input.orphan_deadline {
                if is_dry(group) {
                    out.notes.push(format!("dry-run: would resume the stalled swap of {old} for {}", s.id));
                } else {
                    out.stalled.push(Stalled {
                        group: group.to_string(),
                        old: old.to_string(),
                        new: s.id.clone(),
                        market: Market::of(s),
                    });
                }
            }
            continue;
        }
        let reason = if !s.is_live() {
            Some(format!("it is {}", s.state))
        } else if group.is_empty() || old.is_empty() {
            Some(format!("it lacks the {TAG_GROUP} or {TAG_REPLACES} tag"))
        } else if !input.opted_in.iter().any(|g| g.name == group) {
            Some(format!("group {group} is gone or no longer opted in"))
        } else if member_of.get(old) != Some(&group) {
            Some(format!("the instance it replaces, {old}, is no longer in {group}"))
        } else if now - s.launch_time > input.orphan_deadline {
            Some(format!("it is still not attached {} s after launch", now - s.launch_time))
        } else {
            None
        };
        // Live, in no group, the instance it replaces still there: its swap never got it
        // attached. (A copy detached after the instance it replaced left keeps its record open,
        // for the +1 it leaves in the group.)
        let still_replacing = member_of.get(old) == Some(&group);
        if let Some(reason) = reason {
            if is_dry(group) {
                out.notes.push(format!("dry-run: would terminate orphan {} ({reason})", s.id));
            } else {
                let unmade_attach = s.attached().filter(|r| s.is_live() && still_replacing && r.netting.is_none());
                out.orphans.push(Orphan { spot: s.id.clone(), group: group.to_string(), reason, unmade_attach });
            }
        }
    }

    for g in known_groups.values() {
        let state = input.state(&g.name);
        let repair = match busy_now(input, g) {
            // MaxSize set by someone else since our raise: theirs stands, and the record goes
            // now, so that they may even set our value later. (Not while it is still the value
            // before the first raise: a swap may be about to raise it.)
            true => match &state.original_max {
                Some(Ok(r)) if r.from != g.max && !r.ours(g.max) => {
                    Ok(Some(MaxRepair { group: g.name.clone(), set_max: None, tag: None }))
                }
                _ => continue,
            },
            false if state.original_max.is_none() => continue,
            false => max_repair(g, &state),
        };
        match repair {
            Ok(Some(_)) if is_dry(&g.name) => {
                out.notes.push(format!("dry-run: would restore the MaxSize of {}", g.name))
            }
            Ok(Some(repair)) => out.repairs.push(repair),
            Ok(None) => {}
            Err(note) => out.notes.push(note),
        }
    }
    out
}

/// Tags of ours on a group that no longer mean anything: backoffs whose every entry has ended and
/// a rollout pause that names another configuration than `current` (the group has moved on),
/// both in opted-in groups; and the swap marker of a group not `busy`.
pub fn stale_tags(
    state: &GroupState,
    opted_in: bool,
    current: Option<&TemplateVersion>,
    busy: bool,
    now: Epoch,
) -> Vec<String> {
    let mut stale: Vec<String> = Vec::new();
    if opted_in {
        stale.extend(state.backoffs.expired_zones(now).into_iter().map(|az| format!("{TAG_BACKOFF_PREFIX}{az}")));
        if state.rollout_pause.is_some() && current.is_some_and(|c| state.paused_since(c).is_none()) {
            stale.push(TAG_ROLLOUT_PAUSED.to_string());
        }
    }
    if state.swap_marked && !busy {
        stale.push(TAG_SWAP_UNDER_WAY.to_string());
    }
    stale
}

/// A swap of this group is under way: a live copy of ours for it is not attached yet, or is
/// attached while the instance it replaces is still a member; or a copy, dead or serving, has
/// the +1 of its attach still to give back (its swap needs the group's marker to, once the
/// group is opted out; a serving one when the instance it replaces left by another path):
/// certainly while the instance it replaces is still a member (no retire was made), else for
/// records made after `since` (see [`Attached::patience`]: a retire whose mark failed leaves a
/// record open too).
pub fn busy(g: &Group, spots: &[Instance], since: Epoch) -> bool {
    spots.iter().filter(|s| s.tag(TAG_GROUP) == Some(g.name.as_str())).any(|s| {
        let owed = Attached::pending(s, g) && (g.replaced_still_here(s) || s.attached().is_some_and(|r| r.at > since));
        owed || (s.is_live() && (g.member(&s.id).is_none() || g.replaced_still_here(s)))
    })
}

/// [`busy`], for the scan: records before the group's patience count for nothing.
fn busy_now(input: &ScanInput, g: &Group) -> bool {
    let patience = Attached::patience(input.state(&g.name).policy.healthy_deadline, input.orphan_deadline);
    busy(g, &input.spots, input.now - patience)
}

/// Give back the MaxSize our swaps raised, and only that: while MaxSize is still the value we
/// set, back to what it was, never below the current desired capacity (a MaxSize below it would
/// make the group terminate an instance); once someone else has set it, theirs stands and the
/// tag goes. Call only when the group is not [`busy`].
pub fn max_repair(g: &Group, state: &GroupState) -> Result<Option<MaxRepair>, String> {
    let raise = match &state.original_max {
        None => return Ok(None),
        Some(Ok(r)) => *r,
        Some(Err(raw)) => {
            return Err(format!("group {}: tag {TAG_ORIGINAL_MAX}={raw:?} is not <from>:<to>; left alone", g.name))
        }
    };
    let repair = |set_max, tag| Some(MaxRepair { group: g.name.clone(), set_max, tag });
    if !raise.ours(g.max) {
        return Ok(repair(None, None));
    }
    let target = raise.from.max(g.desired);
    let set_max = (target < g.max).then_some(target);
    Ok(match (set_max, target == raise.from) {
        (_, true) => repair(set_max, None),
        (Some(to), false) => repair(Some(to), Some(MaxRaise::next(Some(raise), g.max, to))),
        (None, false) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::*;
    use crate::domain::model::{InstanceState, TAG_ATTACHED, TAG_ORIGINAL_MAX};
    use crate::domain::policy::TAG_MODE;

    #[test]
    fn orphans_table() {
        let g = group("web", 2, vec![member("i-00000001", "InService"), member("i-0000000b", "InService")]);
        let stopped = Instance { state: InstanceState::Stopped, ..spot("i-0000000f", "web", "i-00000001", NOW - 10) };
        let spots = vec![
            spot("i-0000000a", "web", "i-00000001", NOW - 60), // young, On-Demand still there: in flight
            spot("i-0000000b", "web", "i-00000099", NOW - 9999), // attached after a finished swap
            spot("i-0000000c", "web", "i-00000001", NOW - 1300), // never attached, too old
            spot("i-0000000d", "gone", "i-00000001", NOW - 10), // group not opted in
            spot("i-0000000e", "web", "i-00000077", NOW - 10), // On-Demand instance gone
            stopped,
            // An On-Demand copy (the floor) is ours just the same.
            Instance { spot: false, ..spot("i-00000010", "web", "i-00000077", NOW - 10) },
        ];
        let plan = plan_scan(&input(vec![g.clone()], vec![od("i-00000001", 1)], spots.clone()));
        let got: Vec<(&str, &str)> = plan.orphans.iter().map(|o| (o.spot.as_str(), o.reason.as_str())).collect();
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(got[0].0 == "i-0000000c" && got[0].1.contains("not attached"));
        assert!(got[1].0 == "i-0000000d" && got[1].1.contains("no longer opted in"));
        assert!(got[2].0 == "i-0000000e" && got[2].1.contains("no longer in web"));
        assert!(got[3].0 == "i-0000000f" && got[3].1.contains("stopped"));
        assert!(got[4].0 == "i-00000010" && got[4].1.contains("no longer in web"));
        assert!(plan.notes.is_empty());
        assert!(plan.stalled.is_empty());

        // In dry-run, the same scan terminates nothing and says what it would do.
        let mut dry = g;
        dry.tags.insert(TAG_MODE.into(), "dry-run".into());
        let plan = plan_scan(&input(vec![dry], vec![od("i-00000001", 1)], spots));
        assert_eq!(plan.orphans.iter().map(|o| o.spot.as_str()).collect::<Vec<_>>(), ["i-0000000d"]);
        assert_eq!(plan.notes.iter().filter(|n| n.contains("dry-run: would terminate")).count(), 4);
    }

    #[test]
    fn a_swap_is_under_way_while_a_copy_that_died_in_the_group_has_its_plus_one_to_give_back() {
        let g = group("web", 3, vec![member("i-00000001", "InService"), member("i-00000002", "InService")]);
        let dead = |i: Instance| Instance { state: InstanceState::Terminated, ..i };
        let copy = |record: &str| with_tag(spot("i-0000000a", "web", "i-00000009", NOW - 600), TAG_ATTACHED, record);
        let in_group = |i: Instance| with_tag(i, crate::domain::model::TAG_AWS_GROUP, "web");
        let cases = [
            (dead(in_group(copy("1800000000 3"))), true),       // died after its attach
            (dead(copy("1800000000 3")), false),                // died before it
            (dead(in_group(copy("1800000000 3 over"))), false), // given back
            (dead(copy("1800000000 3 out")), true),             // handed back, +1 still there
            (copy("1800000000 3"), true),                       // live, not attached yet
            // Serving while the instance it replaces left by another path (seed 19948).
            (with_tag(spot("i-00000002", "web", "i-00000009", NOW - 600), TAG_ATTACHED, "1800000000 3"), true),
            (with_tag(spot("i-00000002", "web", "i-00000009", NOW - 600), TAG_ATTACHED, "1800000000 3 over"), false),
        ];
        // The instance it replaces still a member: no retire was made, however old the record.
        let unfinished = dead(in_group(with_tag(spot("i-0000000b", "web", "i-00000001", NOW), TAG_ATTACHED, "1 3")));
        assert!(busy(&g, std::slice::from_ref(&unfinished), 1_800_000_000));
        for (c, want) in cases {
            assert_eq!(
                busy(&g, std::slice::from_ref(&c), 1_799_999_999),
                want,
                "{:?} {:?}",
                c.state,
                c.tag(TAG_ATTACHED)
            );
            assert!(
                !busy(&g, std::slice::from_ref(&c), 1_800_000_000) || (c.is_live() && g.member(&c.id).is_none()),
                "a record too old counts for nothing once its instance left"
            );
        }
    }

    #[test]
    fn an_orphan_with_an_attach_recorded_but_never_made_has_it_marked_over_first() {
        let g = group("web", 2, vec![member("i-00000001", "InService")]);
        let old = |id: &str| spot(id, "web", "i-00000001", NOW - 1300);
        let dead = |i: Instance| Instance { state: InstanceState::Terminated, ..i };
        let spots = vec![
            with_tag(old("i-0000000a"), TAG_ATTACHED, "1800000000 3"), // recorded, attach refused
            with_tag(old("i-0000000b"), TAG_ATTACHED, "1800000000 3 over"), // already over
            old("i-0000000c"),                                         // no record
            dead(with_tag(old("i-0000000d"), TAG_ATTACHED, "1800000000 3")), // dead: nothing to clean up
            // Attached, then detached after the instance it replaced left: its +1 stays counted.
            with_tag(spot("i-0000000e", "web", "i-00000077", NOW - 10), TAG_ATTACHED, "1800000000 3"),
        ];
        let plan = plan_scan(&input(vec![g], vec![od("i-00000001", 1)], spots));
        let got: Vec<(&str, Option<String>)> =
            plan.orphans.iter().map(|o| (o.spot.as_str(), o.unmade_attach.map(|r| r.value()))).collect();
        assert_eq!(
            got,
            [
                ("i-0000000a", Some("1800000000 3".to_string())),
                ("i-0000000b", None),
                ("i-0000000c", None),
                ("i-0000000e", None)
            ]
        );
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
        assert_eq!(
            old.stalled,
            [Stalled { group: "web".into(), old: "i-00000001".into(), new: "i-0000000a".into(), market: Market::Spot }]
        );
        // The instance it replaces gone by another path: resumed while the +1 of its attach is
        // still to give back (seed 2956: its messages dead-lettered after crashes), not after.
        let g = group("web", 3, vec![member("i-00000002", "InService"), member("i-0000000a", "InService")]);
        let copy = |record: &str| with_tag(spot("i-0000000a", "web", "i-00000001", NOW - 5000), TAG_ATTACHED, record);
        for (record, resumed) in [("1800000000 3", true), ("1800000000 3 over", false), ("1800000000 3 retire", false)]
        {
            let plan = plan_scan(&input(vec![g.clone()], vec![od("i-00000002", 1)], vec![copy(record)]));
            assert_eq!(plan.stalled.len(), usize::from(resumed), "{record}");
        }
    }

    #[test]
    fn max_repair_gives_back_only_our_raise_and_never_below_desired() {
        type Case<'a> = (&'a str, i32, i32, Option<(Option<i32>, Option<&'a str>)>);
        let cases: &[Case] = &[
            // tag, desired, max -> (set_max, tag left)
            ("4:5", 4, 5, Some((Some(4), None))),
            ("4:5", 5, 5, None),                           // a swap's copy is still counted: wait
            ("4:6", 5, 6, Some((Some(5), Some("4:6:5")))), // part of the way back, and say so
            ("4:5:6", 4, 5, Some((Some(4), None))),        // the raise to 6 never happened: 5 is ours
            ("4:5:6", 4, 6, Some((Some(4), None))),
            ("4:5", 3, 4, Some((None, None))),  // already back (crash after the update)
            ("4:5", 3, 8, Some((None, None))),  // someone set 8 since: theirs stands
            ("4:5", 5, 7, Some((None, None))),  // ... even above desired
            ("4", 3, 7, Some((Some(4), None))), // an older version's tag: as before
        ];
        for &(tag, desired, max, want) in cases {
            let mut g = group("web", desired, vec![]);
            g.max = max;
            g.tags.insert(TAG_ORIGINAL_MAX.into(), tag.into());
            let got = max_repair(&g, &GroupState::read(&g.tags, &Policy::default()))
                .unwrap()
                .map(|r| (r.set_max, r.tag.map(|t| t.value())));
            let want = want.map(|(m, t)| (m, t.map(str::to_string)));
            assert_eq!(got, want, "tag={tag} desired={desired} max={max}");
        }
        let mut g = group("web", 1, vec![]);
        g.tags.insert(TAG_ORIGINAL_MAX.into(), "x".into());
        assert!(max_repair(&g, &GroupState::read(&g.tags, &Policy::default())).is_err());
    }

    #[test]
    fn raised_groups_are_not_repaired_while_a_swap_is_under_way() {
        let mut g = group("web", 3, vec![member("i-00000001", "InService")]);
        g.max = 4;
        g.tags.insert(TAG_ORIGINAL_MAX.into(), "3".into());
        let spots = vec![spot("i-0000000a", "web", "i-00000001", NOW - 60)];
        let plan = plan_scan(&ScanInput { raised: vec![g.clone()], ..input(vec![], vec![], spots) });
        assert!(plan.repairs.is_empty());
        let plan = plan_scan(&ScanInput { raised: vec![g.clone()], ..input(vec![], vec![], vec![]) });
        assert_eq!(plan.repairs, [MaxRepair { group: "web".into(), set_max: Some(3), tag: None }]);
        // While busy, the record goes as soon as MaxSize is someone else's value; it stays while
        // MaxSize is ours, or still the base (a raise may be on its way).
        for (tag, max, dropped) in [("3:4", 6, true), ("3:4", 4, false), ("3:4", 3, false), ("3:4:5", 4, false)] {
            let g = Group { max, tags: [(TAG_ORIGINAL_MAX.to_string(), tag.to_string())].into(), ..g.clone() };
            let spots = vec![spot("i-0000000a", "web", "i-00000001", NOW - 60)];
            let plan = plan_scan(&ScanInput { raised: vec![g], ..input(vec![], vec![], spots) });
            let want: &[MaxRepair] = match dropped {
                true => &[MaxRepair { group: "web".into(), set_max: None, tag: None }],
                false => &[],
            };
            assert_eq!(plan.repairs, want, "{tag} with MaxSize {max}");
        }
    }

    #[test]
    fn with_dry_run_the_default_groups_no_longer_opted_in_are_left_alone_too() {
        let spots = vec![spot("i-0000000d", "gone", "i-00000001", NOW - 10)];
        let mut raised = group("old", 2, vec![]);
        raised.max = 4;
        raised.tags.insert(TAG_ORIGINAL_MAX.into(), "2".into());
        let dry = Policy { mode: Mode::DryRun, ..Policy::default() };
        let plan = plan_scan(&ScanInput {
            defaults: dry,
            raised: vec![raised.clone()],
            ..input(vec![], vec![], spots.clone())
        });
        assert!(plan.orphans.is_empty() && plan.repairs.is_empty(), "{plan:?}");
        assert_eq!(plan.notes.len(), 2, "{:?}", plan.notes);
        let plan = plan_scan(&ScanInput { raised: vec![raised], ..input(vec![], vec![], spots) });
        assert_eq!((plan.orphans.len(), plan.repairs.len()), (1, 1));
    }
}
