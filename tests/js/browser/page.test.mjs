// The example page (served by the local stack at /app/, the client's minified bundle) in
// headless Chromium: live events, going offline while another member and this one make
// changes, a reload in the middle of the outbox, and the 2-hour rotation on a fake clock.
// The other member is the TypeScript client in Node; the server's word is checked over
// HTTP (GET /sync/entities/...).

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, until } from '../lib/stack.mjs';
import { member, follow, gapless, uid, slowSocket } from '../lib/clients.mjs';
import { launch, shown } from '../lib/browser.mjs';

const TIMEOUT = { timeout: 90000 };
let stack;
let browser;
let bo;
let log;

before(async () => {
  stack = await startStack();
  browser = await launch();
  // Bo follows the band from the start: his events are the channel's log to compare with.
  // His socket is the slower one (150 ms), so a comparison that waited only for the page
  // to reach bo's last seq would find bo behind the page.
  bo = member(stack, 'bo', { WebSocket: slowSocket(150) });
  log = follow(bo.client, 'band:demo');
  await log.channel.subscribe();
}, { timeout: 60000 });
// A failed test must not leave the next one offline or without tokens.
afterEach(async () => {
  await browser?.context.setOffline(false);
  await browser?.context.unrouteAll();
});
after(async () => {
  bo?.client.close();
  try {
    await browser?.close();
  } finally {
    await stack?.stop();
  }
});

/** The page as `user`, live (subscribed); `{page, device, entry}`. */
async function open(user, query = '') {
  const page = await browser.context.newPage();
  page.on('pageerror', (e) => console.error(`page error (${user}): ${e.message}`));
  await page.goto(`${stack.http}/app/?user=${user}${query}`);
  await page.waitForSelector('body[data-live="true"]');
  const ids = await page.evaluate(() => ({ device: window.bandsync.deviceId, entry: window.bandsync.entryId }));
  return { page, ...ids };
}

async function save(page, fields) {
  if (fields.title != null) await page.fill('#title', fields.title);
  if (fields.key != null) await page.fill('#key', fields.key);
  await page.click('#save');
}

const text = (page, id) => page.locator(`#${id}`).textContent();
const waitText = (page, id, value) => page.waitForFunction(([i, v]) => document.getElementById(i).textContent === v, [id, value]);

/** The page's events are the channel's log between its first and last seq: none repeated, none missed. */
async function sameAsLog(page) {
  const events = (await shown(page)).events;
  assert.ok(events.length > 0, 'the page shows events');
  assert.ok(gapless(events), `gapless, no repeat: ${events.map((e) => e.seq)}`);
  const [first, last] = [events[0].seq, events.at(-1).seq];
  // The page may have gone on since caughtUp (its own changes' events come after their
  // verdicts): bo, the slower, must reach this snapshot's last seq before comparing.
  await until(`bo at the page's last seq ${last}`, () => (log.events.at(-1)?.seq ?? 0) >= last);
  const expected = log.events.filter((e) => e.seq >= first && e.seq <= last).map((e) => [e.seq, e.event]);
  assert.deepEqual(events.map((e) => [e.seq, e.event]), expected);
  return events;
}

/**
 * Wait until the page and bo have the same last seq: the page has every event bo has,
 * and bo every event the page shows (either one's socket may be the slower).
 */
async function caughtUp(page) {
  await until('the page and bo at the same last seq', async () => {
    const seqs = await page.evaluate(() => [...document.querySelectorAll('#events li[data-seq]')].map((li) => Number(li.dataset.seq)));
    const mine = Math.max(0, ...seqs);
    return mine > 0 && mine === (log.events.at(-1)?.seq ?? 0);
  }, { timeout: 30000 });
}

/**
 * Back online: the page reconnects, its outbox empties, it shows what `ready` says it
 * must (the events of its replayed changes come after their verdicts), it catches up;
 * its events.
 */
async function backOnline(page, ready) {
  await browser.context.setOffline(false);
  await waitText(page, 'state', 'connected');
  await waitText(page, 'pending', '0');
  await until('the page shows the changes\' events', async () => ready((await shown(page)).events));
  await caughtUp(page);
  return sameAsLog(page);
}

async function boChangesThings() {
  const id = uid('bo-');
  const created = await bo.client.push({ band: 'demo', type: 'setlist_entry', id, op: 'create', baseVersion: 0, fields: { title: 'Autumn Leaves', key: 'Gm' } });
  const patched = await bo.client.push({ band: 'demo', type: 'setlist_entry', id, op: 'patch', baseVersion: created.version, fields: { key: 'Em' } });
  assert.deepEqual([created.status, patched.status], ['applied', 'applied']);
  const name = `${uid('chart-')}.txt`;
  await stack.drop(name, 'a chart');
  await until('bo sees the file sync', () => {
    const i = log.events.findIndex((e) => e.event === 'file.created' && e.data?.path === name);
    return i >= 0 && log.events.slice(i).some((e) => e.event === 'sync.completed');
  });
  return { id, name };
}

/** The entry as the server keeps it, with the (device, mid) of each version. */
async function serverEntry(id) {
  const entity = await stack.entity('setlist_entry', id);
  const history = await stack.history('setlist_entry', id);
  return { entity, writes: history.map((v) => [v.device, v.mid]) };
}

test('the page subscribes and shows a dropped file\'s events', TIMEOUT, async () => {
  const { page } = await open('alice');
  assert.equal(await text(page, 'state'), 'connected');
  const name = `${uid('chart-')}.txt`;
  await stack.drop(name, 'Blue Bossa, in C minor');
  await page.waitForSelector(`#events li[data-event="file.created"]:has-text("${name}")`);
  await caughtUp(page);
  const events = await sameAsLog(page);
  assert.equal(events.filter((e) => e.event === 'file.created' && e.text.includes(name)).length, 1);
  await page.close();
});

test('the page\'s ?ws= takes only a stack on this machine: any other address is ignored for the served one', TIMEOUT, async () => {
  for (const [ws, expected] of [
    ['ws://evil.example:8788/local', stack.ws],
    ['wss://127.0.0.1:1/local', stack.ws],
    [`ws://localhost:${new URL(stack.ws).port}/local`, `ws://localhost:${new URL(stack.ws).port}/local`],
  ]) {
    const page = await browser.context.newPage();
    const urls = [];
    page.on('websocket', (s) => urls.push(s.url().split('?')[0]));
    await page.goto(`${stack.http}/app/?user=gina&ws=${encodeURIComponent(ws)}`);
    await page.waitForSelector('body[data-live="true"]');
    assert.deepEqual([...new Set(urls)], [expected], ws);
    await page.close();
  }
});

test('offline while bo changes things and the page queues changes: back online it shows exactly what it missed, and each change is applied once', TIMEOUT, async () => {
  const { page, device, entry } = await open('carol');
  await save(page, { title: 'Blue Bossa', key: 'Cm' });
  await waitText(page, 'version', '1');

  // Chromium's offline emulation holds an open WebSocket's frames rather than closing
  // it (measured: no close event, frames delivered once back online), so the gateway
  // cuts the socket first (@connections DELETE) and the network goes before the retry.
  assert.equal(await stack.cut((c) => c.device === device), 1);
  await waitText(page, 'state', 'disconnected');
  await browser.context.setOffline(true);
  const before = (await shown(page)).events.length;

  const bos = await boChangesThings();
  await save(page, { title: 'Blue Bossa (take 2)' });
  await save(page, { key: 'C#m' });
  await waitText(page, 'pending', '2');
  const during = await shown(page);
  assert.notEqual(during.state, 'connected');
  assert.equal(during.events.length, before, 'nothing arrives while offline');

  const shows = (events, text, n) => events.filter((e) => e.text.includes(text)).length >= n;
  const events = await backOnline(page, (ev) => shows(ev, entry, 3) && shows(ev, bos.id, 2) && shows(ev, bos.name, 1));
  // Bo's two changes and the file, each once.
  assert.equal(events.filter((e) => e.text.includes(bos.id)).length, 2);
  assert.equal(events.filter((e) => e.event === 'file.created' && e.text.includes(bos.name)).length, 1);
  // The page's three saves: applied once each, in order, as the server says.
  const { entity, writes } = await serverEntry(entry);
  assert.equal(entity.version, 3);
  assert.deepEqual(entity.fields, { title: 'Blue Bossa (take 2)', key: 'C#m' });
  assert.deepEqual(writes, [[device, 1], [device, 2], [device, 3]]);
  assert.equal(events.filter((e) => e.text.includes(entry)).length, 3);
  assert.equal(await text(page, 'parked'), '0');
  await page.close();
});

test('offline first, so Chromium holds the socket\'s frames, then the gateway cuts it: what was held is dropped as duplicates, and what the page sent into the dead socket is replayed once', TIMEOUT, async () => {
  const { page, device, entry } = await open('frank');
  await save(page, { title: 'Solar', key: 'Cm' });
  await waitText(page, 'version', '1');

  // Offline emulation holds an open socket's messages, both ways, and a close that
  // comes after a held message (measured: a close with none before it goes through).
  await browser.context.setOffline(true);
  const bos = await boChangesThings();
  assert.equal(await stack.cut((c) => c.device === device), 1);
  await save(page, { key: 'C' });
  await save(page, { title: 'Solar (up)' });
  const during = await shown(page);
  assert.equal(during.state, 'connected', 'the page cannot tell: its socket looks open');
  assert.equal(during.events.filter((e) => e.text.includes(bos.id)).length, 0, 'bo\'s events are held');

  // Back online: the held events, then the close, then a resume (and the same events
  // again, which the client drops) and the outbox from its oldest entry.
  const events = await backOnline(page, (ev) => ev.filter((e) => e.text.includes(entry)).length >= 3 && ev.filter((e) => e.text.includes(bos.id)).length >= 2);
  assert.equal(events.filter((e) => e.text.includes(bos.id)).length, 2);
  const { entity, writes } = await serverEntry(entry);
  assert.equal(entity.version, 3);
  assert.deepEqual(entity.fields, { title: 'Solar (up)', key: 'C' });
  assert.deepEqual(writes, [[device, 1], [device, 2], [device, 3]]);
  await page.close();
});

test('a reload in the middle of the outbox finishes it: the queued changes come back from IndexedDB and are applied once', TIMEOUT, async () => {
  const { page, device, entry } = await open('dave');
  await save(page, { title: 'Nardis', key: 'Em' });
  await waitText(page, 'version', '1');

  // The page cannot reconnect (its getToken fails) after the gateway cut its socket.
  await browser.context.route('**/local/token', (route) => route.abort());
  await stack.cut((c) => c.device === device);
  await waitText(page, 'state', 'disconnected');
  await save(page, { title: 'Nardis (ballad)' });
  await save(page, { key: 'Gm' });
  await waitText(page, 'pending', '2');

  await page.reload();
  await waitText(page, 'pending', '2');
  assert.notEqual(await text(page, 'state'), 'connected');
  assert.equal(await page.evaluate(() => window.bandsync.deviceId), device, 'the same device after the reload');

  await browser.context.unroute('**/local/token');
  await waitText(page, 'state', 'connected');
  await waitText(page, 'pending', '0');
  const { entity, writes } = await serverEntry(entry);
  assert.equal(entity.version, 3);
  assert.deepEqual(entity.fields, { title: 'Nardis (ballad)', key: 'Gm' });
  assert.deepEqual(writes, [[device, 1], [device, 2], [device, 3]]);
  await caughtUp(page);
  await sameAsLog(page);
  await page.close();
});

test('a reload after a batch was sent and its verdict lost: the outbox from IndexedDB is sent again, the sent change answered duplicate, each change applied once', TIMEOUT, async () => {
  const page = await browser.context.newPage();
  // The page's sockets through a route that, while `deaf`, drops every push_result (the
  // server applies, the page never hears it), and records the verdicts it lets through.
  let deaf = false;
  const verdicts = [];
  await page.routeWebSocket(() => true, (ws) => {
    const server = ws.connectToServer();
    server.onMessage((m) => {
      const frame = typeof m === 'string' ? JSON.parse(m) : null;
      if (frame?.type === 'push_result') {
        if (deaf) return;
        verdicts.push(...frame.results);
      }
      ws.send(m);
    });
  });
  await page.goto(`${stack.http}/app/?user=ivy`);
  await page.waitForSelector('body[data-live="true"]');
  const { device, entry } = await page.evaluate(() => ({ device: window.bandsync.deviceId, entry: window.bandsync.entryId }));
  await save(page, { title: 'Footprints', key: 'Cm' });
  await waitText(page, 'version', '1');

  // WHEN a save is sent and applied but its verdict is lost (and the next one waits
  // behind that unanswered batch)
  deaf = true;
  await save(page, { title: 'Footprints (live)' });
  await waitText(page, 'pending', '1');
  await until('the server applied it', async () => (await serverEntry(entry)).writes.length === 2);
  await save(page, { key: 'Dm' });
  await waitText(page, 'pending', '2');
  assert.equal((await serverEntry(entry)).writes.length, 2, 'the second waits for the first one\'s verdict');

  // AND the page reloads (its outbox comes back from IndexedDB) and hears verdicts again
  const heard = verdicts.length;
  deaf = false;
  await page.reload();
  await page.waitForSelector('body[data-live="true"]');
  await waitText(page, 'pending', '0');

  // THEN the sent one is sent again and answered duplicate, the other applied, and the
  // server has each change once, in the order they were made
  const again = verdicts.slice(heard);
  assert.deepEqual(again.map((v) => v.status), ['duplicate', 'applied'], JSON.stringify(again));
  const { entity, writes } = await serverEntry(entry);
  assert.equal(entity.version, 3);
  assert.deepEqual(entity.fields, { title: 'Footprints (live)', key: 'Dm' });
  assert.deepEqual(writes, [[device, 1], [device, 2], [device, 3]]);
  assert.equal(await text(page, 'parked'), '0');
  await page.close();
});

test('the 2-hour rotation on a fake clock: a second socket while bo changes things, the first one closed with 1000, no event repeated or missed', TIMEOUT, async () => {
  const page = await browser.context.newPage();
  // Every socket of the page goes through a route: its url, the code the page closed it
  // with, and for the rotation's socket every server frame held until released, so that
  // bo's changes certainly happen while both sockets are open (the old one live, the
  // new one not yet answered).
  const sockets = [];
  let release = null;
  await page.routeWebSocket(() => true, (ws) => {
    const s = { url: ws.url(), closed: null }; // closed: the route's close code
    sockets.push(s);
    const server = ws.connectToServer();
    ws.onClose((code, reason) => {
      s.closed = code ?? null;
      server.close({ code, reason });
    });
    if (sockets.length !== 2) return; // both ways forwarded as they come
    let held = [];
    server.onMessage((m) => (held ? held.push(m) : ws.send(m)));
    release = () => {
      for (const m of held) ws.send(m);
      held = null;
    };
  });
  // The code the page's own close() names (the route's onClose reports 1006 for it).
  await page.addInitScript(() => {
    window.__closes = [];
    const close = WebSocket.prototype.close;
    WebSocket.prototype.close = function (code, reason) {
      window.__closes.push([this.url, code ?? null]);
      return close.call(this, code, reason);
    };
  });
  await page.clock.install();
  // Tokens that outlive the fast-forward, so that the 115-minute rule is what rotates.
  await page.goto(`${stack.http}/app/?user=erin&hours=3`);
  await page.waitForSelector('body[data-live="true"]');
  const device = await page.evaluate(() => window.bandsync.deviceId);
  assert.equal(sockets.length, 1);
  await boChangesThings();
  await caughtUp(page);

  // WHEN 115 minutes pass: the page opens a second socket, whose answers are held
  await page.clock.fastForward('01:55:30');
  await until('a second socket', () => sockets.length >= 2 && release, { timeout: 20000 });
  // AND bo changes things while both are open (the first one still the page's live one)
  const bos = await boChangesThings();
  await until('the page shows bo\'s changes on its first socket', async () => (await shown(page)).events.filter((e) => e.text.includes(bos.id)).length === 2);
  assert.equal(sockets[0].closed, null, 'the first socket is still open');
  release();
  await until('the first socket closed', () => sockets[0].closed != null, { timeout: 20000 });
  await boChangesThings();

  // THEN the first socket was closed by the page with 1000, one is left, the page is
  // connected on it, and it missed nothing and repeated nothing
  assert.deepEqual(await page.evaluate(() => window.__closes), [[sockets[0].url, 1000]], 'the page closed the first socket, normally, and only it');
  assert.deepEqual(sockets.map((s) => s.closed != null), [true, false], 'the second socket is open');
  assert.equal(await text(page, 'state'), 'connected');
  const conns = (await stack.connections()).filter((c) => c.device === device);
  assert.equal(conns.length, 1, 'the server has one connection of the page');
  await caughtUp(page);
  const events = await sameAsLog(page);
  assert.equal(events.filter((e) => e.text.includes(bos.id)).length, 2, 'bo\'s changes during the switch, once each');
  await page.close();
});
