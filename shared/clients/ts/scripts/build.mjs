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

// The browser bundle's budget (8 KB min+gzip): the private members of the core and the
// driver get short names there. Only names that no wire frame, option, DOM or public API
// uses (`now`, `open`, `remove`, `push`, `subscribe`, `device`, ... stay).
const PRIVATE = new RegExp(
  '^(_fire|_feed|_promise|_cursor|fx|main|rot|nextSock|fails|refusals|since|floor|waiting|hidden|hiddenClosed|watchdogAt|cursors|dirty|outbox|midNext|parkedList|localNext|batch|rateLimited|presenceWaiters|rotFails|tries|laters|emit|timer|cancel|persist|settle|closeSock|setState|input|sock|watchdog|attempt|onToken|onOpen|register|resumeAll|resume|connected|arm|delay|teardown|lost|fail|onTimer|redial|wait|later|ping|onEnv|rotationFailed|maybeSwitch|onFrame|answering|answered|onEvent|deliver|advance|drain|gap|onError|onState|frameSize|flush|onResults|verdict|batchError|parkLocal|renumber|phase|awaiting|lastSend|held|loading|live|waiters|core|early|busy|sockets|timers|tags|cursorWrites|listening|broken|waitLock|unlock|listen|perform|writeCursor|run|ls|chans|client|opts|rnd|settleAll|release|closed|reset|writes|written|writeOut|nextTag)$',
);
// Class fields as constructor assignments in the browser bundle: the declarations ES2022
// would emit (`url;opts;...`) keep their long names and cost bytes for nothing.
const common = { bundle: true, target: 'es2022', legalComments: 'none', logLevel: 'warning', absWorkingDir: root };
const jobs = [];
for (const format of ['esm', 'cjs']) {
  const ext = format === 'esm' ? 'mjs' : 'cjs';
  jobs.push(build({ ...common, entryPoints: ['src/index.ts'], format, platform: 'neutral', outfile: `${out}/index.${ext}` }));
  jobs.push(build({ ...common, entryPoints: ['src/node.ts'], format, platform: 'node', outfile: `${out}/node.${ext}` }));
}
jobs.push(
  build({ ...common, entryPoints: ['src/index.ts'], format: 'esm', platform: 'browser', minify: true, mangleProps: PRIVATE, tsconfigRaw: { compilerOptions: { useDefineForClassFields: false } }, outfile: `${out}/bandsync.min.mjs` }),
);
await Promise.all(jobs);

const tsc = fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url));
execFileSync(process.execPath, [tsc, '-p', root, '--emitDeclarationOnly', '--outDir', out], { stdio: 'inherit' });
