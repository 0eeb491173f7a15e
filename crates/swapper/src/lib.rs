//! The swapper's handler: swaps each ready Spot instance in for its On-Demand instance, one SQS record at a time,
//! reporting failed records for retry or the dead-letter queue.

use asg_core::cloud::Cloud;
use asg_core::lambda::{invocation, App};
use asg_core::workflows::swap::swap;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent};

pub async fn handler<C: Cloud>(app: &App<C>, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    let now = app.clock.now();
    Ok(invocation(app, event.payload, "swapper", |body, metrics| async move {
        swap(&app.cloud, &app.config, &metrics, &body, now).await
    })
    .await)
}
