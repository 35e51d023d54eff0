//! Every key of the two tables, in one place: the schema of the module doc of [`super`],
//! spelled out. The ports take domain values (a band, a channel, a webhook message's key);
//! the prefixes that keep record types apart within a table are added here and nowhere
//! else, so no job ever builds a storage key.

use super::item::{Item, s, ts};
use crate::model::{
    BandId, ChannelName, ConflictId, ConnectionId, DeviceId, EntityId, EntityTypeName, SourceId,
    SyncOperation, UserId,
};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// A primary key: partition `pk`, sort `sk`.
pub(super) fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

// Sync table: bands, their configuration and sources.

/// `BAND#b`: a band's configuration, sources, generations and watch channel listing.
pub(super) fn band_pk(band: &BandId) -> String {
    format!("BAND#{band}")
}

/// `BAND#b / CONFIG`.
pub(super) fn config(band: &BandId) -> Item {
    key(band_pk(band), "CONFIG")
}

/// The partition that lists every band with a configuration.
pub(super) const REGISTRY_PK: &str = "BANDS";
/// Sort keys of the registry: `BAND#<band>`.
pub(super) const REGISTRY_PREFIX: &str = "BAND#";

/// `BANDS / BAND#b`.
pub(super) fn registry_entry(band: &BandId) -> Item {
    key(REGISTRY_PK, format!("{REGISTRY_PREFIX}{band}"))
}

/// Sort keys of a band's sources: `SOURCE#<source>`.
pub(super) const SOURCE_PREFIX: &str = "SOURCE#";

/// `BAND#b / SOURCE#s`.
pub(super) fn source(band: &BandId, source: &SourceId) -> Item {
    key(band_pk(band), format!("{SOURCE_PREFIX}{source}"))
}

/// `BAND#b / GEN#s`: the source's generation counter.
pub(super) fn generation(band: &BandId, source: &SourceId) -> Item {
    key(band_pk(band), format!("GEN#{source}"))
}

/// Sort keys of a band's purge marks: `PURGE#<source>`.
pub(super) const PURGE_PREFIX: &str = "PURGE#";

/// `BAND#b / PURGE#s`: a deleted source whose catalog is still to be purged.
pub(super) fn purge(band: &BandId, source: &SourceId) -> Item {
    key(band_pk(band), format!("{PURGE_PREFIX}{source}"))
}

// Sync table: the catalog.

/// `FILES#b#s`: a source's catalog.
pub(super) fn files_pk(band: &BandId, source: &SourceId) -> String {
    format!("FILES#{band}#{source}")
}

/// Sort keys of a catalog: `FILE#<file id>`.
pub(super) const FILE_PREFIX: &str = "FILE#";

/// `FILES#b#s / FILE#id`.
pub(super) fn file(band: &BandId, source: &SourceId, file_id: &str) -> Item {
    key(files_pk(band, source), format!("{FILE_PREFIX}{file_id}"))
}

// Sync table: operations.

/// `OP#id`: an operation's record and its items.
pub(super) fn operation_pk(id: &str) -> String {
    format!("OP#{id}")
}

/// `OP#id / OP`.
pub(super) fn operation(id: &str) -> Item {
    key(operation_pk(id), "OP")
}

/// `OPS#b`: a band's operations, by start time.
pub(super) fn operations_pk(band: &BandId) -> String {
    format!("OPS#{band}")
}

/// `OPS#b / <started_at>#<id>`: fixed-width times, so sort order is time order.
pub(super) fn operation_listing(op: &SyncOperation) -> Item {
    key(
        operations_pk(&op.band),
        format!("{}#{}", ts(op.started_at), op.id),
    )
}

/// Sort keys of an operation's items: `ITEM#<n>`.
pub(super) const OPERATION_ITEM_PREFIX: &str = "ITEM#";

/// `OP#id / ITEM#n`, zero-padded so sort order is n order.
pub(super) fn operation_item(operation: &str, n: u32) -> Item {
    key(operation_pk(operation), operation_item_sk(n))
}

/// `ITEM#n`, zero-padded (u32::MAX has 10 digits).
pub(super) fn operation_item_sk(n: u32) -> String {
    format!("{OPERATION_ITEM_PREFIX}{n:010}")
}

// Sync table: watch channels.

/// `CHANNEL#id / CHANNEL`.
pub(super) fn watch_channel(id: &str) -> Item {
    key(format!("CHANNEL#{id}"), "CHANNEL")
}

/// Sort keys of a band's watch channel listing: `WATCH#<id>`.
pub(super) const WATCH_PREFIX: &str = "WATCH#";

/// `BAND#b / WATCH#id`.
pub(super) fn band_watch(band: &BandId, id: &str) -> Item {
    key(band_pk(band), format!("{WATCH_PREFIX}{id}"))
}

// Sync table: webhook dedupe.

/// `WEBHOOK#<message> / DEDUPE`.
pub(super) fn dedupe(message: &str) -> Item {
    key(format!("WEBHOOK#{message}"), "DEDUPE")
}

/// Where builds before the keys moved here stored a message: the intake passed
/// `WEBHOOK#<channel>#<n>` and this adapter added its own `WEBHOOK#` again.
pub(super) fn legacy_dedupe(message: &str) -> Item {
    key(format!("WEBHOOK#WEBHOOK#{message}"), "DEDUPE")
}

// Sync table: channel logs. Connections table: a channel's subscribers.

/// `CHAN#c`: a channel's head and events (sync table), its subscribers (connections).
pub(super) fn channel_pk(channel: &ChannelName) -> String {
    format!("CHAN#{channel}")
}

/// `CHAN#c / HEAD`.
pub(super) fn head(channel: &ChannelName) -> Item {
    key(channel_pk(channel), "HEAD")
}

/// Sort keys of a channel's events: `SEQ#<seq>`.
pub(super) const SEQ_PREFIX: &str = "SEQ#";

/// `SEQ#<seq>`, zero-padded so sort order is seq order.
pub(super) fn seq_sk(seq: u64) -> String {
    format!("{SEQ_PREFIX}{seq:020}")
}

/// The seq an event's sort key names.
pub(super) fn seq_of(sk: &str) -> Option<u64> {
    sk.strip_prefix(SEQ_PREFIX)?.parse().ok()
}

/// `CHAN#c / SEQ#n`.
pub(super) fn event(channel: &ChannelName, seq: u64) -> Item {
    key(channel_pk(channel), seq_sk(seq))
}

/// Sort keys of a channel's event ids: `EVID#<id>`.
pub(super) const EVENT_ID_PREFIX: &str = "EVID#";

/// `CHAN#c / EVID#id`: the seq of an event id.
pub(super) fn event_id(channel: &ChannelName, id: &str) -> Item {
    key(channel_pk(channel), format!("{EVENT_ID_PREFIX}{id}"))
}

// Sync table: two-way sync (devices, receipts, entities, history, conflicts).

/// `DEVICE#d`: a device, its receipts and its parked (rejected) receipts.
pub(super) fn device_pk(device: &DeviceId) -> String {
    format!("DEVICE#{device}")
}

/// `DEVICE#d / DEVICE`: member, next_mid, registered_at and the record.
pub(super) fn device(device: &DeviceId) -> Item {
    key(device_pk(device), "DEVICE")
}

/// Sort keys of a device's receipts: `MID#<mid>`.
pub(super) const RECEIPT_PREFIX: &str = "MID#";
/// Sort keys of a device's parked receipts: `PARKED#<mid>`.
pub(super) const PARKED_PREFIX: &str = "PARKED#";

/// `MID#<mid>` / `PARKED#<mid>`, zero-padded so sort order is mid order.
pub(super) fn mid_sk(prefix: &str, mid: u64) -> String {
    format!("{prefix}{mid:020}")
}

/// `DEVICE#d / MID#n`: the verdict on mid n.
pub(super) fn receipt(device: &DeviceId, mid: u64) -> Item {
    key(device_pk(device), mid_sk(RECEIPT_PREFIX, mid))
}

/// `DEVICE#d / PARKED#n`: a copy of a rejected verdict, so the parked ones are one
/// Query of their own.
pub(super) fn parked(device: &DeviceId, mid: u64) -> Item {
    key(device_pk(device), mid_sk(PARKED_PREFIX, mid))
}

/// `ENTITIES#b`: a band's current entities, sorted by `<type>#<id>`. Types and ids are
/// `[A-Za-z0-9_.:-]`, all above `#` and below `~`, so sort order is (type, id) order and
/// `~` bounds every range.
pub(super) fn entities_pk(band: &BandId) -> String {
    format!("ENTITIES#{band}")
}

/// `<type>#<id>`.
pub(super) fn entity_sk(entity_type: &EntityTypeName, id: &EntityId) -> String {
    format!("{entity_type}#{id}")
}

/// Above every entity sort key (and every id).
pub(super) const ENTITY_SK_END: &str = "~";

/// The sort keys of one type's entities: from `<type>#` (below its every id) to
/// `<type>#~` (above them).
pub(super) fn entity_type_range(entity_type: &EntityTypeName) -> (String, String) {
    (
        format!("{entity_type}#"),
        format!("{entity_type}#{ENTITY_SK_END}"),
    )
}

/// `ENTITIES#b / <type>#<id>`.
pub(super) fn entity(band: &BandId, entity_type: &EntityTypeName, id: &EntityId) -> Item {
    key(entities_pk(band), entity_sk(entity_type, id))
}

/// `HIST#b#<type>#<id>`: an entity's history.
pub(super) fn history_pk(band: &BandId, entity_type: &EntityTypeName, id: &EntityId) -> String {
    format!("HIST#{band}#{entity_type}#{id}")
}

/// Sort keys of an entity's history: `V#<version>`.
pub(super) const VERSION_PREFIX: &str = "V#";

/// `V#<version>`, zero-padded so sort order is version order.
pub(super) fn version_sk(version: u64) -> String {
    format!("{VERSION_PREFIX}{version:020}")
}

/// The version a history sort key names.
pub(super) fn version_of(sk: &str) -> Option<u64> {
    sk.strip_prefix(VERSION_PREFIX)?.parse().ok()
}

/// `HIST#b#<type>#<id> / V#n`.
pub(super) fn history(
    band: &BandId,
    entity_type: &EntityTypeName,
    id: &EntityId,
    version: u64,
) -> Item {
    key(history_pk(band, entity_type, id), version_sk(version))
}

/// `STATS#b`: a band's verdict counters, one item per (entity type, device): a device's
/// commits are serialized by its mid, so no two transactions race for one counter item.
pub(super) fn stats_pk(band: &BandId) -> String {
    format!("STATS#{band}")
}

/// `STATS#b / <type>#<device>`.
pub(super) fn stats_shard(band: &BandId, entity_type: &str, device: &DeviceId) -> Item {
    key(stats_pk(band), format!("{entity_type}#{device}"))
}

/// `CONFLICTS#b`: a band's conflicts, by id and in two newest-first listings.
pub(super) fn conflicts_pk(band: &BandId) -> String {
    format!("CONFLICTS#{band}")
}

/// `CONFLICTS#b / ID#id`.
pub(super) fn conflict(band: &BandId, id: &ConflictId) -> Item {
    key(conflicts_pk(band), format!("ID#{id}"))
}

/// Sort keys of every conflict by opening time: `AT#<opened_at>#<id>`.
pub(super) const CONFLICT_AT_PREFIX: &str = "AT#";
/// Sort keys of the open ones: `OPEN#<opened_at>#<id>`.
pub(super) const CONFLICT_OPEN_PREFIX: &str = "OPEN#";

/// `CONFLICTS#b / <prefix><opened_at>#<id>`: fixed-width times, so sort order is time
/// order.
pub(super) fn conflict_listing(
    prefix: &str,
    band: &BandId,
    opened_at: chrono::DateTime<chrono::Utc>,
    id: &ConflictId,
) -> Item {
    key(
        conflicts_pk(band),
        format!("{prefix}{}#{id}", ts(opened_at)),
    )
}

// Connections table.

/// `CONN#id`: a connection's record and subscriptions.
pub(super) fn connection_pk(id: &ConnectionId) -> String {
    format!("CONN#{id}")
}

/// `CONN#id / META`.
pub(super) fn connection(id: &ConnectionId) -> Item {
    key(connection_pk(id), "META")
}

/// Sort keys of a channel's subscribers: `CONN#<id>`.
pub(super) const SUBSCRIBER_PREFIX: &str = "CONN#";

/// `CHAN#c / CONN#id`: fan-out is one Query of the channel.
pub(super) fn subscriber(channel: &ChannelName, id: &ConnectionId) -> Item {
    key(channel_pk(channel), format!("{SUBSCRIBER_PREFIX}{id}"))
}

/// Sort keys of a connection's subscriptions: `SUB#<channel>`.
pub(super) const SUBSCRIPTION_PREFIX: &str = "SUB#";

/// `CONN#id / SUB#c`: what to clean on disconnect.
pub(super) fn subscription(id: &ConnectionId, channel: &ChannelName) -> Item {
    key(connection_pk(id), format!("{SUBSCRIPTION_PREFIX}{channel}"))
}

// Connections table: presence.

/// `PRES#b`: the band's members with a presence item.
pub(super) fn presence_pk(band: &BandId) -> String {
    format!("PRES#{band}")
}

/// Sort keys of a band's presence items: `MEMBER#<member>`.
pub(super) const PRESENCE_MEMBER_PREFIX: &str = "MEMBER#";

/// `PRES#b / MEMBER#m`: the member's live connections (`conns`, a string set) and its
/// session (`since`, `leaving_since`, `left_at`).
pub(super) fn presence(band: &BandId, member: &UserId) -> Item {
    key(
        presence_pk(band),
        format!("{PRESENCE_MEMBER_PREFIX}{member}"),
    )
}

/// The partition of every leaving mark, by time: the sweep reads the due ones with one
/// Query. Marks are few (members whose last device went in the last seconds).
pub(super) const LEAVING_PK: &str = "PRESENCE#LEAVING";

/// The upper bound of the leaving marks at or before `before` (`~` sorts after `#`).
pub(super) fn leaving_until(before: DateTime<Utc>) -> String {
    format!("{}~", ts(before))
}

/// `PRESENCE#LEAVING / <leaving_since>#<band>#<member>`: fixed-width times first, so
/// sort order is time order.
pub(super) fn leaving_mark(band: &BandId, member: &UserId, leaving_since: DateTime<Utc>) -> Item {
    key(LEAVING_PK, format!("{}#{band}#{member}", ts(leaving_since)))
}

// Both tables.

/// `HEALTH / CHECK`: never written; reading it proves the table answers.
pub(super) fn health() -> Item {
    key("HEALTH", "CHECK")
}
