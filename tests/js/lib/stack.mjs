// The real local stack for a test: the `bandsync-local` binary (built beforehand by
// `cargo build -p bandsync-local`; this builds nothing) on free loopback ports, with a
// temp data dir and watched folder, up once /sync/health answers, killed after.

import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile, rename, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** The binary: $BANDSYNC_LOCAL_BIN, else the target dir's debug build. */
export function stackBinary() {
  const candidates = [
    process.env.BANDSYNC_LOCAL_BIN,
    process.env.CARGO_TARGET_DIR && join(process.env.CARGO_TARGET_DIR, 'debug/bandsync-local'),
    join(REPO, 'target/debug/bandsync-local'),
  ].filter(Boolean);
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new Error(`no bandsync-local binary (looked at ${candidates.join(', ')}): run \`cargo build -p bandsync-local\` or set BANDSYNC_LOCAL_BIN`);
  }
  return found;
}

async function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

/** Poll `probe` every `every` ms until it returns something truthy; fail after `timeout`. */
export async function until(what, probe, { timeout = 15000, every = 50 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (e) {
      if (e.fatal) throw e;
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Start a stack; `await stack.stop()` when done (a test's `after`). */
export async function startStack({ band = 'demo' } = {}) {
  const bin = stackBinary(); // before any temp dir: a missing binary leaves nothing behind
  const dir = await mkdtemp(join(tmpdir(), 'bandsync-js-'));
  const [httpPort, wsPort] = [await freePort(), await freePort()];
  const folder = join(dir, 'folder');
  await mkdir(folder, { recursive: true });
  // Only what this test sets: a developer's BANDSYNC_* variables must not leak in.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BANDSYNC_')));
  env.RUST_LOG = process.env.BANDSYNC_TEST_LOG ?? 'warn';
  const child = spawn(bin, [
    '--http-addr', `127.0.0.1:${httpPort}`,
    '--ws-addr', `127.0.0.1:${wsPort}`,
    '--data-dir', join(dir, 'data'),
    '--folder', folder,
    '--band', band,
  ], { cwd: dir, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-20000); });
  let exited = null;
  child.once('exit', (code, signal) => { exited = { code, signal }; });
  const kill = () => { if (!exited) child.kill('SIGKILL'); };
  // However this test process ends (a timeout's SIGTERM too), the stack goes with it.
  const killAndExit = () => { kill(); process.exit(1); };
  process.once('exit', kill);
  process.once('SIGTERM', killAndExit);
  process.once('SIGINT', killAndExit);

  const http = `http://127.0.0.1:${httpPort}`;
  try {
    await until('the stack to answer /sync/health', async () => {
      if (exited) throw Object.assign(new Error(`the stack exited (${JSON.stringify(exited)}): ${stderr}`), { fatal: true });
      const r = await fetch(`${http}/sync/health`);
      return r.ok;
    }, { timeout: 30000, every: 100 });
    // A binary built before the dev token route (or a newer one's change to it) would
    // leave every test waiting for a connection that never comes: say so at once.
    const probe = await fetch(`${http}/local/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: 'probe', band }),
      signal: AbortSignal.timeout(5000),
    }).then(async (r) => (r.ok && (await r.json()).token ? null : `${r.status} ${await r.text().catch(() => '')}`), (e) => e.message);
    if (probe) {
      throw new Error(`${bin} answers /sync/health but not POST /local/token (${probe}): a stale binary? rebuild bandsync-local (cargo build -p bandsync-local)`);
    }
  } catch (e) {
    kill();
    await rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    throw new Error(`${e.message}\n${stderr}`);
  }

  const stack = {
    dir,
    folder,
    band,
    http,
    ws: `ws://127.0.0.1:${wsPort}/local`,
    management: `http://127.0.0.1:${wsPort}/local`,
    get stderr() { return stderr; },

    /** A member token from the stack's dev route (what the example page's getToken does). */
    async token(user, { band: b = band, hours, seconds } = {}) {
      const r = await fetch(`${http}/local/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user, band: b, hours, seconds }),
      });
      if (!r.ok) throw new Error(`POST /local/token: ${r.status} ${await r.text()}`);
      return (await r.json()).token;
    },

    /** GET on the HTTP API as `user`: [status, JSON body]. */
    async get(path, user = 'alice') {
      const r = await fetch(`${http}${path}`, { headers: { authorization: `Bearer ${await stack.token(user)}` } });
      return [r.status, await r.json().catch(() => null)];
    },

    /** The entity as the server has it (null when it has none). */
    async entity(type, id) {
      const [status, body] = await stack.get(`/sync/entities/${type}/${id}?band=${band}`);
      if (status === 404) return null;
      if (status !== 200) throw new Error(`GET entity ${type}/${id}: ${status} ${JSON.stringify(body)}`);
      return body;
    },

    /** Every version of the entity, oldest first. */
    async history(type, id) {
      const versions = [];
      let after = 0;
      for (;;) {
        const [status, body] = await stack.get(`/sync/entities/${type}/${id}/history?band=${band}&after=${after}`);
        if (status !== 200) throw new Error(`GET history ${type}/${id}: ${status} ${JSON.stringify(body)}`);
        versions.push(...body.versions);
        if (body.next == null) return versions;
        after = body.next;
      }
    },

    /** The open sockets: [{id, user, device, connected_at}], oldest first. */
    async connections() {
      const r = await fetch(`${http}/local/connections`);
      if (!r.ok) throw new Error(`GET /local/connections: ${r.status}`);
      return (await r.json()).connections;
    },

    /** Cut sockets as API Gateway's @connections DELETE does (the client sees 1000). */
    async cut(filter) {
      const open = (await stack.connections()).filter(filter);
      for (const c of open) {
        const r = await fetch(`${stack.management}/@connections/${encodeURIComponent(c.id)}`, { method: 'DELETE' });
        if (r.status !== 204 && r.status !== 410) throw new Error(`DELETE @connections/${c.id}: ${r.status}`);
      }
      return open.length;
    },

    /** Write a file into the watched folder whole (a hidden temp file renamed into place). */
    async drop(name, content) {
      const tmp = join(folder, `.${name}.tmp`);
      await writeFile(tmp, content);
      await rename(tmp, join(folder, name));
    },

    async stop() {
      process.removeListener('exit', kill);
      process.removeListener('SIGTERM', killAndExit);
      process.removeListener('SIGINT', killAndExit);
      if (!exited) {
        const gone = new Promise((r) => child.once('exit', r));
        child.kill('SIGINT');
        const timer = setTimeout(kill, 3000);
        await gone;
        clearTimeout(timer);
      }
      await rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    },
  };
  return stack;
}
