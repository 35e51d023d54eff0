// `@bandsync/client/node`: storage for Node, kept out of the main entry so the browser
// bundle never names `node:fs`.
import { readFile, rename, writeFile } from 'node:fs/promises';
import type { Storage } from './storage';

export type { Storage };

/**
 * One JSON file. Writes go to `<path>.tmp` and are renamed over the file, so a crash
 * leaves the old or the new content, never half of one; changes made while a write is
 * under way go out together in the next one (and a failed write does not stop later ones).
 */
export function fileStorage(path: string): Storage {
  let data: Record<string, unknown> = {};
  let chain: Promise<void> = Promise.resolve();
  let next: Promise<void> | undefined;
  const save = () =>
    (next ??= chain = chain.catch(() => {}).then(async () => {
      next = undefined;
      await writeFile(path + '.tmp', JSON.stringify(data));
      await rename(path + '.tmp', path);
    }));
  return {
    async load() {
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (e) {
        if ((e as { code?: string }).code !== 'ENOENT') throw e;
        return (data = {});
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch (e) {
        throw new Error(`${path} is not JSON (${(e as Error).message}): the client's storage file is damaged`);
      }
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error(`${path} holds no JSON object: the client's storage file is damaged`);
      data = parsed as Record<string, unknown>;
      return { ...data };
    },
    set(k, v) {
      data[k] = JSON.parse(JSON.stringify(v));
      return save();
    },
    remove(k) {
      delete data[k];
      return save();
    },
    // One rename: all of it or none.
    write(sets, removes) {
      for (const k in sets) data[k] = JSON.parse(JSON.stringify(sets[k]));
      for (const k of removes) delete data[k];
      return save();
    },
  };
}
