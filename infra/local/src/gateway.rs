//! A WebSocket API that behaves like API Gateway's: a connection id per socket, $connect
//! with the query string and headers (a non-2xx answer refuses the handshake with that
//! status), route selection on `$request.body.action` with a `$default` fallback,
//! $disconnect on close, idle timeout and maximum duration, 128 KB messages and 32 KB
//! frames (over that: close 1009), and the `@connections` management API at the URL
//! shape API Gateway uses, so the real SDK client works against it.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bandsync::model::ConnectionId;
use bandsync::ports::{PortError, PortResult, PushOutcome, Pusher};
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// API Gateway's quotas, configurable for tests.
#[derive(Debug, Clone)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub max_duration: Duration,
    pub max_message: usize,
    pub max_frame: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(600),
            max_duration: Duration::from_secs(2 * 3600),
            max_message: 128 * 1024,
            max_frame: 32 * 1024,
        }
    }
}

/// A route integration: the handler a route key invokes.
pub type RouteHandler = Arc<
    dyn Fn(ApiGatewayWebsocketProxyRequest) -> BoxFuture<'static, ApiGatewayProxyResponse>
        + Send
        + Sync,
>;

/// Route key -> handler (`$connect`, `$disconnect`, `$default`, or an action name).
#[derive(Clone, Default)]
pub struct Routes(HashMap<String, RouteHandler>);

impl Routes {
    pub fn route(mut self, key: &str, handler: RouteHandler) -> Self {
        self.0.insert(key.to_owned(), handler);
        self
    }
    fn get(&self, key: &str) -> Option<&RouteHandler> {
        self.0.get(key)
    }
}

/// Frames waiting for a slow client before posts to it are refused as throttled.
const OUTBOX: usize = 1024;
/// How long one frame may take to write before the client counts as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

type CloseRequest = Option<(u16, &'static str)>;

struct Live {
    tx: mpsc::Sender<Message>,
    close: tokio::sync::watch::Sender<CloseRequest>,
    connected_at: DateTime<Utc>,
    last_active: DateTime<Utc>,
    source_ip: String,
    user_agent: Option<String>,
}

/// The open connections, shared by the socket tasks, @connections and the in-process pusher.
#[derive(Clone, Default)]
pub struct Registry {
    live: Arc<Mutex<HashMap<String, Live>>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PostError {
    Gone,
    TooLarge,
    /// The client is not reading fast enough (API Gateway's LimitExceededException).
    Throttled,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        // A panicking holder cannot leave the map half-changed: every update is one call.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// PostToConnection.
    pub fn post(&self, id: &str, data: &[u8], max: usize) -> Result<(), PostError> {
        if data.len() > max {
            return Err(PostError::TooLarge);
        }
        let live = self.lock();
        let conn = live.get(id).ok_or(PostError::Gone)?;
        let message = match std::str::from_utf8(data) {
            Ok(text) => Message::Text(text.to_owned().into()),
            Err(_) => Message::Binary(Bytes::copy_from_slice(data)),
        };
        conn.tx.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => PostError::Throttled,
            mpsc::error::TrySendError::Closed(_) => PostError::Gone,
        })
    }

    /// DeleteConnection: close it (its $disconnect follows).
    pub fn close(&self, id: &str) -> Result<(), PostError> {
        let live = self.lock();
        let conn = live.get(id).ok_or(PostError::Gone)?;
        conn.close
            .send(Some((1000, "")))
            .map_err(|_| PostError::Gone)
    }

    /// Close every connection (the stack is going away).
    pub fn close_all(&self) {
        for conn in self.lock().values() {
            let _ = conn.close.send(Some((1001, "Going away")));
        }
    }

    /// The ids of the open connections.
    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn touch(&self, id: &str) {
        if let Some(c) = self.lock().get_mut(id) {
            c.last_active = Utc::now();
        }
    }
}

/// The in-process pusher of the local stack: the same outcome API Gateway gives.
#[derive(Clone)]
pub struct LocalPusher {
    pub registry: Registry,
    pub max_message: usize,
}

#[async_trait::async_trait]
impl Pusher for LocalPusher {
    async fn post(&self, connection: &ConnectionId, data: &[u8]) -> PortResult<PushOutcome> {
        match self
            .registry
            .post(connection.as_str(), data, self.max_message)
        {
            Ok(()) => Ok(PushOutcome::Delivered),
            Err(PostError::Gone) => Ok(PushOutcome::Gone),
            Err(PostError::TooLarge) => Err(PortError::Backend(anyhow::anyhow!(
                "payload of {} bytes is over the {} byte limit",
                data.len(),
                self.max_message
            ))),
            Err(PostError::Throttled) => Err(PortError::Backend(anyhow::anyhow!(
                "connection {connection} is not reading; {OUTBOX} frames are waiting"
            ))),
        }
    }
}

#[derive(Clone)]
pub struct Gateway {
    pub stage: String,
    pub routes: Routes,
    pub registry: Registry,
    pub limits: Limits,
}

fn new_connection_id() -> String {
    use base64::Engine;
    let bytes = uuid::Uuid::new_v4();
    // API Gateway's ids are base64 of random bytes; the URL-safe alphabet keeps `/` out
    // of the @connections path.
    base64::engine::general_purpose::URL_SAFE.encode(&bytes.as_bytes()[..10])
}

fn ws_request(
    gw: &Gateway,
    route_key: &str,
    event_type: &str,
    connection_id: &str,
    connected_at: DateTime<Utc>,
    source_ip: &str,
) -> ApiGatewayWebsocketProxyRequest {
    let mut req = ApiGatewayWebsocketProxyRequest::default();
    let ctx = &mut req.request_context;
    ctx.route_key = Some(route_key.to_owned());
    ctx.event_type = Some(event_type.to_owned());
    ctx.connection_id = Some(connection_id.to_owned());
    ctx.connected_at = connected_at.timestamp_millis();
    ctx.request_time_epoch = Utc::now().timestamp_millis();
    ctx.request_id = Some(uuid::Uuid::new_v4().to_string());
    ctx.stage = Some(gw.stage.clone());
    ctx.apiid = Some("local".into());
    ctx.domain_name = Some("127.0.0.1".into());
    ctx.message_direction = Some("IN".into());
    ctx.identity.source_ip = Some(source_ip.to_owned());
    req
}

fn status_of(resp: &ApiGatewayProxyResponse) -> StatusCode {
    StatusCode::from_u16(u16::try_from(resp.status_code).unwrap_or(500))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn body_of(resp: ApiGatewayProxyResponse) -> Vec<u8> {
    match resp.body {
        Some(Body::Text(t)) => t.into_bytes(),
        Some(Body::Binary(b)) => b,
        _ => Vec::new(),
    }
}

impl Gateway {
    pub fn router(self) -> Router {
        let stage = self.stage.clone();
        Router::new()
            .route(&format!("/{stage}"), get(upgrade))
            .route(
                &format!("/{stage}/@connections/{{id}}"),
                post(manage_post).get(manage_get).delete(manage_delete),
            )
            .with_state(self)
    }
}

async fn upgrade(
    State(gw): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let id = new_connection_id();
    let connected_at = Utc::now();
    let source_ip = peer.ip().to_string();
    let mut req = ws_request(&gw, "$connect", "CONNECT", &id, connected_at, &source_ip);
    req.headers = headers.clone();
    req.query_string_parameters = query.into_iter().collect::<HashMap<_, _>>().into();
    if let Some(connect) = gw.routes.get("$connect") {
        let resp = connect(req).await;
        let status = status_of(&resp);
        if !status.is_success() {
            let mut refused = (status, body_of(resp)).into_response();
            refused
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            return refused;
        }
    }
    let (tx, rx) = mpsc::channel(OUTBOX);
    let (close, close_rx) = tokio::sync::watch::channel(None);
    gw.registry.lock().insert(
        id.clone(),
        Live {
            tx,
            close: close.clone(),
            connected_at,
            last_active: connected_at,
            source_ip: source_ip.clone(),
            user_agent: headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        },
    );
    // Messages over the limit must be seen (to close with 1009), so the socket reads up to
    // a generous cap and we check the real limits ourselves.
    let failed = (gw.clone(), id.clone(), source_ip.clone());
    ws.max_message_size(gw.limits.max_message.max(gw.limits.max_frame) * 4)
        .max_frame_size(gw.limits.max_frame)
        // The handshake did not complete: the connection never existed for the client.
        .on_failed_upgrade(move |e| {
            let (gw, id, source_ip) = failed;
            tracing::info!(connection = %id, error = %e, "upgrade failed");
            gw.registry.lock().remove(&id);
            tokio::spawn(async move {
                disconnected(&gw, &id, connected_at, &source_ip, 1006, "upgrade failed").await
            });
        })
        .on_upgrade(move |socket| {
            serve(gw, socket, id, connected_at, source_ip, close, close_rx, rx)
        })
}

/// Invoke the $disconnect route, as API Gateway does once per connection.
async fn disconnected(
    gw: &Gateway,
    id: &str,
    connected_at: DateTime<Utc>,
    source_ip: &str,
    status: u16,
    reason: &str,
) {
    if let Some(disconnect) = gw.routes.get("$disconnect") {
        let mut req = ws_request(gw, "$disconnect", "DISCONNECT", id, connected_at, source_ip);
        req.request_context.disconnect_status_code = Some(status.into());
        req.request_context.disconnect_reason = Some(reason.to_owned());
        disconnect(req).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    gw: Gateway,
    socket: WebSocket,
    id: String,
    connected_at: DateTime<Utc>,
    source_ip: String,
    close: tokio::sync::watch::Sender<CloseRequest>,
    mut close_rx: tokio::sync::watch::Receiver<CloseRequest>,
    mut rx: mpsc::Receiver<Message>,
) {
    let (mut sink, mut stream) = socket.split();
    // The writer tells the reader when it stopped (a server-side close, a client that
    // stopped reading), so the reader does not wait for a client that never answers.
    let (closed_tx, mut closed_rx) = tokio::sync::oneshot::channel::<(u16, &'static str)>();
    let mut writer = tokio::spawn(async move {
        let ended = loop {
            tokio::select! {
                biased;
                _ = close_rx.changed() => {
                    let (code, reason) = (*close_rx.borrow()).unwrap_or((1006, "connection lost"));
                    let frame = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(frame)).await;
                    break (code, reason);
                }
                frame = rx.recv() => {
                    let Some(frame) = frame else { break (1006, "connection lost") };
                    match tokio::time::timeout(WRITE_TIMEOUT, sink.send(frame)).await {
                        Ok(Ok(())) => {}
                        _ => break (1006, "client stopped reading"),
                    }
                }
            }
        };
        let _ = closed_tx.send(ended);
    });
    let request_close = |code, reason| {
        let _ = close.send(Some((code, reason)));
    };
    let deadline = tokio::time::Instant::now() + gw.limits.max_duration;
    let (status, reason): (u16, String) = loop {
        let next = tokio::select! {
            next = tokio::time::timeout(gw.limits.idle_timeout, stream.next()) => next,
            _ = tokio::time::sleep_until(deadline) => {
                request_close(1001, "Going away");
                break (1001, "max duration reached".into());
            }
            closed = &mut closed_rx => {
                let (code, reason) = closed.unwrap_or((1006, "connection lost"));
                break (code, if code == 1000 { "deleted through @connections".into() } else { reason.into() });
            }
        };
        let message = match next {
            Err(_) => {
                request_close(1001, "Going away");
                break (1001, "idle timeout".into());
            }
            Ok(None) => break (1006, "connection lost".into()),
            Ok(Some(Err(e))) => {
                if is_capacity(&e) {
                    request_close(1009, "Message too big");
                    break (1009, "message too big".into());
                }
                break (1006, "connection error".into());
            }
            Ok(Some(Ok(m))) => m,
        };
        gw.registry.touch(&id);
        let (body, base64) = match message {
            Message::Text(t) if t.len() <= gw.limits.max_message => (t.to_string(), false),
            Message::Binary(b) if b.len() <= gw.limits.max_message => {
                use base64::Engine;
                (base64::engine::general_purpose::STANDARD.encode(&b), true)
            }
            Message::Text(_) | Message::Binary(_) => {
                request_close(1009, "Message too big");
                break (1009, "message too big".into());
            }
            // The client's own close code and reason go to $disconnect.
            Message::Close(frame) => {
                break frame.map_or((1005, String::new()), |f| (f.code, f.reason.to_string()));
            }
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        dispatch(&gw, &id, connected_at, &source_ip, body, base64).await;
    };
    gw.registry.lock().remove(&id);
    if tokio::time::timeout(Duration::from_secs(1), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    disconnected(&gw, &id, connected_at, &source_ip, status, &reason).await;
}

fn is_capacity(e: &axum::Error) -> bool {
    use std::error::Error;
    use tokio_tungstenite::tungstenite::Error as WsError;
    // axum wraps tungstenite's error (keep tokio-tungstenite at axum's version so this downcast matches).
    e.source()
        .and_then(|s| s.downcast_ref::<WsError>())
        .is_some_and(|e| matches!(e, WsError::Capacity(_)))
}

/// Route selection: `$request.body.action`, falling back to `$default`.
async fn dispatch(
    gw: &Gateway,
    id: &str,
    connected_at: DateTime<Utc>,
    source_ip: &str,
    body: String,
    base64: bool,
) {
    let action = if base64 {
        None
    } else {
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("action").and_then(|a| a.as_str()).map(str::to_owned))
    };
    let selected = action
        .as_deref()
        .filter(|a| !a.starts_with('$'))
        .and_then(|a| gw.routes.get(a).map(|h| (a.to_owned(), h)))
        .or_else(|| {
            gw.routes
                .get("$default")
                .map(|h| ("$default".to_owned(), h))
        });
    let Some((route_key, handler)) = selected else {
        // What API Gateway answers when no route matches.
        let msg = serde_json::json!({"message": "Forbidden", "connectionId": id, "requestId": uuid::Uuid::new_v4().to_string()});
        let _ = gw.registry.post(id, msg.to_string().as_bytes(), usize::MAX);
        return;
    };
    let mut req = ws_request(gw, &route_key, "MESSAGE", id, connected_at, source_ip);
    req.body = Some(body);
    req.is_base64_encoded = base64;
    let resp = handler(req).await;
    if !status_of(&resp).is_success() {
        tracing::warn!(
            connection = id,
            status = resp.status_code,
            "route handler failed"
        );
        let msg = serde_json::json!({"message": "Internal server error", "connectionId": id, "requestId": uuid::Uuid::new_v4().to_string()});
        let _ = gw.registry.post(id, msg.to_string().as_bytes(), usize::MAX);
    }
}

/// The error responses API Gateway's management API gives, with the error type header
/// the AWS SDKs read.
fn management_error(status: StatusCode, kind: &'static str, message: &str) -> Response {
    let mut r = (status, serde_json::json!({"message": message}).to_string()).into_response();
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-amzn-errortype", HeaderValue::from_static(kind));
    r
}

fn gone() -> Response {
    management_error(StatusCode::GONE, "GoneException", "")
}

async fn manage_post(State(gw): State<Gateway>, Path(id): Path<String>, body: Bytes) -> Response {
    match gw.registry.post(&id, &body, gw.limits.max_message) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(PostError::Gone) => gone(),
        Err(PostError::TooLarge) => management_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLargeException",
            "Message too long",
        ),
        Err(PostError::Throttled) => management_error(
            StatusCode::TOO_MANY_REQUESTS,
            "LimitExceededException",
            "the connection is not reading fast enough",
        ),
    }
}

async fn manage_get(State(gw): State<Gateway>, Path(id): Path<String>) -> Response {
    let live = gw.registry.lock();
    let Some(c) = live.get(&id) else {
        return gone();
    };
    let iso = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = serde_json::json!({
        "connectedAt": iso(c.connected_at),
        "lastActiveAt": iso(c.last_active),
        "identity": {"sourceIp": c.source_ip, "userAgent": c.user_agent},
    });
    let mut r = body.to_string().into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

async fn manage_delete(State(gw): State<Gateway>, Path(id): Path<String>) -> Response {
    match gw.registry.close(&id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(_) => gone(),
    }
}
