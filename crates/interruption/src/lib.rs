//! The interruption handler: EC2 Spot interruption warnings and rebalance recommendations,
//! routed by the template's EventBridge rule. Events about instances that are not ours, or
//! that cannot be read, end here with a log line; a failed AWS call fails the invocation so that
//! Lambda retries the event.

use asg_core::cloud::Cloud;
use asg_core::lambda::App;
use asg_core::metrics::Metrics;
use asg_core::workflows::interrupt::handle;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{json, Value};
use tracing::{error, info};

pub async fn handler<C: Cloud>(app: &App<C>, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let event_id = event.payload.get("id").and_then(Value::as_str).unwrap_or("-").to_string();
    let metrics = Metrics::default();
    let result = handle(&app.cloud, &app.config, &metrics, &event.payload, app.clock.now()).await;
    if app.emit_metrics {
        metrics.publish(&app.config.metrics_namespace, "interruption");
    }
    match result {
        Ok(outcome) => {
            info!(event_id = %event_id, outcome = %outcome, "event handled");
            Ok(json!({ "outcome": outcome }))
        }
        Err(e) => {
            error!(event_id = %event_id, code = e.code(), error = %e, "event not handled; Lambda will retry it");
            Err(e.into())
        }
    }
}
