export interface Storage {
    load(): Record<string, unknown> | Promise<Record<string, unknown>>;
    set(key: string, value: unknown): void | Promise<void>;
    remove(key: string): void | Promise<void>;
    /** All of `sets` and `removes` or none of them (renumbering; an outbox entry and
     * `mid:next`). Without it the client writes one key after another. */
    write?(sets: Record<string, unknown>, removes: string[]): void | Promise<void>;
}
/** Kept in memory: gone with the page or process (tests, short-lived scripts). */
export declare function memoryStorage(initial?: Record<string, unknown>): Storage;
interface KV {
    readonly length: number;
    key(i: number): string | null;
    getItem(k: string): string | null;
    setItem(k: string, v: string): void;
    removeItem(k: string): void;
}
/** The browser's `localStorage` (synchronous, about 5 MB), under `prefix`. */
export declare function localStorageStorage(prefix?: string, ls?: KV): Storage;
/** IndexedDB database `name` (one object store, `kv`): the browser storage for outboxes. */
export declare function indexedDbStorage(name?: string): Storage;
export {};
