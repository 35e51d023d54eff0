//! `api`: the HTTP API's /sync/* routes (payload 2.0): status, trigger, operations,
//! health (each table and queue up or down), stats, and the operator routes that
//! register bands, sources and sealed Google credentials. Bearer token on all but health.

use bandsync::adapters::aws::AwsContext;
use bandsync::api::Api;
use bandsync::ports::HealthCheck;
use lambda_runtime::{Error, service_fn};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::transport::telemetry::init();
    let ctx = AwsContext::from_env().await;
    let (store, sync_queue) = (ctx.store()?, ctx.sync_queue()?);
    let checks: Vec<(String, Arc<dyn HealthCheck>)> = vec![
        ("store".into(), store.clone()),
        ("sync_queue".into(), sync_queue.clone()),
        ("broadcast_queue".into(), ctx.broadcast_queue()?),
    ];
    let api = &Api::new(store, sync_queue, ctx.tokens()?, ctx.clock.clone(), checks)
        .with_credentials_key(ctx.credentials_key()?);
    lambda_runtime::run(service_fn(move |event| {
        bandsync::transport::lambda::api(api, event)
    }))
    .await
}
