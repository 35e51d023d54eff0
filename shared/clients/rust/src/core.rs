//! The sans-IO core: the whole behaviour of shared/clients/PROTOCOL.md as a state
//! machine. It owns no socket, timer or file: [`Core::handle`] takes one [`Input`]
//! stamped with the time (ms since the epoch) and queues [`Effect`]s, which a driver
//! drains with [`Core::take_effects`] and performs in order. The tokio driver
//! ([`crate::client`]) and the conformance runner (a fake clock and a scripted server)
//! are two such drivers, so the scenarios test exactly the code apps run.

use bandsync::backoff::Backoff;
use bandsync::error::{ErrorCode, OnWebSocket};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Milliseconds since the Unix epoch (the driver's clock).
pub type Ms = u64;
/// A socket the core asked for, numbered 1, 2, ... in the order it asked.
pub type SocketId = u64;
/// A driver's handle on one app call (a push or a presence query) whose answer comes
/// later as an [`AppEvent`].
pub type Ticket = u64;

/// The largest frame the client sends: API Gateway reads a WebSocket message in frames
/// of at most 32 KB and closes the connection with 1009 past it.
pub const MAX_FRAME_BYTES: usize = 32 * 1024;
/// Most mutations in one batch.
pub const MAX_BATCH: usize = 100;
/// A ping after this long without the client sending a frame (API Gateway cuts a
/// connection after 10 idle minutes; each ping is a paid invocation).
pub const PING_AFTER_MS: Ms = 270_000;
/// No pong within this: the socket is dead.
pub const PONG_TIMEOUT_MS: Ms = 10_000;
/// Rotate this long after connecting (API Gateway ends a connection at 2 hours).
pub const ROTATE_AFTER_MS: Ms = 115 * 60_000;
/// Rotate this long before the token's `exp`.
pub const ROTATE_BEFORE_EXP_MS: Ms = 60_000;
/// Not connected for this long: `suspended`.
pub const SUSPEND_AFTER_MS: Ms = 120_000;
/// The watchdog's period, and how late it may fire before it counts as a wake.
pub const WATCHDOG_MS: Ms = 1_000;
pub const WAKE_LATE_MS: Ms = 10_000;
/// Events held per channel while a gap is filled.
pub const MAX_HELD: usize = 1_000;
/// An attempt has this long from its `get_token` to `connected`.
pub const CONNECT_TIMEOUT_MS: Ms = 15_000;
/// A rotation has this long from its `get_token` to the switch.
pub const ROTATE_TIMEOUT_MS: Ms = 30_000;

/// What an `error` frame's code asks of the client: its class in shared/src/error.rs
/// (`None`: a code this version does not know, handled as a refusal).
fn class_of(code: &str) -> Option<OnWebSocket> {
    code.parse::<ErrorCode>().ok().map(ErrorCode::on_websocket)
}

/// The reconnect windows: `min(30 s, 1 s * 2^n)` for the n-th failure in a row (the
/// shared backoff's window of `2 s * 2^(n-1)`); the wait is 1 s plus a jittered share of
/// the rest.
const RECONNECT: Backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(30));

/// The wait before retry `n` (1-based) for a random draw in `[0, 1)`.
pub fn delay(n: u32, random: f64) -> Ms {
    let window = RECONNECT.window(n).as_millis() as f64;
    let r = if random.is_finite() {
        random.clamp(0.0, 1.0)
    } else {
        0.0
    };
    (1000.0 + r * (window - 1000.0)).round() as Ms
}

/// Where a channel stands: the last event the app got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: Option<String>,
    pub seq: u64,
}

/// The device registered on every connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    pub platform: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Idle,
    Connecting,
    Connected,
    Disconnected,
    Suspended,
    Failed,
    Closed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Disconnected => "disconnected",
            State::Suspended => "suspended",
            State::Failed => "failed",
            State::Closed => "closed",
        }
    }
}

/// What the platform says about the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Env {
    Online,
    Offline,
    Visible,
    Hidden,
    /// A clock jump after sleep.
    Wake,
}

impl Env {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "online" => Env::Online,
            "offline" => Env::Offline,
            "visible" => Env::Visible,
            "hidden" => Env::Hidden,
            "wake" => Env::Wake,
            _ => return None,
        })
    }
}

/// The core's timers; setting one again moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerId {
    /// The next connect attempt.
    Retry,
    /// Check whether a ping is due.
    Heartbeat,
    /// The ping's pong is late.
    PongTimeout,
    /// Make-before-break.
    Rotate,
    /// A hidden tab closes its socket.
    Hidden,
    /// Fires every second; late means the machine slept.
    Watchdog,
    /// A `rate_limited` batch goes again.
    PushRetry,
    /// The attempt's 15 s from `get_token` to `connected` are up.
    ConnectDeadline,
    /// The rotation's 30 s from `get_token` to the switch are up.
    RotateDeadline,
    /// A `register_device` or a channel's frame refused for a while goes again.
    Resend,
}

/// What `getToken` gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenResult {
    Ok(String),
    /// `UnauthorizedError`: stop.
    Unauthorized(String),
    /// Any other error: back off and retry.
    Error(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// `connect()`.
    Connect,
    Token(TokenResult),
    Opened(SocketId),
    /// The handshake failed, with the HTTP status when the platform tells it.
    Refused(SocketId, Option<u16>),
    Frame(SocketId, String),
    Closed(SocketId, Option<u16>),
    Timer(TimerId),
    Env(Env),
    /// `channel(name, {getState}).subscribe()`.
    Subscribe {
        channel: String,
        get_state: bool,
    },
    /// What `getState` resolved to (`None`: nothing, or it failed).
    StateLoaded {
        channel: String,
        cursor: Option<Cursor>,
    },
    Unsubscribe(String),
    /// A mutation without `mid` (`band`, `type`, `id`, `op`, `base_version`, `fields`).
    Push {
        ticket: Ticket,
        mutation: Map<String, Value>,
    },
    Presence {
        ticket: Ticket,
        band: String,
    },
    Close,
    /// The storage writes of the last step failed (their keys): the effects after the
    /// failed write were not performed.
    PersistFailed(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    GetToken,
    GetState(String),
    Open {
        socket: SocketId,
        url: String,
    },
    Send {
        socket: SocketId,
        text: String,
    },
    Close {
        socket: SocketId,
        code: u16,
    },
    SetTimer {
        id: TimerId,
        at: Ms,
    },
    CancelTimer(TimerId),
    /// Write `key` durably before any `Send` queued after it.
    Persist {
        key: String,
        value: Value,
    },
    Remove(String),
    Emit(AppEvent),
}

/// A refusal the client makes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalError {
    /// `frame_too_large`, `no_device`, `not_connected`, `closed`, `unauthorized`.
    pub code: &'static str,
    pub message: String,
}

/// A parked mutation: rejected by the server (key = its mid) or refused whole and given
/// back its mid (key `l<n>`, mid `None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parked {
    pub key: String,
    pub mid: Option<u64>,
    pub band: String,
    pub mutation: Value,
    pub code: Option<String>,
    pub message: Option<String>,
}

/// A queued mutation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub mid: u64,
    pub band: String,
    /// As sent: `mid` and `ts` included, `band` not (it is the frame's).
    pub mutation: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AppEvent {
    State {
        previous: State,
        current: State,
        reason: String,
        retry_in_ms: Option<Ms>,
    },
    /// One event of a channel: once, in seq order, gapless. `text` is the frame as the
    /// server sent it.
    Event {
        channel: String,
        seq: u64,
        frame: Value,
        text: String,
    },
    /// `history_lost` or `epoch_changed`: the app's state was refetched (or must be).
    Reset { channel: String, reason: String },
    /// The channel is live (`subscribe()` resolves).
    Live { channel: String },
    /// The server refused the channel (`subscribe()` rejects with the code); it is not
    /// sent again on this connection.
    ChannelRefused {
        channel: String,
        code: String,
        message: String,
    },
    /// A final verdict on a queued mutation (`ticket`: the push of this client that
    /// queued it; none after a reload). `mid` is `None` for one parked locally.
    Verdict {
        ticket: Option<Ticket>,
        mid: Option<u64>,
        mutation: Value,
        result: Value,
    },
    /// A push refused before it took a mid.
    PushRefused { ticket: Ticket, error: LocalError },
    /// A `presence.joined`/`presence.left` event.
    Presence { channel: String, frame: Value },
    /// The answer to a presence query.
    PresenceAnswer {
        ticket: Ticket,
        result: Result<Value, LocalError>,
    },
    /// A client-level error: an `error` frame the core has no use for, or one of the
    /// client's own (`malformed_frame`, `storage_failed`), as `{code, message}`.
    Error { frame: Value },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub url: String,
    pub device: Option<Device>,
    /// A hidden tab closes its socket after this long (`None`: never).
    pub hidden_close_after_ms: Option<Ms>,
    pub suspended_retry_ms: Ms,
}

impl Config {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            device: None,
            hidden_close_after_ms: None,
            suspended_retry_ms: 60_000,
        }
    }
}

/// What a channel is doing.
#[derive(Debug, Clone, Default)]
struct Channel {
    cursor: Option<Cursor>,
    get_state: bool,
    /// `getState` was asked and has not answered: send nothing for the channel yet.
    awaiting_state: Option<StateWait>,
    /// Events past a gap, by seq.
    held: BTreeMap<u64, (Value, String)>,
    live: bool,
}

#[derive(Debug, Clone)]
enum StateWait {
    /// The first subscribe.
    Subscribe,
    /// A `history_lost`: the server's head, the reset's reason, the socket it came on.
    HistoryLost {
        head: Cursor,
        reason: &'static str,
        socket: SocketId,
    },
}

#[derive(Debug, Clone)]
struct Sock {
    id: SocketId,
    open: bool,
    device_ok: bool,
    /// Channels not yet answered on this socket (`subscribed`, or `resumed` without
    /// `more`).
    unanswered: BTreeSet<String>,
    /// Channels with a `resume` in flight on this socket.
    resuming: BTreeSet<String>,
    /// Channels the server refused on this socket: not sent again on it.
    refused: BTreeSet<String>,
    last_sent: Ms,
    ping_out: bool,
    /// The token's `exp` (ms), read from the JWT.
    token_exp: Option<Ms>,
}

impl Sock {
    fn new(id: SocketId, token_exp: Option<Ms>, now: Ms) -> Self {
        Self {
            id,
            open: false,
            device_ok: false,
            unanswered: BTreeSet::new(),
            resuming: BTreeSet::new(),
            refused: BTreeSet::new(),
            last_sent: now,
            ping_out: false,
            token_exp,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    mid: u64,
    band: String,
    mutation: Map<String, Value>,
    ticket: Option<Ticket>,
}

impl Entry {
    fn stored(&self) -> Value {
        json!({"mid": self.mid, "band": self.band, "mutation": Value::Object(self.mutation.clone())})
    }
}

#[derive(Debug, Clone)]
struct Batch {
    socket: SocketId,
    reference: String,
    mids: Vec<u64>,
    /// The core step that made it (a failed persist of that step means it never left).
    step: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenFor {
    Connect,
    Rotate,
}

pub struct Core {
    config: Config,
    random: Box<dyn FnMut() -> f64 + Send>,
    state: State,
    now: Ms,
    effects: Vec<Effect>,
    channels: BTreeMap<String, Channel>,
    /// Subscribed channels in the order they were first subscribed.
    order: Vec<String>,
    next_socket: SocketId,
    main: Option<Sock>,
    /// The socket being rotated to.
    next: Option<Sock>,
    token_for: Option<TokenFor>,
    /// Failed attempts in a row.
    failures: u32,
    /// A 401/403 refusal just happened (a second one in a row fails the client).
    refused_auth: bool,
    /// The last moment the client was connected (or `connect()` was called).
    last_up: Ms,
    connected_at: Ms,
    /// A server's `retry_after` puts off the next attempt until then (a floor that ends).
    retry_until: Ms,
    /// Retries in a row of one frame (`p`: the batch, `d`, `c:<channel>`), for `delay(k)`.
    retries: HashMap<String, u32>,
    /// Frames to send again: ref -> (socket, when).
    resends: BTreeMap<String, (SocketId, Ms)>,
    /// Rotation failures in a row, for `delay(n)`.
    rotation_failures: u32,
    /// `handle` calls so far.
    step: u64,
    retry_scheduled: bool,
    hidden: bool,
    hidden_closed: bool,
    watchdog_due: Option<Ms>,
    entries: Vec<Entry>,
    mid_next: u64,
    parked: Vec<Parked>,
    parked_next_local: u64,
    in_flight: Option<Batch>,
    push_blocked: bool,
    /// Presence queries unanswered: ref -> (ticket, band, socket).
    presence_queries: HashMap<String, (Ticket, String, SocketId)>,
    /// The step of the last push and the mid it took (what a failed write may roll back).
    last_push: Option<(u64, u64)>,
}

/// The storage as the core reads it at start.
pub type Stored = BTreeMap<String, Value>;

impl Core {
    /// A client from its configuration and what its storage holds.
    pub fn new(config: Config, stored: &Stored, random: Box<dyn FnMut() -> f64 + Send>) -> Self {
        let mut core = Self {
            config,
            random,
            state: State::Idle,
            now: 0,
            effects: Vec::new(),
            channels: BTreeMap::new(),
            order: Vec::new(),
            next_socket: 1,
            main: None,
            next: None,
            token_for: None,
            failures: 0,
            refused_auth: false,
            last_up: 0,
            connected_at: 0,
            retry_until: 0,
            retries: HashMap::new(),
            resends: BTreeMap::new(),
            rotation_failures: 0,
            step: 0,
            retry_scheduled: false,
            hidden: false,
            hidden_closed: false,
            watchdog_due: None,
            entries: Vec::new(),
            mid_next: 1,
            parked: Vec::new(),
            parked_next_local: 1,
            in_flight: None,
            push_blocked: false,
            presence_queries: HashMap::new(),
            last_push: None,
        };
        core.load(stored);
        core
    }

    fn load(&mut self, stored: &Stored) {
        for (key, value) in stored {
            if let Some(channel) = key.strip_prefix("cursor:") {
                if let Ok(cursor) = serde_json::from_value::<Cursor>(value.clone()) {
                    self.channels.entry(channel.to_owned()).or_default().cursor = Some(cursor);
                }
            } else if key.starts_with("outbox:") {
                let Some(mid) = value.get("mid").and_then(Value::as_u64) else {
                    continue;
                };
                let band = value
                    .get("band")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let Some(Value::Object(mutation)) = value.get("mutation") else {
                    continue;
                };
                self.entries.push(Entry {
                    mid,
                    band: band.to_owned(),
                    mutation: mutation.clone(),
                    ticket: None,
                });
            } else if key == "mid:next" {
                self.mid_next = value.as_u64().unwrap_or(1).max(1);
            } else if key == "parked:next_local" {
                self.parked_next_local = value.as_u64().unwrap_or(1).max(1);
            } else if key.starts_with("parked:")
                && let Ok(p) = serde_json::from_value::<Parked>(value.clone())
            {
                self.parked.push(p);
            }
        }
        self.entries.sort_by_key(|e| e.mid);
        if let Some(last) = self.entries.last() {
            self.mid_next = self.mid_next.max(last.mid + 1);
        }
        // Oldest first: by the time the member made the change.
        self.parked.sort_by(|a, b| {
            let ts = |p: &Parked| {
                p.mutation
                    .get("ts")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            ts(a).cmp(&ts(b)).then_with(|| a.key.cmp(&b.key))
        });
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The queued mutations, oldest first.
    pub fn pending(&self) -> Vec<Pending> {
        self.entries
            .iter()
            .map(|e| Pending {
                mid: e.mid,
                band: e.band.clone(),
                mutation: Value::Object(e.mutation.clone()),
            })
            .collect()
    }

    /// The rejected mutations, oldest first.
    pub fn parked(&self) -> Vec<Parked> {
        self.parked.clone()
    }

    pub fn cursor(&self, channel: &str) -> Option<Cursor> {
        self.channels.get(channel).and_then(|c| c.cursor.clone())
    }

    /// Forget a parked mutation.
    pub fn dismiss(&mut self, key: &str) -> bool {
        let before = self.parked.len();
        self.parked.retain(|p| p.key != key);
        if self.parked.len() != before {
            self.effects.push(Effect::Remove(format!("parked:{key}")));
            true
        } else {
            false
        }
    }

    /// The effects queued so far, in the order they must be performed.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The next timer's due time the core asked for is the driver's business; this is
    /// the one entry point for everything else.
    pub fn handle(&mut self, now: Ms, input: Input) {
        self.now = self.now.max(now);
        self.step += 1;
        match input {
            Input::Connect => self.connect(),
            Input::Token(result) => self.on_token(result),
            Input::Opened(id) => self.on_opened(id),
            Input::Refused(id, status) => self.on_refused(id, status),
            Input::Frame(id, text) => self.on_frame(id, text),
            Input::Closed(id, code) => self.on_closed(id, code),
            Input::Timer(id) => self.on_timer(id),
            Input::Env(env) => self.on_env(env),
            Input::Subscribe { channel, get_state } => self.subscribe(channel, get_state),
            Input::StateLoaded { channel, cursor } => self.on_state(channel, cursor),
            Input::Unsubscribe(channel) => self.unsubscribe(channel),
            Input::Push { ticket, mutation } => self.push(ticket, mutation),
            Input::Presence { ticket, band } => self.presence(ticket, band),
            Input::Close => self.close(),
            Input::PersistFailed(keys) => self.on_persist_failed(keys),
        }
    }

    // ---- states ----

    fn set_state(&mut self, current: State, reason: &str, retry_in_ms: Option<Ms>) {
        let previous = self.state;
        if previous == current {
            return;
        }
        self.state = current;
        self.effects.push(Effect::Emit(AppEvent::State {
            previous,
            current,
            reason: reason.to_owned(),
            retry_in_ms,
        }));
    }

    fn set_timer(&mut self, id: TimerId, at: Ms) {
        self.effects.push(Effect::SetTimer { id, at });
    }

    fn cancel_timer(&mut self, id: TimerId) {
        self.effects.push(Effect::CancelTimer(id));
    }

    fn ends(&self) -> bool {
        matches!(self.state, State::Failed | State::Closed)
    }

    fn connect(&mut self) {
        match self.state {
            State::Idle | State::Failed => {
                self.failures = 0;
                self.refused_auth = false;
                self.last_up = self.now;
                self.arm_watchdog();
                self.attempt("connect");
            }
            State::Disconnected | State::Suspended => self.attempt("connect"),
            _ => {}
        }
    }

    fn arm_watchdog(&mut self) {
        let at = self.now + WATCHDOG_MS;
        self.watchdog_due = Some(at);
        self.set_timer(TimerId::Watchdog, at);
    }

    /// Start a connect attempt: a fresh token first.
    fn attempt(&mut self, reason: &str) {
        if self.retry_scheduled {
            self.retry_scheduled = false;
            self.cancel_timer(TimerId::Retry);
        }
        self.hidden_closed = false;
        self.set_state(State::Connecting, reason, None);
        self.token_for = Some(TokenFor::Connect);
        self.set_timer(TimerId::ConnectDeadline, self.now + CONNECT_TIMEOUT_MS);
        self.effects.push(Effect::GetToken);
    }

    /// The attempt (or the connection) failed: wait, then try again.
    fn fail(&mut self, reason: &str) {
        self.drop_main();
        if self.ends() {
            return;
        }
        self.failures += 1;
        let suspended = self.now.saturating_sub(self.last_up) >= SUSPEND_AFTER_MS;
        let wait = if suspended {
            self.config.suspended_retry_ms
        } else {
            delay(self.failures, (self.random)())
        }
        .max(self.retry_until.saturating_sub(self.now));
        let state = if suspended {
            State::Suspended
        } else {
            State::Disconnected
        };
        self.set_state(state, reason, Some(wait));
        self.retry_scheduled = true;
        self.set_timer(TimerId::Retry, self.now + wait);
    }

    /// Forget the main socket (already gone or being closed) and what was in flight on it.
    fn drop_main(&mut self) {
        if let Some(sock) = self.main.take() {
            if self.in_flight.as_ref().is_some_and(|b| b.socket == sock.id) {
                self.in_flight = None;
            }
            if self.state == State::Connected {
                self.last_up = self.now;
            }
        }
        for channel in self.channels.values_mut() {
            channel.live = false;
        }
        self.cancel_timer(TimerId::Heartbeat);
        self.cancel_timer(TimerId::PongTimeout);
        self.cancel_timer(TimerId::Rotate);
        self.cancel_timer(TimerId::RotateDeadline);
        self.cancel_timer(TimerId::ConnectDeadline);
        self.cancel_timer(TimerId::Resend);
        self.resends.clear();
        if let Some(next) = self.next.take() {
            self.effects.push(Effect::Close {
                socket: next.id,
                code: 1000,
            });
        }
        if self.token_for == Some(TokenFor::Rotate) {
            self.token_for = None;
        }
        self.unanswer_presence();
    }

    /// No socket is left to answer the presence queries (as the TypeScript client does:
    /// they settle with `not_connected`, the app may ask again once connected).
    fn unanswer_presence(&mut self) {
        let mut asked: Vec<Ticket> = self
            .presence_queries
            .drain()
            .map(|(_, (ticket, _, _))| ticket)
            .collect();
        asked.sort_unstable();
        for ticket in asked {
            self.effects.push(Effect::Emit(AppEvent::PresenceAnswer {
                ticket,
                result: Err(LocalError {
                    code: "not_connected",
                    message: "the connection was lost before the answer".into(),
                }),
            }));
        }
    }

    fn close(&mut self) {
        if self.state == State::Closed {
            return;
        }
        for sock in [self.main.take(), self.next.take()].into_iter().flatten() {
            self.effects.push(Effect::Close {
                socket: sock.id,
                code: 1000,
            });
        }
        self.in_flight = None;
        self.token_for = None;
        for id in [
            TimerId::Retry,
            TimerId::Heartbeat,
            TimerId::PongTimeout,
            TimerId::Rotate,
            TimerId::Hidden,
            TimerId::Watchdog,
            TimerId::PushRetry,
            TimerId::ConnectDeadline,
            TimerId::RotateDeadline,
            TimerId::Resend,
        ] {
            self.cancel_timer(id);
        }
        self.retry_scheduled = false;
        self.watchdog_due = None;
        self.unanswer_presence();
        self.set_state(State::Closed, "closed", None);
    }

    // ---- connecting ----

    fn url_with(&self, token: &str) -> String {
        let sep = if self.config.url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}token={}", self.config.url, encode_component(token))
    }

    fn on_token(&mut self, result: TokenResult) {
        let Some(purpose) = self.token_for.take() else {
            return;
        };
        if self.ends() {
            return;
        }
        match (purpose, result) {
            (TokenFor::Connect, TokenResult::Ok(token)) => {
                let id = self.new_socket();
                self.main = Some(Sock::new(id, trusted_exp(&token, self.now), self.now));
                let url = self.url_with(&token);
                self.effects.push(Effect::Open { socket: id, url });
            }
            (TokenFor::Connect, TokenResult::Unauthorized(_)) => self.fail_for_good("unauthorized"),
            (TokenFor::Connect, TokenResult::Error(message)) => {
                self.fail(&format!("token: {message}"))
            }
            (TokenFor::Rotate, TokenResult::Ok(token)) => {
                if self.main.is_none() {
                    return;
                }
                let id = self.new_socket();
                self.next = Some(Sock::new(id, trusted_exp(&token, self.now), self.now));
                let url = self.url_with(&token);
                self.effects.push(Effect::Open { socket: id, url });
            }
            (TokenFor::Rotate, _) => self.rotation_failed(),
        }
    }

    fn new_socket(&mut self) -> SocketId {
        let id = self.next_socket;
        self.next_socket += 1;
        id
    }

    fn fail_for_good(&mut self, reason: &str) {
        self.drop_main();
        if self.retry_scheduled {
            self.retry_scheduled = false;
            self.cancel_timer(TimerId::Retry);
        }
        self.cancel_timer(TimerId::Watchdog);
        self.cancel_timer(TimerId::ConnectDeadline);
        self.watchdog_due = None;
        self.set_state(State::Failed, reason, None);
    }

    fn is_main(&self, id: SocketId) -> bool {
        self.main.as_ref().is_some_and(|s| s.id == id)
    }

    fn is_next(&self, id: SocketId) -> bool {
        self.next.as_ref().is_some_and(|s| s.id == id)
    }

    fn sock_mut(&mut self, id: SocketId) -> Option<&mut Sock> {
        if self.is_main(id) {
            self.main.as_mut()
        } else if self.is_next(id) {
            self.next.as_mut()
        } else {
            None
        }
    }

    fn on_opened(&mut self, id: SocketId) {
        let Some(sock) = self.sock_mut(id) else {
            return;
        };
        sock.open = true;
        if let Some(frame) = self.register_frame() {
            self.send(id, &frame);
        } else if let Some(sock) = self.sock_mut(id) {
            sock.device_ok = true;
        }
        for channel in self.order.clone() {
            if let Some(sock) = self.sock_mut(id) {
                sock.unanswered.insert(channel.clone());
            }
            self.join(id, &channel);
        }
        if self.is_main(id) {
            self.refused_auth = false;
            // A new connection starts every frame's retry count over.
            self.retries.clear();
            if self.config.device.is_none() {
                self.on_connected();
            }
            self.set_timer(TimerId::Heartbeat, self.now + PING_AFTER_MS);
        } else {
            self.maybe_switch();
        }
    }

    /// The `register_device` frame (none without a device).
    fn register_frame(&self) -> Option<Value> {
        let device = self.config.device.as_ref()?;
        let mut frame = json!({
            "action": "register_device",
            "device": device.id,
            "platform": device.platform,
            "name": device.name,
            "ref": "d",
        });
        if let Some(categories) = &device.categories {
            frame["categories"] = json!(categories);
        }
        Some(frame)
    }

    /// `resume` the channel from its cursor on the socket, or `subscribe` without one.
    fn join(&mut self, id: SocketId, channel: &str) {
        let Some(ch) = self.channels.get(channel) else {
            return;
        };
        if ch.awaiting_state.is_some() {
            return;
        }
        match ch.cursor.clone() {
            Some(cursor) => self.resume(id, channel, &cursor),
            None => self.send(
                id,
                &json!({"action": "subscribe", "channel": channel, "ref": format!("c:{channel}")}),
            ),
        }
    }

    fn resume(&mut self, id: SocketId, channel: &str, cursor: &Cursor) {
        if let Some(sock) = self.sock_mut(id) {
            sock.resuming.insert(channel.to_owned());
        }
        let mut frame = json!({
            "action": "resume",
            "channel": channel,
            "after_seq": cursor.seq,
            "ref": format!("c:{channel}"),
        });
        if let Some(epoch) = &cursor.epoch {
            frame["epoch"] = json!(epoch);
        }
        self.send(id, &frame);
    }

    fn on_connected(&mut self) {
        self.failures = 0;
        self.cancel_timer(TimerId::ConnectDeadline);
        self.connected_at = self.now;
        self.set_state(State::Connected, "connected", None);
        self.schedule_rotation();
        self.pump();
    }

    fn schedule_rotation(&mut self) {
        let exp = self.main.as_ref().and_then(|s| s.token_exp);
        let mut at = self.connected_at + ROTATE_AFTER_MS;
        if let Some(exp) = exp {
            at = at.min(exp.saturating_sub(ROTATE_BEFORE_EXP_MS));
        }
        self.set_timer(TimerId::Rotate, at.max(self.now));
    }

    fn on_refused(&mut self, id: SocketId, status: Option<u16>) {
        if self.is_next(id) {
            self.next = None;
            self.rotation_failed();
            return;
        }
        if !self.is_main(id) {
            return;
        }
        self.main = None;
        if matches!(status, Some(401 | 403)) {
            if self.refused_auth {
                self.fail_for_good("refused");
            } else {
                self.refused_auth = true;
                self.attempt("refused");
            }
        } else {
            self.refused_auth = false;
            self.fail("refused");
        }
    }

    fn on_closed(&mut self, id: SocketId, code: Option<u16>) {
        if self.is_next(id) {
            self.next = None;
            self.rotation_failed();
        } else if self.is_main(id) {
            // The rotation's socket (if any) takes over when it is ready; otherwise retry.
            // One still opening is closed by `fail` (through drop_main), not forgotten.
            if self.next.as_ref().is_some_and(|n| n.open)
                && let Some(next) = self.next.take()
            {
                self.in_flight = None;
                self.main = Some(next);
                self.maybe_switch_after_loss();
                return;
            }
            self.fail(&format!(
                "closed ({})",
                code.map_or("no code".into(), |c| c.to_string())
            ));
        }
    }

    /// The old socket died mid-rotation and the new one stands in: it becomes the
    /// connection once its channels are answered.
    fn maybe_switch_after_loss(&mut self) {
        self.connected_at = self.now;
        self.schedule_rotation();
        self.set_timer(TimerId::Heartbeat, self.now + PING_AFTER_MS);
        self.pump();
    }

    // ---- rotation ----

    fn rotate(&mut self) {
        if self.state != State::Connected || self.next.is_some() || self.token_for.is_some() {
            return;
        }
        self.token_for = Some(TokenFor::Rotate);
        self.set_timer(TimerId::RotateDeadline, self.now + ROTATE_TIMEOUT_MS);
        self.effects.push(Effect::GetToken);
    }

    fn rotation_failed(&mut self) {
        self.rotation_failed_with(1000);
    }

    /// Drop the rotation's socket (closed with `code`) and try again after `delay(n)`.
    fn rotation_failed_with(&mut self, code: u16) {
        if let Some(next) = self.next.take() {
            self.effects.push(Effect::Close {
                socket: next.id,
                code,
            });
        }
        if self.token_for == Some(TokenFor::Rotate) {
            self.token_for = None;
        }
        self.cancel_timer(TimerId::RotateDeadline);
        if self.state == State::Connected {
            self.rotation_failures += 1;
            let wait = delay(self.rotation_failures, (self.random)());
            self.set_timer(TimerId::Rotate, self.now + wait);
        }
    }

    fn rotating(&self) -> bool {
        self.next.is_some() || self.token_for == Some(TokenFor::Rotate)
    }

    /// Switch to the new socket when every channel on it was answered and no batch is
    /// in flight on the old one.
    fn maybe_switch(&mut self) {
        let Some(next) = &self.next else {
            return;
        };
        if !(next.open && next.device_ok && next.unanswered.is_empty()) || self.in_flight.is_some()
        {
            return;
        }
        let next = self.next.take();
        let new_id = next.as_ref().map_or(0, |s| s.id);
        let old_id = self.main.as_ref().map(|s| s.id);
        if let Some(old) = std::mem::replace(&mut self.main, next) {
            self.effects.push(Effect::Close {
                socket: old.id,
                code: 1000,
            });
        }
        self.rotation_failures = 0;
        self.cancel_timer(TimerId::RotateDeadline);
        // A resume sent on the old socket will never be answered: channels with held
        // events resume again here, and presence queries asked there are asked again.
        for channel in self.order.clone() {
            let held = self
                .channels
                .get(&channel)
                .is_some_and(|c| !c.held.is_empty());
            let resuming = self
                .main
                .as_ref()
                .is_some_and(|s| s.resuming.contains(&channel));
            if held
                && !resuming
                && let Some(cursor) = self.cursor(&channel)
            {
                self.resume(new_id, &channel, &cursor);
            }
        }
        let mut asked: Vec<(String, String)> = self
            .presence_queries
            .iter_mut()
            .filter(|(_, (_, _, s))| Some(*s) == old_id)
            .map(|(r, (_, band, s))| {
                *s = new_id;
                (r.clone(), band.clone())
            })
            .collect();
        asked.sort();
        for (reference, band) in asked {
            self.send(
                new_id,
                &json!({"action": "presence", "band": band, "ref": reference}),
            );
        }
        self.connected_at = self.now;
        self.cancel_timer(TimerId::PongTimeout);
        self.set_timer(TimerId::Heartbeat, self.now + PING_AFTER_MS);
        self.schedule_rotation();
        self.pump();
    }

    // ---- timers and environment ----

    fn on_timer(&mut self, id: TimerId) {
        match id {
            TimerId::Retry => {
                if self.retry_scheduled {
                    self.retry_scheduled = false;
                    self.attempt("retry");
                }
            }
            TimerId::Heartbeat => self.heartbeat(),
            TimerId::PongTimeout => {
                // The socket is dead: connect again at once, `connected -> connecting`.
                if self.main.is_some() {
                    self.last_up = self.now;
                    self.reconnect("pong_timeout");
                }
            }
            TimerId::Rotate => self.rotate(),
            TimerId::Hidden => {
                if self.hidden && !self.ends() {
                    for sock in [self.main.take(), self.next.take()].into_iter().flatten() {
                        self.effects.push(Effect::Close {
                            socket: sock.id,
                            code: 1000,
                        });
                    }
                    self.drop_main();
                    self.token_for = None;
                    if self.retry_scheduled {
                        self.retry_scheduled = false;
                        self.cancel_timer(TimerId::Retry);
                    }
                    self.hidden_closed = true;
                    self.set_state(State::Disconnected, "hidden", None);
                }
            }
            TimerId::Watchdog => {
                let late = self
                    .watchdog_due
                    .is_some_and(|due| self.now > due + WAKE_LATE_MS);
                if self.watchdog_due.is_some() && !self.ends() {
                    self.arm_watchdog();
                }
                if late {
                    self.on_env(Env::Wake);
                }
            }
            TimerId::PushRetry => {
                self.push_blocked = false;
                self.pump();
            }
            TimerId::ConnectDeadline => {
                if self.state != State::Connecting {
                    return;
                }
                if self.token_for == Some(TokenFor::Connect) {
                    self.token_for = None;
                }
                if let Some(sock) = &self.main {
                    self.effects.push(Effect::Close {
                        socket: sock.id,
                        code: 4000,
                    });
                }
                self.fail("connect_timeout");
            }
            TimerId::RotateDeadline => {
                if self.rotating() {
                    self.rotation_failed_with(4000);
                }
            }
            TimerId::Resend => self.resend_due(),
        }
    }

    /// Send again the frames whose retry-later wait is over.
    fn resend_due(&mut self) {
        let due: Vec<(String, SocketId)> = self
            .resends
            .iter()
            .filter(|(_, (_, at))| *at <= self.now)
            .map(|(r, (s, _))| (r.clone(), *s))
            .collect();
        for (reference, id) in due {
            self.resends.remove(&reference);
            if self.sock_mut(id).is_none() {
                continue;
            }
            if reference == "d" {
                if let Some(frame) = self.register_frame() {
                    self.send(id, &frame);
                }
            } else if let Some(channel) = reference.strip_prefix("c:")
                && self.order.iter().any(|c| c == channel)
            {
                let channel = channel.to_owned();
                self.join(id, &channel);
            }
        }
        if let Some(at) = self.resends.values().map(|(_, at)| *at).min() {
            self.set_timer(TimerId::Resend, at);
        }
    }

    /// The wait before the k-th retry of a frame in a row: the server's `retry_after`
    /// when given, else `delay(k)`.
    fn retry_wait(&mut self, key: &str, frame: &Value) -> Ms {
        let k = self.retries.entry(key.to_owned()).or_default();
        *k += 1;
        let k = *k;
        match frame.get("retry_after").and_then(Value::as_u64) {
            Some(secs) => secs.saturating_mul(1000),
            None => delay(k, (self.random)()),
        }
    }

    /// Close the connection (4000) and connect again at once: not a failure.
    fn reconnect(&mut self, reason: &str) {
        if let Some(sock) = &self.main {
            self.effects.push(Effect::Close {
                socket: sock.id,
                code: 4000,
            });
        }
        self.drop_main();
        self.attempt(reason);
    }

    fn heartbeat(&mut self) {
        let Some(sock) = &self.main else {
            return;
        };
        if !sock.open {
            return;
        }
        let due = sock.last_sent + PING_AFTER_MS;
        if self.now >= due {
            self.ping();
        } else {
            self.set_timer(TimerId::Heartbeat, due);
        }
    }

    fn ping(&mut self) {
        let Some(id) = self.main.as_ref().filter(|s| s.open).map(|s| s.id) else {
            return;
        };
        self.send(id, &json!({"action": "ping", "ref": "h"}));
        if let Some(sock) = self.main.as_mut() {
            sock.ping_out = true;
        }
        self.set_timer(TimerId::PongTimeout, self.now + PONG_TIMEOUT_MS);
        self.set_timer(TimerId::Heartbeat, self.now + PING_AFTER_MS);
    }

    fn on_env(&mut self, env: Env) {
        match env {
            Env::Hidden => {
                self.hidden = true;
                if let Some(ms) = self.config.hidden_close_after_ms {
                    self.set_timer(TimerId::Hidden, self.now + ms);
                }
            }
            Env::Visible => {
                self.hidden = false;
                self.cancel_timer(TimerId::Hidden);
                if self.hidden_closed {
                    // A fresh start: the 120 s toward `suspended` count from now.
                    self.failures = 0;
                    self.last_up = self.now;
                    self.attempt("visible");
                } else if self.retry_scheduled {
                    self.attempt("visible");
                }
            }
            Env::Online => {
                if self.retry_scheduled {
                    self.attempt("online");
                }
            }
            Env::Wake => {
                if self.retry_scheduled {
                    self.attempt("wake");
                } else if self.state == State::Connected && !self.hidden {
                    self.ping();
                }
            }
            Env::Offline => {}
        }
    }

    // ---- channels ----

    /// The open sockets: the connection's, and the rotation's.
    fn open_sockets(&self) -> Vec<SocketId> {
        [self.main.as_ref(), self.next.as_ref()]
            .into_iter()
            .flatten()
            .filter(|s| s.open)
            .map(|s| s.id)
            .collect()
    }

    fn subscribe(&mut self, channel: String, get_state: bool) {
        let ch = self.channels.entry(channel.clone()).or_default();
        ch.get_state = get_state;
        if !self.order.contains(&channel) {
            self.order.push(channel.clone());
            if ch.cursor.is_none() && get_state {
                ch.awaiting_state = Some(StateWait::Subscribe);
                self.effects.push(Effect::GetState(channel.clone()));
            }
            for id in self.open_sockets() {
                if let Some(sock) = self.sock_mut(id) {
                    sock.unanswered.insert(channel.clone());
                }
                self.join(id, &channel);
            }
        } else if self.channels.get(&channel).is_some_and(|c| c.live) {
            self.effects.push(Effect::Emit(AppEvent::Live {
                channel: channel.clone(),
            }));
        }
        if self.state == State::Idle {
            self.connect();
        }
    }

    fn unsubscribe(&mut self, channel: String) {
        self.order.retain(|c| *c != channel);
        if let Some(ch) = self.channels.get_mut(&channel) {
            ch.live = false;
            ch.held.clear();
        }
        self.resends.remove(&format!("c:{channel}"));
        self.retries.remove(&format!("c:{channel}"));
        for id in self.open_sockets() {
            if let Some(sock) = self.sock_mut(id) {
                sock.unanswered.remove(&channel);
                sock.resuming.remove(&channel);
                sock.refused.remove(&channel);
            }
            self.send(
                id,
                &json!({"action": "unsubscribe", "channel": channel, "ref": format!("c:{channel}")}),
            );
        }
        self.maybe_switch();
    }

    fn on_state(&mut self, channel: String, loaded: Option<Cursor>) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let Some(wait) = ch.awaiting_state.take() else {
            return;
        };
        match wait {
            StateWait::Subscribe => {
                if let Some(cursor) = loaded {
                    ch.cursor = Some(cursor.clone());
                    self.persist_cursor(&channel);
                }
                for id in self.open_sockets() {
                    self.join(id, &channel);
                }
            }
            StateWait::HistoryLost {
                head,
                reason,
                socket,
            } => self.reset(socket, &channel, loaded.unwrap_or(head), reason),
        }
    }

    fn persist_cursor(&mut self, channel: &str) {
        if let Some(cursor) = self.channels.get(channel).and_then(|c| c.cursor.clone()) {
            self.effects.push(Effect::Persist {
                key: format!("cursor:{channel}"),
                value: json!(cursor),
            });
        }
    }

    fn reset(&mut self, socket: SocketId, channel: &str, cursor: Cursor, reason: &str) {
        if let Some(ch) = self.channels.get_mut(channel) {
            ch.cursor = Some(cursor.clone());
            ch.held.clear();
        }
        self.persist_cursor(channel);
        self.effects.push(Effect::Emit(AppEvent::Reset {
            channel: channel.to_owned(),
            reason: reason.to_owned(),
        }));
        let target = if self.sock_mut(socket).is_some() {
            Some(socket)
        } else {
            self.main.as_ref().filter(|s| s.open).map(|s| s.id)
        };
        if let Some(id) = target {
            self.resume(id, channel, &cursor);
        }
    }

    // ---- frames ----

    fn send(&mut self, id: SocketId, frame: &Value) {
        let now = self.now;
        if let Some(sock) = self.sock_mut(id) {
            sock.last_sent = now;
            self.effects.push(Effect::Send {
                socket: id,
                text: frame.to_string(),
            });
        }
    }

    fn on_frame(&mut self, id: SocketId, text: String) {
        if self.sock_mut(id).is_none() {
            return;
        }
        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
            return self.malformed(id, "a frame that is not JSON");
        };
        let kind = frame
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind == "push_result" && !frame.get("results").is_some_and(Value::is_array) {
            return self.malformed(id, "a push_result without results");
        }
        if kind == "event" && !frame.get("seq").is_some_and(Value::is_u64) {
            return self.malformed(id, "an event without seq");
        }
        let reference = frame.get("ref").and_then(Value::as_str).map(str::to_owned);
        match kind {
            "event" => self.on_event(id, frame, text),
            "device" => {
                if let Some(sock) = self.sock_mut(id) {
                    sock.device_ok = true;
                }
                self.retries.remove("d");
                if self.is_main(id) && self.state != State::Connected {
                    self.on_connected();
                } else if self.is_next(id) {
                    self.maybe_switch();
                } else {
                    self.pump();
                }
            }
            "subscribed" => {
                let Some(channel) = str_field(&frame, "channel") else {
                    return;
                };
                if let Some(ch) = self.channels.get_mut(&channel)
                    && ch.cursor.is_none()
                {
                    ch.cursor = Some(Cursor {
                        epoch: str_field(&frame, "epoch"),
                        seq: frame.get("seq").and_then(Value::as_u64).unwrap_or(0),
                    });
                    self.persist_cursor(&channel);
                }
                self.answered(id, &channel);
            }
            "skipped" => {
                let Some(channel) = str_field(&frame, "channel") else {
                    return;
                };
                let from = frame.get("from_seq").and_then(Value::as_u64).unwrap_or(0);
                let to = frame.get("to_seq").and_then(Value::as_u64).unwrap_or(0);
                let moved = match self.channels.get_mut(&channel) {
                    Some(Channel {
                        cursor: Some(cursor),
                        ..
                    }) if from == cursor.seq + 1 && to >= from => {
                        cursor.seq = to;
                        true
                    }
                    _ => false,
                };
                if moved {
                    self.persist_cursor(&channel);
                    self.release_held(&channel);
                }
            }
            "resumed" => {
                let Some(channel) = str_field(&frame, "channel") else {
                    return;
                };
                let seq = frame.get("seq").and_then(Value::as_u64).unwrap_or(0);
                let more = frame.get("more").and_then(Value::as_bool).unwrap_or(false);
                if let Some(sock) = self.sock_mut(id) {
                    sock.resuming.remove(&channel);
                }
                let Some(ch) = self.channels.get(&channel) else {
                    return;
                };
                let cursor = ch.cursor.clone().unwrap_or_default();
                if more || cursor.seq < seq || !ch.held.is_empty() {
                    self.resume(id, &channel, &cursor);
                } else {
                    self.answered(id, &channel);
                }
            }
            "pong" => {
                if let Some(sock) = self.sock_mut(id) {
                    sock.ping_out = false;
                }
                if self.is_main(id) {
                    self.cancel_timer(TimerId::PongTimeout);
                }
            }
            "push_result" => self.on_push_result(id, &frame, reference),
            "presence" => {
                if let Some((ticket, _, _)) =
                    reference.and_then(|r| self.presence_queries.remove(&r))
                {
                    self.effects.push(Effect::Emit(AppEvent::PresenceAnswer {
                        ticket,
                        result: Ok(frame),
                    }));
                }
            }
            "error" => self.on_error(id, frame, reference),
            // Answers the client has no use for.
            "unsubscribed" | "ack" => {}
            _ => self.malformed(id, "a frame of no known type"),
        }
    }

    /// A frame the client cannot read: dropped, reported, never thrown.
    fn malformed(&mut self, id: SocketId, message: &str) {
        tracing::warn!(socket = id, message, "a malformed frame");
        self.effects.push(Effect::Emit(AppEvent::Error {
            frame: json!({"code": "malformed_frame", "message": message}),
        }));
    }

    /// The channel was answered on this socket (`subscribed`, or the last `resumed`).
    fn answered(&mut self, id: SocketId, channel: &str) {
        if let Some(sock) = self.sock_mut(id) {
            sock.unanswered.remove(channel);
        }
        self.retries.remove(&format!("c:{channel}"));
        if !self.is_main(id) {
            // Subscribed mid-rotation: whichever socket answers first makes it live.
            if let Some(ch) = self.channels.get_mut(channel)
                && !ch.live
                && self.order.iter().any(|c| c == channel)
            {
                ch.live = true;
                self.effects.push(Effect::Emit(AppEvent::Live {
                    channel: channel.to_owned(),
                }));
            }
        }
        if self.is_main(id) {
            if let Some(ch) = self.channels.get_mut(channel)
                && !ch.live
            {
                ch.live = true;
                self.effects.push(Effect::Emit(AppEvent::Live {
                    channel: channel.to_owned(),
                }));
            }
            if self.state != State::Connected && self.main.as_ref().is_some_and(|s| s.device_ok) {
                self.on_connected();
            }
            self.pump();
        } else {
            self.maybe_switch();
        }
    }

    fn on_event(&mut self, id: SocketId, frame: Value, text: String) {
        let Some(channel) = str_field(&frame, "channel") else {
            return;
        };
        let seq = frame.get("seq").and_then(Value::as_u64).unwrap_or(0);
        let epoch = str_field(&frame, "epoch");
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        if !self.order.contains(&channel) {
            return;
        }
        let Some(cursor) = ch.cursor.clone() else {
            // Not yet placed (a subscribe in flight): the subscribed frame places it.
            return;
        };
        let same_epoch = match (&cursor.epoch, &epoch) {
            (Some(c), Some(e)) => c == e,
            (None, _) => seq == cursor.seq + 1,
            (Some(_), None) => false,
        };
        if !same_epoch {
            self.gap(id, &channel);
            return;
        }
        if seq <= cursor.seq {
            return;
        }
        if seq > cursor.seq + 1 {
            if ch.held.len() < MAX_HELD || ch.held.contains_key(&seq) {
                ch.held.insert(seq, (frame, text));
            }
            self.gap(id, &channel);
            return;
        }
        ch.cursor = Some(Cursor { epoch, seq });
        self.emit_event(&channel, seq, frame, text);
        self.release_held(&channel);
        self.persist_cursor(&channel);
    }

    fn emit_event(&mut self, channel: &str, seq: u64, frame: Value, text: String) {
        let kind = frame
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind == "presence.joined" || kind == "presence.left" {
            self.effects.push(Effect::Emit(AppEvent::Presence {
                channel: channel.to_owned(),
                frame: frame.clone(),
            }));
        }
        self.effects.push(Effect::Emit(AppEvent::Event {
            channel: channel.to_owned(),
            seq,
            frame,
            text,
        }));
    }

    /// Emit the held events that are now next; drop those at or below the cursor.
    fn release_held(&mut self, channel: &str) {
        loop {
            let Some(ch) = self.channels.get_mut(channel) else {
                return;
            };
            let Some(cursor) = ch.cursor.clone() else {
                return;
            };
            while ch
                .held
                .first_key_value()
                .is_some_and(|(s, _)| *s <= cursor.seq)
            {
                ch.held.pop_first();
            }
            let Some((frame, text)) = ch.held.remove(&(cursor.seq + 1)) else {
                return;
            };
            let seq = cursor.seq + 1;
            ch.cursor = Some(Cursor {
                epoch: cursor.epoch,
                seq,
            });
            self.emit_event(channel, seq, frame, text);
        }
    }

    /// Something is missing: `resume` from the cursor unless one is in flight.
    fn gap(&mut self, id: SocketId, channel: &str) {
        let in_flight = self
            .sock_mut(id)
            .is_none_or(|s| !s.open || s.resuming.contains(channel) || s.refused.contains(channel));
        let waiting = self
            .channels
            .get(channel)
            .is_some_and(|c| c.awaiting_state.is_some());
        if in_flight || waiting {
            return;
        }
        if let Some(cursor) = self.cursor(channel) {
            self.resume(id, channel, &cursor);
        }
    }

    fn on_error(&mut self, id: SocketId, frame: Value, reference: Option<String>) {
        let code = str_field(&frame, "code").unwrap_or_default();
        if code == "rate_limited"
            && let Some(s) = frame.get("retry_after").and_then(Value::as_u64)
        {
            self.retry_until = self.now + s.saturating_mul(1000);
        }
        if class_of(&code) == Some(OnWebSocket::Reconnect) {
            if self.is_next(id) {
                self.rotation_failed_with(4000);
            } else if self.is_main(id) {
                self.reconnect(&code);
            }
            return;
        }
        if let Some(r) = &reference {
            if self
                .in_flight
                .as_ref()
                .is_some_and(|b| &b.reference == r && b.socket == id)
            {
                self.on_batch_error(id, &code, &frame);
                return;
            }
            if let Some((ticket, _, _)) = self.presence_queries.remove(r) {
                let message = str_field(&frame, "message").unwrap_or_default();
                self.effects.push(Effect::Emit(AppEvent::PresenceAnswer {
                    ticket,
                    result: Err(LocalError {
                        code: "refused",
                        message: format!("{code}: {message}"),
                    }),
                }));
                return;
            }
        }
        if code == "history_lost" {
            let channel = reference
                .as_deref()
                .and_then(|r| r.strip_prefix("c:"))
                .map(str::to_owned)
                .or_else(|| {
                    frame
                        .pointer("/data/channel")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
            let Some(channel) = channel else {
                return;
            };
            if let Some(sock) = self.sock_mut(id) {
                sock.resuming.remove(&channel);
            }
            let head = Cursor {
                epoch: frame
                    .pointer("/data/epoch")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                seq: frame
                    .pointer("/data/seq")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            };
            let Some(ch) = self.channels.get_mut(&channel) else {
                return;
            };
            let old = ch.cursor.as_ref().and_then(|c| c.epoch.clone());
            let reason = if old.is_some() && old != head.epoch {
                "epoch_changed"
            } else {
                "history_lost"
            };
            ch.held.clear();
            if ch.get_state {
                ch.awaiting_state = Some(StateWait::HistoryLost {
                    head,
                    reason,
                    socket: id,
                });
                self.effects.push(Effect::GetState(channel));
            } else {
                self.reset(id, &channel, head, reason);
            }
            return;
        }
        let retry_later = class_of(&code) == Some(OnWebSocket::RetryLater);
        match reference.as_deref() {
            Some("d") if retry_later => self.resend_later(id, "d", &frame),
            Some("d") => {
                if self.is_next(id) {
                    self.rotation_failed();
                } else if self.is_main(id) {
                    if let Some(sock) = &self.main {
                        self.effects.push(Effect::Close {
                            socket: sock.id,
                            code: 1000,
                        });
                    }
                    self.effects.push(Effect::Emit(AppEvent::Error { frame }));
                    self.fail_for_good(&code);
                }
            }
            Some(r) if r.starts_with("c:") => {
                let channel = r["c:".len()..].to_owned();
                if !self.order.contains(&channel) {
                    return;
                }
                if retry_later {
                    let key = r.to_owned();
                    if let Some(sock) = self.sock_mut(id) {
                        sock.resuming.remove(&channel);
                    }
                    return self.resend_later(id, &key, &frame);
                }
                if let Some(sock) = self.sock_mut(id) {
                    sock.unanswered.remove(&channel);
                    sock.resuming.remove(&channel);
                    sock.refused.insert(channel.clone());
                }
                if self.channels.get(&channel).is_some_and(|c| !c.live) {
                    self.effects.push(Effect::Emit(AppEvent::ChannelRefused {
                        channel,
                        code: code.clone(),
                        message: str_field(&frame, "message").unwrap_or_default(),
                    }));
                }
                self.effects.push(Effect::Emit(AppEvent::Error { frame }));
                self.maybe_switch();
            }
            _ => self.effects.push(Effect::Emit(AppEvent::Error { frame })),
        }
    }

    /// A frame refused for a while: send it again on the same socket later.
    fn resend_later(&mut self, id: SocketId, key: &str, frame: &Value) {
        let at = self.now + self.retry_wait(key, frame);
        self.resends.insert(key.to_owned(), (id, at));
        if let Some(first) = self.resends.values().map(|(_, at)| *at).min() {
            self.set_timer(TimerId::Resend, first);
        }
    }

    // ---- the outbox ----

    fn push(&mut self, ticket: Ticket, mut mutation: Map<String, Value>) {
        let refuse = |code: &'static str, message: String| {
            Effect::Emit(AppEvent::PushRefused {
                ticket,
                error: LocalError { code, message },
            })
        };
        let Some(device) = self.config.device.clone() else {
            self.effects.push(refuse(
                "no_device",
                "push needs a device (Options.device)".into(),
            ));
            return;
        };
        if self.state == State::Closed {
            self.effects
                .push(refuse("closed", "the client was closed".into()));
            return;
        }
        let band = match mutation.remove("band") {
            Some(Value::String(b)) => b,
            _ => {
                self.effects.push(refuse(
                    "invalid_mutation",
                    "a mutation needs its `band`".into(),
                ));
                return;
            }
        };
        mutation.remove("mid");
        if !mutation.contains_key("ts") {
            mutation.insert("ts".into(), json!(rfc3339(self.now)));
        }
        let mid = self.mid_next;
        mutation.insert("mid".into(), json!(mid));
        let alone = push_frame(
            &band,
            &device.id,
            &format!("p:{mid}"),
            &[Value::Object(mutation.clone())],
        );
        if alone.len() > MAX_FRAME_BYTES {
            self.effects.push(refuse(
                "frame_too_large",
                format!(
                    "the push frame would be {} bytes, more than the {MAX_FRAME_BYTES} API Gateway takes",
                    alone.len()
                ),
            ));
            return;
        }
        let entry = Entry {
            mid,
            band,
            mutation,
            ticket: Some(ticket),
        };
        self.mid_next += 1;
        self.last_push = Some((self.step, mid));
        self.effects.push(Effect::Persist {
            key: format!("outbox:{mid}"),
            value: entry.stored(),
        });
        self.effects.push(Effect::Persist {
            key: "mid:next".into(),
            value: json!(self.mid_next),
        });
        self.entries.push(entry);
        if self.state == State::Idle {
            self.connect();
        }
        self.pump();
    }

    /// Send the next batch if the connection is up and nothing is in flight.
    fn pump(&mut self) {
        if self.state != State::Connected
            || self.in_flight.is_some()
            || self.push_blocked
            || self.rotating()
        {
            return;
        }
        let Some(sock) = self.main.as_ref().filter(|s| s.open && s.device_ok) else {
            return;
        };
        let id = sock.id;
        let Some(device) = self.config.device.clone() else {
            return;
        };
        let Some(first) = self.entries.first() else {
            return;
        };
        let band = first.band.clone();
        let reference = format!("p:{}", first.mid);
        let mut mutations: Vec<Value> = Vec::new();
        let mut mids = Vec::new();
        // The envelope, then each mutation and a comma.
        let mut size = push_frame(&band, &device.id, &reference, &[]).len();
        for entry in self
            .entries
            .iter()
            .take_while(|e| e.band == band)
            .take(MAX_BATCH)
        {
            let m = Value::Object(entry.mutation.clone());
            let len = m.to_string().len() + usize::from(!mutations.is_empty());
            if !mutations.is_empty() && size + len > MAX_FRAME_BYTES {
                break;
            }
            size += len;
            mutations.push(m);
            mids.push(entry.mid);
        }
        let text = push_frame(&band, &device.id, &reference, &mutations);
        self.in_flight = Some(Batch {
            socket: id,
            reference,
            mids,
            step: self.step,
        });
        let now = self.now;
        if let Some(sock) = self.sock_mut(id) {
            sock.last_sent = now;
        }
        self.effects.push(Effect::Send { socket: id, text });
    }

    fn on_push_result(&mut self, id: SocketId, frame: &Value, reference: Option<String>) {
        let ours = self
            .in_flight
            .as_ref()
            .is_some_and(|b| b.socket == id && Some(&b.reference) == reference.as_ref());
        let results = frame
            .get("results")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut expected_mid = None;
        for result in results {
            let Some(mid) = result.get("mid").and_then(Value::as_u64) else {
                continue;
            };
            let status = result
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if status == "out_of_order" {
                expected_mid = expected_mid.or(result.get("expected_mid").and_then(Value::as_u64));
                continue;
            }
            if !matches!(
                status,
                "applied" | "merged" | "conflict" | "rejected" | "duplicate"
            ) {
                continue;
            }
            let Some(pos) = self.entries.iter().position(|e| e.mid == mid) else {
                continue;
            };
            let entry = self.entries.remove(pos);
            let mutation = Value::Object(entry.mutation.clone());
            let rejected = status == "rejected"
                || (status == "duplicate"
                    && result.get("original_status").and_then(Value::as_str) == Some("rejected"));
            if rejected {
                let parked = Parked {
                    key: mid.to_string(),
                    mid: Some(mid),
                    band: entry.band.clone(),
                    mutation: mutation.clone(),
                    code: str_field(&result, "code"),
                    message: str_field(&result, "message"),
                };
                self.effects.push(Effect::Persist {
                    key: format!("parked:{mid}"),
                    value: json!(parked),
                });
                self.parked.retain(|p| p.key != parked.key);
                self.parked.push(parked);
            }
            self.effects.push(Effect::Remove(format!("outbox:{mid}")));
            self.effects.push(Effect::Emit(AppEvent::Verdict {
                ticket: entry.ticket,
                mid: Some(mid),
                mutation,
                result,
            }));
        }
        let more = frame.get("more").and_then(Value::as_bool).unwrap_or(false);
        if ours && !more {
            self.in_flight = None;
            self.retries.remove("p");
            if let Some(from) = expected_mid {
                self.renumber_from(from);
            }
            self.maybe_switch();
            self.pump();
        }
    }

    /// `out_of_order`: the server has nothing from `from` on, so every pending entry is
    /// renumbered from it, in order (one step's writes: the driver stores them at once).
    fn renumber_from(&mut self, from: u64) {
        if self.entries.first().is_none_or(|e| e.mid == from) {
            return;
        }
        let old: Vec<u64> = self.entries.iter().map(|e| e.mid).collect();
        for (i, e) in self.entries.iter_mut().enumerate() {
            e.mid = from + i as u64;
            e.mutation.insert("mid".into(), json!(e.mid));
        }
        let new: BTreeSet<u64> = self.entries.iter().map(|e| e.mid).collect();
        for e in &self.entries {
            self.effects.push(Effect::Persist {
                key: format!("outbox:{}", e.mid),
                value: e.stored(),
            });
        }
        for mid in old.into_iter().filter(|m| !new.contains(m)) {
            self.effects.push(Effect::Remove(format!("outbox:{mid}")));
        }
        self.mid_next = from + self.entries.len() as u64;
        self.effects.push(Effect::Persist {
            key: "mid:next".into(),
            value: json!(self.mid_next),
        });
    }

    /// A write of the last step failed, so what came after it in that step (its frames)
    /// never happened: a push whose entry was not stored gives its mid back and is
    /// refused with `storage_failed`. Any other outbox write that failed (a renumbering,
    /// a park, a removal) leaves the storage and the memory apart in a way no guess
    /// repairs (the next mids would collide with what is on disk): the client fails.
    fn on_persist_failed(&mut self, keys: Vec<String>) {
        let last_step = self.step.saturating_sub(1);
        if self.in_flight.as_ref().is_some_and(|b| b.step == last_step) {
            self.in_flight = None;
        }
        let pushed = self
            .last_push
            .filter(|(step, _)| *step == last_step)
            .map(|(_, mid)| mid);
        let mut lost_outbox = false;
        for key in &keys {
            self.effects.push(Effect::Emit(AppEvent::Error {
                frame: json!({"code": "storage_failed", "message": format!("could not store {key}")}),
            }));
            let outbox_mid = key
                .strip_prefix("outbox:")
                .and_then(|m| m.parse::<u64>().ok());
            match outbox_mid {
                Some(mid) if Some(mid) == pushed => {}
                Some(_) => lost_outbox = true,
                None if key == "mid:next" => lost_outbox |= pushed.is_none(),
                None => lost_outbox |= key.starts_with("parked:"),
            }
        }
        if lost_outbox {
            self.fail_for_good("storage");
            return;
        }
        if let Some(mid) = pushed.filter(|m| keys.contains(&format!("outbox:{m}")))
            && let Some(pos) = self.entries.iter().position(|e| e.mid == mid)
        {
            let entry = self.entries.remove(pos);
            if self.mid_next == mid + 1 {
                self.mid_next = mid;
            }
            if let Some(ticket) = entry.ticket {
                self.effects.push(Effect::Emit(AppEvent::PushRefused {
                    ticket,
                    error: LocalError {
                        code: "storage_failed",
                        message: format!("the outbox entry could not be stored (outbox:{mid})"),
                    },
                }));
            }
        }
        self.pump();
    }

    fn on_batch_error(&mut self, _id: SocketId, code: &str, frame: &Value) {
        let Some(batch) = self.in_flight.take() else {
            return;
        };
        let message = str_field(frame, "message").unwrap_or_default();
        match code {
            // Retry later: the same batch after `retry_after`, else `delay(k)`.
            _ if class_of(code) == Some(OnWebSocket::RetryLater) => {
                let wait = self.retry_wait("p", frame);
                self.push_blocked = true;
                self.set_timer(TimerId::PushRetry, self.now + wait);
            }
            "unknown_device" => {
                if let (Some(frame), Some(id)) =
                    (self.register_frame(), self.main.as_ref().map(|s| s.id))
                {
                    self.send(id, &frame);
                }
            }
            _ => {
                // Nothing of the frame was applied: park the named mutation (or every one
                // of the batch) locally, give back its mid, and send the rest again.
                let named = mutation_index(&message).and_then(|i| batch.mids.get(i).copied());
                let doomed: Vec<u64> = match named {
                    Some(mid) => vec![mid],
                    None => batch.mids.clone(),
                };
                for mid in doomed.into_iter().rev() {
                    self.park_locally(mid, code, &message);
                }
            }
        }
        self.maybe_switch();
        self.pump();
    }

    /// Park entry `mid` with no mid, and renumber the ones after it down by one.
    fn park_locally(&mut self, mid: u64, code: &str, message: &str) {
        let Some(pos) = self.entries.iter().position(|e| e.mid == mid) else {
            return;
        };
        let entry = self.entries.remove(pos);
        let key = format!("l{}", self.parked_next_local);
        self.parked_next_local += 1;
        let mut mutation = entry.mutation.clone();
        mutation.remove("mid");
        let parked = Parked {
            key: key.clone(),
            mid: None,
            band: entry.band.clone(),
            mutation: Value::Object(mutation.clone()),
            code: Some(code.to_owned()),
            message: Some(message.to_owned()),
        };
        self.effects.push(Effect::Persist {
            key: format!("parked:{key}"),
            value: json!(parked),
        });
        self.effects.push(Effect::Persist {
            key: "parked:next_local".into(),
            value: json!(self.parked_next_local),
        });
        self.parked.push(parked);
        let last = self.entries.last().map_or(mid, |e| e.mid.max(mid));
        for e in self.entries.iter_mut().filter(|e| e.mid > mid) {
            e.mid -= 1;
            e.mutation.insert("mid".into(), json!(e.mid));
        }
        for e in self.entries.iter().filter(|e| e.mid >= mid) {
            self.effects.push(Effect::Persist {
                key: format!("outbox:{}", e.mid),
                value: e.stored(),
            });
        }
        self.effects.push(Effect::Remove(format!("outbox:{last}")));
        self.mid_next -= 1;
        self.effects.push(Effect::Persist {
            key: "mid:next".into(),
            value: json!(self.mid_next),
        });
        self.effects.push(Effect::Emit(AppEvent::Verdict {
            ticket: entry.ticket,
            mid: None,
            mutation: Value::Object(mutation),
            result: json!({"status": "rejected", "code": code, "message": message}),
        }));
    }

    fn presence(&mut self, ticket: Ticket, band: String) {
        let Some(id) = self
            .main
            .as_ref()
            .filter(|s| s.open && self.state == State::Connected)
            .map(|s| s.id)
        else {
            self.effects.push(Effect::Emit(AppEvent::PresenceAnswer {
                ticket,
                result: Err(LocalError {
                    code: "not_connected",
                    message: "presence needs a live connection".into(),
                }),
            }));
            return;
        };
        let reference = format!("q:{ticket}");
        self.presence_queries
            .insert(reference.clone(), (ticket, band.clone(), id));
        self.send(
            id,
            &json!({"action": "presence", "band": band, "ref": reference}),
        );
    }
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// The `push` frame's text. Keys in a fixed order so its size is what is measured.
fn push_frame(band: &str, device: &str, reference: &str, mutations: &[Value]) -> String {
    json!({
        "action": "push",
        "band": band,
        "device": device,
        "mutations": mutations,
        "ref": reference,
    })
    .to_string()
}

/// `mutations[3]...` in a refusal's message: the index it names.
fn mutation_index(message: &str) -> Option<usize> {
    let rest = message.split("mutations[").nth(1)?;
    rest.split(']').next()?.parse().ok()
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: Ms) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `encodeURIComponent`.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The token's `exp` if this clock may rotate by it: only with more than 120 s left by
/// this clock. A server that accepted a token this clock sees as (nearly) expired means
/// the two clocks disagree, and rotating by that `exp` would rotate again and again
/// (PROTOCOL.md, rotation); the 115-minute rule still holds.
fn trusted_exp(token: &str, now: Ms) -> Option<Ms> {
    jwt_exp(token).filter(|exp| *exp > now.saturating_add(2 * ROTATE_BEFORE_EXP_MS))
}

/// The `exp` of a JWT's payload (ms), read without verifying it: the client only needs
/// to know when to fetch a new one.
pub fn jwt_exp(token: &str) -> Option<Ms> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    let secs = exp.as_u64().or_else(|| exp.as_f64().map(|f| f as u64))?;
    secs.checked_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn jwt(payload: &str) -> String {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            b.encode(r#"{"alg":"none"}"#),
            b.encode(payload)
        )
    }

    #[test]
    fn reads_the_exp_of_a_jwt_without_verifying_it() {
        assert_eq!(
            jwt_exp(&jwt(r#"{"sub":"a","exp":1764549000}"#)),
            Some(1_764_549_000_000)
        );
        assert_eq!(jwt_exp(&jwt(r#"{"sub":"a"}"#)), None, "no exp, no rule");
        assert_eq!(jwt_exp("opaque-token"), None);
        assert_eq!(jwt_exp("a.!!!.c"), None, "a payload that is not base64");
        assert_eq!(jwt_exp(&jwt("not json")), None);
    }

    #[test]
    fn backoff_is_full_jitter_between_one_second_and_the_cap() {
        assert_eq!(delay(1, 0.5), 1500);
        assert_eq!(delay(2, 0.5), 2500);
        assert_eq!(delay(5, 0.5), 15_500);
        assert_eq!(delay(30, 1.0), 30_000);
        assert_eq!(delay(3, 0.0), 1000);
    }

    #[test]
    fn encodes_the_token_like_encode_uri_component() {
        assert_eq!(encode_component("a b+c/d=é"), "a%20b%2Bc%2Fd%3D%C3%A9");
        let mut config = Config::new("ws://h/prod?x=1");
        config.device = None;
        let core = Core::new(config, &Stored::new(), Box::new(|| 0.5));
        assert_eq!(core.url_with("t"), "ws://h/prod?x=1&token=t");
    }

    fn connected_core() -> (Core, SocketId) {
        let mut config = Config::new("ws://h/prod");
        config.device = Some(Device {
            id: "ringo-ipad".into(),
            platform: "web".into(),
            name: "iPad".into(),
            categories: None,
        });
        let mut core = Core::new(config, &Stored::new(), Box::new(|| 0.5));
        core.handle(0, Input::Connect);
        core.handle(0, Input::Token(TokenResult::Ok("t".into())));
        core.handle(0, Input::Opened(1));
        core.handle(
            0,
            Input::Frame(
                1,
                r#"{"type":"device","device":"ringo-ipad","categories":[],"ref":"d"}"#.into(),
            ),
        );
        assert_eq!(core.state(), State::Connected);
        core.take_effects();
        (core, 1)
    }

    fn sent(effects: &[Effect]) -> Vec<Value> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send { text, .. } => serde_json::from_str(text).ok(),
                _ => None,
            })
            .collect()
    }

    fn push_small(core: &mut Core, ticket: Ticket, band: &str) {
        let m = json!({"band": band, "type": "t", "id": "x", "op": "patch", "base_version": 1});
        let Value::Object(mutation) = m else {
            unreachable!("an object")
        };
        core.handle(1, Input::Push { ticket, mutation });
    }

    /// The frames sent once mid 1 (the first batch, alone) is applied.
    fn after_first_verdict(core: &mut Core) -> Vec<Value> {
        core.take_effects();
        let result = json!({"type": "push_result", "ref": "p:1", "device": "ringo-ipad",
                            "results": [{"mid": 1, "status": "applied"}]});
        core.handle(2, Input::Frame(1, result.to_string()));
        sent(&core.take_effects())
    }

    #[test]
    fn batches_are_packed_to_32_kb_and_100_mutations() {
        let (mut core, _) = connected_core();
        // The first push goes alone (nothing in flight); the rest queue behind it.
        let note = "n".repeat(5000);
        for ticket in 0..40 {
            let m = json!({"band": "demo", "type": "setlist_entry", "id": format!("s{ticket}"), "op": "patch", "base_version": 1, "fields": {"notes": note}});
            let Value::Object(m) = m else { unreachable!() };
            core.handle(
                1,
                Input::Push {
                    ticket,
                    mutation: m,
                },
            );
        }
        let first = sent(&core.take_effects());
        assert_eq!(first.len(), 1);
        assert_eq!(first[0]["mutations"].as_array().unwrap().len(), 1);
        core.handle(2, Input::Frame(1, json!({"type":"push_result","ref":"p:1","device":"ringo-ipad","results":[{"mid":1,"status":"applied"}]}).to_string()));
        let effects = core.take_effects();
        let texts: Vec<&String> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send { text, .. } => Some(text),
                _ => None,
            })
            .collect();
        assert_eq!(texts.len(), 1);
        assert!(
            texts[0].len() <= MAX_FRAME_BYTES,
            "{} bytes",
            texts[0].len()
        );
        let batch: Value = serde_json::from_str(texts[0]).unwrap();
        let mids: Vec<u64> = batch["mutations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mid"].as_u64().unwrap())
            .collect();
        // Six mutations of ~5 KB fit in 32 KB, a seventh would not.
        assert_eq!(mids, (2..=7).collect::<Vec<_>>());
        let one_more = texts[0].len() + 5100;
        assert!(one_more > MAX_FRAME_BYTES);
        assert_eq!(batch["ref"], "p:2");

        // Small mutations: at most 100 to a batch.
        let (mut core, _) = connected_core();
        for ticket in 0..250 {
            push_small(&mut core, ticket, "demo");
        }
        let batch = &after_first_verdict(&mut core)[0];
        assert_eq!(batch["mutations"].as_array().unwrap().len(), MAX_BATCH);
    }

    #[test]
    fn batches_hold_one_band() {
        let (mut core, _) = connected_core();
        for (ticket, band) in [(0, "demo"), (1, "demo"), (2, "other"), (3, "demo")] {
            push_small(&mut core, ticket, band);
        }
        let batch = &after_first_verdict(&mut core)[0];
        assert_eq!(batch["band"], "demo");
        assert_eq!(
            batch["mutations"].as_array().unwrap().len(),
            1,
            "mid 2 only: mid 3 is another band's"
        );
    }

    #[test]
    fn the_outbox_is_persisted_before_its_frame_is_sent() {
        let (mut core, _) = connected_core();
        push_small(&mut core, 1, "demo");
        let effects = core.take_effects();
        let at = |want: &dyn Fn(&Effect) -> bool| effects.iter().position(want).unwrap();
        let stored = at(&|e| matches!(e, Effect::Persist { key, .. } if key == "outbox:1"));
        let next = at(&|e| matches!(e, Effect::Persist { key, .. } if key == "mid:next"));
        let sent = at(&|e| matches!(e, Effect::Send { .. }));
        assert!(stored < sent && next < sent, "{effects:?}");
    }

    fn batch_error(core: &mut Core, error: Value) -> Vec<Effect> {
        core.handle(5, Input::Frame(1, error.to_string()));
        core.take_effects()
    }

    #[test]
    fn a_batch_refused_for_a_while_is_sent_again() {
        let (mut core, _) = connected_core();
        push_small(&mut core, 1, "demo");
        core.take_effects();
        // rate_limited: again after retry_after seconds, not before
        let effects = batch_error(
            &mut core,
            json!({"type": "error", "code": "rate_limited", "message": "slow", "ref": "p:1", "retry_after": 3}),
        );
        assert!(sent(&effects).is_empty());
        assert!(effects.contains(&Effect::SetTimer {
            id: TimerId::PushRetry,
            at: 5 + 3000
        }));
        core.handle(3005, Input::Timer(TimerId::PushRetry));
        let again = sent(&core.take_effects());
        assert_eq!(again.len(), 1);
        assert_eq!(again[0]["mutations"][0]["mid"], 1);
        // unavailable, then conflict: passing, so again after delay(k), k counting every
        // retry-later answer of the batch in a row (never parked)
        for (code, k, at) in [("unavailable", 2, 3005), ("conflict", 3, 3005 + 2500)] {
            core.handle(
                at,
                Input::Frame(
                    1,
                    json!({"type": "error", "code": code, "message": "later", "ref": "p:1"})
                        .to_string(),
                ),
            );
            let effects = core.take_effects();
            assert!(sent(&effects).is_empty(), "{code}: {effects:?}");
            let wait = delay(k, 0.5);
            assert!(
                effects.contains(&Effect::SetTimer {
                    id: TimerId::PushRetry,
                    at: at + wait
                }),
                "{code}: {effects:?}"
            );
            core.handle(at + wait, Input::Timer(TimerId::PushRetry));
            let again = sent(&core.take_effects());
            assert_eq!(again.len(), 1, "{code}");
            assert_eq!(again[0]["action"], "push");
            assert!(core.parked().is_empty(), "{code} parks nothing");
        }
        // unknown_device: registered again, then the batch
        let again = sent(&batch_error(
            &mut core,
            json!({"type": "error", "code": "unknown_device", "message": "who?", "ref": "p:1"}),
        ));
        let actions: Vec<&str> = again.iter().filter_map(|f| f["action"].as_str()).collect();
        assert_eq!(actions, ["register_device", "push"]);
        assert_eq!(core.pending().len(), 1, "nothing was decided");
    }

    #[test]
    fn a_refusal_naming_no_mutation_parks_the_whole_batch_and_gives_back_the_mids() {
        let (mut core, _) = connected_core();
        for ticket in 1..=3 {
            push_small(&mut core, ticket, "demo");
        }
        // mid 1 is in flight alone; 2 and 3 wait
        core.take_effects();
        let effects = batch_error(
            &mut core,
            json!({"type": "error", "code": "forbidden", "message": "not a member", "ref": "p:1"}),
        );
        let parked = core.parked();
        assert_eq!(parked.len(), 1);
        assert_eq!((parked[0].key.as_str(), parked[0].mid), ("l1", None));
        assert_eq!(parked[0].code.as_deref(), Some("forbidden"));
        // The others moved down one mid, and go next
        let mids: Vec<u64> = core.pending().iter().map(|p| p.mid).collect();
        assert_eq!(mids, [1, 2]);
        let again = sent(&effects);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0]["mutations"][0]["mid"], 1);
        assert_eq!(again[0]["mutations"][1]["mid"], 2);
        assert!(effects.contains(&Effect::Remove("outbox:3".into())));
        assert!(effects.contains(&Effect::Persist {
            key: "mid:next".into(),
            value: json!(3)
        }));
    }

    fn frame(core: &mut Core, at: Ms, socket: SocketId, frame: Value) -> Vec<Effect> {
        core.handle(at, Input::Frame(socket, frame.to_string()));
        core.take_effects()
    }

    fn retry_at(effects: &[Effect]) -> Option<Ms> {
        effects.iter().rev().find_map(|e| match e {
            Effect::SetTimer {
                id: TimerId::Retry,
                at,
            } => Some(*at),
            _ => None,
        })
    }

    #[test]
    fn a_retry_after_floor_ends_at_error_time_plus_retry_after() {
        let (mut core, _) = connected_core();
        frame(
            &mut core,
            1000,
            1,
            json!({"type": "error", "code": "rate_limited", "message": "slow", "retry_after": 30}),
        );
        // Lost 25 s later: the floor has 5 s left, more than delay(1), and no more.
        core.handle(26_000, Input::Closed(1, None));
        assert_eq!(retry_at(&core.take_effects()), Some(31_000));
    }

    #[test]
    fn a_tab_visible_again_after_a_hidden_close_starts_fresh() {
        let mut config = Config::new("ws://h/prod");
        config.hidden_close_after_ms = Some(600_000);
        let mut core = Core::new(config, &Stored::new(), Box::new(|| 0.5));
        core.handle(0, Input::Connect);
        core.handle(0, Input::Token(TokenResult::Ok("t".into())));
        core.handle(0, Input::Opened(1));
        assert_eq!(core.state(), State::Connected);
        core.handle(0, Input::Env(Env::Hidden));
        core.handle(600_000, Input::Timer(TimerId::Hidden));
        assert_eq!(core.state(), State::Disconnected);
        // Visible five minutes later; the first attempt fails: not `suspended` at once.
        core.handle(900_000, Input::Env(Env::Visible));
        core.handle(900_000, Input::Token(TokenResult::Error("down".into())));
        assert_eq!(core.state(), State::Disconnected);
        assert_eq!(
            retry_at(&core.take_effects()),
            Some(900_000 + delay(1, 0.5))
        );
    }

    #[test]
    fn rotation_token_failures_back_off_by_delay_n() {
        let (mut core, _) = connected_core();
        let mut at = 10_000;
        for n in 1..=3 {
            core.handle(at, Input::Timer(TimerId::Rotate));
            assert!(core.take_effects().contains(&Effect::GetToken));
            core.handle(at, Input::Token(TokenResult::Error("down".into())));
            let wait = delay(n, 0.5);
            assert!(
                core.take_effects().contains(&Effect::SetTimer {
                    id: TimerId::Rotate,
                    at: at + wait
                }),
                "rotation failure {n}"
            );
            at += wait;
        }
        assert_eq!(core.state(), State::Connected, "the old socket stays");
    }

    /// Rotate to socket 2 and register the device on it.
    fn rotate_to_2(core: &mut Core, at: Ms) -> Vec<Effect> {
        core.handle(at, Input::Timer(TimerId::Rotate));
        core.handle(at, Input::Token(TokenResult::Ok("t2".into())));
        core.handle(at, Input::Opened(2));
        core.take_effects();
        frame(
            core,
            at,
            2,
            json!({"type": "device", "device": "ringo-ipad", "categories": [], "ref": "d"}),
        )
    }

    #[test]
    fn a_presence_query_unanswered_on_the_old_socket_is_asked_again_at_the_switch() {
        let (mut core, _) = connected_core();
        core.handle(
            5,
            Input::Presence {
                ticket: 7,
                band: "demo".into(),
            },
        );
        assert_eq!(sent(&core.take_effects())[0]["action"], "presence");
        let effects = rotate_to_2(&mut core, 10);
        assert!(effects.contains(&Effect::Close {
            socket: 1,
            code: 1000
        }));
        let again: Vec<&Effect> = effects
            .iter()
            .filter(
                |e| matches!(e, Effect::Send { socket: 2, text } if text.contains("\"presence\"")),
            )
            .collect();
        assert_eq!(again.len(), 1, "{effects:?}");
        let answer = frame(
            &mut core,
            11,
            2,
            json!({"type": "presence", "band": "demo", "members": [], "ref": "q:7"}),
        );
        assert!(
            answer.iter().any(|e| matches!(
                e,
                Effect::Emit(AppEvent::PresenceAnswer {
                    ticket: 7,
                    result: Ok(_)
                })
            )),
            "{answer:?}"
        );
    }

    #[test]
    fn a_failed_renumbering_fails_the_client_and_keeps_the_pending_entries() {
        let (mut core, _) = connected_core();
        for ticket in 1..=3 {
            push_small(&mut core, ticket, "demo");
        }
        core.take_effects();
        // mid 1 parked: 2 and 3 move down; that write fails.
        batch_error(
            &mut core,
            json!({"type": "error", "code": "forbidden", "message": "not a member", "ref": "p:1"}),
        );
        core.handle(
            6,
            Input::PersistFailed(vec![
                "outbox:1".into(),
                "outbox:2".into(),
                "mid:next".into(),
            ]),
        );
        let effects = core.take_effects();
        assert_eq!(core.state(), State::Failed);
        assert!(
            effects.iter().any(|e| matches!(
                e,
                Effect::Emit(AppEvent::State { current: State::Failed, reason, .. }) if reason == "storage"
            )),
            "{effects:?}"
        );
        assert!(
            !effects
                .iter()
                .any(|e| matches!(e, Effect::Emit(AppEvent::PushRefused { .. }))),
            "no push is refused: {effects:?}"
        );
        assert_eq!(core.pending().len(), 2, "nothing pending was dropped");
    }

    #[test]
    fn a_failed_push_write_gives_back_only_that_push() {
        let (mut core, _) = connected_core();
        push_small(&mut core, 1, "demo");
        push_small(&mut core, 2, "demo");
        core.take_effects();
        core.handle(
            2,
            Input::PersistFailed(vec!["outbox:2".into(), "mid:next".into()]),
        );
        let effects = core.take_effects();
        assert!(effects.contains(&Effect::Emit(AppEvent::PushRefused {
            ticket: 2,
            error: LocalError {
                code: "storage_failed",
                message: "the outbox entry could not be stored (outbox:2)".into(),
            },
        })));
        let mids: Vec<u64> = core.pending().iter().map(|p| p.mid).collect();
        assert_eq!(mids, [1]);
        assert_eq!(core.state(), State::Connected);
    }

    #[test]
    fn a_presence_query_is_answered_not_connected_when_the_socket_drops() {
        let (mut core, _) = connected_core();
        core.handle(
            5,
            Input::Presence {
                ticket: 7,
                band: "demo".into(),
            },
        );
        core.take_effects();
        core.handle(6, Input::Closed(1, Some(1006)));
        let effects = core.take_effects();
        assert!(
            effects.iter().any(|e| matches!(
                e,
                Effect::Emit(AppEvent::PresenceAnswer {
                    ticket: 7,
                    result: Err(LocalError {
                        code: "not_connected",
                        ..
                    })
                })
            )),
            "{effects:?}"
        );
    }

    #[test]
    fn a_rotation_socket_still_opening_is_closed_when_the_main_one_drops() {
        let (mut core, _) = connected_core();
        core.handle(10, Input::Timer(TimerId::Rotate));
        core.handle(10, Input::Token(TokenResult::Ok("t2".into())));
        core.take_effects();
        core.handle(11, Input::Closed(1, Some(1006)));
        let effects = core.take_effects();
        assert!(
            effects.contains(&Effect::Close {
                socket: 2,
                code: 1000
            }),
            "{effects:?}"
        );
        assert_eq!(core.state(), State::Disconnected);
    }

    #[test]
    fn the_same_near_expiry_token_after_a_switch_does_not_rotate_again_at_once() {
        // A static token (what `listen` gives): 10 minutes left at connect, so the first
        // rotation is at exp - 60 s; it gets the same token back, 60 s from its exp.
        let start: Ms = 1_764_549_000_000;
        let token = jwt(&format!(
            r#"{{"sub":"a","exp":{}}}"#,
            (start + 600_000) / 1000
        ));
        let mut core = Core::new(Config::new("ws://h/prod"), &Stored::new(), Box::new(|| 0.5));
        core.handle(start, Input::Connect);
        core.handle(start, Input::Token(TokenResult::Ok(token.clone())));
        core.handle(start, Input::Opened(1));
        let rotate_at = start + 540_000;
        assert!(core.take_effects().contains(&Effect::SetTimer {
            id: TimerId::Rotate,
            at: rotate_at
        }));
        core.handle(rotate_at, Input::Timer(TimerId::Rotate));
        core.handle(rotate_at, Input::Token(TokenResult::Ok(token)));
        core.handle(rotate_at, Input::Opened(2));
        let effects = core.take_effects();
        assert!(
            effects.contains(&Effect::Close {
                socket: 1,
                code: 1000
            }),
            "switched: {effects:?}"
        );
        let next: Vec<Ms> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::SetTimer {
                    id: TimerId::Rotate,
                    at,
                } => Some(*at),
                _ => None,
            })
            .collect();
        assert_eq!(next, [rotate_at + ROTATE_AFTER_MS], "{effects:?}");
    }

    #[test]
    fn a_refused_batch_lets_the_rotation_switch() {
        let (mut core, _) = connected_core();
        push_small(&mut core, 1, "demo");
        core.take_effects();
        let effects = rotate_to_2(&mut core, 10);
        assert!(
            !effects.contains(&Effect::Close {
                socket: 1,
                code: 1000
            }),
            "a batch is in flight on socket 1"
        );
        let effects = frame(
            &mut core,
            11,
            1,
            json!({"type": "error", "code": "forbidden", "message": "no", "ref": "p:1"}),
        );
        assert!(
            effects.contains(&Effect::Close {
                socket: 1,
                code: 1000
            }),
            "{effects:?}"
        );
    }

    #[test]
    fn a_register_device_refused_for_good_fails_the_client_with_its_code() {
        let (mut core, _) = connected_core();
        core.handle(5, Input::Closed(1, None));
        core.handle(2000, Input::Timer(TimerId::Retry));
        core.handle(2000, Input::Token(TokenResult::Ok("t".into())));
        core.handle(2000, Input::Opened(2));
        core.take_effects();
        frame(
            &mut core,
            2001,
            2,
            json!({"type": "error", "code": "device_taken", "message": "another member's", "ref": "d"}),
        );
        assert_eq!(core.state(), State::Failed);
    }

    #[test]
    fn a_channel_refused_rejects_its_subscribe_and_is_not_sent_again_on_that_socket() {
        let (mut core, _) = connected_core();
        core.handle(
            5,
            Input::Subscribe {
                channel: "band:x".into(),
                get_state: false,
            },
        );
        core.take_effects();
        let effects = frame(
            &mut core,
            6,
            1,
            json!({"type": "error", "code": "forbidden", "message": "not a member", "ref": "c:band:x"}),
        );
        assert!(
            effects.iter().any(|e| matches!(e, Effect::Emit(AppEvent::ChannelRefused { channel, code, .. }) if channel == "band:x" && code == "forbidden")),
            "{effects:?}"
        );
        assert_eq!(core.state(), State::Connected);
        let effects = frame(
            &mut core,
            7,
            1,
            json!({"type": "event", "channel": "band:x", "seq": 5, "epoch": "e1"}),
        );
        assert!(sent(&effects).is_empty(), "{effects:?}");
    }

    #[test]
    fn a_missing_pong_goes_straight_to_connecting() {
        let (mut core, _) = connected_core();
        core.handle(PING_AFTER_MS, Input::Timer(TimerId::Heartbeat));
        core.take_effects();
        core.handle(
            PING_AFTER_MS + PONG_TIMEOUT_MS,
            Input::Timer(TimerId::PongTimeout),
        );
        let effects = core.take_effects();
        assert!(effects.contains(&Effect::Close {
            socket: 1,
            code: 4000
        }));
        let states: Vec<State> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Emit(AppEvent::State { current, .. }) => Some(*current),
                _ => None,
            })
            .collect();
        assert_eq!(states, [State::Connecting]);
        assert!(effects.contains(&Effect::GetToken));
    }
}
