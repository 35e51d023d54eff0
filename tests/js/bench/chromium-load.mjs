// A measurement, not a test (`npm run bench` in tests/js; the stack binary built first):
// the TypeScript client in headless Chromium holding 10 channels while another member's
// changes make events on them, for a minute. Prints the page's JS heap and main-thread
// CPU (Chrome's own Performance metrics), the events received and that each channel's
// seqs were gapless. Options: --seconds 60 --rate 100 (events/s over all channels).

import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { startStack, stackBinary, until, sleep } from '../lib/stack.mjs';
import { BandsyncClient, memoryStorage } from '../lib/clients.mjs';
import { launch } from '../lib/browser.mjs';

const arg = (name, d) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : d;
};
const SECONDS = arg('seconds', 60);
const RATE = arg('rate', 100);
const BANDS = ['demo', ...Array.from({ length: 9 }, (_, i) => `load${i + 1}`)];

const step = (what) => console.error(`[bench] ${what}`);
const stack = await startStack();
const browser = await launch();
let producer;

try {
  // The nine other bands, registered as an operator would; one token for all ten.
  const cli = (...args) => execFileSync(stackBinary(), ['--data-dir', join(stack.dir, 'data'), ...args], { encoding: 'utf8' }).trim();
  const admin = cli('token', '--admin', '--user', 'ops');
  for (const band of BANDS.slice(1)) {
    const r = await fetch(`${stack.http}/sync/bands/${band}`, { method: 'PUT', headers: { authorization: `Bearer ${admin}` }, body: '{}' });
    if (!r.ok) throw new Error(`PUT /sync/bands/${band}: ${r.status} ${await r.text()}`);
  }
  step('bands registered');
  const tokenFor = (user) => cli('token', '--user', user, '--band', BANDS.join(','));

  // The page: the served bundle, ten channels, nothing drawn (the client's cost alone).
  const page = await browser.context.newPage();
  // A document of the stack's own origin (a page fulfilled by a route counts as a public
  // one, and Chromium's local network access checks then block its loopback socket).
  await page.goto(`${stack.http}/sync/health`);
  page.on('console', (m) => console.error(`[page] ${m.text()}`));
  const pageToken = tokenFor('alice');
  await page.evaluate(async ({ ws, token, bands }) => {
    const { BandsyncClient, memoryStorage } = await import('/app/bandsync.min.mjs');
    const client = new BandsyncClient(ws, { getToken: async () => token, storage: memoryStorage() });
    client.on('error', (e) => console.log('error', JSON.stringify(e)));
    window.counts = {};
    window.gaps = 0;
    for (const band of bands) {
      const name = `band:${band}`;
      const channel = client.channel(name);
      let last = null;
      window.counts[name] = 0;
      channel.on('event', (e) => {
        if (last !== null && e.seq !== last + 1) window.gaps++;
        last = e.seq;
        window.counts[name]++;
      });
      await channel.subscribe();
    }
    window.client = client;
  }, { ws: stack.ws, token: pageToken, bands: BANDS });

  step('the page holds ten channels');
  // The producer: bo's client in Node, RATE patches a second spread over the bands.
  const boToken = tokenFor('bo');
  const bo = new BandsyncClient(stack.ws, {
    getToken: async () => boToken,
    device: { id: 'bench-producer', platform: 'desktop', name: 'bench', categories: null },
    storage: memoryStorage(),
  });
  producer = bo;
  for (const band of BANDS) {
    const r = await bo.push({ band, type: 'setlist_entry', id: 'load', op: 'create', baseVersion: 0, fields: { title: 'load', position: 0 } });
    if (r.status !== 'applied') throw new Error(`create on ${band}: ${JSON.stringify(r)}`);
  }
  await until('the page has the ten creates', () => page.evaluate(() => Object.values(window.counts).reduce((a, b) => a + b, 0) >= 10));

  step('creates seen');
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  const metrics = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
  await cdp.send('HeapProfiler.collectGarbage');
  const before = await metrics();
  const startCounts = await page.evaluate(() => ({ ...window.counts }));
  const heapSamples = [];

  const t0 = Date.now();
  let sent = 0;
  const verdicts = [];
  while (Date.now() - t0 < SECONDS * 1000) {
    const due = Math.floor(((Date.now() - t0) / 1000) * RATE);
    while (sent < due) {
      const band = BANDS[sent % BANDS.length];
      verdicts.push(bo.push({ band, type: 'setlist_entry', id: 'load', op: 'patch', baseVersion: 1, fields: { position: sent } }));
      sent++;
    }
    if (sent % RATE < BANDS.length) heapSamples.push((await metrics()).JSHeapUsedSize);
    await sleep(20);
  }
  step(`pushed ${sent}`);
  const results = await Promise.all(verdicts);
  step('verdicts in');
  const expected = sent;
  await until('the page has every event', async () => {
    const counts = await page.evaluate(() => window.counts);
    const got = Object.keys(counts).reduce((a, k) => a + counts[k] - startCounts[k], 0);
    return got >= expected;
  }, { timeout: 60000 });
  const elapsed = (Date.now() - t0) / 1000;
  const after = await metrics();
  await cdp.send('HeapProfiler.collectGarbage');
  const afterGc = await metrics();
  const { counts, gaps } = await page.evaluate(() => ({ counts: window.counts, gaps: window.gaps }));
  const got = Object.keys(counts).reduce((a, k) => a + counts[k] - startCounts[k], 0);
  const mb = (b) => `${(b / 1048576).toFixed(2)} MB`;
  const cpu = (k) => after[k] - before[k];
  console.log(JSON.stringify({
    channels: BANDS.length,
    seconds: SECONDS,
    rate_per_s: RATE,
    pushed: sent,
    applied: results.filter((r) => r.status === 'applied' || r.status === 'merged').length,
    events_received: got,
    gaps,
    heap_used_before_gc: mb(before.JSHeapUsedSize),
    heap_used_peak: mb(Math.max(...heapSamples, after.JSHeapUsedSize)),
    heap_used_after_gc: mb(afterGc.JSHeapUsedSize),
    main_thread_busy: `${((cpu('TaskDuration') / elapsed) * 100).toFixed(2)} %`,
    script_time: `${((cpu('ScriptDuration') / elapsed) * 100).toFixed(2)} %`,
    elapsed_s: elapsed.toFixed(1),
  }, null, 2));
  if (gaps > 0 || got !== expected) process.exitCode = 1;
} finally {
  producer?.close();
  await browser.close();
  await stack.stop();
}
