//! `sync-worker`: consumes the FIFO "sync" queue. Runs each job (delta against the
//! catalog, operation + items, events appended to the channel log and sent to the
//! broadcast queue); reports the first failure and the rest of the batch as failed.
//! A sync that fails as a whole alerts the operators' SNS topic. Google sources sync
//! with each band's sealed credentials when `BANDSYNC_CREDENTIALS_KEY` is set.

use bandsync::adapters::aws::AwsContext;
use bandsync::publish::Publisher;
use bandsync::sync::SyncWorker;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::transport::telemetry::init();
    let ctx = AwsContext::from_env().await;
    let store = ctx.store()?;
    let publisher = Publisher::new(store.clone(), ctx.broadcast_queue()?);
    let worker = &SyncWorker::new(store.clone(), publisher, ctx.clock.clone())
        .with_notifier(ctx.notifier()?)
        .with_google(ctx.google(store)?);
    lambda_runtime::run(service_fn(move |event| {
        bandsync::transport::lambda::sync_worker(worker, event)
    }))
    .await
}
