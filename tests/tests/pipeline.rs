//! The whole pipeline against a moto server each test starts on loopback, through the handlers
//! Lambda runs. Moto cannot make a Spot instance fail its checks, run out of capacity or stop a
//! function mid-swap: those tests inject the fault at the port with `Faulty`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use asg_core::aws::AwsCloud;
use asg_core::cloud::Cloud;
use asg_core::domain::model::{
    Hold, Launch, LaunchResult, Market, Tags, TAG_GROUP, TAG_HOLD, TAG_ORIGINAL_MAX, TAG_REPLACES,
};
use asg_core::domain::pools::TAG_BACKOFF_PREFIX;
use asg_core::domain::reserved::Reservation;
use asg_core::message::{to_body, SwapRequest};
use aws_lambda_events::event::sqs::SqsEvent;
use e2e::pipeline::{environment, Consumer};
use e2e::{Account, Faults, Faulty, Moto, Pipeline};
use lambda_runtime::{Context, LambdaEvent};

async fn start_with<C: Cloud + Clone>(
    overrides: &[(&str, &str)],
    groups: &[(&str, i32, i32, i32, bool)],
    wrap: impl Fn(AwsCloud) -> C,
) -> (Moto, Pipeline<C>) {
    // The functions' log lines, printed with the output of a test that fails.
    let filter = tracing_subscriber::EnvFilter::new("warn,asg_core=info");
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter(filter).try_init();
    let moto = Moto::start();
    let sdk = moto.sdk_config();
    let account = Account::create(&sdk).await;
    for &(name, min, desired, max, opted_in) in groups {
        account.add_group(name, min, desired, max, opted_in).await;
    }
    let env = environment(&account, overrides);
    let mut pipeline = Pipeline::new(account, &sdk, &env, wrap);
    pipeline.watch().await;
    (moto, pipeline)
}

async fn start(overrides: &[(&str, &str)], groups: &[(&str, i32, i32, i32, bool)]) -> (Moto, Pipeline<AwsCloud>) {
    start_with(overrides, groups, |cloud| cloud).await
}

async fn start_faulty(
    overrides: &[(&str, &str)],
    groups: &[(&str, i32, i32, i32, bool)],
) -> (Moto, Pipeline<Faulty<AwsCloud>>, Arc<Faults>) {
    // moto has no DescribeReservedInstances: the fake answers for it, with none by default.
    let faults = Arc::new(Faults { reservations: Some(Vec::new()).into(), ..Faults::default() });
    let f = faults.clone();
    let (moto, pipeline) = start_with(overrides, groups, move |cloud| Faulty { inner: cloud, faults: f.clone() }).await;
    (moto, pipeline, faults)
}

/// A Spot instance launched the way the spot-creator launches one, with the given tags.
async fn launch_spot<C: Cloud>(p: &Pipeline<C>, tags: &[(&str, &str)]) -> String {
    let launch = Launch {
        market: Market::Spot,
        template_id: p.account.template_id.clone(),
        template_version: "$Latest".into(),
        instance_types: vec!["m5.large".into()],
        subnet_id: p.account.subnets[0].clone(),
        tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        client_token: format!("test-{}", tags.len()),
    };
    match p.creator.cloud.launch(&launch).await.expect("launch") {
        LaunchResult::Launched { instance_id, .. } => instance_id,
        other => panic!("moto launched nothing: {other:?}"),
    }
}

fn sqs_event(bodies: &[(&str, &str)]) -> SqsEvent {
    let records: Vec<_> = bodies
        .iter()
        .map(|(id, body)| serde_json::json!({"messageId": id, "body": body, "eventSource": "aws:sqs"}))
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).expect("SQS event")
}

#[tokio::test]
async fn pipeline_replaces_every_opted_in_on_demand_instance_and_leaves_the_untagged_group_alone() {
    // api starts at desired == max: every swap there must make room and put MaxSize back.
    let (_moto, mut p) =
        start(&[], &[("web", 2, 4, 6, true), ("api", 2, 3, 3, true), ("reports", 1, 2, 4, false)]).await;
    let before = p.account.groups().await;
    let mut od_subnets = BTreeMap::new();
    for g in before.iter().filter(|g| g.name != "reports") {
        for id in g.on_demand() {
            od_subnets.insert(id.to_string(), p.account.instance(id).await.subnet);
        }
    }

    let rounds = p.run_until_replaced(20).await;
    let after = p.account.groups().await;

    assert!(p.violations.is_empty(), "{:#?}", p.violations);
    assert!(rounds >= 4, "one replacement in flight per small group at a time, got {rounds} rounds");
    for (b, a) in before.iter().zip(&after) {
        assert_eq!((b.name.as_str(), b.desired, b.min, b.max), (a.name.as_str(), a.desired, a.min, a.max));
        if a.name == "reports" {
            assert_eq!(a, b, "the group without the tag is untouched");
            continue;
        }
        assert!(a.on_demand().is_empty(), "{} still has On-Demand instances: {a:?}", a.name);
        assert_eq!(a.in_service(), a.desired as usize);
        for spot in a.spot() {
            let view = p.account.instance(spot).await;
            let replaced = &view.tags[TAG_REPLACES];
            assert_eq!(view.tags[TAG_GROUP], a.name);
            assert_eq!(view.subnet, od_subnets[replaced], "{spot} launched in its On-Demand instance's subnet");
            assert_eq!(
                view.tags.get("team").map(String::as_str),
                Some("platform"),
                "the instance's own tags are copied"
            );
            assert_eq!(p.account.instance(replaced).await.state, "terminated");
        }
    }
    let stray: Vec<_> = p
        .account
        .spot_ids()
        .await
        .into_keys()
        .filter(|id| !after.iter().any(|g| g.members.iter().any(|m| &m.id == id)))
        .collect();
    assert!(stray.is_empty(), "Spot instances outside any group: {stray:?}");
    let tags = p.account.asg.describe_tags().send().await.expect("tags");
    assert!(!tags.tags().iter().any(|t| t.key() == Some(TAG_ORIGINAL_MAX)), "no group is left marked as raised");
    assert_eq!(p.account.depth(&p.account.spot_dlq).await + p.account.depth(&p.account.swap_dlq).await, 0);
}

#[tokio::test]
async fn every_message_delivered_twice_still_yields_one_spot_instance_per_on_demand_instance() {
    let (_moto, mut p) =
        start(&[("MAX_IN_FLIGHT_PERCENT", "50")], &[("web", 1, 4, 5, true), ("api", 1, 2, 2, true)]).await;
    p.duplicate_delivery = true;
    let before = p.account.groups().await;
    p.run_until_replaced(20).await;
    let after = p.account.groups().await;

    assert!(p.violations.is_empty(), "{:#?}", p.violations);
    let spots: Vec<_> = p.account.instances().await.into_iter().filter(|(_, (_, spot))| *spot).collect();
    assert_eq!(spots.len(), 6, "exactly one Spot instance ever launched per On-Demand instance: {spots:?}");
    assert!(spots.iter().all(|(_, (state, _))| state == "running"));
    for (b, a) in before.iter().zip(&after) {
        assert_eq!((b.desired, b.min, b.max), (a.desired, a.min, a.max), "{}", a.name);
        assert_eq!(a.spot().len(), b.members.len());
    }
}

#[tokio::test]
async fn malformed_messages_fail_alone_and_reach_the_dead_letter_queue() {
    let (_moto, mut p) = start(&[], &[("web", 1, 2, 4, true)]).await;
    let bad = [
        "this is not json",
        r#"{"v":9,"group":"web","on_demand":"i-0123456789abcdef0","claim":1}"#,
        r#"{"v":1,"group":"web","on_demand":"i-0123456789abcdef0","claim":1}"#,
    ];
    for (n, body) in bad.iter().enumerate() {
        p.account.send(&p.account.spot_queue.clone(), body, Some(&format!("bad-{n}"))).await;
    }
    p.account.send(&p.account.swap_queue.clone(), r#"{"v":1}"#, None).await;

    p.run_until_replaced(10).await;

    let mut dead = p.account.drain_dlq(&p.account.spot_dlq.clone()).await;
    dead.sort();
    let mut expected: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(dead, expected, "each bad message, and only those, is dead-lettered");
    assert_eq!(p.account.drain_dlq(&p.account.swap_dlq.clone()).await, [r#"{"v":1}"#]);
    assert!(p.account.group("web").await.on_demand().is_empty(), "the good messages in the same batches went through");
    assert!(p.violations.is_empty(), "{:#?}", p.violations);

    // In one batch, in-process: only the bad records are reported as failed.
    let web = p.account.group("web").await;
    let event = sqs_event(&[
        ("a", bad[0]),
        ("b", bad[1]),
        ("c", r#"{"v":1,"group":"web","on_demand":"i-00000000000000001","claim":1}"#),
    ]);
    let response = p.invoke(Consumer::SpotCreator, event).await;
    let failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed.len(), 3);
    assert_eq!(p.account.group("web").await, web);
}

#[tokio::test]
async fn forged_swap_messages_change_nothing() {
    let (_moto, mut p) = start(&[], &[("web", 1, 2, 4, true), ("reports", 1, 2, 4, false)]).await;
    let web = p.account.group("web").await;
    let reports = p.account.group("reports").await;
    let intruder = launch_spot(&p, &[("Name", "not ours")]).await;
    let ours_for_other = launch_spot(&p, &[(TAG_GROUP, "web"), (TAG_REPLACES, web.members[0].id.as_str())]).await;
    let forged = [
        SwapRequest::new("reports", &reports.members[0].id, &reports.members[1].id, Market::Spot),
        SwapRequest::new("reports", &reports.members[0].id, &ours_for_other, Market::Spot),
        SwapRequest::new("web", &web.members[1].id, &intruder, Market::Spot),
        SwapRequest::new("web", &web.members[1].id, &ours_for_other, Market::Spot),
        SwapRequest::new("web", &web.members[0].id, "i-0123456789abcdef0", Market::Spot),
    ];
    let before = (p.account.groups().await, p.account.instances().await);
    for f in &forged {
        p.account.send(&p.account.swap_queue.clone(), &to_body(f), None).await;
    }
    p.drain(Consumer::Swapper, Duration::from_secs(60)).await;

    assert_eq!((p.account.groups().await, p.account.instances().await), before, "nothing changed");
    assert_eq!(p.account.drain_dlq(&p.account.swap_dlq.clone()).await.len(), forged.len());
    let mutating: Vec<_> = p
        .swapper
        .calls
        .snapshot()
        .into_keys()
        .filter(|op| !op.contains(":Describe") && !op.starts_with("sqs:"))
        .collect();
    assert!(mutating.is_empty(), "the swapper made mutating calls: {mutating:?}");
}

#[tokio::test]
async fn a_spot_instance_that_never_becomes_ready_is_terminated_and_its_on_demand_instance_kept() {
    let (_moto, mut p, faults) = start_faulty(
        // Checks every 1 s; 8 s leaves room for several before the deadline on a loaded machine.
        &[("READY_DEADLINE_SECONDS", "8"), ("ORPHAN_DEADLINE_SECONDS", "600")],
        &[("web", 1, 2, 4, true)],
    )
    .await;
    faults.never_ready.store(true, Ordering::SeqCst);
    let before = p.account.group("web").await;

    let summary = p.round().await;
    assert_eq!(summary.enqueued, 1);
    let chosen = &summary.per_group[0].candidates[0];

    assert_eq!(p.account.group("web").await, before, "the group is as it was");
    let spots: Vec<_> = p.account.instances().await.into_iter().filter(|(_, (_, spot))| *spot).collect();
    assert_eq!(spots.len(), 1);
    assert!(matches!(spots[0].1 .0.as_str(), "terminated" | "shutting-down"), "{spots:?}");
    let hold = p.account.instance(chosen).await.tags.get(TAG_HOLD).and_then(|h| Hold::parse(h));
    assert!(matches!(hold, Some(Hold::Skip { .. })), "the On-Demand instance is set aside: {hold:?}");
    let resent = p.swapper.calls.snapshot().get("sqs:SendMessageBatch").copied().unwrap_or(0);
    assert!(resent >= 1, "it waited by re-enqueueing before giving up");

    let next = p.scan().await;
    assert!(!next.per_group[0].candidates.contains(chosen), "not retried straight away");
    assert!(p.violations.is_empty(), "{:#?}", p.violations);
}

#[tokio::test]
async fn no_spot_capacity_keeps_the_on_demand_instance_without_retrying_in_a_loop() {
    let (_moto, mut p, faults) = start_faulty(&[], &[("web", 1, 2, 4, true)]).await;
    faults.no_capacity.store(true, Ordering::SeqCst);
    let before = p.account.group("web").await;

    let first = p.round().await;
    let chosen = first.per_group[0].candidates[0].clone();
    let second = p.round().await;

    assert_eq!(p.account.group("web").await, before);
    assert!(p.account.spot_ids().await.is_empty());
    assert!(!second.per_group[0].candidates.contains(&chosen), "set aside after the failure");
    assert_eq!(p.creator.calls.snapshot().get("ec2:CreateFleet"), None, "the fault answered before any call");
    assert_eq!(p.account.depth(&p.account.spot_dlq).await, 0, "no capacity is an outcome, not an error to retry");
}

#[tokio::test]
async fn orphaned_spot_instances_are_terminated_by_the_scanner() {
    let (_moto, mut p) = start(&[], &[("web", 1, 2, 4, true)]).await;
    let web = p.account.group("web").await;
    let od = web.members[0].id.clone();
    let gone_od = launch_spot(&p, &[(TAG_GROUP, "web"), (TAG_REPLACES, "i-0000000000000dead")]).await;
    let gone_group = launch_spot(&p, &[(TAG_GROUP, "deleted-group"), (TAG_REPLACES, od.as_str())]).await;
    let in_flight = launch_spot(&p, &[(TAG_GROUP, "web"), (TAG_REPLACES, od.as_str()), ("x", "y")]).await;
    let not_ours = launch_spot(&p, &[("Name", "someone else's")]).await;

    let summary = p.scan().await;

    assert_eq!(summary.cleaned_up, 2, "{summary:?}");
    for id in [&gone_od, &gone_group] {
        assert!(matches!(p.account.instance(id).await.state.as_str(), "terminated" | "shutting-down"), "{id}");
    }
    for id in [&in_flight, &not_ours] {
        assert_eq!(p.account.instance(id).await.state, "running", "{id}");
    }
    assert_eq!(summary.in_flight, 1, "a young unattached copy is a replacement in flight");
    assert_eq!(summary.enqueued, 0, "the group's one slot is taken by it");
}

#[tokio::test]
async fn the_scan_stays_within_its_api_budget_for_fifty_groups() {
    let groups: Vec<(String, bool)> = (0..55).map(|n| (format!("group-{n:02}"), n < 50)).collect();
    let spec: Vec<(&str, i32, i32, i32, bool)> =
        groups.iter().map(|(name, opt)| (name.as_str(), 1, 2, 3, *opt)).collect();
    let (_moto, mut p) = start(&[], &spec).await;
    let (g, n) = (50u64, 100u64);

    let summary = p.scan().await;

    let calls = &summary.api_calls;
    // Lifecycle hooks have no batch read: one per group with work to start, none otherwise.
    let hooks = calls.get("autoscaling:DescribeLifecycleHooks").copied().unwrap_or(0);
    let starting = summary.per_group.iter().filter(|g| !g.candidates.is_empty()).count() as u64;
    assert_eq!(hooks, starting, "one hook read per group with work to start");
    let describes: u64 = calls
        .iter()
        .filter(|(op, _)| op.contains(":Describe") && !op.ends_with("DescribeLifecycleHooks"))
        .map(|(_, n)| n)
        .sum();
    // + 1 DescribeLaunchTemplateVersions (the groups' one template, for the rollout) and
    // + 1 DescribeReservedInstances (which moto answers with a 500: no coverage this scan).
    let budget = g.div_ceil(100) + n.div_ceil(1000) + 3 + 2;
    assert!(
        describes <= budget,
        "{describes} describe calls for {g} groups of {n} instances, budget {budget}: {calls:?}"
    );
    assert_eq!(summary.enqueued, 50);
    assert_eq!(calls["sqs:SendMessageBatch"], 50u64.div_ceil(10));
    assert_eq!(calls.get("ec2:CreateTags"), Some(&1));

    let again = p.scan().await;
    assert_eq!((again.enqueued, again.in_flight), (0, 50), "claimed instances are not enqueued twice");
    assert_eq!(again.api_calls.get("autoscaling:DescribeLifecycleHooks"), None, "no work to start, no hook read");
}

#[tokio::test]
async fn overlapping_scans_enqueue_each_instance_once() {
    let (_moto, mut p) = start(&[("MAX_IN_FLIGHT_PERCENT", "50")], &[("web", 1, 4, 6, true)]).await;
    let event = || LambdaEvent::new(serde_json::json!({}), Context::default());
    let (a, b) = tokio::join!(scanner::handler(&p.scanner, event()), scanner::handler(&p.scanner, event()));
    let (a, b) = (a.expect("scan a"), b.expect("scan b"));
    assert_eq!(a.candidates + b.candidates, 4, "both scans read before either claimed: they really overlapped");
    assert_eq!(p.account.depth(&p.account.spot_queue).await, 2, "the queue holds each instance once");

    p.drain(Consumer::SpotCreator, Duration::from_secs(60)).await;
    let spots = p.account.spot_ids().await;
    assert_eq!(spots.len(), 2, "the limit of 2 in flight held across both scans: {spots:?}");
    let mut replaced = std::collections::BTreeSet::new();
    for id in spots.keys() {
        replaced.insert(p.account.instance(id).await.tags[TAG_REPLACES].clone());
    }
    assert_eq!(replaced.len(), 2, "two different On-Demand instances");
}

#[tokio::test]
async fn a_swap_interrupted_after_attach_resumes_and_puts_max_size_back() {
    let (_moto, mut p, faults) = start_faulty(&[], &[("api", 1, 2, 2, true)]).await;
    let before = p.account.group("api").await;
    faults.fail_retire.store(true, Ordering::SeqCst);
    p.scan().await;
    p.drain(Consumer::SpotCreator, Duration::from_secs(30)).await;
    while p.poll(Consumer::Swapper).await == 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mid = p.account.group("api").await;
    assert_eq!((mid.desired, mid.max, mid.members.len()), (3, 3, 3), "attached with MaxSize raised, On-Demand kept");

    // A scan meanwhile must not put MaxSize back under the attached instance.
    let summary = p.scan().await;
    assert_eq!(summary.repaired, 0);
    assert_eq!(p.account.group("api").await.max, 3);

    faults.fail_retire.store(false, Ordering::SeqCst);
    p.drain(Consumer::Swapper, Duration::from_secs(30)).await;
    let after = p.account.group("api").await;
    assert_eq!((after.desired, after.min, after.max), (before.desired, before.min, before.max));
    assert_eq!((after.spot().len(), after.on_demand().len()), (1, 1));
    assert!(p.violations.is_empty(), "{:#?}", p.violations);
}

#[tokio::test]
async fn a_max_size_left_raised_by_a_crash_is_repaired_by_the_next_scan() {
    let (_moto, mut p) = start(&[], &[("api", 1, 2, 2, true)]).await;
    let crashed = p.swapper.cloud.clone();
    crashed.tag_group("api", &Tags::from([(TAG_ORIGINAL_MAX.into(), "2".into())])).await.expect("tag");
    crashed.set_max_size("api", 3).await.expect("raise");

    let summary = p.scan().await;

    assert_eq!(summary.repaired, 1);
    let api = p.account.group("api").await;
    assert_eq!((api.desired, api.max), (2, 2));
    let tags = p.account.asg.describe_tags().send().await.expect("tags");
    assert!(!tags.tags().iter().any(|t| t.key() == Some(TAG_ORIGINAL_MAX)));
}

#[tokio::test]
async fn the_sample_events_drive_each_handler() {
    let (_moto, mut p) = start(&[], &[("web", 1, 1, 2, true)]).await;
    let read =
        |name: &str| std::fs::read_to_string(format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"))).expect(name);

    let scheduled: serde_json::Value = serde_json::from_str(&read("scanner-scheduled.json")).expect("JSON");
    let summary = scanner::handler(&p.scanner, LambdaEvent::new(scheduled, Context::default())).await.expect("scan");
    assert_eq!(summary.groups, 1);

    // The samples name instances that do not exist here: each record fails alone, by its id.
    for (file, consumer, id) in [
        ("spot-creator-sqs.json", Consumer::SpotCreator, "2e1424d4-f796-459a-8184-9c92662be6da"),
        ("swapper-sqs.json", Consumer::Swapper, "059f36b4-87a3-44ab-83d2-661975830a7d"),
    ] {
        let event: SqsEvent = serde_json::from_str(&read(file)).expect(file);
        let response = p.invoke(consumer, event).await;
        let failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        assert_eq!(failed, [id], "{file}");
    }
    // The EventBridge samples name an instance that does not exist here: a final "ignored".
    for file in ["spot-interruption-warning.json", "rebalance-recommendation.json"] {
        let event: serde_json::Value = serde_json::from_str(&read(file)).expect(file);
        let answer = p.interrupt(event).await.expect(file);
        assert!(answer["outcome"].as_str().unwrap().contains("does not exist"), "{file}: {answer}");
    }
}

#[tokio::test]
async fn the_function_binaries_run_the_pipeline_under_the_lambda_runtime_api_wired_by_the_template() {
    let (moto, mut p) = start(&[], &[("web", 1, 2, 4, true), ("reports", 1, 1, 2, false)]).await;
    p.use_binaries(&moto.endpoint, &[("ReadyCheckDelaySeconds", "1"), ("MaxInFlightPercent", "100")], &[]).await;
    let reports = p.account.group("reports").await;

    p.run_until_replaced(5).await;

    let web = p.account.group("web").await;
    assert_eq!((web.spot().len(), web.on_demand().len(), web.desired, web.max), (2, 0, 2, 4));
    assert_eq!(p.account.group("reports").await, reports);
    assert!(p.violations.is_empty(), "{:#?}", p.violations);
    let logs = p.binaries.as_ref().expect("binaries").scanner.logs();
    let line =
        logs.lines().find(|l| l.contains("scan complete")).unwrap_or_else(|| panic!("no summary line in {logs}"));
    let json: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    assert_eq!(json["fields"]["groups"], 1, "{json}");

    // Each function wrote valid EMF documents; the counts add up to what happened.
    let b = p.binaries.as_ref().expect("binaries");
    assert!(emf_total(&b.scanner.logs(), "scanner", "ReplacementsStarted") >= 2.0);
    assert_eq!(emf_total(&b.creator.logs(), "spot-creator", "SpotInstancesLaunched"), 2.0);
    assert_eq!(emf_total(&b.swapper.logs(), "swapper", "ReplacementsCompleted"), 2.0);
    assert_eq!(emf_total(&b.swapper.logs(), "swapper", "ReplacementsFailed"), 0.0);

    // The interruption handler, wired by the template too: a warning for one of the Spot
    // instances takes it out of the group, which replaces it at once.
    let victim = web.spot()[0].to_string();
    let mut warning: serde_json::Value =
        serde_json::from_str(include_str!("../../events/spot-interruption-warning.json")).unwrap();
    warning["detail"]["instance-id"] = victim.clone().into();
    let answer = p.interrupt(warning).await.expect("handled");
    assert!(answer["outcome"].as_str().unwrap().contains("detached"), "{answer}");
    let web = p.account.group("web").await;
    assert!(!web.members.iter().any(|m| m.id == victim) && web.in_service() == 2, "{web:?}");
    let b = p.binaries.as_ref().expect("binaries");
    assert_eq!(emf_total(&b.interruption.logs(), "interruption", "InterruptionsHandled"), 1.0);
    assert_eq!(emf_total(&b.interruption.logs(), "interruption", "PoolsBackedOff"), 1.0);
}

/// Checks every EMF document in a function's output and sums one metric over them.
fn emf_total(logs: &str, function: &str, metric: &str) -> f64 {
    let docs: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|d| d.get("_aws").is_some())
        .collect();
    assert!(!docs.is_empty(), "{function} wrote no EMF document:\n{logs}");
    let mut total = 0.0;
    for doc in &docs {
        assert!(doc["_aws"]["Timestamp"].as_i64().is_some_and(|t| t > 1_600_000_000_000), "{doc}");
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "AsgOptimizer", "{doc}");
        assert_eq!(directive["Dimensions"], serde_json::json!([["Function"]]), "{doc}");
        assert_eq!(doc["Function"], function, "{doc}");
        for definition in directive["Metrics"].as_array().expect("metric definitions") {
            let name = definition["Name"].as_str().expect("a metric name");
            assert!(doc[name].is_number(), "{name} declared but not a number in {doc}");
            assert!(matches!(definition["Unit"].as_str(), Some("Count" | "None")), "{doc}");
        }
        total += doc[metric].as_f64().unwrap_or(0.0);
    }
    total
}

#[tokio::test]
async fn savings_are_estimated_with_prices_looked_up_once_and_cached() {
    let groups = [("a", 1, 2, 4, true), ("b", 1, 2, 4, true), ("c", 1, 2, 4, true)];
    let (moto, mut p) = start(&[], &groups).await;
    let prices = e2e::pricelist::FakePriceList::start([("m5.large".to_string(), 0.096)].into()).await;
    let params = [("ReadyCheckDelaySeconds", "1"), ("MaxInFlightPercent", "100")];
    p.use_binaries(&moto.endpoint, &params, &[("AWS_ENDPOINT_URL_PRICING", prices.endpoint.as_str())]).await;
    p.run_until_replaced(5).await;
    assert_eq!(prices.requests(), 1, "one On-Demand price lookup for one instance type, however many groups");

    for _ in 0..2 {
        let summary = p.scan().await;
        assert_eq!(summary.spot_managed, 6);
        let savings = summary.savings.expect("an estimate");
        assert_eq!((savings.priced, savings.unpriced), (6, 0));
        // moto quotes every Spot pool at 0.00001 USD.
        assert!((savings.usd_per_hour - 6.0 * (0.096 - 0.00001)).abs() < 1e-6, "{savings:?}");
        assert_eq!(summary.api_calls.get("ec2:DescribeSpotPriceHistory"), Some(&1), "{:?}", summary.api_calls);
        assert_eq!(summary.api_calls.get("pricing:GetProducts"), None, "cached across scans");
    }
    assert_eq!(prices.requests(), 1);
    let logs = p.binaries.as_ref().expect("binaries").scanner.logs();
    let last = logs.lines().rfind(|l| l.contains("EstimatedHourlySavingsUSD")).expect("savings metric");
    let doc: serde_json::Value = serde_json::from_str(last).expect("EMF");
    assert!((doc["EstimatedHourlySavingsUSD"].as_f64().unwrap() - 6.0 * (0.096 - 0.00001)).abs() < 1e-6);
    assert_eq!(doc["SpotInstancesManaged"], 6.0);
}

#[tokio::test]
async fn a_fixed_price_table_replaces_the_price_lookups() {
    let (_moto, mut p) = start(&[("PRICE_TABLE", "m5.large=0.10:0.04")], &[("web", 1, 2, 4, true)]).await;
    p.run_until_replaced(5).await;
    let summary = p.scan().await;
    let savings = summary.savings.expect("an estimate");
    assert!((savings.usd_per_hour - 2.0 * 0.06).abs() < 1e-9, "{savings:?}");
    assert!(
        !summary.api_calls.keys().any(|op| op.contains("Price") || op.starts_with("pricing:")),
        "{:?}",
        summary.api_calls
    );
}

#[tokio::test]
async fn a_binary_without_its_configuration_refuses_to_start_and_says_why() {
    let dir = e2e::runtime::build_binaries();
    let out = std::process::Command::new(dir.join("scanner"))
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .env("SWAPPER_QUEUE_URL", "http://127.0.0.1:9/queue/swap")
        .output()
        .expect("run scanner");
    assert!(!out.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("SPOT_CREATOR_QUEUE_URL"), "{text}");
}

/// AWS calls that change something, per function, leaving out reads.
fn mutating_calls<C: Cloud + Clone>(p: &Pipeline<C>) -> Vec<String> {
    let read = |op: &str| {
        let name = op.split(':').nth(1).unwrap_or_default();
        ["Describe", "Get", "List"].iter().any(|prefix| name.starts_with(prefix))
    };
    p.api_calls()
        .into_iter()
        .flat_map(|(f, calls)| calls.into_keys().filter(|op| !read(op)).map(move |op| format!("{f}: {op}")))
        .collect()
}

#[tokio::test]
async fn spot_copies_come_from_diversified_compatible_pools_that_skip_empty_and_denied_ones() {
    let (_moto, mut p, faults) =
        start_faulty(&[("MAX_IN_FLIGHT_PERCENT", "100")], &[("web", 1, 2, 4, true), ("api", 1, 2, 4, true)]).await;
    // m5.large pools are empty; "api" denies the m5a family.
    faults.empty_types.lock().unwrap().insert("m5.large".into());
    p.account.tag_group("api", "asg-optimiser:denied-types", "m5a*").await;
    // One at a time in "web", so that each launch there sees what the previous one learnt.
    p.account.tag_group("web", "asg-optimiser:max-in-flight", "1").await;

    p.run_until_replaced(5).await;

    let types = |names: Vec<String>| {
        let cloud = p.creator.cloud.inner.clone();
        async move { cloud.instance_types(&asg_core::cloud::TypeQuery::Named(names)).await.expect("types") }
    };
    let original = types(vec!["m5.large".into()]).await.pop().expect("m5.large is known");
    let launches = faults.launches.lock().unwrap().clone();
    assert_eq!(launches.len(), 4, "one launch per On-Demand instance");
    let mut seen = std::collections::BTreeSet::new();
    for l in &launches {
        assert_eq!(l.market, Market::Spot);
        assert!(l.instance_types.len() > 3, "several pools offered: {:?}", l.instance_types);
        // The original type comes first; in "web", once its pool in a zone came back empty, it
        // is backed off there and no longer offered.
        let group = l.tags.iter().find(|(k, _)| k == TAG_GROUP).map(|(_, v)| v.clone()).expect("group tag");
        let first = seen.insert((group.clone(), l.subnet_id.clone()));
        let offered = l.instance_types.iter().position(|t| t == "m5.large");
        if group == "web" {
            assert_eq!(offered, first.then_some(0), "{:?}", l.instance_types);
        } else {
            assert!(matches!(offered, Some(0) | None), "{:?}", l.instance_types);
        }
        let infos = types(l.instance_types.clone()).await;
        for t in &infos {
            assert!(t.spot && t.vcpus >= original.vcpus && t.memory_mib >= original.memory_mib, "{t:?}");
            assert!(t.vcpus <= 2 * original.vcpus && t.memory_mib <= 2 * original.memory_mib, "{t:?}");
            assert!(!t.burstable && t.architectures.contains(&"x86_64".to_string()), "{t:?}");
        }
    }
    for g in ["web", "api"] {
        let group = p.account.group(g).await;
        for spot in group.spot() {
            let view = p.account.instance(spot).await;
            assert_ne!(view.instance_type, "m5.large", "the empty pool was not used");
            if g == "api" {
                assert!(!view.instance_type.starts_with("m5a"), "denied by the group's policy: {}", view.instance_type);
            }
        }
        // The empty pool is backed off in the group's tags, per zone it was tried in.
        let tags = p.account.group_tags(g).await;
        let backoffs: Vec<_> = tags.iter().filter(|(k, _)| k.starts_with(TAG_BACKOFF_PREFIX)).collect();
        assert!(!backoffs.is_empty() && backoffs.iter().all(|(_, v)| v.starts_with("m5.large=")), "{tags:?}");
    }
    assert!(p.violations.is_empty(), "{:#?}", p.violations);
}

#[tokio::test]
async fn no_capacity_in_any_pool_backs_the_zone_off_and_the_scanner_says_so() {
    // RETRY_AFTER_FAILURE_SECONDS=0: only the backoff keeps the instance from being retried.
    let (_moto, mut p, faults) = start_faulty(&[("RETRY_AFTER_FAILURE_SECONDS", "0")], &[("web", 1, 1, 2, true)]).await;
    faults.no_capacity.store(true, Ordering::SeqCst);
    let before = p.account.group("web").await;
    let od = before.members[0].id.clone();
    let az = p.account.instance(&od).await.az;

    let first = p.round().await;
    assert_eq!(first.enqueued, 1);
    let tags = p.account.group_tags("web").await;
    assert!(tags[&format!("{TAG_BACKOFF_PREFIX}{az}")].starts_with("*="), "{tags:?}");

    faults.no_capacity.store(false, Ordering::SeqCst);
    let second = p.round().await;
    assert_eq!((second.enqueued, second.held_back, second.pools_backed_off), (0, 1, 1), "{second:?}");
    assert!(second.notes.iter().any(|n| n.contains("backed off")), "{:?}", second.notes);
    assert_eq!(p.account.group("web").await, before, "the On-Demand instance stays");
    assert_eq!(faults.launches.lock().unwrap().len(), 1, "no launch while the zone is backed off");
}

#[tokio::test]
async fn an_interruption_warning_hands_the_spot_instance_back_and_capacity_returns_before_it_dies() {
    let (_moto, mut p) =
        start(&[("MAX_IN_FLIGHT_PERCENT", "100")], &[("web", 1, 2, 4, true), ("hooked", 1, 2, 4, true)]).await;
    p.account
        .asg
        .put_lifecycle_hook()
        .auto_scaling_group_name("hooked")
        .lifecycle_hook_name("drain")
        .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
        .send()
        .await
        .expect("hook");
    p.run_until_replaced(5).await;
    let warning = |id: &str| {
        let mut e: serde_json::Value =
            serde_json::from_str(include_str!("../../events/spot-interruption-warning.json")).unwrap();
        e["detail"]["instance-id"] = id.into();
        e
    };

    // Not ours, or not there: nothing changes.
    let od_elsewhere = launch_spot(&p, &[("Name", "someone else's")]).await;
    let before = (p.account.groups().await, p.account.instances().await);
    for id in [od_elsewhere.as_str(), "i-0123456789abcdef0"] {
        let answer = p.interrupt(warning(id)).await.expect("handled");
        assert!(answer["outcome"].as_str().unwrap().starts_with("ignored"), "{answer}");
    }
    let garbage =
        serde_json::json!({"source": "aws.ec2", "detail-type": "EC2 Spot Instance Interruption Warning", "detail": {}});
    assert!(p.interrupt(garbage).await.expect("handled")["outcome"].as_str().unwrap().starts_with("ignored"));
    assert_eq!((p.account.groups().await, p.account.instances().await), before);
    let interruption: Vec<_> = mutating_calls(&p).into_iter().filter(|c| c.starts_with("interruption")).collect();
    assert!(interruption.is_empty(), "{interruption:?}");

    // A rebalance recommendation (default action): pool backed off, instance stays.
    let web = p.account.group("web").await;
    let victim = web.spot()[0].to_string();
    let view = p.account.instance(&victim).await;
    let mut rebalance: serde_json::Value =
        serde_json::from_str(include_str!("../../events/rebalance-recommendation.json")).unwrap();
    rebalance["detail"]["instance-id"] = victim.clone().into();
    p.interrupt(rebalance).await.expect("handled");
    assert!(p.account.group("web").await.members.iter().any(|m| m.id == victim));
    let backoff = p.account.group_tags("web").await[&format!("{TAG_BACKOFF_PREFIX}{}", view.az)].clone();
    assert!(backoff.starts_with(&format!("{}=", view.instance_type)), "{backoff}");

    // The warning: out of the group at once, replaced by the group while still running.
    let answer = p.interrupt(warning(&victim)).await.expect("handled");
    assert!(answer["outcome"].as_str().unwrap().contains("detached"), "{answer}");
    let web = p.account.group("web").await;
    assert!(!web.members.iter().any(|m| m.id == victim), "{web:?}");
    assert_eq!(p.account.instance(&victim).await.state, "running", "it has not died yet");
    assert_eq!(web.in_service(), web.desired as usize, "capacity is back before the instance dies");
    assert_eq!(web.on_demand().len(), 1, "the group launched its own On-Demand replacement");
    let survivors: Vec<String> = web.spot().iter().map(|s| s.to_string()).collect();
    // A duplicate delivery of the same warning changes nothing more.
    p.interrupt(warning(&victim)).await.expect("handled");
    assert_eq!(p.account.group("web").await, web);
    assert_eq!(p.account.instance(&victim).await.state, "running", "left to drain, not cut short");

    // With a termination hook, through the group so that the hook (draining) runs.
    let hooked = p.account.group("hooked").await;
    let answer = p.interrupt(warning(hooked.spot()[0])).await.expect("handled");
    assert!(answer["outcome"].as_str().unwrap().contains("termination hook"), "{answer}");
    let calls = p.interruption.calls.snapshot();
    assert_eq!(calls.get("autoscaling:TerminateInstanceInAutoScalingGroup"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("autoscaling:DetachInstances"), Some(&1), "{calls:?}");
    let hooked = p.account.group("hooked").await;
    assert_eq!(hooked.in_service(), hooked.desired as usize);

    // The next scan terminates the detached instance; later rounds put Spot back, avoiding the
    // backed-off pool in its zone.
    let summary = p.scan().await;
    assert_eq!(summary.cleaned_up, 1, "{summary:?}");
    assert!(matches!(p.account.instance(&victim).await.state.as_str(), "terminated" | "shutting-down"));
    p.run_until_replaced(5).await;
    for g in ["web", "hooked"] {
        let group = p.account.group(g).await;
        assert_eq!(group.spot().len(), 2, "{group:?}");
    }
    let web = p.account.group("web").await;
    for spot in web.spot().into_iter().filter(|s| !survivors.iter().any(|v| v == s)) {
        let v = p.account.instance(spot).await;
        assert!(v.az != view.az || v.instance_type != view.instance_type, "the interrupted pool was avoided: {v:?}");
    }
    assert!(p.violations.is_empty(), "{:#?}", p.violations);
}

#[tokio::test]
async fn dry_run_logs_every_decision_and_makes_no_mutating_call_at_all() {
    let (_moto, mut p) = start(&[("DRY_RUN", "true")], &[("web", 1, 3, 4, true)]).await;
    // A leftover copy of ours that a normal scan would terminate as an orphan.
    let orphan = launch_spot(&p, &[(TAG_GROUP, "web"), (TAG_REPLACES, "i-0000000000000dead")]).await;
    let creator_calls = p.creator.calls.snapshot();
    let before = (p.account.groups().await, p.account.instances().await);

    let summary = p.round().await;
    let again = p.round().await;

    assert_eq!((summary.dry_run_groups, summary.enqueued, summary.cleaned_up), (1, 0, 0), "{summary:?}");
    assert_eq!(summary.per_group[0].candidates.len(), 1, "what it would replace is reported");
    assert!(summary.notes.iter().any(|n| n.contains("would terminate orphan")), "{:?}", summary.notes);
    assert_eq!(again.per_group[0].candidates, summary.per_group[0].candidates);
    assert_eq!((p.account.groups().await, p.account.instances().await), before, "nothing changed");
    assert_eq!(p.account.instance(&orphan).await.state, "running");
    assert_eq!(p.creator.calls.snapshot(), creator_calls, "nothing was enqueued");
    // The launch of the leftover above went through the spot-creator's adapter: discount it.
    let mutating: Vec<_> =
        mutating_calls(&p).into_iter().filter(|c| !c.starts_with("spot-creator: ec2:CreateFleet")).collect();
    assert!(mutating.is_empty(), "{mutating:?}");

    // A group tag turns one group on while the default stays dry-run.
    p.account.tag_group("web", "asg-optimiser:mode", "enabled").await;
    assert_eq!(p.scan().await.enqueued, 1);
}

#[tokio::test]
async fn the_on_demand_floor_holds_both_ways_through_the_same_safe_swap() {
    let (_moto, mut p) = start(&[("MAX_IN_FLIGHT_PERCENT", "100")], &[("web", 1, 4, 6, true)]).await;
    p.account.tag_group("web", "asg-optimiser:min-on-demand", "2").await;

    p.run_until_settled(6).await;
    let web = p.account.group("web").await;
    assert_eq!((web.on_demand().len(), web.spot().len()), (2, 2), "{web:?}");

    // The minimum is raised (as a percentage, the larger wins): Spot goes back to On-Demand.
    p.account.tag_group("web", "asg-optimiser:min-on-demand-percent", "75").await;
    p.run_until_settled(6).await;
    let after = p.account.group("web").await;
    assert_eq!((after.on_demand().len(), after.spot().len()), (3, 1), "{after:?}");
    assert_eq!((after.desired, after.min, after.max), (web.desired, web.min, web.max));
    let new_od: Vec<_> = after.on_demand().into_iter().filter(|id| !web.on_demand().contains(id)).collect();
    assert_eq!(new_od.len(), 1);
    let view = p.account.instance(new_od[0]).await;
    assert!(web.spot().contains(&view.tags[TAG_REPLACES].as_str()), "an On-Demand copy of a Spot member");
    assert!(matches!(
        p.account.instance(&view.tags[TAG_REPLACES]).await.state.as_str(),
        "terminated" | "shutting-down"
    ));

    // An invalid value is reported and the default (no floor) applies to this group only.
    p.account.tag_group("web", "asg-optimiser:min-on-demand-percent", "lots").await;
    p.account.tag_group("web", "asg-optimiser:min-on-demand", "-1").await;
    let summary = p.scan().await;
    assert_eq!(summary.per_group[0].on_demand_floor, 0);
    assert_eq!(summary.notes.iter().filter(|n| n.contains("using the default")).count(), 2, "{:?}", summary.notes);
    assert!(p.violations.is_empty(), "{:#?}", p.violations);
    assert_eq!(p.account.depth(&p.account.spot_dlq).await + p.account.depth(&p.account.swap_dlq).await, 0);
}

#[tokio::test]
async fn an_interruption_warning_for_a_copy_not_yet_attached_undoes_that_swap() {
    let (_moto, mut p, faults) = start_faulty(
        &[("READY_DEADLINE_SECONDS", "600"), ("ORPHAN_DEADLINE_SECONDS", "1200")],
        &[("web", 1, 2, 4, true)],
    )
    .await;
    faults.never_ready.store(true, Ordering::SeqCst);
    let before = p.account.group("web").await;
    p.scan().await;
    p.drain(Consumer::SpotCreator, Duration::from_secs(30)).await;
    p.poll(Consumer::Swapper).await; // waiting for status checks: re-sent with a delay
    let copy = p.account.spot_ids().await.into_keys().next().expect("a copy was launched");

    let mut warning: serde_json::Value =
        serde_json::from_str(include_str!("../../events/spot-interruption-warning.json")).unwrap();
    warning["detail"]["instance-id"] = copy.clone().into();
    let answer = p.interrupt(warning).await.expect("handled");
    assert!(answer["outcome"].as_str().unwrap().contains("not attached yet"), "{answer}");
    assert!(matches!(p.account.instance(&copy).await.state.as_str(), "terminated" | "shutting-down"));

    // The swapper, now seeing checks pass, still cannot attach it: the group is as it was.
    faults.never_ready.store(false, Ordering::SeqCst);
    p.drain(Consumer::Swapper, Duration::from_secs(30)).await;
    assert_eq!(p.account.group("web").await, before);
    assert!(p.violations.is_empty(), "{:#?}", p.violations);
}

/// The AMI every member of `group` runs, by instance id.
async fn amis<C: Cloud>(p: &Pipeline<C>, group: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for m in p.account.group(group).await.members {
        out.insert(m.id.clone(), p.account.instance(&m.id).await.image_id);
    }
    out
}

#[tokio::test]
async fn a_new_launch_template_version_rolls_every_instance_within_the_limit_keeping_capacity() {
    let (_moto, mut p) = start(&[("MAX_IN_FLIGHT_PERCENT", "100")], &[("web", 1, 6, 7, true)]).await;
    p.account.tag_group("web", "asg-optimiser:min-on-demand", "2").await;
    p.account.tag_group("web", "asg-optimiser:rollout-max-in-flight", "2").await;
    p.run_until_settled(6).await;
    let before = p.account.group("web").await;
    assert_eq!((before.on_demand().len(), before.spot().len()), (2, 4), "{before:?}");

    let (version, ami) = p.account.new_template_version().await;
    // The first two copies are launched; while their swaps wait, a scan starts nothing more, and
    // reads the rollouts in their own market as leaving the On-Demand floor alone.
    let first = p.scan().await;
    assert_eq!((first.per_group[0].outdated, first.per_group[0].rollout.len(), first.enqueued), (6, 2, 2));
    p.drain(Consumer::SpotCreator, Duration::from_secs(60)).await;
    let waiting = p.scan().await;
    let web = &waiting.per_group[0];
    assert_eq!((web.rollout_in_flight, waiting.enqueued), (2, 0), "{web:?}");
    assert!(web.candidates.is_empty() && web.to_on_demand.is_empty(), "{web:?}");
    p.drain(Consumer::Swapper, Duration::from_secs(90)).await;
    let mut rounds = 1;
    loop {
        let mix = p.account.group("web").await;
        assert_eq!((mix.on_demand().len(), mix.spot().len()), (2, 4), "after round {rounds}: {mix:?}");
        rounds += 1;
        assert!(rounds <= 8, "still rolling after 8 rounds");
        let summary = p.round().await;
        let web = &summary.per_group[0];
        assert!(summary.enqueued <= 2, "round {rounds}: {web:?}");
        if summary.enqueued == 0 && summary.in_flight == 0 {
            assert_eq!(web.outdated, 0, "{web:?}");
            break;
        }
    }
    assert!(rounds >= 4, "6 instances, 2 at a time: at least 3 rounds and the one that finds nothing");
    let after = p.account.group("web").await;
    assert_eq!((after.on_demand().len(), after.spot().len()), (2, 4), "the policy's mix is kept: {after:?}");
    assert_eq!((after.desired, after.min, after.max), (before.desired, before.min, before.max));
    for (id, image) in amis(&p, "web").await {
        assert_eq!(image, ami, "{id} runs version {version}'s AMI");
        assert!(!before.members.iter().any(|m| m.id == id), "{id} was there before the rollout");
    }
    assert!(p.violations.is_empty(), "{:#?}", p.violations);
    assert_eq!(p.account.depth(&p.account.spot_dlq).await + p.account.depth(&p.account.swap_dlq).await, 0);
}

#[tokio::test]
async fn a_rollout_whose_new_instances_never_pass_their_checks_pauses_and_keeps_the_old_instances() {
    let (_moto, mut p, faults) = start_faulty(
        &[
            ("READY_DEADLINE_SECONDS", "8"),
            ("ORPHAN_DEADLINE_SECONDS", "600"),
            ("MIN_ON_DEMAND_PERCENT", "100"),
            ("MAX_IN_FLIGHT_PERCENT", "100"),
        ],
        &[("web", 1, 4, 6, true)],
    )
    .await;
    p.account.tag_group("web", "asg-optimiser:rollout-max-in-flight", "2").await;
    let before = p.account.group("web").await;
    let old_amis = amis(&p, "web").await;
    p.account.new_template_version().await;
    faults.never_ready.store(true, Ordering::SeqCst);

    let first = p.round().await;
    assert_eq!(first.per_group[0].rollout.len(), 2, "On-Demand for On-Demand: {:?}", first.per_group[0]);
    let tags = p.account.group_tags("web").await;
    assert!(tags.contains_key("asg-optimiser:rollout-paused"), "{tags:?}");
    assert_eq!(p.account.group("web").await, before, "the old instances stay");
    assert_eq!(amis(&p, "web").await, old_amis);
    assert!(p.account.instances().await.values().filter(|(s, _)| s == "running").count() == 4, "copies terminated");

    // Paused: nothing is launched for the group, and the summary says why.
    let launches = faults.launches.lock().unwrap().len();
    let second = p.round().await;
    let web = &second.per_group[0];
    assert!(web.rollout_paused.as_deref().is_some_and(|w| w.contains("failed their status checks")), "{web:?}");
    assert_eq!((second.enqueued, second.rollouts_paused, web.outdated), (0, 1, 4));
    assert_eq!(faults.launches.lock().unwrap().len(), launches);

    // A new version is a new configuration: the pause named the old one.
    faults.never_ready.store(false, Ordering::SeqCst);
    p.account.new_template_version().await;
    let third = p.scan().await;
    assert_eq!((third.per_group[0].rollout_paused.as_ref(), third.enqueued), (None, 2), "{:?}", third.per_group[0]);
    assert!(
        !p.account.group_tags("web").await.contains_key("asg-optimiser:rollout-paused"),
        "the stale pause is removed"
    );
    assert!(p.violations.is_empty(), "{:#?}", p.violations);
}

#[tokio::test]
async fn instances_that_reservations_pay_for_stay_on_demand_after_others_use_them() {
    // Declared: one m5.large shared from elsewhere in the organisation.
    let (_moto, mut p, faults) = start_faulty(
        &[("MAX_IN_FLIGHT_PERCENT", "100"), ("DECLARED_RESERVATIONS", "m5.large=1")],
        &[("web", 1, 4, 6, true), ("batch", 1, 1, 1, false)],
    )
    .await;
    // Visible: one regional m5.xlarge, size-flexible, worth two m5.large. The group that is not
    // opted in uses one m5.large of the three first.
    let regional = Reservation {
        instance_type: "m5.xlarge".into(),
        availability_zone: None,
        count: 1,
        platform: "Linux/UNIX".into(),
        tenancy: "default".into(),
    };
    *faults.reservations.lock().unwrap() = Some(vec![regional]);

    let first = p.scan().await;
    let reserved = first.reserved.clone().expect("coverage reported");
    assert_eq!((reserved.covered, reserved.uncovered), (2, 2), "{reserved:?}");
    assert_eq!(first.per_group[0].reserved, 2);
    assert_eq!(first.enqueued, 2);
    p.drain(Consumer::SpotCreator, Duration::from_secs(60)).await;
    p.drain(Consumer::Swapper, Duration::from_secs(90)).await;
    p.run_until_settled(4).await;
    let web = p.account.group("web").await;
    assert_eq!((web.on_demand().len(), web.spot().len()), (2, 2), "{web:?}");

    // The regional reservation gives way to a zonal c5.large nobody runs: the declared m5.large
    // goes to the other group first, so both instances kept On-Demand become candidates, and
    // the unused reservation is reported.
    let zonal = Reservation {
        instance_type: "c5.large".into(),
        availability_zone: Some("us-east-1a".into()),
        count: 1,
        platform: "Linux/UNIX".into(),
        tenancy: "default".into(),
    };
    *faults.reservations.lock().unwrap() = Some(vec![zonal]);
    let next = p.scan().await;
    let reserved = next.reserved.expect("coverage reported");
    assert_eq!((reserved.covered, reserved.uncovered), (0, 2), "{reserved:?}");
    assert!(reserved.unused.iter().any(|u| u.contains("c5.large in us-east-1a")), "{reserved:?}");
    assert_eq!(next.enqueued, 2);
    assert!(p.violations.is_empty(), "{:#?}", p.violations);
}

#[tokio::test]
async fn the_swapper_waits_for_the_target_group_and_a_group_with_a_launch_hook_is_left_alone() {
    let (_moto, mut p, faults) = start_faulty(&[], &[("web", 1, 1, 2, true), ("deployed", 1, 1, 2, true)]).await;
    p.account.add_target_group("web").await;
    p.account.add_launch_hook("deployed").await;
    // moto calls every running target `healthy` at once; AWS says `initial` for its checks.
    faults.targets_initial.store(true, Ordering::SeqCst);
    let old = p.account.group("web").await.on_demand()[0].to_string();

    let summary = p.scan().await;
    let deployed = summary.per_group.iter().find(|g| g.name == "deployed").expect("deployed planned");
    assert!(deployed.skipped.as_deref().is_some_and(|why| why.contains("launch lifecycle hook")), "{deployed:?}");
    assert_eq!(summary.enqueued, 1, "web's instance only");
    p.drain(Consumer::SpotCreator, Duration::from_secs(60)).await;
    // Attached and InService, but `initial` behind the target group: the instance stays.
    let started = std::time::Instant::now();
    while p.account.group("web").await.members.len() < 2 || started.elapsed() < Duration::from_secs(8) {
        p.poll(Consumer::Swapper).await;
        assert!(started.elapsed() < Duration::from_secs(60), "the copy was never attached");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let web = p.account.group("web").await;
    assert_eq!(web.in_service(), 2, "{web:?}");
    assert!(web.on_demand().contains(&old.as_str()), "the instance waits for its copy to be healthy");
    let health: u64 =
        p.swapper.calls.snapshot().iter().filter(|(op, _)| op.ends_with(":DescribeTargetHealth")).map(|(_, n)| n).sum();
    assert!(health >= 2, "the gate read the target group at each round: {health}");

    // Healthy: the next delivery retires the instance, and the group is as it was.
    faults.targets_initial.store(false, Ordering::SeqCst);
    p.drain(Consumer::Swapper, Duration::from_secs(60)).await;
    let dead = p.account.drain_dlq(&p.account.swap_dlq).await;
    assert!(dead.is_empty(), "the swap was dead-lettered (the log lines above say why): {dead:?}");
    let web = p.account.group("web").await;
    assert!(!web.on_demand().contains(&old.as_str()) && web.spot().len() == 1, "{web:?}");
    assert_eq!((web.min, web.max, web.desired), (1, 2, 1));
    assert_eq!(p.account.group("deployed").await.spot().len(), 0, "the hooked group was not touched");
    assert!(p.violations.is_empty(), "{:#?}", p.violations);
}

#[tokio::test]
async fn the_read_of_scaling_activities_is_accepted_and_its_answer_parsed() {
    // The swapper reads a group's scaling activities on the rare path of an instance that left
    // after its copy's attach (see the swap's `taken_by_a_scale_in`). moto answers the call with
    // no activity (AWS keeps six weeks of them), which leaves the swap to today's give-back; the
    // simulated account models the activities themselves.
    let (_moto, p) = start(&[], &[("web", 1, 1, 2, true)]).await;
    let activities = p.swapper.cloud.scaling_activities("web").await.expect("DescribeScalingActivities answered");
    assert!(activities.iter().all(|a| !a.description.is_empty()), "{activities:?}");
    let calls = p.swapper.calls.snapshot();
    assert!(calls.iter().any(|(op, n)| op == "autoscaling:DescribeScalingActivities" && *n == 1), "{calls:?}");
}
