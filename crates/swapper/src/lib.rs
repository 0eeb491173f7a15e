//! The swapper's handler: swaps each ready Spot instance in for its On-Demand instance, one SQS record at a time,
//! reporting failed records for retry or the dead-letter queue.

use asg_core::batch::handle_batch;
use asg_core::cloud::Cloud;
use asg_core::metrics::{self, Metrics};
use asg_core::swap::swap;
use asg_core::App;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent};
use tracing::info;

pub async fn handler<C: Cloud>(app: &App<C>, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    let now = asg_core::now();
    let metrics = Metrics::default();
    let metrics = &metrics;
    let (response, tally) = handle_batch(event.payload, app.config.concurrency, |body| async move {
        swap(&app.cloud, &app.config, metrics, &body, now).await
    })
    .await;
    metrics.add(metrics::MESSAGES_REJECTED, tally.rejected as f64);
    metrics.add(metrics::MESSAGES_RETRIED, tally.retried as f64);
    if app.emit_metrics {
        metrics.publish(&app.config.metrics_namespace, "swapper");
    }
    info!(
        done = tally.done,
        dropped = tally.dropped,
        rejected = tally.rejected,
        retried = tally.retried,
        "batch complete"
    );
    Ok(response)
}
