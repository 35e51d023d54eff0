//! `webhook`: POST /webhooks/{google,folder} (HTTP API, payload 2.0). Verifies the watch
//! channel and its token, drops repeated message numbers, queues a sync job.

use bandsync::adapters::aws::AwsContext;
use bandsync::wiring;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::transport::telemetry::init();
    let handler = &wiring::webhook(&AwsContext::from_env().await)?;
    lambda_runtime::run(service_fn(move |event| {
        bandsync::transport::lambda::webhook(handler, event)
    }))
    .await
}
