//! The conformance runner: every scenario of shared/clients/conformance replayed through
//! the sans-IO core with a fake clock, a scripted server and a fake storage, exactly as
//! the README there says. A failure names the file and the step.

use bandsync_client::core::{
    AppEvent, Config, Core, Cursor, Device, Effect, Env, Input, Ms, SocketId, Stored, Ticket,
    TimerId, TokenResult,
};
use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;

/// 2026-12-01T00:00:00Z.
const START: Ms = 1_764_547_200_000;

fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conformance")
}

#[derive(Default)]
struct FakeSocket {
    token: String,
    open: bool,
    /// Frames the client sent, not yet expected.
    inbox: VecDeque<Value>,
    /// The code the client closed it with.
    closed_by_client: Option<u16>,
    /// Gone (dropped, closed by either side, or the client reloaded).
    gone: bool,
    /// The core's id for it (the core of its generation).
    core_id: SocketId,
    generation: u32,
}

struct Runner {
    setup: Value,
    core: Core,
    generation: u32,
    now: Ms,
    timers: BTreeMap<TimerId, Ms>,
    storage: Stored,
    token_index: usize,
    token_calls: u64,
    sockets: BTreeMap<u64, FakeSocket>,
    /// Opens the client asked for that no `expect_open` took yet.
    opening: VecDeque<u64>,
    newest: u64,
    get_state_calls: HashMap<String, usize>,
    inputs: VecDeque<Input>,
    events: HashMap<String, Vec<u64>>,
    states: Vec<String>,
    resets: VecDeque<(String, String)>,
    verdicts: Vec<(Option<u64>, Value)>,
    promises: HashMap<String, Ticket>,
    outcomes: HashMap<Ticket, Result<Value, String>>,
    next_ticket: Ticket,
    vars: HashMap<String, Value>,
    auto_pong: bool,
    /// Every storage write fails (throws) while set.
    storage_fail: bool,
    /// `subscribe()` promises by name: the channel and, once settled, the outcome.
    subscribes: HashMap<String, (String, Option<Result<(), String>>)>,
    /// Client-level `error` events not yet expected.
    errors: VecDeque<Value>,
}

fn config_of(setup: &Value) -> Config {
    let mut config = Config::new(setup["url"].as_str().unwrap_or("ws://server/prod"));
    if let Some(d) = setup.get("device").filter(|d| !d.is_null()) {
        config.device = Some(Device {
            id: d["id"].as_str().unwrap_or_default().into(),
            platform: d["platform"].as_str().unwrap_or_default().into(),
            name: d["name"].as_str().unwrap_or_default().into(),
            categories: d
                .get("categories")
                .and_then(|c| serde_json::from_value(c.clone()).ok()),
        });
    }
    let options = &setup["options"];
    config.hidden_close_after_ms = options["hiddenCloseAfterMs"].as_u64();
    if let Some(ms) = options["suspendedRetryMs"].as_u64() {
        config.suspended_retry_ms = ms;
    }
    config
}

fn new_core(setup: &Value, storage: &Stored) -> Core {
    let random = setup["random"].as_f64().unwrap_or(0.5);
    Core::new(config_of(setup), storage, Box::new(move || random))
}

impl Runner {
    fn new(setup: Value) -> Self {
        let storage: Stored = setup["storage"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let core = new_core(&setup, &storage);
        Self {
            auto_pong: setup["auto_pong"].as_bool().unwrap_or(false),
            setup,
            core,
            generation: 0,
            now: START,
            timers: BTreeMap::new(),
            storage,
            token_index: 0,
            token_calls: 0,
            sockets: BTreeMap::new(),
            opening: VecDeque::new(),
            newest: 0,
            get_state_calls: HashMap::new(),
            inputs: VecDeque::new(),
            events: HashMap::new(),
            states: Vec::new(),
            resets: VecDeque::new(),
            verdicts: Vec::new(),
            promises: HashMap::new(),
            outcomes: HashMap::new(),
            next_ticket: 1,
            vars: HashMap::new(),
            storage_fail: false,
            subscribes: HashMap::new(),
            errors: VecDeque::new(),
        }
    }

    fn channels(&self) -> Vec<(String, bool)> {
        self.setup["channels"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        (
                            c["name"].as_str().unwrap_or_default().to_owned(),
                            c.get("get_state").is_some(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn start(&mut self) {
        self.inputs.push_back(Input::Connect);
        for (channel, get_state) in self.channels() {
            self.inputs
                .push_back(Input::Subscribe { channel, get_state });
        }
        self.settle();
    }

    /// Run until idle: no input pending, no timer due now.
    fn settle(&mut self) {
        loop {
            if let Some(input) = self.inputs.pop_front() {
                self.core.handle(self.now, input);
                for effect in self.core.take_effects() {
                    // A write that throws: nothing after it in this step happens.
                    if let Err(key) = self.perform(effect) {
                        self.inputs.push_front(Input::PersistFailed(vec![key]));
                        break;
                    }
                }
                continue;
            }
            let due = self
                .timers
                .iter()
                .filter(|(_, at)| **at <= self.now)
                .min_by_key(|(_, at)| **at)
                .map(|(id, _)| *id);
            match due {
                Some(id) => {
                    self.timers.remove(&id);
                    self.inputs.push_back(Input::Timer(id));
                }
                None => return,
            }
        }
    }

    fn advance(&mut self, ms: Ms) {
        let target = self.now + ms;
        loop {
            let next = self
                .timers
                .iter()
                .filter(|(_, at)| **at <= target)
                .min_by_key(|(_, at)| **at)
                .map(|(id, at)| (*id, *at));
            let Some((id, at)) = next else { break };
            self.now = self.now.max(at);
            self.timers.remove(&id);
            self.inputs.push_back(Input::Timer(id));
            self.settle();
        }
        self.now = target;
        self.settle();
    }

    fn global(&self, core_id: SocketId) -> Option<u64> {
        self.sockets
            .iter()
            .find(|(_, s)| s.generation == self.generation && s.core_id == core_id)
            .map(|(n, _)| *n)
    }

    fn token(&mut self) -> TokenResult {
        self.token_calls += 1;
        let tokens = self.setup["tokens"].as_array().cloned().unwrap_or_default();
        let i = self.token_index.min(tokens.len().saturating_sub(1));
        self.token_index += 1;
        match tokens.get(i) {
            Some(Value::String(s)) => TokenResult::Ok(s.clone()),
            Some(Value::Object(o)) if o.contains_key("jwt_exp") => {
                let exp = (START / 1000).saturating_add_signed(o["jwt_exp"].as_i64().unwrap_or(0));
                let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                let payload = b.encode(json!({"sub": "alice", "exp": exp}).to_string());
                TokenResult::Ok(format!("{}.{payload}.x", b.encode(r#"{"alg":"none"}"#)))
            }
            Some(Value::Object(o)) if o.contains_key("unauthorized") => {
                TokenResult::Unauthorized("unauthorized".into())
            }
            Some(Value::Object(o)) => {
                TokenResult::Error(o["error"].as_str().unwrap_or("error").into())
            }
            _ => TokenResult::Error("no token".into()),
        }
    }

    fn perform(&mut self, effect: Effect) -> Result<(), String> {
        if self.storage_fail
            && let Effect::Persist { key, .. } | Effect::Remove(key) = &effect
        {
            return Err(key.clone());
        }
        match effect {
            Effect::GetToken => {
                let t = self.token();
                self.inputs.push_back(Input::Token(t));
            }
            Effect::GetState(channel) => {
                let spec = self.setup["channels"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["name"] == channel.as_str()))
                    .and_then(|c| c.get("get_state"))
                    .cloned()
                    .unwrap_or(Value::Null);
                let calls = self.get_state_calls.entry(channel.clone()).or_default();
                let value = match spec {
                    Value::Array(list) => list
                        .get((*calls).min(list.len().saturating_sub(1)))
                        .cloned()
                        .unwrap_or(Value::Null),
                    other => other,
                };
                *calls += 1;
                let cursor = serde_json::from_value::<Cursor>(value).ok();
                self.inputs
                    .push_back(Input::StateLoaded { channel, cursor });
            }
            Effect::Open { socket, url } => {
                let n = self.sockets.keys().last().map_or(1, |n| n + 1);
                let token = url
                    .split(['?', '&'])
                    .find_map(|p| p.strip_prefix("token="))
                    .unwrap_or_default()
                    .to_owned();
                self.sockets.insert(
                    n,
                    FakeSocket {
                        token,
                        core_id: socket,
                        generation: self.generation,
                        ..FakeSocket::default()
                    },
                );
                self.opening.push_back(n);
            }
            Effect::Send { socket, text } => {
                let Some(n) = self.global(socket) else {
                    return Ok(());
                };
                let frame: Value = serde_json::from_str(&text).expect("the client sends JSON");
                assert!(
                    text.len() <= 32 * 1024,
                    "a frame of {} bytes was sent",
                    text.len()
                );
                if self.auto_pong && frame["action"] == "ping" {
                    let pong = json!({"type": "pong", "ts": bandsync_client::core::rfc3339(self.now), "ref": frame["ref"]});
                    self.inputs
                        .push_back(Input::Frame(socket, pong.to_string()));
                    return Ok(());
                }
                if let Some(s) = self.sockets.get_mut(&n)
                    && s.open
                    && !s.gone
                {
                    s.inbox.push_back(frame);
                }
            }
            Effect::Close { socket, code } => {
                if let Some(n) = self.global(socket) {
                    self.opening.retain(|o| *o != n);
                    if let Some(s) = self.sockets.get_mut(&n) {
                        s.closed_by_client = Some(code);
                        s.gone = true;
                    }
                }
            }
            Effect::SetTimer { id, at } => {
                self.timers.insert(id, at);
            }
            Effect::CancelTimer(id) => {
                self.timers.remove(&id);
            }
            Effect::Persist { key, value } => {
                self.storage.insert(key, value);
            }
            Effect::Remove(key) => {
                self.storage.remove(&key);
            }
            Effect::Emit(event) => self.record(event),
        }
        Ok(())
    }

    fn record(&mut self, event: AppEvent) {
        match event {
            AppEvent::State { current, .. } => self.states.push(current.as_str().into()),
            AppEvent::Event { channel, seq, .. } => {
                self.events.entry(channel).or_default().push(seq)
            }
            AppEvent::Reset { channel, reason } => self.resets.push_back((channel, reason)),
            AppEvent::Verdict {
                ticket,
                mid,
                result,
                ..
            } => {
                if let Some(t) = ticket {
                    self.outcomes.insert(t, Ok(result.clone()));
                }
                self.verdicts.push((mid, result));
            }
            AppEvent::PushRefused { ticket, error } => {
                self.outcomes.insert(ticket, Err(error.code.to_owned()));
            }
            AppEvent::PresenceAnswer { ticket, result } => {
                let outcome = result.map_err(|e| e.code.to_owned());
                self.outcomes.insert(ticket, outcome);
            }
            AppEvent::Live { channel } => self.settle_subscribes(&channel, Ok(())),
            AppEvent::ChannelRefused { channel, code, .. } => {
                self.settle_subscribes(&channel, Err(code))
            }
            AppEvent::Error { frame } => self.errors.push_back(frame),
            _ => {}
        }
    }

    fn settle_subscribes(&mut self, channel: &str, outcome: Result<(), String>) {
        for (c, settled) in self.subscribes.values_mut() {
            if c == channel && settled.is_none() {
                *settled = Some(outcome.clone());
            }
        }
    }

    fn socket_of(&self, step: &Value) -> u64 {
        step["socket"].as_u64().unwrap_or(self.newest)
    }

    fn server_send(&mut self, n: u64, frame: Value) -> Result<(), String> {
        let s = self.sockets.get(&n).ok_or(format!("no socket {n}"))?;
        if !s.open || s.gone || s.generation != self.generation {
            return Err(format!("socket {n} is not open"));
        }
        let id = s.core_id;
        self.inputs.push_back(Input::Frame(id, frame.to_string()));
        self.settle();
        Ok(())
    }

    fn subst(&self, v: &Value) -> Value {
        match v {
            Value::Object(o) if o.len() == 1 && o.contains_key("$var") => {
                let name = o["$var"].as_str().unwrap_or_default();
                self.vars.get(name).cloned().unwrap_or(Value::Null)
            }
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), self.subst(v))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(|v| self.subst(v)).collect()),
            other => other.clone(),
        }
    }

    fn step(&mut self, step: &Value) -> Result<(), String> {
        let obj = step.as_object().ok_or("a step is an object")?;
        if obj.contains_key("start") {
            self.start();
        } else if let Some(m) = obj.get("push") {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            if let Some(name) = obj.get("as").and_then(Value::as_str) {
                self.promises.insert(name.into(), ticket);
            }
            let mutation = m.as_object().cloned().ok_or("a mutation is an object")?;
            self.inputs.push_back(Input::Push { ticket, mutation });
            self.settle();
        } else if let Some(many) = obj.get("push_many") {
            let count = many["count"].as_u64().ok_or("push_many needs a count")?;
            for i in 1..=count {
                let mut mutation: Map<String, Value> =
                    many["mutation"].as_object().cloned().ok_or("a mutation")?;
                if let Some(Value::String(id)) = mutation.get("id") {
                    let id = id.replace("{i}", &i.to_string());
                    mutation.insert("id".into(), json!(id));
                }
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                self.inputs.push_back(Input::Push { ticket, mutation });
                self.settle();
            }
        } else if let Some(c) = obj.get("subscribe").and_then(Value::as_str) {
            let get_state = self.channels().iter().any(|(name, g)| name == c && *g);
            if let Some(name) = obj.get("as").and_then(Value::as_str) {
                self.subscribes.insert(name.into(), (c.into(), None));
            }
            self.inputs.push_back(Input::Subscribe {
                channel: c.into(),
                get_state,
            });
            self.settle();
        } else if let Some(c) = obj.get("unsubscribe").and_then(Value::as_str) {
            self.inputs.push_back(Input::Unsubscribe(c.into()));
            self.settle();
        } else if let Some(c) = obj.get("presence").and_then(Value::as_str) {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            if let Some(name) = obj.get("as").and_then(Value::as_str) {
                self.promises.insert(name.into(), ticket);
            }
            let band = c.strip_prefix("band:").unwrap_or(c).to_owned();
            self.inputs.push_back(Input::Presence { ticket, band });
            self.settle();
        } else if obj.contains_key("close") {
            self.inputs.push_back(Input::Close);
            self.settle();
        } else if obj.contains_key("reload") {
            for s in self.sockets.values_mut() {
                s.gone = true;
                s.inbox.clear();
            }
            self.opening.clear();
            self.timers.clear();
            self.inputs.clear();
            self.generation += 1;
            self.core = new_core(&self.setup, &self.storage);
            self.start();
        } else if let Some(env) = obj.get("env").and_then(Value::as_str) {
            let env = Env::parse(env).ok_or(format!("unknown env {env}"))?;
            self.inputs.push_back(Input::Env(env));
            self.settle();
        } else if let Some(ms) = obj.get("advance").and_then(Value::as_u64) {
            self.advance(ms);
        } else if let Some(ms) = obj.get("jump").and_then(Value::as_u64) {
            self.now += ms;
            self.settle();
        } else if let Some(pattern) = obj.get("expect_open") {
            let n = self
                .opening
                .pop_front()
                .ok_or("the client opened no socket")?;
            let token = self.sockets[&n].token.clone();
            let mut caps = HashMap::new();
            if !matches(pattern, Some(&json!({"token": token})), &mut caps) {
                return Err(format!(
                    "socket {n} opened with token {token:?}, not {pattern}"
                ));
            }
            let id = self.sockets[&n].core_id;
            match obj.get("refuse").and_then(Value::as_u64) {
                Some(status) => {
                    if let Some(s) = self.sockets.get_mut(&n) {
                        s.gone = true;
                    }
                    let status = (status != 0).then_some(status as u16);
                    self.inputs.push_back(Input::Refused(id, status));
                }
                None => {
                    if let Some(s) = self.sockets.get_mut(&n) {
                        s.open = true;
                    }
                    self.newest = n;
                    self.inputs.push_back(Input::Opened(id));
                }
            }
            self.settle();
        } else if let Some(pattern) = obj.get("expect_send") {
            let n = self.socket_of(step);
            self.expect_send(n, pattern)?;
        } else if let Some(many) = obj.get("expect_send_many") {
            let n = self.socket_of(step);
            for _ in 0..many["count"].as_u64().unwrap_or(0) {
                self.expect_send(n, &many["each"])?;
            }
        } else if obj.contains_key("expect_silent") {
            let which: Vec<u64> = match step["socket"].as_u64() {
                Some(n) => vec![n],
                None => {
                    if let Some(n) = self.opening.front() {
                        return Err(format!("socket {n} is opening"));
                    }
                    self.sockets.keys().copied().collect()
                }
            };
            for n in which {
                if let Some(f) = self.sockets.get(&n).and_then(|s| s.inbox.front()) {
                    return Err(format!("socket {n} has a frame waiting: {f}"));
                }
            }
        } else if let Some(flag) = obj.get("storage_fail").and_then(Value::as_bool) {
            self.storage_fail = flag;
        } else if let Some(text) = obj.get("send_text").and_then(Value::as_str) {
            let n = self.socket_of(step);
            let s = self.sockets.get(&n).ok_or(format!("no socket {n}"))?;
            if !s.open || s.gone || s.generation != self.generation {
                return Err(format!("socket {n} is not open"));
            }
            self.inputs
                .push_back(Input::Frame(s.core_id, text.to_owned()));
            self.settle();
        } else if let Some(spec) = obj.get("expect_settled") {
            let name = spec["as"].as_str().ok_or("as")?;
            let outcome: Option<Result<Value, String>> = match self.subscribes.get(name) {
                Some((_, settled)) => settled.clone().map(|r| r.map(|()| Value::Null)),
                None => {
                    let ticket = self
                        .promises
                        .get(name)
                        .ok_or(format!("no promise named {name}"))?;
                    self.outcomes.get(ticket).cloned()
                }
            };
            let holds = match (&outcome, spec) {
                (None, s) => s["pending"] == true,
                (Some(Ok(_)), s) => s["ok"] == true,
                (Some(Err(code)), s) => s["error"] == code.as_str(),
            };
            if !holds {
                return Err(format!("{name} is {outcome:?}, not {spec}"));
            }
        } else if let Some(spec) = obj.get("expect_error") {
            let got = self.errors.pop_front().ok_or("no error event")?;
            if !matches(spec, Some(&got), &mut HashMap::new()) {
                return Err(format!("error event {got}, not {spec}"));
            }
        } else if let Some(frame) = obj.get("send") {
            let frame = self.subst(frame);
            let n = self.socket_of(step);
            self.server_send(n, frame)?;
        } else if let Some(spec) = obj.get("send_events") {
            let n = self.socket_of(step);
            let from = spec["from"].as_u64().ok_or("from")?;
            let to = spec["to"].as_u64().ok_or("to")?;
            for seq in from..=to {
                let frame = json!({
                    "type": "event",
                    "channel": spec["channel"],
                    "seq": seq,
                    "epoch": spec["epoch"],
                    "id": format!("ev{seq}"),
                    "event": "file.updated",
                    "ts": "2026-12-01T00:00:00Z",
                    "data": {"path": format!("f{seq}.txt")},
                });
                self.server_send(n, frame)?;
            }
        } else if let Some(spec) = obj.get("send_push_result") {
            let spec = self.subst(spec);
            let n = self.socket_of(step);
            let results = match spec.get("results") {
                Some(r) => r.clone(),
                None => {
                    let from = spec["mids"]["from"].as_u64().ok_or("mids.from")?;
                    let to = spec["mids"]["to"].as_u64().ok_or("mids.to")?;
                    Value::Array(
                        (from..=to)
                            .map(|mid| {
                                let mut r = json!({"mid": mid, "status": spec["status"], "version": 1, "seq": mid});
                                if let Some(o) = spec.get("original_status") {
                                    r["original_status"] = o.clone();
                                }
                                r
                            })
                            .collect(),
                    )
                }
            };
            let mut frame = json!({"type": "push_result", "ref": spec["ref"], "device": spec["device"], "results": results});
            if spec["more"].as_bool() == Some(true) {
                frame["more"] = json!(true);
            }
            self.server_send(n, frame)?;
        } else if obj.contains_key("drop") || obj.contains_key("server_close") {
            let n = self.socket_of(step);
            let code = obj
                .get("server_close")
                .and_then(Value::as_u64)
                .map(|c| c as u16);
            let s = self.sockets.get_mut(&n).ok_or(format!("no socket {n}"))?;
            s.gone = true;
            s.inbox.clear();
            let (id, generation) = (s.core_id, s.generation);
            if generation == self.generation {
                self.inputs.push_back(Input::Closed(id, code));
            }
            self.settle();
        } else if let Some(code) = obj.get("expect_closed").and_then(Value::as_u64) {
            let n = self.socket_of(step);
            let got = self.sockets.get(&n).and_then(|s| s.closed_by_client);
            if got != Some(code as u16) {
                return Err(format!(
                    "socket {n} closed by the client with {got:?}, not {code}"
                ));
            }
        } else if let Some(state) = obj.get("expect_state").and_then(Value::as_str) {
            let got = self.core.state().as_str();
            if got != state {
                return Err(format!("state {got}, not {state}"));
            }
        } else if let Some(states) = obj.get("expect_states") {
            let got = json!(std::mem::take(&mut self.states));
            if &got != states {
                return Err(format!("states {got}, not {states}"));
            }
        } else if let Some(spec) = obj.get("expect_events") {
            let channel = spec["channel"].as_str().ok_or("channel")?;
            let got = self.events.remove(channel).unwrap_or_default();
            let want = seq_list(&spec["seqs"]);
            if got != want {
                return Err(format!("events {got:?} on {channel}, not {want:?}"));
            }
        } else if let Some(spec) = obj.get("expect_reset") {
            let (channel, reason) = self.resets.pop_front().ok_or("no reset")?;
            let mut caps = HashMap::new();
            if !matches(
                spec,
                Some(&json!({"channel": channel, "reason": reason})),
                &mut caps,
            ) {
                return Err(format!("reset {channel} {reason}, not {spec}"));
            }
        } else if let Some(spec) = obj.get("expect_verdict") {
            let name = spec["as"].as_str().ok_or("as")?;
            let ticket = self
                .promises
                .get(name)
                .ok_or(format!("no push named {name}"))?;
            let outcome = self
                .outcomes
                .get(ticket)
                .ok_or(format!("{name} did not settle"))?;
            let mut pattern = spec.clone();
            pattern.as_object_mut().map(|o| o.remove("as"));
            match (outcome, pattern.get("error")) {
                (Err(code), Some(want)) if want == code.as_str() => {}
                (Ok(result), None) => {
                    if !matches(&pattern, Some(result), &mut HashMap::new()) {
                        return Err(format!("{name} resolved with {result}, not {pattern}"));
                    }
                }
                (got, _) => return Err(format!("{name} settled with {got:?}, not {pattern}")),
            }
        } else if let Some(spec) = obj.get("expect_verdicts") {
            let got = std::mem::take(&mut self.verdicts);
            let mids: Vec<Option<u64>> = got.iter().map(|(m, _)| *m).collect();
            let want: Vec<Option<u64>> = match &spec["mids"] {
                Value::Array(a) => a.iter().map(Value::as_u64).collect(),
                range => seq_list(range).into_iter().map(Some).collect(),
            };
            if mids != want {
                return Err(format!("verdicts for mids {mids:?}, not {want:?}"));
            }
            for (mid, result) in &got {
                let status = if result["status"] == "duplicate" {
                    &result["original_status"]
                } else {
                    &result["status"]
                };
                if !matches(&spec["status"], Some(status), &mut HashMap::new()) {
                    return Err(format!(
                        "mid {mid:?}: {result}, not status {}",
                        spec["status"]
                    ));
                }
            }
        } else if let Some(spec) = obj.get("expect_pending") {
            let got: Vec<u64> = self.core.pending().iter().map(|p| p.mid).collect();
            let want = seq_list(spec);
            if got != want {
                return Err(format!("pending {got:?}, not {want:?}"));
            }
        } else if let Some(spec) = obj.get("expect_parked") {
            let got = json!(self.core.parked());
            if !matches(spec, Some(&got), &mut HashMap::new()) {
                return Err(format!("parked {got}, not {spec}"));
            }
        } else if let Some(spec) = obj.get("expect_storage") {
            for (key, pattern) in spec.as_object().ok_or("expect_storage")? {
                let got = self.storage.get(key);
                let ok = if pattern.is_null() {
                    got.is_none()
                } else {
                    matches(pattern, got, &mut HashMap::new())
                };
                if !ok {
                    return Err(format!("storage {key} is {got:?}, not {pattern}"));
                }
            }
        } else if let Some(n) = obj.get("expect_token_calls").and_then(Value::as_u64) {
            if self.token_calls != n {
                return Err(format!(
                    "getToken called {} times, not {n}",
                    self.token_calls
                ));
            }
        } else {
            return Err(format!("a step this runner does not know: {step}"));
        }
        Ok(())
    }

    fn expect_send(&mut self, n: u64, pattern: &Value) -> Result<(), String> {
        let frame = self
            .sockets
            .get_mut(&n)
            .and_then(|s| s.inbox.pop_front())
            .ok_or(format!("no frame waiting on socket {n}"))?;
        let mut caps = HashMap::new();
        if !matches(pattern, Some(&frame), &mut caps) {
            return Err(format!("socket {n} sent {frame}, not {pattern}"));
        }
        self.vars.extend(caps);
        Ok(())
    }
}

fn seq_list(v: &Value) -> Vec<u64> {
    match v {
        Value::Array(a) => a.iter().filter_map(Value::as_u64).collect(),
        Value::Object(o) => {
            let from = o.get("from").and_then(Value::as_u64).unwrap_or(1);
            let to = o.get("to").and_then(Value::as_u64).unwrap_or(0);
            (from..=to).collect()
        }
        _ => Vec::new(),
    }
}

/// The README's patterns.
fn matches(pattern: &Value, value: Option<&Value>, caps: &mut HashMap<String, Value>) -> bool {
    match pattern {
        Value::Object(p) if p.contains_key("$capture") => {
            let name = p["$capture"].as_str().unwrap_or_default();
            caps.insert(name.into(), value.cloned().unwrap_or(Value::Null));
            true
        }
        Value::Object(p) if p.contains_key("$any") => true,
        Value::Object(p) if p.contains_key("$absent") => value.is_none(),
        Value::Object(p) if p.contains_key("$mids") => {
            let want = seq_list(&p["$mids"]);
            let Some(Value::Array(items)) = value else {
                return false;
            };
            items.len() == want.len()
                && items
                    .iter()
                    .zip(&want)
                    .all(|(m, w)| m["mid"].as_u64() == Some(*w))
        }
        Value::Object(p) => {
            let Some(Value::Object(v)) = value else {
                return false;
            };
            p.iter().all(|(k, pv)| matches(pv, v.get(k), caps))
        }
        Value::Array(p) => {
            let Some(Value::Array(v)) = value else {
                return false;
            };
            p.len() == v.len() && p.iter().zip(v).all(|(pe, ve)| matches(pe, Some(ve), caps))
        }
        Value::Number(n) => value
            .and_then(Value::as_f64)
            .is_some_and(|v| Some(v) == n.as_f64()),
        other => value == Some(other),
    }
}

fn run(path: &std::path::Path) -> Result<usize, String> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    let scenario: Value = serde_json::from_str(&text).map_err(|e| format!("{name}: {e}"))?;
    let steps = scenario["steps"].as_array().cloned().unwrap_or_default();
    let mut runner = Runner::new(scenario["setup"].clone());
    for (i, step) in steps.iter().enumerate() {
        runner
            .step(step)
            .map_err(|e| format!("{name}, step {i} ({step}): {e}"))?;
    }
    Ok(steps.len())
}

#[test]
fn every_scenario_holds() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenarios_dir())
        .expect("the scenarios")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 21, "{} scenarios", files.len());
    let mut failures = Vec::new();
    let mut steps = 0;
    for file in &files {
        match run(file) {
            Ok(n) => steps += n,
            Err(e) => failures.push(e),
        }
    }
    eprintln!("{} scenarios, {steps} steps", files.len());
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn the_runner_catches_a_wrong_expectation() {
    // A scenario that cannot hold must fail, naming its step: the runner checks.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    let scenario = json!({
        "name": "wrong",
        "setup": {"url": "ws://server/prod", "tokens": ["t1"], "channels": [{"name": "band:demo"}]},
        "steps": [{"start": true}, {"expect_open": {"token": "t2"}}]
    });
    std::fs::write(&path, scenario.to_string()).unwrap();
    let err = run(&path).unwrap_err();
    assert!(err.contains("bad.json, step 1"), "{err}");
}
