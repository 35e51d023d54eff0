//! `broadcast`: consumes the FIFO "broadcast" queue (group = channel). Posts each
//! message's events to every subscriber of the channel with bounded concurrency; a gone
//! connection is removed.

use aws_lambda_events::sqs::SqsEvent;
use bandsync::adapters::aws::AwsContext;
use bandsync::broadcast::Broadcaster;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::convert::Infallible;

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::telemetry::init();
    let ctx = AwsContext::from_env().await;
    let store = ctx.store()?;
    let broadcaster = &Broadcaster::new(store.clone(), store, ctx.pusher()?, ctx.clock);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Infallible>(broadcaster.handle_sqs(event.payload).await)
    }))
    .await
}
