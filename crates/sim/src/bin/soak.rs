//! `make soak`: many seeds through the deterministic simulation, with figures: seeds per second,
//! calls simulated, invariants checked, and every failing seed with how to replay it.
//!
//! `soak [SEEDS] [FIRST] [--every]` (default 10,000 seeds from 1);
//! `--every` prints each kind of violation a seed hit, not only its first.

use std::time::Instant;

use asg_sim::driver::run;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let every = args.iter().any(|a| a == "--every");
    let numbers: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let seeds = numbers.first().copied().unwrap_or(10_000);
    let first = numbers.get(1).copied().unwrap_or(1);
    println!("soak: {seeds} seeds from {first}");
    let started = Instant::now();
    let (mut calls, mut checks, mut invocations, mut crashes) = (0u64, 0u64, 0u64, 0u64);
    let mut failed = Vec::new();
    for seed in first..first + seeds {
        let report = run(seed);
        calls += report.total_calls();
        checks += report.checks;
        invocations += report.invocations;
        crashes += report.crashes;
        if let Some(v) = report.violations.first() {
            println!("seed {seed}: {v}");
            if every {
                let mut kinds: Vec<&str> = report.violations.iter().map(|v| v.invariant).collect();
                kinds.sort_unstable();
                kinds.dedup();
                println!("  seed {seed} kinds: {}", kinds.join("; "));
            }
            failed.push(report);
        }
        let done = seed - first + 1;
        if done % 1000 == 0 {
            println!("  {done} seeds, {:.1} seeds/s", done as f64 / started.elapsed().as_secs_f64());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("\n{seeds} seeds in {secs:.1} s: {:.1} seeds/s", seeds as f64 / secs);
    println!(
        "  {calls} AWS calls simulated ({:.0} per second), {invocations} invocations, {crashes} crashes",
        calls as f64 / secs
    );
    println!("  {checks} invariant checks");
    println!(
        "  {} seeds failed{}",
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(": {:?}", failed.iter().map(|r| r.seed).collect::<Vec<_>>())
        }
    );
    if let Some(first) = failed.first() {
        println!("\n{}", first.explain());
        std::process::exit(1);
    }
}
