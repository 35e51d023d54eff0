//! `ws-disconnect`: the WebSocket API's $disconnect route. Forgets the connection and its
//! subscriptions.

use bandsync::adapters::aws::AwsContext;
use bandsync::ws_disconnect::WsDisconnect;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::transport::telemetry::init();
    let ctx = AwsContext::from_env().await;
    let disconnect = &WsDisconnect::new(ctx.store()?);
    lambda_runtime::run(service_fn(move |event| {
        bandsync::transport::lambda::ws_disconnect(disconnect, event)
    }))
    .await
}
