//! `broadcast`: consumes the FIFO "broadcast" queue (group = channel). Posts each
//! message's events to every subscriber of the channel with bounded concurrency; a gone
//! connection is removed.

use bandsync::adapters::aws::AwsContext;
use bandsync::wiring;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::transport::telemetry::init();
    let handler = &wiring::broadcaster(&AwsContext::from_env().await)?;
    lambda_runtime::run(service_fn(move |event| {
        bandsync::transport::lambda::broadcast(handler, event)
    }))
    .await
}
