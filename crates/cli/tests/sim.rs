//! `status` on the simulated account, which answers as AWS does, under a role that may only
//! read (the simulation refuses any change to it, and counts a refusal as a violation): one swap
//! behind a target group, stage by stage, then a group opted out mid-swap.

use asg_core::config::{Config, Function};
use asg_core::domain::model::{Lifecycle, TAG_REPLACES};
use asg_optimizer::report::{self, Stage, StatusReport};
use asg_sim::cloud::SimCloud;
use asg_sim::driver::{block_on, Harness, SPOT_QUEUE, SWAP_QUEUE};
use asg_sim::iam::Role;
use asg_sim::world::World;
use asg_sim::START;

fn account() -> Harness {
    let mut w = World::new(7, START, &["us-east-1a", "us-east-1b"]);
    let lt = w.add_template("ami-1", "m5.large");
    w.add_group("web", 1, 2, 2, &lt, &[("AsgOptimiser", "true"), ("asg-optimiser:max-in-flight", "1")]);
    w.add_target_group("web");
    w.timing.checks = (60, 60);
    w.timing.target_healthy = (240, 240);
    Harness::new(w)
}

fn status(h: &Harness) -> StatusReport {
    let cloud = SimCloud::new(h.sim.clone(), Role::ReadOnly);
    let config = Config::from_lookup(Function::Cli, |_| None).expect("defaults");
    let now = h.world(|w| w.now);
    block_on(report::status(&cloud, &config, now)).unwrap_or_else(|_| panic!("status failed\n{}", h.trace()))
}

/// The stage of the swap of `old`, if one is listed.
fn stage(h: &Harness, old: &str) -> Option<Stage> {
    status(h).swaps.iter().find(|s| s.instance == old).map(|s| s.stage)
}

fn clean(h: &Harness) {
    let violations = h.violations();
    assert!(violations.is_empty(), "{violations:#?}\n{}", h.trace());
    let s = h.sim.lock().unwrap_or_else(|e| e.into_inner());
    for ((role, op), _) in s.calls_by_function.iter().filter(|((role, _), _)| *role == Role::ReadOnly.name()) {
        let name = op.split(':').nth(1).unwrap_or_default();
        assert!(name.starts_with("Describe"), "{role} made {op}");
    }
}

#[test]
fn status_follows_a_swap_behind_a_target_group_stage_by_stage() {
    let mut h = account();
    assert!(status(&h).swaps.is_empty());

    assert_eq!(h.scan().enqueued, 1);
    let claimed = status(&h);
    let old = claimed.swaps.first().expect("the claim is listed").instance.clone();
    assert_eq!(claimed.swaps[0].stage, Stage::Queued, "{claimed:#?}");
    assert!(claimed.swaps[0].copy.is_none() && claimed.swaps[0].deadline.is_some());

    assert_eq!(h.deliver(SPOT_QUEUE), 1);
    // DescribeInstances shows a new instance a few seconds after CreateFleet returns it.
    assert_eq!(stage(&h, &old), Some(Stage::Queued), "not visible yet");
    h.advance(5);
    assert_eq!(stage(&h, &old), Some(Stage::Launched));
    h.advance(25);
    assert_eq!(stage(&h, &old), Some(Stage::WaitingForStatusChecks), "running, checks not passed");
    h.advance(90);
    // Attached and InService; the target group's checks take 240 s.
    assert_eq!(h.deliver(SWAP_QUEUE), 1);
    let attached = status(&h);
    let swap = attached.swaps.iter().find(|s| s.instance == old).expect("listed");
    assert_eq!(swap.stage, Stage::WaitingForTheLoadBalancer, "{attached:#?}");
    assert!(swap.deadline.is_some() && swap.age_seconds.is_some_and(|a| a >= 120), "{swap:?}");
    assert!(attached.max_raised.iter().any(|m| m.group == "web" && (m.from, m.max) == (2, 3)), "{attached:#?}");

    for _ in 0..40 {
        h.advance(10);
        h.deliver(SWAP_QUEUE);
    }
    let copy = h.world(|w| w.instances.values().find(|i| i.by_tool).map(|i| i.id.clone())).expect("the copy");
    assert!(h.world(|w| w.groups["web"].member(&old).is_none_or(|m| m.lifecycle.is_leaving())), "swapped");
    assert!(h.world(|w| w.groups["web"].member(&copy).is_some_and(|m| m.lifecycle == Lifecycle::InService)));
    let done = status(&h);
    assert!(done.swaps.is_empty(), "{done:#?}");
    clean(&h);
}

#[test]
fn status_says_when_a_group_was_opted_out_mid_swap_and_what_the_next_scan_will_do() {
    let mut h = account();
    assert_eq!(h.scan().enqueued, 1);
    assert_eq!(h.deliver(SPOT_QUEUE), 1);
    h.advance(120);
    let old = h.world(|w| w.instances.values().find(|i| i.by_tool).map(|i| i.tags[TAG_REPLACES].clone()));
    let old = old.expect("a copy");
    h.world(|w| w.groups.get_mut("web").unwrap().tags.insert("AsgOptimiser".into(), "false".into()));
    assert_eq!(stage(&h, &old), Some(Stage::GroupNotOptedIn));
    // Past its orphan deadline, the copy never attached is the next scan's to clean up.
    h.advance(1200);
    let later = status(&h);
    assert!(later.leftovers.iter().any(|l| l.what.starts_with("terminate")), "{later:#?}");
    clean(&h);
}
