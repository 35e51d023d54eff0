//! `webhook`: POST /webhooks/{google,folder} (HTTP API, payload 2.0). Verifies the watch
//! channel and its token, drops repeated message numbers, queues a sync job.

use bandsync::adapters::aws::AwsContext;
use bandsync::webhook::WebhookIntake;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::transport::telemetry::init();
    let ctx = AwsContext::from_env().await;
    let store = ctx.store()?;
    let intake = &WebhookIntake::new(store, ctx.sync_queue()?, ctx.clock);
    lambda_runtime::run(service_fn(move |event| {
        bandsync::transport::lambda::webhook(intake, event)
    }))
    .await
}
