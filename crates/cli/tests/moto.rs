//! `plan` and `status` against a moto server on loopback: what `plan` lists is what the scanner
//! then enqueues, `status` follows a swap through its stages, neither changes anything, the JSON
//! round-trips, and bad input ends in one clear line.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use asg_core::aws::{ApiCalls, AwsCloud};
use asg_core::config::{Config, Function};
use asg_core::domain::model::Market;
use asg_core::workflows::scan::Scope;
use asg_optimizer::report::{self, PlanReport, Stage, StatusReport, Why};
use e2e::pipeline::{environment, Consumer};
use e2e::{Account, Faults, Faulty, Moto, Pipeline};

const PRICES: &str = "m5.large=0.096:0.035";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The emulated account, the functions wired to it, and the command line's own adapter with its
/// own call counter (moto has no DescribeReservedInstances: the fake answers "none" for both).
struct World {
    _moto: Moto,
    pipeline: Pipeline<Faulty<AwsCloud>>,
    faults: Arc<Faults>,
    cli: Faulty<AwsCloud>,
    calls: ApiCalls,
    config: Config,
}

async fn world(groups: &[(&str, i32, i32, i32, bool)]) -> World {
    let moto = Moto::start();
    let sdk = moto.sdk_config();
    let account = Account::create(&sdk).await;
    for &(name, min, desired, max, opted_in) in groups {
        account.add_group(name, min, desired, max, opted_in).await;
    }
    let env = environment(&account, &[("PRICE_TABLE", PRICES)]);
    let faults = Arc::new(Faults { reservations: Some(Vec::new()).into(), ..Faults::default() });
    let f = faults.clone();
    let mut pipeline = Pipeline::new(account, &sdk, &env, move |cloud| Faulty { inner: cloud, faults: f.clone() });
    pipeline.watch().await;
    let calls = ApiCalls::default();
    let cli = Faulty { inner: AwsCloud::new(&sdk, calls.clone()), faults: faults.clone() };
    let config = Config::from_lookup(Function::Cli, |k| env.get(k).cloned()).expect("valid configuration");
    World { _moto: moto, pipeline, faults, cli, calls, config }
}

/// Every call the command line made only reads.
fn read_only(calls: &ApiCalls) {
    let made = calls.snapshot();
    assert!(!made.is_empty(), "no call recorded");
    for op in made.keys() {
        let name = op.split(':').nth(1).unwrap_or_default();
        assert!(
            ["Describe", "Get", "List"].iter().any(|p| name.starts_with(p)),
            "the command line made a call that is not a read: {op} ({made:?})"
        );
    }
}

fn starts(r: &PlanReport, group: &str) -> BTreeSet<String> {
    let g = r.groups.iter().find(|g| g.name == group).expect("group planned");
    g.start.iter().map(|s| s.instance.clone()).collect()
}

#[tokio::test]
async fn plan_lists_what_the_scanner_then_enqueues_and_changes_nothing() {
    let mut w = world(&[("web", 1, 4, 6, true), ("batch", 0, 2, 4, false)]).await;
    w.pipeline.account.tag_group("web", "asg-optimiser:min-on-demand", "1").await;
    let before = w.pipeline.account.groups().await;

    let plan = report::plan(&w.cli, &w.config, now(), &Scope::OptedIn).await.expect("plan");
    assert_eq!(plan.groups.len(), 1, "only the opted-in group: {plan:#?}");
    let web = &plan.groups[0];
    assert_eq!((web.desired, web.on_demand, web.spot, web.on_demand_floor), (4, 4, 0, 1));
    assert!(web.start.iter().all(|s| s.to == Market::Spot && s.why == Why::Cheaper), "{web:#?}");
    assert_eq!(web.start.len() + web.left_alone.len(), 4, "every instance accounted for: {web:#?}");
    assert!(web.left_alone.iter().any(|l| l.why.contains("floor is 1")), "{web:#?}");
    // 4 x 0.096 now; 3 of them to Spot once the floor of 1 is all that stays On-Demand.
    assert!((web.cost.now.usd_per_hour - 0.384).abs() < 1e-9, "{:?}", web.cost);
    assert!((web.cost.all_spot.usd_per_hour - (0.096 + 3.0 * 0.035)).abs() < 1e-9, "{:?}", web.cost);
    assert!(web.cost.after_plan.usd_per_hour < web.cost.now.usd_per_hour);
    read_only(&w.calls);
    assert_eq!(w.pipeline.account.groups().await, before, "plan changed a group");

    // The scanner, on the same account, enqueues exactly those.
    let summary = w.pipeline.scan().await;
    let scanned = summary.per_group.iter().find(|g| g.name == "web").expect("web scanned");
    assert_eq!(scanned.candidates.iter().cloned().collect::<BTreeSet<_>>(), starts(&plan, "web"));
    assert_eq!(summary.enqueued, web.start.len());

    // --all-groups: the group not opted in, planned as if it were; every group read in one page.
    let before = w.calls.snapshot();
    let all = report::plan(&w.cli, &w.config, now(), &Scope::All).await.expect("plan --all-groups");
    let made = w.calls.since(&before);
    assert_eq!(made.get("autoscaling:DescribeAutoScalingGroups"), Some(&1), "{made:?}");
    assert_eq!(made.get("ec2:DescribeInstances"), Some(&2), "members, then our copies: {made:?}");
    let batch = all.groups.iter().find(|g| g.name == "batch").expect("batch planned");
    assert!(!batch.opted_in && !batch.start.is_empty(), "{batch:#?}");
    assert!(all.totals.cost.all_spot.usd_per_hour < all.totals.cost.now.usd_per_hour);
    read_only(&w.calls);

    // The JSON round-trips, and its top-level shape is the documented one.
    let json = serde_json::to_value(&all).expect("json");
    assert_eq!(serde_json::from_value::<PlanReport>(json.clone()).expect("parses back"), all);
    let keys: Vec<&str> = json.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(keys, ["as_if_opted_in", "generated_at", "groups", "notes", "reserved", "totals", "version"]);
}

#[tokio::test]
async fn status_follows_a_swap_through_its_stages() {
    // At MaxSize: the swap raises it for its copy, and status says so.
    let mut w = world(&[("web", 1, 1, 1, true)]).await;
    w.pipeline.account.add_target_group("web").await;
    w.faults.targets_initial.store(true, Ordering::SeqCst);
    let old = w.pipeline.account.group("web").await.on_demand()[0].to_string();
    let stage = |r: &StatusReport| r.swaps.iter().find(|s| s.instance == old).map(|s| s.stage);

    let idle = report::status(&w.cli, &w.config, now()).await.expect("status");
    assert!(idle.swaps.is_empty(), "{idle:#?}");

    assert_eq!(w.pipeline.scan().await.enqueued, 1);
    let queued = report::status(&w.cli, &w.config, now()).await.expect("status");
    assert_eq!(stage(&queued), Some(Stage::Queued), "{queued:#?}");

    w.pipeline.drain(Consumer::SpotCreator, Duration::from_secs(60)).await;
    let launched = report::status(&w.cli, &w.config, now()).await.expect("status");
    let swap = launched.swaps.iter().find(|s| s.instance == old).expect("the swap is listed");
    assert!(matches!(swap.stage, Stage::Launched | Stage::WaitingForStatusChecks), "{launched:#?}");
    assert!(swap.copy.is_some() && swap.market == Some(Market::Spot) && swap.deadline.is_some(), "{swap:?}");

    // Attached, InService, `initial` behind the target group: waiting for the load balancer.
    let started = std::time::Instant::now();
    while w.pipeline.account.group("web").await.members.len() < 2 {
        w.pipeline.poll(Consumer::Swapper).await;
        assert!(started.elapsed() < Duration::from_secs(60), "the copy was never attached");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let attached = report::status(&w.cli, &w.config, now()).await.expect("status");
    assert_eq!(stage(&attached), Some(Stage::WaitingForTheLoadBalancer), "{attached:#?}");
    assert!(attached.max_raised.iter().any(|m| m.group == "web" && m.from == 1 && m.max == 2), "{attached:#?}");
    let json = serde_json::to_value(&attached).expect("json");
    assert_eq!(serde_json::from_value::<StatusReport>(json).expect("parses back"), attached);

    // Healthy: the swap ends, and status has nothing under way.
    w.faults.targets_initial.store(false, Ordering::SeqCst);
    w.pipeline.drain(Consumer::Swapper, Duration::from_secs(60)).await;
    let done = report::status(&w.cli, &w.config, now()).await.expect("status");
    assert!(done.swaps.is_empty(), "{done:#?}");
    read_only(&w.calls);
    assert!(w.pipeline.violations.is_empty(), "{:#?}", w.pipeline.violations);
}

/// Arguments, environment, and what stderr must say.
type Failing<'a> = (&'a [&'a str], Vec<(&'a str, &'a str)>, &'a str);

/// The binary, as a user runs it: environment only, no inherited AWS settings.
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_asg-optimizer"));
    cmd.args(args).env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd.envs([
        ("AWS_CONFIG_FILE", "/nonexistent/config"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]);
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run asg-optimizer");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_binary_answers_bad_input_with_one_clear_line() {
    let w = world(&[("web", 1, 2, 4, true)]).await;
    w.pipeline.account.tag_group("web", "asg-optimiser:min-on-demand", "lots").await;
    let endpoint = w._moto.endpoint.clone();
    let account = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("PRICE_TABLE", PRICES),
        ("RESERVED_INSTANCES", "disabled"),
    ];

    // Works: a table, the unreadable tag named in the group's notes.
    let (code, out, err) = run(&["plan"], &account);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("GROUP") && out.contains("web"), "{out}");
    assert!(out.contains("asg-optimiser:min-on-demand"), "the unreadable tag is named: {out}");
    assert!(!out.contains('\x1b'), "no colour when not on a terminal: {out}");
    let (code, out, err) = run(&["status", "--json"], &account);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<StatusReport>(&out).expect("status --json parses");
    let (code, out, err) = run(&["plan", "--all-groups", "--json"], &account);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<PlanReport>(&out).expect("plan --json parses");

    let failures: [Failing; 5] = [
        (&["plan", "--group", "nope"], account.to_vec(), "no Auto Scaling group named nope in us-east-1"),
        (
            &["plan"],
            account
                .iter()
                .copied()
                .filter(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"))
                .collect(),
            "no AWS credentials",
        ),
        (&["plan", "--region", "us-east1"], account.to_vec(), "\"us-east1\" is not an AWS Region name"),
        (&["status"], account.iter().copied().filter(|(k, _)| *k != "AWS_REGION").collect(), "no AWS Region"),
        (&["plan", "--opt-in-tag", "novalue"], account.to_vec(), "is not KEY=VALUE"),
    ];
    for (args, env, expected) in failures {
        let (code, out, err) = run(args, &env);
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(err.contains(expected), "{args:?}: {err}");
        if !args.contains(&"--opt-in-tag") {
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        }
    }
    let (code, out, _) = run(&["plan", "--help"], &[]);
    assert!(code == 0 && out.contains("--all-groups"), "{out}");
}
