//! Each behaviour the simulated account models, on its own: if these hold, a seed that fails
//! in the simulation failed against AWS's semantics, not against a quirk of the simulator.

use asg_core::cloud::{GroupQuery, InstanceQuery, ANY_STATE, LIVE};
use asg_core::domain::model::Hook;
use asg_core::domain::model::{InstanceState, Launch, LaunchResult, Lifecycle, Market, Tags};
use asg_sim::check::{Call, Checker};
use asg_sim::iam::{refuses, Role};
use asg_sim::world::{subnet_of, SimHook, TargetState, World, WARNING_LEAD};
use asg_sim::START;

fn world() -> (World, String) {
    let mut w = World::new(1, START, &["us-east-1a", "us-east-1b"]);
    let lt = w.add_template("ami-1", "m5.large");
    w.add_group("web", 1, 2, 3, &lt, &[("AsgOptimiser", "true")]);
    (w, lt)
}

fn launch(lt: &str, token: &str, market: Market, types: &[&str]) -> Launch {
    Launch {
        market,
        template_id: lt.into(),
        template_version: "$Latest".into(),
        instance_types: types.iter().map(|t| t.to_string()).collect(),
        subnet_id: subnet_of("us-east-1a"),
        tags: vec![("asg-optimiser:group".into(), "web".into()), ("asg-optimiser:replaces".into(), "i-1".into())],
        client_token: token.into(),
    }
}

/// A Spot copy launched by the tool, running and visible.
fn copy(w: &mut World, lt: &str, token: &str) -> String {
    let LaunchResult::Launched { instance_id, .. } =
        w.create_fleet(&launch(lt, token, Market::Spot, &["m5.large"])).unwrap()
    else {
        panic!("no launch")
    };
    w.advance(w.now + 60);
    instance_id
}

fn lifecycle(w: &World, group: &str, id: &str) -> Option<Lifecycle> {
    w.groups[group].member(id).map(|m| m.lifecycle.clone())
}

#[test]
fn an_attach_over_max_size_is_refused_with_a_validation_error() {
    let (mut w, lt) = world();
    let (a, b) = (copy(&mut w, &lt, "t1"), copy(&mut w, &lt, "t2"));
    w.attach("web", &[a]).unwrap();
    assert_eq!(w.groups["web"].desired, 3, "attach raises desired");
    let e = w.attach("web", &[b]).unwrap_err();
    assert_eq!((e.code(), e.transient), ("ValidationError", false), "{e}");
    assert!(e.message.unwrap().contains("max-size=3"));
    assert_eq!(w.groups["web"].desired, 3);
}

#[test]
fn attach_takes_running_instances_of_the_groups_zones_that_are_in_no_group() {
    let (mut w, lt) = world();
    let LaunchResult::Launched { instance_id: pending, .. } =
        w.create_fleet(&launch(&lt, "p", Market::Spot, &["m5.large"])).unwrap()
    else {
        panic!()
    };
    w.advance(w.now + 3);
    let e = w.attach("web", std::slice::from_ref(&pending)).unwrap_err();
    assert!(e.message.unwrap().contains("not in correct state"));
    let member = w.groups["web"].members[0].id.clone();
    let e = w.attach("web", &[member]).unwrap_err();
    assert!(e.message.unwrap().contains("already part of"));
    w.groups.get_mut("web").unwrap().zones = vec!["us-east-1b".into()];
    let c = copy(&mut w, &lt, "c");
    let e = w.attach("web", &[c]).unwrap_err();
    assert_eq!(e.code(), "ValidationError");
}

#[test]
fn an_attached_instance_is_in_service_at_once_and_goes_through_no_launch_hook() {
    let (mut w, lt) = world();
    w.groups.get_mut("web").unwrap().hooks.push(SimHook { kind: Hook::Launching, installs_app: true });
    let tg = w.add_target_group("web");
    let c = copy(&mut w, &lt, "t");
    w.attach("web", std::slice::from_ref(&c)).unwrap();
    assert_eq!(lifecycle(&w, "web", &c), Some(Lifecycle::InService), "no Pending:Wait");
    assert_eq!(w.instances[&c].tags["aws:autoscaling:groupName"], "web");
    assert_eq!(w.target_groups[&tg][&c].state, TargetState::Initial, "registered, not healthy yet");
    w.advance(w.now + 200);
    assert_eq!(w.target_groups[&tg][&c].state, TargetState::Unhealthy, "the application the hook installs is missing");
}

#[test]
fn the_group_launches_through_its_launch_hook_and_registers_before_in_service() {
    let (mut w, _) = world();
    (w.timing.boot, w.timing.hook, w.timing.target_healthy) = ((10, 10), (100, 100), (100, 100));
    w.groups.get_mut("web").unwrap().hooks.push(SimHook { kind: Hook::Launching, installs_app: true });
    let tg = w.add_target_group("web");
    w.set_desired("web", 3).unwrap();
    w.advance(w.now + 2);
    let new = w.groups["web"].members.last().unwrap().id.clone();
    assert_eq!(lifecycle(&w, "web", &new), Some(Lifecycle::Pending));
    w.advance(w.now + 40);
    assert_eq!(lifecycle(&w, "web", &new), Some(Lifecycle::PendingWait), "the hook holds it");
    assert!(!w.target_groups[&tg].contains_key(&new), "not registered while the hook runs");
    w.advance(w.now + 90);
    assert_eq!(lifecycle(&w, "web", &new), Some(Lifecycle::InService));
    assert_eq!(w.target_groups[&tg][&new].state, TargetState::Initial, "InService is not healthy yet");
    w.advance(w.now + 100);
    assert_eq!(w.target_groups[&tg][&new].state, TargetState::Healthy);
}

#[test]
fn terminate_in_group_decrementing_below_min_size_is_refused() {
    let (mut w, _) = world();
    w.set_desired("web", 1).unwrap();
    w.advance(w.now + 400);
    let id = w.groups["web"].members.iter().find(|m| !m.lifecycle.is_leaving()).unwrap().id.clone();
    let e = w.terminate_in_group(&id, true).unwrap_err();
    assert!(e.code() == "ValidationError" && e.message.unwrap().contains("min size"), "");
    // Without the decrement the group launches a replacement.
    w.terminate_in_group(&id, false).unwrap();
    w.advance(w.now + 2);
    assert_eq!(w.groups["web"].desired, 1);
    assert_eq!(w.groups["web"].counted(), 1, "a replacement is on its way");
    assert!(w.groups["web"].members.iter().any(|m| m.lifecycle == Lifecycle::Pending));
}

#[test]
fn termination_deregisters_first_then_waits_on_the_termination_hook() {
    let (mut w, _) = world();
    w.groups.get_mut("web").unwrap().hooks.push(SimHook { kind: Hook::Terminating, installs_app: false });
    let tg = w.add_target_group("web");
    let id = w.groups["web"].members[0].id.clone();
    w.terminate_in_group(&id, true).unwrap();
    assert_eq!(w.target_groups[&tg][&id].state, TargetState::Draining);
    w.advance(w.now + 1);
    assert_eq!(lifecycle(&w, "web", &id), Some(Lifecycle::TerminatingWait));
    assert_eq!(w.instances[&id].state, InstanceState::Running, "the hook runs before the end");
    w.advance(w.now + 400);
    assert_eq!(lifecycle(&w, "web", &id), None);
    assert_eq!(w.instances[&id].state, InstanceState::Terminated);
    assert_eq!(w.groups["web"].desired, 1);
}

#[test]
fn a_max_size_below_desired_forces_a_scale_in_by_the_default_termination_policy() {
    let (mut w, _) = world();
    w.update_group("web", None, Some(3)).unwrap();
    w.set_desired("web", 3).unwrap();
    w.advance(w.now + 400);
    assert_eq!(w.groups["web"].counted(), 3);
    let zone_counts = |w: &World| {
        let mut n = std::collections::BTreeMap::new();
        for m in w.groups["web"].members.iter().filter(|m| !m.lifecycle.is_leaving()) {
            *n.entry(w.instances[&m.id].az.clone()).or_insert(0) += 1;
        }
        n
    };
    assert_eq!(zone_counts(&w).values().max(), Some(&2));
    w.set_max_size("web", 2).unwrap();
    assert_eq!((w.groups["web"].max, w.groups["web"].desired), (2, 2));
    w.advance(w.now + 1);
    assert_eq!(zone_counts(&w).values().copied().collect::<Vec<_>>(), [1, 1], "the fuller zone gave one up");
    assert!(w.set_max_size("web", 0).is_err(), "MaxSize below MinSize is refused");
}

#[test]
fn the_group_replaces_a_member_that_died_and_desired_stays() {
    let (mut w, _) = world();
    let id = w.groups["web"].members[0].id.clone();
    w.kill(&id, "Server.InternalError");
    w.advance(w.now + 60);
    assert_eq!(lifecycle(&w, "web", &id), None, "the dead member is gone");
    assert_eq!((w.groups["web"].desired, w.groups["web"].counted()), (2, 2));
    w.set_desired("web", 3).unwrap();
    w.advance(w.now + 400);
    assert_eq!(w.groups["web"].members.iter().filter(|m| m.lifecycle == Lifecycle::InService).count(), 3);
}

#[test]
fn create_fleet_draws_from_pools_that_run_dry_and_answers_200_with_only_errors() {
    let (mut w, lt) = world();
    w.spot_capacity.insert(("m5.large".into(), "us-east-1a".into()), 1);
    w.spot_capacity.insert(("m5a.large".into(), "us-east-1a".into()), 0);
    match w.create_fleet(&launch(&lt, "a", Market::Spot, &["m5.large", "m5a.large"])).unwrap() {
        LaunchResult::Launched { instance_type, empty_pools, .. } => {
            assert_eq!((instance_type.as_str(), empty_pools), ("m5.large", vec!["m5a.large".to_string()]))
        }
        other => panic!("{other:?}"),
    }
    let r = w.create_fleet(&launch(&lt, "b", Market::Spot, &["m5.large", "m5a.large"])).unwrap();
    assert!(matches!(r, LaunchResult::NoCapacity { ref code, .. } if code == "InsufficientInstanceCapacity"), "{r:?}");
    let r = w.create_fleet(&launch(&lt, "c", Market::OnDemand, &["m5.large"])).unwrap();
    assert!(matches!(r, LaunchResult::Launched { .. }), "On-Demand is not drawn from Spot pools");
}

#[test]
fn a_client_token_gives_the_same_answer_and_refuses_other_parameters() {
    let (mut w, lt) = world();
    let first = w.create_fleet(&launch(&lt, "tok", Market::Spot, &["m5.large"])).unwrap();
    let again = w.create_fleet(&launch(&lt, "tok", Market::Spot, &["m5.large"])).unwrap();
    let id = |r: &LaunchResult| match r {
        LaunchResult::Launched { instance_id, .. } => instance_id.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(id(&first), id(&again));
    assert_eq!(w.instances.values().filter(|i| i.by_tool).count(), 1);
    let e = w.create_fleet(&launch(&lt, "tok", Market::Spot, &["m5a.large"])).unwrap_err();
    assert_eq!(e.code(), "IdempotentParameterMismatch");
}

#[test]
fn status_checks_pass_after_a_delay_or_never() {
    let (mut w, lt) = world();
    w.timing.checks = (100, 100);
    let c = copy(&mut w, &lt, "a");
    let checks = |w: &World| w.instance_status(std::slice::from_ref(&c)).unwrap()[&c].instance.clone();
    assert_eq!(checks(&w), "initializing");
    w.advance(w.now + 100);
    assert_eq!(checks(&w), "ok");
    w.timing.never_ready = 1.0;
    let d = copy(&mut w, &lt, "b");
    w.advance(w.now + 10_000);
    assert_eq!(w.instance_status(std::slice::from_ref(&d)).unwrap()[&d].instance, "initializing");
}

#[test]
fn a_spot_instance_ends_two_minutes_after_its_warning() {
    let (mut w, lt) = world();
    let c = copy(&mut w, &lt, "a");
    w.interrupt(&c);
    w.advance(w.now + WARNING_LEAD - 1);
    assert_eq!(w.instances[&c].state, InstanceState::Running);
    w.advance(w.now + 1);
    assert_eq!(w.instances[&c].state, InstanceState::ShuttingDown);
    assert_eq!(w.instances[&c].state_reason.as_deref(), Some("Server.SpotInstanceTermination"));
}

#[test]
fn a_copy_launched_with_a_kms_key_the_tool_may_not_use_starts_and_dies() {
    let (mut w, lt) = world();
    w.templates.get_mut(&lt).unwrap().kms_key_denied = true;
    let LaunchResult::Launched { instance_id, .. } =
        w.create_fleet(&launch(&lt, "k", Market::Spot, &["m5.large"])).unwrap()
    else {
        panic!()
    };
    w.advance(w.now + 60);
    let i = &w.instances[&instance_id];
    assert!(matches!(i.state, InstanceState::ShuttingDown | InstanceState::Terminated), "{:?}", i.state);
    assert_eq!(i.state_reason.as_deref(), Some("Client.InvalidKMSKey.InvalidState"));
    // The group's own launches use its service-linked role and live.
    w.set_desired("web", 3).unwrap();
    w.advance(w.now + 400);
    assert_eq!(w.groups["web"].members.iter().filter(|m| m.lifecycle == Lifecycle::InService).count(), 3);
}

#[test]
fn a_resource_holds_fifty_tags_and_create_tags_over_that_fails_whole() {
    let (mut w, lt) = world();
    let a = copy(&mut w, &lt, "a");
    let b = copy(&mut w, &lt, "b");
    let many: Tags = (0..48).map(|n| (format!("k{n:02}"), "v".to_string())).collect();
    w.create_tags(std::slice::from_ref(&a), &many).unwrap();
    let one: Tags = [("asg-optimiser:hold".to_string(), "claim 1".to_string())].into();
    let e = w.create_tags(&[b.clone(), a.clone()], &one).unwrap_err();
    assert_eq!(e.code(), "TagLimitExceeded");
    assert!(!w.instances[&b].tags.contains_key("asg-optimiser:hold"), "the whole call failed");
}

#[test]
fn an_instance_just_launched_may_be_invisible_for_a_moment() {
    let (mut w, lt) = world();
    w.timing.visibility_lag = 5;
    let mut seen_missing = false;
    for n in 0..10 {
        let LaunchResult::Launched { instance_id, .. } =
            w.create_fleet(&launch(&lt, &format!("v{n}"), Market::Spot, &["m5.large"])).unwrap()
        else {
            panic!()
        };
        let found = w.describe_instances(&InstanceQuery::Ids(vec![instance_id.clone()]), ANY_STATE);
        if found.is_empty() {
            seen_missing = true;
            let tags: Tags = [("asg-optimiser:pool".to_string(), "x".to_string())].into();
            assert_eq!(
                w.create_tags(std::slice::from_ref(&instance_id), &tags).unwrap_err().code(),
                "InvalidInstanceID.NotFound"
            );
        }
        w.advance(w.now + 6);
        assert_eq!(w.describe_instances(&InstanceQuery::Ids(vec![instance_id]), ANY_STATE).len(), 1);
    }
    assert!(seen_missing, "with a lag of up to 5 s, one of ten launches is invisible at first");
}

#[test]
fn detach_runs_no_hook_and_the_instance_leaves_its_group() {
    let (mut w, _) = world();
    w.groups.get_mut("web").unwrap().hooks.push(SimHook { kind: Hook::Terminating, installs_app: false });
    let id = w.groups["web"].members[0].id.clone();
    w.detach("web", &id, false).unwrap();
    assert_eq!(lifecycle(&w, "web", &id), Some(Lifecycle::Detaching));
    w.advance(w.now + 5);
    assert_eq!(lifecycle(&w, "web", &id), None);
    assert_eq!(w.instances[&id].state, InstanceState::Running, "detached, not terminated");
    assert!(!w.instances[&id].tags.contains_key("aws:autoscaling:groupName"));
    assert_eq!(w.groups["web"].desired, 2, "no decrement: the group replaces it");
    assert_eq!(w.describe_instances(&InstanceQuery::InGroups(vec!["web".into()]), LIVE).len(), 2);
    assert_eq!(w.describe_groups(&GroupQuery::Named(vec!["web".into()]))[0].members.len(), 2);
}

#[test]
fn the_checker_flags_what_the_tool_must_never_do() {
    let (mut w, lt) = world();
    let mut check = Checker::new(&w, "AsgOptimiser", "true");
    let member = w.groups["web"].members[0].id.clone();
    check.before(&w, &Call::Terminate(vec![member.clone()]), 1, "test");
    check.before(&w, &Call::TerminateInGroup(member.clone(), true), 2, "test");
    // Retiring through the group while only an unserving copy replaces it drops capacity.
    let c = copy(&mut w, &lt, "a");
    w.create_tags(std::slice::from_ref(&c), &[("asg-optimiser:replaces".to_string(), member.clone())].into()).unwrap();
    w.attach("web", std::slice::from_ref(&c)).unwrap();
    check.after(&w, 3);
    check.before(&w, &Call::TerminateInGroup(member.clone(), true), 4, "test");
    w.terminate_in_group(&member, true).unwrap();
    check.after(&w, 4);
    let invariants: Vec<&str> = check.violations.iter().map(|v| v.invariant).collect();
    assert_eq!(
        invariants,
        ["an instance the tool does not own is terminated", "an instance the tool does not own is terminated"],
        "{:#?}",
        check.violations
    );
    let (mut w2, _) = world();
    w2.add_target_group("web");
    let mut check = Checker::new(&w2, "AsgOptimiser", "true");
    let first = w2.groups["web"].members[0].id.clone();
    w2.terminate_in_group(&first, false).unwrap();
    check.after(&w2, 1);
    assert_eq!(check.violations.len(), 1, "{:#?}", check.violations);
    assert_eq!(check.violations[0].invariant, "serving capacity fell");
}

#[test]
fn a_change_to_a_group_in_dry_run_is_flagged_unless_it_went_to_dry_run_after_the_callers_read() {
    let (mut w, _) = world();
    let mut check = Checker::new(&w, "AsgOptimiser", "true");
    let web = |w: &World| w.describe_groups(&GroupQuery::Named(vec!["web".to_string()]));
    check.read_groups(&w, "swapper#1", &web(&w));
    w.advance(w.now + 2);
    w.groups.get_mut("web").unwrap().tags.insert("asg-optimiser:mode".into(), "dry-run".into());
    check.after(&w, 1);
    w.advance(w.now + 2);
    // swapper#1 read it enabled: its change lands in dry-run by a race no read can close.
    check.before(&w, &Call::SetDesired("web".into(), 1), 2, "swapper#1");
    assert!(check.violations.is_empty(), "{:#?}", check.violations);
    // scanner#2 read it in dry-run, and an invocation that never read it knows nothing better.
    check.read_groups(&w, "scanner#2", &web(&w));
    check.before(&w, &Call::SetDesired("web".into(), 1), 3, "scanner#2");
    check.before(&w, &Call::SetDesired("web".into(), 1), 4, "interruption#3");
    let invariants: Vec<&str> = check.violations.iter().map(|v| v.invariant).collect();
    assert_eq!(invariants, ["a group in dry-run is changed", "a group in dry-run is changed"]);
}

#[test]
fn an_instance_warned_before_it_serves_is_the_worlds_loss_when_it_goes() {
    let (mut w, lt) = world();
    let mut check = Checker::new(&w, "AsgOptimiser", "true");
    let old = w.groups["web"].members[0].id.clone();
    // A copy warned (or killed) before its attach, attached anyway, its swap retiring the old one.
    let c = copy(&mut w, &lt, "a");
    w.create_tags(std::slice::from_ref(&c), &[("asg-optimiser:replaces".to_string(), old.clone())].into()).unwrap();
    check.doomed(&w, &c);
    w.attach("web", std::slice::from_ref(&c)).unwrap();
    check.after(&w, 1);
    w.terminate_in_group(&old, true).unwrap();
    w.advance(w.now + 1);
    check.after(&w, 2);
    // The world takes it: one short of the start until the group replaces it, not the tool's doing.
    w.detach("web", &c, false).unwrap();
    w.advance(w.now + 1);
    check.after(&w, 3);
    assert!(check.violations.is_empty(), "{:#?}", check.violations);
}

#[test]
fn a_call_the_policy_refuses_only_because_a_tag_moved_since_the_callers_read_is_a_race() {
    let (mut w, _) = world();
    let mut check = Checker::new(&w, "AsgOptimiser", "true");
    let web = |w: &World| w.describe_groups(&GroupQuery::Named(vec!["web".to_string()]));
    let tag = "asg-optimiser:original-max-size".to_string();
    w.groups.get_mut("web").unwrap().tags.insert(tag.clone(), "4 +1".into());
    check.read_groups(&w, "scanner#1", &web(&w));
    // A swap gives the raise back and deletes the record between the scanner's read and its delete.
    w.groups.get_mut("web").unwrap().tags.remove(&tag);
    check.read_groups(&w, "scanner#2", &web(&w));
    let untag = Call::UntagGroup("web".into(), vec![tag]);
    let refused = |world: &World| refuses(Role::Scanner, &untag, world, check.opt_in(), true).is_some();
    assert!(refused(&w), "the template's condition refuses the delete");
    assert!(!refused(&check.as_read(&w, "scanner#1")), "as scanner#1 read it, the delete was allowed");
    assert!(refused(&check.as_read(&w, "scanner#2")), "scanner#2 read the group without the record");
}
