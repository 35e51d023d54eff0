// Prints the browser bundle's size, minified and minified + gzip (the budget: 8 KB).
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

export const BUDGET = 8192;
export function size(path = new URL('../dist/bandsync.min.mjs', import.meta.url)) {
  const min = readFileSync(path);
  return { min: min.length, gzip: gzipSync(min, { level: 9 }).length };
}

if (process.argv[1] === new URL(import.meta.url).pathname) {
  const { min, gzip } = size();
  console.log(`dist/bandsync.min.mjs: ${min} bytes min, ${gzip} bytes min+gzip (budget ${BUDGET})`);
}
