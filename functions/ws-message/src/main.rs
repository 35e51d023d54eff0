//! `ws-message`: the WebSocket API's $default route (route selection on
//! `$request.body.action`): subscribe, unsubscribe, resume, ping, sync_request. Replies go
//! back through the @connections API.

use bandsync::adapters::aws::AwsContext;
use bandsync::ws_message::WsMessage;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::transport::telemetry::init();
    let ctx = AwsContext::from_env().await;
    let store = ctx.store()?;
    let (log, sources) = (store.clone(), store.clone());
    let (queue, pusher) = (ctx.sync_queue()?, ctx.pusher()?);
    let message = &WsMessage::new(store, log, sources, queue, pusher, ctx.clock);
    lambda_runtime::run(service_fn(move |event| {
        bandsync::transport::lambda::ws_message(message, event)
    }))
    .await
}
