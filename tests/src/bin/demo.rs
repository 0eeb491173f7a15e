//! `make demo`: an emulated account on a local moto server, the whole pipeline run through the
//! functions' real handlers until every opted-in On-Demand instance a reservation does not pay
//! for is replaced by Spot; then a new launch-template version is rolled out. The group `web`
//! sits behind a target group, whose health checks take a while: the swapper waits for them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::account::table;
use e2e::pipeline::{environment, Consumer};
use e2e::{Account, Faults, Faulty, Moto, Pipeline};

#[tokio::main]
async fn main() {
    tracing_init();
    println!("Starting moto on loopback...");
    let moto = Moto::start();
    let sdk = moto.sdk_config();
    let account = Account::create(&sdk).await;
    account.add_group("web", 2, 4, 6, true).await;
    account.add_group("api", 2, 3, 3, true).await; // desired == max: the swap must make room
    account.add_group("reports", 1, 2, 4, false).await; // not opted in: left alone
    let target_group = account.add_target_group("web").await;
    // moto has no Price List API: give the prices, as the PriceTable parameter would. Nor has it
    // DescribeReservedInstances (each scan notes it): declare three m5.large reservations, as
    // DeclaredReservations would. The two instances of `reports` use two of them first.
    let env =
        environment(&account, &[("PRICE_TABLE", "m5.large=0.096:0.0334"), ("DECLARED_RESERVATIONS", "m5.large=3")]);
    // moto calls a registered target `healthy` at once; AWS says `initial` until its health
    // checks pass (5 x 30 s by default). The wrapper says `initial` while the flag is up.
    let faults = Arc::new(Faults::default());
    let f = faults.clone();
    let mut pipeline = Pipeline::new(account, &sdk, &env, move |cloud| Faulty { inner: cloud, faults: f.clone() });
    pipeline.watch().await;

    let before = pipeline.account.groups().await;
    println!("\nBefore (groups web and api carry AsgOptimiser=true; reports does not):\n{}", table(&before));
    // The command line, as a team would run it before deploying: every group, opted in or not.
    command_line(&moto, &env, &["plan", "--all-groups"]);

    faults.targets_initial.store(true, Ordering::SeqCst);
    println!("web is behind target group {target_group}; its health checks have not passed yet for new targets.");
    pipeline.scan().await;
    pipeline.drain(Consumer::SpotCreator, Duration::from_secs(60)).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        pipeline.poll(Consumer::Swapper).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let web = pipeline.account.groups().await.into_iter().find(|g| g.name == "web").expect("web");
    let calls = pipeline.swapper.calls.snapshot();
    let reads: u64 = calls.iter().filter(|(op, _)| op.ends_with(":DescribeTargetHealth")).map(|(_, n)| n).sum();
    println!(
        "web now: {} members, {} InService, {} On-Demand: the copy is attached and InService but `initial` in the \
         target group, so the swapper keeps the On-Demand instance and waits ({reads} health reads so far).",
        web.members.len(),
        web.in_service(),
        web.on_demand().len()
    );
    command_line(&moto, &env, &["status"]);
    faults.targets_initial.store(false, Ordering::SeqCst);
    println!("The copy passes its health checks: the swap goes on.\n");
    let rounds = pipeline.run_until_settled(20).await;
    let after = pipeline.account.groups().await;
    println!("After {rounds} scans:\n{}", table(&after));
    let kept: usize = after.iter().filter(|g| g.name != "reports").map(|g| g.on_demand().len()).sum();
    println!("{kept} On-Demand instance kept in the opted-in groups: the third declared reservation pays for it.\n");

    let (version, ami) = pipeline.account.new_template_version().await;
    println!("Launch template version {version} published (AMI {ami}): rolling it out, 10% of each group at a time...");
    let rollout_rounds = pipeline.run_until_settled(20).await;
    let rolled = pipeline.account.groups().await;
    let mut current = 0;
    for g in rolled.iter().filter(|g| g.name != "reports") {
        for m in &g.members {
            current += usize::from(pipeline.account.instance(&m.id).await.image_id == ami);
        }
    }
    println!("After {rollout_rounds} more scans:\n{}", table(&rolled));
    println!("{current} instances of the opted-in groups run {ami}; reports (not opted in) was left alone.\n");

    println!("Handler invocations: {:?}", pipeline.invocations);
    println!("\nAWS API calls made by the functions, per operation:");
    for (function, calls) in pipeline.api_calls() {
        for (op, n) in calls {
            println!("  {function:<13} {op:<48} {n:>4}");
        }
    }
    let completed = pipeline.swapper_completed().await;
    let calls: u64 = pipeline.api_calls().values().flat_map(|c| c.values()).sum();
    println!(
        "\n{completed} replacements (to Spot, then the rollout); {calls} API calls in all ({:.1} per replacement, scans included)",
        calls as f64 / completed as f64
    );
    let summary = pipeline.scan().await;
    if let Some(s) = &summary.savings {
        println!(
            "{} Spot instances managed, estimated saving {:.4} USD per hour (PriceTable m5.large: 0.096 On-Demand, 0.0334 Spot)",
            summary.spot_managed, s.usd_per_hour
        );
    }
    if !pipeline.violations.is_empty() {
        eprintln!("CAPACITY VIOLATIONS: {:#?}", pipeline.violations);
        std::process::exit(1);
    }
    println!("InService capacity never dropped below its starting value in any group.");
}

/// Logs to stderr at warn (RUST_LOG overrides), so the tables stay readable.
fn tracing_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// `asg-optimizer ARGS` against the emulated account, the binary run as a user runs it (built by
/// `make demo`), with the knobs the functions have.
fn command_line(moto: &Moto, env: &BTreeMap<String, String>, args: &[&str]) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let binary = target.join("debug/asg-optimizer");
    println!("\n$ asg-optimizer {}", args.join(" "));
    let status = Command::new(&binary)
        .args(args)
        .envs(env.iter().filter(|(k, _)| ["PRICE_TABLE", "DECLARED_RESERVATIONS"].contains(&k.as_str())))
        .envs([
            ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ])
        .status();
    match status {
        Ok(s) if s.success() => println!(),
        Ok(s) => println!("(asg-optimizer exited with {s})\n"),
        Err(e) => println!("({} could not run: {e}; `cargo build -p asg-optimizer` builds it)\n", binary.display()),
    }
}
