import { type Cursor, type Device, type Failure, type Mutation, type Parked, type Pending, type PresentMember, type State, type Verdict, type WireEvent, type WireMutation } from './core';
import { type Storage } from './storage';
/** Throw it from `getToken` to stop: the client goes to `failed` and does not retry. */
export declare class UnauthorizedError extends Error {
    constructor(message?: string);
}
/** A request the client refused or the server answered with an error (`code`). */
export declare class BandsyncError extends Error {
    readonly code: string;
    constructor(code: string, message: string);
}
/** A push whose frame would be over 32 KB (API Gateway would close the socket with 1009). */
export declare class FrameTooLargeError extends BandsyncError {
    constructor(message: string);
}
export interface StateChange {
    previous: State;
    current: State;
    reason: string;
    retryInMs?: number;
}
export interface VerdictEvent {
    mid: number | null;
    mutation: WireMutation | Parked['mutation'];
    result: Verdict;
}
export interface ClientEvents {
    state: StateChange;
    verdict: VerdictEvent;
    error: Failure;
}
export interface ChannelEvents {
    event: WireEvent;
    reset: {
        reason: 'history_lost' | 'epoch_changed';
    };
    presence: WireEvent;
    error: Failure;
}
/** What the client needs of a WebSocket (the browser's, Node's, or the `ws` package's). */
export interface SocketLike {
    send(data: string): void;
    close(code?: number): void;
    onopen: ((e: unknown) => void) | null;
    onmessage: ((e: {
        data: unknown;
    }) => void) | null;
    onclose: ((e: {
        code: number;
        status?: number;
    }) => void) | null;
    onerror: ((e: unknown) => void) | null;
    /** The `ws` package's emitter: its 'unexpected-response' tells a refusal's status. */
    on?: (name: string, f: (req: unknown, res: {
        statusCode?: number;
    }) => void) => unknown;
}
export type SocketClass = new (url: string) => SocketLike;
export interface Clock {
    now(): number;
    setTimeout(f: () => void, ms: number): unknown;
    clearTimeout(handle: unknown): void;
}
export interface ClientOptions {
    /** Called before every connect; throw `UnauthorizedError` to stop. */
    getToken: () => string | Promise<string>;
    /** Registered on every connect; needed to push. */
    device?: Device;
    /** Cursors, the outbox and parked mutations (default: memory). */
    storage?: Storage;
    WebSocket?: SocketClass;
    /** A hidden tab closes its socket after this long (default: never). */
    hiddenCloseAfterMs?: number;
    /** The wait between retries once suspended (default 60 s). */
    suspendedRetryMs?: number;
    /** For tests: time and timers (default: Date.now and setTimeout). */
    clock?: Clock;
    /** For tests: the backoff's jitter (default: Math.random). */
    random?: () => number;
}
export interface ChannelOptions {
    /** The app's snapshot; when it has `{seq, epoch}`, the channel resumes from there. */
    getState?: () => unknown;
}
declare class Emitter<M> {
    private ls;
    /** Returns a function that removes the listener. */
    on<K extends keyof M>(name: K, f: (d: M[K]) => void): () => void;
    off<K extends keyof M>(name: K, f: (d: M[K]) => void): void;
}
export declare class BandsyncClient extends Emitter<ClientEvents> {
    readonly url: string;
    private readonly opts;
    /** Resolves when the storage has been read (calls made before are queued). */
    readonly ready: Promise<void>;
    private core?;
    private early;
    private q;
    private unlock?;
    private busy;
    private sockets;
    private timers;
    private tags;
    private nextTag;
    private chans;
    private cursorWrites;
    private storage;
    private clock;
    private listening;
    private broken?;
    private waitLock;
    private closed;
    constructor(url: string, opts: ClientOptions);
    get state(): State;
    /** Connects (also done by the first `subscribe()` or `push()`); after `failed`, tries again. */
    connect(): void;
    /** Declares a channel; `subscribe()` on it makes it part of every connection. */
    channel(name: string, opts?: ChannelOptions): Channel;
    /** Queues a change (persisted before it is sent); resolves with the server's verdict. */
    push(mutation: Mutation): Promise<Verdict>;
    /** The queued mutations, oldest first. */
    pending(): Pending[];
    /** The rejected mutations the member should see, oldest first. */
    parked(): Parked[];
    /** Forgets a parked mutation. */
    dismiss(key: string): void;
    /** Closes the sockets with 1000; queued mutations stay in storage. Final: a new client is needed. */
    close(): void;
    private release;
    private onEnv;
    private listen;
    private run;
    private perform;
    private writeCursor;
    private open;
}
export declare class Channel extends Emitter<ChannelEvents> {
    private readonly client;
    readonly name: string;
    constructor(client: BandsyncClient, name: string);
    /** Resolves when the channel is live (after any replay). */
    subscribe(): Promise<void>;
    unsubscribe(): void;
    /** Who of the band is online now (`band:<id>` channels). */
    presence(): Promise<PresentMember[]>;
    /** Where the channel is: `{epoch, seq}` of the last event the app got. */
    get cursor(): Cursor | null;
}
export {};
