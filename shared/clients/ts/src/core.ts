// The sans-IO core: inputs stamped with the time in, effects out (PROTOCOL.md). It owns
// no socket, timer or storage, so the conformance runner and every driver replay it the
// same way; the driver (client.ts) performs what it returns, in order.
import type {
  ClientFrame,
  Event as WireEvent,
  HistoryLostData,
  MutationResult,
  Platform,
  PresentMember,
  ServerFrame,
  WireMutation,
} from './wire.gen';

export type { WireEvent, MutationResult, WireMutation, PresentMember };

export type State =
  | 'idle'
  | 'connecting'
  | 'connected'
  | 'disconnected'
  | 'suspended'
  | 'failed'
  | 'closed';
export type Env = 'online' | 'offline' | 'visible' | 'hidden' | 'wake';
export interface Cursor {
  epoch: string | null;
  seq: number;
}
export interface Device {
  id: string;
  platform: Platform;
  name: string;
  categories?: string[] | null;
}
/** A mutation as the app gives it (`baseVersion` or `base_version`; `mid` is the client's). */
export interface Mutation {
  band: string;
  type: string;
  id: string;
  op: 'create' | 'patch' | 'delete';
  baseVersion?: number;
  base_version?: number;
  fields?: Record<string, unknown>;
  resolves?: string | null;
  ts?: string;
}
export interface Pending {
  mid: number;
  band: string;
  mutation: WireMutation;
}
export interface Parked {
  key: string;
  mid: number | null;
  band: string;
  mutation: Omit<WireMutation, 'mid'> & { mid?: number };
  code: string;
  message: string;
}
/** A verdict: the server's, or a local refusal of a mutation whose mid was given back. */
export type Verdict = MutationResult | { mid: null; status: 'rejected'; code: string; message: string };
export interface Failure {
  code: string;
  message: string;
}
export interface Options {
  url: string;
  device?: Device;
  hiddenCloseAfterMs?: number;
  suspendedRetryMs?: number;
}

export type Input =
  | { type: 'start' }
  | { type: 'token'; socket: number; token?: string; unauthorized?: boolean; error?: string }
  | { type: 'opened'; socket: number }
  | { type: 'refused'; socket: number; status?: number }
  | { type: 'frame'; socket: number; text: string }
  | { type: 'closed'; socket: number; code: number }
  | { type: 'timer'; id: string }
  | { type: 'env'; env: Env }
  | { type: 'subscribe'; channel: string; getState: boolean; tag?: number }
  | { type: 'state'; channel: string; cursor: Cursor | null }
  | { type: 'unsubscribe'; channel: string }
  | { type: 'push'; mutation: Mutation; tag?: number }
  | { type: 'presence'; channel: string; tag: number }
  | { type: 'dismiss'; key: string }
  | { type: 'persist_failed'; key: string }
  /** The oldest unconfirmed `write` landed (the driver tells the core how each ended). */
  | { type: 'persisted' }
  | { type: 'close' };

export type Effect =
  | { type: 'get_token'; socket: number }
  | { type: 'get_state'; channel: string }
  | { type: 'open'; socket: number; url: string }
  | { type: 'send'; socket: number; text: string }
  | { type: 'close'; socket: number; code: number }
  | { type: 'set_timer'; id: string; at: number }
  | { type: 'cancel_timer'; id: string }
  | { type: 'persist'; key: string; value: unknown }
  | { type: 'remove'; key: string }
  /** One atomic storage write (renumbering; an outbox entry with `mid:next`). */
  | { type: 'write'; sets: Record<string, unknown>; removes: string[] }
  | { type: 'emit'; name: string; data: unknown; channel?: string }
  | { type: 'settle'; tag: number; value?: unknown; error?: Failure };

/** API Gateway reads a message in frames of at most 32 KB and closes with 1009 past it. */
export const MAX_FRAME = 32768;
const MAX_BATCH = 100;
const MAX_HELD = 1000;
const PING_AFTER = 270_000;
const PONG_WITHIN = 10_000;
const ROTATE_AFTER = 115 * 60_000;
const SUSPEND_AFTER = 120_000;
const WATCHDOG = 1000;
const LATE = 10_000;
const CONNECT_WITHIN = 15_000;
const ROTATE_WITHIN = 30_000;
// The classes of shared/src/error.rs: send the same frame again later, or reconnect.
const RETRY = ['rate_limited', 'conflict', 'unavailable'];
const RECONNECT = ['unknown_connection', 'missing_connection_id'];
const NOT_CONNECTED: Failure = { code: 'not_connected', message: 'not connected' };

type ErrorFrame = Extract<ServerFrame, { type: 'error' }>;
type PushResult = Extract<ServerFrame, { type: 'push_result' }>;
type ChannelAnswer = { channel: string; ref?: unknown };

interface Sock {
  id: number;
  phase: 'token' | 'opening' | 'open';
  rot: boolean;
  device: boolean;
  /** Channels with a subscribe or resume in flight on this socket. */
  awaiting: Set<string>;
  exp?: number;
  lastSend: number;
}
interface Chan {
  name: string;
  on: boolean;
  getState: boolean;
  cursor: Cursor | null;
  held: Map<number, WireEvent>;
  loading: boolean;
  lost?: { data: HistoryLostData; sock: number };
  live: boolean;
  waiters: number[];
}
interface Entry extends Pending {
  tag?: number;
  /** The number of the write that stores it: sent only once that write is confirmed. */
  w?: number;
}

const enc = new TextEncoder();
const bytes = (s: string) => enc.encode(s).length;

/** `exp` of a JWT's payload in ms, read without verifying (rotation only needs the time). */
export function jwtExp(token: string): number | undefined {
  try {
    const p = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    return typeof p.exp === 'number' ? p.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

export class Core {
  state: State = 'idle';
  private chans = new Map<string, Chan>();
  private fx: Effect[] = [];
  private now = 0;
  private main?: Sock;
  private rot?: Sock;
  private nextSock = 1;
  private fails = 0;
  private refusals = 0;
  private since = 0;
  private floor = 0;
  private rotFails = 0;
  /** Retries in a row of one frame (by ref), for `delay(k)`. */
  private tries = new Map<string, number>();
  private waiting = false;
  private hidden = false;
  private hiddenClosed = false;
  private watchdogAt = 0;
  private cursors = new Map<string, Cursor>();
  private dirty = new Set<Chan>();
  private outbox: Entry[] = [];
  private midNext = 1;
  private parkedList: Parked[] = [];
  private localNext = 1;
  /** `write` effects issued, and of them ended (in order: the driver runs them so). */
  private writes = 0;
  private written = 0;
  private batch?: { ref: string; sock: number; entries: Entry[] };
  private rateLimited = false;
  /** Resends put off by a retry-later error, by timer id. */
  private laters = new Map<string, () => void>();
  private presenceWaiters = new Map<string, number[]>();

  constructor(
    private readonly o: Options,
    private readonly rnd: () => number,
    stored: Record<string, unknown> = {},
  ) {
    for (const [k, v] of Object.entries(stored)) {
      if (k.startsWith('cursor:')) this.cursors.set(k.slice(7), v as Cursor);
      else if (k.startsWith('outbox:')) this.outbox.push(v as Entry);
      else if (k === 'parked:next_local') this.localNext = Number(v) || 1;
      else if (k.startsWith('parked:')) this.parkedList.push(v as Parked);
    }
    this.outbox.sort((a, b) => a.mid - b.mid);
    const last = this.outbox[this.outbox.length - 1];
    this.midNext = Math.max(Number(stored['mid:next']) || 1, last ? last.mid + 1 : 1);
    // Oldest first: by the time the member made the change.
    this.parkedList.sort((a, b) => (a.mutation.ts > b.mutation.ts ? 1 : -1));
  }

  pending(): Pending[] {
    return this.outbox.map(({ mid, band, mutation }) => ({ mid, band, mutation }));
  }
  parked(): Parked[] {
    return this.parkedList.slice();
  }
  cursor(channel: string): Cursor | null {
    return this.chans.get(channel)?.cursor ?? this.cursors.get(channel) ?? null;
  }

  step(now: number, input: Input): Effect[] {
    this.now = now;
    this.fx = [];
    this.input(input);
    for (const ch of this.dirty) if (ch.cursor) this.persist('cursor:' + ch.name, ch.cursor);
    this.dirty.clear();
    return this.fx;
  }

  // ---- effects

  private emit(name: string, data: unknown, channel?: string) {
    this.fx.push({ type: 'emit', name, data, channel });
  }
  private timer(id: string, at: number) {
    this.fx.push({ type: 'set_timer', id, at });
  }
  private cancel(...ids: string[]) {
    for (const id of ids) this.fx.push({ type: 'cancel_timer', id });
  }
  private persist(key: string, value: unknown) {
    this.fx.push({ type: 'persist', key, value });
  }
  private remove(key: string) {
    this.fx.push({ type: 'remove', key });
  }
  private settle(tag: number | undefined, value?: unknown, error?: Failure) {
    if (tag !== undefined) this.fx.push({ type: 'settle', tag, value, error });
  }
  /** Settles (and empties) a list of waiting promises. */
  private settleAll(tags: number[], error?: Failure) {
    for (const t of tags.splice(0)) this.settle(t, undefined, error);
  }
  private send(s: Sock, frame: ClientFrame) {
    s.lastSend = this.now;
    this.fx.push({ type: 'send', socket: s.id, text: JSON.stringify(frame) });
  }
  private closeSock(s: Sock | undefined, code: number) {
    if (s && s.phase !== 'token') this.fx.push({ type: 'close', socket: s.id, code });
  }
  private setState(current: State, reason: string, retryInMs?: number) {
    if (current === this.state) return;
    const previous = this.state;
    this.state = current;
    this.emit('state', { previous, current, reason, retryInMs });
  }

  // ---- inputs

  private input(i: Input) {
    const st = this.state;
    switch (i.type) {
      case 'start':
        if (st === 'idle' || st === 'failed' || st === 'closed') {
          this.since = this.now;
          this.fails = this.refusals = 0;
          this.watchdog();
          this.attempt('connect');
        } else if (this.waiting || this.hiddenClosed) this.attempt('connect');
        return;
      case 'token':
        return this.onToken(i);
      case 'opened': {
        const s = this.sock(i.socket);
        if (s && s.phase === 'opening') this.onOpen(s);
        return;
      }
      case 'refused':
      case 'closed': {
        const s = this.sock(i.socket);
        if (!s) return;
        // The socket is gone already: nothing to close.
        if (s.rot) {
          this.rot = undefined;
          return this.rotationFailed();
        }
        this.main = undefined;
        const status = i.type === 'refused' ? i.status : undefined;
        if (s.phase !== 'open' && (status === 401 || status === 403)) {
          // A token the gateway refuses: one more try at once with a fresh one.
          if (++this.refusals >= 2) return this.fail('refused');
          return this.attempt('refused', true);
        }
        this.refusals = 0;
        return this.lost(i.type === 'refused' ? 'refused' : 'closed');
      }
      case 'frame': {
        const s = this.sock(i.socket);
        if (!s || s.phase !== 'open') return;
        try {
          // An unknown type, or a frame without what its type needs, throws in onFrame.
          this.onFrame(s, JSON.parse(i.text));
        } catch {
          // Never thrown out of the client: the frame is dropped and reported.
          this.emit('error', { code: 'malformed_frame', message: i.text.slice(0, 80) });
        }
        return;
      }
      case 'timer':
        return this.onTimer(i.id);
      case 'env':
        return this.onEnv(i.env);
      case 'subscribe':
        return this.subscribe(i.channel, i.getState, i.tag);
      case 'state':
        return this.onState(i.channel, i.cursor);
      case 'unsubscribe': {
        const ch = this.chans.get(i.channel);
        if (!ch || !ch.on) return;
        ch.on = ch.live = ch.loading = false;
        ch.lost = undefined;
        ch.held.clear();
        this.settleAll(ch.waiters, { code: 'unsubscribed', message: 'unsubscribed' });
        for (const s of [this.main, this.rot]) {
          s?.awaiting.delete(ch.name);
          if (s?.phase === 'open') this.send(s, { action: 'unsubscribe', channel: ch.name, ref: 'c:' + ch.name });
        }
        return this.maybeSwitch();
      }
      case 'push':
        return this.push(i.mutation, i.tag);
      case 'presence': {
        if (!i.channel.startsWith('band:'))
          return this.settle(i.tag, undefined, { code: 'invalid_request', message: 'band only' });
        if (st !== 'connected' || !this.main)
          return this.settle(i.tag, undefined, NOT_CONNECTED);
        const band = i.channel.slice(5);
        const w = this.presenceWaiters.get(band) ?? [];
        if (!w.length) this.send(this.main, { action: 'presence', band, ref: 'q:' + band });
        w.push(i.tag);
        this.presenceWaiters.set(band, w);
        return;
      }
      case 'persisted':
        this.written++;
        return this.flush();
      case 'persist_failed': {
        this.written++;
        // The push's entry is not stored, so nothing of it was sent: its mid is given back.
        const n = this.outbox.findIndex((e) => 'outbox:' + e.mid === i.key);
        // A renumbering write (its first key is mid:next or a parked entry): storage and
        // memory now disagree on the mids, so the client stops rather than guess.
        if (n < 0) return this.fail('storage');
        const [e] = this.outbox.splice(n, 1);
        if (e.mid === this.midNext - 1) this.midNext--;
        // Its batch was made in the same step, so its frame never left.
        if (this.batch?.entries.includes(e)) this.batch = undefined;
        this.flush();
        return this.settle(e.tag, undefined, { code: 'storage_failed', message: 'not stored' });
      }
      case 'dismiss': {
        const n = this.parkedList.findIndex((p) => p.key === i.key);
        if (n >= 0) {
          this.parkedList.splice(n, 1);
          this.remove('parked:' + i.key);
        }
        return;
      }
      case 'close':
        if (st === 'closed') return;
        this.teardown();
        this.cancel('retry', 'w', 'hid');
        this.hiddenClosed = false;
        return this.setState('closed', 'close');
    }
  }

  private sock(id: number): Sock | undefined {
    return this.main?.id === id ? this.main : this.rot?.id === id ? this.rot : undefined;
  }

  // ---- connecting

  private watchdog() {
    this.watchdogAt = this.now + WATCHDOG;
    this.timer('w', this.watchdogAt);
  }

  private attempt(reason: string, quiet = false) {
    this.cancel('retry');
    this.waiting = this.hiddenClosed = false;
    const s: Sock = { id: this.nextSock++, phase: 'token', rot: false, device: false, awaiting: new Set(), lastSend: this.now };
    this.main = s;
    if (!quiet) this.setState('connecting', reason);
    this.timer('ct', this.now + CONNECT_WITHIN);
    this.fx.push({ type: 'get_token', socket: s.id });
  }

  private onToken(i: Extract<Input, { type: 'token' }>) {
    const s = this.sock(i.socket);
    if (!s || s.phase !== 'token') return;
    if (i.unauthorized) return this.fail('unauthorized');
    if (i.token === undefined) {
      this.emit('error', { code: 'token', message: i.error ?? 'getToken' });
      return s.rot ? this.rotationFailed() : this.lost('token');
    }
    s.phase = 'opening';
    // Trusted only with more than 120 s left by this clock: a server that took a token
    // this clock sees as expired means the clocks disagree (PROTOCOL.md, rotation).
    const exp = jwtExp(i.token);
    s.exp = exp !== undefined && exp - this.now > 120e3 ? exp : undefined;
    const url = this.o.url + (this.o.url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(i.token);
    this.fx.push({ type: 'open', socket: s.id, url });
  }

  private register(s: Sock) {
    const d = this.o.device!;
    const f: ClientFrame = { action: 'register_device', device: d.id, platform: d.platform, name: d.name, ref: 'd' };
    if (d.categories) f.categories = d.categories;
    this.send(s, f);
  }

  private onOpen(s: Sock) {
    s.phase = 'open';
    const d = this.o.device;
    if (d) this.register(s);
    else s.device = true;
    for (const ch of this.chans.values()) if (ch.on && !ch.loading) this.resume(s, ch);
    if (d) return;
    if (s.rot) this.maybeSwitch();
    else this.connected();
  }

  /** Subscribe, or resume from the cursor, on a socket (ref `c:<channel>`). */
  private resume(s: Sock, ch: Chan) {
    s.awaiting.add(ch.name);
    const ref = 'c:' + ch.name;
    const c = ch.cursor;
    this.send(s, c ? { action: 'resume', channel: ch.name, after_seq: c.seq, epoch: c.epoch, ref } : { action: 'subscribe', channel: ch.name, ref });
  }

  /** Subscribe or resume on every open socket (both while rotating). */
  private resumeAll(ch: Chan) {
    for (const s of [this.main, this.rot]) if (s?.phase === 'open') this.resume(s, ch);
  }

  private connected() {
    this.cancel('ct');
    this.fails = this.refusals = 0;
    this.setState('connected', 'open');
    this.arm();
    this.flush();
  }

  /** Heartbeat and rotation timers for the current socket. */
  private arm() {
    const s = this.main!;
    this.timer('hb', s.lastSend + PING_AFTER);
    let at = this.now + ROTATE_AFTER;
    if (s.exp !== undefined) at = Math.max(Math.min(at, s.exp - 60_000), this.now + LATE);
    this.timer('rot', at);
  }

  private delay(n: number) {
    return 1000 + this.rnd() * (Math.min(30_000, 1000 * 2 ** n) - 1000);
  }

  /** Close what is open and forget what was in flight on it. */
  private teardown() {
    this.closeSock(this.main, 1000);
    this.closeSock(this.rot, 1000);
    this.main = this.rot = undefined;
    this.batch = undefined;
    this.rateLimited = false;
    this.tries.clear();
    this.cancel(...this.laters.keys());
    this.laters.clear();
    this.cancel('hb', 'pong', 'rot', 'rl', 'ct', 'rd');
    for (const ch of this.chans.values()) ch.live = false;
    for (const tags of this.presenceWaiters.values()) this.settleAll(tags, NOT_CONNECTED);
    this.presenceWaiters.clear();
  }

  /** The socket is gone: wait, then try again. */
  private lost(reason: string) {
    if (this.state === 'connected') this.since = this.now;
    this.main = undefined;
    this.teardown();
    this.fails++;
    const suspended = this.now - this.since >= SUSPEND_AFTER;
    const wait = Math.max(suspended ? (this.o.suspendedRetryMs ?? 60_000) : this.delay(this.fails), this.floor - this.now);
    this.waiting = true;
    this.timer('retry', this.now + wait);
    this.setState(suspended ? 'suspended' : 'disconnected', reason, wait);
  }

  private fail(reason: string) {
    this.teardown();
    this.waiting = false;
    this.cancel('retry', 'w', 'hid');
    this.setState('failed', reason);
  }

  private onTimer(id: string) {
    const s = this.main;
    switch (id) {
      case 'w': {
        const late = this.now - this.watchdogAt > LATE;
        this.watchdog();
        if (late) this.onEnv('wake');
        return;
      }
      case 'retry':
        if (this.waiting) this.attempt('retry');
        return;
      case 'hb':
        if (!s || this.state !== 'connected') return;
        if (this.now - s.lastSend >= PING_AFTER) this.ping();
        this.timer('hb', s.lastSend + PING_AFTER);
        return;
      case 'pong':
        // No pong: the socket is dead even if the platform has not noticed.
        if (s) this.redial('heartbeat', true);
        return;
      case 'ct':
        // The attempt took too long (a hanging token service, a half-open connection).
        if (!s) return;
        this.closeSock(s, 4000);
        this.main = undefined;
        return this.lost('timeout');
      case 'rot':
        if (this.state !== 'connected' || this.rot) return;
        this.rot = { id: this.nextSock++, phase: 'token', rot: true, device: false, awaiting: new Set(), lastSend: this.now };
        this.timer('rd', this.now + ROTATE_WITHIN);
        this.fx.push({ type: 'get_token', socket: this.rot.id });
        return;
      case 'rd':
        return this.rot && this.rotationFailed(4000);
      case 'rl':
        this.rateLimited = false;
        return this.flush();
      case 'hid':
        if (!this.hidden || this.hiddenClosed || ['idle', 'failed', 'closed'].includes(this.state)) return;
        this.teardown();
        this.cancel('retry');
        this.waiting = false;
        this.hiddenClosed = true;
        this.setState('disconnected', 'hidden');
        return;
      default:
        this.laters.get(id)?.();
        this.laters.delete(id);
    }
  }

  /** Close the socket with 4000 and connect again at once (not a backoff failure). */
  private redial(reason: string, lostFirst?: boolean) {
    this.closeSock(this.main, 4000);
    this.main = undefined;
    this.teardown();
    this.since = this.now;
    if (lostFirst) this.setState('disconnected', reason, 0);
    this.attempt(reason);
  }

  /** How long until a retry-later error's frame goes again: `retry_after`, else `delay(k)`. */
  private wait(ref: string, f: ErrorFrame) {
    const k = (this.tries.get(ref) ?? 0) + 1;
    this.tries.set(ref, k);
    return f.retry_after ? f.retry_after * 1000 : this.delay(k);
  }

  /** Send a channel's or the device's frame again on the same socket, later. */
  private later(s: Sock, ref: string, f: ErrorFrame, again: () => void) {
    const id = 'x' + s.id + ref;
    this.laters.set(id, () => this.sock(s.id) === s && again());
    this.timer(id, this.now + this.wait(ref, f));
  }

  private ping() {
    this.send(this.main!, { action: 'ping', ref: 'h' });
    this.timer('pong', this.now + PONG_WITHIN);
  }

  private onEnv(env: Env) {
    if (env === 'hidden') {
      this.hidden = true;
      if (this.o.hiddenCloseAfterMs !== undefined) this.timer('hid', this.now + this.o.hiddenCloseAfterMs);
      return;
    }
    if (env === 'visible') {
      this.hidden = false;
      this.cancel('hid');
      if (this.hiddenClosed) {
        // A fresh start: the 120 s toward `suspended` count from now.
        this.since = this.now;
        this.fails = 0;
        return this.attempt('visible');
      }
    }
    if (env === 'offline') return;
    if (this.waiting) return this.attempt(env);
    if (env === 'wake' && this.state === 'connected' && !this.hidden) this.ping();
  }

  private rotationFailed(code = 1000) {
    this.closeSock(this.rot, code);
    this.rot = undefined;
    this.cancel('rd');
    this.timer('rot', this.now + this.delay(++this.rotFails));
    // A push held back for the switch goes out on the old socket.
    this.flush();
  }

  /** Make-before-break: the new socket takes over once it has caught up. */
  private maybeSwitch() {
    const r = this.rot;
    if (!r || r.phase !== 'open' || !r.device || r.awaiting.size || this.batch) return;
    this.closeSock(this.main, 1000);
    this.cancel('pong', 'rd');
    this.main = r;
    r.rot = false;
    this.rot = undefined;
    this.rotFails = 0;
    // What went out on the old socket and will never be answered: resumes of channels
    // with held events, and presence queries.
    for (const ch of this.chans.values()) if (ch.on && ch.held.size && !r.awaiting.has(ch.name)) this.resume(r, ch);
    for (const band of this.presenceWaiters.keys()) this.send(r, { action: 'presence', band, ref: 'q:' + band });
    this.arm();
    this.flush();
  }

  // ---- frames

  private onFrame(s: Sock, f: ServerFrame) {
    switch (f.type) {
      case 'event':
        return this.onEvent(s, f);
      case 'device':
        if (s.device) return;
        s.device = true;
        this.tries.delete('d');
        if (s.rot) return this.maybeSwitch();
        return this.state === 'connecting' ? this.connected() : this.flush();
      case 'subscribed': {
        const ch = this.answering(f);
        if (!ch) return;
        if (!ch.cursor) {
          ch.cursor = { epoch: f.epoch, seq: f.seq };
          this.dirty.add(ch);
        }
        return this.answered(s, ch);
      }
      case 'resumed': {
        const ch = this.answering(f);
        if (!ch || !s.awaiting.has(ch.name)) return;
        if (f.more || !ch.cursor || ch.cursor.seq < f.seq || ch.held.size) return this.resume(s, ch);
        return this.answered(s, ch);
      }
      case 'skipped': {
        const ch = this.chans.get(f.channel);
        const c = ch?.cursor;
        if (!ch || !ch.on || !c) return;
        if (f.from_seq > c.seq + 1) return this.gap(s, ch);
        if (f.to_seq > c.seq) this.advance(ch, { epoch: c.epoch, seq: f.to_seq });
        return;
      }
      case 'pong':
        return this.cancel('pong');
      case 'unsubscribed':
      case 'ack':
        return;
      case 'push_result':
        return this.onResults(f);
      case 'presence': {
        const w = this.presenceWaiters.get(f.band) ?? [];
        this.presenceWaiters.delete(f.band);
        for (const t of w) this.settle(t, f.members);
        return;
      }
      case 'error':
        return this.onError(s, f);
      default:
        throw 0;
    }
  }

  private answering(f: ChannelAnswer): Chan | undefined {
    const ch = this.chans.get(f.channel);
    return ch && ch.on ? ch : undefined;
  }

  private answered(s: Sock, ch: Chan) {
    s.awaiting.delete(ch.name);
    this.tries.delete('c:' + ch.name);
    // Whichever socket answers first makes the channel live (one subscribed mid-rotation).
    if (!ch.live) {
      ch.live = true;
      this.settleAll(ch.waiters);
    }
    if (s.rot) this.maybeSwitch();
  }

  private onEvent(s: Sock, e: WireEvent) {
    if (typeof e.seq !== 'number') throw 0;
    const ch = this.chans.get(e.channel);
    const c = ch?.cursor;
    if (!ch || !ch.on || !c) return;
    const same = c.epoch === e.epoch || (c.epoch === null && e.seq === c.seq + 1);
    // An event of another epoch is never placed: the resume answers with history_lost.
    if (!same) return this.gap(s, ch);
    if (e.seq <= c.seq) return;
    if (e.seq > c.seq + 1) {
      if (ch.held.size < MAX_HELD) ch.held.set(e.seq, e);
      return this.gap(s, ch);
    }
    this.deliver(ch, e);
    this.drain(ch);
  }

  private deliver(ch: Chan, e: WireEvent) {
    ch.cursor = { epoch: e.epoch, seq: e.seq };
    this.dirty.add(ch);
    this.emit('event', e, ch.name);
    if (e.event === 'presence.joined' || e.event === 'presence.left') this.emit('presence', e, ch.name);
  }

  private advance(ch: Chan, c: Cursor) {
    ch.cursor = c;
    this.dirty.add(ch);
    this.drain(ch);
  }

  /** Emit held events that are now next; drop those the cursor passed. */
  private drain(ch: Chan) {
    for (;;) {
      const c = ch.cursor!;
      for (const k of ch.held.keys()) if (k <= c.seq) ch.held.delete(k);
      const next = ch.held.get(c.seq + 1);
      if (!next) return;
      ch.held.delete(next.seq);
      this.deliver(ch, next);
    }
  }

  private gap(s: Sock, ch: Chan) {
    if (ch.loading || this.main?.awaiting.has(ch.name) || this.rot?.awaiting.has(ch.name)) return;
    this.resume(s, ch);
  }

  private onError(s: Sock, f: ErrorFrame) {
    const ref = typeof f.ref === 'string' ? f.ref : '';
    const code = f.code as string;
    const err = { code, message: f.message };
    if (code === 'rate_limited' && f.retry_after) this.floor = this.now + f.retry_after * 1000;
    if (RECONNECT.includes(code)) return s.rot ? this.rotationFailed(4000) : this.redial('reconnect');
    const retry = RETRY.includes(code);
    if (ref.startsWith('c:')) {
      const ch = this.chans.get(ref.slice(2));
      if (!ch || !ch.on) return;
      if (f.code === 'history_lost' && f.data) {
        ch.lost = { data: f.data, sock: s.id };
        if (ch.getState) {
          ch.loading = true;
          this.fx.push({ type: 'get_state', channel: ch.name });
        } else this.reset(ch, { epoch: f.data.epoch, seq: f.data.seq });
        return;
      }
      if (retry) return this.later(s, ref, f, () => this.resume(s, ch));
      s.awaiting.delete(ch.name);
      this.emit('error', err, ch.name);
      this.settleAll(ch.waiters, err);
      return this.maybeSwitch();
    }
    if (ref === 'd') {
      if (retry) return this.later(s, ref, f, () => this.register(s));
      // The device cannot be registered (device_taken...): retrying would not help.
      this.emit('error', err);
      return s.rot ? this.rotationFailed() : this.fail(code);
    }
    if (this.batch && ref === this.batch.ref) return this.batchError(f);
    if (ref.startsWith('q:')) {
      this.settleAll(this.presenceWaiters.get(ref.slice(2)) ?? [], err);
      this.presenceWaiters.delete(ref.slice(2));
      return;
    }
    this.emit('error', err);
  }

  // ---- channels

  private subscribe(name: string, getState: boolean, tag?: number) {
    let ch = this.chans.get(name);
    if (!ch) {
      ch = { name, on: false, getState, cursor: this.cursors.get(name) ?? null, held: new Map(), loading: false, live: false, waiters: [] };
      this.chans.set(name, ch);
    }
    ch.getState = getState;
    if (tag !== undefined) ch.waiters.push(tag);
    if (ch.on) {
      if (ch.live) this.settleAll(ch.waiters);
      return;
    }
    ch.on = true;
    if (this.state === 'idle') this.input({ type: 'start' });
    if (!ch.cursor && getState) {
      ch.loading = true;
      this.fx.push({ type: 'get_state', channel: name });
    } else this.resumeAll(ch);
  }

  private onState(name: string, got: Cursor | null) {
    const ch = this.chans.get(name);
    // A channel unsubscribed (or a client closed) meanwhile: the answer is not wanted.
    if (!ch?.loading || this.state === 'closed') return;
    ch.loading = false;
    const valid = got && typeof got.seq === 'number' ? { epoch: got.epoch ?? null, seq: got.seq } : null;
    if (ch.lost) return this.reset(ch, valid ?? { epoch: ch.lost.data.epoch, seq: ch.lost.data.seq });
    if (valid) {
      ch.cursor = valid;
      this.dirty.add(ch);
    }
    if (ch.on) this.resumeAll(ch);
  }

  /** After history_lost: the refetched state's cursor, a `reset`, and a resume from it. */
  private reset(ch: Chan, c: Cursor) {
    const lost = ch.lost!;
    ch.lost = undefined;
    const old = ch.cursor;
    const changed = !!old && old.epoch !== null && lost.data.epoch !== old.epoch;
    if (!old || old.epoch !== c.epoch) ch.held.clear();
    ch.cursor = c;
    this.dirty.add(ch);
    this.emit('reset', { reason: changed ? 'epoch_changed' : 'history_lost' }, ch.name);
    const s = this.sock(lost.sock);
    const target = s?.phase === 'open' ? s : this.main?.phase === 'open' ? this.main : undefined;
    if (target) this.resume(target, ch);
    this.drain(ch);
  }

  // ---- the outbox

  private frameSize(band: string, ref: string, parts: string[]) {
    const d = this.o.device!;
    return bytes(JSON.stringify({ action: 'push', band, device: d.id, mutations: [], ref })) + parts.reduce((n, p) => n + bytes(p), 0) + Math.max(0, parts.length - 1);
  }

  private push(m: Mutation, tag?: number) {
    if (!this.o.device) return this.settle(tag, undefined, { code: 'no_device', message: 'no device' });
    const base = m?.baseVersion ?? m?.base_version;
    if (!m || [m.band, m.type, m.id].some((x) => typeof x !== 'string') || !['create', 'patch', 'delete'].includes(m.op) || !Number.isInteger(base) || base! < 0)
      return this.settle(tag, undefined, { code: 'invalid_mutation', message: 'bad mutation' });
    const mid = this.midNext;
    const mutation: WireMutation = { mid, type: m.type, id: m.id, op: m.op, base_version: base!, fields: m.fields ?? {}, ts: m.ts ?? new Date(this.now).toISOString() };
    if (m.resolves) mutation.resolves = m.resolves;
    if (this.frameSize(m.band, 'p:' + mid, [JSON.stringify(mutation)]) > MAX_FRAME)
      return this.settle(tag, undefined, { code: 'frame_too_large', message: 'over 32 KB' });
    this.midNext++;
    const e: Entry = { mid, band: m.band, mutation, tag };
    this.outbox.push(e);
    if (this.state === 'idle') this.input({ type: 'start' });
    // The entry and mid:next in one write: a failure leaves neither (persist_failed).
    e.w = this.writeOut({ ['outbox:' + mid]: { mid, band: m.band, mutation }, 'mid:next': this.midNext }, []);
    this.flush();
  }

  /** Send the next batch: the oldest entries of one band that fit a frame; one in flight. */
  private flush() {
    const s = this.main;
    if (this.state !== 'connected' || !s?.device || this.batch || this.rot || this.rateLimited || !this.outbox.length) return;
    const band = this.outbox[0].band;
    const ref = 'p:' + this.outbox[0].mid;
    const parts: string[] = [];
    const entries: Entry[] = [];
    for (const e of this.outbox) {
      // Never an entry before its write is confirmed (it may not be stored), nor one after it.
      if (e.band !== band || entries.length === MAX_BATCH || e.w! > this.written) break;
      const p = JSON.stringify(e.mutation);
      if (entries.length && this.frameSize(band, ref, [...parts, p]) > MAX_FRAME) break;
      parts.push(p);
      entries.push(e);
    }
    if (!entries.length) return;
    this.batch = { ref, sock: s.id, entries };
    this.send(s, { action: 'push', band, device: this.o.device!.id, mutations: entries.map((e) => e.mutation), ref });
  }

  private onResults(f: PushResult) {
    let expected: number | undefined;
    for (const r of f.results) {
      const e = this.outbox.find((x) => x.mid === r.mid);
      if (r.status === 'out_of_order') expected ??= r.expected_mid ?? undefined;
      if (!e || r.status === 'out_of_order') continue; // the batch's end resends from the oldest
      const status = r.status === 'duplicate' ? r.original_status : r.status;
      this.outbox.splice(this.outbox.indexOf(e), 1);
      if (status === 'rejected') {
        const p: Parked = { key: String(e.mid), mid: e.mid, band: e.band, mutation: e.mutation, code: r.code ?? 'rejected', message: r.message ?? '' };
        this.parkedList.push(p);
        this.persist('parked:' + p.key, p);
      }
      this.remove('outbox:' + e.mid);
      this.verdict(e, r);
    }
    // The server has nothing from `expected_mid` on: none of the pending was applied.
    if (Number.isInteger(expected) && this.outbox.length && this.outbox[0].mid !== expected) {
      this.midNext = expected! + this.outbox.length;
      this.renumber(expected!, this.outbox, {}, []);
    }
    if (this.batch && f.ref === this.batch.ref && !f.more) {
      this.tries.delete(f.ref);
      this.batch = undefined;
      this.maybeSwitch();
      this.flush();
    }
  }

  private verdict(e: Entry, result: Verdict) {
    this.emit('verdict', { mid: result.mid, mutation: e.mutation, result });
    this.settle(e.tag, result);
  }

  private batchError(f: ErrorFrame) {
    const b = this.batch!;
    this.batch = undefined;
    const code = f.code as string;
    if (RETRY.includes(code)) {
      // The same frame again later; the switch of a rotation may happen meanwhile.
      this.rateLimited = true;
      this.timer('rl', this.now + this.wait(b.ref, f));
    } else if (code === 'unknown_device' && this.main) {
      this.main.device = false;
      this.register(this.main);
    } else {
      // A refusal of the frame: nothing of it was applied, so the named mutation (or,
      // unnamed, the whole batch) is parked here and its mid given back.
      const i = Number(/mutations\[(\d+)\]/.exec(f.message)?.[1]);
      this.parkLocal(b.entries[i] ? [b.entries[i]] : b.entries, { code, message: f.message });
    }
    this.maybeSwitch();
    this.flush();
  }

  private parkLocal(gone: Entry[], why: Failure) {
    const sets: Record<string, unknown> = {};
    const removes = gone.map((e) => 'outbox:' + e.mid);
    for (const e of gone) {
      const key = 'l' + this.localNext++;
      const { mid: _, ...mutation } = e.mutation;
      const p: Parked = { key, mid: null, band: e.band, mutation, code: why.code, message: why.message };
      this.parkedList.push(p);
      sets['parked:' + key] = p;
      this.verdict(e, { mid: null, status: 'rejected', ...why });
    }
    sets['parked:next_local'] = this.localNext;
    // The mids after each given-back one move down, so the device's mids stay gapless.
    const first = Math.min(...gone.map((e) => e.mid));
    this.outbox = this.outbox.filter((e) => !gone.includes(e));
    this.midNext -= gone.length;
    this.renumber(
      first,
      this.outbox.filter((e) => e.mid > first),
      sets,
      removes,
    );
  }

  /** New mids from `from` for `entries`, with `sets`/`removes`, in one atomic write. */
  private renumber(from: number, entries: Entry[], sets: Record<string, unknown>, removes: string[]) {
    for (const e of entries) {
      removes.push('outbox:' + e.mid);
      e.mid = e.mutation.mid = from++;
    }
    // mid:next before the entries: a failed write's first key is never an outbox entry's.
    sets['mid:next'] = this.midNext;
    for (const e of entries) sets['outbox:' + e.mid] = { mid: e.mid, band: e.band, mutation: e.mutation };
    const w = this.writeOut(sets, removes.filter((k) => !(k in sets)));
    for (const e of entries) e.w = w;
  }

  private writeOut(sets: Record<string, unknown>, removes: string[]) {
    this.fx.push({ type: 'write', sets, removes });
    return ++this.writes;
  }
}
