//! One way to run the local stack in a test or a bench: in-process on free loopback
//! ports with a fresh data dir ([`spawn_stack`]), a WebSocket test [`Client`] on the
//! `listen` client's socket, an HTTP client ([`Http`]), [`eventually`] (from the kit's
//! root, re-exported) and [`drain`] to wait until the pollers emptied the queues.

mod client;
mod log;

pub use bandsync::entities::records::Platform;
pub use client::Client;
pub use log::{SeqOrder, assert_gapless, file_events, has_completed, names};

use bandsync::ports::WatchChannelStore;
use bandsync_local::{LocalStack, RunningStack, StackConfig};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::wait::{WAIT, eventually};

/// Write a file the way careful apps do (and as Drive delivers them): whole, by renaming
/// a hidden temporary file into place, so a sync never sees it half-written.
pub fn put(path: impl AsRef<Path>, content: impl AsRef<[u8]>) {
    let path = path.as_ref();
    let name = path.file_name().expect("a file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).expect("write");
    std::fs::rename(&tmp, path).expect("rename into place");
}

/// The demo stack under `base` on free loopback ports, metrics off, with no periodic
/// reconcile (a test or a bench drives its own changes); the rest as the stack's defaults.
pub fn loopback_config(base: &Path) -> StackConfig {
    bandsync::transport::metrics::set_enabled(false);
    let mut cfg = StackConfig::demo(base);
    cfg.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.ws_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.reconcile_every = None;
    cfg
}

/// [`loopback_config`] quick to retry and to notice changes, for tests.
pub fn test_config(base: &Path) -> StackConfig {
    let mut cfg = loopback_config(base);
    cfg.visibility_timeout = Duration::from_secs(2);
    cfg.debounce = Duration::from_millis(20);
    cfg
}

/// A bench's option: the value after `name` on the command line (`-- --changes 500`),
/// or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A running stack and the data dir it lives in.
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
    /// A WebSocket client connected as `user` in `bands`.
    pub async fn client(&self, user: &str, bands: &[&str]) -> Client {
        Client::connect(&self.stack.ws_url, &self.token(user, bands)).await
    }
    pub fn http(&self) -> Http {
        Http::new(&self.stack.http_url)
    }
    /// Wait until the pollers have emptied the queues (see [`drain`]).
    pub async fn drain(&self) {
        drain(&self.stack).await;
    }
    /// The number of the last notification of the watched folder the stack took in (its
    /// webhook remembers it once the sync job is queued).
    pub async fn folder_notified(&self) -> Option<u64> {
        let cfg = &self.stack.config;
        let id = format!("folder-{}-{}", cfg.band, cfg.source);
        let channel = self.stack.store.get_watch_channel(&id).await;
        channel
            .expect("the folder's watch channel")
            .and_then(|c| c.last_message)
    }
    /// Wait until a change to the watched folder made after `before` (a
    /// [`Self::folder_notified`]) was taken in and its sync job has run.
    pub async fn settle_folder(&self, before: Option<u64>) {
        eventually("the folder change is taken in", || async {
            (self.folder_notified().await > before).then_some(())
        })
        .await;
        self.drain().await;
    }
}

/// The stack of [`test_config`] in a fresh temp dir.
pub async fn spawn_stack() -> TestStack {
    spawn_stack_with(|_| {}).await
}

/// [`spawn_stack`] with the test's changes to the configuration.
pub async fn spawn_stack_with(configure: impl FnOnce(&mut StackConfig)) -> TestStack {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = test_config(dir.path());
    configure(&mut cfg);
    let stack = LocalStack::start(cfg).await.expect("stack starts");
    TestStack { stack, _dir: dir }
}

/// Wait until the stack's pollers have handled every message of the sync and broadcast
/// queues (none visible, none in flight): every job queued so far has run and every
/// event it published has been pushed.
pub async fn drain(stack: &RunningStack) {
    eventually("the queues drain", || async {
        for queue in [&stack.sync_queue, &stack.broadcast_queue] {
            let depth = queue.depth().await.expect("queue depth");
            if depth.visible + depth.in_flight > 0 {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// The stack's HTTP API, answering (status, JSON body or null).
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

impl Http {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(self.client.get(format!("{}{path}", self.base)), token)
            .await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .body(body.to_owned());
        self.send(req, token).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(self.client.delete(format!("{}{path}", self.base)), token)
            .await
    }

    async fn send(&self, mut req: reqwest::RequestBuilder, token: Option<&str>) -> (u16, Value) {
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}
