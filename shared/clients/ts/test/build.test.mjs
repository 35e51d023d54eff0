// The committed artefacts are what the sources make: src/wire.gen.ts from the schema,
// dist/ from src/ (the local stack serves dist/bandsync.min.mjs without npm), and the
// browser bundle stays within the 8 KB min+gzip.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { generate, outPath } from '../scripts/gen.mjs';
import { BUDGET, size } from '../scripts/size.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));

test('src/wire.gen.ts is what `npm run gen` makes from shared/schema (run it after a schema change)', async () => {
  assert.equal(readFileSync(outPath, 'utf8'), await generate());
});

test('dist/ is what a fresh `npm run build` makes (run it and commit dist/)', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'bandsync-dist-'));
  try {
    execFileSync(process.execPath, [join(root, 'scripts/build.mjs'), tmp], { stdio: 'inherit' });
    const fresh = readdirSync(tmp).sort();
    assert.deepEqual(readdirSync(join(root, 'dist')).sort(), fresh);
    for (const f of fresh) assert.ok(readFileSync(join(tmp, f)).equals(readFileSync(join(root, 'dist', f))), `dist/${f} is stale`);
    for (const f of ['index.mjs', 'index.cjs', 'node.mjs', 'node.cjs', 'index.d.ts', 'node.d.ts', 'bandsync.min.mjs'])
      assert.ok(fresh.includes(f), `dist/${f} is missing`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test(`dist/bandsync.min.mjs is at most ${BUDGET} bytes min+gzip`, () => {
  const { min, gzip } = size();
  console.log(`bandsync.min.mjs: ${min} bytes min, ${gzip} bytes min+gzip`);
  assert.ok(gzip <= BUDGET, `${gzip} bytes min+gzip, over ${BUDGET}`);
});

test('the browser bundle names no Node module; the Node entry keeps node:fs', () => {
  for (const f of ['bandsync.min.mjs', 'index.mjs', 'index.cjs']) {
    assert.doesNotMatch(readFileSync(join(root, 'dist', f), 'utf8'), /node:|require\(/, f);
  }
  assert.match(readFileSync(join(root, 'dist/node.mjs'), 'utf8'), /from "node:fs\/promises"/);
});

test('the CJS entries load with require and export the API', async () => {
  const { createRequire } = await import('node:module');
  const require = createRequire(import.meta.url);
  const main = require('../dist/index.cjs');
  for (const name of ['BandsyncClient', 'Channel', 'UnauthorizedError', 'FrameTooLargeError', 'memoryStorage', 'localStorageStorage', 'indexedDbStorage'])
    assert.equal(typeof main[name], 'function', name);
  assert.equal(typeof require('../dist/node.cjs').fileStorage, 'function');
  const esm = await import('../dist/index.mjs');
  assert.deepEqual(Object.keys(esm).sort(), Object.keys(main).sort());
});
