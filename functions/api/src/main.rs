//! `api`: the HTTP API's /sync/* routes (payload 2.0): status, trigger, operations,
//! health (each table and queue up or down), stats, and the operator routes that
//! register bands, sources and sealed Google credentials. Bearer token on all but health.

use bandsync::adapters::aws::AwsContext;
use bandsync::wiring;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::transport::telemetry::init();
    let handler = &wiring::api(&AwsContext::from_env().await)?;
    lambda_runtime::run(service_fn(move |event| {
        bandsync::transport::lambda::api(handler, event)
    }))
    .await
}
