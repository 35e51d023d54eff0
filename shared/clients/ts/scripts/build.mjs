// Builds dist/ (or the folder given as the first argument, which the freshness test
// uses): ESM and CJS bundles of both entries, the minified browser bundle, and the type
// declarations. Deterministic: the same sources give the same bytes.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = process.argv[2] ?? root + 'dist';

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const common = { bundle: true, target: 'es2022', legalComments: 'none', logLevel: 'warning', absWorkingDir: root };
const jobs = [];
for (const format of ['esm', 'cjs']) {
  const ext = format === 'esm' ? 'mjs' : 'cjs';
  jobs.push(build({ ...common, entryPoints: ['src/index.ts'], format, platform: 'neutral', outfile: `${out}/index.${ext}` }));
  jobs.push(build({ ...common, entryPoints: ['src/node.ts'], format, platform: 'node', outfile: `${out}/node.${ext}` }));
}
jobs.push(
  build({ ...common, entryPoints: ['src/index.ts'], format: 'esm', platform: 'browser', minify: true, outfile: `${out}/bandsync.min.mjs` }),
);
await Promise.all(jobs);

const tsc = fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url));
execFileSync(process.execPath, [tsc, '-p', root, '--emitDeclarationOnly', '--outDir', out], { stdio: 'inherit' });
