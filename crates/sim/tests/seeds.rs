//! The deterministic simulation over many seeds, and the seeds that once failed, kept by name.
//!
//! A failing seed prints the invariant it broke, the account it built and the calls that led
//! there; `SIM_SEED=<n> cargo test -p asg-sim --test seeds replay -- --ignored --nocapture`
//! replays it (with `SIM_WEB_FLEET=1` for the web-fleet space).

use asg_sim::driver::{run, Report, Space};

/// Seeds `make test` runs in the core space; `make soak` runs many more.
const SEEDS: u64 = 300;

/// Core seeds that hit a defect the web-fleet issue (11) fixes: after a copy's attach, it or
/// the instance it replaces leaves the group by another path (an interruption, while the reads
/// that would have caught it are throttled), and the swap never nets out its own +1 on desired
/// capacity. Kept below as ignored tests; skipped by the run over many seeds until then.
const ISSUE_11: &[u64] = &[269];

fn assert_clean(report: Report) {
    assert!(report.violations.is_empty(), "{}", report.explain());
}

#[test]
fn a_few_hundred_seeds_keep_every_invariant() {
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    let (mut calls, mut checks) = (0, 0);
    for seed in (1..=SEEDS).filter(|s| !ISSUE_11.contains(s)) {
        let report = run(seed, Space::CORE);
        calls += report.total_calls();
        checks += report.checks;
        if !report.violations.is_empty() {
            failed.push(report);
        }
    }
    println!(
        "{} seeds in {:.1?}: {calls} calls simulated, {checks} invariant checks, {} failed",
        SEEDS as usize - ISSUE_11.len(),
        started.elapsed(),
        failed.len()
    );
    if let Some(first) = failed.first() {
        let seeds: Vec<u64> = failed.iter().map(|r| r.seed).collect();
        panic!("seeds {seeds:?} failed; the first:\n{}", first.explain());
    }
}

#[test]
#[ignore = "replays SIM_SEED (and SIM_WEB_FLEET=1 for the web-fleet space); run with --ignored"]
fn replay() {
    let seed: u64 = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()).expect("SIM_SEED=<seed>");
    let space = if std::env::var_os("SIM_WEB_FLEET").is_some() { Space::WEB_FLEET } else { Space::CORE };
    let report = run(seed, space);
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
    assert_clean(run(45, Space::CORE));
}

/// Found a copy warned of its interruption before its attach, attached anyway while the
/// handler's first try failed, and the On-Demand instance retired (scenario:
/// `a_copy_warned_before_the_retire_never_replaces_the_on_demand_instance`).
#[test]
fn core_seed_15() {
    assert_clean(run(15, Space::CORE));
}

#[test]
#[ignore = "issue 11: an old instance handed back by an interruption warning mid-swap leaves desired one higher"]
fn core_seed_269() {
    assert_clean(run(269, Space::CORE));
}

#[test]
#[ignore = "issue 11: the On-Demand instance is retired while its copy is still `initial` behind the target group"]
fn web_fleet_seed_1() {
    assert_clean(run(1, Space::WEB_FLEET));
}

#[test]
#[ignore = "issue 11: a copy attached without the application a launch hook installs never serves"]
fn web_fleet_seed_2() {
    assert_clean(run(2, Space::WEB_FLEET));
}

#[test]
#[ignore = "issue 11: MaxSize is put back below a value the operator set meanwhile"]
fn web_fleet_seed_8() {
    assert_clean(run(8, Space::WEB_FLEET));
}

#[test]
#[ignore = "issue 11: an old instance handed back by an interruption warning mid-swap leaves desired one higher"]
fn web_fleet_seed_268() {
    assert_clean(run(268, Space::WEB_FLEET));
}
