//! The deterministic simulation over many seeds, and the seeds that once failed, kept by name.
//!
//! A failing seed prints the invariant it broke, the account it built and the calls that led
//! there; `SIM_SEED=<n> cargo test -p asg-sim --test seeds replay -- --ignored --nocapture`
//! replays it (`SIM_LOG=1` interleaves the functions' own log lines, stamped with the step).

use asg_sim::driver::{run, Report};

/// Seeds `make test` runs; `make soak` runs many more.
const SEEDS: u64 = 300;

fn assert_clean(report: Report) {
    assert!(report.violations.is_empty(), "{}", report.explain());
}

#[test]
fn a_few_hundred_seeds_keep_every_invariant() {
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    let (mut calls, mut checks) = (0, 0);
    for seed in 1..=SEEDS {
        let report = run(seed);
        calls += report.total_calls();
        checks += report.checks;
        if !report.violations.is_empty() {
            failed.push(report);
        }
    }
    println!(
        "{} seeds in {:.1?}: {calls} calls simulated, {checks} invariant checks, {} failed",
        SEEDS,
        started.elapsed(),
        failed.len()
    );
    if let Some(first) = failed.first() {
        let seeds: Vec<u64> = failed.iter().map(|r| r.seed).collect();
        panic!("seeds {seeds:?} failed; the first:\n{}", first.explain());
    }
}

#[test]
#[ignore = "replays SIM_SEED (SIM_LOG=1 adds the functions' log lines); run with --ignored"]
fn replay() {
    let seed: u64 = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()).expect("SIM_SEED=<seed>");
    if std::env::var_os("SIM_LOG").is_some() {
        // The functions' own log lines, as they run (before the trace, which prints at the end).
        struct Step;
        impl tracing_subscriber::fmt::time::FormatTime for Step {
            fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
                write!(w, "{:>6} log", asg_sim::cloud::LAST_STEP.load(std::sync::atomic::Ordering::Relaxed))
            }
        }
        tracing_subscriber::fmt().with_test_writer().with_ansi(false).with_timer(Step).with_target(false).init();
    }
    let report = run(seed);
    println!("{}", report.trace.join("\n"));
    println!("account:\n{}", report.account);
    assert_clean(report);
}

// Seeds that once failed, kept by name. A seed replays exactly on one version of the code; a
// change that adds or removes a call shifts what follows, so the situation each seed found is
// also pinned by a scripted scenario (tests/scenarios.rs) that does not depend on the seed.

/// Found a group opted out while a swap's copy was attached: the swapper dropped the swap and
/// left the group at desired + 1 with MaxSize raised (scenario:
/// `a_group_opted_out_mid_swap_is_rolled_back_to_what_its_operator_left`).
#[test]
fn core_seed_45() {
    assert_clean(run(45));
}

/// Found a copy warned of its interruption before its attach, attached anyway while the
/// handler's first try failed, and the On-Demand instance retired (scenario:
/// `a_copy_warned_before_the_retire_never_replaces_the_on_demand_instance`).
#[test]
fn core_seed_15() {
    assert_clean(run(15));
}

/// Found the web-fleet defects of issue 11 before they were fixed (retire while the copy was
/// still `initial` behind its target group, a copy attached past a launch hook, MaxSize put
/// back below an operator's raise, desired left one higher by an interruption mid-swap).
#[test]
fn web_fleet_seeds_1_2_8_268_269() {
    for seed in [1, 2, 8, 268, 269] {
        assert_clean(run(seed));
    }
}

/// Found a rebalance recommendation for a serving copy whose swap was unfinished, with a
/// younger attach pending in its group: the handler took the copy out through the group without
/// a decrement, and the group served one short until it launched another (scenario:
/// `a_rebalance_recommendation_leaves_a_serving_copy_whose_attach_it_cannot_net_out`).
#[test]
fn seed_572_a_recommendation_took_out_a_serving_copy() {
    assert_clean(run(572));
}

/// Found MaxSize given back below a value an operator set: a raise refused (throttled) after
/// its record was written left the record claiming a value we never set, and the operator later
/// set that very value (608, 891; scenario: `a_raise_refused_leaves_no_claim_on_a_max_size_an_
/// operator_sets_later`), or a give-back in two steps left the value it replaced claimed (552).
/// And a copy that died after its attach in a group disabled meanwhile: its swap was dropped and
/// desired stayed one above the operator's (643; scenario: `a_copy_that_dies_after_its_attach_
/// in_a_group_disabled_meanwhile_gives_back_its_attach`).
#[test]
fn seeds_552_608_643_891_max_size_records_and_a_disabled_group() {
    for seed in [552, 608, 643, 891] {
        assert_clean(run(seed));
    }
}

/// Found desired away and back while a copy waited to serve: a scaling policy lowered desired
/// below what the attach made it, the group took the instance the copy replaces out, and desired
/// came back up to the attach's value. The swap found the instance gone and desired as its attach
/// made it, and gave back a +1 the scale-in had taken already: the group ended one below its
/// operator's value (4/5/4 for 4/5/5). The swap now reads the group's scaling activities first
/// (scenarios: `a_..._taken_by_a_scale_in_while_desired_goes_away_and_back_gives_nothing_back`).
/// And the same with a third member taken: a copy handed back on a warning then gave back its
/// +1 (10051), a roll-back after an hour in dry-run decremented (8808); scenarios:
/// `a_copy_that_dies_after_desired_went_away_and_back_gives_nothing_back`,
/// `a_copy_rolled_back_after_desired_went_away_and_back_goes_without_a_decrement`.
#[test]
fn seeds_959_1179_1286_8808_10051_desired_away_and_back_while_a_copy_waited() {
    for seed in [959, 1179, 1286, 8808, 10051] {
        assert_clean(run(seed));
    }
}

/// Found by the first version of the scaling-activities read, which took any scale-in that
/// started after the second of the attach's record for a move since the attach: a policy set
/// desired 6 -> 5 as the swap started, the swap's read before the attach counted it (record 6),
/// and the group's scale-in started a second later, still before the attach. The retire kept
/// both instances, and the group ended one above (4/6/6 for 4/6/5). Only activities listed after
/// the copy's own attach count now.
#[test]
fn seed_818_a_scale_in_decided_before_the_attach_is_no_move_since_it() {
    assert_clean(run(818));
}

/// Found a copy the interruption handler handed back (`out`: detached without a decrement)
/// while its swap, re-sent to read everything, was due: the copy still ran outside the group for
/// its last minute, the swap took it for one still to attach, found the instance it replaces
/// gone and dropped the message; its +1 stayed in desired (2/7/7 for 2/6/6). A handed-back copy
/// now goes where a dead one does: its swap gives the +1 back once the group has settled.
#[test]
fn seed_4297_a_copy_handed_back_and_still_running() {
    assert_clean(run(4297));
}

/// Found a swap lost after its attach (its message dead-lettered after three crashes) whose
/// replaced instance was then terminated by someone else: the group launched another, and the
/// scan resumed only swaps whose replaced instance was still there. The +1 of the attach stayed
/// for good (2/5/5 for 2/4/4). A copy with its +1 still to give back is resumed too.
#[test]
fn seed_2956_a_lost_swap_with_its_plus_one_to_give_back_is_resumed() {
    assert_clean(run(2956));
}

/// Found a roll-back (12370) and a give-back (16669) whose mark on the copy's record was
/// throttled: the swap logged it and ended, and the open record of a dead copy whose replaced
/// instance stays kept the group busy for good. Its MaxSize raise was never given back (2/3/2
/// for 2/2/2; 0/5/4 for 0/4/4). The swap now comes back to write the mark.
#[test]
fn seeds_12370_16669_a_netting_made_and_its_mark_not_written() {
    for seed in [12370, 16669] {
        assert_clean(run(seed));
    }
}

/// Found a swap marker taken while a serving copy's +1 was still to give back: the instance
/// the copy replaced was taken out by the interruption handler (the group launched another),
/// the group was opted out, and a scan saw a copy that serves and no instance to replace, so
/// no swap under way, and removed the marker; IAM then refused every give-back (5/6/6 for
/// 5/5/5). Such a copy now keeps its group busy.
#[test]
fn seed_19948_a_serving_copy_with_its_plus_one_to_give_back_keeps_the_marker() {
    assert_clean(run(19948));
}

/// Found a Spot warning for a copy handled while its swap retired: the handler read the group
/// (the replaced instance there, desired what the attach made it), the swap retired that
/// instance with its decrement, and three calls after its read the handler took the copy out
/// with a decrement of its own; the group served one short for good (4 for 5). The handler now
/// reads the group again right before, sees the swap over, and takes the copy out without one.
#[test]
fn seed_17843_a_warning_handled_while_the_swap_retired() {
    assert_clean(run(17843));
}

/// Found a scale-in racing the retire: the swapper read the group, then read the copy's Spot
/// request and the group's other copies, and meanwhile a scaling policy set desired 5 -> 4 (the
/// group took one instance out); the retire's decrement then took a second one, and the group
/// served one short until it launched another. The swapper now reads the group once more right
/// before the decrement and re-sends itself if anything moved.
#[test]
fn seed_584_a_scale_in_during_the_retires_reads() {
    assert_clean(run(584));
}

/// Two attaches pending in one group, then a scale-in by one that the younger swap saw as
/// desired moved (it kept both instances); the older swap then found desired equal to the value
/// its own attach recorded, took it for the younger attach netted out, and gave back its +1, one
/// below the operator's value (ended 5/7/5 for 5/7/6): desired alone cannot tell "someone scaled
/// in by one" from "the younger swap netted out its +1". And two swaps of one group in one
/// batch: one read desired 6 and recorded 7 on its copy before its attach, the other retired
/// meanwhile (6 -> 5), the attach made 6, and the read that would have corrected the record
/// was throttled; the attach's +1 stayed for good (ended 5/6/6 for 5/5/5). A group now takes one
/// attach of ours at a time (scenario: `a_group_takes_one_attach_at_a_time`).
#[test]
fn seeds_159_295_two_attaches_pending_in_one_group() {
    for seed in [159, 295] {
        assert_clean(run(seed));
    }
}

/// Found two deliveries of one swap at once (two chains of its message): each wrote its own
/// record on the copy, one attached, and the record read back after the attach (the other's, a
/// few seconds younger) counted the copy as an attach younger than itself. The swap took desired
/// for one above its own and kept both instances, one above the operator's value for good
/// (6/7/7 for 6/6/6). A copy is no longer younger than itself.
#[test]
fn seed_186_two_deliveries_of_one_swap_at_once() {
    assert_clean(run(186));
}

/// Found with one attach at a time in place: a +1 of ours left in desired capacity for good.
/// 699: a swap recorded its attach and crashed before the call; the copy died outside the
/// group and its record read as an attach made (a copy that dies outside its group now counts
/// as never attached, unless its record says it was handed back `out`). 741: a swap past its
/// attach was dropped in dry-run and its copy died meanwhile (it now waits the dry-run out).
/// 771, 1177: a swap past its attach reached the dead-letter queue over five throttled
/// deliveries (it now re-sends itself on a transient failure). 212: the scanner, blind to a
/// copy that had died with its +1 to give back, removed the marker of a group opted out, and
/// IAM refused the give-back (dead copies are read now). 667: that read kept a group busy for
/// good over a dead copy whose retire mark had failed (such a record counts only for the
/// attach's patience). 2069: a dry-run of an hour outlasted that patience, and the marker went
/// before the give-back (a dead copy whose replaced instance is still a member keeps it).
#[test]
fn seeds_212_667_699_741_771_1177_2069_a_plus_one_left_in_desired_capacity() {
    for seed in [212, 667, 699, 741, 771, 1177, 2069] {
        assert_clean(run(seed));
    }
}

/// Found a MaxSize raise given back in full whose record's removal was refused (throttled): the
/// record still claimed the raised value, an operator later set that very value, and the next
/// give-back took it back. A give-back is now recorded before the change, as a raise is
/// (scenario: `a_give_back_whose_record_stays_leaves_no_claim_on_a_max_size_an_operator_sets_later`).
#[test]
fn seeds_2488_2721_a_give_back_whose_record_stayed() {
    for seed in [2488, 2721] {
        assert_clean(run(seed));
    }
}

/// A copy of ours still outside its group when the rest period ends, in a group whose launch
/// hook installs the application while its tag says `ignore`: no attached copy could serve, so
/// each was rolled back (or replaced by the group as unhealthy), its instance set aside, and the
/// scanner tried the next one, for ever; the group never came to rest. Launches from a
/// configuration whose copy never served are now paused (scenarios: `copies_that_never_serve_
/// pause_the_launches_of_their_group_until_the_tag_goes`, `a_copy_the_group_replaces_as_
/// unhealthy_before_the_deadline_pauses_the_launches_too`).
#[test]
fn seeds_156_357_copies_that_never_serve_tried_for_ever() {
    for seed in [156, 357] {
        assert_clean(run(seed));
    }
}

/// An operator switches a group to dry-run in the seconds between a function's read and its
/// change. Seed 9791: the swapper attached its copy, read the group after the attach (now in
/// dry-run) and went on to retire the old instance; the swap now stops at that read, and the
/// scanner resumes it once the group leaves dry-run. Seed 16099: the scanner re-read a group
/// to remove a stale swap marker, found it in dry-run and removed the marker anyway; the fresh
/// read (and the one before a MaxSize repair) now leaves a group gone to dry-run as it is. Seed
/// 16144: the swapper retired the old instance as the group went to dry-run, then read the group
/// to give its MaxSize raise back and gave it back anyway; that read now stops it too. The
/// changes made before any read could show the switch are a race the checker allows (seeds 4253,
/// 4266, 4444, 4996, 5052).
#[test]
fn seeds_9791_16099_16144_a_group_gone_to_dry_run_after_the_read() {
    for seed in [9791, 16099, 16144, 4253, 4266, 4444, 4996, 5052] {
        assert_clean(run(seed));
    }
}

/// A call the template's IAM conditions refuse because another invocation changed what they name
/// after the caller's read: the scanner read the MaxSize record, a swap gave its raise back and
/// deleted the record, and the scanner's own delete (or MaxSize repair) was refused (seeds 5514,
/// 10295, 10321, 15681, 18103); the scanner read an instance in its group, the interruption
/// handler detached it, and the scanner's claim was refused (seed 19452). AWS says no, nothing
/// changes, and the scan goes on: the checker forgives a refusal the caller's read allowed. A
/// give-back refused with the record gone on a fresh read is no error of the scan: the raise was
/// given back by the other.
#[test]
fn seeds_5514_19452_a_refusal_raced_by_another_invocation() {
    for seed in [5514, 10295, 10321, 15681, 18103, 19452] {
        let report = run(seed);
        let error =
            report.trace.iter().find(|l| l.contains("could not restore the MaxSize") && l.contains("AccessDenied"));
        assert!(error.is_none(), "seed {seed}: {error:?}");
        assert_clean(report);
    }
}

/// An operator opts a group out and scales it in while a copy is attached and not yet serving;
/// the group's scale-in takes one of the serving instances, the copy starts serving in its place,
/// and a rebalance recommendation for the copy arrives. The handler took the copy out without a
/// decrement (desired had moved), one short of the operator's value until the group launched
/// another (seeds 8375, 8745). As in an opted-in group, and as the swap's own roll-back does, a
/// recommendation now forces nothing out: the copy serves on and its swap keeps both.
#[test]
fn seeds_8375_8745_a_rebalance_recommendation_in_a_group_opted_out_mid_swap() {
    for seed in [8375, 8745] {
        assert_clean(run(seed));
    }
}

/// A swap records its attach on the copy (desired 9) and the attach is throttled; the copy is
/// still outside the group at the orphan deadline and the scanner terminates it. Dead with its
/// record open, it counted as an attach the group had undone: an older swap of the group then
/// expected desired one higher than it was, took that for someone else's change and kept both
/// instances, twice, and the group ended two above its operator's value, MaxSize with it (6/8/8
/// for 6/6/6). The scanner now marks such a record over before it terminates the orphan.
#[test]
fn seed_474_an_orphan_whose_attach_was_recorded_but_never_made() {
    assert_clean(run(474));
}

/// Two ways a +1 of ours stayed in desired capacity for good. 4163: the interruption handler read
/// a copy not yet attached, marked its record over and terminated it, and in the moment between
/// the read and the termination its swap attached it: its death read as a swap netted out. 8401:
/// a group opted out while a copy waited to serve, the instance it replaced then taken by a Spot
/// interruption: with nothing to roll back the swap was dropped. The handler now leaves the
/// record as it is, and the swap settles as in an opted-in group.
#[test]
fn seeds_4163_8401_a_plus_one_left_by_a_warning_or_an_opt_out() {
    for seed in [4163, 8401] {
        assert_clean(run(seed));
    }
}
