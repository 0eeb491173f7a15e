//! `make bench`: figures, not a test. Against moto on loopback:
//! 1. API calls of one scan of 200 opted-in groups holding 2,000 instances, against the lower
//!    bound ceil(groups/100) + ceil(instances/1000) describes, + 1 for the groups' launch
//!    template (the rollout) and + 1 for the account's reservations, + one send per 10 candidates;
//! 2. API calls per completed replacement, over the 200 replacements that scan starts;
//! 3. the size of each arm64 release bootstrap (from `make build`);
//! 4. peak resident memory of each function binary while handling the largest invocation, and
//!    the CPU time of the scan itself (the emulator's time excluded);
//! 5. on the simulated account (exact counts, no emulator): calls per replacement by function and
//!    operation, when the copy is ready at the first check (as moto has it), when its status
//!    checks take two to five minutes (as EC2 has it), and in groups at desired == MaxSize;
//! 6. on the simulated account: one scan of 20,000 instances in 1,000 groups, its calls against
//!    the bound, its CPU time, and the peak heap of the scanner's reads, state and planning.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use asg_sim::driver::{Harness, SPOT_QUEUE, SWAP_QUEUE};
use asg_sim::world::World;
use e2e::pipeline::{environment, Consumer};
use e2e::{Account, Moto, Pipeline};

/// Counts the heap in use and its peak, so the scan's own memory can be told from the rest.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const GROUPS: usize = 200;
const PER_GROUP: i32 = 10;

async fn bench_account(moto: &Moto, groups: usize, per_group: i32) -> Account {
    let account = Account::create(&moto.sdk_config()).await;
    let names: Vec<String> = (0..groups).map(|n| format!("bench-{n:03}")).collect();
    // One at a time: moto answers concurrent CreateAutoScalingGroup calls with 500s.
    for name in &names {
        account.add_group(name, 1, per_group, per_group + 2, true).await;
    }
    account
}

fn row(name: &str, value: String, target: &str, ok: Option<bool>) {
    let verdict = match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "",
    };
    println!("  {name:<58} {value:>14}   {target:<22} {verdict}");
}

/// An account of `groups` groups of `per_group` On-Demand instances of one template, with room
/// above desired (or none).
fn sim_account(groups: usize, per_group: i32, room: bool, checks: (i64, i64), all_at_once: bool) -> Harness {
    let mut w = World::new(1, asg_sim::START, &["us-east-1a", "us-east-1b", "us-east-1c"]);
    let lt = w.add_template("ami-1", "m5.large");
    for n in 0..groups {
        let max = if room { per_group + 2 } else { per_group };
        w.add_group(
            &format!("bench-{n:04}"),
            1,
            per_group,
            max,
            &lt,
            &[("AsgOptimiser", "true"), ("asg-optimiser:max-in-flight", if all_at_once { "100%" } else { "10%" })],
        );
    }
    w.timing.boot = (1, 1);
    w.timing.checks = checks;
    w.timing.visibility_lag = 0;
    Harness::new(w)
}

/// One scan's replacements to the end; returns (replacements completed, calls per function and
/// operation).
fn replace_all(h: &mut Harness) -> (u64, std::collections::BTreeMap<(&'static str, String), u64>) {
    h.scan();
    while h.deliver(SPOT_QUEUE) > 0 {}
    for _ in 0..400 {
        h.advance(10);
        while h.deliver(SWAP_QUEUE) > 0 {}
    }
    let sim = h.sim.lock().unwrap_or_else(|e| e.into_inner());
    let completed = sim
        .calls_by_function
        .get(&("swapper", "autoscaling:TerminateInstanceInAutoScalingGroup".to_string()))
        .copied()
        .unwrap_or(0);
    (completed, sim.calls_by_function.clone())
}

fn print_per_replacement(title: &str, h: &mut Harness, detail: bool) -> f64 {
    let (completed, calls) = replace_all(h);
    let mut total = 0.0;
    println!("   {title}: {completed} replacements");
    for ((function, op), n) in calls.iter().filter(|((f, _), _)| *f != "scanner") {
        let each = *n as f64 / completed.max(1) as f64;
        total += each;
        if detail {
            println!("     {function:<13} {op:<48} {each:>6.2}");
        }
    }
    total
}

/// Section 5: calls per replacement on the simulated account.
fn sim_replacements() {
    println!("\n5. Calls per replacement on the simulated account (spot-creator + swapper, 20 groups x 5)");
    let ready =
        print_per_replacement("copies ready at the first check", &mut sim_account(20, 5, true, (0, 0), true), true);
    row("calls per replacement, ready at once", format!("{ready:.2}"), "<= 8", Some(ready <= 8.0));
    let real = print_per_replacement(
        "status checks taking 2 to 5 minutes",
        &mut sim_account(20, 5, true, (120, 300), true),
        false,
    );
    row("calls per replacement, checks take 2-5 min", format!("{real:.2}"), "", None);
    let full =
        print_per_replacement("groups at desired == MaxSize", &mut sim_account(20, 5, false, (0, 0), true), false);
    row("calls per replacement, desired == MaxSize", format!("{full:.2}"), "", None);
    // Behind one target group whose health checks take 90 s after the attach (the swapper
    // re-reads every 30 s): the health gate's DescribeTargetHealth, and the rounds it waits.
    // One swap per group at a time, so that each replacement's own calls show.
    let mut h = sim_account(20, 5, true, (0, 0), false);
    h.world(|w| {
        let names: Vec<String> = w.groups.keys().cloned().collect();
        for g in names {
            w.add_target_group(&g);
        }
        w.timing.target_healthy = (90, 90);
    });
    let behind = print_per_replacement("behind one target group, healthy 90 s after attach", &mut h, true);
    row("calls per replacement, one target group", format!("{behind:.2}"), "", None);
}

/// Section 6: one scan of a large account on the simulated account.
/// `measured`: the scanner binary's peak RSS (KiB) for one scan of that many instances, from
/// section 4, to size the scanner by.
fn sim_scale(measured: Option<(u64, u64)>) {
    const GROUPS: usize = 1_000;
    const PER_GROUP: i32 = 20;
    let instances = GROUPS as u64 * PER_GROUP as u64;
    println!("\n6. Scale on the simulated account: one scan of {instances} instances in {GROUPS} groups");
    let h = sim_account(GROUPS, PER_GROUP, true, (0, 0), false);
    {
        let mut sim = h.sim.lock().unwrap_or_else(|e| e.into_inner());
        (sim.tracing, sim.checking) = (false, false);
    }
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let cpu = cpu_time();
    let summary = h.scan();
    let cpu = cpu_time() - cpu;
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let sim = h.sim.lock().unwrap_or_else(|e| e.into_inner());
    for (op, n) in &sim.calls {
        println!("     {op:<50} {n:>5}");
    }
    let total: u64 = sim.calls.values().sum();
    let send_bound = (summary.enqueued as u64).div_ceil(10);
    let hook_reads = summary.per_group.iter().filter(|g| !g.candidates.is_empty()).count() as u64;
    let lower = (GROUPS as u64).div_ceil(100) + instances.div_ceil(1000) + 1 + 1 + hook_reads + send_bound;
    let ratio = total as f64 / lower as f64;
    row("all calls / lower bound", format!("{total}/{lower} = {ratio:.2}x"), "<= 1.2x", Some(ratio <= 1.2));
    row("scan: CPU time (debug build; the simulated reads included)", format!("{} ms", cpu.as_millis()), "", None);
    let mib = peak as f64 / (1024.0 * 1024.0);
    row("scan: peak heap of its reads, state and plan", format!("{mib:.1} MiB"), "", None);
    let per_instance_kib = peak as f64 / 1024.0 / instances as f64;
    row("  per instance", format!("{per_instance_kib:.2} KiB"), "", None);
    if let Some((rss_kib, at)) = measured {
        // What the process holds whatever the account's size (runtime, clients, one page of
        // answers), and what it adds per instance, give the largest account 128 MB holds.
        let fixed = rss_kib as f64 - per_instance_kib * at as f64;
        let fits = ((128.0 * 1024.0 - fixed) / per_instance_kib).max(0.0);
        row(
            "scanner fits 128 MB up to (from section 4's RSS)",
            format!("{:.0} instances", (fits / 1000.0).floor() * 1000.0),
            "",
            None,
        );
    }
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--sim-only") {
        sim_replacements();
        sim_scale(None);
        return;
    }
    let instances = GROUPS as u64 * PER_GROUP as u64;
    println!("asg-optimizer benchmark: {GROUPS} opted-in groups x {PER_GROUP} instances = {instances} instances, moto on loopback\n");

    // 1: one scan of the big account, in-process with call counters.
    let moto = Moto::start();
    let started = Instant::now();
    let account = bench_account(&moto, GROUPS, PER_GROUP).await;
    println!("(account created in {:.1?})", started.elapsed());
    let env = environment(&account, &[]);
    let mut p = Pipeline::new(account, &moto.sdk_config(), &env, |cloud| cloud);
    let scan = p.scan().await;
    let describes: u64 = scan.api_calls.iter().filter(|(op, _)| op.contains(":Describe")).map(|(_, n)| n).sum();
    let sends = scan.api_calls.get("sqs:SendMessageBatch").copied().unwrap_or(0);
    let total: u64 = scan.api_calls.values().sum();
    let send_bound = (scan.candidates as u64).div_ceil(10);
    // Lifecycle hooks have no batch read: one per group with work to start (here, every group,
    // on this first scan), none on a scan that starts nothing.
    let hook_reads = scan.per_group.iter().filter(|g| !g.candidates.is_empty()).count() as u64;
    // The bench's groups share one launch template: one read tells what they all launch now.
    let lower = (GROUPS as u64).div_ceil(100) + instances.div_ceil(1000) + 1 + 1 + hook_reads + send_bound;
    println!("1. One scan ({} candidates enqueued)", scan.enqueued);
    for (op, n) in &scan.api_calls {
        println!("     {op:<50} {n:>5}");
    }
    row("describe calls", describes.to_string(), &format!("bound {}", lower - send_bound), None);
    row("  of which lifecycle-hook reads (groups with work)", hook_reads.to_string(), "", None);
    row("send calls", sends.to_string(), &format!("bound {send_bound}"), None);
    let ratio = total as f64 / lower as f64;
    row("all calls / lower bound", format!("{total}/{lower} = {ratio:.2}x"), "<= 1.2x", Some(ratio <= 1.2));
    drop(p);
    drop(moto);

    // 2: 100 replacements. moto slows down with the number of instances it holds (a batch of
    // ten takes minutes at 2,000), so this runs on 20 groups of 5, all replaced at once.
    let moto = Moto::start();
    let account = bench_account(&moto, 20, 5).await;
    let env = environment(&account, &[("MAX_IN_FLIGHT_PERCENT", "100")]);
    let mut p = Pipeline::new(account, &moto.sdk_config(), &env, |cloud| cloud);
    let scan = p.scan().await;
    let scan_calls: u64 = scan.api_calls.values().sum();
    p.drain(Consumer::SpotCreator, Duration::from_secs(600)).await;
    p.drain(Consumer::Swapper, Duration::from_secs(600)).await;
    let completed = p.swapper_completed().await;
    println!("\n2. Replacements: {completed} completed (20 groups x 5 instances, one scan)");
    let mut per_replacement = 0.0;
    for (function, calls) in p.api_calls().into_iter().filter(|(f, _)| *f != "scanner") {
        for (op, c) in &calls {
            let each = *c as f64 / completed as f64;
            per_replacement += each;
            println!("     {function:<13} {op:<48} {each:>6.2} per replacement");
        }
    }
    row(
        "calls per replacement, spot-creator + swapper",
        format!("{per_replacement:.2}"),
        "<= 8",
        Some(per_replacement <= 8.0),
    );
    let with_scan = per_replacement + scan_calls as f64 / completed as f64;
    row("  the same with the scan's share", format!("{with_scan:.2}"), "", None);
    drop(p);
    drop(moto);

    // 3: arm64 release bootstraps.
    println!("\n3. Release bootstraps (arm64)");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for (function, binary) in [
        ("ScannerFunction", "scanner"),
        ("SpotCreatorFunction", "spot-creator"),
        ("SwapperFunction", "swapper"),
        ("InterruptionFunction", "interruption"),
    ] {
        let candidates = [
            root.join(format!(".aws-sam/build/{function}/bootstrap")),
            root.join(format!("target/lambda/{binary}/bootstrap")),
        ];
        match candidates.iter().find_map(|p| Some((p, std::fs::metadata(p).ok()?.len()))) {
            Some((path, bytes)) => {
                let mb = bytes as f64 / 1e6;
                row(
                    &format!("{binary} ({})", path.strip_prefix(&root).unwrap_or(path).display()),
                    format!("{mb:.2} MB"),
                    "< 10 MB",
                    Some(mb < 10.0),
                );
            }
            None => row(binary, "not built".into(), "run make build", None),
        }
    }

    // 4: the binaries under the Runtime API stand-in: the scanner on the big account, the
    // SQS functions on a batch of 10 each (their largest invocation).
    println!("\n4. Function binaries (this machine's debug build) handling their largest invocation");
    let moto = Moto::start();
    let account = bench_account(&moto, GROUPS, PER_GROUP).await;
    let env = environment(&account, &[]);
    let mut p = Pipeline::new(account, &moto.sdk_config(), &env, |cloud| cloud);
    p.use_binaries(&moto.endpoint, &[], &[]).await;
    let cpu = p.binaries.as_ref().map(|b| b.scanner.cpu_time()).unwrap_or_default();
    let wall = Instant::now();
    p.scan().await;
    let wall = wall.elapsed();
    let b = p.binaries.as_ref().expect("binaries");
    let (scan_cpu, scanner_rss) = (b.scanner.cpu_time() - cpu, b.scanner.peak_rss_kib());
    drop(p);
    drop(moto);

    let moto = Moto::start();
    let account = bench_account(&moto, 10, 2).await;
    let env = environment(&account, &[]);
    let mut p = Pipeline::new(account, &moto.sdk_config(), &env, |cloud| cloud);
    p.use_binaries(&moto.endpoint, &[("ReadyCheckDelaySeconds", "1")], &[]).await;
    p.scan().await;
    let created = p.poll(Consumer::SpotCreator).await;
    let mut swapped = 0;
    while swapped == 0 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        swapped = p.poll(Consumer::Swapper).await;
    }
    let b = p.binaries.as_ref().expect("binaries");
    let rows = [
        (format!("scanner: one scan of {instances} instances"), scanner_rss),
        (format!("spot-creator: a batch of {created}"), b.creator.peak_rss_kib()),
        (format!("swapper: a batch of {swapped}"), b.swapper.peak_rss_kib()),
    ];
    for (name, kib) in rows {
        let mb = kib as f64 / 1024.0;
        row(&format!("peak RSS, {name}"), format!("{mb:.1} MiB"), "< 64 MiB", Some(mb < 64.0));
    }
    row("scan: CPU time of the scanner process", format!("{} ms", scan_cpu.as_millis()), "", None);
    row("scan: wall time (emulator included)", format!("{:.1} s", wall.as_secs_f64()), "", None);
    sim_replacements();
    sim_scale(Some((scanner_rss, instances)));
}
