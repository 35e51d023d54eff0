// Replays every shared/clients/conformance/*.json through the client (the real driver
// over the sans-IO core) with a fake clock, a scripted fake server and a fake storage,
// one test per file, failing at the first step that does not hold.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
// Both builds: the minified one renames private members, so it is replayed too.
const builds = { 'index.mjs': await import('../dist/index.mjs'), 'bandsync.min.mjs': await import('../dist/bandsync.min.mjs') };
import { FakeClock, FakeServer, START, fakeStorage, list, mismatch, settle, substitute } from './harness.mjs';

const dir = new URL('../../conformance/', import.meta.url);
const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();

// The browser's online/visibility events, for the driver's own listeners.
const win = new EventTarget();
const doc = Object.assign(new EventTarget(), { visibilityState: 'visible' });
globalThis.window = globalThis;
globalThis.addEventListener = win.addEventListener.bind(win);
globalThis.removeEventListener = win.removeEventListener.bind(win);
globalThis.document = doc;

function jwt(exp) {
  const b = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b({ alg: 'none', typ: 'JWT' })}.${b({ sub: 'alice', exp })}.x`;
}

class Run {
  constructor(s, lib) {
    this.lib = lib;
    this.s = s;
    this.setup = s.setup;
    this.clock = new FakeClock();
    this.server = new FakeServer(this.clock);
    this.server.autoPong = !!this.setup.auto_pong;
    this.storage = fakeStorage(this.setup.storage);
    this.tokenCalls = 0;
    this.getStateCalls = {};
    this.vars = {};
    this.promises = {};
    this.states = [];
    this.events = {};
    this.resets = {};
    this.verdicts = [];
    this.errors = [];
    this.make();
  }

  token() {
    const ts = this.setup.tokens ?? ['t'];
    const t = ts[Math.min(this.tokenCalls++, ts.length - 1)];
    if (typeof t === 'string') return t;
    if (t.jwt_exp !== undefined) return jwt(START / 1000 + t.jwt_exp);
    if (t.unauthorized) throw new this.lib.UnauthorizedError('token refused');
    throw new Error(t.error ?? 'no token');
  }

  make() {
    const clock = (this.clockView = this.clock.view());
    const c = (this.client = new this.lib.BandsyncClient(this.setup.url, {
      getToken: async () => this.token(),
      device: this.setup.device,
      storage: this.storage,
      WebSocket: this.server.WebSocket,
      clock,
      random: () => this.setup.random ?? 0.5,
      ...(this.setup.options ?? {}),
    }));
    c.on('state', (e) => this.states.push(e.current));
    c.on('verdict', (v) => this.verdicts.push(v));
    c.on('error', (e) => this.errors.push(e));
    this.channels = [];
    for (const spec of this.setup.channels ?? []) {
      const opts = {};
      if ('get_state' in spec) {
        opts.getState = async () => {
          const n = (this.getStateCalls[spec.name] = (this.getStateCalls[spec.name] ?? 0) + 1);
          const g = spec.get_state;
          const v = Array.isArray(g) ? g[Math.min(n, g.length) - 1] : g;
          return v ?? undefined;
        };
      }
      const ch = c.channel(spec.name, opts);
      this.watch(ch);
      this.channels.push(ch);
    }
  }

  watch(ch) {
    if (ch.watched) return;
    ch.watched = true;
    (this.events[ch.name] ??= []), (this.resets[ch.name] ??= []);
    ch.on('event', (e) => this.events[ch.name].push(e.seq));
    ch.on('reset', (r) => this.resets[ch.name].push(r));
  }

  start() {
    this.client.connect();
    for (const ch of this.channels) ch.subscribe().catch(() => {});
  }

  track(as, p) {
    const rec = { done: false };
    p.catch(() => {});
    p.then(
      (v) => Object.assign(rec, { done: true, value: v }),
      (e) => Object.assign(rec, { done: true, error: e }),
    );
    if (as !== undefined) this.promises[as] = rec;
  }

  async step(st) {
    const c = this.client;
    const srv = this.server;
    const k = Object.keys(st).find((x) => x !== 'socket' && x !== 'as' && x !== 'refuse');
    const v = st[k];
    switch (k) {
      case 'start':
        this.start();
        break;
      case 'push':
        this.track(st.as, c.push(v));
        break;
      case 'push_many':
        for (let i = 1; i <= v.count; i++) this.track(undefined, c.push({ ...v.mutation, id: v.mutation.id.replace('{i}', String(i)) }));
        break;
      case 'subscribe': {
        const ch = c.channel(v);
        this.watch(ch);
        this.track(st.as, ch.subscribe());
        break;
      }
      case 'unsubscribe':
        c.channel(v).unsubscribe();
        break;
      case 'presence':
        this.track(st.as, c.channel(v).presence());
        break;
      case 'close':
        c.close();
        break;
      case 'reload':
        srv.vanish();
        this.clockView.kill();
        c.close(); // only drops its listeners: its sockets and timers are gone already
        this.make();
        this.start();
        break;
      case 'env':
        if (v === 'online' || v === 'offline') win.dispatchEvent(new Event(v));
        else if (v === 'visible' || v === 'hidden') {
          doc.visibilityState = v;
          doc.dispatchEvent(new Event('visibilitychange'));
        } else c._feed({ type: 'env', env: v }); // wake: what the watchdog reports after a sleep
        break;
      case 'advance':
        return this.clock.advance(v);
      case 'jump':
        return this.clock.jump(v);
      case 'expect_open': {
        const ws = srv.opening.shift();
        assert.ok(ws, 'the client opened no socket');
        const token = new URL(ws.url).searchParams.get('token');
        const why = mismatch(v, { token });
        assert.equal(why, null, why);
        if ('refuse' in st) {
          ws.state = 'refused';
          ws.onclose?.({ code: 1006, status: st.refuse || undefined });
        } else {
          ws.state = 'open';
          ws.onopen?.({});
        }
        break;
      }
      case 'expect_send':
      case 'expect_send_many': {
        const ws = srv.socket(st.socket);
        const n = k === 'expect_send' ? 1 : v.count;
        const pattern = k === 'expect_send' ? v : v.each;
        for (let i = 0; i < n; i++) {
          const text = ws.sent.shift();
          assert.ok(text !== undefined, `socket ${ws.n}: no frame waiting (${i} of ${n})`);
          const why = mismatch(pattern, JSON.parse(text), this.vars);
          assert.equal(why, null, `socket ${ws.n}: ${why} in ${text.slice(0, 300)}`);
        }
        break;
      }
      case 'expect_silent': {
        const socks = st.socket === undefined ? srv.sockets : [srv.socket(st.socket)];
        for (const ws of socks) assert.deepEqual(ws.sent.map((t) => t.slice(0, 200)), [], `socket ${ws.n} has frames waiting`);
        if (st.socket === undefined) assert.equal(srv.opening.length, 0, 'a socket is opening');
        break;
      }
      case 'send':
        srv.socket(st.socket).deliver(substitute(v, this.vars));
        break;
      case 'send_text':
        srv.socket(st.socket).deliverText(v);
        break;
      case 'storage_fail':
        this.storage.fail = v;
        break;
      case 'expect_settled': {
        const rec = this.promises[v.as];
        assert.ok(rec, `no promise named ${v.as}`);
        if (v.pending) assert.ok(!rec.done, `${v.as} has settled`);
        else if (v.error !== undefined) {
          assert.ok(rec.done && rec.error, `${v.as} has not rejected`);
          assert.equal(rec.error.code, v.error);
        } else {
          assert.ok(rec.done, `${v.as} has not settled`);
          assert.ok(!rec.error, `${v.as} rejected: ${rec.error?.message}`);
        }
        break;
      }
      case 'expect_error': {
        const e = this.errors.shift();
        assert.ok(e, 'no error event');
        const why = mismatch(v, e);
        assert.equal(why, null, why);
        break;
      }
      case 'send_events': {
        const ws = srv.socket(st.socket);
        for (let seq = v.from; seq <= v.to; seq++) {
          const ts = new Date(this.clock.t).toISOString();
          ws.deliver({ type: 'event', channel: v.channel, seq, epoch: v.epoch, id: `${v.epoch}-${seq}`, ts, event: 'file.updated', data: { path: `f${seq}.txt` } });
        }
        break;
      }
      case 'send_push_result': {
        const results =
          v.results ??
          list(v.mids).map((mid) => {
            const r = { mid, status: v.status, version: 1, seq: mid };
            if (v.original_status) r.original_status = v.original_status;
            return r;
          });
        const f = { type: 'push_result', ref: substitute(v.ref, this.vars), device: v.device, results };
        if (v.more) f.more = true;
        srv.socket(st.socket).deliver(f);
        break;
      }
      case 'drop':
        srv.socket(st.socket).end(1006);
        break;
      case 'server_close':
        srv.socket(st.socket).end(v);
        break;
      case 'expect_closed': {
        const ws = srv.socket(st.socket);
        assert.equal(ws.closedWith, v, `socket ${ws.n} closed with ${ws.closedWith}`);
        break;
      }
      case 'expect_state':
        assert.equal(c.state, v);
        break;
      case 'expect_states':
        assert.deepEqual(this.states.splice(0), v);
        break;
      case 'expect_events': {
        const got = (this.events[v.channel] ??= []).splice(0);
        assert.deepEqual(got, list(v.seqs), `events of ${v.channel}`);
        break;
      }
      case 'expect_reset': {
        const { channel, ...pattern } = v;
        const r = (this.resets[channel] ??= []).shift();
        assert.ok(r, `no reset on ${channel}`);
        const why = mismatch(pattern, r);
        assert.equal(why, null, why);
        break;
      }
      case 'expect_verdict': {
        const { as, error, ...pattern } = v;
        const rec = this.promises[as];
        assert.ok(rec?.done, `push ${as} has not settled`);
        if (error !== undefined) {
          assert.ok(rec.error, `push ${as} resolved with ${JSON.stringify(rec.value)}`);
          assert.equal(rec.error.code, error);
        } else {
          assert.ok(!rec.error, `push ${as} rejected: ${rec.error?.message}`);
          const why = mismatch(pattern, rec.value);
          assert.equal(why, null, why);
        }
        break;
      }
      case 'expect_verdicts': {
        const got = this.verdicts.splice(0);
        assert.deepEqual(
          got.map((x) => x.mid),
          list(v.mids),
        );
        for (const x of got) {
          const r = x.result;
          const why = mismatch(v.status, r.status === 'duplicate' ? r.original_status : r.status);
          assert.equal(why, null, `mid ${x.mid}: ${why}`);
        }
        break;
      }
      case 'expect_pending':
        assert.deepEqual(
          c.pending().map((p) => p.mid),
          list(v),
        );
        break;
      case 'expect_parked': {
        const why = mismatch(v, c.parked());
        assert.equal(why, null, why);
        break;
      }
      case 'expect_storage':
        for (const [key, p] of Object.entries(v)) {
          const got = this.storage.get(key);
          if (p === null) assert.equal(got, undefined, `${key} is stored: ${JSON.stringify(got)?.slice(0, 200)}`);
          else {
            const why = mismatch(p, got);
            assert.equal(why, null, `${key}: ${why}`);
          }
        }
        break;
      case 'expect_token_calls':
        assert.equal(this.tokenCalls, v);
        break;
      default:
        throw new Error(`unknown step ${JSON.stringify(st).slice(0, 100)}`);
    }
    await settle();
  }
}

for (const [build, lib] of Object.entries(builds)) for (const file of files) {
  test(build === 'index.mjs' ? file : `${file} (${build})`, async () => {
    const s = JSON.parse(readFileSync(new URL(file, dir), 'utf8'));
    const run = new Run(s, lib);
    await settle();
    for (const [i, st] of s.steps.entries()) {
      try {
        await run.step(st);
      } catch (e) {
        e.message = `${file}, step ${i + 1} ${JSON.stringify(st).slice(0, 160)}: ${e.message}`;
        throw e;
      }
    }
    run.client.close();
    run.clockView.kill();
  });
}
