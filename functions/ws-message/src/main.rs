//! `ws-message`: the WebSocket API's $default route (route selection on
//! `$request.body.action`): subscribe, unsubscribe, resume, ping, sync_request,
//! register_device, push. Replies go back through the @connections API.

use bandsync::adapters::aws::AwsContext;
use bandsync::wiring;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::transport::telemetry::init();
    let handler = &wiring::ws_message(&AwsContext::from_env().await)?;
    lambda_runtime::run(service_fn(move |event| {
        bandsync::transport::lambda::ws_message(handler, event)
    }))
    .await
}
