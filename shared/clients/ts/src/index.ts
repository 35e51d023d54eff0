// `@bandsync/client`: the client for browsers and Node (see README.md). The sans-IO core
// is exported too, for a driver of one's own.
export * from './client';
export * from './core';
export * from './storage';
export type * as wire from './wire.gen';
