//! The scanner's handler: one scan per scheduled event.

use asg_core::cloud::Cloud;
use asg_core::lambda::App;
use asg_core::metrics::{self, Metrics, Unit};
use asg_core::workflows::scan::{scan, ScanSummary};
use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;
use tracing::info;

/// Accepts the EventBridge "Scheduled Event" envelope, a bare `{}` or no payload at all; the
/// content does not matter, only that it is time to scan.
pub async fn handler<C: Cloud>(app: &App<C>, event: LambdaEvent<Value>) -> Result<ScanSummary, Error> {
    let payload = &event.payload;
    if !(payload.is_object() || payload.is_null()) {
        return Err(format!("expected a scheduled event or {{}}, got {payload}").into());
    }
    let event_id = payload.get("id").and_then(Value::as_str).unwrap_or("-");
    let before = app.calls.snapshot();
    let mut summary = scan(&app.cloud, &app.config, app.clock.now()).await?;
    summary.api_calls = app.calls.since(&before);
    let m = Metrics::default();
    m.add(metrics::REPLACEMENTS_STARTED, summary.enqueued as f64);
    m.add(metrics::ORPHANS_CLEANED, summary.cleaned_up as f64);
    m.add(metrics::SCAN_ERRORS, summary.errors.len() as f64);
    m.add(metrics::SPOT_INSTANCES_MANAGED, summary.spot_managed as f64);
    m.add(metrics::ON_DEMAND_HELD_BACK, summary.held_back as f64);
    m.add(metrics::OUTDATED_INSTANCES, summary.outdated as f64);
    m.add(metrics::RESERVED_COVERED, summary.reserved.as_ref().map_or(0, |r| r.covered) as f64);
    if let Some(s) = &summary.savings {
        m.set(metrics::ESTIMATED_HOURLY_SAVINGS, s.usd_per_hour, Unit::None);
    }
    if app.emit_metrics {
        m.publish(&app.config.metrics_namespace, "scanner");
    }
    info!(
        event_id,
        groups = summary.groups,
        candidates = summary.candidates,
        to_on_demand = summary.to_on_demand,
        enqueued = summary.enqueued,
        dry_run_groups = summary.dry_run_groups,
        pools_backed_off = summary.pools_backed_off,
        held_back = summary.held_back,
        outdated = summary.outdated,
        rollout = summary.rollout,
        rollout_in_flight = summary.rollout_in_flight,
        rollouts_paused = summary.rollouts_paused,
        reserved_covered = summary.reserved.as_ref().map(|r| r.covered),
        in_flight = summary.in_flight,
        cleaned_up = summary.cleaned_up,
        resumed = summary.resumed,
        repaired = summary.repaired,
        spot_managed = summary.spot_managed,
        savings_usd_per_hour = summary.savings.as_ref().map(|s| s.usd_per_hour),
        errors = summary.errors.len(),
        summary = %serde_json::to_string(&summary).unwrap_or_default(),
        "scan complete"
    );
    Ok(summary)
}
