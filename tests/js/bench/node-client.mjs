// A measurement, not a test (`npm run bench:node` in tests/js; the stack binary built
// first): the TypeScript client against the real local stack, side by side with a bare
// baseline that speaks the same frames by hand (no outbox, no storage, no state
// machine), in the same run and interleaved, so the ratio says what the client costs.
//
// 1. Reconnect to live after 1,000 missed events: a member's client is away while
//    another member makes 1,000 changes; then it connects again from its stored cursor.
//    Timed from connect() to the channel being live with all 1,000 events delivered.
//    The baseline: open a socket, send `resume` from the same cursor, follow `more`,
//    count the events until the last `resumed`.
// 2. Outbox replay of 1,000 mutations: queued while offline, then the client connects;
//    timed from connect to the last verdict. The baseline sends the same 1,000 in frames
//    of 100, one in flight at a time (what the client does), and waits for each answer.
//
// Options: --runs 10 (each kind, each side), --events 1000, --mutations 1000.

import { startStack } from '../lib/stack.mjs';
import { BandsyncClient, memoryStorage, uid } from '../lib/clients.mjs';

const arg = (name, d) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : d;
};
const RUNS = arg('runs', 10);
const EVENTS = arg('events', 1000);
const MUTATIONS = arg('mutations', 1000);
const step = (what) => console.error(`[bench] ${what}`);

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};
const round = (x) => Math.round(x * 10) / 10;
const summary = (xs) => ({ p50: round(pct(xs, 50)), p99: round(pct(xs, 99)), min: round(Math.min(...xs)), max: round(Math.max(...xs)) });
const ms = (x) => `${x.toFixed(1)} ms`;

const stack = await startStack();
try {
  const device = (name) => ({ id: uid(`${name}-`), platform: 'desktop', name, categories: null });
  const getToken = (user) => () => stack.token(user);

  // The producer: bo's client; `changes(n)` makes n events on band:demo and waits for
  // their verdicts.
  const bo = new BandsyncClient(stack.ws, { getToken: getToken('bo'), device: device('bo'), storage: memoryStorage() });
  let produced = 0;
  const changes = async (n) => {
    const start = produced;
    produced += n;
    const verdicts = [];
    for (let i = start; i < start + n; i++) {
      verdicts.push(bo.push({ band: 'demo', type: 'setlist_entry', id: `e${i}`, op: 'create', baseVersion: 0, fields: { title: `Song ${i}` } }));
    }
    const results = await Promise.all(verdicts);
    const bad = results.filter((r) => r.status !== 'applied');
    if (bad.length) throw new Error(`the producer's changes: ${JSON.stringify(bad[0])}`);
  };
  await changes(1);

  // Where band:demo is now, as a subscriber sees it.
  const head = async () => {
    const c = new BandsyncClient(stack.ws, { getToken: getToken('alice'), storage: memoryStorage() });
    const ch = c.channel('band:demo');
    await ch.subscribe();
    const cursor = { ...ch.cursor };
    c.close();
    return cursor;
  };

  // 1a. The client: a stored cursor, then 1,000 missed events, then connect.
  const clientReconnect = async () => {
    const cursor = await head();
    await changes(EVENTS);
    const storage = memoryStorage();
    await storage.set(`cursor:band:demo`, cursor);
    const alice = new BandsyncClient(stack.ws, { getToken: getToken('alice'), storage });
    const ch = alice.channel('band:demo');
    let got = 0;
    let last = cursor.seq;
    ch.on('event', (e) => {
      if (e.seq !== last + 1) throw new Error(`gap or repeat: ${last} then ${e.seq}`);
      last = e.seq;
      got++;
    });
    const t0 = performance.now();
    await ch.subscribe();
    const t = performance.now() - t0;
    alice.close();
    if (got !== EVENTS) throw new Error(`the client got ${got} of ${EVENTS} missed events`);
    return t;
  };

  // 1b. The baseline: the same frames by hand.
  const rawReconnect = async () => {
    const cursor = await head();
    await changes(EVENTS);
    const token = await stack.token('alice');
    const t0 = performance.now();
    const got = await new Promise((resolve, reject) => {
      const ws = new WebSocket(`${stack.ws}?token=${encodeURIComponent(token)}`);
      let n = 0;
      let after = cursor.seq;
      const resume = () => ws.send(JSON.stringify({ action: 'resume', channel: 'band:demo', after_seq: after, epoch: cursor.epoch }));
      ws.onopen = resume;
      ws.onerror = () => reject(new Error('baseline socket failed'));
      ws.onmessage = (m) => {
        const f = JSON.parse(m.data);
        if (f.type === 'event' && f.seq === after + 1) { after = f.seq; n++; }
        else if (f.type === 'resumed' && f.more) resume();
        else if (f.type === 'resumed') { ws.close(1000); resolve(n); }
      };
    });
    const t = performance.now() - t0;
    if (got !== EVENTS) throw new Error(`the baseline got ${got} of ${EVENTS} missed events`);
    return t;
  };

  // 2a. The client: 1,000 pushes queued before it may connect, then connect.
  const mutation = (i, run) => ({ band: 'demo', type: 'setlist_entry', id: `o${run}-${i}`, op: 'create', baseVersion: 0, fields: { title: `Queued ${i}` } });
  let outboxRun = 0;
  const clientOutbox = async () => {
    const run = outboxRun++;
    let release;
    const gate = new Promise((r) => { release = r; });
    const token = await stack.token('carol');
    const carol = new BandsyncClient(stack.ws, { getToken: async () => { await gate; return token; }, device: device('carol'), storage: memoryStorage() });
    const verdicts = [];
    for (let i = 0; i < MUTATIONS; i++) verdicts.push(carol.push(mutation(i, `c${run}`)));
    const t0 = performance.now();
    release();
    const results = await Promise.all(verdicts);
    const t = performance.now() - t0;
    carol.close();
    const bad = results.filter((r) => r.status !== 'applied');
    if (bad.length) throw new Error(`the client's outbox: ${bad.length} not applied, e.g. ${JSON.stringify(bad[0])}`);
    return t;
  };

  // 2b. The baseline: register, then frames of 100 by hand, one in flight.
  const rawOutbox = async () => {
    const run = outboxRun++;
    const token = await stack.token('carol');
    const id = uid('raw-');
    const t0 = performance.now();
    const applied = await new Promise((resolve, reject) => {
      const ws = new WebSocket(`${stack.ws}?token=${encodeURIComponent(token)}`);
      let next = 1;
      let ok = 0;
      const ts = new Date().toISOString();
      const send = () => {
        const mutations = [];
        for (let k = 0; k < 100 && next <= MUTATIONS; k++, next++) mutations.push({ ...mutation(next - 1, `r${run}`), band: undefined, baseVersion: undefined, base_version: 0, mid: next, ts });
        ws.send(JSON.stringify({ action: 'push', band: 'demo', device: id, ref: next, mutations }));
      };
      ws.onopen = () => ws.send(JSON.stringify({ action: 'register_device', device: id, platform: 'desktop', name: 'raw', ref: 'd' }));
      ws.onerror = () => reject(new Error('baseline socket failed'));
      ws.onmessage = (m) => {
        const f = JSON.parse(m.data);
        if (f.type === 'device') send();
        else if (f.type === 'push_result') {
          ok += f.results.filter((r) => r.status === 'applied').length;
          if (f.more) return;
          if (next <= MUTATIONS) send(); else { ws.close(1000); resolve(ok); }
        } else if (f.type === 'error') reject(new Error(`baseline: ${m.data}`));
      };
    });
    const t = performance.now() - t0;
    if (applied !== MUTATIONS) throw new Error(`the baseline: ${applied} of ${MUTATIONS} applied`);
    return t;
  };

  const times = { clientReconnect: [], rawReconnect: [], clientOutbox: [], rawOutbox: [] };
  for (let r = 0; r < RUNS; r++) {
    // Interleaved, alternating who goes first, so drift on a shared machine hits both.
    const pairs = r % 2 ? [['rawReconnect', rawReconnect], ['clientReconnect', clientReconnect]] : [['clientReconnect', clientReconnect], ['rawReconnect', rawReconnect]];
    for (const [name, f] of pairs) times[name].push(await f());
    const outs = r % 2 ? [['rawOutbox', rawOutbox], ['clientOutbox', clientOutbox]] : [['clientOutbox', clientOutbox], ['rawOutbox', rawOutbox]];
    for (const [name, f] of outs) times[name].push(await f());
    step(`run ${r + 1}/${RUNS}: reconnect client ${ms(times.clientReconnect.at(-1))} raw ${ms(times.rawReconnect.at(-1))}; outbox client ${ms(times.clientOutbox.at(-1))} raw ${ms(times.rawOutbox.at(-1))}`);
  }
  bo.close();

  const report = {};
  for (const [k, v] of Object.entries(times)) report[k] = summary(v);
  const ratio = (a, b) => (report[a].p50 / report[b].p50).toFixed(2);
  console.log(JSON.stringify({ runs: RUNS, events: EVENTS, mutations: MUTATIONS, ...report,
    ratio_reconnect_p50: ratio('clientReconnect', 'rawReconnect'), ratio_outbox_p50: ratio('clientOutbox', 'rawOutbox') }, null, 1));
} finally {
  await stack.stop();
}
