//! `ws-disconnect`: the WebSocket API's $disconnect route. Forgets the connection and its
//! subscriptions.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use bandsync::adapters::aws::AwsContext;
use bandsync::ws_disconnect::WsDisconnect;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::convert::Infallible;

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::telemetry::init();
    let ctx = AwsContext::from_env().await;
    let disconnect = &WsDisconnect::new(ctx.store()?);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
            Ok::<_, Infallible>(disconnect.handle(event.payload).await)
        },
    ))
    .await
}
