//! The tokio driver: it performs the core's effects with real sockets
//! (tokio-tungstenite), timers (the wall clock, so a sleep shows as a late timer) and a
//! [`Storage`], and hands the app what the core emits. One task owns the core; the
//! [`Client`] and its [`Channel`]s talk to it over a channel of commands.

use crate::core::{
    AppEvent, Config, Core, Cursor, Device, Effect, Env, Input, LocalError, Ms, Parked, Pending,
    SocketId, State, Ticket, TimerId, TokenResult,
};
use crate::storage::{Change, Storage, StorageError};
use bandsync::model::ChannelName;
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Why `getToken` failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The member is not (or no longer) allowed in: the client fails and stops retrying.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Anything else (the network, the auth service): back off and retry.
    #[error("{0}")]
    Other(String),
}

/// Called before every connect for a fresh token.
pub type GetToken = Arc<dyn Fn() -> BoxFuture<'static, Result<String, TokenError>> + Send + Sync>;
/// Loads the app's state of a channel and says where it stands (`None`: subscribe from
/// now).
pub type GetState = Arc<dyn Fn() -> BoxFuture<'static, Option<Cursor>> + Send + Sync>;

/// A [`GetToken`] from an async closure.
pub fn get_token<F, Fut>(f: F) -> GetToken
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, TokenError>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

/// A [`GetState`] from an async closure.
pub fn get_state<F, Fut>(f: F) -> GetState
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<Cursor>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

pub struct Options {
    pub get_token: GetToken,
    /// Registered on every connect; needed to push.
    pub device: Option<Device>,
    pub storage: Box<dyn Storage>,
    /// Close the socket after the app was in the background this long (`None`: never).
    pub hidden_close_after: Option<Duration>,
    /// How often a suspended client retries.
    pub suspended_retry: Duration,
}

impl Options {
    pub fn new(get_token: GetToken, storage: impl Storage) -> Self {
        Self {
            get_token,
            device: None,
            storage: Box::new(storage),
            hidden_close_after: None,
            suspended_retry: Duration::from_secs(60),
        }
    }

    pub fn device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }
}

#[derive(Default, Clone)]
pub struct ChannelOptions {
    pub get_state: Option<GetState>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{code}: {message}")]
    Local { code: &'static str, message: String },
    #[error("channel {0:?}: {1}")]
    InvalidChannel(String, String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the client was closed")]
    Closed,
    /// The server refused the request (a channel's `subscribe`/`resume`).
    #[error("{code}: {message}")]
    Server { code: String, message: String },
}

impl ClientError {
    /// `frame_too_large`, `no_device`, `not_connected`, `invalid_channel`, `storage`,
    /// `closed`, ...
    pub fn code(&self) -> &str {
        match self {
            ClientError::Local { code, .. } => code,
            ClientError::InvalidChannel(..) => "invalid_channel",
            ClientError::Storage(e) => e.code(),
            ClientError::Closed => "closed",
            ClientError::Server { code, .. } => code,
        }
    }
}

impl From<LocalError> for ClientError {
    fn from(e: LocalError) -> Self {
        ClientError::Local {
            code: e.code,
            message: e.message,
        }
    }
}

/// A final verdict on a pushed mutation.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `None`: the server refused the frame, the mutation was parked locally and its mid
    /// given back.
    pub mid: Option<u64>,
    /// The mutation as sent.
    pub mutation: Value,
    /// The server's verdict (`status`, `version`, `seq`, `code`, ...).
    pub result: Value,
}

impl Verdict {
    /// The status, a `duplicate`'s original one.
    pub fn status(&self) -> &str {
        let s = self.result["status"].as_str().unwrap_or_default();
        if s == "duplicate" {
            self.result["original_status"].as_str().unwrap_or(s)
        } else {
            s
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChannelEvent {
    /// Each event once, in seq order, gapless. `text` is the frame as the server sent it.
    Event {
        seq: u64,
        frame: Value,
        text: String,
    },
    /// `history_lost` or `epoch_changed`: state was refetched.
    Reset {
        reason: String,
    },
    Presence {
        frame: Value,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    pub previous: State,
    pub current: State,
    pub reason: String,
    pub retry_in_ms: Option<Ms>,
}

enum Command {
    Connect,
    Subscribe {
        channel: String,
        get_state: Option<GetState>,
        live: oneshot::Sender<Result<(), ClientError>>,
    },
    Unsubscribe(String),
    Listen {
        channel: String,
        tx: mpsc::UnboundedSender<ChannelEvent>,
    },
    States(mpsc::UnboundedSender<StateChange>),
    Verdicts(mpsc::UnboundedSender<Verdict>),
    Push {
        mutation: Map<String, Value>,
        reply: oneshot::Sender<Result<Verdict, ClientError>>,
    },
    Presence {
        band: String,
        reply: oneshot::Sender<Result<Value, ClientError>>,
    },
    Dismiss(String),
    Env(Env),
    Close(oneshot::Sender<()>),
}

#[derive(Default)]
struct Snapshot {
    pending: Vec<Pending>,
    parked: Vec<Parked>,
}

/// A bandsync client. Cheap to clone; every clone drives the same connection.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<State>,
    snapshot: Arc<Mutex<Snapshot>>,
}

/// A declared channel (`client.channel(name, ...)`).
#[derive(Clone)]
pub struct Channel {
    name: String,
    options: ChannelOptions,
    tx: mpsc::UnboundedSender<Command>,
}

fn now_ms() -> Ms {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Ms)
}

impl Client {
    /// A client for the WebSocket API at `url`. It reads its storage now (cursors, the
    /// outbox) and connects on [`Client::connect`], the first subscribe or the first push.
    /// Must be called inside a tokio runtime.
    pub fn new(url: impl Into<String>, mut options: Options) -> Result<Self, ClientError> {
        let stored = options.storage.load()?;
        let config = Config {
            url: url.into(),
            device: options.device.clone(),
            hidden_close_after_ms: options.hidden_close_after.map(|d| d.as_millis() as Ms),
            suspended_retry_ms: options.suspended_retry.as_millis() as Ms,
        };
        let core = Core::new(config, &stored, Box::new(rand_unit));
        let (tx, rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(State::Idle);
        let snapshot = Arc::new(Mutex::new(Snapshot {
            pending: core.pending(),
            parked: core.parked(),
        }));
        let (inputs_tx, inputs) = mpsc::unbounded_channel();
        let driver = Driver {
            core,
            storage: options.storage,
            get_token: options.get_token,
            get_states: HashMap::new(),
            sockets: HashMap::new(),
            timers: HashMap::new(),
            inputs_tx,
            listeners: HashMap::new(),
            states: Vec::new(),
            verdicts: Vec::new(),
            live: HashMap::new(),
            pushes: HashMap::new(),
            presences: HashMap::new(),
            next_ticket: 1,
            state_tx,
            snapshot: snapshot.clone(),
            changes: Vec::new(),
        };
        tokio::spawn(driver.run(rx, inputs));
        Ok(Self {
            tx,
            state,
            snapshot,
        })
    }

    fn command(&self, c: Command) {
        // The driver only ends after `close()`; then commands have no one to do them.
        let _ = self.tx.send(c);
    }

    pub fn connect(&self) {
        self.command(Command::Connect);
    }

    /// Declare a channel (`band:<id>`, `user:<id>`, `system`); `subscribe()` makes it part
    /// of every connection.
    pub fn channel(&self, name: &str, options: ChannelOptions) -> Result<Channel, ClientError> {
        ChannelName::parse(name)
            .map_err(|e| ClientError::InvalidChannel(name.to_owned(), e.to_string()))?;
        Ok(Channel {
            name: name.to_owned(),
            options,
            tx: self.tx.clone(),
        })
    }

    /// Queue a mutation (`band`, `type`, `id`, `op`, `base_version`, `fields`): stored
    /// before it is sent, replayed until it has a final verdict.
    pub async fn push(&self, mutation: Value) -> Result<Verdict, ClientError> {
        let Value::Object(mutation) = mutation else {
            return Err(ClientError::Local {
                code: "invalid_mutation",
                message: "a mutation is a JSON object".into(),
            });
        };
        let (reply, rx) = oneshot::channel();
        self.command(Command::Push { mutation, reply });
        rx.await.unwrap_or(Err(ClientError::Closed))
    }

    /// The queued mutations, oldest first.
    pub fn pending(&self) -> Vec<Pending> {
        self.snapshot
            .lock()
            .map(|s| s.pending.clone())
            .unwrap_or_default()
    }

    /// The rejected mutations the member should see, oldest first.
    pub fn parked(&self) -> Vec<Parked> {
        self.snapshot
            .lock()
            .map(|s| s.parked.clone())
            .unwrap_or_default()
    }

    pub fn dismiss(&self, key: &str) {
        self.command(Command::Dismiss(key.to_owned()));
    }

    pub fn state(&self) -> State {
        *self.state.borrow()
    }

    /// The state as it changes.
    pub fn watch_state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    /// Every state change, with its reason (none is skipped, unlike [`Self::watch_state`]).
    pub fn state_changes(&self) -> mpsc::UnboundedReceiver<StateChange> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.command(Command::States(tx));
        rx
    }

    /// Every final verdict, those of mutations queued before a restart included.
    pub fn verdicts(&self) -> mpsc::UnboundedReceiver<Verdict> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.command(Command::Verdicts(tx));
        rx
    }

    /// Tell the client what the platform knows (online, offline, visible, hidden, wake).
    pub fn env(&self, env: Env) {
        self.command(Command::Env(env));
    }

    /// Close the sockets with 1000 and stop; pending pushes stay in storage.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Close(tx));
        let _ = rx.await;
    }
}

impl Channel {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Make the channel part of every connection; resolves when it is live (after any
    /// replay).
    pub async fn subscribe(&self) -> Result<(), ClientError> {
        let (live, rx) = oneshot::channel();
        let _ = self.tx.send(Command::Subscribe {
            channel: self.name.clone(),
            get_state: self.options.get_state.clone(),
            live,
        });
        rx.await.unwrap_or(Err(ClientError::Closed))
    }

    pub fn unsubscribe(&self) {
        let _ = self.tx.send(Command::Unsubscribe(self.name.clone()));
    }

    /// The channel's events, resets and presence changes from now on. Ask before
    /// `subscribe()` to miss none.
    pub fn events(&self) -> mpsc::UnboundedReceiver<ChannelEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.tx.send(Command::Listen {
            channel: self.name.clone(),
            tx,
        });
        rx
    }

    /// Who of the band is online (a `band:` channel): the server's `presence` frame.
    pub async fn presence(&self) -> Result<Value, ClientError> {
        let band = self
            .name
            .strip_prefix("band:")
            .ok_or_else(|| {
                ClientError::InvalidChannel(self.name.clone(), "presence is a band's".into())
            })?
            .to_owned();
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Command::Presence { band, reply });
        rx.await.unwrap_or(Err(ClientError::Closed))
    }
}

/// A uniform draw in `[0, 1)` for the backoff's jitter.
fn rand_unit() -> f64 {
    bandsync::backoff::random_unit()
}

enum Out {
    Text(String),
    Close(u16),
}

struct Driver {
    core: Core,
    storage: Box<dyn Storage>,
    get_token: GetToken,
    get_states: HashMap<String, GetState>,
    sockets: HashMap<SocketId, mpsc::UnboundedSender<Out>>,
    timers: HashMap<TimerId, tokio::time::Instant>,
    inputs_tx: mpsc::UnboundedSender<Input>,
    listeners: HashMap<String, Vec<mpsc::UnboundedSender<ChannelEvent>>>,
    states: Vec<mpsc::UnboundedSender<StateChange>>,
    verdicts: Vec<mpsc::UnboundedSender<Verdict>>,
    live: HashMap<String, Vec<oneshot::Sender<Result<(), ClientError>>>>,
    pushes: HashMap<Ticket, oneshot::Sender<Result<Verdict, ClientError>>>,
    presences: HashMap<Ticket, oneshot::Sender<Result<Value, ClientError>>>,
    next_ticket: Ticket,
    state_tx: watch::Sender<State>,
    snapshot: Arc<Mutex<Snapshot>>,
    /// Storage changes not yet written (flushed before any send, and after each input).
    changes: Vec<Change>,
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut inputs: mpsc::UnboundedReceiver<Input>,
    ) {
        loop {
            let next = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(id, at)| (*id, *at));
            let sleep = async {
                match next {
                    Some((_, at)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                // The app's calls first: a listener asked for before something happened
                // (`state_changes()`, `events()`) is registered before it is reported.
                biased;
                command = commands.recv() => match command {
                    Some(Command::Close(done)) => {
                        self.handle(Input::Close);
                        // The storage (and a FileStorage's lock) is let go before
                        // close() returns, so the next client of the device may start.
                        drop(self);
                        let _ = done.send(());
                        return;
                    }
                    Some(c) => self.command(c),
                    None => {
                        // Every handle was dropped: close as `close()` would.
                        self.handle(Input::Close);
                        return;
                    }
                },
                // Timers before socket input: a due timer (a heartbeat, a deadline) is not
                // starved by a flood of frames; one not due yet costs nothing here.
                () = sleep => {
                    if let Some((id, _)) = next {
                        self.timers.remove(&id);
                        self.handle(Input::Timer(id));
                    }
                }
                Some(input) = inputs.recv() => {
                    // A socket that ended is forgotten whatever the core does next.
                    if let Input::Closed(id, _) | Input::Refused(id, _) = &input {
                        self.sockets.remove(id);
                    }
                    self.handle(input)
                }
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Connect => self.handle(Input::Connect),
            Command::Subscribe {
                channel,
                get_state,
                live,
            } => {
                self.live.entry(channel.clone()).or_default().push(live);
                let has = get_state.is_some();
                if let Some(g) = get_state {
                    self.get_states.insert(channel.clone(), g);
                }
                self.handle(Input::Subscribe {
                    channel,
                    get_state: has,
                });
            }
            Command::Unsubscribe(channel) => self.handle(Input::Unsubscribe(channel)),
            Command::Listen { channel, tx } => self.listeners.entry(channel).or_default().push(tx),
            Command::States(tx) => self.states.push(tx),
            Command::Verdicts(tx) => self.verdicts.push(tx),
            Command::Push { mutation, reply } => {
                let ticket = self.ticket();
                self.pushes.insert(ticket, reply);
                self.handle(Input::Push { ticket, mutation });
            }
            Command::Presence { band, reply } => {
                let ticket = self.ticket();
                self.presences.insert(ticket, reply);
                self.handle(Input::Presence { ticket, band });
            }
            Command::Dismiss(key) => {
                self.core.dismiss(&key);
                self.perform_all();
            }
            Command::Env(env) => self.handle(Input::Env(env)),
            Command::Close(_) => {}
        }
    }

    fn ticket(&mut self) -> Ticket {
        let t = self.next_ticket;
        self.next_ticket += 1;
        t
    }

    fn handle(&mut self, input: Input) {
        self.core.handle(now_ms(), input);
        self.perform_all();
    }

    fn perform_all(&mut self) {
        let mut outbox_moved = false;
        let mut failed: Option<Vec<String>> = None;
        for effect in self.core.take_effects() {
            if let Effect::Persist { key, .. } | Effect::Remove(key) = &effect {
                outbox_moved |= key.starts_with("outbox:") || key.starts_with("parked:");
            }
            // The outbox is durable before a frame leaves; a write that failed stops the
            // step's sends (and writes), so its frame never goes (and its mid is not
            // reused after a restart). Timers, closes and app events still happen.
            if let Some(keys) = &mut failed {
                match effect {
                    Effect::Send { .. } => continue,
                    Effect::Persist { key, .. } | Effect::Remove(key) => {
                        keys.push(key);
                        continue;
                    }
                    _ => {}
                }
            } else if matches!(effect, Effect::Send { .. })
                && let Err(keys) = self.flush()
            {
                failed = Some(keys);
                continue;
            }
            self.perform(effect);
        }
        if failed.is_none()
            && let Err(keys) = self.flush()
        {
            failed = Some(keys);
        }
        if let Some(keys) = failed {
            // The core gives back what it had not stored; its answer writes nothing.
            self.core.handle(now_ms(), Input::PersistFailed(keys));
            self.perform_all();
            return;
        }
        if outbox_moved && let Ok(mut s) = self.snapshot.lock() {
            s.pending = self.core.pending();
            s.parked = self.core.parked();
        }
    }

    /// Write the storage changes so far, all in one `apply` (cursor moves of one input
    /// coalesce; a renumbering's sets and removes are one atomic write). Err: the keys
    /// that were not written.
    fn flush(&mut self) -> Result<(), Vec<String>> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let changes = std::mem::take(&mut self.changes);
        self.storage.apply(&changes).map_err(|e| {
            tracing::error!(error = %e, "the client's storage could not be written");
            changes.into_iter().map(|(key, _)| key).collect()
        })
    }

    fn perform(&mut self, effect: Effect) {
        match effect {
            Effect::GetToken => {
                let f = (self.get_token)();
                let tx = self.inputs_tx.clone();
                tokio::spawn(async move {
                    let result = match f.await {
                        Ok(t) => TokenResult::Ok(t),
                        Err(TokenError::Unauthorized(m)) => TokenResult::Unauthorized(m),
                        Err(TokenError::Other(m)) => TokenResult::Error(m),
                    };
                    let _ = tx.send(Input::Token(result));
                });
            }
            Effect::GetState(channel) => {
                let tx = self.inputs_tx.clone();
                match self.get_states.get(&channel).cloned() {
                    Some(g) => {
                        tokio::spawn(async move {
                            let cursor = g().await;
                            let _ = tx.send(Input::StateLoaded { channel, cursor });
                        });
                    }
                    None => {
                        let _ = tx.send(Input::StateLoaded {
                            channel,
                            cursor: None,
                        });
                    }
                }
            }
            Effect::Open { socket, url } => {
                let (out_tx, out_rx) = mpsc::unbounded_channel();
                self.sockets.insert(socket, out_tx);
                tokio::spawn(run_socket(socket, url, out_rx, self.inputs_tx.clone()));
            }
            Effect::Send { socket, text } => {
                // perform_all flushed the writes before it.
                if let Some(tx) = self.sockets.get(&socket) {
                    let _ = tx.send(Out::Text(text));
                }
            }
            Effect::Close { socket, code } => {
                if let Some(tx) = self.sockets.remove(&socket) {
                    let _ = tx.send(Out::Close(code));
                }
            }
            Effect::SetTimer { id, at } => {
                // The core's times are the wall clock's; the sleep is monotonic, so a
                // clock set back does not hold a timer (a clock jump forward, or a sleep
                // of the machine, shows as the watchdog firing late by the wall clock).
                let wait = Duration::from_millis(at.saturating_sub(now_ms()));
                self.timers.insert(id, tokio::time::Instant::now() + wait);
            }
            Effect::CancelTimer(id) => {
                self.timers.remove(&id);
            }
            Effect::Persist { key, value } => self.changes.push((key, Some(value))),
            Effect::Remove(key) => self.changes.push((key, None)),
            Effect::Emit(event) => self.emit(event),
        }
    }

    fn notify_listeners(&mut self, channel: &str, event: ChannelEvent) {
        if let Some(list) = self.listeners.get_mut(channel) {
            list.retain(|tx| tx.send(event.clone()).is_ok());
        }
    }

    fn emit(&mut self, event: AppEvent) {
        match event {
            AppEvent::State {
                previous,
                current,
                reason,
                retry_in_ms,
            } => {
                self.state_tx.send_replace(current);
                let change = StateChange {
                    previous,
                    current,
                    reason,
                    retry_in_ms,
                };
                tracing::debug!(?change, "bandsync client state");
                self.states.retain(|tx| tx.send(change.clone()).is_ok());
                if current == State::Closed {
                    for (_, reply) in self.pushes.drain() {
                        let _ = reply.send(Err(ClientError::Closed));
                    }
                }
            }
            AppEvent::Event {
                channel,
                seq,
                frame,
                text,
            } => self.notify_listeners(&channel, ChannelEvent::Event { seq, frame, text }),
            AppEvent::Reset { channel, reason } => {
                self.notify_listeners(&channel, ChannelEvent::Reset { reason })
            }
            AppEvent::Presence { channel, frame } => {
                self.notify_listeners(&channel, ChannelEvent::Presence { frame })
            }
            AppEvent::Live { channel } => {
                for tx in self.live.remove(&channel).unwrap_or_default() {
                    let _ = tx.send(Ok(()));
                }
            }
            AppEvent::ChannelRefused {
                channel,
                code,
                message,
            } => {
                for tx in self.live.remove(&channel).unwrap_or_default() {
                    let _ = tx.send(Err(ClientError::Server {
                        code: code.clone(),
                        message: message.clone(),
                    }));
                }
            }
            AppEvent::Verdict {
                ticket,
                mid,
                mutation,
                result,
            } => {
                let verdict = Verdict {
                    mid,
                    mutation,
                    result,
                };
                self.verdicts.retain(|tx| tx.send(verdict.clone()).is_ok());
                if let Some(reply) = ticket.and_then(|t| self.pushes.remove(&t)) {
                    let _ = reply.send(Ok(verdict));
                }
            }
            AppEvent::PushRefused { ticket, error } => {
                if let Some(reply) = self.pushes.remove(&ticket) {
                    let _ = reply.send(Err(error.into()));
                }
            }
            AppEvent::PresenceAnswer { ticket, result } => {
                if let Some(reply) = self.presences.remove(&ticket) {
                    let _ = reply.send(result.map_err(ClientError::from));
                }
            }
            AppEvent::Error { frame } => {
                tracing::warn!(%frame, "an error frame from the server");
            }
        }
    }
}

/// Longer than the core's 15 s connect deadline, which normally ends a hung handshake
/// first (by closing the socket); this bounds a rotation's socket too.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// One socket: connect, then forward frames both ways until either side closes.
async fn run_socket(
    id: SocketId,
    url: String,
    mut out: mpsc::UnboundedReceiver<Out>,
    inputs: mpsc::UnboundedSender<Input>,
) {
    use tokio_tungstenite::tungstenite::Error;
    // A handshake that hangs must not keep its task and socket: it ends when the core
    // lets the socket go (a close, the driver forgetting it) or after HANDSHAKE_TIMEOUT.
    let connect = tokio_tungstenite::connect_async(url.as_str());
    let let_go = async {
        // The core sends only on an opened socket, so nothing but a close comes here.
        while let Some(Out::Text(_)) = out.recv().await {}
    };
    let result = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect) => r,
        () = let_go => return,
    };
    let Ok(result) = result else {
        tracing::debug!(socket = id, "the handshake timed out");
        let _ = inputs.send(Input::Refused(id, None));
        return;
    };
    let ws = match result {
        Ok((ws, _)) => ws,
        Err(e) => {
            let status = match &e {
                Error::Http(response) => Some(response.status().as_u16()),
                _ => None,
            };
            tracing::debug!(socket = id, error = %e, "the handshake failed");
            let _ = inputs.send(Input::Refused(id, status));
            return;
        }
    };
    let _ = inputs.send(Input::Opened(id));
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            o = out.recv() => match o {
                Some(Out::Text(text)) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        let _ = inputs.send(Input::Closed(id, None));
                        return;
                    }
                }
                Some(Out::Close(code)) => {
                    let frame = CloseFrame { code: code.into(), reason: "".into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    return;
                }
                // The core forgot the socket.
                None => return,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let _ = inputs.send(Input::Frame(id, text.as_str().to_owned()));
                }
                Some(Ok(Message::Close(frame))) => {
                    let _ = inputs.send(Input::Closed(id, frame.map(|f| u16::from(f.code))));
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let _ = inputs.send(Input::Closed(id, None));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Change, StorageError};
    use std::collections::BTreeMap;

    /// A storage whose writes fail while `failing` is set; it counts what it stored.
    struct Flaky {
        failing: Arc<Mutex<bool>>,
        stored: Arc<Mutex<Vec<Change>>>,
    }

    impl Storage for Flaky {
        fn load(&mut self) -> Result<BTreeMap<String, Value>, StorageError> {
            Ok(BTreeMap::new())
        }
        fn apply(&mut self, changes: &[Change]) -> Result<(), StorageError> {
            if *self.failing.lock().unwrap() {
                return Err(StorageError::Write {
                    path: "flaky".into(),
                    source: std::io::Error::other("disk full"),
                });
            }
            self.stored.lock().unwrap().extend_from_slice(changes);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_hung_handshake_ends_when_the_core_lets_the_socket_go() {
        use tokio::io::AsyncReadExt;
        // A server that accepts the TCP connection and never answers the upgrade.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/prod", listener.local_addr().unwrap());
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (inputs_tx, _inputs) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_socket(1, url, out_rx, inputs_tx));
        let (mut server_side, _) = listener.accept().await.unwrap();
        // The core closes it (its connect deadline): the task ends and the fd is closed.
        out_tx.send(Out::Close(1000)).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the socket's task ended")
            .unwrap();
        // The server side reads to the end (or a reset): the client's fd is closed.
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), server_side.read_to_end(&mut rest))
            .await
            .expect("the client let the connection go")
            .ok();
    }

    #[tokio::test]
    async fn a_push_whose_entry_could_not_be_stored_is_refused_and_gives_its_mid_back() {
        let failing = Arc::new(Mutex::new(true));
        let stored = Arc::new(Mutex::new(Vec::new()));
        let storage = Flaky {
            failing: failing.clone(),
            stored: stored.clone(),
        };
        let token = get_token(|| async { Err(TokenError::Other("offline".into())) });
        let options = Options::new(token, storage).device(Device {
            id: "ringo-ipad".into(),
            platform: "web".into(),
            name: "iPad".into(),
            categories: None,
        });
        let client = Client::new("ws://127.0.0.1:9/prod", options).unwrap();
        let mutation = serde_json::json!({"band": "demo", "type": "setlist_entry", "id": "s1", "op": "patch", "base_version": 1});
        let err = tokio::time::timeout(Duration::from_secs(5), client.push(mutation.clone()))
            .await
            .expect("the push settles at once")
            .unwrap_err();
        assert_eq!(err.code(), "storage_failed");
        assert!(client.pending().is_empty());
        // Writable again: the next push takes mid 1, the one given back.
        *failing.lock().unwrap() = false;
        let push = client.push(mutation);
        tokio::pin!(push);
        let wrote_mid_1 = async {
            loop {
                let mid_1 = stored
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(k, v)| k == "mid:next" && v.as_ref() == Some(&serde_json::json!(2)));
                if mid_1 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::select! {
            _ = wrote_mid_1 => {}
            r = &mut push => panic!("the push settled: {r:?}"),
            _ = tokio::time::sleep(Duration::from_secs(5)) => panic!("mid 1 was not stored"),
        }
        assert_eq!(client.pending()[0].mid, 1);
    }
}
