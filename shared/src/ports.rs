//! The ports: what the jobs need from the outside world, with nothing AWS- or
//! SQLite-specific in their signatures. Each capability is one small trait; `Store`
//! combines the storage ones for adapters that implement them all.

use crate::entities::records::{
    Commit, CommitError, ConflictRecord, DeviceRecord, EntityPage, EntityRecord, HistoryEntry,
    Receipt,
};
use crate::entities::stats::VerdictCount;
use crate::model::*;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// What a port can fail with.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A conditional write lost (optimistic lock, "already exists").
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend failed; the context says where.
    #[error(transparent)]
    Backend(#[from] anyhow::Error),
}

pub type PortResult<T> = Result<T, PortError>;

/// What a conditional write (one that names the revision its read saw) came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written, under this new revision.
    Written { revision: u64 },
    /// Nothing was written: the record is gone (or, for a create, is there already), or
    /// another write came between the read and this one. Not a failure: the writer
    /// reads again (an operator's edit) or stops (a sync pass), and never recreates.
    GoneOrChanged,
}

/// A record as stored, with the revision a conditional write names.
#[derive(Debug, Clone, PartialEq)]
pub struct Revised<T> {
    pub record: T,
    pub revision: u64,
}

/// A fresh revision for a write: random (63 bits, never 0), not a counter, so that a
/// record deleted and created again never has a revision an old reader still holds
/// (a counter would start again at 1 and let a stale write through).
pub fn new_revision() -> u64 {
    (uuid::Uuid::new_v4().as_u64_pair().0 >> 1).max(1)
}

#[async_trait]
pub trait ConfigStore: Send + Sync {
    async fn get_config(&self, band: &BandId) -> PortResult<Option<SyncConfiguration>>;
    /// [`Self::get_config`] with the stored revision, for [`Self::write_config`].
    async fn get_config_revised(
        &self,
        band: &BandId,
    ) -> PortResult<Option<Revised<SyncConfiguration>>>;
    /// Insert or replace, unconditionally (under a new revision): for seeding and tests.
    /// The API writes with [`Self::write_config`].
    async fn put_config(&self, config: &SyncConfiguration) -> PortResult<()>;
    /// Write `config` (under a new revision) only if the stored one still has revision
    /// `expected` (`None`: only if the band has none), atomically. An edit made from a
    /// read that another edit overtook (a credentials delete, say) is `GoneOrChanged`
    /// and writes nothing, so it can never put back what the other one removed.
    async fn write_config(
        &self,
        config: &SyncConfiguration,
        expected: Option<u64>,
    ) -> PortResult<WriteOutcome>;
    /// Every band with a configuration (the band registry the scheduler walks), by id.
    /// A key lookup, never a scan.
    async fn list_bands(&self) -> PortResult<Vec<BandId>>;
}

#[async_trait]
pub trait SourceStore: Send + Sync {
    /// The source with its stored [`Source::revision`] (a strongly consistent read).
    async fn get_source(&self, band: &BandId, source: &SourceId) -> PortResult<Option<Source>>;
    /// Sources come with their stored [`Source::revision`].
    async fn list_sources(&self, band: &BandId) -> PortResult<Vec<Source>>;
    /// Insert or replace, unconditionally (under a new revision): for seeding (the local
    /// stack's configured sources) and tests. The API and the sync worker write with
    /// [`Self::write_source`].
    async fn put_source(&self, source: &Source) -> PortResult<()>;
    /// Write `source` (under a new revision) only if the stored one still has revision
    /// `expected` (`None`: only if there is no such source), atomically; `source.revision`
    /// itself is ignored. A write from a read that another write overtook (an operator's
    /// delete or move, or the other way round) is `GoneOrChanged` and writes nothing: a
    /// deleted source never comes back this way.
    async fn write_source(
        &self,
        source: &Source,
        expected: Option<u64>,
    ) -> PortResult<WriteOutcome>;
    /// How many sync passes have started on the source (0 before the first). Kept apart
    /// from the source record: a small item read by every notification, and a counter no
    /// rewrite of the source can move back.
    async fn generation(&self, band: &BandId, source: &SourceId) -> PortResult<u64>;
    /// A pass starts: add one to the generation, atomically; the new value.
    async fn bump_generation(&self, band: &BandId, source: &SourceId) -> PortResult<u64>;
    /// Forget a source (its catalog is purged after a [`Self::put_purge`] mark, its
    /// watch channels stopped by the scheduler's watch keeper, its operations kept as
    /// the band's history). A missing one is not an error.
    async fn delete_source(&self, band: &BandId, source: &SourceId) -> PortResult<()>;
    /// Mark a source's catalog for purging (before the source is deleted), replacing an
    /// earlier mark of the same source.
    async fn put_purge(&self, purge: &SourcePurge) -> PortResult<()>;
    /// The band's purge marks, by source id (a key lookup, never a scan).
    async fn purges(&self, band: &BandId) -> PortResult<Vec<SourcePurge>>;
    /// Drop a purge mark; a missing one is not an error.
    async fn forget_purge(&self, band: &BandId, source: &SourceId) -> PortResult<()>;
}

/// The per-source file catalog: what the last sync saw.
#[async_trait]
pub trait CatalogStore: Send + Sync {
    async fn list_files(&self, band: &BandId, source: &SourceId) -> PortResult<Vec<FileEntry>>;
    /// Insert or replace by (band, source, file_id).
    async fn put_file(&self, file: &FileEntry) -> PortResult<()>;
    /// Put many (a sync's chunk): adapters write them in as few requests as they can.
    /// Not atomic: a failure part-way leaves some written, which a retry puts again.
    async fn put_files(&self, files: &[FileEntry]) -> PortResult<()> {
        for f in files {
            self.put_file(f).await?;
        }
        Ok(())
    }
    /// Deleting a file that is not there is not an error.
    async fn delete_file(&self, band: &BandId, source: &SourceId, file_id: &str) -> PortResult<()>;
    /// The first `limit` entries of the catalog, in file-id order (a key range, never a
    /// scan): what a purge, which deletes each page it reads, takes next.
    async fn first_files(
        &self,
        band: &BandId,
        source: &SourceId,
        limit: usize,
    ) -> PortResult<Vec<FileEntry>>;
    /// Delete many (a page of a purge): adapters delete them in as few requests as they
    /// can. Not atomic, as [`Self::put_files`]; missing ones are not an error.
    async fn delete_files(
        &self,
        band: &BandId,
        source: &SourceId,
        file_ids: &[String],
    ) -> PortResult<()> {
        for id in file_ids {
            self.delete_file(band, source, id).await?;
        }
        Ok(())
    }
}

#[async_trait]
pub trait OperationStore: Send + Sync {
    /// Insert or replace by id.
    async fn put_operation(&self, op: &SyncOperation) -> PortResult<()>;
    async fn get_operation(&self, id: &str) -> PortResult<Option<SyncOperation>>;
    /// A band's operations, newest first.
    async fn list_operations(&self, band: &BandId, limit: usize) -> PortResult<Vec<SyncOperation>>;
    /// A band's operations after `after` (a start and an id; none: from the oldest),
    /// oldest first, at most `limit`: a key range of the band's listing, never a scan.
    async fn operations_after(
        &self,
        band: &BandId,
        after: Option<&(DateTime<Utc>, String)>,
        limit: usize,
    ) -> PortResult<Vec<SyncOperation>>;
    /// Forget an operation: its record, its listing entry and its items. A missing one
    /// is not an error.
    async fn delete_operation(&self, op: &SyncOperation) -> PortResult<()>;
    /// Insert or replace by (operation, n): a redelivered job may record the same item again.
    async fn put_item(&self, item: &SyncItem) -> PortResult<()>;
    /// Put many, as [`CatalogStore::put_files`] does.
    async fn put_items(&self, items: &[SyncItem]) -> PortResult<()> {
        for i in items {
            self.put_item(i).await?;
        }
        Ok(())
    }
    /// An operation's items in n order.
    async fn list_items(&self, operation: &str) -> PortResult<Vec<SyncItem>>;
    /// A page of them: the items with n > `after`, in n order, at most `limit`. A key
    /// range: only the page is read.
    async fn list_items_after(
        &self,
        operation: &str,
        after: u32,
        limit: usize,
    ) -> PortResult<Vec<SyncItem>>;
    /// How many items the operation has: its highest n (items are numbered from 1
    /// without gaps), read from the last item alone; 0 for none.
    async fn count_items(&self, operation: &str) -> PortResult<u64>;
}

#[async_trait]
pub trait WatchChannelStore: Send + Sync {
    async fn put_watch_channel(&self, channel: &WatchChannel) -> PortResult<()>;
    async fn get_watch_channel(&self, id: &str) -> PortResult<Option<WatchChannel>>;
    async fn list_watch_channels(&self, band: &BandId) -> PortResult<Vec<WatchChannel>>;
    /// Forget a channel (stopped, or expired); a missing one is not an error.
    async fn delete_watch_channel(&self, channel: &WatchChannel) -> PortResult<()>;
    /// Note the newest message number seen on a channel (for operators).
    async fn record_message(&self, id: &str, number: u64, at: DateTime<Utc>) -> PortResult<()>;
}

#[async_trait]
pub trait DedupeStore: Send + Sync {
    /// True the first time `key` (a webhook message, `<watch channel>#<message number>`,
    /// or the scheduler's `reconcile:<dedup id>` mark) is seen within `ttl`; false for a repeat. The store namespaces the key itself.
    async fn first_seen(&self, key: &str, now: DateTime<Utc>, ttl: Duration) -> PortResult<bool>;
    /// Has `key` been marked by [`Self::first_seen`] within its ttl? A read only: it
    /// marks nothing (the webhook checks before it queues and marks after).
    async fn seen(&self, key: &str, now: DateTime<Utc>) -> PortResult<bool>;
}

/// The per-channel event log: gapless seqs, an epoch, a retention window.
#[async_trait]
pub trait ChannelLog: Send + Sync {
    /// Give each event the next seq of the channel, in order, and store it. An event whose
    /// id the channel already has keeps its first seq and is returned as stored, so a
    /// repeated append never creates a second copy. Creates the channel (new epoch) if needed.
    async fn append(&self, channel: &ChannelName, events: &[NewEvent]) -> PortResult<Vec<Event>>;
    /// Events with seq > `after_seq`, oldest first, at most `limit`.
    async fn read_after(
        &self,
        channel: &ChannelName,
        after_seq: u64,
        limit: usize,
    ) -> PortResult<Vec<Event>>;
    /// None when the channel has never had an event.
    async fn head(&self, channel: &ChannelName) -> PortResult<Option<ChannelHead>>;
    /// Drop events older than `before` (the retention window). Returns how many went.
    async fn prune(&self, channel: &ChannelName, before: DateTime<Utc>) -> PortResult<u64>;
    /// The highest seq the broadcaster has pushed to subscribers (0 when none).
    async fn delivered(&self, channel: &ChannelName) -> PortResult<u64>;
    /// Record that everything up to `seq` was pushed. Never moves the watermark back.
    async fn mark_delivered(&self, channel: &ChannelName, seq: u64) -> PortResult<()>;
}

#[async_trait]
pub trait ConnectionStore: Send + Sync {
    async fn put_connection(&self, conn: &Connection) -> PortResult<()>;
    async fn get_connection(&self, id: &ConnectionId) -> PortResult<Option<Connection>>;
    /// Remove the connection and all its subscriptions; a missing one is not an error.
    async fn delete_connection(&self, id: &ConnectionId) -> PortResult<()>;
    async fn subscribe(
        &self,
        id: &ConnectionId,
        channel: &ChannelName,
        at: DateTime<Utc>,
    ) -> PortResult<()>;
    async fn unsubscribe(&self, id: &ConnectionId, channel: &ChannelName) -> PortResult<()>;
    /// Connections subscribed to a channel (a key lookup, never a scan).
    async fn subscribers(&self, channel: &ChannelName) -> PortResult<Vec<ConnectionId>>;
    async fn subscriptions(&self, id: &ConnectionId) -> PortResult<Vec<ChannelName>>;
    /// Bind a connection to a device and its categories (the record and every current
    /// and later subscription carry them). A missing connection is not an error: `false`.
    async fn bind_device(&self, id: &ConnectionId, binding: &DeviceBinding) -> PortResult<bool>;
    /// [`Self::subscribers`] with each one's categories, in the same one key lookup.
    async fn subscribers_filtered(&self, channel: &ChannelName) -> PortResult<Vec<Subscriber>>;
}

/// Is the backend reachable? Used by GET /sync/health.
/// Members' own changes: entities, their history, the (device, mid) receipts, devices
/// and conflicts (see [`crate::entities`]). Every write of a verdict is one [`Commit`].
#[async_trait]
pub trait EntityStore: Send + Sync {
    async fn get_device(&self, device: &DeviceId) -> PortResult<Option<DeviceRecord>>;
    /// Register a device, or update its platform, name and categories. The first member
    /// to register an id keeps it: for another member this changes nothing and returns
    /// the stored record (whose `member` says whose it is). `next_mid` is never changed
    /// here. Returns the record as stored.
    async fn register_device(&self, device: &DeviceRecord) -> PortResult<DeviceRecord>;
    /// The receipts of `device` for mids `from..=to` (at most 1,000), in mid order.
    async fn receipts(&self, device: &DeviceId, from: u64, to: u64) -> PortResult<Vec<Receipt>>;
    /// The device's rejected (parked) mutations, newest first.
    async fn parked(&self, device: &DeviceId, limit: usize) -> PortResult<Vec<Receipt>>;
    /// A page of [`Self::parked`]: the parked mutations with a mid below `before` (none:
    /// from the newest), newest first, at most `limit`. A key range, never a scan.
    async fn parked_before(
        &self,
        device: &DeviceId,
        before: Option<u64>,
        limit: usize,
    ) -> PortResult<Vec<Receipt>>;
    /// The member dismissed a parked mutation: it is no longer listed. Its receipt stays
    /// (the mid is still answered with its verdict). True if it was listed; dismissing
    /// one that is not (again, or never parked) is not an error: false.
    async fn dismiss_parked(&self, device: &DeviceId, mid: u64) -> PortResult<bool>;
    async fn get_entity(
        &self,
        band: &BandId,
        entity_type: &EntityTypeName,
        id: &EntityId,
    ) -> PortResult<Option<EntityRecord>>;
    /// A band's entities (deleted ones included), of one type or all, in (type, id)
    /// order after `after`.
    async fn list_entities(
        &self,
        band: &BandId,
        entity_type: Option<&EntityTypeName>,
        after: Option<&(EntityTypeName, EntityId)>,
        limit: usize,
    ) -> PortResult<EntityPage>;
    /// An entity's history after `after_version`, oldest first.
    async fn history(
        &self,
        band: &BandId,
        entity_type: &EntityTypeName,
        id: &EntityId,
        after_version: u64,
        limit: usize,
    ) -> PortResult<Vec<HistoryEntry>>;
    async fn history_entry(
        &self,
        band: &BandId,
        entity_type: &EntityTypeName,
        id: &EntityId,
        version: u64,
    ) -> PortResult<Option<HistoryEntry>>;
    /// Write a verdict, all or nothing (see [`Commit`]). Returns the commit's event as
    /// the log stored it (with its seq and epoch), if it had one; an event whose id the
    /// channel has already keeps its first seq, as [`ChannelLog::append`] does. A commit
    /// whose receipt exists already is [`CommitError::Raced`] (the device's mid moved),
    /// as is one whose device is unknown or whose entity moved past `expected_version`;
    /// a raced commit wrote nothing. An inconsistent one ([`Commit::check`]) or one a
    /// backend cannot hold (a DynamoDB item is at most 400 KB) is refused as
    /// [`CommitError::Port`], also having written nothing.
    async fn commit(&self, commit: &Commit) -> Result<Option<Event>, CommitError> {
        Ok(self.commit_events(commit).await?.into_iter().next())
    }
    /// [`Self::commit`], answering every event of the commit as the log stored it
    /// (`event`, then `more_events`; none without an event). The receipt is written
    /// with `result.seq` set to the seq of `event` (the one it kept if the log had its id
    /// already), so a duplicate answered from the receipt has the seq too.
    async fn commit_events(&self, commit: &Commit) -> Result<Vec<Event>, CommitError>;
    /// A band's conflicts, newest first; open ones only if `open_only`.
    async fn list_conflicts(
        &self,
        band: &BandId,
        open_only: bool,
        limit: usize,
    ) -> PortResult<Vec<ConflictRecord>>;
    async fn get_conflict(
        &self,
        band: &BandId,
        id: &ConflictId,
    ) -> PortResult<Option<ConflictRecord>>;
    /// Forget history entries committed before `before` (the retention), never an
    /// entity's newest. Returns how many went.
    async fn prune_history(&self, band: &BandId, before: DateTime<Utc>) -> PortResult<u64>;
    /// The band's verdict counters (see [`crate::entities::stats::counters`]), which
    /// [`Self::commit_events`] bumps in the same atomic write as the verdict: each
    /// committed verdict is counted once, a raced or refused commit not at all. Summed
    /// per (entity type, counter), in that order; a key lookup, never a scan.
    async fn verdict_counts(&self, band: &BandId) -> PortResult<Vec<VerdictCount>>;
}

/// A member's presence in a band, as [`PresenceStore`] keeps it: listed from its first
/// device's connect until the sweep publishes that it left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRecord {
    pub band: BandId,
    pub member: UserId,
    /// Live connections now (0 while it is leaving).
    pub devices: u64,
    /// When the session the others saw it join began.
    pub since: DateTime<Utc>,
    /// Its last device went then: it leaves unless one comes back within the debounce.
    pub leaving_since: Option<DateTime<Utc>>,
}

/// What a connection's arrival made of its member's presence in one band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// No session: this is the member's first device (publish `presence.joined`).
    Joined { since: DateTime<Utc> },
    /// The member was leaving (its last device went within the debounce) and is back:
    /// the mark is cleared and the others never saw it leave.
    Back { since: DateTime<Utc> },
    /// Another device of a member who is online already.
    Another { since: DateTime<Utc>, devices: u64 },
    /// This connection was counted already (a redelivered connect).
    Repeat { since: DateTime<Utc> },
}

/// What a connection's departure made of its member's presence in one band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// The member's last device went: it is marked leaving since the departure's time.
    Leaving { since: DateTime<Utc> },
    /// Other devices remain.
    Remaining { devices: u64 },
    /// No device remains and the member is marked leaving already, or has no session
    /// (a redelivered disconnect): nothing changed.
    Unchanged,
}

/// Connections per (band, member), kept by $connect and $disconnect. Every write is
/// idempotent under redelivery (a set of connection ids, not a counter) and says
/// atomically whether it was the first device or the last.
#[async_trait]
pub trait PresenceStore: Send + Sync {
    async fn arrive(
        &self,
        band: &BandId,
        member: &UserId,
        conn: &ConnectionId,
        at: DateTime<Utc>,
    ) -> PortResult<Arrival>;
    /// On its member's last device, marks it leaving since `at` (and indexes the mark so
    /// [`Self::leaving`] finds it without a scan).
    async fn depart(
        &self,
        band: &BandId,
        member: &UserId,
        conn: &ConnectionId,
        at: DateTime<Utc>,
    ) -> PortResult<Departure>;
    /// Members marked leaving at or before `before`, oldest first, at most `limit` (a
    /// key lookup, never a scan). May list a member who came back since: [`Self::settle`]
    /// tells.
    async fn leaving(&self, before: DateTime<Utc>, limit: usize)
    -> PortResult<Vec<PresenceRecord>>;
    /// The member left for good: end its session if it is still leaving since
    /// `leaving_since` with no device. True if it left (also for a repeat of a settle
    /// that did), false if a device came back. The mark stays listed by
    /// [`Self::leaving`] until [`Self::forget_mark`], so a sweep that fails before it
    /// published `presence.left` publishes it on the next round.
    async fn settle(
        &self,
        band: &BandId,
        member: &UserId,
        leaving_since: DateTime<Utc>,
    ) -> PortResult<bool>;
    /// Drop the mark `leaving_since` from what [`Self::leaving`] lists (a mark that is
    /// no longer there is not an error).
    async fn forget_mark(
        &self,
        band: &BandId,
        member: &UserId,
        leaving_since: DateTime<Utc>,
    ) -> PortResult<()>;
    /// The band's members with a session (leaving ones included), by member id.
    async fn present(&self, band: &BandId) -> PortResult<Vec<PresenceRecord>>;
}

#[async_trait]
pub trait HealthCheck: Send + Sync {
    async fn check(&self) -> PortResult<()>;
}

/// Every storage capability: what a full backend (embedded or DynamoDB) implements.
pub trait Store:
    ConfigStore
    + SourceStore
    + CatalogStore
    + OperationStore
    + WatchChannelStore
    + DedupeStore
    + ChannelLog
    + ConnectionStore
    + EntityStore
    + PresenceStore
    + HealthCheck
{
}
impl<T> Store for T where
    T: ConfigStore
        + SourceStore
        + CatalogStore
        + OperationStore
        + WatchChannelStore
        + DedupeStore
        + ChannelLog
        + ConnectionStore
        + EntityStore
        + PresenceStore
        + HealthCheck
{
}

/// A message for a FIFO queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    /// Messages of one group are delivered one at a time, in order.
    pub group: String,
    /// A second message with the same id within the dedup window is dropped.
    pub dedup_id: String,
    pub body: String,
}

#[async_trait]
pub trait Queue: Send + Sync {
    async fn send(&self, message: OutMessage) -> PortResult<()>;
}

/// What a post to a connection came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Delivered,
    /// The connection is gone (API Gateway's 410): forget it.
    Gone,
}

#[async_trait]
pub trait Pusher: Send + Sync {
    async fn post(&self, connection: &ConnectionId, data: &[u8]) -> PortResult<PushOutcome>;
}

/// Critical alerts for operators (SNS on AWS).
#[async_trait]
pub trait Notifier: Send + Sync {
    async fn alert(&self, subject: &str, message: &str) -> PortResult<()>;
}

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
