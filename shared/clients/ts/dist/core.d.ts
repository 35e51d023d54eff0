import type { Event as WireEvent, MutationResult, Platform, PresentMember, WireMutation } from './wire.gen';
export type { WireEvent, MutationResult, WireMutation, PresentMember };
export type State = 'idle' | 'connecting' | 'connected' | 'disconnected' | 'suspended' | 'failed' | 'closed';
export type Env = 'online' | 'offline' | 'visible' | 'hidden' | 'wake';
export interface Cursor {
    epoch: string | null;
    seq: number;
}
export interface Device {
    id: string;
    platform: Platform;
    name: string;
    categories?: string[] | null;
}
/** A mutation as the app gives it (`baseVersion` or `base_version`; `mid` is the client's). */
export interface Mutation {
    band: string;
    type: string;
    id: string;
    op: 'create' | 'patch' | 'delete';
    baseVersion?: number;
    base_version?: number;
    fields?: Record<string, unknown>;
    resolves?: string | null;
    ts?: string;
}
export interface Pending {
    mid: number;
    band: string;
    mutation: WireMutation;
}
export interface Parked {
    key: string;
    mid: number | null;
    band: string;
    mutation: Omit<WireMutation, 'mid'> & {
        mid?: number;
    };
    code: string;
    message: string;
}
/** A verdict: the server's, or a local refusal of a mutation whose mid was given back. */
export type Verdict = MutationResult | {
    mid: null;
    status: 'rejected';
    code: string;
    message: string;
};
export interface Failure {
    code: string;
    message: string;
}
export interface Options {
    url: string;
    device?: Device;
    hiddenCloseAfterMs?: number;
    suspendedRetryMs?: number;
}
export type Input = {
    type: 'start';
} | {
    type: 'token';
    socket: number;
    token?: string;
    unauthorized?: boolean;
    error?: string;
} | {
    type: 'opened';
    socket: number;
} | {
    type: 'refused';
    socket: number;
    status?: number;
} | {
    type: 'frame';
    socket: number;
    text: string;
} | {
    type: 'closed';
    socket: number;
    code: number;
} | {
    type: 'timer';
    id: string;
} | {
    type: 'env';
    env: Env;
} | {
    type: 'subscribe';
    channel: string;
    getState: boolean;
    tag?: number;
} | {
    type: 'state';
    channel: string;
    cursor: Cursor | null;
} | {
    type: 'unsubscribe';
    channel: string;
} | {
    type: 'push';
    mutation: Mutation;
    tag?: number;
} | {
    type: 'presence';
    channel: string;
    tag: number;
} | {
    type: 'dismiss';
    key: string;
} | {
    type: 'persist_failed';
    key: string;
}
/** The oldest unconfirmed `write` landed (the driver tells the core how each ended). */
 | {
    type: 'persisted';
} | {
    type: 'close';
};
export type Effect = {
    type: 'get_token';
    socket: number;
} | {
    type: 'get_state';
    channel: string;
} | {
    type: 'open';
    socket: number;
    url: string;
} | {
    type: 'send';
    socket: number;
    text: string;
} | {
    type: 'close';
    socket: number;
    code: number;
} | {
    type: 'set_timer';
    id: string;
    at: number;
} | {
    type: 'cancel_timer';
    id: string;
} | {
    type: 'persist';
    key: string;
    value: unknown;
} | {
    type: 'remove';
    key: string;
}
/** One atomic storage write (renumbering; an outbox entry with `mid:next`). */
 | {
    type: 'write';
    sets: Record<string, unknown>;
    removes: string[];
} | {
    type: 'emit';
    name: string;
    data: unknown;
    channel?: string;
} | {
    type: 'settle';
    tag: number;
    value?: unknown;
    error?: Failure;
};
/** API Gateway reads a message in frames of at most 32 KB and closes with 1009 past it. */
export declare const MAX_FRAME = 32768;
/** `exp` of a JWT's payload in ms, read without verifying (rotation only needs the time). */
export declare function jwtExp(token: string): number | undefined;
export declare class Core {
    private readonly o;
    private readonly rnd;
    state: State;
    private chans;
    private fx;
    private now;
    private main?;
    private rot?;
    private nextSock;
    private fails;
    private refusals;
    private since;
    private floor;
    private rotFails;
    /** Retries in a row of one frame (by ref), for `delay(k)`. */
    private tries;
    private waiting;
    private hidden;
    private hiddenClosed;
    private watchdogAt;
    private cursors;
    private dirty;
    private outbox;
    private midNext;
    private parkedList;
    private localNext;
    /** `write` effects issued, and of them ended (in order: the driver runs them so). */
    private writes;
    private written;
    private batch?;
    private rateLimited;
    /** Resends put off by a retry-later error, by timer id. */
    private laters;
    private presenceWaiters;
    constructor(o: Options, rnd: () => number, stored?: Record<string, unknown>);
    pending(): Pending[];
    parked(): Parked[];
    cursor(channel: string): Cursor | null;
    step(now: number, input: Input): Effect[];
    private emit;
    private timer;
    private cancel;
    private persist;
    private remove;
    private settle;
    /** Settles (and empties) a list of waiting promises. */
    private settleAll;
    private send;
    private closeSock;
    private setState;
    private input;
    private sock;
    private watchdog;
    private attempt;
    private onToken;
    private register;
    private onOpen;
    /** Subscribe, or resume from the cursor, on a socket (ref `c:<channel>`). */
    private resume;
    /** Subscribe or resume on every open socket (both while rotating). */
    private resumeAll;
    private connected;
    /** Heartbeat and rotation timers for the current socket. */
    private arm;
    private delay;
    /** Close what is open and forget what was in flight on it. */
    private teardown;
    /** The socket is gone: wait, then try again. */
    private lost;
    private fail;
    private onTimer;
    /** Close the socket with 4000 and connect again at once (not a backoff failure). */
    private redial;
    /** How long until a retry-later error's frame goes again: `retry_after`, else `delay(k)`. */
    private wait;
    /** Send a channel's or the device's frame again on the same socket, later. */
    private later;
    private ping;
    private onEnv;
    private rotationFailed;
    /** Make-before-break: the new socket takes over once it has caught up. */
    private maybeSwitch;
    private onFrame;
    private answering;
    private answered;
    private onEvent;
    private deliver;
    private advance;
    /** Emit held events that are now next; drop those the cursor passed. */
    private drain;
    private gap;
    private onError;
    private subscribe;
    private onState;
    /** After history_lost: the refetched state's cursor, a `reset`, and a resume from it. */
    private reset;
    private frameSize;
    private push;
    /** Send the next batch: the oldest entries of one band that fit a frame; one in flight. */
    private flush;
    private onResults;
    private verdict;
    private batchError;
    private parkLocal;
    /** New mids from `from` for `entries`, with `sets`/`removes`, in one atomic write. */
    private renumber;
    private writeOut;
}
