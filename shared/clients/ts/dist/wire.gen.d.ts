/**
 * Every WebSocket frame a client sends (ClientFrame) or receives (ServerFrame, whose `event` frames carry an EventKind), and the HTTP API's bodies. Generated from bandsync::wire; do not edit.
 */
export type BandsyncClientContract = ClientFrame | ServerFrame;
/**
 * A frame a client sends: an `action`, its fields, and an optional `ref`.
 */
export type ClientFrame = {
    action: 'subscribe';
    channel: ChannelName;
    /**
     * Any JSON value; echoed as the `ref` of every reply to this frame.
     */
    ref?: unknown;
} | {
    action: 'unsubscribe';
    channel: ChannelName;
    /**
     * Any JSON value; echoed as the `ref` of every reply to this frame.
     */
    ref?: unknown;
} | {
    action: 'resume';
    after_seq: number;
    channel: ChannelName;
    epoch?: string | null;
    /**
     * Any JSON value; echoed as the `ref` of every reply to this frame.
     */
    ref?: unknown;
} | {
    action: 'ping';
    /**
     * Any JSON value; echoed as the `ref` of every reply to this frame.
     */
    ref?: unknown;
} | {
    action: 'sync_request';
    band: BandId;
    /**
     * A full sync (compare everything) unless asked otherwise.
     */
    full?: boolean;
    /**
     * Any JSON value; echoed as the `ref` of every reply to this frame.
     */
    ref?: unknown;
    /**
     * One source; none: every source of the band.
     */
    source?: SourceId | null;
} | {
    action: 'register_device';
    /**
     * What it wants to be sent; left out: what it had (a new device: everything).
     */
    categories?: string[] | null;
    device: DeviceId;
    /**
     * What the member calls it ("Ringo's iPad"); at most 200 characters.
     */
    name: string;
    platform: Platform;
    /**
     * Any JSON value; echoed as the `ref` of every reply to this frame.
     */
    ref?: unknown;
} | {
    action: 'push';
    band: BandId;
    device: DeviceId;
    /**
     * Each is read on its own (so a refusal names `mutations[i]` and its field). At
     * most [`MAX_PUSH_MUTATIONS`].
     */
    mutations: WireMutation[];
    /**
     * Any JSON value; echoed as the `ref` of every reply to this frame.
     */
    ref?: unknown;
} | {
    action: 'presence';
    band: BandId;
    /**
     * Any JSON value; echoed as the `ref` of every reply to this frame.
     */
    ref?: unknown;
};
/**
 * A channel: `band:<band id>`, `user:<user id>` or `system`.
 */
export type ChannelName = string;
/**
 * A band id: ASCII letters, digits, `-`, `_`
 */
export type BandId = string;
/**
 * A source id: ASCII letters, digits, `-`, `_`
 */
export type SourceId = string;
/**
 * A device id: ASCII letters, digits, `-`, `_`
 */
export type DeviceId = string;
/**
 * What kind of device a member registered.
 */
export type Platform = 'ios' | 'android' | 'web' | 'desktop' | 'other';
/**
 * A entity id: ASCII letters, digits, `-`, `_`, `.`, `:`
 */
export type EntityId = string;
/**
 * What a mutation does to its entity.
 */
export type Op = 'create' | 'patch' | 'delete';
/**
 * A conflict id: ASCII letters, digits, `-`, `_`, `:`, `.`
 */
export type ConflictId = string;
/**
 * A entity type: ASCII letters, digits, `-`, `_`
 */
export type EntityTypeName = string;
/**
 * What the server sends. Every frame is a JSON object whose `type` says what it is.
 */
export type ServerFrame = Event | {
    channel: ChannelName;
    epoch: string | null;
    ref?: unknown;
    /**
     * The channel's newest seq (0: none yet).
     */
    seq: number;
    type: 'subscribed';
} | {
    channel: ChannelName;
    ref?: unknown;
    type: 'unsubscribed';
} | {
    channel: ChannelName;
    from_seq: number;
    to_seq: number;
    type: 'skipped';
} | {
    channel: ChannelName;
    epoch: string | null;
    /**
     * More events are missing after `seq`: send `resume` again from `seq`. A replay
     * is bounded, so one request never outlasts a Lambda invocation.
     */
    more: boolean;
    ref?: unknown;
    replayed: number;
    seq: number;
    type: 'resumed';
} | {
    ref?: unknown;
    ts: string;
    type: 'pong';
} | {
    data?: SyncQueued | null;
    ref?: unknown;
    type: 'ack';
} | {
    /**
     * Every error code, stable for programs to switch on.
     */
    code: ErrorCode & ErrorCode1;
    /**
     * `history_lost` only: where the channel's log is now.
     */
    data?: HistoryLostData | null;
    message: string;
    ref?: unknown;
    /**
     * `rate_limited` only: seconds to wait before sending the frame again.
     */
    retry_after?: number | null;
    type: 'error';
} | {
    categories: string[];
    device: DeviceId;
    ref?: unknown;
    type: 'device';
} | {
    device: DeviceId;
    /**
     * True when more `push_result` frames of the same push follow; left out on the
     * last (or only) one.
     */
    more?: boolean;
    ref?: unknown;
    results: MutationResult[];
    type: 'push_result';
} | {
    band: BandId;
    members: PresentMember[];
    ref?: unknown;
    type: 'presence';
};
/**
 * An event of a channel the connection is subscribed to (or replays).
 */
export type Event = {
    /**
     * A channel: `band:<band id>`, `user:<user id>` or `system`.
     */
    channel: string;
    /**
     * The log's epoch: seqs of different epochs are unrelated.
     */
    epoch: string;
    /**
     * Deterministic: a repeated publication of the same event has the same id.
     */
    id: string;
    /**
     * Its place in the channel's log: 1, 2, ... within an epoch.
     */
    seq: number;
    ts: string;
} & ({
    data: SyncStarted;
    event: 'sync.started';
} | {
    data: SyncProgress;
    event: 'sync.progress';
} | {
    data: SyncCompleted;
    event: 'sync.completed';
} | {
    data: SyncFailed;
    event: 'sync.failed';
} | {
    data: FileChanged;
    event: 'file.created';
} | {
    data: FileChanged;
    event: 'file.updated';
} | {
    data: FileChanged;
    event: 'file.deleted';
} | {
    data: FileChanged;
    event: 'file.moved';
} | {
    data: CalendarEventChanged;
    event: 'calendar.event.created';
} | {
    data: CalendarEventChanged;
    event: 'calendar.event.updated';
} | {
    data: CalendarEventChanged;
    event: 'calendar.event.cancelled';
} | {
    data: SetlistUpdated;
    event: 'setlist.updated';
} | {
    data: EntityChanged;
    event: 'entity.created';
} | {
    data: EntityChanged;
    event: 'entity.updated';
} | {
    data: EntityChanged;
    event: 'entity.deleted';
} | {
    data: ConflictOpened;
    event: 'conflict.opened';
} | {
    data: ConflictResolved;
    event: 'conflict.resolved';
} | {
    data: PresenceChanged;
    event: 'presence.joined';
} | {
    data: PresenceChanged;
    event: 'presence.left';
}) & {
    type: 'event';
};
export type Trigger = 'notification' | 'manual' | 'client' | 'reconcile';
/**
 * A user id: ASCII letters, digits, `-`, `_`, `.`, `@`, `+`
 */
export type UserId = string;
export type ErrorCode = 'malformed_body' | 'malformed_json' | 'missing_action' | 'unknown_action' | 'invalid_request' | 'missing_parameter' | 'invalid_parameter' | 'missing_header' | 'invalid_header' | 'missing_connection_id' | 'invalid_name' | 'invalid_file_type' | 'invalid_kind' | 'invalid_location' | 'invalid_credentials' | 'invalid_mutation' | 'invalid_field_operation' | 'unknown_entity_type' | 'unknown_field' | 'field_too_large' | 'push_too_large' | 'base_version_from_future' | 'unknown_device' | 'device_taken' | 'not_owner' | 'stale_base' | 'entity_too_large' | 'conflict_not_open' | 'rate_limited' | 'missing_token' | 'invalid_token' | 'token_expired' | 'forbidden' | 'not_found' | 'method_not_allowed' | 'conflict' | 'channel_expired' | 'unknown_connection' | 'history_lost' | 'not_configured' | 'unavailable';
export type ErrorCode1 = string;
/**
 * The verdict on one mutation.
 */
export type MutationStatus = 'applied' | 'merged' | 'conflict' | 'rejected' | 'duplicate' | 'out_of_order';
/**
 * A mutation as it comes on the wire, before its fields are read (public for the
 * documents, which describe a push's `mutations` by it).
 */
export interface WireMutation {
    /**
     * 0 for a create; otherwise the version the client last saw.
     */
    base_version: number;
    /**
     * Per field a plain JSON value (set it) or one operation object: `{"$add": [...]}`
     * / `{"$remove": [...]}` (set fields), `{"$inc": n}` (counters), `{"$text":
     * "<base64 Yjs update>"}` (text fields).
     */
    fields?: {
        [k: string]: unknown;
    };
    id: EntityId;
    /**
     * Counts up by one per device, with no gaps (the first is 1).
     */
    mid: number;
    op: Op;
    /**
     * The `ask` conflict this mutation settles (its fields are the chosen values).
     */
    resolves?: ConflictId | null;
    /**
     * The client's clock when the member made the change (RFC 3339).
     */
    ts: string;
    type: EntityTypeName;
}
/**
 * `sync.started`.
 */
export interface SyncStarted {
    full: boolean;
    /**
     * The operation id (`GET /sync/operations/{id}`).
     */
    operation: string;
    source: SourceId;
    trigger: Trigger;
}
/**
 * `sync.progress`: `done` of `total` changes applied so far.
 */
export interface SyncProgress {
    done: number;
    operation: string;
    total: number;
}
/**
 * `sync.completed`.
 */
export interface SyncCompleted {
    /**
     * The first failed items (at most 20; the operation lists them all).
     */
    failures: SyncFailure[];
    metrics: SyncMetrics;
    operation: string;
    source: SourceId;
}
/**
 * One item an operation could not sync.
 */
export interface SyncFailure {
    error: string;
    path: string;
}
export interface SyncMetrics {
    duration_ms: number;
    failed: number;
    seen: number;
    skipped: number;
    synced: number;
}
/**
 * `sync.failed`.
 */
export interface SyncFailed {
    /**
     * Why (null when the operation recorded no reason).
     */
    error: string | null;
    operation: string;
    source: SourceId;
}
/**
 * `file.created|updated|deleted|moved`: the file as the catalog knows it.
 */
export interface FileChanged {
    /**
     * Stable across renames and moves.
     */
    file_id: string;
    /**
     * `file.moved` only: the path before.
     */
    from_path?: string | null;
    /**
     * Hex SHA-256 of the content (a Drive source: Google's checksum or version).
     */
    hash: string;
    /**
     * Modification time in ms since the epoch.
     */
    modified_ms: number;
    /**
     * The last segment of `path`.
     */
    name: string;
    /**
     * Path relative to the source root, `/`-separated.
     */
    path: string;
    size: number;
    source: SourceId;
}
/**
 * `calendar.event.*`. What the source does not know is null.
 */
export interface CalendarEventChanged {
    end: EventTime | null;
    /**
     * Google's event id (an occurrence of a recurring event has its own).
     */
    event_id: string;
    html_link: string | null;
    location: string | null;
    /**
     * An occurrence of a recurring event: its start in the series' schedule.
     */
    original_start: EventTime | null;
    /**
     * An occurrence of a recurring event: the series' id.
     */
    recurring_event_id: string | null;
    source: SourceId;
    start: EventTime | null;
    /**
     * `confirmed`, `tentative` or `cancelled`.
     */
    status: string;
    summary: string | null;
    /**
     * RFC 3339, milliseconds, UTC.
     */
    updated: string | null;
}
/**
 * A calendar time as the apps get it: `date` (all day) or `date_time` with its
 * `time_zone`; absent keys are left out.
 */
export interface EventTime {
    /**
     * `YYYY-MM-DD`.
     */
    date?: string | null;
    /**
     * RFC 3339.
     */
    date_time?: string | null;
    /**
     * IANA time zone name.
     */
    time_zone?: string | null;
}
/**
 * `setlist.updated`: the sheet now, and the row diff from the last event's snapshot
 * (an `initial` event adds every row).
 */
export interface SetlistUpdated {
    added: RowChange[];
    /**
     * Column names now.
     */
    columns: string[];
    /**
     * The header changed (never on an initial event).
     */
    columns_changed?: ColumnsChange | null;
    edited: RowEdit[];
    /**
     * No earlier snapshot to compare with: every row is in `added`.
     */
    initial: boolean;
    moved: RowMove[];
    /**
     * The A1 range read.
     */
    range: string;
    removed: RowChange[];
    /**
     * Rows now (header excluded).
     */
    rows: number;
    source: SourceId;
    spreadsheet_id: string;
}
/**
 * A row that appeared or went: where it is (was), its key and its cells.
 */
export interface RowChange {
    key: string;
    position: number;
    row: {
        [k: string]: string;
    };
}
export interface ColumnsChange {
    after: string[];
    before: string[];
}
/**
 * A row whose cells changed: the changed columns only.
 */
export interface RowEdit {
    changes: {
        [k: string]: CellChange;
    };
    key: string;
    /**
     * Its new position.
     */
    position: number;
}
export interface CellChange {
    after: string;
    before: string;
}
/**
 * A row whose place in the order changed (positions 1-based, old and new).
 */
export interface RowMove {
    from: number;
    key: string;
    to: number;
}
/**
 * `entity.created|updated|deleted`: who changed which entity into which version, and
 * the fields that changed (their values after). A client applies it when `version` is
 * newer than the one it has; its own change comes back this way too (its rebase point).
 */
export interface EntityChanged {
    device: DeviceId;
    /**
     * The fields that changed, with their values after (empty for a delete).
     */
    fields: {
        [k: string]: unknown;
    };
    id: EntityId;
    /**
     * A user id: ASCII letters, digits, `-`, `_`, `.`, `@`, `+`
     */
    member: string;
    mid: number;
    /**
     * The `text` fields whose update did not fit in the event (48 KB of updates at
     * most, so the event stays one WebSocket message): a Yjs client reads their
     * `text_state` with `GET /sync/entities/{type}/{id}` instead.
     */
    text_refetch?: string[];
    /**
     * Per `text` field the change wrote, the Yjs update the server applied (base64 of a
     * v1 update): what a Yjs client applies to its own document (`Y.applyUpdate`) to
     * keep merging; `fields` has the plain text beside it. Applying one twice, or one
     * the document has already, changes nothing.
     */
    text_updates?: {
        [k: string]: string;
    };
    type: EntityTypeName;
    /**
     * The entity's version after the change.
     */
    version: number;
}
/**
 * `conflict.opened`: an `ask` field with two values kept.
 */
export interface ConflictOpened {
    /**
     * A conflict id: ASCII letters, digits, `-`, `_`, `:`, `.`
     */
    conflict: string;
    /**
     * When the fallback policy decides if no member has.
     */
    deadline: string;
    field: string;
    id: EntityId;
    type: EntityTypeName;
    /**
     * The values in contention: the one the entity kept first, then the challenger.
     */
    values: unknown[];
}
/**
 * `conflict.resolved`: the value an `ask` conflict settled on.
 */
export interface ConflictResolved {
    /**
     * The member who chose (absent when the fallback policy did).
     */
    by?: UserId | null;
    conflict: ConflictId;
    field: string;
    /**
     * `member`, the fallback policy's name, or `gone` (the entity was deleted first).
     */
    how: string;
    id: EntityId;
    /**
     * Why the service settled it so (with `gone`).
     */
    reason?: string | null;
    type: EntityTypeName;
    value: unknown;
}
/**
 * `presence.joined` / `presence.left`: a member came online in the band, or went.
 */
export interface PresenceChanged {
    /**
     * When it happened: the connect, or the last device's disconnect (the event is
     * published a debounce later).
     */
    at: string;
    /**
     * Its devices online now: 1 on `presence.joined`, 0 on `presence.left`.
     */
    devices: number;
    member: UserId;
    /**
     * When the session began (its first device's connect).
     */
    since: string;
}
/**
 * The `data` of the `ack` of a `sync_request`: one job per source queued.
 */
export interface SyncQueued {
    queued: QueuedSync[];
}
export interface QueuedSync {
    /**
     * The job id, which becomes the operation id of `sync.started`.
     */
    job: string;
    source: SourceId;
}
/**
 * The `data` of a `history_lost` error: the channel's head, to refetch from.
 */
export interface HistoryLostData {
    channel: ChannelName;
    /**
     * Null: the channel has no log (yet).
     */
    epoch: string | null;
    /**
     * The channel's newest seq (0: none yet).
     */
    seq: number;
}
/**
 * The verdict on one mutation, as `push_result` carries it.
 */
export interface MutationResult {
    /**
     * `rejected`: why.
     */
    code?: (ErrorCode & ErrorCode1) | null;
    /**
     * `conflict`: the conflict opened.
     */
    conflict?: ConflictId | null;
    /**
     * `out_of_order`: the mid the server waits for.
     */
    expected_mid?: number | null;
    /**
     * The entity's fields after it (rejected: the current ones, to rebase on). Within
     * one push's answer only the last verdict of each entity carries them, and at most
     * 256 KB of them in all: left out, read the entity (or its events).
     */
    fields?: {
        [k: string]: unknown;
    } | null;
    losers?: Loser[];
    message?: string | null;
    mid: number;
    /**
     * `duplicate`: the status of the original verdict (the rest is the original's).
     */
    original_status?: MutationStatus | null;
    /**
     * The seq of its event on `band:<band>`.
     */
    seq?: number | null;
    status: MutationStatus;
    /**
     * The entity's version after it (applied, merged, conflict; rejected: the current one).
     */
    version?: number | null;
}
/**
 * A value that lost to a concurrent one, and the policy that decided.
 */
export interface Loser {
    field: string;
    /**
     * The policy that decided (`lww`, `owner`, ... or a custom resolver's name).
     */
    policy: string;
    /**
     * The value that lost (this mutation's, or the one it overwrote).
     */
    value: unknown;
}
/**
 * A member online in a band: listed from its `presence.joined` to its `presence.left`
 * (so with 0 devices while its last one's disconnect is within the debounce).
 */
export interface PresentMember {
    devices: number;
    member: UserId;
    /**
     * When its session began.
     */
    since: string;
}
