//! `sync-worker`: consumes the FIFO "sync" queue. Runs each job (delta against the
//! catalog, operation + items, events appended to the channel log and sent to the
//! broadcast queue); reports the first failure and the rest of the batch as failed.
//! A sync that fails as a whole alerts the operators' SNS topic. Google sources sync
//! with each band's sealed credentials when `BANDSYNC_CREDENTIALS_KEY` is set.

use bandsync::adapters::aws::AwsContext;
use bandsync::wiring;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::transport::telemetry::init();
    let handler = &wiring::sync_worker(&AwsContext::from_env().await)?;
    lambda_runtime::run(service_fn(move |event| {
        bandsync::transport::lambda::sync_worker(handler, event)
    }))
    .await
}
