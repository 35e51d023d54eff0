//! `ws-connect`: the WebSocket API's $connect route. Checks the member token
//! (`?token=` or `Authorization: Bearer`) and records the connection; a bad or missing
//! token refuses the connection.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use bandsync::adapters::aws::AwsContext;
use bandsync::ws_connect::WsConnect;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::convert::Infallible;

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::telemetry::init();
    let ctx = AwsContext::from_env().await;
    let connect = &WsConnect::new(ctx.store()?, ctx.tokens()?, ctx.clock.clone());
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
            Ok::<_, Infallible>(connect.handle(event.payload).await)
        },
    ))
    .await
}
