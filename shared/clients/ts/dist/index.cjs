"use strict";
var __defProp = Object.defineProperty;
var __getOwnPropDesc = Object.getOwnPropertyDescriptor;
var __getOwnPropNames = Object.getOwnPropertyNames;
var __hasOwnProp = Object.prototype.hasOwnProperty;
var __export = (target, all) => {
  for (var name in all)
    __defProp(target, name, { get: all[name], enumerable: true });
};
var __copyProps = (to, from, except, desc) => {
  if (from && typeof from === "object" || typeof from === "function") {
    for (let key of __getOwnPropNames(from))
      if (!__hasOwnProp.call(to, key) && key !== except)
        __defProp(to, key, { get: () => from[key], enumerable: !(desc = __getOwnPropDesc(from, key)) || desc.enumerable });
  }
  return to;
};
var __toCommonJS = (mod) => __copyProps(__defProp({}, "__esModule", { value: true }), mod);

// src/index.ts
var index_exports = {};
__export(index_exports, {
  BandsyncClient: () => BandsyncClient,
  BandsyncError: () => BandsyncError,
  Channel: () => Channel,
  Core: () => Core,
  FrameTooLargeError: () => FrameTooLargeError,
  MAX_FRAME: () => MAX_FRAME,
  UnauthorizedError: () => UnauthorizedError,
  indexedDbStorage: () => indexedDbStorage,
  jwtExp: () => jwtExp,
  localStorageStorage: () => localStorageStorage,
  memoryStorage: () => memoryStorage
});
module.exports = __toCommonJS(index_exports);

// src/core.ts
var MAX_FRAME = 32768;
var MAX_BATCH = 100;
var MAX_HELD = 1e3;
var PING_AFTER = 27e4;
var PONG_WITHIN = 1e4;
var ROTATE_AFTER = 115 * 6e4;
var SUSPEND_AFTER = 12e4;
var WATCHDOG = 1e3;
var LATE = 1e4;
var CONNECT_WITHIN = 15e3;
var ROTATE_WITHIN = 3e4;
var RETRY = ["rate_limited", "conflict", "unavailable"];
var RECONNECT = ["unknown_connection", "missing_connection_id"];
var NOT_CONNECTED = { code: "not_connected", message: "not connected" };
var enc = new TextEncoder();
var bytes = (s) => enc.encode(s).length;
function jwtExp(token) {
  try {
    const p = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return typeof p.exp === "number" ? p.exp * 1e3 : void 0;
  } catch {
    return void 0;
  }
}
var Core = class {
  constructor(o, rnd, stored = {}) {
    this.o = o;
    this.rnd = rnd;
    for (const [k, v] of Object.entries(stored)) {
      if (k.startsWith("cursor:")) this.cursors.set(k.slice(7), v);
      else if (k.startsWith("outbox:")) this.outbox.push(v);
      else if (k === "parked:next_local") this.localNext = Number(v) || 1;
      else if (k.startsWith("parked:")) this.parkedList.push(v);
    }
    this.outbox.sort((a, b) => a.mid - b.mid);
    const last = this.outbox[this.outbox.length - 1];
    this.midNext = Math.max(Number(stored["mid:next"]) || 1, last ? last.mid + 1 : 1);
    this.parkedList.sort((a, b) => a.mutation.ts > b.mutation.ts ? 1 : -1);
  }
  o;
  rnd;
  state = "idle";
  chans = /* @__PURE__ */ new Map();
  fx = [];
  now = 0;
  main;
  rot;
  nextSock = 1;
  fails = 0;
  refusals = 0;
  since = 0;
  floor = 0;
  rotFails = 0;
  /** Retries in a row of one frame (by ref), for `delay(k)`. */
  tries = /* @__PURE__ */ new Map();
  waiting = false;
  hidden = false;
  hiddenClosed = false;
  watchdogAt = 0;
  cursors = /* @__PURE__ */ new Map();
  dirty = /* @__PURE__ */ new Set();
  outbox = [];
  midNext = 1;
  parkedList = [];
  localNext = 1;
  /** `write` effects issued, and of them ended (in order: the driver runs them so). */
  writes = 0;
  written = 0;
  batch;
  rateLimited = false;
  /** Resends put off by a retry-later error, by timer id. */
  laters = /* @__PURE__ */ new Map();
  presenceWaiters = /* @__PURE__ */ new Map();
  pending() {
    return this.outbox.map(({ mid, band, mutation }) => ({ mid, band, mutation }));
  }
  parked() {
    return this.parkedList.slice();
  }
  cursor(channel) {
    return this.chans.get(channel)?.cursor ?? this.cursors.get(channel) ?? null;
  }
  step(now, input) {
    this.now = now;
    this.fx = [];
    this.input(input);
    for (const ch of this.dirty) if (ch.cursor) this.persist("cursor:" + ch.name, ch.cursor);
    this.dirty.clear();
    return this.fx;
  }
  // ---- effects
  emit(name, data, channel) {
    this.fx.push({ type: "emit", name, data, channel });
  }
  timer(id, at) {
    this.fx.push({ type: "set_timer", id, at });
  }
  cancel(...ids) {
    for (const id of ids) this.fx.push({ type: "cancel_timer", id });
  }
  persist(key, value) {
    this.fx.push({ type: "persist", key, value });
  }
  remove(key) {
    this.fx.push({ type: "remove", key });
  }
  settle(tag, value, error) {
    if (tag !== void 0) this.fx.push({ type: "settle", tag, value, error });
  }
  /** Settles (and empties) a list of waiting promises. */
  settleAll(tags, error) {
    for (const t of tags.splice(0)) this.settle(t, void 0, error);
  }
  send(s, frame) {
    s.lastSend = this.now;
    this.fx.push({ type: "send", socket: s.id, text: JSON.stringify(frame) });
  }
  closeSock(s, code) {
    if (s && s.phase !== "token") this.fx.push({ type: "close", socket: s.id, code });
  }
  setState(current, reason, retryInMs) {
    if (current === this.state) return;
    const previous = this.state;
    this.state = current;
    this.emit("state", { previous, current, reason, retryInMs });
  }
  // ---- inputs
  input(i) {
    const st = this.state;
    switch (i.type) {
      case "start":
        if (st === "idle" || st === "failed" || st === "closed") {
          this.since = this.now;
          this.fails = this.refusals = 0;
          this.watchdog();
          this.attempt("connect");
        } else if (this.waiting || this.hiddenClosed) this.attempt("connect");
        return;
      case "token":
        return this.onToken(i);
      case "opened": {
        const s = this.sock(i.socket);
        if (s && s.phase === "opening") this.onOpen(s);
        return;
      }
      case "refused":
      case "closed": {
        const s = this.sock(i.socket);
        if (!s) return;
        if (s.rot) {
          this.rot = void 0;
          return this.rotationFailed();
        }
        this.main = void 0;
        const status = i.type === "refused" ? i.status : void 0;
        if (s.phase !== "open" && (status === 401 || status === 403)) {
          if (++this.refusals >= 2) return this.fail("refused");
          return this.attempt("refused", true);
        }
        this.refusals = 0;
        return this.lost(i.type === "refused" ? "refused" : "closed");
      }
      case "frame": {
        const s = this.sock(i.socket);
        if (!s || s.phase !== "open") return;
        try {
          this.onFrame(s, JSON.parse(i.text));
        } catch {
          this.emit("error", { code: "malformed_frame", message: i.text.slice(0, 80) });
        }
        return;
      }
      case "timer":
        return this.onTimer(i.id);
      case "env":
        return this.onEnv(i.env);
      case "subscribe":
        return this.subscribe(i.channel, i.getState, i.tag);
      case "state":
        return this.onState(i.channel, i.cursor);
      case "unsubscribe": {
        const ch = this.chans.get(i.channel);
        if (!ch || !ch.on) return;
        ch.on = ch.live = ch.loading = false;
        ch.lost = void 0;
        ch.held.clear();
        this.settleAll(ch.waiters, { code: "unsubscribed", message: "unsubscribed" });
        for (const s of [this.main, this.rot]) {
          s?.awaiting.delete(ch.name);
          if (s?.phase === "open") this.send(s, { action: "unsubscribe", channel: ch.name, ref: "c:" + ch.name });
        }
        return this.maybeSwitch();
      }
      case "push":
        return this.push(i.mutation, i.tag);
      case "presence": {
        if (!i.channel.startsWith("band:"))
          return this.settle(i.tag, void 0, { code: "invalid_request", message: "band only" });
        if (st !== "connected" || !this.main)
          return this.settle(i.tag, void 0, NOT_CONNECTED);
        const band = i.channel.slice(5);
        const w = this.presenceWaiters.get(band) ?? [];
        if (!w.length) this.send(this.main, { action: "presence", band, ref: "q:" + band });
        w.push(i.tag);
        this.presenceWaiters.set(band, w);
        return;
      }
      case "persisted":
        this.written++;
        return this.flush();
      case "persist_failed": {
        this.written++;
        const n = this.outbox.findIndex((e2) => "outbox:" + e2.mid === i.key);
        if (n < 0) return this.fail("storage");
        const [e] = this.outbox.splice(n, 1);
        if (e.mid === this.midNext - 1) this.midNext--;
        if (this.batch?.entries.includes(e)) this.batch = void 0;
        this.flush();
        return this.settle(e.tag, void 0, { code: "storage_failed", message: "not stored" });
      }
      case "dismiss": {
        const n = this.parkedList.findIndex((p) => p.key === i.key);
        if (n >= 0) {
          this.parkedList.splice(n, 1);
          this.remove("parked:" + i.key);
        }
        return;
      }
      case "close":
        if (st === "closed") return;
        this.teardown();
        this.cancel("retry", "w", "hid");
        this.hiddenClosed = false;
        return this.setState("closed", "close");
    }
  }
  sock(id) {
    return this.main?.id === id ? this.main : this.rot?.id === id ? this.rot : void 0;
  }
  // ---- connecting
  watchdog() {
    this.watchdogAt = this.now + WATCHDOG;
    this.timer("w", this.watchdogAt);
  }
  attempt(reason, quiet = false) {
    this.cancel("retry");
    this.waiting = this.hiddenClosed = false;
    const s = { id: this.nextSock++, phase: "token", rot: false, device: false, awaiting: /* @__PURE__ */ new Set(), lastSend: this.now };
    this.main = s;
    if (!quiet) this.setState("connecting", reason);
    this.timer("ct", this.now + CONNECT_WITHIN);
    this.fx.push({ type: "get_token", socket: s.id });
  }
  onToken(i) {
    const s = this.sock(i.socket);
    if (!s || s.phase !== "token") return;
    if (i.unauthorized) return this.fail("unauthorized");
    if (i.token === void 0) {
      this.emit("error", { code: "token", message: i.error ?? "getToken" });
      return s.rot ? this.rotationFailed() : this.lost("token");
    }
    s.phase = "opening";
    const exp = jwtExp(i.token);
    s.exp = exp !== void 0 && exp - this.now > 12e4 ? exp : void 0;
    const url = this.o.url + (this.o.url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(i.token);
    this.fx.push({ type: "open", socket: s.id, url });
  }
  register(s) {
    const d = this.o.device;
    const f = { action: "register_device", device: d.id, platform: d.platform, name: d.name, ref: "d" };
    if (d.categories) f.categories = d.categories;
    this.send(s, f);
  }
  onOpen(s) {
    s.phase = "open";
    const d = this.o.device;
    if (d) this.register(s);
    else s.device = true;
    for (const ch of this.chans.values()) if (ch.on && !ch.loading) this.resume(s, ch);
    if (d) return;
    if (s.rot) this.maybeSwitch();
    else this.connected();
  }
  /** Subscribe, or resume from the cursor, on a socket (ref `c:<channel>`). */
  resume(s, ch) {
    s.awaiting.add(ch.name);
    const ref = "c:" + ch.name;
    const c = ch.cursor;
    this.send(s, c ? { action: "resume", channel: ch.name, after_seq: c.seq, epoch: c.epoch, ref } : { action: "subscribe", channel: ch.name, ref });
  }
  /** Subscribe or resume on every open socket (both while rotating). */
  resumeAll(ch) {
    for (const s of [this.main, this.rot]) if (s?.phase === "open") this.resume(s, ch);
  }
  connected() {
    this.cancel("ct");
    this.fails = this.refusals = 0;
    this.setState("connected", "open");
    this.arm();
    this.flush();
  }
  /** Heartbeat and rotation timers for the current socket. */
  arm() {
    const s = this.main;
    this.timer("hb", s.lastSend + PING_AFTER);
    let at = this.now + ROTATE_AFTER;
    if (s.exp !== void 0) at = Math.max(Math.min(at, s.exp - 6e4), this.now + LATE);
    this.timer("rot", at);
  }
  delay(n) {
    return 1e3 + this.rnd() * (Math.min(3e4, 1e3 * 2 ** n) - 1e3);
  }
  /** Close what is open and forget what was in flight on it. */
  teardown() {
    this.closeSock(this.main, 1e3);
    this.closeSock(this.rot, 1e3);
    this.main = this.rot = void 0;
    this.batch = void 0;
    this.rateLimited = false;
    this.tries.clear();
    this.cancel(...this.laters.keys());
    this.laters.clear();
    this.cancel("hb", "pong", "rot", "rl", "ct", "rd");
    for (const ch of this.chans.values()) ch.live = false;
    for (const tags of this.presenceWaiters.values()) this.settleAll(tags, NOT_CONNECTED);
    this.presenceWaiters.clear();
  }
  /** The socket is gone: wait, then try again. */
  lost(reason) {
    if (this.state === "connected") this.since = this.now;
    this.main = void 0;
    this.teardown();
    this.fails++;
    const suspended = this.now - this.since >= SUSPEND_AFTER;
    const wait = Math.max(suspended ? this.o.suspendedRetryMs ?? 6e4 : this.delay(this.fails), this.floor - this.now);
    this.waiting = true;
    this.timer("retry", this.now + wait);
    this.setState(suspended ? "suspended" : "disconnected", reason, wait);
  }
  fail(reason) {
    this.teardown();
    this.waiting = false;
    this.cancel("retry", "w", "hid");
    this.setState("failed", reason);
  }
  onTimer(id) {
    const s = this.main;
    switch (id) {
      case "w": {
        const late = this.now - this.watchdogAt > LATE;
        this.watchdog();
        if (late) this.onEnv("wake");
        return;
      }
      case "retry":
        if (this.waiting) this.attempt("retry");
        return;
      case "hb":
        if (!s || this.state !== "connected") return;
        if (this.now - s.lastSend >= PING_AFTER) this.ping();
        this.timer("hb", s.lastSend + PING_AFTER);
        return;
      case "pong":
        if (s) this.redial("heartbeat", true);
        return;
      case "ct":
        if (!s) return;
        this.closeSock(s, 4e3);
        this.main = void 0;
        return this.lost("timeout");
      case "rot":
        if (this.state !== "connected" || this.rot) return;
        this.rot = { id: this.nextSock++, phase: "token", rot: true, device: false, awaiting: /* @__PURE__ */ new Set(), lastSend: this.now };
        this.timer("rd", this.now + ROTATE_WITHIN);
        this.fx.push({ type: "get_token", socket: this.rot.id });
        return;
      case "rd":
        return this.rot && this.rotationFailed(4e3);
      case "rl":
        this.rateLimited = false;
        return this.flush();
      case "hid":
        if (!this.hidden || this.hiddenClosed || ["idle", "failed", "closed"].includes(this.state)) return;
        this.teardown();
        this.cancel("retry");
        this.waiting = false;
        this.hiddenClosed = true;
        this.setState("disconnected", "hidden");
        return;
      default:
        this.laters.get(id)?.();
        this.laters.delete(id);
    }
  }
  /** Close the socket with 4000 and connect again at once (not a backoff failure). */
  redial(reason, lostFirst) {
    this.closeSock(this.main, 4e3);
    this.main = void 0;
    this.teardown();
    this.since = this.now;
    if (lostFirst) this.setState("disconnected", reason, 0);
    this.attempt(reason);
  }
  /** How long until a retry-later error's frame goes again: `retry_after`, else `delay(k)`. */
  wait(ref, f) {
    const k = (this.tries.get(ref) ?? 0) + 1;
    this.tries.set(ref, k);
    return f.retry_after ? f.retry_after * 1e3 : this.delay(k);
  }
  /** Send a channel's or the device's frame again on the same socket, later. */
  later(s, ref, f, again) {
    const id = "x" + s.id + ref;
    this.laters.set(id, () => this.sock(s.id) === s && again());
    this.timer(id, this.now + this.wait(ref, f));
  }
  ping() {
    this.send(this.main, { action: "ping", ref: "h" });
    this.timer("pong", this.now + PONG_WITHIN);
  }
  onEnv(env) {
    if (env === "hidden") {
      this.hidden = true;
      if (this.o.hiddenCloseAfterMs !== void 0) this.timer("hid", this.now + this.o.hiddenCloseAfterMs);
      return;
    }
    if (env === "visible") {
      this.hidden = false;
      this.cancel("hid");
      if (this.hiddenClosed) {
        this.since = this.now;
        this.fails = 0;
        return this.attempt("visible");
      }
    }
    if (env === "offline") return;
    if (this.waiting) return this.attempt(env);
    if (env === "wake" && this.state === "connected" && !this.hidden) this.ping();
  }
  rotationFailed(code = 1e3) {
    this.closeSock(this.rot, code);
    this.rot = void 0;
    this.cancel("rd");
    this.timer("rot", this.now + this.delay(++this.rotFails));
    this.flush();
  }
  /** Make-before-break: the new socket takes over once it has caught up. */
  maybeSwitch() {
    const r = this.rot;
    if (!r || r.phase !== "open" || !r.device || r.awaiting.size || this.batch) return;
    this.closeSock(this.main, 1e3);
    this.cancel("pong", "rd");
    this.main = r;
    r.rot = false;
    this.rot = void 0;
    this.rotFails = 0;
    for (const ch of this.chans.values()) if (ch.on && ch.held.size && !r.awaiting.has(ch.name)) this.resume(r, ch);
    for (const band of this.presenceWaiters.keys()) this.send(r, { action: "presence", band, ref: "q:" + band });
    this.arm();
    this.flush();
  }
  // ---- frames
  onFrame(s, f) {
    switch (f.type) {
      case "event":
        return this.onEvent(s, f);
      case "device":
        if (s.device) return;
        s.device = true;
        this.tries.delete("d");
        if (s.rot) return this.maybeSwitch();
        return this.state === "connecting" ? this.connected() : this.flush();
      case "subscribed": {
        const ch = this.answering(f);
        if (!ch) return;
        if (!ch.cursor) {
          ch.cursor = { epoch: f.epoch, seq: f.seq };
          this.dirty.add(ch);
        }
        return this.answered(s, ch);
      }
      case "resumed": {
        const ch = this.answering(f);
        if (!ch || !s.awaiting.has(ch.name)) return;
        if (f.more || !ch.cursor || ch.cursor.seq < f.seq || ch.held.size) return this.resume(s, ch);
        return this.answered(s, ch);
      }
      case "skipped": {
        const ch = this.chans.get(f.channel);
        const c = ch?.cursor;
        if (!ch || !ch.on || !c) return;
        if (f.from_seq > c.seq + 1) return this.gap(s, ch);
        if (f.to_seq > c.seq) this.advance(ch, { epoch: c.epoch, seq: f.to_seq });
        return;
      }
      case "pong":
        return this.cancel("pong");
      case "unsubscribed":
      case "ack":
        return;
      case "push_result":
        return this.onResults(f);
      case "presence": {
        const w = this.presenceWaiters.get(f.band) ?? [];
        this.presenceWaiters.delete(f.band);
        for (const t of w) this.settle(t, f.members);
        return;
      }
      case "error":
        return this.onError(s, f);
      default:
        throw 0;
    }
  }
  answering(f) {
    const ch = this.chans.get(f.channel);
    return ch && ch.on ? ch : void 0;
  }
  answered(s, ch) {
    s.awaiting.delete(ch.name);
    this.tries.delete("c:" + ch.name);
    if (!ch.live) {
      ch.live = true;
      this.settleAll(ch.waiters);
    }
    if (s.rot) this.maybeSwitch();
  }
  onEvent(s, e) {
    if (typeof e.seq !== "number") throw 0;
    const ch = this.chans.get(e.channel);
    const c = ch?.cursor;
    if (!ch || !ch.on || !c) return;
    const same = c.epoch === e.epoch || c.epoch === null && e.seq === c.seq + 1;
    if (!same) return this.gap(s, ch);
    if (e.seq <= c.seq) return;
    if (e.seq > c.seq + 1) {
      if (ch.held.size < MAX_HELD) ch.held.set(e.seq, e);
      return this.gap(s, ch);
    }
    this.deliver(ch, e);
    this.drain(ch);
  }
  deliver(ch, e) {
    ch.cursor = { epoch: e.epoch, seq: e.seq };
    this.dirty.add(ch);
    this.emit("event", e, ch.name);
    if (e.event === "presence.joined" || e.event === "presence.left") this.emit("presence", e, ch.name);
  }
  advance(ch, c) {
    ch.cursor = c;
    this.dirty.add(ch);
    this.drain(ch);
  }
  /** Emit held events that are now next; drop those the cursor passed. */
  drain(ch) {
    for (; ; ) {
      const c = ch.cursor;
      for (const k of ch.held.keys()) if (k <= c.seq) ch.held.delete(k);
      const next = ch.held.get(c.seq + 1);
      if (!next) return;
      ch.held.delete(next.seq);
      this.deliver(ch, next);
    }
  }
  gap(s, ch) {
    if (ch.loading || this.main?.awaiting.has(ch.name) || this.rot?.awaiting.has(ch.name)) return;
    this.resume(s, ch);
  }
  onError(s, f) {
    const ref = typeof f.ref === "string" ? f.ref : "";
    const code = f.code;
    const err = { code, message: f.message };
    if (code === "rate_limited" && f.retry_after) this.floor = this.now + f.retry_after * 1e3;
    if (RECONNECT.includes(code)) return s.rot ? this.rotationFailed(4e3) : this.redial("reconnect");
    const retry = RETRY.includes(code);
    if (ref.startsWith("c:")) {
      const ch = this.chans.get(ref.slice(2));
      if (!ch || !ch.on) return;
      if (f.code === "history_lost" && f.data) {
        ch.lost = { data: f.data, sock: s.id };
        if (ch.getState) {
          ch.loading = true;
          this.fx.push({ type: "get_state", channel: ch.name });
        } else this.reset(ch, { epoch: f.data.epoch, seq: f.data.seq });
        return;
      }
      if (retry) return this.later(s, ref, f, () => this.resume(s, ch));
      s.awaiting.delete(ch.name);
      this.emit("error", err, ch.name);
      this.settleAll(ch.waiters, err);
      return this.maybeSwitch();
    }
    if (ref === "d") {
      if (retry) return this.later(s, ref, f, () => this.register(s));
      this.emit("error", err);
      return s.rot ? this.rotationFailed() : this.fail(code);
    }
    if (this.batch && ref === this.batch.ref) return this.batchError(f);
    if (ref.startsWith("q:")) {
      this.settleAll(this.presenceWaiters.get(ref.slice(2)) ?? [], err);
      this.presenceWaiters.delete(ref.slice(2));
      return;
    }
    this.emit("error", err);
  }
  // ---- channels
  subscribe(name, getState, tag) {
    let ch = this.chans.get(name);
    if (!ch) {
      ch = { name, on: false, getState, cursor: this.cursors.get(name) ?? null, held: /* @__PURE__ */ new Map(), loading: false, live: false, waiters: [] };
      this.chans.set(name, ch);
    }
    ch.getState = getState;
    if (tag !== void 0) ch.waiters.push(tag);
    if (ch.on) {
      if (ch.live) this.settleAll(ch.waiters);
      return;
    }
    ch.on = true;
    if (this.state === "idle") this.input({ type: "start" });
    if (!ch.cursor && getState) {
      ch.loading = true;
      this.fx.push({ type: "get_state", channel: name });
    } else this.resumeAll(ch);
  }
  onState(name, got) {
    const ch = this.chans.get(name);
    if (!ch?.loading || this.state === "closed") return;
    ch.loading = false;
    const valid = got && typeof got.seq === "number" ? { epoch: got.epoch ?? null, seq: got.seq } : null;
    if (ch.lost) return this.reset(ch, valid ?? { epoch: ch.lost.data.epoch, seq: ch.lost.data.seq });
    if (valid) {
      ch.cursor = valid;
      this.dirty.add(ch);
    }
    if (ch.on) this.resumeAll(ch);
  }
  /** After history_lost: the refetched state's cursor, a `reset`, and a resume from it. */
  reset(ch, c) {
    const lost = ch.lost;
    ch.lost = void 0;
    const old = ch.cursor;
    const changed = !!old && old.epoch !== null && lost.data.epoch !== old.epoch;
    if (!old || old.epoch !== c.epoch) ch.held.clear();
    ch.cursor = c;
    this.dirty.add(ch);
    this.emit("reset", { reason: changed ? "epoch_changed" : "history_lost" }, ch.name);
    const s = this.sock(lost.sock);
    const target = s?.phase === "open" ? s : this.main?.phase === "open" ? this.main : void 0;
    if (target) this.resume(target, ch);
    this.drain(ch);
  }
  // ---- the outbox
  frameSize(band, ref, parts) {
    const d = this.o.device;
    return bytes(JSON.stringify({ action: "push", band, device: d.id, mutations: [], ref })) + parts.reduce((n, p) => n + bytes(p), 0) + Math.max(0, parts.length - 1);
  }
  push(m, tag) {
    if (!this.o.device) return this.settle(tag, void 0, { code: "no_device", message: "no device" });
    const base = m?.baseVersion ?? m?.base_version;
    if (!m || [m.band, m.type, m.id].some((x) => typeof x !== "string") || !["create", "patch", "delete"].includes(m.op) || !Number.isInteger(base) || base < 0)
      return this.settle(tag, void 0, { code: "invalid_mutation", message: "bad mutation" });
    const mid = this.midNext;
    const mutation = { mid, type: m.type, id: m.id, op: m.op, base_version: base, fields: m.fields ?? {}, ts: m.ts ?? new Date(this.now).toISOString() };
    if (m.resolves) mutation.resolves = m.resolves;
    if (this.frameSize(m.band, "p:" + mid, [JSON.stringify(mutation)]) > MAX_FRAME)
      return this.settle(tag, void 0, { code: "frame_too_large", message: "over 32 KB" });
    this.midNext++;
    const e = { mid, band: m.band, mutation, tag };
    this.outbox.push(e);
    if (this.state === "idle") this.input({ type: "start" });
    e.w = this.writeOut({ ["outbox:" + mid]: { mid, band: m.band, mutation }, "mid:next": this.midNext }, []);
    this.flush();
  }
  /** Send the next batch: the oldest entries of one band that fit a frame; one in flight. */
  flush() {
    const s = this.main;
    if (this.state !== "connected" || !s?.device || this.batch || this.rot || this.rateLimited || !this.outbox.length) return;
    const band = this.outbox[0].band;
    const ref = "p:" + this.outbox[0].mid;
    const parts = [];
    const entries = [];
    for (const e of this.outbox) {
      if (e.band !== band || entries.length === MAX_BATCH || e.w > this.written) break;
      const p = JSON.stringify(e.mutation);
      if (entries.length && this.frameSize(band, ref, [...parts, p]) > MAX_FRAME) break;
      parts.push(p);
      entries.push(e);
    }
    if (!entries.length) return;
    this.batch = { ref, sock: s.id, entries };
    this.send(s, { action: "push", band, device: this.o.device.id, mutations: entries.map((e) => e.mutation), ref });
  }
  onResults(f) {
    let expected;
    for (const r of f.results) {
      const e = this.outbox.find((x) => x.mid === r.mid);
      if (r.status === "out_of_order") expected ??= r.expected_mid ?? void 0;
      if (!e || r.status === "out_of_order") continue;
      const status = r.status === "duplicate" ? r.original_status : r.status;
      this.outbox.splice(this.outbox.indexOf(e), 1);
      if (status === "rejected") {
        const p = { key: String(e.mid), mid: e.mid, band: e.band, mutation: e.mutation, code: r.code ?? "rejected", message: r.message ?? "" };
        this.parkedList.push(p);
        this.persist("parked:" + p.key, p);
      }
      this.remove("outbox:" + e.mid);
      this.verdict(e, r);
    }
    if (Number.isInteger(expected) && this.outbox.length && this.outbox[0].mid !== expected) {
      this.midNext = expected + this.outbox.length;
      this.renumber(expected, this.outbox, {}, []);
    }
    if (this.batch && f.ref === this.batch.ref && !f.more) {
      this.tries.delete(f.ref);
      this.batch = void 0;
      this.maybeSwitch();
      this.flush();
    }
  }
  verdict(e, result) {
    this.emit("verdict", { mid: result.mid, mutation: e.mutation, result });
    this.settle(e.tag, result);
  }
  batchError(f) {
    const b = this.batch;
    this.batch = void 0;
    const code = f.code;
    if (RETRY.includes(code)) {
      this.rateLimited = true;
      this.timer("rl", this.now + this.wait(b.ref, f));
    } else if (code === "unknown_device" && this.main) {
      this.main.device = false;
      this.register(this.main);
    } else {
      const i = Number(/mutations\[(\d+)\]/.exec(f.message)?.[1]);
      this.parkLocal(b.entries[i] ? [b.entries[i]] : b.entries, { code, message: f.message });
    }
    this.maybeSwitch();
    this.flush();
  }
  parkLocal(gone, why) {
    const sets = {};
    const removes = gone.map((e) => "outbox:" + e.mid);
    for (const e of gone) {
      const key = "l" + this.localNext++;
      const { mid: _, ...mutation } = e.mutation;
      const p = { key, mid: null, band: e.band, mutation, code: why.code, message: why.message };
      this.parkedList.push(p);
      sets["parked:" + key] = p;
      this.verdict(e, { mid: null, status: "rejected", ...why });
    }
    sets["parked:next_local"] = this.localNext;
    const first = Math.min(...gone.map((e) => e.mid));
    this.outbox = this.outbox.filter((e) => !gone.includes(e));
    this.midNext -= gone.length;
    this.renumber(
      first,
      this.outbox.filter((e) => e.mid > first),
      sets,
      removes
    );
  }
  /** New mids from `from` for `entries`, with `sets`/`removes`, in one atomic write. */
  renumber(from, entries, sets, removes) {
    for (const e of entries) {
      removes.push("outbox:" + e.mid);
      e.mid = e.mutation.mid = from++;
    }
    sets["mid:next"] = this.midNext;
    for (const e of entries) sets["outbox:" + e.mid] = { mid: e.mid, band: e.band, mutation: e.mutation };
    const w = this.writeOut(sets, removes.filter((k) => !(k in sets)));
    for (const e of entries) e.w = w;
  }
  writeOut(sets, removes) {
    this.fx.push({ type: "write", sets, removes });
    return ++this.writes;
  }
};

// src/storage.ts
var each = (s) => (sets, removes) => {
  for (const k in sets) void s.set(k, sets[k]);
  for (const k of removes) void s.remove(k);
};
function memoryStorage(initial = {}) {
  const m = new Map(Object.entries(initial).map(([k, v]) => [k, JSON.stringify(v)]));
  const s = {
    load: () => Object.fromEntries([...m].map(([k, v]) => [k, JSON.parse(v)])),
    set: (k, v) => void m.set(k, JSON.stringify(v)),
    remove: (k) => void m.delete(k)
  };
  s.write = each(s);
  return s;
}
function localStorageStorage(prefix = "bandsync:", ls = globalThis.localStorage) {
  const s = {
    load() {
      const out = {};
      for (let i = 0; i < ls.length; i++) {
        const k = ls.key(i);
        if (k?.startsWith(prefix)) {
          try {
            out[k.slice(prefix.length)] = JSON.parse(ls.getItem(k));
          } catch {
          }
        }
      }
      return out;
    },
    set: (k, v) => ls.setItem(prefix + k, JSON.stringify(v)),
    remove: (k) => ls.removeItem(prefix + k)
  };
  s.write = each(s);
  return s;
}
function indexedDbStorage(name = "bandsync") {
  let db;
  const req = (r) => new Promise((ok, ko) => {
    r.onsuccess = () => ok(r.result);
    r.onerror = () => ko(r.error);
  });
  const open = () => {
    if (!db) {
      const r = indexedDB.open(name, 1);
      r.onupgradeneeded = () => r.result.createObjectStore("kv");
      db = req(r).then((d) => {
        d.onclose = d.onversionchange = () => {
          d.close();
          db = void 0;
        };
        return d;
      });
      db.catch(() => db = void 0);
    }
    return db;
  };
  const write = async (f) => {
    const t = (await open()).transaction("kv", "readwrite", { durability: "strict" });
    f(t.objectStore("kv"));
    return new Promise((ok, ko) => {
      t.oncomplete = () => ok();
      t.onerror = t.onabort = () => ko(t.error);
    });
  };
  return {
    async load() {
      const s = (await open()).transaction("kv").objectStore("kv");
      const [keys, values] = await Promise.all([req(s.getAllKeys()), req(s.getAll())]);
      return Object.fromEntries(keys.map((k, i) => [String(k), values[i]]));
    },
    set: (k, v) => write((s) => s.put(JSON.parse(JSON.stringify(v)), k)),
    remove: (k) => write((s) => s.delete(k)),
    write: (sets, removes) => write((s) => {
      for (const k in sets) s.put(JSON.parse(JSON.stringify(sets[k])), k);
      for (const k of removes) s.delete(k);
    })
  };
}

// src/client.ts
var UnauthorizedError = class extends Error {
  constructor(message2 = "unauthorized") {
    super(message2);
    this.name = "UnauthorizedError";
  }
};
var BandsyncError = class extends Error {
  constructor(code, message2) {
    super(message2);
    this.code = code;
    this.name = "BandsyncError";
  }
  code;
};
var FrameTooLargeError = class extends BandsyncError {
  constructor(message2) {
    super("frame_too_large", message2);
    this.name = "FrameTooLargeError";
  }
};
var Emitter = class {
  ls = /* @__PURE__ */ new Map();
  /** Returns a function that removes the listener. */
  on(name, f) {
    const s = this.ls.get(name) ?? /* @__PURE__ */ new Set();
    s.add(f);
    this.ls.set(name, s);
    return () => this.off(name, f);
  }
  off(name, f) {
    this.ls.get(name)?.delete(f);
  }
  /** @internal */
  _fire(name, d) {
    for (const f of this.ls.get(name) ?? []) {
      try {
        f(d);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
};
var systemClock = {
  now: () => Date.now(),
  setTimeout: (f, ms) => setTimeout(f, ms),
  clearTimeout: (h) => clearTimeout(h)
};
var message = (e) => String(e?.message ?? e);
var CLOSED = { code: "closed", message: "closed" };
var BandsyncClient = class extends Emitter {
  constructor(url, opts) {
    super();
    this.url = url;
    this.opts = opts;
    this.clock = opts.clock ?? systemClock;
    const storage = this.storage = opts.storage ?? memoryStorage();
    const locks = globalThis.navigator?.locks;
    const lock = "bandsync:" + opts.device?.id;
    const held = (l) => l && this.unlock ? new Promise((r) => this.unlock = r) : void 0;
    this.ready = (locks && opts.device ? new Promise(
      (got) => locks.request(lock, { ifAvailable: true }, (l) => {
        if (l) return got(), held(l);
        this.waitLock = true;
        this._fire("state", { previous: "idle", current: "suspended", reason: "device_in_use" });
        void locks.request(lock, (l2) => (got(), this.waitLock = false, held(l2)));
      })
    ) : Promise.resolve()).then(() => storage.load()).then(
      (data) => {
        const { device, hiddenCloseAfterMs, suspendedRetryMs } = opts;
        this.core = new Core({ url, device, hiddenCloseAfterMs, suspendedRetryMs }, opts.random ?? Math.random, data);
      },
      (e) => {
        this.broken = { code: "storage", message: message(e) };
        this._fire("error", this.broken);
      }
    ).then(() => {
      for (const i of this.early.splice(0)) this._feed(i, true);
      this.release();
    });
    this.listen();
  }
  url;
  opts;
  /** Resolves when the storage has been read (calls made before are queued). */
  ready;
  core;
  early = [];
  q = [];
  unlock = () => {
  };
  busy = false;
  sockets = /* @__PURE__ */ new Map();
  timers = /* @__PURE__ */ new Map();
  tags = /* @__PURE__ */ new Map();
  nextTag = 1;
  chans = /* @__PURE__ */ new Map();
  cursorWrites = /* @__PURE__ */ new Map();
  storage;
  clock;
  listening = false;
  broken;
  waitLock = false;
  closed = false;
  get state() {
    return this.broken ? "failed" : this.waitLock ? "suspended" : this.core?.state ?? "idle";
  }
  /** Connects (also done by the first `subscribe()` or `push()`); after `failed`, tries again. */
  connect() {
    this.listen();
    this._feed({ type: "start" });
  }
  /** Declares a channel; `subscribe()` on it makes it part of every connection. */
  channel(name, opts = {}) {
    let ch = this.chans.get(name);
    if (!ch) this.chans.set(name, ch = new Channel(this, name));
    if (opts.getState) ch.getState = opts.getState;
    return ch;
  }
  /** Queues a change (persisted before it is sent); resolves with the server's verdict. */
  push(mutation) {
    return this._promise((tag) => this._feed({ type: "push", mutation, tag }));
  }
  /** The queued mutations, oldest first. */
  pending() {
    return this.core?.pending() ?? [];
  }
  /** The rejected mutations the member should see, oldest first. */
  parked() {
    return this.core?.parked() ?? [];
  }
  /** Forgets a parked mutation. */
  dismiss(key) {
    this._feed({ type: "dismiss", key });
  }
  /** Closes the sockets with 1000; queued mutations stay in storage. Final: a new client is needed. */
  close() {
    this.closed = true;
    this._feed({ type: "close" }, true);
    const g = globalThis;
    g.removeEventListener?.("online", this.onEnv);
    g.removeEventListener?.("offline", this.onEnv);
    g.document?.removeEventListener("visibilitychange", this.onEnv);
    this.listening = false;
  }
  // After close(), once the queued effects (outbox writes) have run: only then may the
  // next tab load the storage. Promises still pending are rejected `closed` (their
  // entries stay stored; the next client sends them).
  release() {
    if (!this.closed || this.busy || this.early.length) return;
    this.unlock?.();
    this.unlock = void 0;
    for (const [tag] of this.tags) this.perform({ type: "settle", tag, error: CLOSED });
  }
  onEnv = (e) => {
    const env = e.type === "visibilitychange" ? document.visibilityState === "hidden" ? "hidden" : "visible" : e.type;
    this._feed({ type: "env", env });
  };
  listen() {
    const g = globalThis;
    if (this.listening || !g.window || !g.addEventListener) return;
    this.listening = true;
    g.addEventListener("online", this.onEnv);
    g.addEventListener("offline", this.onEnv);
    g.document?.addEventListener("visibilitychange", this.onEnv);
    if (g.document?.visibilityState === "hidden") this._feed({ type: "env", env: "hidden" });
  }
  /** @internal */
  _cursor(channel) {
    return this.core?.cursor(channel) ?? null;
  }
  /** @internal */
  _promise(start) {
    return new Promise((ok, ko) => {
      const tag = this.nextTag++;
      this.tags.set(tag, [ok, ko]);
      start(tag);
    });
  }
  /** @internal */
  _feed(i, early) {
    const no = this.broken ?? (this.closed && !early ? CLOSED : void 0);
    const tag = i.tag;
    if (no) {
      if (tag !== void 0) this.perform({ type: "settle", tag, error: no });
      return;
    }
    if (!this.core) {
      this.early.push(i);
      return;
    }
    this.q.push(this.core.step(this.clock.now(), i));
    if (!this.busy) void this.run();
  }
  // Effects run one after another; a storage write that returns a promise is waited
  // for. The core is told how each `write` ended (`persisted` / `persist_failed`): it
  // sends no outbox entry before its write is confirmed. A failed `write` drops the rest
  // of its step; a failed persist or remove is only reported.
  async run() {
    this.busy = true;
    while (this.q.length) {
      for (const e of this.q.shift()) {
        try {
          await this.perform(e);
          if (e.type === "write") this._feed({ type: "persisted" });
        } catch (err) {
          this._fire("error", { code: "storage", message: message(err) });
          if (e.type === "write") {
            this._feed({ type: "persist_failed", key: Object.keys(e.sets)[0] });
            break;
          }
        }
      }
    }
    this.busy = false;
    this.release();
  }
  perform(e) {
    switch (e.type) {
      case "get_token": {
        const socket = e.socket;
        Promise.resolve().then(() => this.opts.getToken()).then(
          (token) => this._feed({ type: "token", socket, token: String(token) }),
          (err) => this._feed(
            err instanceof UnauthorizedError || err?.name === "UnauthorizedError" ? { type: "token", socket, unauthorized: true } : { type: "token", socket, error: message(err) }
          )
        );
        return;
      }
      case "get_state": {
        const channel = e.channel;
        Promise.resolve().then(() => this.chans.get(channel)?.getState?.()).then(
          (s) => this._feed({ type: "state", channel, cursor: s ?? null }),
          (err) => {
            this.chans.get(channel)?._fire("error", { code: "get_state", message: message(err) });
            this._feed({ type: "state", channel, cursor: null });
          }
        );
        return;
      }
      case "open":
        return this.open(e.socket, e.url);
      case "send":
        try {
          this.sockets.get(e.socket)?.send(e.text);
        } catch {
        }
        return;
      case "close": {
        const ws = this.sockets.get(e.socket);
        this.sockets.delete(e.socket);
        if (!ws) return;
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        try {
          ws.close(e.code);
        } catch {
        }
        return;
      }
      case "set_timer": {
        const id = e.id;
        this.clock.clearTimeout(this.timers.get(id));
        const h = this.clock.setTimeout(
          () => {
            this.timers.delete(id);
            this._feed({ type: "timer", id });
          },
          Math.max(0, e.at - this.clock.now())
        );
        this.timers.set(id, h);
        return;
      }
      case "cancel_timer":
        this.clock.clearTimeout(this.timers.get(e.id));
        this.timers.delete(e.id);
        return;
      case "persist":
        return e.key.startsWith("cursor:") ? this.writeCursor(e.key, e.value) : this.storage.set(e.key, e.value);
      case "remove":
        return this.storage.remove(e.key);
      case "write": {
        const st = this.storage;
        if (st.write) return st.write(e.sets, e.removes);
        return (async () => {
          for (const [k, v] of Object.entries(e.sets)) await st.set(k, v);
          for (const k of e.removes) await st.remove(k);
        })();
      }
      case "emit":
        (e.channel === void 0 ? this : this.chans.get(e.channel))?._fire(e.name, e.data);
        return;
      case "settle": {
        const t = this.tags.get(e.tag);
        this.tags.delete(e.tag);
        const err = e.error;
        if (!t) return;
        if (err) t[1](err.code === "frame_too_large" ? new FrameTooLargeError(err.message) : new BandsyncError(err.code, err.message));
        else t[0](e.value);
        return;
      }
    }
  }
  // Cursor writes may be coalesced (PROTOCOL.md): the newest value per channel is
  // written in the background, one write at a time, so 1,000 replayed events do not
  // wait for 1,000 storage writes.
  writeCursor(key, value) {
    const busy = this.cursorWrites.has(key);
    this.cursorWrites.set(key, value);
    if (busy) return;
    void (async () => {
      while (this.cursorWrites.has(key)) {
        const v = this.cursorWrites.get(key);
        try {
          await this.storage.set(key, v);
        } catch (err) {
          this._fire("error", { code: "storage", message: message(err) });
        }
        if (this.cursorWrites.get(key) === v) this.cursorWrites.delete(key);
      }
    })();
  }
  open(id, url) {
    const WS = this.opts.WebSocket ?? globalThis.WebSocket;
    let ws;
    try {
      if (!WS) throw new Error("no WebSocket");
      ws = new WS(url);
    } catch (err) {
      this._fire("error", { code: "websocket", message: message(err) });
      queueMicrotask(() => this._feed({ type: "refused", socket: id }));
      return;
    }
    this.sockets.set(id, ws);
    let opened = false;
    let status;
    ws.on?.("unexpected-response", (_, res) => {
      status = res.statusCode;
      ws.close();
    });
    ws.onopen = () => {
      opened = true;
      this._feed({ type: "opened", socket: id });
    };
    ws.onmessage = (m) => this._feed({ type: "frame", socket: id, text: String(m.data) });
    ws.onclose = (c) => {
      this.sockets.delete(id);
      this._feed(opened ? { type: "closed", socket: id, code: c.code } : { type: "refused", socket: id, status: c.status ?? status });
    };
    ws.onerror = () => {
    };
  }
};
var Channel = class extends Emitter {
  constructor(client, name) {
    super();
    this.client = client;
    this.name = name;
  }
  client;
  name;
  /** @internal */
  getState;
  /** Resolves when the channel is live (after any replay). */
  subscribe() {
    return this.client._promise((tag) => this.client._feed({ type: "subscribe", channel: this.name, getState: !!this.getState, tag }));
  }
  unsubscribe() {
    this.client._feed({ type: "unsubscribe", channel: this.name });
  }
  /** Who of the band is online now (`band:<id>` channels). */
  presence() {
    return this.client._promise((tag) => this.client._feed({ type: "presence", channel: this.name, tag }));
  }
  /** Where the channel is: `{epoch, seq}` of the last event the app got. */
  get cursor() {
    return this.client._cursor(this.name);
  }
};
