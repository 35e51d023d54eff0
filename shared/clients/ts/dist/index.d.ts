export * from './client';
export * from './core';
export * from './storage';
export type * as wire from './wire.gen';
