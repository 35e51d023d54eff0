//! Test doubles for the ports that are not storage, and (with the `local` feature) a
//! harness that wires every handler to an in-memory [`EmbeddedStore`] and these fakes.
//!
//! - [`RecordingQueue`]: keeps every message it accepted; can be told to fail the Nth send.
//! - [`RecordingPusher`]: keeps every frame it delivered; per connection it can deliver,
//!   answer Gone, or fail the first K attempts.
//! - [`FixedClock`]: a clock that only moves when told to.
//! - [`FlakyLog`]: a channel log whose Nth append fails (a store outage mid-job).
//!
//! Builders for API Gateway events ([`ws_connect_event`], [`ws_message_event`],
//! [`ws_disconnect_event`], [`http_event`]) go through `serde_json::from_value` on JSON
//! shaped like what API Gateway sends, so the handlers see what they would see in AWS.
//!
//! Compiled for unit tests and with the `testing` feature (other crates' tests).

use crate::model::{ChannelHead, ChannelName, ConnectionId, Event, NewEvent};
use crate::ports::{
    ChannelLog, Clock, OutMessage, PortError, PortResult, PushOutcome, Pusher, Queue,
};
use async_trait::async_trait;
use aws_lambda_events::apigw::{
    ApiGatewayProxyResponse, ApiGatewayV2httpRequest, ApiGatewayV2httpResponse,
    ApiGatewayWebsocketProxyRequest,
};
use aws_lambda_events::encodings::Body;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The fixed "now" every test starts at (2026-03-01T12:00:00Z).
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_772_366_400, 0).expect("a valid timestamp")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------
// Queue

/// A queue that records what it accepted, in order. `fail_send(n)` makes the nth send
/// attempt (counted from 1 over the queue's life) fail with a backend error; the failed
/// message is not recorded.
#[derive(Debug, Default)]
pub struct RecordingQueue {
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    attempts: usize,
    fail_on: Vec<usize>,
    accepted: Vec<OutMessage>,
}

impl RecordingQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fail the `n`th send attempt (1-based, over the queue's whole life).
    pub fn fail_send(&self, n: usize) {
        lock(&self.state).fail_on.push(n);
    }

    /// Fail the next send attempt.
    pub fn fail_next_send(&self) {
        let mut s = lock(&self.state);
        let next = s.attempts + 1;
        s.fail_on.push(next);
    }

    /// Send attempts so far, failed ones included.
    pub fn attempts(&self) -> usize {
        lock(&self.state).attempts
    }

    /// Every accepted message, in send order.
    pub fn messages(&self) -> Vec<OutMessage> {
        lock(&self.state).accepted.clone()
    }

    /// The accepted messages an SQS FIFO queue would pass on: a repeat of a dedup id
    /// (within the 5-minute window, which a unit test never leaves) is dropped.
    pub fn deduplicated(&self) -> Vec<OutMessage> {
        let mut seen = std::collections::HashSet::new();
        self.messages()
            .into_iter()
            .filter(|m| seen.insert(m.dedup_id.clone()))
            .collect()
    }

    /// The accepted bodies decoded as `T`, in send order.
    pub fn bodies<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        self.messages()
            .iter()
            .map(|m| serde_json::from_str(&m.body).expect("a queued body decodes"))
            .collect()
    }
}

#[async_trait]
impl Queue for RecordingQueue {
    async fn send(&self, message: OutMessage) -> PortResult<()> {
        let mut s = lock(&self.state);
        s.attempts += 1;
        let n = s.attempts;
        if s.fail_on.contains(&n) {
            return Err(PortError::Backend(anyhow::anyhow!(
                "RecordingQueue: send #{n} fails (as the test asked)"
            )));
        }
        s.accepted.push(message);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Channel log

/// A [`ChannelLog`] that passes everything to another, except the appends it was told to
/// fail (a store outage at that moment): `fail_append(n)` fails the nth append attempt.
pub struct FlakyLog {
    inner: Arc<dyn ChannelLog>,
    state: Mutex<(usize, Vec<usize>)>,
}

impl FlakyLog {
    pub fn new(inner: Arc<dyn ChannelLog>) -> Self {
        Self {
            inner,
            state: Mutex::new((0, Vec::new())),
        }
    }

    /// Fail the `n`th append attempt (1-based, over the log's whole life).
    pub fn fail_append(&self, n: usize) {
        lock(&self.state).1.push(n);
    }
}

#[async_trait]
impl ChannelLog for FlakyLog {
    async fn append(&self, channel: &ChannelName, events: &[NewEvent]) -> PortResult<Vec<Event>> {
        {
            let mut s = lock(&self.state);
            s.0 += 1;
            if s.1.contains(&s.0) {
                return Err(PortError::Backend(anyhow::anyhow!(
                    "FlakyLog: append #{} fails (as the test asked)",
                    s.0
                )));
            }
        }
        self.inner.append(channel, events).await
    }

    async fn read_after(
        &self,
        channel: &ChannelName,
        after_seq: u64,
        limit: usize,
    ) -> PortResult<Vec<Event>> {
        self.inner.read_after(channel, after_seq, limit).await
    }

    async fn head(&self, channel: &ChannelName) -> PortResult<Option<ChannelHead>> {
        self.inner.head(channel).await
    }

    async fn prune(&self, channel: &ChannelName, before: DateTime<Utc>) -> PortResult<u64> {
        self.inner.prune(channel, before).await
    }

    async fn delivered(&self, channel: &ChannelName) -> PortResult<u64> {
        self.inner.delivered(channel).await
    }

    async fn mark_delivered(&self, channel: &ChannelName, seq: u64) -> PortResult<()> {
        self.inner.mark_delivered(channel, seq).await
    }
}

// ---------------------------------------------------------------------------------------
// Pusher

/// What a [`RecordingPusher`] does with posts to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PushBehaviour {
    /// Every post is delivered.
    #[default]
    Deliver,
    /// Every post answers Gone (API Gateway's 410).
    Gone,
    /// The first K posts fail with an error, later ones are delivered
    /// (`u32::MAX`: always fail).
    ErrFirst(u32),
}

/// A pusher that records every delivered frame per connection.
#[derive(Debug, Default)]
pub struct RecordingPusher {
    state: Mutex<PusherState>,
}

#[derive(Debug, Default)]
struct PusherState {
    behaviour: HashMap<ConnectionId, PushBehaviour>,
    attempts: HashMap<ConnectionId, u32>,
    delivered: Vec<(ConnectionId, Vec<u8>)>,
}

impl RecordingPusher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&self, connection: &ConnectionId, behaviour: PushBehaviour) {
        lock(&self.state)
            .behaviour
            .insert(connection.clone(), behaviour);
    }

    /// Post attempts to a connection, failed ones included.
    pub fn attempts(&self, connection: &ConnectionId) -> u32 {
        lock(&self.state)
            .attempts
            .get(connection)
            .copied()
            .unwrap_or(0)
    }

    /// Every delivered (connection, bytes), in post order.
    pub fn delivered(&self) -> Vec<(ConnectionId, Vec<u8>)> {
        lock(&self.state).delivered.clone()
    }

    /// The frames delivered to one connection, parsed as JSON, in post order.
    pub fn frames(&self, connection: &ConnectionId) -> Vec<Value> {
        self.delivered()
            .into_iter()
            .filter(|(c, _)| c == connection)
            .map(|(_, bytes)| serde_json::from_slice(&bytes).expect("a frame is JSON"))
            .collect()
    }

    /// The one frame delivered to a connection (panics unless exactly one was).
    pub fn only_frame(&self, connection: &ConnectionId) -> Value {
        let mut frames = self.frames(connection);
        assert_eq!(
            frames.len(),
            1,
            "expected exactly one frame to {connection}, got {frames:?}"
        );
        frames.remove(0)
    }
}

#[async_trait]
impl Pusher for RecordingPusher {
    async fn post(&self, connection: &ConnectionId, data: &[u8]) -> PortResult<PushOutcome> {
        let mut s = lock(&self.state);
        let attempt = {
            let a = s.attempts.entry(connection.clone()).or_default();
            *a += 1;
            *a
        };
        match s.behaviour.get(connection).copied().unwrap_or_default() {
            PushBehaviour::Gone => Ok(PushOutcome::Gone),
            PushBehaviour::ErrFirst(k) if attempt <= k => Err(PortError::Backend(anyhow::anyhow!(
                "RecordingPusher: attempt {attempt} to {connection} fails"
            ))),
            PushBehaviour::Deliver | PushBehaviour::ErrFirst(_) => {
                s.delivered.push((connection.clone(), data.to_vec()));
                Ok(PushOutcome::Delivered)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Notifier

/// Keeps every alert as (subject, message).
#[derive(Debug, Default)]
pub struct RecordingNotifier {
    alerts: Mutex<Vec<(String, String)>>,
}

impl RecordingNotifier {
    pub fn alerts(&self) -> Vec<(String, String)> {
        lock(&self.alerts).clone()
    }
}

#[async_trait]
impl crate::ports::Notifier for RecordingNotifier {
    async fn alert(&self, subject: &str, message: &str) -> PortResult<()> {
        lock(&self.alerts).push((subject.to_owned(), message.to_owned()));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Clock

/// A clock that stands still until set or advanced.
#[derive(Debug)]
pub struct FixedClock {
    now: Mutex<DateTime<Utc>>,
}

impl FixedClock {
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(now),
        }
    }

    pub fn set(&self, now: DateTime<Utc>) {
        *lock(&self.now) = now;
    }

    pub fn advance(&self, by: TimeDelta) {
        *lock(&self.now) += by;
    }
}

impl Default for FixedClock {
    fn default() -> Self {
        Self::new(t0())
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *lock(&self.now)
    }
}

// ---------------------------------------------------------------------------------------
// API Gateway events

/// The `requestContext` API Gateway gives every WebSocket route, at [`t0`].
fn ws_event(route_key: &str, event_type: &str, connection: &str, mut extra: Value) -> Value {
    let ms = t0().timestamp_millis();
    let mut context = json!({
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": "Xq1dGFnbIAMFqmw=",
        "requestTime": "01/Mar/2026:12:00:00 +0000",
        "messageDirection": "IN",
        "stage": "prod",
        "connectedAt": ms,
        "requestTimeEpoch": ms,
        "identity": {"sourceIp": "192.0.2.10", "userAgent": "bandsync-app/1.0"},
        "requestId": "Xq1dGFnbIAMFqmw=",
        "domainName": "abcd1234.execute-api.eu-west-1.amazonaws.com",
        "connectionId": connection,
        "apiId": "abcd1234",
    });
    if let Some(more) = extra
        .get_mut("requestContext")
        .and_then(Value::as_object_mut)
    {
        for (k, v) in std::mem::take(more) {
            context[k] = v;
        }
    }
    extra["requestContext"] = context;
    extra["isBase64Encoded"] = json!(false);
    extra
}

fn ws_request(event: Value) -> ApiGatewayWebsocketProxyRequest {
    serde_json::from_value(event).expect("a WebSocket event fixture decodes")
}

/// A `$connect` event; `token` rides in the query string as browsers send it, extra
/// `headers` (e.g. `Authorization`) are added to the handshake's.
pub fn ws_connect_event(
    connection: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> ApiGatewayWebsocketProxyRequest {
    let mut h = json!({
        "Host": "abcd1234.execute-api.eu-west-1.amazonaws.com",
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "X-Forwarded-For": "192.0.2.10",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    });
    for (k, v) in headers {
        h[*k] = json!(v);
    }
    let multi: serde_json::Map<String, Value> = h
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), json!([v])))
        .collect();
    let mut event = json!({"headers": h, "multiValueHeaders": multi});
    if let Some(t) = token {
        event["queryStringParameters"] = json!({"token": t});
        event["multiValueQueryStringParameters"] = json!({"token": [t]});
    }
    ws_request(ws_event("$connect", "CONNECT", connection, event))
}

/// A MESSAGE event on the `$default` route carrying one text frame.
pub fn ws_message_event(connection: &str, body: &str) -> ApiGatewayWebsocketProxyRequest {
    let event = json!({
        "requestContext": {"messageId": "Xq1dGcAbIAMCIhw="},
        "body": body,
    });
    ws_request(ws_event("$default", "MESSAGE", connection, event))
}

/// A `$disconnect` event (client closed without a status).
pub fn ws_disconnect_event(connection: &str) -> ApiGatewayWebsocketProxyRequest {
    let event = json!({
        "headers": {"Host": "abcd1234.execute-api.eu-west-1.amazonaws.com"},
        "multiValueHeaders": {"Host": ["abcd1234.execute-api.eu-west-1.amazonaws.com"]},
        "requestContext": {
            "disconnectStatusCode": 1005,
            "disconnectReason": "Client-side close frame status not set",
        },
    });
    ws_request(ws_event("$disconnect", "DISCONNECT", connection, event))
}

/// An HTTP API (payload format 2.0) event. `target` is the path with an optional query
/// string (`/sync/status?band=demo`), as a client would request it.
pub fn http_event(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> ApiGatewayV2httpRequest {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: serde_json::Map<String, Value> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), json!(v))
        })
        .collect();
    let mut h = json!({
        "accept": "*/*",
        "host": "api1234.execute-api.eu-west-1.amazonaws.com",
        "user-agent": "curl/8.5.0",
        "x-forwarded-for": "192.0.2.10",
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    });
    for (k, v) in headers {
        h[k.to_ascii_lowercase()] = json!(v);
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": h,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api1234",
            "domainName": "api1234.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "api1234",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.10",
                "userAgent": "curl/8.5.0",
            },
            "requestId": "LV7fzho-PHcEJPw=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Mar/2026:12:00:00 +0000",
            "timeEpoch": t0().timestamp_millis(),
        },
        "isBase64Encoded": false,
    });
    if !params.is_empty() {
        event["queryStringParameters"] = Value::Object(params);
    }
    if let Some(b) = body {
        event["body"] = json!(b);
    }
    serde_json::from_value(event).expect("an HTTP API event fixture decodes")
}

/// An SQS event as a FIFO queue delivers a batch to Lambda: `(message id, body)` pairs,
/// in order, all in `group`.
pub fn sqs_event(group: &str, messages: &[(&str, &str)]) -> aws_lambda_events::sqs::SqsEvent {
    let sent = t0().timestamp_millis().to_string();
    let records: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, (id, body))| {
            json!({
                "messageId": id,
                "receiptHandle": format!("AQEB{id}"),
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": sent,
                    "SenderId": "AROAIWPX5BD2BHG722MW4:sender",
                    "ApproximateFirstReceiveTimestamp": sent,
                    "SequenceNumber": format!("1884949646046769{i:04}"),
                    "MessageGroupId": group,
                    "MessageDeduplicationId": id,
                },
                "messageAttributes": {},
                "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:bandsync.fifo",
                "awsRegion": "eu-west-1",
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("an SQS event fixture decodes")
}

/// The message ids a batch response reports failed, in order.
pub fn failed_ids(response: &aws_lambda_events::sqs::SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

/// A response's status and JSON body, whichever API Gateway payload it is.
pub trait JsonResponse {
    fn status(&self) -> i64;
    fn body_json(&self) -> Value;
}

fn body_json(body: Option<&Body>) -> Value {
    match body {
        Some(Body::Text(t)) => serde_json::from_str(t).expect("a JSON body"),
        Some(Body::Binary(b)) => serde_json::from_slice(b).expect("a JSON body"),
        _ => Value::Null,
    }
}

impl JsonResponse for ApiGatewayV2httpResponse {
    fn status(&self) -> i64 {
        self.status_code
    }
    fn body_json(&self) -> Value {
        body_json(self.body.as_ref())
    }
}

impl JsonResponse for ApiGatewayProxyResponse {
    fn status(&self) -> i64 {
        self.status_code
    }
    fn body_json(&self) -> Value {
        body_json(self.body.as_ref())
    }
}

#[cfg(feature = "local")]
pub use harness::*;

#[cfg(feature = "local")]
mod harness {
    use super::*;
    use crate::adapters::local::EmbeddedStore;
    use crate::api::Api;
    use crate::auth::TokenKey;
    use crate::broadcast::Broadcaster;
    use crate::model::*;
    use crate::ports::{ChannelLog, ConfigStore, ConnectionStore, SourceStore, Store};
    use crate::publish::Publisher;
    use crate::sync::SyncWorker;
    use crate::webhook::WebhookIntake;
    use crate::ws_connect::WsConnect;
    use crate::ws_disconnect::WsDisconnect;
    use crate::ws_message::WsMessage;
    use std::time::Duration;

    pub fn band(id: &str) -> BandId {
        BandId::parse(id).expect("a valid band id")
    }

    pub fn source_id(id: &str) -> SourceId {
        SourceId::parse(id).expect("a valid source id")
    }

    pub fn conn_id(id: &str) -> ConnectionId {
        ConnectionId::parse(id).expect("a valid connection id")
    }

    pub fn channel(name: &str) -> ChannelName {
        ChannelName::parse(name).expect("a valid channel name")
    }

    /// Every handler wired to one in-memory store, recording queues, a recording pusher
    /// and a fixed clock, as the Lambda functions and the local stack wire them.
    pub struct Harness {
        pub store: Arc<EmbeddedStore>,
        pub sync_queue: Arc<RecordingQueue>,
        pub broadcast_queue: Arc<RecordingQueue>,
        pub pusher: Arc<RecordingPusher>,
        pub clock: Arc<FixedClock>,
        pub tokens: TokenKey,
        /// The store's channel log as the publisher sees it (can be told to fail).
        pub log: Arc<FlakyLog>,
    }

    impl Default for Harness {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Harness {
        pub fn new() -> Self {
            let store = Arc::new(EmbeddedStore::in_memory().expect("an in-memory store"));
            Self {
                log: Arc::new(FlakyLog::new(store.clone())),
                store,
                sync_queue: Arc::new(RecordingQueue::new()),
                broadcast_queue: Arc::new(RecordingQueue::new()),
                pusher: Arc::new(RecordingPusher::new()),
                clock: Arc::new(FixedClock::default()),
                tokens: TokenKey::new("unit-test-secret"),
            }
        }

        fn store_dyn(&self) -> Arc<dyn Store> {
            self.store.clone()
        }

        /// The clock's now.
        pub fn now(&self) -> DateTime<Utc> {
            self.clock.now()
        }

        /// A token for `user` in `bands`, valid for an hour from the clock's now.
        pub fn token(&self, user: &str, bands: &[&str]) -> String {
            self.tokens
                .mint(user, bands, self.clock.now(), TimeDelta::hours(1))
        }

        /// `Authorization` header value for [`Self::token`].
        pub fn bearer(&self, user: &str, bands: &[&str]) -> String {
            format!("Bearer {}", self.token(user, bands))
        }

        /// A band with its configuration (every file type).
        pub async fn add_band(&self, id: &str) -> BandId {
            let b = band(id);
            self.store
                .put_config(&SyncConfiguration {
                    band: b.clone(),
                    name: id.to_owned(),
                    file_types: vec![],
                    google_credentials: None,
                })
                .await
                .expect("put_config");
            b
        }

        /// A source of a band (a folder source at `location`).
        pub async fn add_source(&self, band: &BandId, id: &str, location: &str) -> Source {
            let s = Source::new(band.clone(), source_id(id), SourceKind::Folder, location);
            self.store.put_source(&s).await.expect("put_source");
            s
        }

        /// A connection registered as $connect would, for `user` in `bands`.
        pub async fn add_connection(&self, id: &str, user: &str, bands: &[&str]) -> ConnectionId {
            let now = self.clock.now();
            let conn = Connection {
                id: conn_id(id),
                user: UserId::parse(user).expect("a valid user id"),
                bands: bands.iter().map(|b| band(b)).collect(),
                connected_at: now,
                expires_at: now + crate::model::CONNECTION_TTL,
            };
            self.store
                .put_connection(&conn)
                .await
                .expect("put_connection");
            conn.id
        }

        /// A job as the webhook or the API would queue it, requested now.
        pub fn sync_job(
            &self,
            id: &str,
            band: &BandId,
            source: &SourceId,
            trigger: Trigger,
        ) -> SyncJob {
            SyncJob {
                id: id.to_owned(),
                band: band.clone(),
                source: source.clone(),
                trigger,
                full: false,
                requested_by: None,
                requested_at: self.clock.now(),
            }
        }

        /// Append events named `names` to a channel's log (ids derived from the names).
        pub async fn append(&self, channel: &ChannelName, names: &[&str]) -> Vec<Event> {
            let events: Vec<NewEvent> = names
                .iter()
                .enumerate()
                .map(|(i, name)| NewEvent {
                    id: format!("{name}#{i}"),
                    event: (*name).to_owned(),
                    ts: self.clock.now(),
                    data: json!({"n": i}),
                })
                .collect();
            self.store.append(channel, &events).await.expect("append")
        }

        /// Everything in a channel's log, oldest first.
        pub async fn log(&self, channel: &ChannelName) -> Vec<Event> {
            self.store
                .read_after(channel, 0, 10_000)
                .await
                .expect("read_after")
        }

        pub fn publisher(&self) -> Publisher {
            Publisher::new(self.log.clone(), self.broadcast_queue.clone())
        }

        pub fn sync_worker(&self) -> SyncWorker {
            SyncWorker::new(self.store_dyn(), self.publisher(), self.clock.clone())
        }

        /// A broadcaster that retries without waiting.
        pub fn broadcaster(&self) -> Broadcaster {
            let mut b = Broadcaster::new(
                self.store.clone(),
                self.store.clone(),
                self.pusher.clone(),
                self.clock.clone(),
            );
            b.backoff = Duration::ZERO;
            b
        }

        pub fn ws_connect(&self) -> WsConnect {
            WsConnect::new(self.store.clone(), self.tokens.clone(), self.clock.clone())
        }

        pub fn ws_disconnect(&self) -> WsDisconnect {
            WsDisconnect::new(self.store.clone())
        }

        pub fn ws_message(&self) -> WsMessage {
            WsMessage::new(
                self.store.clone(),
                self.store.clone(),
                self.store.clone(),
                self.sync_queue.clone(),
                self.pusher.clone(),
                self.clock.clone(),
            )
        }

        pub fn webhook(&self) -> WebhookIntake {
            WebhookIntake::new(
                self.store.clone(),
                self.sync_queue.clone(),
                self.clock.clone(),
            )
        }

        pub fn api(&self) -> Api {
            Api::new(
                self.store_dyn(),
                self.sync_queue.clone(),
                self.tokens.clone(),
                self.clock.clone(),
                vec![("store".to_owned(), self.store.clone())],
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(n: usize) -> OutMessage {
        OutMessage {
            group: "g".into(),
            dedup_id: format!("d{n}"),
            body: format!("{n}"),
        }
    }

    #[tokio::test]
    async fn recording_queue_fails_only_the_nth_send() {
        let q = RecordingQueue::new();
        q.fail_send(2);
        assert!(q.send(out(1)).await.is_ok());
        assert!(q.send(out(2)).await.is_err());
        assert!(q.send(out(3)).await.is_ok());
        let ids: Vec<_> = q.messages().into_iter().map(|m| m.dedup_id).collect();
        assert_eq!(ids, ["d1", "d3"]);
        assert_eq!(q.attempts(), 3);
    }

    #[tokio::test]
    async fn recording_pusher_follows_each_connections_script() {
        let p = RecordingPusher::new();
        let (ok, gone, flaky) = (
            ConnectionId::parse("ok").unwrap(),
            ConnectionId::parse("gone").unwrap(),
            ConnectionId::parse("flaky").unwrap(),
        );
        p.set(&gone, PushBehaviour::Gone);
        p.set(&flaky, PushBehaviour::ErrFirst(1));
        assert_eq!(p.post(&ok, b"{}").await.unwrap(), PushOutcome::Delivered);
        assert_eq!(p.post(&gone, b"{}").await.unwrap(), PushOutcome::Gone);
        assert!(p.post(&flaky, b"{}").await.is_err());
        assert_eq!(p.post(&flaky, b"{}").await.unwrap(), PushOutcome::Delivered);
        assert_eq!(p.frames(&ok).len(), 1);
        assert!(p.frames(&gone).is_empty());
        assert_eq!(p.attempts(&flaky), 2);
    }

    #[test]
    fn fixed_clock_moves_only_when_told() {
        let c = FixedClock::default();
        assert_eq!(c.now(), t0());
        c.advance(TimeDelta::seconds(5));
        assert_eq!(c.now(), t0() + TimeDelta::seconds(5));
        c.set(t0());
        assert_eq!(c.now(), t0());
    }

    #[test]
    fn event_fixtures_decode_as_api_gateway_sends_them() {
        let c = ws_connect_event("AAAA1234=", Some("tok"), &[]);
        assert_eq!(c.request_context.route_key.as_deref(), Some("$connect"));
        assert_eq!(
            c.request_context.connection_id.as_deref(),
            Some("AAAA1234=")
        );
        assert_eq!(c.query_string_parameters.first("token"), Some("tok"));
        let m = ws_message_event("AAAA1234=", r#"{"action":"ping"}"#);
        assert_eq!(m.request_context.event_type.as_deref(), Some("MESSAGE"));
        assert_eq!(m.body.as_deref(), Some(r#"{"action":"ping"}"#));
        let h = http_event(
            "POST",
            "/sync/status?band=demo&limit=2",
            &[("Authorization", "x")],
            None,
        );
        assert_eq!(h.request_context.http.method, http::Method::POST);
        assert_eq!(h.query_string_parameters.first("limit"), Some("2"));
        assert_eq!(
            h.headers.get("authorization").unwrap().to_str().unwrap(),
            "x"
        );
    }
}
