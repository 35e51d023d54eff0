//! `scheduler`: the EventBridge schedule (rate(5 minutes)). Queues a reconcile of every
//! source of the bands in `BANDS` (comma-separated ids; push is lossy) and prunes their
//! channel logs past the retention window. The event itself is not read, so a manual
//! `aws lambda invoke --payload '{}'` ticks too. A band registry replaces `BANDS` later.

use bandsync::adapters::aws::AwsContext;
use bandsync::model::BandId;
use bandsync::scheduler::Scheduler;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::telemetry::init();
    let raw = std::env::var("BANDS").unwrap_or_default();
    let ids = raw.split(',').map(str::trim).filter(|b| !b.is_empty());
    let bands = &ids.map(BandId::parse).collect::<Result<Vec<_>, _>>()?;
    let ctx = AwsContext::from_env().await;
    let store = ctx.store()?;
    let scheduler = &Scheduler::new(store.clone(), store, ctx.sync_queue()?, ctx.clock);
    lambda_runtime::run(service_fn(move |_: LambdaEvent<Value>| async move {
        let report = scheduler.tick(bands).await?;
        let (queued, pruned) = (report.reconciles_queued, report.events_pruned);
        Ok::<_, Error>(json!({"reconciles_queued": queued, "events_pruned": pruned}))
    }))
    .await
}
