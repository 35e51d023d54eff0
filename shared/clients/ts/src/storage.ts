// Where cursors, the outbox and parked mutations live between page loads. Values are
// JSON; `set` and `remove` may be synchronous (memory, localStorage) or return a
// promise the client waits for before it sends anything after them.
export interface Storage {
  load(): Record<string, unknown> | Promise<Record<string, unknown>>;
  set(key: string, value: unknown): void | Promise<void>;
  remove(key: string): void | Promise<void>;
  /** All of `sets` and `removes` or none of them (renumbering; an outbox entry and
   * `mid:next`). Without it the client writes one key after another. */
  write?(sets: Record<string, unknown>, removes: string[]): void | Promise<void>;
}

/** A storage's write() made of its own set/remove, when those are synchronous. */
const each = (s: Pick<Storage, 'set' | 'remove'>) => (sets: Record<string, unknown>, removes: string[]) => {
  for (const k in sets) void s.set(k, sets[k]);
  for (const k of removes) void s.remove(k);
};

/** Kept in memory: gone with the page or process (tests, short-lived scripts). */
export function memoryStorage(initial: Record<string, unknown> = {}): Storage {
  // Stored as text, so a caller cannot change a stored value by holding on to it.
  const m = new Map(Object.entries(initial).map(([k, v]) => [k, JSON.stringify(v)]));
  const s: Storage = {
    load: () => Object.fromEntries([...m].map(([k, v]) => [k, JSON.parse(v)])),
    set: (k, v) => void m.set(k, JSON.stringify(v)),
    remove: (k) => void m.delete(k),
  };
  s.write = each(s);
  return s;
}

interface KV {
  readonly length: number;
  key(i: number): string | null;
  getItem(k: string): string | null;
  setItem(k: string, v: string): void;
  removeItem(k: string): void;
}

/** The browser's `localStorage` (synchronous, about 5 MB), under `prefix`. */
export function localStorageStorage(prefix = 'bandsync:', ls: KV = globalThis.localStorage): Storage {
  const s: Storage = {
    load() {
      const out: Record<string, unknown> = {};
      for (let i = 0; i < ls.length; i++) {
        const k = ls.key(i);
        if (k?.startsWith(prefix)) {
          try {
            out[k.slice(prefix.length)] = JSON.parse(ls.getItem(k)!);
          } catch {
            // Not ours, or damaged: left out rather than failing the whole load.
          }
        }
      }
      return out;
    },
    set: (k, v) => ls.setItem(prefix + k, JSON.stringify(v)),
    remove: (k) => ls.removeItem(prefix + k),
  };
  // One synchronous pass: no other code of the page runs in between.
  s.write = each(s);
  return s;
}

/** IndexedDB database `name` (one object store, `kv`): the browser storage for outboxes. */
export function indexedDbStorage(name = 'bandsync'): Storage {
  let db: Promise<IDBDatabase> | undefined;
  const req = <T>(r: IDBRequest<T>) =>
    new Promise<T>((ok, ko) => {
      r.onsuccess = () => ok(r.result);
      r.onerror = () => ko(r.error);
    });
  const open = () => {
    if (!db) {
      const r = indexedDB.open(name, 1);
      r.onupgradeneeded = () => r.result.createObjectStore('kv');
      db = req(r).then((d) => {
        // A connection the browser closed (or another version wants) is opened again.
        d.onclose = d.onversionchange = () => {
          d.close();
          db = undefined;
        };
        return d;
      });
      db.catch(() => (db = undefined));
    }
    return db;
  };
  // Resolves when the transaction is durable ('strict': on disk), which is what the
  // outbox waits for.
  const write = async (f: (s: IDBObjectStore) => void) => {
    const t = (await open()).transaction('kv', 'readwrite', { durability: 'strict' });
    f(t.objectStore('kv'));
    return new Promise<void>((ok, ko) => {
      t.oncomplete = () => ok();
      t.onerror = t.onabort = () => ko(t.error);
    });
  };
  return {
    async load() {
      const s = (await open()).transaction('kv').objectStore('kv');
      const [keys, values] = await Promise.all([req(s.getAllKeys()), req(s.getAll())]);
      return Object.fromEntries(keys.map((k, i) => [String(k), values[i]]));
    },
    set: (k, v) => write((s) => s.put(JSON.parse(JSON.stringify(v)), k)),
    remove: (k) => write((s) => s.delete(k)),
    write: (sets, removes) =>
      write((s) => {
        for (const k in sets) s.put(JSON.parse(JSON.stringify(sets[k])), k);
        for (const k of removes) s.delete(k);
      }),
  };
}
