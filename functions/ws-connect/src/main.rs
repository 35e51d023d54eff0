//! `ws-connect`: the WebSocket API's $connect route. Checks the member token
//! (`?token=` or `Authorization: Bearer`) and records the connection; a bad or missing
//! token refuses the connection.

use bandsync::adapters::aws::AwsContext;
use bandsync::wiring;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::transport::telemetry::init();
    let handler = &wiring::ws_connect(&AwsContext::from_env().await)?;
    lambda_runtime::run(service_fn(move |event| {
        bandsync::transport::lambda::ws_connect(handler, event)
    }))
    .await
}
