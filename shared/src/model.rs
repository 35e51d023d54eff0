//! The domain model: identifiers that parse (so bad ones never get in), and the records
//! every job reads and writes. Nothing here knows about AWS or SQLite.

use crate::wire::events::EventKind;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an identifier or name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct ParseError {
    pub what: &'static str,
    pub reason: String,
}

fn check_id(
    what: &'static str,
    s: &str,
    (min, max): (usize, usize),
    extra: &[char],
) -> Result<(), ParseError> {
    let err = |reason: String| Err(ParseError { what, reason });
    if s.is_empty() {
        return err("must not be empty".into());
    }
    if s.len() < min {
        return err(format!("shorter than {min} characters"));
    }
    if s.len() > max {
        return err(format!("longer than {max} characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || extra.contains(c)))
    {
        return err(format!("character {c:?} is not allowed"));
    }
    Ok(())
}

/// What [`check_id`] accepts, as a `const fn`, so a constant id is checked when the
/// program is compiled (see [`const_id!`]).
pub const fn id_is_valid(s: &str, (min, max): (usize, usize), extra: &[char]) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() < min || b.len() > max {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let mut ok = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        let mut j = 0;
        while j < extra.len() {
            ok |= extra[j] as u32 == c as u32;
            j += 1;
        }
        if !ok {
            return false;
        }
        i += 1;
    }
    true
}

/// An id from a constant, checked at compile time: `const_id!(DeviceId, "bandsync-settler")`.
/// An invalid constant fails the build instead of panicking at run time.
#[macro_export]
macro_rules! const_id {
    ($ty:ident, $s:expr) => {{
        const _: () = assert!(
            $crate::model::$ty::is_valid_const($s),
            concat!("not a valid ", stringify!($ty))
        );
        $crate::model::$ty::from_const($s)
    }};
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal, [$($extra:literal),*]) => {
        id_type!($(#[$doc])* $name, $what, 1..=$max, [$($extra),*]);
    };
    ($(#[$doc:meta])* $name:ident, $what:literal, $min:literal..=$max:literal, [$($extra:literal),*]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, ParseError> {
                check_id($what, s, ($min, $max), &[$($extra),*])?;
                Ok(Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// Whether `s` parses; a `const fn`, for [`const_id!`].
            pub const fn is_valid_const(s: &str) -> bool {
                id_is_valid(s, ($min, $max), &[$($extra),*])
            }
            /// For [`const_id!`] only, which has checked `s` at compile time.
            #[doc(hidden)]
            pub fn from_const(s: &'static str) -> Self {
                Self(s.to_owned())
            }
        }
        impl TryFrom<String> for $name {
            type Error = ParseError;
            fn try_from(s: String) -> Result<Self, ParseError> {
                Self::parse(&s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                id_schema($what, ($min, $max), &[$($extra),*])
            }
        }
    };
}

/// The JSON Schema of an identifier: what [`check_id`] accepts.
#[cfg(feature = "schema")]
fn id_schema(what: &str, (min, max): (usize, usize), extra: &[char]) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "description": format!("A {what}: ASCII letters, digits, `-`, `_`{}", extra.iter().map(|c| format!(", `{c}`")).collect::<String>()),
        "minLength": min,
        "maxLength": max,
        "pattern": id_pattern(extra, (min, max)),
    })
}

#[cfg(feature = "schema")]
fn id_pattern(extra: &[char], (min, max): (usize, usize)) -> String {
    let extra: String = extra.iter().collect();
    format!("^[A-Za-z0-9_{extra}-]{{{min},{max}}}$")
}

id_type!(
    /// A band: lower-level grouping of members, sources and the `band:<id>` channel.
    BandId, "band id", 64, []);
id_type!(
    /// A source of a band (a watched folder, a Drive folder, a calendar, a setlist sheet).
    /// At most 63 characters: `<band>/<source>` is an SQS MessageGroupId (128 at most).
    SourceId, "source id", 63, []);
id_type!(
    /// The `sub` of a member's token. E-mail-like subjects are allowed.
    UserId, "user id", 128, ['.', '@', '+']);
id_type!(
    /// An API Gateway connection id (base64-ish, e.g. `L0SM9cOFvHcCIhw=`).
    ConnectionId, "connection id", 128, ['=', '+', '/']);
id_type!(
    /// A member's device, chosen by the app (so it can queue changes before it was ever
    /// online) and bound to the first member who registers it.
    DeviceId, "device id", 8..=64, []);
id_type!(
    /// A kind of entity a band keeps (`setlist_entry`, `attendance`, ...): configuration.
    EntityTypeName, "entity type", 64, []);
id_type!(
    /// One entity of a type within a band (`tonight-3`, `rehearsal-42:alice`).
    EntityId, "entity id", 128, ['.', ':']);
id_type!(
    /// An `ask` conflict, named by the push that resolves it.
    ConflictId, "conflict id", 128, [':', '.']);

impl ConflictId {
    /// A conflict id from a digest: `cf-` and its hex, valid by construction.
    pub fn of_digest(digest: &[u8]) -> Self {
        Self(format!("cf-{}", hex::encode(digest)))
    }
}

/// A channel clients subscribe to: `band:<id>`, `user:<id>` or `system`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ChannelName {
    Band(BandId),
    User(UserId),
    System,
}

impl ChannelName {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let bad = |reason: &str| ParseError {
            what: "channel",
            reason: reason.to_owned(),
        };
        if s == "system" {
            return Ok(Self::System);
        }
        match s.split_once(':') {
            Some(("band", id)) => Ok(Self::Band(BandId::parse(id)?)),
            Some(("user", id)) => Ok(Self::User(UserId::parse(id)?)),
            _ => Err(bad("expected band:<id>, user:<id> or system")),
        }
    }
}

impl TryFrom<String> for ChannelName {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        Self::parse(&s)
    }
}
impl From<ChannelName> for String {
    fn from(c: ChannelName) -> String {
        c.to_string()
    }
}
#[cfg(feature = "schema")]
impl schemars::JsonSchema for ChannelName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ChannelName".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let band = id_pattern(&[], (1, 64));
        let user = id_pattern(&['.', '@', '+'], (1, 128));
        let strip = |p: &str| p.trim_start_matches('^').trim_end_matches('$').to_owned();
        schemars::json_schema!({
            "type": "string",
            "description": "A channel: `band:<band id>`, `user:<user id>` or `system`.",
            "pattern": format!("^(band:{}|user:{}|system)$", strip(&band), strip(&user)),
        })
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Band(b) => write!(f, "band:{b}"),
            Self::User(u) => write!(f, "user:{u}"),
            Self::System => f.write_str("system"),
        }
    }
}

/// Per-band sync settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncConfiguration {
    pub band: BandId,
    pub name: String,
    /// Lower-case file extensions that count (`pdf`, `mp3`, ...). Empty means every file.
    #[serde(default)]
    pub file_types: Vec<String>,
    /// The band's Google credentials file (an OAuth client's `authorized_user` file or
    /// a service-account key), sealed with the deployment's credentials key and bound
    /// to the band. Never shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_credentials: Option<SealedSecret>,
    /// The entity types the band declares (the built-ins are there anyway; one of the
    /// same name replaces the built-in).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entity_types: Vec<crate::entities::types::EntityType>,
    /// Refuse pushes of types the band does not declare (`unknown_entity_type`).
    #[serde(default)]
    pub strict_entities: bool,
    /// How many days the band's entity history is kept; none: the deployment's
    /// retention (the scheduler's `history_retention`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_days: Option<u32>,
}

/// A sealed secret as stored: `{"v":1,"alg":"A256GCM","nonce":b64,"ct":b64}`. Sealed
/// and opened by `google::sealed`; a record field here, so that a store adapter reading a
/// configuration needs nothing beyond the model.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    pub v: u32,
    pub alg: String,
    /// Standard base64 of the 12-byte nonce.
    pub nonce: String,
    /// Standard base64 of the ciphertext and its 16-byte tag.
    pub ct: String,
}

/// Shows the format, not the ciphertext.
impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecret")
            .field("v", &self.v)
            .field("alg", &self.alg)
            .field("ct_b64_len", &self.ct.len())
            .finish_non_exhaustive()
    }
}

impl SyncConfiguration {
    /// Does a file of this name pass the band's file-type filter?
    pub fn accepts(&self, file_name: &str) -> bool {
        if self.file_types.is_empty() {
            return true;
        }
        let ext = match file_name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
            _ => return false,
        };
        self.file_types.iter().any(|t| t.eq_ignore_ascii_case(&ext))
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A directory on disk: the local stand-in for a Drive folder.
    Folder,
    Drive,
    Calendar,
    Sheet,
}

/// A place a band's content lives, with the cursor of its last delta sync.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Source {
    pub band: BandId,
    pub id: SourceId,
    pub kind: SourceKind,
    /// Folder path, Drive folder id, calendar id or spreadsheet id.
    pub location: String,
    /// Drive page token / Calendar sync token; unused by folder sources (their catalog is the cursor).
    pub cursor: Option<String>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_operation: Option<String>,
    /// The shared drive of a Drive source whose folder is in one (None: My Drive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drive_id: Option<String>,
    /// The stored record's revision, as the store read it (0: never stored, or stored
    /// by a build before revisions): what [`crate::ports::SourceStore::write_source`]
    /// names so that a write made from a stale read is refused instead of undoing the
    /// one in between. Store bookkeeping, not part of the record: not serialized, and
    /// not compared by `==`.
    #[serde(skip)]
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub revision: u64,
}

/// Equal when they say the same: the revision says only when the store last wrote it.
impl PartialEq for Source {
    fn eq(&self, other: &Self) -> bool {
        // Destructured, so that a new field cannot be left out.
        let Self {
            band,
            id,
            kind,
            location,
            cursor,
            last_sync_at,
            last_operation,
            drive_id,
            revision: _,
        } = self;
        *band == other.band
            && *id == other.id
            && *kind == other.kind
            && *location == other.location
            && *cursor == other.cursor
            && *last_sync_at == other.last_sync_at
            && *last_operation == other.last_operation
            && *drive_id == other.drive_id
    }
}

impl Source {
    /// A source that has never been synced.
    pub fn new(band: BandId, id: SourceId, kind: SourceKind, location: impl Into<String>) -> Self {
        Self {
            band,
            id,
            kind,
            location: location.into(),
            cursor: None,
            last_sync_at: None,
            last_operation: None,
            drive_id: None,
            revision: 0,
        }
    }
}

/// A deleted source whose catalog is still to be purged (see `sync::purge`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePurge {
    pub band: BandId,
    pub source: SourceId,
    /// The kind the source had: which event the removal of each entry makes.
    pub kind: SourceKind,
    pub deleted_at: DateTime<Utc>,
    /// How far the walk of the band's operations (oldest first) has come: the (start,
    /// id) of the last one looked at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations_after: Option<(DateTime<Utc>, String)>,
    /// The walk is over: no operation of the source is left.
    #[serde(default)]
    pub operations_done: bool,
}

/// A push channel: Google's watch channel, or the folder watcher's equivalent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchChannel {
    pub id: String,
    pub band: BandId,
    pub source: SourceId,
    pub resource_id: String,
    /// Hex SHA-256 of the channel token; the token itself is never stored.
    pub token_hash: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_message: Option<u64>,
    pub last_message_at: Option<DateTime<Utc>>,
    /// The kind of source it was opened for: which API's `channels.stop` ends it, even
    /// after the source is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<SourceKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A push notification (Google or the folder watcher).
    Notification,
    /// POST /sync/trigger.
    Manual,
    /// A client's `sync_request`.
    Client,
    /// Periodic reconciliation (push is lossy).
    Reconcile,
}

impl Trigger {
    /// A sync nobody asked for (a notification, a reconcile): when it finds nothing to
    /// do it records no operation, where a manual or client request always gets one.
    pub fn is_background(self) -> bool {
        matches!(self, Trigger::Notification | Trigger::Reconcile)
    }
}

/// What the sync queue carries: "sync this source".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncJob {
    /// Unique per request; becomes the operation id, so a redelivered job resumes the
    /// same operation instead of starting another.
    pub id: String,
    pub band: BandId,
    pub source: SourceId,
    pub trigger: Trigger,
    #[serde(default)]
    pub full: bool,
    pub requested_by: Option<String>,
    pub requested_at: DateTime<Utc>,
}

impl SyncJob {
    /// A new request, with a fresh id.
    pub fn new(
        band: BandId,
        source: SourceId,
        trigger: Trigger,
        full: bool,
        requested_by: Option<String>,
        requested_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            band,
            source,
            trigger,
            full,
            requested_by,
            requested_at,
        }
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    Running,
    Completed,
    Failed,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMetrics {
    pub seen: u64,
    pub synced: u64,
    pub failed: u64,
    pub skipped: u64,
    pub duration_ms: u64,
}

/// One sync pass over one source.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncOperation {
    pub id: String,
    pub band: BandId,
    pub source: SourceId,
    pub trigger: Trigger,
    pub full: bool,
    pub status: OperationStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub metrics: SyncMetrics,
    pub error: Option<String>,
}

impl SyncOperation {
    /// The operation a job starts: its id is the job's, so a redelivery finds it.
    pub fn start(job: &SyncJob, now: DateTime<Utc>) -> Self {
        Self {
            id: job.id.clone(),
            band: job.band.clone(),
            source: job.source.clone(),
            trigger: job.trigger,
            full: job.full,
            status: OperationStatus::Running,
            started_at: now,
            finished_at: None,
            metrics: SyncMetrics::default(),
            error: None,
        }
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemAction {
    Created,
    Updated,
    Deleted,
    Moved,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Synced,
    Failed,
}

/// One change recorded by an operation.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncItem {
    pub operation: String,
    /// Position within the operation, from 1.
    pub n: u32,
    pub file_id: String,
    pub path: String,
    pub action: ItemAction,
    pub status: ItemStatus,
    pub error: Option<String>,
}

/// What the catalog knows of one file of a source: the state the next delta compares to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub band: BandId,
    pub source: SourceId,
    /// Stable across renames and moves.
    pub file_id: String,
    /// Path relative to the source root, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub hash: String,
    /// Modification time in ms since the epoch (a cheap "maybe changed" check).
    pub modified_ms: i64,
}

/// Is this a file name the sync leaves out? Hidden files, and the names editors and
/// downloads use for half-written files. The folder scan skips them, and the folder
/// watcher does not wake the sync for them.
pub fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || [".tmp", ".swp", ".part", ".crdownload"]
            .iter()
            .any(|s| name.ends_with(s))
}

/// An event before the channel log has given it a seq.
///
/// `event` and `data` are the stored form of an [`EventKind`] (the log keeps what it is
/// given, whatever the kind). They are private and [`NewEvent::new`] is the only way to
/// make one, so the name and the payload's fields are always the ones the client
/// contract (`crate::wire`) declares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Deterministic, so a repeated append of the same event is recognised.
    pub id: String,
    event: String,
    pub ts: DateTime<Utc>,
    data: serde_json::Value,
}

impl NewEvent {
    /// An event of this kind, with its name and payload as the clients get them.
    pub fn new(id: impl Into<String>, ts: DateTime<Utc>, kind: EventKind) -> Self {
        let (event, data) = kind.into_parts();
        Self {
            id: id.into(),
            event: event.to_owned(),
            ts,
            data,
        }
    }

    /// The event name (`file.created`, ...).
    pub fn event(&self) -> &str {
        &self.event
    }

    /// The payload, as the log stores it.
    pub fn data(&self) -> &serde_json::Value {
        &self.data
    }

    /// The event the log made of it: this one, at `seq` of `epoch` of `channel`. (The
    /// adapters rebuild events from what they stored this way.)
    pub(crate) fn at(self, channel: ChannelName, seq: u64, epoch: String) -> Event {
        Event {
            channel,
            seq,
            epoch,
            id: self.id,
            event: self.event,
            ts: self.ts,
            data: self.data,
        }
    }
}

/// The envelope a client receives for every event on a channel. Its schema is the
/// envelope's fields with the [`EventKind`] that `event` and `data` spell; like a
/// [`NewEvent`]'s, those two are private: an event is made by the log, from a
/// `NewEvent` (or read back from the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub channel: ChannelName,
    pub seq: u64,
    pub epoch: String,
    pub id: String,
    event: String,
    pub ts: DateTime<Utc>,
    data: serde_json::Value,
}

impl Event {
    /// The event name (`file.created`, ...).
    pub fn event(&self) -> &str {
        &self.event
    }

    /// The payload (`data`), untyped.
    pub fn data(&self) -> &serde_json::Value {
        &self.data
    }

    /// The typed kind and payload, for a reader that wants them (an event of a name
    /// this build does not know, or with another shape, is an error).
    pub fn kind(&self) -> Result<EventKind, serde_json::Error> {
        EventKind::from_parts(&self.event, &self.data)
    }
}

/// The state of a channel's log.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelHead {
    /// Seq of the newest event (0 when none yet).
    pub seq: u64,
    /// Changes whenever the log is recreated: seqs of different epochs are unrelated.
    pub epoch: String,
    /// Seq of the oldest event still retained (seq + 1 when the log is empty).
    pub first_retained: u64,
}

/// API Gateway closes every connection after 2 h; keep records a little longer so a lost
/// $disconnect is cleaned by the TTL.
pub const CONNECTION_TTL: chrono::Duration = chrono::Duration::minutes(130);

/// An open WebSocket connection and who is on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub id: ConnectionId,
    pub user: UserId,
    pub bands: Vec<BandId>,
    pub connected_at: DateTime<Utc>,
    /// Past API Gateway's 2 h limit; a backstop for connections whose $disconnect was lost.
    pub expires_at: DateTime<Utc>,
    /// The device a `register_device` on this connection bound it to, and what it asked
    /// for; none: the connection is sent everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceBinding>,
}

/// A connection's device and its categories (see [`crate::entities::categories`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceBinding {
    pub device: DeviceId,
    #[serde(default)]
    pub categories: Vec<String>,
}

/// One subscriber of a channel, as the broadcaster reads it: the categories come with
/// the subscription, so filtering costs no read per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub connection: ConnectionId,
    /// Empty: everything.
    pub categories: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_const_check_accepts_exactly_what_parse_accepts() {
        let long = "x".repeat(129);
        let cases = [
            "",
            "a",
            "abcdefg",
            "abcdefgh",
            "a-b_c",
            "a.b",
            "a:b",
            "a@b",
            "a b",
            "é",
            "cf-00",
            long.as_str(),
        ];
        for s in cases {
            assert_eq!(
                DeviceId::is_valid_const(s),
                DeviceId::parse(s).is_ok(),
                "device {s:?}"
            );
            assert_eq!(
                UserId::is_valid_const(s),
                UserId::parse(s).is_ok(),
                "user {s:?}"
            );
            assert_eq!(
                EntityId::is_valid_const(s),
                EntityId::parse(s).is_ok(),
                "entity {s:?}"
            );
        }
        let settler = crate::const_id!(DeviceId, "bandsync-settler");
        assert_eq!(settler, DeviceId::parse("bandsync-settler").unwrap());
        let id = ConflictId::of_digest(&[0xab; 16]);
        assert_eq!(ConflictId::parse(id.as_str()).unwrap(), id);
    }

    #[test]
    fn ids_parse_and_refuse() {
        assert!(BandId::parse("the-beatles_64").is_ok());
        for bad in ["", "a b", "band:x", "é", &"x".repeat(65)] {
            assert!(BandId::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(UserId::parse("ringo.starr+drums@example.com").is_ok());
        assert!(ConnectionId::parse("L0SM9cOFvHcCIhw=").is_ok());
    }

    #[test]
    fn channels_round_trip() {
        for s in ["band:demo", "user:alice@example.com", "system"] {
            assert_eq!(ChannelName::parse(s).unwrap().to_string(), s);
        }
        for bad in ["band:", "band", "team:x", "user:a b", "System", ""] {
            assert!(
                ChannelName::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        let json = serde_json::to_string(&ChannelName::parse("band:x").unwrap()).unwrap();
        assert_eq!(json, "\"band:x\"");
        assert!(serde_json::from_str::<ChannelName>("\"nope\"").is_err());
    }

    #[test]
    fn file_type_filter() {
        let mut cfg = SyncConfiguration {
            band: BandId::parse("b").unwrap(),
            name: "B".into(),
            file_types: vec![],
            google_credentials: None,
            entity_types: vec![],
            strict_entities: false,
            history_days: None,
        };
        assert!(cfg.accepts("anything"));
        cfg.file_types = vec!["pdf".into(), "MP3".into()];
        assert!(cfg.accepts("chart.PDF"));
        assert!(cfg.accepts("take1.mp3"));
        assert!(!cfg.accepts("notes.txt"));
        assert!(!cfg.accepts("pdf"));
        assert!(!cfg.accepts(".pdf"));
    }
}
