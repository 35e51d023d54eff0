//! `scheduler`: the EventBridge schedule (rate(5 minutes)). Queues a reconcile of every
//! source of the bands in `BANDS` (comma-separated ids; push is lossy) and prunes their
//! channel logs past the retention window. The event itself is not read, so a manual
//! `aws lambda invoke --payload '{}'` ticks too. With `BANDSYNC_CREDENTIALS_KEY` set,
//! it also keeps a watch channel on every Google source (opened, renewed, stopped), with
//! `WEBHOOK_URL` as the address Google posts to.

use bandsync::adapters::aws::AwsContext;
use bandsync::scheduler::Scheduler;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::telemetry::init();
    let bands = &bandsync::lambda::bands_from_env()?;
    let ctx = AwsContext::from_env().await;
    let store = ctx.store()?;
    let scheduler = &Scheduler::new(
        store.clone(),
        store.clone(),
        ctx.sync_queue()?,
        ctx.clock.clone(),
    )
    .with_registry(store.clone())
    .with_channels(ctx.channel_keeper(store)?);
    lambda_runtime::run(service_fn(move |event| {
        bandsync::lambda::scheduler(scheduler, bands, event)
    }))
    .await
}
