// The conformance runner's pieces (shared/clients/conformance/README.md): a fake clock,
// a scripted fake server behind a fake WebSocket, a fake storage, and the patterns.
// The client under test is the real driver from dist/, so the runner covers the core
// and everything the driver does with sockets, timers and storage.
export const START = Date.parse('2026-12-01T00:00:00Z');

/** Lets every promise chain the client started run out (fakes resolve in microtasks). */
export async function settle() {
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
}

export class FakeClock {
  t = START;
  timers = new Map();
  seq = 0;
  /** A view of the clock for one client; `kill()` drops its timers (a page reload). */
  view() {
    const mine = new Set();
    let dead = false;
    return {
      now: () => this.t,
      setTimeout: (fn, ms) => {
        if (dead) return 0;
        const h = ++this.seq;
        mine.add(h);
        this.timers.set(h, { at: this.t + Math.max(0, ms), seq: h, fn });
        return h;
      },
      clearTimeout: (h) => {
        mine.delete(h);
        this.timers.delete(h);
      },
      kill: () => {
        dead = true;
        for (const h of mine) this.timers.delete(h);
      },
    };
  }
  next(limit) {
    let best;
    for (const [h, x] of this.timers) if (x.at <= limit && (!best || x.at < best[1].at || (x.at === best[1].at && x.seq < best[1].seq))) best = [h, x];
    return best;
  }
  /** Time moves forward; due timers fire in order, each at its own time. */
  async advance(ms) {
    const end = this.t + ms;
    for (let n; (n = this.next(end)); ) {
      this.timers.delete(n[0]);
      this.t = Math.max(this.t, n[1].at);
      n[1].fn();
      await settle();
    }
    this.t = end;
    await settle();
  }
  /** Time jumps (a laptop waking up): every due timer fires at the new time. */
  async jump(ms) {
    this.t += ms;
    for (let n; (n = this.next(this.t)); ) {
      this.timers.delete(n[0]);
      n[1].fn();
      await settle();
    }
  }
}

export class FakeServer {
  sockets = [];
  opening = [];
  autoPong = false;
  constructor(clock) {
    this.clock = clock;
    const server = this;
    this.WebSocket = class FakeWebSocket {
      onopen = null;
      onmessage = null;
      onclose = null;
      onerror = null;
      sent = [];
      closedWith = undefined;
      state = 'opening';
      constructor(url) {
        this.url = url;
        this.n = server.sockets.length + 1;
        server.sockets.push(this);
        server.opening.push(this);
      }
      send(text) {
        if (this.state === 'vanished') return;
        if (this.state !== 'open') throw new Error(`socket ${this.n}: send while ${this.state}`);
        const f = JSON.parse(text);
        if (server.autoPong && f.action === 'ping') {
          queueMicrotask(() => this.deliver({ type: 'pong', ts: new Date(server.clock.t).toISOString(), ref: f.ref }));
        } else this.sent.push(text);
      }
      close(code) {
        if (this.state === 'vanished') return;
        this.closedWith = code;
        this.state = 'closed';
      }
      deliver(frame) {
        this.deliverText(JSON.stringify(frame));
      }
      deliverText(text) {
        if (this.state === 'open') this.onmessage?.({ data: text });
      }
      end(code) {
        if (this.state !== 'open') throw new Error(`socket ${this.n} is ${this.state}`);
        this.state = 'closed';
        this.onclose?.({ code });
      }
    };
  }
  socket(n) {
    // By default the newest socket the server accepted (one still opening is not its yet).
    const s = n === undefined ? this.sockets.findLast((x) => x.state !== 'opening' && x.state !== 'refused') : this.sockets[n - 1];
    if (!s) throw new Error(`no socket ${n ?? '(none opened)'}`);
    return s;
  }
  /** A page reload: the old client's sockets just vanish. */
  vanish() {
    for (const s of this.sockets) {
      if (s.state === 'open' || s.state === 'opening') s.state = 'vanished';
      s.onopen = s.onmessage = s.onclose = s.onerror = null;
      s.sent = [];
    }
    this.opening = [];
  }
}

/** The fake storage: JSON copies, writes that finish in a microtask. */
export function fakeStorage(initial) {
  const m = new Map(Object.entries(initial ?? {}).map(([k, v]) => [k, JSON.stringify(v)]));
  const st = {
    map: m,
    fail: false,
    load: async () => Object.fromEntries([...m].map(([k, v]) => [k, JSON.parse(v)])),
    set: async (k, v) => st.write({ [k]: v }, []),
    remove: async (k) => st.write({}, [k]),
    // All or nothing, like the real ones; `fail` makes every write throw (storage_fail).
    write: async (sets, removes) => {
      if (st.fail) throw new Error('the fake storage fails (scripted)');
      for (const [k, v] of Object.entries(sets)) m.set(k, JSON.stringify(v));
      for (const k of removes) m.delete(k);
    },
    get: (k) => (m.has(k) ? JSON.parse(m.get(k)) : undefined),
  };
  return st;
}

const isObj = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);

/** Why `value` does not match `pattern`, or null when it does (README's patterns). */
export function mismatch(pattern, value, vars = {}, path = '$') {
  if (isObj(pattern)) {
    if ('$capture' in pattern) {
      vars[pattern.$capture] = value;
      return null;
    }
    if ('$any' in pattern) return null;
    if ('$absent' in pattern) return value === undefined ? null : `${path}: expected absent, got ${JSON.stringify(value)}`;
    if ('$mids' in pattern) {
      const { from, to } = pattern.$mids;
      if (!Array.isArray(value)) return `${path}: expected mutations, got ${JSON.stringify(value)}`;
      const mids = value.map((m) => m?.mid);
      const want = range(from, to);
      return JSON.stringify(mids) === JSON.stringify(want) ? null : `${path}: mids ${short(mids)}, expected ${short(want)}`;
    }
    if (!isObj(value)) return `${path}: expected an object, got ${JSON.stringify(value)?.slice(0, 200)}`;
    for (const [k, p] of Object.entries(pattern)) {
      if (isObj(p) && '$absent' in p) {
        if (k in value) return `${path}.${k}: expected absent`;
        continue;
      }
      if (isObj(p) && '$any' in p) continue;
      if (!(k in value)) return `${path}.${k}: missing`;
      const why = mismatch(p, value[k], vars, `${path}.${k}`);
      if (why) return why;
    }
    return null;
  }
  if (Array.isArray(pattern)) {
    if (!Array.isArray(value) || value.length !== pattern.length)
      return `${path}: expected ${pattern.length} elements, got ${JSON.stringify(value)?.slice(0, 300)}`;
    for (let i = 0; i < pattern.length; i++) {
      const why = mismatch(pattern[i], value[i], vars, `${path}[${i}]`);
      if (why) return why;
    }
    return null;
  }
  return pattern === value ? null : `${path}: expected ${JSON.stringify(pattern)}, got ${JSON.stringify(value)?.slice(0, 200)}`;
}

export function substitute(x, vars) {
  if (Array.isArray(x)) return x.map((v) => substitute(v, vars));
  if (isObj(x)) {
    if ('$var' in x) {
      if (!(x.$var in vars)) throw new Error(`no captured value ${x.$var}`);
      return vars[x.$var];
    }
    return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, substitute(v, vars)]));
  }
  return x;
}

export function range(from, to) {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
}
const short = (a) => (a.length > 8 ? `[${a.slice(0, 3)}..${a.slice(-3)}] (${a.length})` : JSON.stringify(a));
export const list = (x) => (Array.isArray(x) ? x : range(x.from, x.to));
