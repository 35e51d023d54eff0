// The TypeScript client in Node against the real local stack (the binary, not a fake):
// live events, verdicts, the offline queue after a cut, a reload finishing the outbox,
// and a mutation too large for API Gateway refused before it leaves.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { startStack, until } from '../lib/stack.mjs';
import { member, follow, gapless, uid, fileStorage, deafToVerdicts, FrameTooLargeError } from '../lib/clients.mjs';

const TIMEOUT = { timeout: 60000 };
let stack;
const open = [];
/** A member whose client is closed after the test file. */
const make = (...args) => { const m = member(stack, ...args); open.push(m.client); return m; };

before(async () => { stack = await startStack(); }, { timeout: 60000 });
after(async () => {
  for (const c of open) c.close();
  await stack?.stop();
});

const entry = (id, op, baseVersion, fields) => ({ band: 'demo', type: 'setlist_entry', id, op, baseVersion, fields });

test('subscribe, then a file dropped in the watched folder arrives as its events, in order, once', TIMEOUT, async () => {
  const alice = make('alice');
  const band = follow(alice.client, 'band:demo');
  await band.channel.subscribe();
  assert.equal(alice.state(), 'connected');

  const name = `${uid('chart-')}.txt`;
  await stack.drop(name, 'Blue Bossa, in C minor');
  const created = await until('file.created and sync.completed', () => {
    const i = band.events.findIndex((e) => e.event === 'file.created' && e.data?.path === name);
    return i >= 0 && band.events.slice(i).some((e) => e.event === 'sync.completed') && band.events[i];
  });
  assert.equal(created.data.size, 'Blue Bossa, in C minor'.length);
  assert.ok(created.data.file_id, 'the file has an id');
  assert.ok(gapless(band.events), `gapless: ${band.events.map((e) => e.seq)}`);
  assert.equal(band.events.filter((e) => e.event === 'file.created' && e.data?.path === name).length, 1);
});

test('push a create then a patch on its version: both applied, as the server keeps them', TIMEOUT, async () => {
  const alice = make('alice');
  const id = uid('e');
  const created = await alice.client.push(entry(id, 'create', 0, { title: 'Blue Bossa', key: 'Cm' }));
  assert.equal(created.status, 'applied');
  assert.equal(created.version, 1);
  const patched = await alice.client.push(entry(id, 'patch', created.version, { key: 'C#m' }));
  assert.equal(patched.status, 'applied');
  assert.equal(patched.version, 2);
  assert.equal(patched.mid, created.mid + 1, 'mids count up by one');

  const stored = await stack.entity('setlist_entry', id);
  assert.equal(stored.version, 2);
  assert.deepEqual(stored.fields, { title: 'Blue Bossa', key: 'C#m' });
  // The verdict events carry the same results.
  assert.deepEqual(alice.verdicts.map((v) => [v.mid, v.result.status]), [[created.mid, 'applied'], [patched.mid, 'applied']]);
  assert.deepEqual(alice.client.pending(), []);
});

test('changes queued while the socket is cut (@connections DELETE) are replayed after the reconnect, each applied once', TIMEOUT, async () => {
  const alice = make('alice');
  const band = follow(alice.client, 'band:demo');
  await band.channel.subscribe();
  const id = uid('e');
  const created = await alice.client.push(entry(id, 'create', 0, { title: 'So What', key: 'Dm' }));
  assert.equal(created.status, 'applied');

  // WHEN the gateway cuts the socket and the member makes five changes before it is back
  assert.equal(await stack.cut((c) => c.device === alice.device), 1);
  await until('disconnected', () => alice.state() === 'disconnected');
  const pushes = [1, 2, 3, 4, 5].map((n) => alice.client.push(entry(id, 'patch', created.version, { title: `So What (take ${n})` })));
  assert.equal(alice.client.pending().length, 5, 'queued while disconnected');

  // THEN after the reconnect every one has its verdict, and the server applied each once
  const results = await Promise.all(pushes);
  assert.deepEqual(results.map((r) => r.status).filter((s) => s !== 'applied' && s !== 'merged'), []);
  assert.deepEqual(alice.client.pending(), []);
  const stored = await stack.entity('setlist_entry', id);
  assert.equal(stored.version, 6);
  assert.equal(stored.fields.title, 'So What (take 5)');
  const mids = (await stack.history('setlist_entry', id)).map((v) => v.mid);
  assert.deepEqual(mids, [created.mid, ...results.map((r) => r.mid)]);
  assert.deepEqual(results.map((r) => r.mid), [1, 2, 3, 4, 5].map((n) => created.mid + n));

  // AND the channel resumed with no gap: each change's event came once
  await until('the five events', () => band.events.filter((e) => e.data?.id === id).length >= 6);
  assert.deepEqual(band.events.filter((e) => e.data?.id === id).map((e) => e.data.version), [1, 2, 3, 4, 5, 6]);
  assert.ok(gapless(band.events), `gapless: ${band.events.map((e) => e.seq)}`);
  const seen = alice.states.map((s) => s.current);
  assert.deepEqual(seen.slice(seen.indexOf('disconnected')), ['disconnected', 'connecting', 'connected']);
});

test('a reload (a new client on the same file storage) finishes the outbox: lost acks answer duplicate, unsent ones apply', TIMEOUT, async () => {
  const path = join(stack.dir, `${uid('outbox-')}.json`);
  const device = uid('node-reload-');
  const id = uid('e');
  // GIVEN a client whose acks are lost: the server applies, the client keeps them pending
  const first = make('alice', { device, storage: fileStorage(path), WebSocket: deafToVerdicts() });
  const sent = [entry(id, 'create', 0, { title: 'Nardis', key: 'Em' }),
    ...[1, 2, 3, 4].map((n) => entry(id, 'patch', 1, { key: `E${'m'.repeat(n)}` }))];
  for (const m of sent) first.client.push(m).catch(() => {});
  await until('the server applied all five', async () => (await stack.entity('setlist_entry', id))?.version === 5);
  assert.equal(first.client.pending().length, 5, 'no ack arrived');
  // AND two more made while its socket is cut, never sent
  await stack.cut((c) => c.device === device);
  await until('disconnected', () => first.state() === 'disconnected');
  first.client.push(entry(id, 'patch', 5, { title: 'Nardis (ballad)' })).catch(() => {});
  first.client.push(entry(id, 'patch', 5, { key: 'Gm' })).catch(() => {});
  assert.equal(first.client.pending().length, 7);
  // WHEN the page goes away before the retry (sockets gone, storage kept)
  first.client.close();
  await until('the outbox is on disk', async () => {
    const text = await readFile(path, 'utf8');
    return text.includes('outbox:7');
  });

  // THEN the next client of that device sends what is left and hears every verdict
  const second = make('alice', { device, storage: fileStorage(path) });
  second.client.connect();
  await until('seven verdicts', () => second.verdicts.length >= 7, { timeout: 20000 });
  assert.deepEqual(second.verdicts.map((v) => v.mid), [1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(second.verdicts.slice(0, 5).map((v) => [v.result.status, v.result.original_status]),
    Array(5).fill(['duplicate', 'applied']));
  assert.deepEqual(second.verdicts.slice(5).map((v) => v.result.status), ['applied', 'applied']);
  assert.deepEqual(second.client.pending(), []);
  const stored = await stack.entity('setlist_entry', id);
  assert.equal(stored.version, 7);
  assert.deepEqual(stored.fields, { title: 'Nardis (ballad)', key: 'Gm' });
  const history = await stack.history('setlist_entry', id);
  assert.deepEqual(history.map((v) => [v.device, v.mid]), [1, 2, 3, 4, 5, 6, 7].map((m) => [device, m]));
});

test('a mutation whose frame would pass 32 KB is refused locally: no mid taken, the socket stays', TIMEOUT, async () => {
  const alice = make('alice');
  const id = uid('e');
  const first = await alice.client.push(entry(id, 'create', 0, { title: 'Footprints' }));
  assert.equal(first.status, 'applied');
  const big = entry(id, 'patch', 1, { notes: 'x'.repeat(33 * 1024) });
  await assert.rejects(alice.client.push(big), (err) => {
    assert.ok(err instanceof FrameTooLargeError, `a FrameTooLargeError: ${err}`);
    assert.equal(err.code, 'frame_too_large');
    return true;
  });
  assert.deepEqual(alice.client.pending(), []);
  // The next change takes the next mid, on the same socket (no 1009 from the gateway).
  const next = await alice.client.push(entry(id, 'patch', 1, { key: 'Eb' }));
  assert.equal(next.status, 'applied');
  assert.equal(next.mid, first.mid + 1);
  assert.equal(alice.state(), 'connected');
  assert.equal(alice.states.filter((s) => s.current === 'disconnected').length, 0);
  assert.equal((await stack.entity('setlist_entry', id)).fields.notes, undefined);
});
