//! One `spawn_stack()` for every end-to-end test: the local stack in-process on free
//! loopback ports and a fresh data dir, and a real WebSocket client to talk to it.

use bandsync_local::{LocalStack, RunningStack, StackConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

pub const WAIT: Duration = Duration::from_secs(15);

/// Write a file the way careful apps do (and as Drive delivers them): whole, by renaming
/// a hidden temporary file into place, so a sync never sees it half-written.
pub fn put(path: impl AsRef<Path>, content: impl AsRef<[u8]>) {
    let path = path.as_ref();
    let name = path.file_name().expect("a file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).expect("write");
    std::fs::rename(&tmp, path).expect("rename into place");
}

pub fn test_config(base: &Path) -> StackConfig {
    bandsync::transport::metrics::set_enabled(false);
    let mut cfg = StackConfig::demo(base);
    cfg.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.ws_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.visibility_timeout = Duration::from_secs(2);
    cfg.reconcile_every = None;
    cfg.debounce = Duration::from_millis(20);
    cfg
}

pub struct TestStack {
    pub stack: RunningStack,
    /// Kept so the data dir lives as long as the stack.
    pub _dir: tempfile::TempDir,
}

impl TestStack {
    pub fn folder(&self) -> PathBuf {
        self.stack.config.folder.clone()
    }
    pub fn token(&self, user: &str, bands: &[&str]) -> String {
        self.stack.token(user, bands)
    }
    pub async fn client(&self, user: &str, bands: &[&str]) -> Client {
        Client::connect(&self.stack.ws_url, &self.token(user, bands)).await
    }
    pub fn http(&self) -> Http {
        Http {
            base: self.stack.http_url.clone(),
            client: reqwest::Client::new(),
        }
    }
}

pub async fn spawn_stack() -> TestStack {
    let dir = tempfile::tempdir().expect("temp dir");
    let stack = LocalStack::start(test_config(dir.path()))
        .await
        .expect("stack starts");
    TestStack { stack, _dir: dir }
}

pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

impl Http {
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
    pub async fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .body(body.to_owned());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames received but not yet taken.
    pending: Vec<Value>,
}

impl Client {
    pub async fn connect(url: &str, token: &str) -> Client {
        let (ws, _) = connect_async(format!("{url}?token={token}"))
            .await
            .expect("websocket connects");
        Client {
            ws,
            pending: Vec::new(),
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
    }

    /// The next text frame as JSON, or None on close / timeout.
    pub async fn recv(&mut self, wait: Duration) -> Option<Value> {
        if !self.pending.is_empty() {
            return Some(self.pending.remove(0));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match msg {
                Message::Text(t) => {
                    return Some(serde_json::from_str(&t).expect("frames are JSON"));
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// The next frame of `kind`; frames of other kinds are kept for later.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut skipped = Vec::new();
        let found = loop {
            if let Some(i) = self.pending.iter().position(|f| f["type"] == kind) {
                break self.pending.remove(i);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(frame) = tokio::time::timeout(left, self.next_from_socket())
                .await
                .ok()
                .flatten()
            else {
                panic!("no {kind} frame in time; pending: {:?}", self.pending);
            };
            if frame["type"] == kind {
                break frame;
            }
            skipped.push(frame);
        };
        let mut rest = std::mem::take(&mut self.pending);
        skipped.append(&mut rest);
        self.pending = skipped;
        found
    }

    async fn next_from_socket(&mut self) -> Option<Value> {
        loop {
            match self.ws.next().await?.ok()? {
                Message::Text(t) => {
                    return Some(serde_json::from_str(&t).expect("frames are JSON"));
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.send(json!({"action": "subscribe", "channel": channel}))
            .await;
        self.expect("subscribed").await
    }

    pub async fn resume(&mut self, channel: &str, after_seq: u64, epoch: &str) {
        self.send(
            json!({"action": "resume", "channel": channel, "after_seq": after_seq, "epoch": epoch}),
        )
        .await;
    }

    /// Collect `event` frames until `done` says enough, failing after WAIT.
    pub async fn events_until(&mut self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(&events) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.expect_event()).await {
                Ok(e) => events.push(e),
                Err(_) => panic!("timed out; events so far: {:#?}", names(&events)),
            }
        }
        events
    }

    async fn expect_event(&mut self) -> Value {
        self.expect("event").await
    }

    /// The frames received within `wait` (for "nothing more arrives" checks).
    pub async fn drain(&mut self, wait: Duration) -> Vec<Value> {
        let mut out = std::mem::take(&mut self.pending);
        while let Some(f) = self.recv(wait).await {
            out.push(f);
        }
        out
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

pub fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{}#{} {}",
                e["event"].as_str().unwrap_or("?"),
                e["seq"],
                e["data"]["path"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// The seqs of events, asserting they are gapless and increasing from `from`.
pub fn assert_gapless(events: &[Value], from: u64) {
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    let expected: Vec<u64> = (from..from + seqs.len() as u64).collect();
    assert_eq!(
        seqs,
        expected,
        "seqs must be gapless and in order: {:#?}",
        names(events)
    );
    let epochs: std::collections::HashSet<&str> =
        events.iter().filter_map(|e| e["epoch"].as_str()).collect();
    assert!(epochs.len() <= 1, "one epoch: {epochs:?}");
}

pub fn has_completed(events: &[Value], n: usize) -> bool {
    events
        .iter()
        .filter(|e| e["event"] == "sync.completed")
        .count()
        >= n
}

pub fn file_events(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["event"].as_str().is_some_and(|n| n.starts_with("file.")))
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["data"]["path"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}
