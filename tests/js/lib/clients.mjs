// Members of the test band as the TypeScript client (its committed build) makes them.

import { BandsyncClient, memoryStorage, FrameTooLargeError } from '../../../shared/clients/ts/dist/index.mjs';
import { fileStorage } from '../../../shared/clients/ts/dist/node.mjs';
import { randomBytes } from 'node:crypto';

export { BandsyncClient, memoryStorage, fileStorage, FrameTooLargeError };

export const uid = (prefix) => `${prefix}${randomBytes(5).toString('hex')}`;

/**
 * A member's client on `stack`: `{client, device, states, verdicts}`. Options: `device`
 * (an id; `null` for none), `storage`, `WebSocket`, `token` (the /local/token options).
 */
export function member(stack, user, { device, storage, token = {}, ...options } = {}) {
  const deviceId = device === undefined ? uid(`node-${user}-`) : device;
  const client = new BandsyncClient(stack.ws, {
    getToken: () => stack.token(user, token),
    device: deviceId === null ? undefined : { id: deviceId, platform: 'desktop', name: `${user}'s test`, categories: null },
    storage: storage ?? memoryStorage(),
    ...options,
  });
  const states = [];
  const verdicts = [];
  const errors = [];
  client.on('state', (s) => states.push(s));
  client.on('verdict', (v) => verdicts.push(v));
  client.on('error', (e) => errors.push(e));
  // A push that fails says what else the client reported (a refused device, a token
  // route that failed...), and the states it went through: the cause is often there.
  const push = client.push.bind(client);
  client.push = (mutation) => push(mutation).catch((e) => {
    e.message += ` (${user}'s client: errors ${JSON.stringify(errors)}, states ${states.map((s) => `${s.current}${s.reason ? `/${s.reason}` : ''}`).join(' > ')})`;
    throw e;
  });
  return { client, device: deviceId, states, verdicts, errors, state: () => states.at(-1)?.current ?? 'idle' };
}

/** Follow a channel of `client`: `{channel, events}` (every `event` the app got, in order). */
export function follow(client, name, options) {
  const channel = client.channel(name, options);
  const events = [];
  const resets = [];
  const errors = [];
  channel.on('event', (e) => events.push(e));
  channel.on('reset', (r) => resets.push(r));
  channel.on('error', (e) => errors.push(e));
  // A subscribe that fails says what the channel reported before.
  const subscribe = channel.subscribe.bind(channel);
  channel.subscribe = () => subscribe().catch((e) => {
    e.message += ` (${name}'s errors: ${JSON.stringify(errors)})`;
    throw e;
  });
  return { channel, events, resets, errors };
}

/** The seqs are one run with no gap and no repeat. */
export function gapless(events) {
  return events.every((e, i) => i === 0 || e.seq === events[i - 1].seq + 1);
}

/** A WebSocket that never hands `push_result` frames to the client: its acks are lost. */
export function deafToVerdicts(Base = globalThis.WebSocket) {
  const deaf = (data) => typeof data === 'string' && data.includes('"push_result"');
  return class extends Base {
    addEventListener(type, listener, opts) {
      if (type !== 'message') return super.addEventListener(type, listener, opts);
      const filtered = (ev) => { if (!deaf(ev.data)) (listener.handleEvent ? listener.handleEvent(ev) : listener.call(this, ev)); };
      return super.addEventListener(type, filtered, opts);
    }
    set onmessage(fn) { super.onmessage = fn && ((ev) => { if (!deaf(ev.data)) fn.call(this, ev); }); }
    get onmessage() { return super.onmessage; }
  };
}

/**
 * A WebSocket whose incoming frames reach the client `ms` late (in order): a member on
 * a slower network than the page it is compared with.
 */
export function slowSocket(ms, Base = globalThis.WebSocket) {
  const later = (fn) => (ev) => setTimeout(fn, ms, ev);
  return class extends Base {
    addEventListener(type, listener, opts) {
      if (type !== 'message') return super.addEventListener(type, listener, opts);
      return super.addEventListener(type, later((ev) => (listener.handleEvent ? listener.handleEvent(ev) : listener.call(this, ev))), opts);
    }
    set onmessage(fn) { super.onmessage = fn && later((ev) => fn.call(this, ev)); }
    get onmessage() { return super.onmessage; }
  };
}
