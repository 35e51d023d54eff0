// The storages: memory, localStorage (with a fake one; the real one and IndexedDB are
// exercised in the browser test of tests/js), and the JSON file for Node.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { localStorageStorage, memoryStorage } from '../dist/index.mjs';
import { fileStorage } from '../dist/node.mjs';

test('memoryStorage keeps copies: a caller changing a value does not change what is stored', async () => {
  const s = memoryStorage({ 'mid:next': 3 });
  const v = { mid: 3, band: 'demo' };
  s.set('outbox:3', v);
  v.band = 'other';
  const got = await s.load();
  assert.deepEqual(got, { 'mid:next': 3, 'outbox:3': { mid: 3, band: 'demo' } });
  got['outbox:3'].mid = 9;
  s.remove('mid:next');
  assert.deepEqual(await s.load(), { 'outbox:3': { mid: 3, band: 'demo' } });
});

function fakeLocalStorage() {
  const m = new Map();
  return {
    get length() {
      return m.size;
    },
    key: (i) => [...m.keys()][i] ?? null,
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => m.set(k, String(v)),
    removeItem: (k) => m.delete(k),
    m,
  };
}

test('localStorageStorage reads only its prefix and skips a damaged value', () => {
  const ls = fakeLocalStorage();
  ls.setItem('other:mid:next', '7');
  ls.setItem('bs:broken', '{not json');
  const s = localStorageStorage('bs:', ls);
  s.set('cursor:band:demo', { epoch: 'e1', seq: 4 });
  s.set('mid:next', 2);
  s.remove('mid:next');
  assert.equal(ls.getItem('bs:cursor:band:demo'), '{"epoch":"e1","seq":4}');
  assert.deepEqual(s.load(), { 'cursor:band:demo': { epoch: 'e1', seq: 4 } });
});

test('fileStorage: a missing file is empty; writes survive a new instance; no temporary file is left', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bandsync-file-'));
  try {
    const path = join(dir, 'client.json');
    const a = fileStorage(path);
    assert.deepEqual(await a.load(), {});
    // Many changes at once: the last of each key wins, in one or a few writes.
    const writes = [];
    for (let i = 1; i <= 50; i++) writes.push(a.set(`outbox:${i}`, { mid: i }), a.set('mid:next', i + 1));
    writes.push(a.remove('outbox:1'));
    await Promise.all(writes);
    const b = fileStorage(path);
    const got = await b.load();
    assert.equal(got['mid:next'], 51);
    assert.equal(got['outbox:1'], undefined);
    assert.deepEqual(got['outbox:50'], { mid: 50 });
    assert.equal(Object.keys(got).length, 50);
    assert.deepEqual(readdirSync(dir), ['client.json']);
    await b.set('parked:l1', { key: 'l1' });
    assert.deepEqual(JSON.parse(readFileSync(path, 'utf8'))['parked:l1'], { key: 'l1' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('fileStorage: a damaged file is a clear error, not an empty start', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bandsync-file-'));
  try {
    const path = join(dir, 'client.json');
    writeFileSync(path, '{"mid:next": 4');
    await assert.rejects(fileStorage(path).load(), /client\.json is not JSON .*damaged/);
    writeFileSync(path, '[1, 2]');
    await assert.rejects(fileStorage(path).load(), /holds no JSON object/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('fileStorage: a failed write is reported and does not stop the next one', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bandsync-file-'));
  try {
    const path = join(dir, 'sub', 'client.json');
    const s = fileStorage(path);
    await s.load();
    await assert.rejects(s.set('mid:next', 2), { code: 'ENOENT' });
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(dir, 'sub'));
    await s.set('mid:next', 3);
    assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), { 'mid:next': 3 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('write(sets, removes): memory, localStorage and the file apply all of it (the file in one rename)', async () => {
  const sets = { 'outbox:1': { mid: 1 }, 'mid:next': 2 };
  const m = memoryStorage({ 'outbox:2': { mid: 2 } });
  m.write(sets, ['outbox:2']);
  assert.deepEqual(await m.load(), sets);
  const ls = fakeLocalStorage();
  ls.setItem('bs:outbox:2', '{}');
  const l = localStorageStorage('bs:', ls);
  l.write(sets, ['outbox:2']);
  assert.deepEqual(l.load(), sets);
  const dir = mkdtempSync(join(tmpdir(), 'bandsync-file-'));
  try {
    const path = join(dir, 'client.json');
    const f = fileStorage(path);
    await f.load();
    await f.set('outbox:2', { mid: 2 });
    await f.write(sets, ['outbox:2']);
    assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), sets);
    assert.deepEqual(readdirSync(dir), ['client.json']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('indexedDbStorage: one strict transaction per write, and a connection the browser closed is opened again', async () => {
  // A small IndexedDB: enough for open, transactions, put/delete and getAll.
  const data = new Map();
  const txs = [];
  let opens = 0;
  const later = (r, result) => queueMicrotask(() => ((r.result = result), r.onsuccess?.()));
  const db = () => ({
    transaction(store, mode, opts) {
      const t = { mode, opts, ops: [] };
      txs.push(t);
      const s = {
        put: (v, k) => t.ops.push(['put', k]) && data.set(k, v),
        delete: (k) => t.ops.push(['delete', k]) && data.delete(k),
        getAllKeys: () => ((r) => (later(r, [...data.keys()]), r))({}),
        getAll: () => ((r) => (later(r, [...data.values()]), r))({}),
      };
      t.objectStore = () => s;
      queueMicrotask(() => t.oncomplete?.());
      return t;
    },
    close() {},
  });
  const dbs = [];
  globalThis.indexedDB = {
    open() {
      opens++;
      const r = {};
      const d = db();
      dbs.push(d);
      later(r, d);
      return r;
    },
  };
  try {
    const { indexedDbStorage } = await import('../dist/index.mjs');
    const s = indexedDbStorage('t');
    assert.deepEqual(await s.load(), {});
    await s.write({ 'outbox:1': { mid: 1 }, 'mid:next': 2 }, ['outbox:9']);
    const t = txs.at(-1);
    assert.deepEqual(t.ops, [['put', 'outbox:1'], ['put', 'mid:next'], ['delete', 'outbox:9']]);
    assert.deepEqual([t.mode, t.opts], ['readwrite', { durability: 'strict' }]);
    assert.equal(opens, 1);
    dbs[0].onclose();
    await s.set('mid:next', 3);
    assert.equal(opens, 2, 'the closed connection was used again');
    assert.deepEqual(await s.load(), { 'outbox:1': { mid: 1 }, 'mid:next': 3 });
  } finally {
    delete globalThis.indexedDB;
  }
});
