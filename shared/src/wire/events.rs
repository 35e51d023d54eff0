//! The events of a channel: one [`EventKind`] per event name, each with its typed
//! payload (the envelope's `data`).
//!
//! The channel log stores an event as its name and its payload as JSON
//! ([`crate::model::NewEvent`]); `NewEvent::new` takes an `EventKind` and is the only
//! way to make one (its name and payload are private), so a misspelt name or a missing
//! field is a compile error. Payloads go through
//! `serde_json::Value` on their way into the log, so their keys are written in
//! alphabetical order (as they were when the jobs built them with `json!`).

use crate::entities::mutation::Op;
use crate::model::{
    ConflictId, DeviceId, EntityId, EntityTypeName, ItemAction, SourceId, SyncMetrics, Trigger,
    UserId,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

macro_rules! event_kinds {
    ($( $(#[$doc:meta])* $variant:ident($payload:ty) = $name:literal, )*) => {
        /// What happened, by event name (`event`), with its payload (`data`).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[serde(tag = "event", content = "data")]
        pub enum EventKind {
            $( $(#[$doc])* #[serde(rename = $name)] $variant($payload), )*
        }

        impl EventKind {
            /// Every event name, in declaration order.
            pub const NAMES: &[&str] = &[$($name),*];

            /// The event name clients see.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name,)*
                }
            }

            fn payload(&self) -> Result<Value, serde_json::Error> {
                match self {
                    $(Self::$variant(p) => serde_json::to_value(p),)*
                }
            }
        }
    };
}

event_kinds! {
    /// An operation began (again, for a redelivered job: same id, so the log keeps one).
    SyncStarted(SyncStarted) = "sync.started",
    /// A large operation applied another chunk of changes.
    SyncProgress(SyncProgress) = "sync.progress",
    /// An operation finished; `failures` lists its first failed items.
    SyncCompleted(SyncCompleted) = "sync.completed",
    /// An operation could not sync the source at all.
    SyncFailed(SyncFailed) = "sync.failed",
    /// A file appeared in a file source (folder or Drive).
    FileCreated(FileChanged) = "file.created",
    /// A file's content changed.
    FileUpdated(FileChanged) = "file.updated",
    /// A file went (deleted, trashed, or out of the source's folder or filter).
    FileDeleted(FileChanged) = "file.deleted",
    /// A file was renamed or moved within the source (`from_path` says from where).
    FileMoved(FileChanged) = "file.moved",
    /// An event appeared on a band calendar.
    CalendarEventCreated(CalendarEventChanged) = "calendar.event.created",
    /// A calendar event changed.
    CalendarEventUpdated(CalendarEventChanged) = "calendar.event.updated",
    /// A calendar event (or one occurrence of a recurring one) was called off or deleted.
    CalendarEventCancelled(CalendarEventChanged) = "calendar.event.cancelled",
    /// A setlist sheet changed: the row diff since the last `setlist.updated`.
    SetlistUpdated(SetlistUpdated) = "setlist.updated",
    /// A member's push created an entity (version 1).
    EntityCreated(EntityChanged) = "entity.created",
    /// A member's push changed an entity (applied, merged, or with an `ask` conflict).
    EntityUpdated(EntityChanged) = "entity.updated",
    /// A member's push deleted an entity (its history is kept).
    EntityDeleted(EntityChanged) = "entity.deleted",
    /// Two values of an `ask` field are kept until a member (or the fallback policy)
    /// chooses.
    ConflictOpened(ConflictOpened) = "conflict.opened",
    /// An `ask` conflict was settled.
    ConflictResolved(ConflictResolved) = "conflict.resolved",
    /// A member's first device connected (none of its devices was online, or the last
    /// one went longer ago than the debounce).
    PresenceJoined(PresenceChanged) = "presence.joined",
    /// A member's last device went and none came back within the debounce.
    PresenceLeft(PresenceChanged) = "presence.left",
}

impl EventKind {
    /// The `file.*` event of a file source's change.
    pub fn file(action: ItemAction, change: FileChanged) -> Self {
        match action {
            ItemAction::Created => Self::FileCreated(change),
            ItemAction::Updated => Self::FileUpdated(change),
            ItemAction::Deleted => Self::FileDeleted(change),
            ItemAction::Moved => Self::FileMoved(change),
        }
    }

    /// The `file.*` event name of a file source's change (what [`Self::file`] names it).
    /// It is also hashed into the change's event id, so a spelling here is stored.
    pub fn file_name(action: ItemAction) -> &'static str {
        match action {
            ItemAction::Created => "file.created",
            ItemAction::Updated => "file.updated",
            ItemAction::Deleted => "file.deleted",
            ItemAction::Moved => "file.moved",
        }
    }

    /// The `entity.*` event of a committed mutation: a delete is `entity.deleted`, the
    /// first version `entity.created`, any later one `entity.updated` (a create that met
    /// an entity made concurrently elsewhere merged into it: an update).
    pub fn entity(op: Op, change: EntityChanged) -> Self {
        match op {
            Op::Delete => Self::EntityDeleted(change),
            _ if change.version <= 1 => Self::EntityCreated(change),
            _ => Self::EntityUpdated(change),
        }
    }

    /// The id of the event of (device, mid)'s change: deterministic, so a commit
    /// retried after a lost answer, or an event queued again for broadcast, is
    /// recognised by the log.
    pub fn entity_event_id(device: &DeviceId, mid: u64) -> String {
        format!("m:{device}:{mid}")
    }

    /// The name and payload as the channel log stores them.
    pub fn into_parts(self) -> (&'static str, Value) {
        // Serialising these payloads cannot fail: every map has string keys.
        (self.name(), self.payload().unwrap_or_default())
    }

    /// The kind a stored name and payload spell.
    pub fn from_parts(event: &str, data: &Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(serde_json::json!({ "event": event, "data": data }))
    }
}

/// How urgently an event must reach members' sockets (item 5 of two-way sync). The
/// channel log keeps one order for all of them; priority decides what may wait to be
/// appended: bulk (normal and low) publishers append in windows behind the broadcaster,
/// high and critical ones at once. See [`crate::publish::Backpressure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Metadata: a sync job's progress.
    Low,
    /// New content from a source: files, calendars, setlist sheets.
    Normal,
    /// A member's own edit (entities and their conflicts), presence.
    High,
    /// Membership and access changes.
    Critical,
}

/// An event name's family, the part before its first dot (`entity` of
/// `entity.updated`): what priorities and device categories are decided by.
pub fn family(event: &str) -> &str {
    event.split('.').next().unwrap_or(event)
}

impl Priority {
    /// The priority of an event by its name. A name this table does not know is high:
    /// a new kind is never held back by mistake.
    pub fn of(event: &str) -> Self {
        match family(event) {
            "sync" => Self::Low,
            "file" | "calendar" | "setlist" => Self::Normal,
            "member" | "access" | "band" => Self::Critical,
            _ => Self::High,
        }
    }

    /// May a publisher hold these back behind the broadcaster?
    pub fn is_bulk(self) -> bool {
        self <= Self::Normal
    }
}

impl EventKind {
    pub fn priority(&self) -> Priority {
        Priority::of(self.name())
    }
}

/// `sync.started`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SyncStarted {
    /// The operation id (`GET /sync/operations/{id}`).
    pub operation: String,
    pub source: SourceId,
    pub trigger: Trigger,
    pub full: bool,
}

/// `sync.progress`: `done` of `total` changes applied so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SyncProgress {
    pub operation: String,
    pub done: u64,
    pub total: u64,
}

/// `sync.completed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SyncCompleted {
    pub operation: String,
    pub source: SourceId,
    pub metrics: SyncMetrics,
    /// The first failed items (at most 20; the operation lists them all).
    pub failures: Vec<SyncFailure>,
}

/// One item an operation could not sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SyncFailure {
    pub path: String,
    pub error: String,
}

/// `sync.failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SyncFailed {
    pub operation: String,
    pub source: SourceId,
    /// Why (null when the operation recorded no reason).
    pub error: Option<String>,
}

/// `file.created|updated|deleted|moved`: the file as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileChanged {
    pub source: SourceId,
    /// Stable across renames and moves.
    pub file_id: String,
    /// Path relative to the source root, `/`-separated.
    pub path: String,
    /// The last segment of `path`.
    pub name: String,
    pub size: u64,
    /// Hex SHA-256 of the content (a Drive source: Google's checksum or version).
    pub hash: String,
    /// Modification time in ms since the epoch.
    pub modified_ms: i64,
    /// `file.moved` only: the path before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_path: Option<String>,
}

/// `calendar.event.*`. What the source does not know is null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CalendarEventChanged {
    pub source: SourceId,
    /// Google's event id (an occurrence of a recurring event has its own).
    pub event_id: String,
    pub summary: Option<String>,
    pub location: Option<String>,
    pub start: Option<EventTime>,
    pub end: Option<EventTime>,
    /// `confirmed`, `tentative` or `cancelled`.
    pub status: String,
    /// RFC 3339, milliseconds, UTC.
    pub updated: Option<String>,
    pub html_link: Option<String>,
    /// An occurrence of a recurring event: the series' id.
    pub recurring_event_id: Option<String>,
    /// An occurrence of a recurring event: its start in the series' schedule.
    pub original_start: Option<EventTime>,
}

/// A calendar time as the apps get it: `date` (all day) or `date_time` with its
/// `time_zone`; absent keys are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EventTime {
    /// `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_time: Option<String>,
    /// IANA time zone name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// `setlist.updated`: the sheet now, and the row diff from the last event's snapshot
/// (an `initial` event adds every row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SetlistUpdated {
    pub source: SourceId,
    pub spreadsheet_id: String,
    /// The A1 range read.
    pub range: String,
    /// Rows now (header excluded).
    pub rows: u64,
    /// Column names now.
    pub columns: Vec<String>,
    /// No earlier snapshot to compare with: every row is in `added`.
    pub initial: bool,
    pub added: Vec<RowChange>,
    pub removed: Vec<RowChange>,
    pub moved: Vec<RowMove>,
    pub edited: Vec<RowEdit>,
    /// The header changed (never on an initial event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns_changed: Option<ColumnsChange>,
}

/// A row that appeared or went: where it is (was), its key and its cells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RowChange {
    pub position: usize,
    pub key: String,
    pub row: BTreeMap<String, String>,
}

/// A row whose place in the order changed (positions 1-based, old and new).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RowMove {
    pub key: String,
    pub from: usize,
    pub to: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CellChange {
    pub before: String,
    pub after: String,
}

/// A row whose cells changed: the changed columns only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RowEdit {
    pub key: String,
    /// Its new position.
    pub position: usize,
    pub changes: BTreeMap<String, CellChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ColumnsChange {
    pub before: Vec<String>,
    pub after: Vec<String>,
}

/// `entity.created|updated|deleted`: who changed which entity into which version, and
/// the fields that changed (their values after). A client applies it when `version` is
/// newer than the one it has; its own change comes back this way too (its rebase point).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EntityChanged {
    #[serde(rename = "type")]
    pub entity_type: EntityTypeName,
    pub id: EntityId,
    /// The entity's version after the change.
    pub version: u64,
    /// The fields that changed, with their values after (empty for a delete).
    pub fields: Map<String, Value>,
    /// The member whose push it was, from which device, and its mid there.
    pub member: UserId,
    pub device: DeviceId,
    pub mid: u64,
    /// Per `text` field the change wrote, the Yjs update the server applied (base64 of a
    /// v1 update): what a Yjs client applies to its own document (`Y.applyUpdate`) to
    /// keep merging; `fields` has the plain text beside it. Applying one twice, or one
    /// the document has already, changes nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub text_updates: BTreeMap<String, String>,
    /// The `text` fields whose update did not fit in the event (48 KB of updates at
    /// most, so the event stays one WebSocket message): a Yjs client reads their
    /// `text_state` with `GET /sync/entities/{type}/{id}` instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text_refetch: Vec<String>,
}

/// `conflict.opened`: an `ask` field with two values kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConflictOpened {
    /// Name it in a push's `resolves` to settle it.
    pub conflict: ConflictId,
    #[serde(rename = "type")]
    pub entity_type: EntityTypeName,
    pub id: EntityId,
    pub field: String,
    /// The values in contention: the one the entity kept first, then the challenger.
    pub values: Vec<Value>,
    /// When the fallback policy decides if no member has.
    pub deadline: DateTime<Utc>,
}

/// `conflict.resolved`: the value an `ask` conflict settled on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConflictResolved {
    pub conflict: ConflictId,
    #[serde(rename = "type")]
    pub entity_type: EntityTypeName,
    pub id: EntityId,
    pub field: String,
    pub value: Value,
    /// `member`, the fallback policy's name, or `gone` (the entity was deleted first).
    pub how: String,
    /// The member who chose (absent when the fallback policy did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<UserId>,
    /// Why the service settled it so (with `gone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `presence.joined` / `presence.left`: a member came online in the band, or went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PresenceChanged {
    pub member: UserId,
    /// Its devices online now: 1 on `presence.joined`, 0 on `presence.left`.
    pub devices: u64,
    /// When the session began (its first device's connect).
    pub since: DateTime<Utc>,
    /// When it happened: the connect, or the last device's disconnect (the event is
    /// published a debounce later).
    pub at: DateTime<Utc>,
}

/// The schema of the event envelope: its own fields and the kind's `event` and `data`.
#[cfg(feature = "schema")]
mod schema {
    use super::EventKind;
    use crate::model::{ChannelName, Event};

    /// An event on a channel, as every client receives it.
    #[derive(schemars::JsonSchema)]
    #[allow(dead_code)] // only its schema is used
    struct Envelope {
        /// The channel it was published on.
        channel: ChannelName,
        /// Its place in the channel's log: 1, 2, ... within an epoch.
        seq: u64,
        /// The log's epoch: seqs of different epochs are unrelated.
        epoch: String,
        /// Deterministic: a repeated publication of the same event has the same id.
        id: String,
        ts: chrono::DateTime<chrono::Utc>,
        #[serde(flatten)]
        kind: EventKind,
    }

    impl schemars::JsonSchema for Event {
        fn schema_name() -> std::borrow::Cow<'static, str> {
            "Event".into()
        }
        fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
            Envelope::json_schema(generator)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file(from_path: Option<&str>) -> FileChanged {
        FileChanged {
            source: SourceId::parse("charts").unwrap(),
            file_id: "f1".into(),
            path: "set/one.pdf".into(),
            name: "one.pdf".into(),
            size: 42,
            hash: "ab".into(),
            modified_ms: 1_700_000_000_000,
            from_path: from_path.map(str::to_owned),
        }
    }

    #[test]
    fn priorities_order_edits_before_bulk() {
        assert_eq!(Priority::of("sync.progress"), Priority::Low);
        assert_eq!(
            EventKind::FileCreated(file(None)).priority(),
            Priority::Normal
        );
        assert_eq!(Priority::of("setlist.updated"), Priority::Normal);
        assert_eq!(Priority::of("entity.updated"), Priority::High);
        assert_eq!(Priority::of("conflict.opened"), Priority::High);
        assert_eq!(Priority::of("member.removed"), Priority::Critical);
        assert_eq!(
            Priority::of("something.new"),
            Priority::High,
            "unknown: never held"
        );
        assert!(Priority::Critical > Priority::High && Priority::High > Priority::Normal);
        assert!(Priority::Normal.is_bulk() && Priority::Low.is_bulk());
        assert!(!Priority::High.is_bulk());
    }

    /// Today's payload of every event kind, byte for byte as the log stores it.
    fn pinned() -> Vec<(EventKind, &'static str)> {
        let source = || SourceId::parse("charts").unwrap();
        let rows = BTreeMap::from([("Song".to_owned(), "So What".to_owned())]);
        vec![
            (
                EventKind::SyncStarted(SyncStarted {
                    operation: "op1".into(),
                    source: source(),
                    trigger: Trigger::Manual,
                    full: true,
                }),
                r#"{"full":true,"operation":"op1","source":"charts","trigger":"manual"}"#,
            ),
            (
                EventKind::SyncProgress(SyncProgress {
                    operation: "op1".into(),
                    done: 200,
                    total: 450,
                }),
                r#"{"done":200,"operation":"op1","total":450}"#,
            ),
            (
                EventKind::SyncCompleted(SyncCompleted {
                    operation: "op1".into(),
                    source: source(),
                    metrics: SyncMetrics {
                        seen: 3,
                        synced: 2,
                        failed: 1,
                        skipped: 0,
                        duration_ms: 12,
                    },
                    failures: vec![SyncFailure {
                        path: "a.pdf".into(),
                        error: "gone".into(),
                    }],
                }),
                r#"{"failures":[{"error":"gone","path":"a.pdf"}],"metrics":{"duration_ms":12,"failed":1,"seen":3,"skipped":0,"synced":2},"operation":"op1","source":"charts"}"#,
            ),
            (
                EventKind::SyncFailed(SyncFailed {
                    operation: "op1".into(),
                    source: source(),
                    error: None,
                }),
                r#"{"error":null,"operation":"op1","source":"charts"}"#,
            ),
            (
                EventKind::FileCreated(file(None)),
                r#"{"file_id":"f1","hash":"ab","modified_ms":1700000000000,"name":"one.pdf","path":"set/one.pdf","size":42,"source":"charts"}"#,
            ),
            (
                EventKind::FileMoved(file(Some("old/one.pdf"))),
                r#"{"file_id":"f1","from_path":"old/one.pdf","hash":"ab","modified_ms":1700000000000,"name":"one.pdf","path":"set/one.pdf","size":42,"source":"charts"}"#,
            ),
            (
                EventKind::CalendarEventCancelled(CalendarEventChanged {
                    source: source(),
                    event_id: "ev1_20260310".into(),
                    summary: Some("Rehearsal".into()),
                    location: None,
                    start: Some(EventTime {
                        date_time: Some("2026-03-10T19:00:00+01:00".into()),
                        time_zone: Some("Europe/Paris".into()),
                        ..EventTime::default()
                    }),
                    end: None,
                    status: "cancelled".into(),
                    updated: Some("2026-03-01T10:00:00.000Z".into()),
                    html_link: None,
                    recurring_event_id: Some("ev1".into()),
                    original_start: Some(EventTime {
                        date: Some("2026-03-10".into()),
                        ..EventTime::default()
                    }),
                }),
                r#"{"end":null,"event_id":"ev1_20260310","html_link":null,"location":null,"original_start":{"date":"2026-03-10"},"recurring_event_id":"ev1","source":"charts","start":{"date_time":"2026-03-10T19:00:00+01:00","time_zone":"Europe/Paris"},"status":"cancelled","summary":"Rehearsal","updated":"2026-03-01T10:00:00.000Z"}"#,
            ),
            (
                EventKind::SetlistUpdated(SetlistUpdated {
                    source: source(),
                    spreadsheet_id: "sheet1".into(),
                    range: "Setlist!A1:Z".into(),
                    rows: 1,
                    columns: vec!["Song".into()],
                    initial: false,
                    added: vec![RowChange {
                        position: 1,
                        key: "So What".into(),
                        row: rows,
                    }],
                    removed: vec![],
                    moved: vec![RowMove {
                        key: "Blue".into(),
                        from: 3,
                        to: 2,
                    }],
                    edited: vec![RowEdit {
                        key: "Blue".into(),
                        position: 2,
                        changes: BTreeMap::from([(
                            "Key".to_owned(),
                            CellChange {
                                before: "C".into(),
                                after: "D".into(),
                            },
                        )]),
                    }],
                    columns_changed: Some(ColumnsChange {
                        before: vec![],
                        after: vec!["Song".into()],
                    }),
                }),
                r#"{"added":[{"key":"So What","position":1,"row":{"Song":"So What"}}],"columns":["Song"],"columns_changed":{"after":["Song"],"before":[]},"edited":[{"changes":{"Key":{"after":"D","before":"C"}},"key":"Blue","position":2}],"initial":false,"moved":[{"from":3,"key":"Blue","to":2}],"range":"Setlist!A1:Z","removed":[],"rows":1,"source":"charts","spreadsheet_id":"sheet1"}"#,
            ),
        ]
    }

    fn entity_change(version: u64) -> EntityChanged {
        EntityChanged {
            entity_type: EntityTypeName::parse("setlist_entry").unwrap(),
            id: EntityId::parse("tonight-3").unwrap(),
            version,
            fields: Map::from_iter([("key".to_owned(), json!("D"))]),
            member: UserId::parse("ringo").unwrap(),
            device: DeviceId::parse("ipad-ringo").unwrap(),
            mid: 7,
            text_updates: BTreeMap::new(),
            text_refetch: Vec::new(),
        }
    }

    #[test]
    fn an_entity_event_is_named_by_its_op_and_version() {
        let name = |op, v| EventKind::entity(op, entity_change(v)).name();
        assert_eq!(name(Op::Create, 1), "entity.created");
        assert_eq!(name(Op::Create, 3), "entity.updated");
        assert_eq!(name(Op::Patch, 2), "entity.updated");
        assert_eq!(name(Op::Delete, 4), "entity.deleted");
        assert_eq!(
            EventKind::entity_event_id(&DeviceId::parse("ipad-ringo").unwrap(), 7),
            "m:ipad-ringo:7"
        );
    }

    #[test]
    fn entity_and_conflict_events_keep_their_json() {
        let ts = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let cases = [
            (
                EventKind::EntityUpdated(entity_change(2)),
                r#"{"device":"ipad-ringo","fields":{"key":"D"},"id":"tonight-3","member":"ringo","mid":7,"type":"setlist_entry","version":2}"#,
            ),
            (
                EventKind::ConflictOpened(ConflictOpened {
                    conflict: ConflictId::parse("c1").unwrap(),
                    entity_type: EntityTypeName::parse("song_status").unwrap(),
                    id: EntityId::parse("so-what").unwrap(),
                    field: "status".into(),
                    values: vec![json!("ready"), json!("learning")],
                    deadline: ts,
                }),
                r#"{"conflict":"c1","deadline":"2023-11-14T22:13:20Z","field":"status","id":"so-what","type":"song_status","values":["ready","learning"]}"#,
            ),
            (
                EventKind::ConflictResolved(ConflictResolved {
                    conflict: ConflictId::parse("c1").unwrap(),
                    entity_type: EntityTypeName::parse("song_status").unwrap(),
                    id: EntityId::parse("so-what").unwrap(),
                    field: "status".into(),
                    value: json!("ready"),
                    how: "member".into(),
                    by: Some(UserId::parse("ringo").unwrap()),
                    reason: None,
                }),
                r#"{"by":"ringo","conflict":"c1","field":"status","how":"member","id":"so-what","type":"song_status","value":"ready"}"#,
            ),
            (
                EventKind::PresenceLeft(PresenceChanged {
                    member: UserId::parse("ringo").unwrap(),
                    devices: 0,
                    since: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                    at: DateTime::from_timestamp(1_700_000_600, 0).unwrap(),
                }),
                r#"{"at":"2023-11-14T22:23:20Z","devices":0,"member":"ringo","since":"2023-11-14T22:13:20Z"}"#,
            ),
        ];
        for (kind, text) in cases {
            let name = kind.name();
            let (_, data) = kind.clone().into_parts();
            assert_eq!(serde_json::to_string(&data).unwrap(), text, "{name}");
            assert_eq!(EventKind::from_parts(name, &data).unwrap(), kind, "{name}");
        }
    }

    #[test]
    fn every_kind_keeps_its_name_and_its_json() {
        for (kind, json) in pinned() {
            let name = kind.name();
            let (stored_name, data) = kind.clone().into_parts();
            assert_eq!(stored_name, name);
            assert_eq!(serde_json::to_string(&data).unwrap(), json, "{name}");
            assert_eq!(EventKind::from_parts(name, &data).unwrap(), kind, "{name}");
        }
    }

    #[test]
    fn names_are_spelled_as_clients_know_them() {
        assert_eq!(
            EventKind::NAMES,
            [
                "sync.started",
                "sync.progress",
                "sync.completed",
                "sync.failed",
                "file.created",
                "file.updated",
                "file.deleted",
                "file.moved",
                "calendar.event.created",
                "calendar.event.updated",
                "calendar.event.cancelled",
                "setlist.updated",
                "entity.created",
                "entity.updated",
                "entity.deleted",
                "conflict.opened",
                "conflict.resolved",
                "presence.joined",
                "presence.left",
            ]
        );
        for action in [
            ItemAction::Created,
            ItemAction::Updated,
            ItemAction::Deleted,
            ItemAction::Moved,
        ] {
            assert_eq!(
                EventKind::file(action, file(None)).name(),
                EventKind::file_name(action)
            );
        }
    }

    #[test]
    fn an_unknown_name_or_shape_is_refused() {
        assert!(EventKind::from_parts("file.renamed", &json!({})).is_err());
        assert!(EventKind::from_parts("sync.progress", &json!({"done": 1})).is_err());
    }

    #[test]
    fn the_envelope_keeps_its_field_order() {
        let kind = EventKind::SyncProgress(SyncProgress {
            operation: "op1".into(),
            done: 1,
            total: 2,
        });
        let ts = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let e = crate::model::NewEvent::new("op1:progress:1", ts, kind).at(
            crate::model::ChannelName::parse("band:demo").unwrap(),
            7,
            "e1".into(),
        );
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"channel":"band:demo","seq":7,"epoch":"e1","id":"op1:progress:1","event":"sync.progress","ts":"2023-11-14T22:13:20Z","data":{"done":1,"operation":"op1","total":2}}"#
        );
        assert_eq!(e.kind().unwrap().name(), "sync.progress");
    }
}
