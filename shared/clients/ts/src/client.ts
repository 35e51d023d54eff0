// The driver: performs the core's effects with a WebSocket, timers, storage and the
// browser's online/visibility events, and turns the app's calls into the core's inputs.
import {
  Core,
  type Cursor,
  type Device,
  type Effect,
  type Env,
  type Failure,
  type Input,
  type Mutation,
  type Parked,
  type Pending,
  type PresentMember,
  type State,
  type Verdict,
  type WireEvent,
  type WireMutation,
} from './core';
import { memoryStorage, type Storage } from './storage';

/** Throw it from `getToken` to stop: the client goes to `failed` and does not retry. */
export class UnauthorizedError extends Error {
  constructor(message = 'unauthorized') {
    super(message);
    this.name = 'UnauthorizedError';
  }
}
/** A request the client refused or the server answered with an error (`code`). */
export class BandsyncError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'BandsyncError';
  }
}
/** A push whose frame would be over 32 KB (API Gateway would close the socket with 1009). */
export class FrameTooLargeError extends BandsyncError {
  constructor(message: string) {
    super('frame_too_large', message);
    this.name = 'FrameTooLargeError';
  }
}

export interface StateChange {
  previous: State;
  current: State;
  reason: string;
  retryInMs?: number;
}
export interface VerdictEvent {
  mid: number | null;
  mutation: WireMutation | Parked['mutation'];
  result: Verdict;
}
export interface ClientEvents {
  state: StateChange;
  verdict: VerdictEvent;
  error: Failure;
}
export interface ChannelEvents {
  event: WireEvent;
  reset: { reason: 'history_lost' | 'epoch_changed' };
  presence: WireEvent;
  error: Failure;
}

/** What the client needs of a WebSocket (the browser's, Node's, or the `ws` package's). */
export interface SocketLike {
  send(data: string): void;
  close(code?: number): void;
  onopen: ((e: unknown) => void) | null;
  onmessage: ((e: { data: unknown }) => void) | null;
  // `status`: the handshake's HTTP status, for a WebSocket class that reports it.
  onclose: ((e: { code: number; status?: number }) => void) | null;
  onerror: ((e: unknown) => void) | null;
  /** The `ws` package's emitter: its 'unexpected-response' tells a refusal's status. */
  on?: (name: string, f: (req: unknown, res: { statusCode?: number }) => void) => unknown;
}
export type SocketClass = new (url: string) => SocketLike;
export interface Clock {
  now(): number;
  setTimeout(f: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}
export interface ClientOptions {
  /** Called before every connect; throw `UnauthorizedError` to stop. */
  getToken: () => string | Promise<string>;
  /** Registered on every connect; needed to push. */
  device?: Device;
  /** Cursors, the outbox and parked mutations (default: memory). */
  storage?: Storage;
  WebSocket?: SocketClass;
  /** A hidden tab closes its socket after this long (default: never). */
  hiddenCloseAfterMs?: number;
  /** The wait between retries once suspended (default 60 s). */
  suspendedRetryMs?: number;
  /** For tests: time and timers (default: Date.now and setTimeout). */
  clock?: Clock;
  /** For tests: the backoff's jitter (default: Math.random). */
  random?: () => number;
}
export interface ChannelOptions {
  /** The app's snapshot; when it has `{seq, epoch}`, the channel resumes from there. */
  getState?: () => unknown;
}

type Fn = (d: never) => void;

class Emitter<M> {
  private ls = new Map<keyof M, Set<Fn>>();
  /** Returns a function that removes the listener. */
  on<K extends keyof M>(name: K, f: (d: M[K]) => void): () => void {
    const s = this.ls.get(name) ?? new Set();
    s.add(f as Fn);
    this.ls.set(name, s);
    return () => this.off(name, f);
  }
  off<K extends keyof M>(name: K, f: (d: M[K]) => void): void {
    this.ls.get(name)?.delete(f as Fn);
  }
  /** @internal */
  _fire(name: string, d: unknown): void {
    for (const f of this.ls.get(name as keyof M) ?? []) {
      try {
        (f as (d: unknown) => void)(d);
      } catch (e) {
        // An app listener's bug must not stop the client's own work.
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}

const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (f, ms) => setTimeout(f, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};
const message = (e: unknown) => String((e as Error)?.message ?? e);
const CLOSED: Failure = { code: 'closed', message: 'closed' };

export class BandsyncClient extends Emitter<ClientEvents> {
  /** Resolves when the storage has been read (calls made before are queued). */
  readonly ready: Promise<void>;
  private core?: Core;
  private early: Input[] = [];
  private q: Effect[][] = [];
  private unlock?: () => void = () => {};
  private busy = false;
  private sockets = new Map<number, SocketLike>();
  private timers = new Map<string, unknown>();
  private tags = new Map<number, [(v: never) => void, (e: Error) => void]>();
  private nextTag = 1;
  private chans = new Map<string, Channel>();
  private cursorWrites = new Map<string, unknown>();
  private storage: Storage;
  private clock: Clock;
  private listening = false;
  private broken?: Failure;
  private waitLock = false;
  private closed = false;

  constructor(
    readonly url: string,
    private readonly opts: ClientOptions,
  ) {
    super();
    this.clock = opts.clock ?? systemClock;
    const storage = (this.storage = opts.storage ?? memoryStorage());
    const locks = (globalThis as { navigator?: { locks?: LockManager } }).navigator?.locks;
    const lock = 'bandsync:' + opts.device?.id;
    // One client per device (PROTOCOL.md): two would hand out the same mids. The lock is
    // held until close(); a second tab waits for it in `suspended`.
    // A lock granted after close() is given back at once (another tab may need it).
    const held = (l: unknown) => (l && this.unlock ? new Promise<void>((r) => (this.unlock = r)) : undefined);
    this.ready = (
      locks && opts.device
        ? new Promise<void>((got) =>
            locks.request(lock, { ifAvailable: true }, (l) => {
              if (l) return got(), held(l);
              this.waitLock = true;
              this._fire('state', { previous: 'idle', current: 'suspended', reason: 'device_in_use' });
              void locks.request(lock, (l2) => (got(), (this.waitLock = false), held(l2)));
            }),
          )
        : Promise.resolve()
    )
      .then(() => storage.load())
      .then(
        (data) => {
          const { device, hiddenCloseAfterMs, suspendedRetryMs } = opts;
          this.core = new Core({ url, device, hiddenCloseAfterMs, suspendedRetryMs }, opts.random ?? Math.random, data);
        },
        (e) => {
          // Starting empty would reuse mids the server has seen (their new mutations
          // would be answered `duplicate` and lost), so an unreadable storage fails.
          this.broken = { code: 'storage', message: message(e) };
          this._fire('error', this.broken);
        },
      )
      .then(() => {
        for (const i of this.early.splice(0)) this._feed(i, true);
        this.release();
      });
    this.listen();
  }

  get state(): State {
    return this.broken ? 'failed' : this.waitLock ? 'suspended' : (this.core?.state ?? 'idle');
  }
  /** Connects (also done by the first `subscribe()` or `push()`); after `failed`, tries again. */
  connect(): void {
    this.listen();
    this._feed({ type: 'start' });
  }
  /** Declares a channel; `subscribe()` on it makes it part of every connection. */
  channel(name: string, opts: ChannelOptions = {}): Channel {
    let ch = this.chans.get(name);
    if (!ch) this.chans.set(name, (ch = new Channel(this, name)));
    if (opts.getState) ch.getState = opts.getState;
    return ch;
  }
  /** Queues a change (persisted before it is sent); resolves with the server's verdict. */
  push(mutation: Mutation): Promise<Verdict> {
    return this._promise((tag) => this._feed({ type: 'push', mutation, tag }));
  }
  /** The queued mutations, oldest first. */
  pending(): Pending[] {
    return this.core?.pending() ?? [];
  }
  /** The rejected mutations the member should see, oldest first. */
  parked(): Parked[] {
    return this.core?.parked() ?? [];
  }
  /** Forgets a parked mutation. */
  dismiss(key: string): void {
    this._feed({ type: 'dismiss', key });
  }
  /** Closes the sockets with 1000; queued mutations stay in storage. Final: a new client is needed. */
  close(): void {
    this.closed = true;
    this._feed({ type: 'close' }, true);
    const g = globalThis as { removeEventListener?: typeof removeEventListener; document?: Document };
    g.removeEventListener?.('online', this.onEnv);
    g.removeEventListener?.('offline', this.onEnv);
    g.document?.removeEventListener('visibilitychange', this.onEnv);
    this.listening = false;
  }

  // After close(), once the queued effects (outbox writes) have run: only then may the
  // next tab load the storage. Promises still pending are rejected `closed` (their
  // entries stay stored; the next client sends them).
  private release() {
    if (!this.closed || this.busy || this.early.length) return;
    this.unlock?.();
    this.unlock = undefined;
    for (const [tag] of this.tags) this.perform({ type: 'settle', tag, error: CLOSED });
  }

  private onEnv = (e: { type: string }) => {
    const env = e.type === 'visibilitychange' ? (document.visibilityState === 'hidden' ? 'hidden' : 'visible') : e.type;
    this._feed({ type: 'env', env: env as Env });
  };

  private listen() {
    const g = globalThis as { addEventListener?: typeof addEventListener; document?: Document; window?: unknown };
    if (this.listening || !g.window || !g.addEventListener) return;
    this.listening = true;
    g.addEventListener('online', this.onEnv);
    g.addEventListener('offline', this.onEnv);
    g.document?.addEventListener('visibilitychange', this.onEnv);
    if (g.document?.visibilityState === 'hidden') this._feed({ type: 'env', env: 'hidden' });
  }

  /** @internal */
  _cursor(channel: string): Cursor | null {
    return this.core?.cursor(channel) ?? null;
  }
  /** @internal */
  _promise<T>(start: (tag: number) => void): Promise<T> {
    return new Promise<T>((ok, ko) => {
      const tag = this.nextTag++;
      this.tags.set(tag, [ok as (v: never) => void, ko]);
      start(tag);
    });
  }
  /** @internal */
  _feed(i: Input, early?: boolean): void {
    // After close() nothing more is done (without the device's lock, mids would clash).
    const no = this.broken ?? (this.closed && !early ? CLOSED : undefined);
    const tag = (i as { tag?: number }).tag;
    if (no) {
      if (tag !== undefined) this.perform({ type: 'settle', tag, error: no });
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
  private async run() {
    this.busy = true;
    while (this.q.length) {
      for (const e of this.q.shift()!) {
        try {
          await this.perform(e);
          if (e.type === 'write') this._feed({ type: 'persisted' });
        } catch (err) {
          this._fire('error', { code: 'storage', message: message(err) });
          if (e.type === 'write') {
            this._feed({ type: 'persist_failed', key: Object.keys(e.sets)[0] });
            break;
          }
        }
      }
    }
    this.busy = false;
    this.release();
  }

  private perform(e: Effect): void | Promise<void> {
    switch (e.type) {
      case 'get_token': {
        const socket = e.socket;
        Promise.resolve()
          .then(() => this.opts.getToken())
          .then(
            (token) => this._feed({ type: 'token', socket, token: String(token) }),
            (err) =>
              this._feed(
                err instanceof UnauthorizedError || (err as Error)?.name === 'UnauthorizedError'
                  ? { type: 'token', socket, unauthorized: true }
                  : { type: 'token', socket, error: message(err) },
              ),
          );
        return;
      }
      case 'get_state': {
        const channel = e.channel;
        Promise.resolve()
          .then(() => this.chans.get(channel)?.getState?.())
          .then(
            (s) => this._feed({ type: 'state', channel, cursor: (s as Cursor) ?? null }),
            (err) => {
              this.chans.get(channel)?._fire('error', { code: 'get_state', message: message(err) });
              this._feed({ type: 'state', channel, cursor: null });
            },
          );
        return;
      }
      case 'open':
        return this.open(e.socket, e.url);
      case 'send':
        try {
          this.sockets.get(e.socket)?.send(e.text);
        } catch {
          // A socket that just died: its close event follows and the core reconnects.
        }
        return;
      case 'close': {
        const ws = this.sockets.get(e.socket);
        this.sockets.delete(e.socket);
        if (!ws) return;
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        try {
          ws.close(e.code);
        } catch {
          // Already closed.
        }
        return;
      }
      case 'set_timer': {
        const id = e.id;
        this.clock.clearTimeout(this.timers.get(id));
        const h = this.clock.setTimeout(
          () => {
            this.timers.delete(id);
            this._feed({ type: 'timer', id });
          },
          Math.max(0, e.at - this.clock.now()),
        );
        this.timers.set(id, h);
        return;
      }
      case 'cancel_timer':
        this.clock.clearTimeout(this.timers.get(e.id));
        this.timers.delete(e.id);
        return;
      case 'persist':
        return e.key.startsWith('cursor:') ? this.writeCursor(e.key, e.value) : this.storage.set(e.key, e.value);
      case 'remove':
        return this.storage.remove(e.key);
      case 'write': {
        const st = this.storage;
        if (st.write) return st.write(e.sets, e.removes);
        // A storage of the app's own without write(): one key after another.
        return (async () => {
          for (const [k, v] of Object.entries(e.sets)) await st.set(k, v);
          for (const k of e.removes) await st.remove(k);
        })();
      }
      case 'emit':
        (e.channel === undefined ? this : this.chans.get(e.channel))?._fire(e.name, e.data);
        return;
      case 'settle': {
        const t = this.tags.get(e.tag);
        this.tags.delete(e.tag);
        const err = e.error;
        if (!t) return;
        if (err) t[1](err.code === 'frame_too_large' ? new FrameTooLargeError(err.message) : new BandsyncError(err.code, err.message));
        else t[0](e.value as never);
        return;
      }
    }
  }

  // Cursor writes may be coalesced (PROTOCOL.md): the newest value per channel is
  // written in the background, one write at a time, so 1,000 replayed events do not
  // wait for 1,000 storage writes.
  private writeCursor(key: string, value: unknown) {
    const busy = this.cursorWrites.has(key);
    this.cursorWrites.set(key, value);
    if (busy) return;
    void (async () => {
      while (this.cursorWrites.has(key)) {
        const v = this.cursorWrites.get(key);
        try {
          await this.storage.set(key, v);
        } catch (err) {
          this._fire('error', { code: 'storage', message: message(err) });
        }
        if (this.cursorWrites.get(key) === v) this.cursorWrites.delete(key);
      }
    })();
  }

  private open(id: number, url: string) {
    const WS = this.opts.WebSocket ?? (globalThis as { WebSocket?: SocketClass }).WebSocket;
    let ws: SocketLike;
    try {
      if (!WS) throw new Error('no WebSocket');
      ws = new WS(url);
    } catch (err) {
      this._fire('error', { code: 'websocket', message: message(err) });
      queueMicrotask(() => this._feed({ type: 'refused', socket: id }));
      return;
    }
    this.sockets.set(id, ws);
    let opened = false;
    let status: number | undefined;
    // Browsers and Node's own WebSocket do not tell a refusal's HTTP status; the `ws`
    // package does, here (it then waits for us to end the handshake).
    ws.on?.('unexpected-response', (_, res) => {
      status = res.statusCode;
      ws.close();
    });
    ws.onopen = () => {
      opened = true;
      this._feed({ type: 'opened', socket: id });
    };
    ws.onmessage = (m) => this._feed({ type: 'frame', socket: id, text: String(m.data) });
    ws.onclose = (c) => {
      this.sockets.delete(id);
      this._feed(opened ? { type: 'closed', socket: id, code: c.code } : { type: 'refused', socket: id, status: c.status ?? status });
    };
    ws.onerror = () => {};
  }
}

export class Channel extends Emitter<ChannelEvents> {
  /** @internal */
  getState?: () => unknown;
  constructor(
    private readonly client: BandsyncClient,
    readonly name: string,
  ) {
    super();
  }
  /** Resolves when the channel is live (after any replay). */
  subscribe(): Promise<void> {
    return this.client._promise((tag) => this.client._feed({ type: 'subscribe', channel: this.name, getState: !!this.getState, tag }));
  }
  unsubscribe(): void {
    this.client._feed({ type: 'unsubscribe', channel: this.name });
  }
  /** Who of the band is online now (`band:<id>` channels). */
  presence(): Promise<PresentMember[]> {
    return this.client._promise((tag) => this.client._feed({ type: 'presence', channel: this.name, tag }));
  }
  /** Where the channel is: `{epoch, seq}` of the last event the app got. */
  get cursor(): Cursor | null {
    return this.client._cursor(this.name);
  }
}
