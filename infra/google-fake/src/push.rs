//! Push notifications for the local fakes of the Google APIs: the watch channels a
//! `*.watch` call opens, and the notifications Google would POST to their addresses.
//!
//! As Google documents it: a new channel first gets a `sync` message (message number 1);
//! each change of its resource then POSTs headers only — `X-Goog-Channel-ID`,
//! `X-Goog-Channel-Token` (when the channel has one), `X-Goog-Channel-Expiration`,
//! `X-Goog-Resource-ID`, `X-Goog-Resource-URI`, `X-Goog-Resource-State`,
//! `X-Goog-Message-Number` (growing per channel) and, for files, `X-Goog-Changed` — with
//! an empty body. `channels.stop` with the channel id and resource id ends it.
//!
//! Deliveries go out one at a time, in order, from one task. A channel that already has
//! a notification waiting to go out gets no second one (Google too coalesces bursts), so
//! a loop of 10,000 changes does not become 10,000 POSTs. Nothing is retried: each
//! delivery's outcome is recorded ([`PushHub::deliveries`]) for tests to look at.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::mpsc;

/// An open channel, as the fake keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushChannel {
    pub id: String,
    pub token: Option<String>,
    pub address: String,
    /// What it watches: `changes`, `file:<id>`, `calendar:<id>`.
    pub topic: String,
    pub resource_id: String,
    pub resource_uri: String,
    pub expiration: DateTime<Utc>,
    /// The number the next message gets.
    next_number: u64,
}

/// One POST the hub made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub channel: String,
    pub number: u64,
    pub state: String,
    /// The HTTP status the address answered, or None when the POST failed.
    pub status: Option<u16>,
}

struct Outgoing {
    channel: PushChannel,
    number: u64,
    state: String,
    changed: Option<String>,
}

#[derive(Default)]
struct HubState {
    channels: BTreeMap<String, PushChannel>,
    /// Channels with a notification queued and not yet sent.
    waiting: HashSet<String>,
    deliveries: Vec<Delivery>,
    paused: bool,
}

/// The watch channels of a fake, and the task that delivers their notifications.
#[derive(Clone)]
pub struct PushHub {
    state: Arc<Mutex<HubState>>,
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl std::fmt::Debug for PushHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushHub").finish_non_exhaustive()
    }
}

fn lock(state: &Mutex<HubState>) -> MutexGuard<'_, HubState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A channel with no `expiration` asked lives this long (Drive's default).
pub const DEFAULT_TTL: TimeDelta = TimeDelta::hours(1);

impl PushHub {
    /// A hub and its delivery task (call within a Tokio runtime).
    pub fn new() -> Self {
        let state = Arc::new(Mutex::new(HubState::default()));
        let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
        let delivery_state = state.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while let Some(out) = rx.recv().await {
                lock(&delivery_state).waiting.remove(&out.channel.id);
                let status = deliver(&http, &out).await;
                lock(&delivery_state).deliveries.push(Delivery {
                    channel: out.channel.id.clone(),
                    number: out.number,
                    state: out.state.clone(),
                    status,
                });
            }
        });
        Self { state, tx }
    }

    /// Open a channel on `topic` from a watch request body (`id`, `type: web_hook`,
    /// `address`, optional `token` and `expiration` in ms), answering Google's channel
    /// resource or its 400. Sends the `sync` message.
    pub fn watch(&self, topic: &str, resource_uri: &str, body: &Value) -> Response {
        let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
        let (Some(id), Some(address)) = (text("id"), text("address")) else {
            return bad_request("channel id and address are required");
        };
        if text("type").as_deref() != Some("web_hook") {
            return bad_request("channel type must be web_hook");
        }
        if !(address.starts_with("https://") || address.starts_with("http://127.0.0.1")) {
            return bad_request("WebHook callback must be HTTPS");
        }
        let expiration = match body.get("expiration") {
            None | Some(Value::Null) => Utc::now() + DEFAULT_TTL,
            Some(v) => match v
                .as_str()
                .and_then(|s| s.parse::<i64>().ok())
                .or(v.as_i64())
                .and_then(DateTime::from_timestamp_millis)
            {
                Some(at) => at,
                None => return bad_request("Invalid expiration"),
            },
        };
        let mut state = lock(&self.state);
        if state.channels.contains_key(&id) {
            return bad_request(&format!("Channel id {id} not unique"));
        }
        let channel = PushChannel {
            id: id.clone(),
            token: text("token"),
            address,
            topic: topic.to_owned(),
            resource_id: resource_id(topic),
            resource_uri: resource_uri.to_owned(),
            expiration,
            next_number: 1,
        };
        let mut answer = json!({
            "kind": "api#channel",
            "id": channel.id,
            "resourceId": channel.resource_id,
            "resourceUri": channel.resource_uri,
            "expiration": channel.expiration.timestamp_millis().to_string(),
        });
        if let Some(token) = &channel.token {
            answer["token"] = json!(token);
        }
        state.channels.insert(id.clone(), channel);
        self.queue(&mut state, &id, "sync", None);
        Json(answer).into_response()
    }

    /// `channels.stop`: 204, or Google's 404 for a channel it does not have.
    pub fn stop(&self, body: &Value) -> Response {
        let id = body.get("id").and_then(Value::as_str).unwrap_or_default();
        let resource = body
            .get("resourceId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut state = lock(&self.state);
        match state.channels.get(id) {
            Some(c) if c.resource_id == resource => {
                state.channels.remove(id);
                StatusCode::NO_CONTENT.into_response()
            }
            _ => crate::server::status_error(404),
        }
    }

    /// A change of `topic`: every live channel on it gets a notification with `state`
    /// (unless one is already waiting to go out).
    pub fn notify(&self, topic: &str, state_name: &str, changed: Option<&str>) {
        let mut state = lock(&self.state);
        if state.paused {
            return;
        }
        let now = Utc::now();
        let ids: Vec<String> = state
            .channels
            .values()
            .filter(|c| c.topic == topic && c.expiration > now)
            .map(|c| c.id.clone())
            .collect();
        for id in ids {
            if !state.waiting.contains(&id) {
                self.queue(&mut state, &id, state_name, changed);
            }
        }
    }

    fn queue(&self, state: &mut HubState, id: &str, state_name: &str, changed: Option<&str>) {
        let Some(channel) = state.channels.get_mut(id) else {
            return;
        };
        let number = channel.next_number;
        channel.next_number += 1;
        let out = Outgoing {
            channel: channel.clone(),
            number,
            state: state_name.to_owned(),
            changed: changed.map(str::to_owned),
        };
        state.waiting.insert(id.to_owned());
        // The receiver lives as long as the runtime; a send after it is gone is moot.
        let _ = self.tx.send(out);
    }

    /// Stop (true) or resume (false) sending notifications: changes made while paused
    /// are never notified, as when Google drops notifications.
    pub fn set_paused(&self, paused: bool) {
        lock(&self.state).paused = paused;
    }

    /// The open channels, by id.
    pub fn channels(&self) -> Vec<PushChannel> {
        lock(&self.state).channels.values().cloned().collect()
    }

    /// Every POST made so far, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.state).deliveries.clone()
    }
}

impl Default for PushHub {
    fn default() -> Self {
        Self::new()
    }
}

/// Google's resource ids are opaque and the same for every channel on one resource.
fn resource_id(topic: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "res-{}",
        &hex::encode(Sha256::digest(topic.as_bytes()))[..20]
    )
}

fn bad_request(message: &str) -> Response {
    crate::server::google_error(
        400,
        "global",
        "push.webhookUrlUnauthorized",
        message,
        Some("INVALID_ARGUMENT"),
        None,
    )
}

async fn deliver(http: &reqwest::Client, out: &Outgoing) -> Option<u16> {
    let c = &out.channel;
    let mut request = http
        .post(&c.address)
        .header("X-Goog-Channel-ID", &c.id)
        .header(
            "X-Goog-Channel-Expiration",
            httpdate::fmt_http_date(c.expiration.into()),
        )
        .header("X-Goog-Resource-ID", &c.resource_id)
        .header("X-Goog-Resource-URI", &c.resource_uri)
        .header("X-Goog-Resource-State", &out.state)
        .header("X-Goog-Message-Number", out.number.to_string());
    if let Some(token) = &c.token {
        request = request.header("X-Goog-Channel-Token", token);
    }
    if let Some(changed) = &out.changed {
        request = request.header("X-Goog-Changed", changed);
    }
    match request.send().await {
        Ok(response) => Some(response.status().as_u16()),
        Err(e) => {
            tracing::warn!(channel = %c.id, error = %e, "fake push delivery failed");
            None
        }
    }
}
