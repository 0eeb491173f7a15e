//! The spot-creator's handler: launches a Spot copy of each On-Demand instance, one SQS record at a time,
//! reporting failed records for retry or the dead-letter queue.

use asg_core::cloud::Cloud;
use asg_core::lambda::{invocation, App};
use asg_core::workflows::launch::create_spot;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent};

pub async fn handler<C: Cloud>(app: &App<C>, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    let now = app.clock.now();
    Ok(invocation(app, event.payload, "spot-creator", |body, metrics| async move {
        create_spot(&app.cloud, &app.config, &metrics, &body, now).await
    })
    .await)
}
