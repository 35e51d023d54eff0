import type { Storage } from './storage';
export type { Storage };
/**
 * One JSON file. Writes go to `<path>.tmp` and are renamed over the file, so a crash
 * leaves the old or the new content, never half of one; changes made while a write is
 * under way go out together in the next one (and a failed write does not stop later ones).
 */
export declare function fileStorage(path: string): Storage;
