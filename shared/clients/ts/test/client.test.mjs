// What the conformance scenarios do not cover: local refusals, the URL, a client without
// a device, getState at subscribe, skipped ranges, the outbox's durability and its
// error answers, presence, dismiss, close, an unreadable storage, and the bare core.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BandsyncClient, Core, FrameTooLargeError } from '../dist/index.mjs';
import { FakeClock, FakeServer, fakeStorage, settle } from './harness.mjs';

const DEVICE = { id: 'ringo-ipad', platform: 'web', name: 'iPad' };
const SONG = { band: 'demo', type: 'setlist_entry', id: 'song-1', op: 'patch', baseVersion: 1, fields: { title: 'Help' } };

function rig(o = {}) {
  const clock = new FakeClock();
  const server = new FakeServer(clock);
  const storage = o.storage ?? fakeStorage(o.stored);
  const client = new BandsyncClient(o.url ?? 'ws://server/prod', {
    getToken: o.getToken ?? (async () => 't'),
    device: 'device' in o ? o.device : DEVICE,
    storage,
    WebSocket: o.WebSocket ?? server.WebSocket,
    clock: clock.view(),
    random: () => 0.5,
    ...o.options,
  });
  return { clock, server, storage, client };
}
async function accept(server) {
  await settle();
  const ws = server.opening.shift();
  assert.ok(ws, 'no socket opening');
  ws.state = 'open';
  ws.onopen({});
  await settle();
  return ws;
}
const frames = (ws) => ws.sent.splice(0).map((t) => JSON.parse(t));
const send = async (ws, f) => {
  ws.deliver(f);
  await settle();
};
/** Connected, with band:demo subscribed at seq 0 of e1. */
async function live(r, channel = 'band:demo') {
  const ch = r.client.channel(channel);
  const sub = ch.subscribe();
  const ws = await accept(r.server);
  frames(ws);
  await send(ws, { type: 'device', device: DEVICE.id, categories: [], ref: 'd' });
  await send(ws, { type: 'subscribed', channel, seq: 0, epoch: 'e1', ref: 'c:' + channel });
  await sub;
  return { ws, ch };
}
const event = (seq, extra = {}) => ({ type: 'event', channel: 'band:demo', seq, epoch: 'e1', id: `e1-${seq}`, ts: '2026-12-01T00:00:00Z', event: 'file.updated', data: { path: 'f' }, ...extra });

test('push without a device is refused at once with no_device; a malformed mutation with invalid_mutation', async () => {
  const r = rig({ device: undefined });
  await assert.rejects(r.client.push(SONG), { code: 'no_device' });
  const d = rig();
  await assert.rejects(d.client.push({ ...SONG, op: 'upsert' }), { code: 'invalid_mutation' });
  await assert.rejects(d.client.push({ ...SONG, baseVersion: -1 }), { code: 'invalid_mutation' });
  await settle();
  assert.deepEqual(d.client.pending(), []);
});

test('a push over 32 KB rejects with FrameTooLargeError and takes no mid', async () => {
  const r = rig();
  const big = r.client.push({ ...SONG, fields: { notes: 'x'.repeat(33000) } });
  await assert.rejects(big, (e) => e instanceof FrameTooLargeError && e.code === 'frame_too_large');
  r.client.push(SONG).catch(() => {});
  await settle();
  assert.deepEqual(r.client.pending().map((p) => p.mid), [1]);
});

test("the token is added to the URL's own query, encoded", async () => {
  const r = rig({ url: 'ws://server/prod?v=2', getToken: async () => 'a b&c' });
  r.client.connect();
  await settle();
  assert.equal(r.server.opening[0].url, 'ws://server/prod?v=2&token=a%20b%26c');
});

test('without a device the client is connected on open and subscribes without register_device', async () => {
  const r = rig({ device: undefined });
  const states = [];
  r.client.on('state', (s) => states.push(s.current));
  r.client.channel('band:demo').subscribe();
  const ws = await accept(r.server);
  assert.deepEqual(frames(ws), [{ action: 'subscribe', channel: 'band:demo', ref: 'c:band:demo' }]);
  assert.deepEqual(states, ['connecting', 'connected']);
});

test('getState at subscribe: a snapshot with {seq, epoch} is resumed from; subscribe() resolves on the last resumed', async () => {
  const r = rig();
  const ch = r.client.channel('band:demo', { getState: async () => ({ seq: 7, epoch: 'e1', rows: [] }) });
  let resolved = false;
  ch.subscribe().then(() => (resolved = true));
  const ws = await accept(r.server);
  assert.deepEqual(frames(ws)[1], { action: 'resume', channel: 'band:demo', after_seq: 7, epoch: 'e1', ref: 'c:band:demo' });
  await send(ws, { type: 'device', device: DEVICE.id, categories: [], ref: 'd' });
  await send(ws, { type: 'resumed', channel: 'band:demo', seq: 9, epoch: 'e1', replayed: 2, more: true, ref: 'c:band:demo' });
  assert.equal(resolved, false);
  assert.equal(frames(ws)[0].action, 'resume');
  await send(ws, { type: 'resumed', channel: 'band:demo', seq: 7, epoch: 'e1', replayed: 0, ref: 'c:band:demo' });
  assert.equal(resolved, true);
  assert.deepEqual(ch.cursor, { epoch: 'e1', seq: 7 });
});

test('skipped advances the cursor without an event; a skipped range past a gap starts a resume', async () => {
  const r = rig();
  const { ws, ch } = await live(r);
  const seqs = [];
  ch.on('event', (e) => seqs.push(e.seq));
  await send(ws, { type: 'skipped', channel: 'band:demo', from_seq: 1, to_seq: 3 });
  await send(ws, event(4));
  assert.deepEqual(seqs, [4]);
  assert.deepEqual(r.storage.get('cursor:band:demo'), { epoch: 'e1', seq: 4 });
  await send(ws, { type: 'skipped', channel: 'band:demo', from_seq: 9, to_seq: 9 });
  assert.deepEqual(frames(ws), [{ action: 'resume', channel: 'band:demo', after_seq: 4, epoch: 'e1', ref: 'c:band:demo' }]);
});

test('an outbox entry is durable before its frame leaves', async () => {
  let open;
  const gate = new Promise((r) => (open = r));
  const base = fakeStorage();
  const storage = { ...base, write: async (sets, rm) => ('outbox:1' in sets ? gate.then(() => base.write(sets, rm)) : base.write(sets, rm)) };
  const r = rig({ storage });
  const { ws } = await live(r);
  r.client.push(SONG);
  await settle();
  assert.deepEqual(frames(ws), [], 'sent before the storage finished');
  open();
  await settle();
  const [f] = frames(ws);
  assert.equal(f.action, 'push');
  assert.equal(base.get('outbox:1').mutation.base_version, 1);
});

test('batch errors: rate_limited waits retry_after, unavailable waits delay(k) of its retries in a row, unknown_device registers first', async () => {
  const r = rig();
  const { ws } = await live(r);
  r.client.push(SONG);
  await settle();
  let [f] = frames(ws);
  await send(ws, { type: 'error', code: 'rate_limited', message: 'slow down', retry_after: 3, ref: f.ref });
  await r.clock.advance(2999);
  assert.deepEqual(frames(ws), []);
  await r.clock.advance(1);
  [f] = frames(ws);
  assert.equal(f.action, 'push');
  await send(ws, { type: 'error', code: 'unavailable', message: 'try again', ref: f.ref });
  // The second retry of that frame in a row: delay(2) = 1000 + 0.5 * 3000.
  await r.clock.advance(2499);
  assert.deepEqual(frames(ws), []);
  await r.clock.advance(1);
  [f] = frames(ws);
  assert.equal(f.action, 'push');
  await send(ws, { type: 'error', code: 'unknown_device', message: 'register first', ref: f.ref });
  assert.deepEqual(frames(ws).map((x) => x.action), ['register_device']);
  await send(ws, { type: 'device', device: DEVICE.id, categories: [], ref: 'd' });
  [f] = frames(ws);
  assert.deepEqual(f.mutations.map((m) => m.mid), [1]);
  assert.deepEqual(r.client.parked(), []);
});

test('out_of_order is not final: the outbox resends from its oldest entry', async () => {
  const r = rig();
  const { ws } = await live(r);
  const p = r.client.push(SONG);
  await settle();
  const [f] = frames(ws);
  await send(ws, { type: 'push_result', device: DEVICE.id, ref: f.ref, results: [{ mid: 1, status: 'out_of_order', expected_mid: 1 }] });
  const [again] = frames(ws);
  assert.deepEqual(again.mutations.map((m) => m.mid), [1]);
  await send(ws, { type: 'push_result', device: DEVICE.id, ref: again.ref, results: [{ mid: 1, status: 'merged', version: 3, seq: 9 }] });
  assert.equal((await p).status, 'merged');
});

test('another refusal of the frame parks the whole batch locally and gives the mids back', async () => {
  const r = rig();
  const { ws } = await live(r);
  const a = r.client.push(SONG);
  await settle();
  const [f] = frames(ws);
  const b = r.client.push({ ...SONG, id: 'song-2' });
  await send(ws, { type: 'error', code: 'forbidden', message: 'not a member of demo', ref: f.ref });
  assert.deepEqual(await a, { mid: null, status: 'rejected', code: 'forbidden', message: 'not a member of demo' });
  assert.deepEqual(r.client.pending().map((p) => p.mid), [1]);
  assert.equal(r.storage.get('outbox:1').mutation.id, 'song-2');
  assert.equal(r.storage.get('outbox:2'), undefined);
  assert.equal(r.storage.get('mid:next'), 2);
  assert.deepEqual(r.client.parked().map((p) => [p.key, p.mid, p.code]), [['l1', null, 'forbidden']]);
  r.client.dismiss('l1');
  await settle();
  assert.deepEqual(r.client.parked(), []);
  assert.equal(r.storage.get('parked:l1'), undefined);
  const [g] = frames(ws);
  await send(ws, { type: 'push_result', device: DEVICE.id, ref: g.ref, results: [{ mid: 1, status: 'applied', version: 2, seq: 1 }] });
  assert.equal((await b).status, 'applied');
});

test('presence: the request and its answer; presence.joined events also come as presence', async () => {
  const r = rig();
  const { ws, ch } = await live(r);
  const seen = [];
  ch.on('presence', (e) => seen.push(e.event));
  const q = ch.presence();
  await settle();
  assert.deepEqual(frames(ws), [{ action: 'presence', band: 'demo', ref: 'q:demo' }]);
  const members = [{ member: 'alice', devices: 1, since: '2026-12-01T00:00:00Z' }];
  await send(ws, { type: 'presence', band: 'demo', members, ref: 'q:demo' });
  assert.deepEqual(await q, members);
  await send(ws, event(1, { event: 'presence.joined', data: { member: 'bob', devices: 1, since: 'x', at: 'x' } }));
  assert.deepEqual(seen, ['presence.joined']);
  await assert.rejects(r.client.channel('user:alice').presence(), { code: 'invalid_request' });
});

test('unsubscribe sends unsubscribe and its events stop', async () => {
  const r = rig();
  const { ws, ch } = await live(r);
  const seqs = [];
  ch.on('event', (e) => seqs.push(e.seq));
  ch.unsubscribe();
  await settle();
  assert.deepEqual(frames(ws), [{ action: 'unsubscribe', channel: 'band:demo', ref: 'c:band:demo' }]);
  await send(ws, event(1));
  assert.deepEqual(seqs, []);
});

test('close(): the socket closes with 1000, nothing reconnects, queued pushes stay stored', async () => {
  const r = rig();
  const { ws } = await live(r);
  await send(ws, { type: 'error', code: 'rate_limited', message: 'slow', retry_after: 1, ref: 'x' });
  const p = r.client.push(SONG);
  await settle();
  frames(ws);
  r.client.close();
  // Its entry stays stored for the next client; this one's promise is settled.
  await assert.rejects(p, { code: 'closed' });
  assert.equal(r.client.state, 'closed');
  assert.equal(ws.closedWith, 1000);
  await r.clock.advance(3_600_000);
  assert.equal(r.server.sockets.length, 1);
  assert.equal(r.clock.timers.size, 0, 'timers left behind');
  assert.equal(r.storage.get('outbox:1').mid, 1);
});

test('a channel error other than history_lost rejects subscribe() and is emitted', async () => {
  const r = rig();
  const ch = r.client.channel('band:secret');
  const errors = [];
  ch.on('error', (e) => errors.push(e.code));
  const refused = assert.rejects(ch.subscribe(), { code: 'forbidden' });
  const ws = await accept(r.server);
  await send(ws, { type: 'error', code: 'forbidden', message: 'not a member', ref: 'c:band:secret' });
  await refused;
  assert.deepEqual(errors, ['forbidden']);
});

test('a storage that cannot be read fails the client instead of reusing mids', async () => {
  const r = rig({ storage: { load: async () => Promise.reject(new Error('disk gone')), set() {}, remove() {} } });
  const errors = [];
  r.client.on('error', (e) => errors.push(e.message));
  await assert.rejects(r.client.push(SONG), { code: 'storage' });
  assert.equal(r.client.state, 'failed');
  assert.match(errors[0], /disk gone/);
  assert.equal(r.server.sockets.length, 0);
});

test('the bare core: inputs stamped with the time give effects, in order', () => {
  const core = new Core({ url: 'ws://s/p', device: DEVICE }, () => 0.5);
  const t = Date.parse('2026-12-01T00:00:00Z');
  assert.deepEqual(core.step(t, { type: 'start' }), [
    { type: 'set_timer', id: 'w', at: t + 1000 },
    { type: 'cancel_timer', id: 'retry' },
    { type: 'emit', name: 'state', data: { previous: 'idle', current: 'connecting', reason: 'connect', retryInMs: undefined }, channel: undefined },
    { type: 'set_timer', id: 'ct', at: t + 15000 },
    { type: 'get_token', socket: 1 },
  ]);
  assert.deepEqual(core.step(t, { type: 'token', socket: 1, token: 'x' }), [{ type: 'open', socket: 1, url: 'ws://s/p?token=x' }]);
  const fx = core.step(t + 5, { type: 'refused', socket: 1 });
  assert.deepEqual(fx.find((e) => e.type === 'set_timer' && e.id === 'retry'), { type: 'set_timer', id: 'retry', at: t + 5 + 1500 });
  assert.equal(core.state, 'disconnected');
});

// What the second review found (each failed before its fix).

const ROTATE = 115 * 60_000;
/** Connected on ws1 and rotating: ws2 open, its device answered, band:demo resumed on it. */
async function rotating(r) {
  r.server.autoPong = true;
  const { ws, ch } = await live(r);
  await r.clock.advance(ROTATE);
  const ws2 = await accept(r.server);
  assert.deepEqual(frames(ws2).map((f) => f.action), ['register_device', 'resume']);
  await send(ws2, { type: 'device', device: DEVICE.id, categories: [], ref: 'd' });
  return { ws, ws2, ch };
}

test('rotation: a refused batch on the old socket lets the switch happen (it waited for the batch)', async () => {
  const r = rig();
  r.server.autoPong = true;
  const { ws } = await live(r);
  await r.clock.advance(ROTATE - 1000);
  r.client.push(SONG);
  await settle();
  const [f] = frames(ws);
  await r.clock.advance(1000);
  const ws2 = await accept(r.server);
  frames(ws2);
  await send(ws2, { type: 'device', device: DEVICE.id, categories: [], ref: 'd' });
  await send(ws2, { type: 'resumed', channel: 'band:demo', seq: 0, epoch: 'e1', replayed: 0, ref: 'c:band:demo' });
  assert.equal(ws.closedWith, undefined, 'switched with a batch in flight');
  await send(ws, { type: 'error', code: 'forbidden', message: 'no', ref: f.ref });
  assert.equal(ws.closedWith, 1000);
  assert.deepEqual(r.client.parked().map((p) => p.code), ['forbidden']);
});

test('rotation: unsubscribing the one channel the new socket has not answered completes the switch', async () => {
  const r = rig();
  r.server.autoPong = true;
  const other = r.client.channel('band:other');
  other.subscribe().catch(() => {});
  const { ws } = await live(r);
  await send(ws, { type: 'subscribed', channel: 'band:other', seq: 0, epoch: 'o1', ref: 'c:band:other' });
  await r.clock.advance(ROTATE);
  const ws2 = await accept(r.server);
  frames(ws2);
  await send(ws2, { type: 'device', device: DEVICE.id, categories: [], ref: 'd' });
  await send(ws2, { type: 'resumed', channel: 'band:demo', seq: 0, epoch: 'e1', replayed: 0, ref: 'c:band:demo' });
  assert.equal(ws.closedWith, undefined);
  other.unsubscribe();
  await settle();
  assert.equal(ws.closedWith, 1000);
});

test('rotation: a presence query unanswered on the old socket is sent again on the new one', async () => {
  const r = rig();
  const { ws, ws2, ch } = await rotating(r);
  const q = ch.presence();
  await settle();
  assert.deepEqual(frames(ws).filter((f) => f.action === 'presence').length, 1);
  await send(ws2, { type: 'resumed', channel: 'band:demo', seq: 0, epoch: 'e1', replayed: 0, ref: 'c:band:demo' });
  assert.equal(ws.closedWith, 1000);
  assert.deepEqual(frames(ws2), [{ action: 'presence', band: 'demo', ref: 'q:demo' }]);
  await send(ws2, { type: 'presence', band: 'demo', members: [], ref: 'q:demo' });
  assert.deepEqual(await q, []);
});

test('rotation: a getToken that keeps failing is retried after delay(n), n the failures in a row', async () => {
  let calls = 0;
  const r = rig({ getToken: async () => (++calls === 1 ? 't' : Promise.reject(new Error('token service down'))) });
  r.server.autoPong = true;
  await live(r);
  await r.clock.advance(ROTATE);
  assert.equal(calls, 2);
  // delay(1) = 1500, delay(2) = 2500, delay(3) = 4500 (random 0.5).
  for (const [wait, n] of [[1500, 3], [2500, 4], [4500, 5]]) {
    await r.clock.advance(wait - 1);
    assert.equal(calls, n - 1);
    await r.clock.advance(1);
    assert.equal(calls, n);
  }
});

test("the ws package's 'unexpected-response' gives a refusal's status: two 401s in a row fail the client", async () => {
  const r = rig();
  const opened = [];
  class WsLike {
    constructor(url) {
      this.url = url;
      this.handlers = {};
      opened.push(this);
      // The handshake answered 401 (what the `ws` package reports before its close).
      queueMicrotask(() => this.handlers['unexpected-response']?.({}, { statusCode: 401 }));
    }
    on(name, f) {
      this.handlers[name] = f;
    }
    send() {}
    close() {
      queueMicrotask(() => this.onclose?.({ code: 1006 }));
    }
  }
  const c = rig({ WebSocket: WsLike }).client;
  const states = [];
  c.on('state', (e) => states.push(e.current));
  c.connect();
  for (let i = 0; i < 5; i++) await settle();
  assert.equal(opened.length, 2);
  assert.equal(c.state, 'failed');
  assert.deepEqual(states, ['connecting', 'failed']);
  r.client.close();
});

test("a rate_limited retry_after puts off the next attempt only until it ends", async () => {
  const r = rig();
  const { ws } = await live(r);
  await send(ws, { type: 'error', code: 'rate_limited', message: 'slow', retry_after: 30, ref: 'x' });
  const states = [];
  r.client.on('state', (e) => states.push(e));
  await r.clock.advance(60_000);
  ws.end(1006);
  await settle();
  // The floor ended 30 s ago: the wait is delay(1), not 30 s.
  assert.equal(states[0].current, 'disconnected');
  assert.equal(states[0].retryInMs, 1500);
});

test('renumbering after a refusal is one atomic write: entries, mid:next and the parked entry together', async () => {
  const base = fakeStorage();
  const writes = [];
  const storage = { ...base, write: async (sets, removes) => (writes.push({ sets: Object.keys(sets).sort(), removes }), base.write(sets, removes)) };
  const r = rig({ storage });
  const { ws } = await live(r);
  for (const id of ['a', 'b', 'c']) r.client.push({ ...SONG, id });
  await settle();
  const [f] = frames(ws);
  assert.equal(f.mutations.length, 1);
  writes.length = 0;
  await send(ws, { type: 'error', code: 'invalid_request', message: 'mutations[0]: bad fields', ref: f.ref });
  assert.deepEqual(writes[0], { sets: ['mid:next', 'outbox:1', 'outbox:2', 'parked:l1', 'parked:next_local'], removes: ['outbox:3'] });
  assert.equal(writes.length, 1);
  assert.equal(base.get('mid:next'), 3);
  assert.deepEqual([base.get('outbox:1').mutation.id, base.get('outbox:2').mutation.id], ['b', 'c']);
});

test('a tab that closed while hidden starts afresh when visible: a failed attempt then is disconnected, not suspended', async () => {
  const r = rig({ options: { hiddenCloseAfterMs: 1000 } });
  await live(r);
  r.client._feed({ type: 'env', env: 'hidden' });
  await r.clock.advance(1000);
  assert.equal(r.client.state, 'disconnected');
  await r.clock.advance(300_000);
  r.client._feed({ type: 'env', env: 'visible' });
  await settle();
  const ws = r.server.opening.shift();
  ws.state = 'refused';
  ws.onclose({ code: 1006 });
  await settle();
  assert.equal(r.client.state, 'disconnected');
});

/** A LockManager like the browser's: exclusive locks by name, callbacks run later. */
function lockManager() {
  const held = new Set();
  const queue = [];
  const grant = (name, cb) => {
    held.add(name);
    queueMicrotask(() =>
      Promise.resolve(cb({ name })).then(() => {
        held.delete(name);
        const i = queue.findIndex((q) => q.name === name);
        if (i >= 0) grant(name, queue.splice(i, 1)[0].cb);
      }),
    );
  };
  const locks = {
    request(name, opts, cb) {
      if (typeof opts === 'function') [cb, opts] = [opts, {}];
      if (!held.has(name)) return grant(name, cb);
      if (opts.ifAvailable) return queueMicrotask(() => cb(null));
      queue.push({ name, cb });
    },
  };
  return { held, locks };
}

test('one client per device: a second one on the same device waits in suspended (device_in_use) until the first closes', async () => {
  const { held, locks } = lockManager();
  globalThis.navigator = { locks };
  try {
    const a = rig();
    const b = rig();
    const states = [];
    b.client.on('state', (e) => states.push([e.current, e.reason]));
    await live(a);
    b.client.connect();
    await settle();
    assert.equal(b.client.state, 'suspended');
    assert.deepEqual(states, [['suspended', 'device_in_use']]);
    assert.equal(b.server.opening.length, 0);
    // A third one closed while waiting gives the lock back as soon as it gets it.
    const c = rig();
    await settle();
    c.client.close();
    a.client.close();
    await settle();
    assert.equal(b.server.opening.length, 1, 'the second client did not start');
    b.client.close();
    await settle();
    assert.equal(held.size, 0, 'a closed client kept the lock');
    assert.equal(c.server.opening.length, 0);
  } finally {
    delete globalThis.navigator;
  }
});

/** A storage whose writes matching `pick` wait for `open()`, then fail or succeed. */
function gated(pick) {
  const base = fakeStorage();
  let open;
  const gate = new Promise((r) => (open = r));
  const storage = {
    ...base,
    write: async (sets, rm) => {
      if (!pick(sets, rm)) return base.write(sets, rm);
      if (await gate) throw new Error('disk full');
      return base.write(sets, rm);
    },
  };
  return { base, storage, open };
}

test('a push whose write is pending is not sent by a later step; when the write fails nothing of it left', async () => {
  let once = 0;
  const g = gated((sets) => 'outbox:1' in sets && !once++);
  const r = rig({ storage: g.storage });
  r.client.channel('band:demo').subscribe();
  const ws = await accept(r.server);
  frames(ws);
  const p = r.client.push(SONG);
  await settle();
  // The device frame would flush the outbox while the entry's write is in flight.
  await send(ws, { type: 'device', device: DEVICE.id, categories: [], ref: 'd' });
  g.open(true);
  await assert.rejects(p, { code: 'storage_failed' });
  await settle();
  assert.deepEqual(frames(ws).filter((f) => f.action === 'push'), []);
  const q = r.client.push({ ...SONG, id: 'song-2' });
  await settle();
  const [f] = frames(ws);
  assert.deepEqual([f.action, f.mutations[0].mid], ['push', 1]);
  await send(ws, { type: 'push_result', ref: f.ref, device: DEVICE.id, results: [{ mid: 1, status: 'applied', version: 2, seq: 1 }] });
  assert.equal((await q).status, 'applied');
});

test("close() gives the device's lock back only after the queued outbox writes landed", async () => {
  const { held, locks } = lockManager();
  globalThis.navigator = { locks };
  try {
    const g = gated((sets) => 'outbox:1' in sets);
    const r = rig({ storage: g.storage });
    await live(r);
    r.client.push(SONG).catch(() => {});
    await settle();
    r.client.close();
    await settle();
    assert.equal(held.size, 1, 'the lock was given back with a write queued');
    g.open(false);
    await settle();
    assert.equal(held.size, 0);
    assert.equal(g.base.get('outbox:1').mid, 1);
  } finally {
    delete globalThis.navigator;
  }
});

test('close() is final: connect() opens nothing, push() and subscribe() reject closed', async () => {
  const r = rig();
  await live(r);
  r.client.close();
  await settle();
  r.client.connect();
  await assert.rejects(r.client.push(SONG), { code: 'closed' });
  await assert.rejects(r.client.channel('band:x').subscribe(), { code: 'closed' });
  await settle();
  assert.equal(r.server.sockets.length, 1);
  assert.equal(r.server.opening.length, 0);
  assert.equal(r.storage.get('outbox:1'), undefined);
});

test('subscribe() pending at unsubscribe() rejects unsubscribed; at close() rejects closed', async () => {
  const r = rig();
  const a = r.client.channel('band:a').subscribe();
  const b = r.client.channel('band:b').subscribe();
  await accept(r.server);
  r.client.channel('band:a').unsubscribe();
  await assert.rejects(a, { code: 'unsubscribed' });
  r.client.close();
  await assert.rejects(b, { code: 'closed' });
});

test('a failed rotation sends the push it held back on the old socket', async () => {
  let second;
  let n = 0;
  const r = rig({ getToken: () => (n++ ? new Promise((_, ko) => (second = ko)) : 't') });
  const { ws } = await live(r);
  r.client._feed({ type: 'timer', id: 'rot' });
  await settle();
  assert.ok(second, 'no rotation');
  frames(ws);
  r.client.push(SONG).catch(() => {});
  await settle();
  assert.deepEqual(frames(ws), [], 'sent during the rotation');
  second(new Error('token service down'));
  await settle();
  assert.deepEqual(frames(ws).map((f) => f.action), ['push']);
});

test("a failed remove while applying a push_result is reported: the verdict stands and the outbox goes on", async () => {
  const base = fakeStorage();
  const storage = { ...base, remove: async (k) => (k === 'outbox:1' ? Promise.reject(new Error('io')) : base.remove(k)) };
  const r = rig({ storage });
  const errors = [];
  r.client.on('error', (e) => errors.push(e.code));
  const { ws } = await live(r);
  const a = r.client.push(SONG);
  await settle();
  const [f] = frames(ws);
  const b = r.client.push({ ...SONG, id: 'song-2' });
  await settle();
  await send(ws, { type: 'push_result', ref: f.ref, device: DEVICE.id, results: [{ mid: 1, status: 'applied', version: 2, seq: 1 }] });
  assert.equal((await a).status, 'applied');
  assert.deepEqual(errors, ['storage']);
  const [g] = frames(ws);
  assert.deepEqual(g.mutations.map((m) => m.mid), [2]);
  b.catch(() => {});
});

test('a failed renumbering write fails the client (storage) instead of guessing the mids', async () => {
  const base = fakeStorage();
  const storage = { ...base, write: async (sets, rm) => ('parked:l1' in sets ? Promise.reject(new Error('io')) : base.write(sets, rm)) };
  const r = rig({ storage });
  const states = [];
  r.client.on('state', (s) => states.push([s.current, s.reason]));
  const { ws } = await live(r);
  for (const id of ['a', 'b']) r.client.push({ ...SONG, id }).catch(() => {});
  await settle();
  const [f] = frames(ws);
  await send(ws, { type: 'error', code: 'invalid_request', message: 'mutations[0]: bad fields', ref: f.ref });
  assert.deepEqual(states.at(-1), ['failed', 'storage']);
  assert.equal(ws.closedWith, 1000);
});

test('unsubscribe() while getState is pending after history_lost: no reset, no resume', async () => {
  let answer;
  const r = rig({ stored: { 'cursor:band:demo': { epoch: 'e1', seq: 5 } } });
  const ch = r.client.channel('band:demo', { getState: () => new Promise((ok) => (answer = ok)) });
  const resets = [];
  ch.on('reset', (e) => resets.push(e));
  ch.subscribe().catch(() => {});
  const ws = await accept(r.server);
  await send(ws, { type: 'device', device: DEVICE.id, categories: [], ref: 'd' });
  frames(ws);
  const data = { channel: 'band:demo', epoch: 'e1', seq: 520 };
  await send(ws, { type: 'error', code: 'history_lost', message: 'gone', ref: 'c:band:demo', data });
  assert.ok(answer, 'getState was not asked');
  ch.unsubscribe();
  answer({ seq: 600, epoch: 'e1' });
  await settle();
  assert.deepEqual(resets, []);
  assert.deepEqual(frames(ws).map((f) => f.action), ['unsubscribe']);
});

test('retry-later timers do not outlive close()', async () => {
  const r = rig();
  r.client.channel('band:demo').subscribe().catch(() => {});
  const ws = await accept(r.server);
  await send(ws, { type: 'device', device: DEVICE.id, categories: [], ref: 'd' });
  await send(ws, { type: 'error', code: 'unavailable', message: 'busy', ref: 'c:band:demo' });
  r.client.close();
  await settle();
  assert.equal(r.clock.timers.size, 0, 'timers left behind');
});

test('unsubscribed and ack frames are accepted, not reported malformed', async () => {
  const r = rig();
  const errors = [];
  r.client.on('error', (e) => errors.push(e.code));
  const { ws } = await live(r);
  await send(ws, { type: 'unsubscribed', channel: 'band:demo', ref: 'c:band:demo' });
  await send(ws, { type: 'ack', ref: 'x' });
  assert.deepEqual(errors, []);
});
