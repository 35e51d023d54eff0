//! `ws-connect`: the WebSocket API's $connect route. Checks the member token
//! (`?token=` or `Authorization: Bearer`) and records the connection; a bad or missing
//! token refuses the connection.

use bandsync::adapters::aws::AwsContext;
use bandsync::ws_connect::WsConnect;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::transport::telemetry::init();
    let ctx = AwsContext::from_env().await;
    let connect = &WsConnect::new(ctx.store()?, ctx.tokens()?, ctx.clock.clone());
    lambda_runtime::run(service_fn(move |event| {
        bandsync::transport::lambda::ws_connect(connect, event)
    }))
    .await
}
