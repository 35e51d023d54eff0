// Debian's Chromium (never a downloaded browser build), driven by playwright-core, with a
// fresh user-data dir per launch.

import { chromium } from 'playwright-core';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CHROMIUM = process.env.BANDSYNC_CHROMIUM ?? '/usr/bin/chromium';

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** `{context, close}`: a persistent context on a new profile (IndexedDB starts empty). */
export async function launch() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: install Debian's \`chromium\` (infra/js-test.sh does) or set BANDSYNC_CHROMIUM`);
  }
  const profile = await mkdtemp(join(tmpdir(), 'bandsync-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    timeout: 30000,
  });
  context.setDefaultTimeout(20000);
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      // Chromium's helper processes may still be writing to the profile as it goes.
      await rm(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 }).catch(() => {});
    },
  };
}

/** What the example page shows: the connection state, the events' seqs and names, the counts. */
export async function shown(page) {
  return page.evaluate(() => ({
    state: document.getElementById('state').textContent,
    pending: Number(document.getElementById('pending').textContent),
    parked: Number(document.getElementById('parked').textContent),
    version: Number(document.getElementById('version').textContent),
    events: [...document.querySelectorAll('#events li[data-seq]')].map((li) => ({ seq: Number(li.dataset.seq), event: li.dataset.event, text: li.textContent })),
  }));
}
