//! `ws-disconnect`: the WebSocket API's $disconnect route. Forgets the connection and its
//! subscriptions.

use bandsync::adapters::aws::AwsContext;
use bandsync::wiring;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::transport::telemetry::init();
    let handler = &wiring::ws_disconnect(&AwsContext::from_env().await)?;
    lambda_runtime::run(service_fn(move |event| {
        bandsync::transport::lambda::ws_disconnect(handler, event)
    }))
    .await
}
