//! The Lambda entry point of every function: what one invocation does with its
//! `LambdaEvent`. Each main builds its handler once and runs
//! `lambda_runtime::run(service_fn(|e| lambda::<function>(&handler, e)))`; the tests call
//! the same functions with real-shaped event JSON, so the path from the runtime's event
//! to the handler's answer is tested without AWS.

use crate::api::Api;
use crate::broadcast::Broadcaster;
use crate::model::BandId;
use crate::scheduler::Scheduler;
use crate::sync::SyncWorker;
use crate::webhook::WebhookIntake;
use crate::ws_connect::WsConnect;
use crate::ws_disconnect::WsDisconnect;
use crate::ws_message::WsMessage;
use aws_lambda_events::apigw::{
    ApiGatewayProxyResponse, ApiGatewayV2httpRequest, ApiGatewayV2httpResponse,
    ApiGatewayWebsocketProxyRequest,
};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{Value, json};

pub async fn webhook(
    h: &WebhookIntake,
    e: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, Error> {
    Ok(h.handle(e.payload).await)
}

pub async fn api(
    h: &Api,
    e: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, Error> {
    Ok(h.handle(e.payload).await)
}

pub async fn sync_worker(
    h: &SyncWorker,
    e: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let deadline = deadline(&e.context);
    Ok(h.handle_sqs(e.payload, deadline).await)
}

pub async fn broadcast(
    h: &Broadcaster,
    e: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let deadline = deadline(&e.context);
    Ok(h.handle_sqs(e.payload, deadline).await)
}

pub async fn ws_connect(
    h: &WsConnect,
    e: LambdaEvent<ApiGatewayWebsocketProxyRequest>,
) -> Result<ApiGatewayProxyResponse, Error> {
    Ok(h.handle(e.payload).await)
}

pub async fn ws_disconnect(
    h: &WsDisconnect,
    e: LambdaEvent<ApiGatewayWebsocketProxyRequest>,
) -> Result<ApiGatewayProxyResponse, Error> {
    Ok(h.handle(e.payload).await)
}

pub async fn ws_message(
    h: &WsMessage,
    e: LambdaEvent<ApiGatewayWebsocketProxyRequest>,
) -> Result<ApiGatewayProxyResponse, Error> {
    Ok(h.handle(e.payload).await)
}

/// The invocation's deadline (milliseconds since the epoch in the runtime's context; 0,
/// as in a default context, means none).
fn deadline(context: &lambda_runtime::Context) -> Option<std::time::SystemTime> {
    (context.deadline > 0)
        .then(|| std::time::UNIX_EPOCH + std::time::Duration::from_millis(context.deadline))
}

/// The EventBridge schedule's event is not read: a manual `{}` invoke ticks too. A failed
/// tick fails the invocation, so it shows in the function's Errors alarm.
pub async fn scheduler(
    h: &Scheduler,
    bands: &[BandId],
    _e: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let report = h.tick(bands).await?;
    let c = &report.watch_channels;
    Ok(json!({
        "reconciles_queued": report.reconciles_queued,
        "events_pruned": report.events_pruned,
        "channels": {"created": c.created, "renewed": c.renewed, "stopped": c.stopped,
                     "forgotten": c.forgotten, "failed": c.failed, "deferred": c.deferred},
    }))
}

/// The scheduler's extra bands, from `BANDS` (comma-separated ids), ticked besides the
/// registered ones.
pub fn bands_from_env() -> Result<Vec<BandId>, Error> {
    let raw = std::env::var("BANDS").unwrap_or_default();
    let bands = raw
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(BandId::parse)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(bands)
}
