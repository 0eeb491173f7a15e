//! Scripted scenarios on the simulated account: each forces one situation the random seeds
//! found, with the real handlers, and checks the invariants after every call as the seeds do.

use asg_core::domain::model::{InstanceState, Lifecycle, TAG_REPLACES, TAG_SWAP_UNDER_WAY};
use asg_sim::driver::{Harness, SPOT_QUEUE, SWAP_QUEUE};
use asg_sim::world::World;
use asg_sim::START;

/// One opted-in group of two On-Demand instances, desired == max so that every swap raises it.
fn account() -> Harness {
    let mut w = World::new(7, START, &["us-east-1a", "us-east-1b"]);
    let lt = w.add_template("ami-1", "m5.large");
    w.add_group("web", 1, 2, 2, &lt, &[("AsgOptimiser", "true"), ("asg-optimiser:max-in-flight", "1")]);
    w.timing.checks = (60, 60);
    Harness::new(w)
}

/// Scan, launch, wait for the copy's checks: the swap message is due.
fn copy_ready(h: &mut Harness) -> (String, String) {
    assert_eq!(h.scan().enqueued, 1);
    assert_eq!(h.deliver(SPOT_QUEUE), 1);
    h.advance(120);
    h.world(|w| {
        let copy = w.instances.values().find(|i| i.by_tool).expect("a copy");
        (copy.id.clone(), copy.tags[TAG_REPLACES].clone())
    })
}

fn assert_clean(h: &Harness, violations: Vec<asg_sim::check::Violation>) {
    assert!(violations.is_empty(), "{violations:#?}\n{}", h.trace());
}

#[test]
fn a_group_opted_out_mid_swap_is_rolled_back_to_what_its_operator_left() {
    let mut h = account();
    let (copy, old) = copy_ready(&mut h);
    // The attach goes through; the read right after it fails, so the swap stops there.
    h.throttle_next("ec2:DescribeSpotInstanceRequests");
    assert_eq!(h.deliver(SWAP_QUEUE), 1);
    assert_eq!(h.world(|w| (w.groups["web"].desired, w.groups["web"].member(&copy).is_some())), (3, true));
    h.world(|w| w.groups.get_mut("web").unwrap().tags.insert("AsgOptimiser".into(), "false".into()));
    h.advance(400);
    assert_eq!(h.deliver(SWAP_QUEUE), 1, "the failed record comes back after the visibility timeout");
    h.advance(60);
    h.world(|w| {
        let g = &w.groups["web"];
        assert_eq!((g.desired, g.member(&copy).is_none()), (2, true), "the copy came back out, desired too");
        assert_eq!(g.member(&old).map(|m| m.lifecycle.clone()), Some(Lifecycle::InService), "the instance is kept");
    });
    // The scanner gives the MaxSize back and removes the marker that let the swapper act.
    h.scan();
    h.world(|w| {
        let g = &w.groups["web"];
        assert_eq!((g.min, g.max, g.desired), (1, 2, 2));
        assert!(!g.tags.contains_key(TAG_SWAP_UNDER_WAY), "{:?}", g.tags);
    });
    h.advance(3600);
    h.scan();
    assert_clean(&h, h.at_rest());
}

#[test]
fn a_copy_warned_before_the_retire_never_replaces_the_on_demand_instance() {
    let mut h = account();
    let (copy, old) = copy_ready(&mut h);
    // EC2 gives the copy its two-minute notice; the event has not reached the handler yet.
    h.world(|w| w.interrupt(&copy));
    assert_eq!(h.deliver(SWAP_QUEUE), 1);
    h.world(|w| {
        let g = &w.groups["web"];
        assert_eq!(g.member(&old).map(|m| m.lifecycle.clone()), Some(Lifecycle::InService), "the instance is kept");
        assert!(g.member(&copy).is_none_or(|m| m.lifecycle.is_leaving()), "the copy is on its way out");
        assert_eq!(g.desired, 2);
    });
    // The event arrives late: the copy is already out of the group; nothing more changes.
    h.event(&copy, "EC2 Spot Instance Interruption Warning").expect("handled");
    h.advance(300);
    assert_eq!(h.world(|w| w.instances[&copy].state), InstanceState::Terminated);
    assert_clean(&h, h.violations());
}
