//! [`EntityStore`] on the shared SQLite file (schema v3 of [`super::db`]): a commit is one
//! IMMEDIATE transaction that moves the device's mid, writes the entity (conditional on
//! its version), its history, its conflicts, its events and the receipt (with the seq
//! its event got), the events
//! through the very function [`ChannelLog::append`] uses, so seqs stay gapless and a
//! repeated event id keeps its first seq.
//!
//! [`ChannelLog::append`]: crate::ports::ChannelLog::append

use super::db::{exec, get_u64, int, parse_ts, ts};
use super::store::{EmbeddedStore, append_in, from_json, get_body, list_bodies, to_json};
use crate::entities::mutation::MutationStatus;
use crate::entities::records::{
    Commit, CommitError, ConflictRecord, DeviceRecord, EntityPage, EntityRecord, HistoryEntry,
    Receipt,
};
use crate::entities::stats::VerdictCount;
use crate::model::{BandId, ConflictId, DeviceId, EntityId, EntityTypeName, Event};
use crate::ports::{EntityStore, PortResult};
use anyhow::anyhow;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension as _, params};
use tracing::instrument;

/// The most receipts one [`EntityStore::receipts`] call returns.
const MAX_RECEIPTS: u64 = 1_000;

/// A device as stored: the body as last registered, with the columns that a commit
/// moves (`next_mid`) or a re-registration keeps (`registered_at`) laid over it.
fn get_device_in(
    c: &rusqlite::Connection,
    device: &DeviceId,
) -> anyhow::Result<Option<DeviceRecord>> {
    let sql = "SELECT body, next_mid, registered_at FROM devices WHERE device = ?1";
    let row = c
        .prepare_cached(sql)?
        .query_row([device.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                get_u64(r, 1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    row.map(|(body, next_mid, registered_at)| {
        let mut record: DeviceRecord = from_json(&body)?;
        record.next_mid = next_mid;
        record.registered_at = parse_ts(&registered_at)?;
        Ok(record)
    })
    .transpose()
}

/// Why a commit's conditional writes refused it (the transaction is rolled back).
fn raced(what: String) -> Result<Vec<Event>, CommitError> {
    Err(CommitError::Raced(what))
}

#[async_trait]
impl EntityStore for EmbeddedStore {
    #[instrument(skip(self), fields(%device), level = "debug")]
    async fn get_device(&self, device: &DeviceId) -> PortResult<Option<DeviceRecord>> {
        self.db.read("get_device", |c| get_device_in(c, device))
    }

    /// One upsert whose update only applies for the same member, then the row as stored.
    #[instrument(skip_all, fields(device = %device.device, member = %device.member), level = "debug")]
    async fn register_device(&self, device: &DeviceRecord) -> PortResult<DeviceRecord> {
        self.db.write("register_device", |tx| {
            let sql = "INSERT INTO devices (device, member, next_mid, registered_at, body) \
                       VALUES (?1, ?2, ?3, ?4, ?5) \
                       ON CONFLICT (device) DO UPDATE SET body = excluded.body \
                       WHERE member = excluded.member";
            let row = params![
                device.device.as_str(),
                device.member.as_str(),
                int(device.next_mid.max(1)),
                ts(device.registered_at),
                to_json(device)?
            ];
            exec(tx, sql, row)?;
            get_device_in(tx, &device.device)?
                .ok_or_else(|| anyhow!("device {} vanished while registering", device.device))
        })
    }

    #[instrument(skip(self), fields(%device), level = "debug")]
    async fn receipts(&self, device: &DeviceId, from: u64, to: u64) -> PortResult<Vec<Receipt>> {
        let to = to.min(from.saturating_add(MAX_RECEIPTS - 1));
        self.db.read("receipts", |c| {
            let sql = "SELECT body FROM receipts WHERE device = ?1 AND mid BETWEEN ?2 AND ?3 \
                       ORDER BY mid";
            list_bodies(c, sql, params![device.as_str(), int(from), int(to)])
        })
    }

    /// A walk of the `receipts_parked` partial index, backwards.
    #[instrument(skip(self), fields(%device), level = "debug")]
    async fn parked(&self, device: &DeviceId, limit: usize) -> PortResult<Vec<Receipt>> {
        self.db.read("parked", |c| {
            let sql = "SELECT body FROM receipts INDEXED BY receipts_parked \
                       WHERE device = ?1 AND parked = 1 ORDER BY mid DESC LIMIT ?2";
            list_bodies(c, sql, params![device.as_str(), int(limit)])
        })
    }

    /// The same walk of `receipts_parked`, from below `before`.
    #[instrument(skip(self), fields(%device), level = "debug")]
    async fn parked_before(
        &self,
        device: &DeviceId,
        before: Option<u64>,
        limit: usize,
    ) -> PortResult<Vec<Receipt>> {
        let before = before.unwrap_or(u64::MAX);
        self.db.read("parked_before", |c| {
            let sql = "SELECT body FROM receipts INDEXED BY receipts_parked \
                       WHERE device = ?1 AND parked = 1 AND mid < ?2 ORDER BY mid DESC LIMIT ?3";
            list_bodies(c, sql, params![device.as_str(), int(before), int(limit)])
        })
    }

    /// The receipt leaves the partial index; its body (the verdict, the mutation as
    /// pushed) stays.
    #[instrument(skip(self), fields(%device), level = "debug")]
    async fn dismiss_parked(&self, device: &DeviceId, mid: u64) -> PortResult<bool> {
        self.db.write("dismiss_parked", |tx| {
            let sql =
                "UPDATE receipts SET parked = 0 WHERE device = ?1 AND mid = ?2 AND parked = 1";
            Ok(exec(tx, sql, params![device.as_str(), int(mid)])? > 0)
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn get_entity(
        &self,
        band: &BandId,
        entity_type: &EntityTypeName,
        id: &EntityId,
    ) -> PortResult<Option<EntityRecord>> {
        self.db.read("get_entity", |c| {
            let sql = "SELECT body FROM entities WHERE band = ?1 AND entity_type = ?2 AND id = ?3";
            get_body(c, sql, [band.as_str(), entity_type.as_str(), id.as_str()])
        })
    }

    /// A range of the primary key. A `limit` of 0 reads one.
    #[instrument(skip(self), level = "debug")]
    async fn list_entities(
        &self,
        band: &BandId,
        entity_type: Option<&EntityTypeName>,
        after: Option<&(EntityTypeName, EntityId)>,
        limit: usize,
    ) -> PortResult<EntityPage> {
        let limit = limit.max(1);
        // ("", "") sorts before every (type, id): ids are never empty.
        let (after_type, after_id) = after.map_or(("", ""), |(t, i)| (t.as_str(), i.as_str()));
        let entities: Vec<EntityRecord> = self.db.read("list_entities", |c| {
            let sql = "SELECT body FROM entities WHERE band = ?1 \
                       AND (?2 IS NULL OR entity_type = ?2) AND (entity_type, id) > (?3, ?4) \
                       ORDER BY entity_type, id LIMIT ?5";
            let args = params![
                band.as_str(),
                entity_type.map(EntityTypeName::as_str),
                after_type,
                after_id,
                int(limit.saturating_add(1))
            ];
            list_bodies(c, sql, args)
        })?;
        Ok(EntityPage::of(entities, limit))
    }

    #[instrument(skip(self), level = "debug")]
    async fn history(
        &self,
        band: &BandId,
        entity_type: &EntityTypeName,
        id: &EntityId,
        after_version: u64,
        limit: usize,
    ) -> PortResult<Vec<HistoryEntry>> {
        self.db.read("history", |c| {
            let sql = "SELECT body FROM entity_history \
                       WHERE band = ?1 AND entity_type = ?2 AND id = ?3 AND version > ?4 \
                       ORDER BY version LIMIT ?5";
            let args = params![
                band.as_str(),
                entity_type.as_str(),
                id.as_str(),
                int(after_version),
                int(limit)
            ];
            list_bodies(c, sql, args)
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn history_entry(
        &self,
        band: &BandId,
        entity_type: &EntityTypeName,
        id: &EntityId,
        version: u64,
    ) -> PortResult<Option<HistoryEntry>> {
        self.db.read("history_entry", |c| {
            let sql = "SELECT body FROM entity_history \
                       WHERE band = ?1 AND entity_type = ?2 AND id = ?3 AND version = ?4";
            let args = params![
                band.as_str(),
                entity_type.as_str(),
                id.as_str(),
                int(version)
            ];
            get_body(c, sql, args)
        })
    }

    /// One transaction: a refused conditional write (the device's mid, the entity's
    /// version, the receipt, which comes last to carry its event's seq) rolls it all
    /// back.
    #[instrument(skip_all, fields(device = %commit.device, mid = commit.mid), level = "debug")]
    async fn commit_events(&self, commit: &Commit) -> Result<Vec<Event>, CommitError> {
        commit.check()?;
        let device = commit.device.as_str();
        self.db.write_if("commit", |tx| {
            let sql = "UPDATE devices SET next_mid = ?3 WHERE device = ?1 AND next_mid = ?2";
            let settlement = commit.is_settlement();
            let moved = if settlement {
                1
            } else {
                exec(
                    tx,
                    sql,
                    params![device, int(commit.mid), int(commit.mid + 1)],
                )?
            };
            if moved == 0 {
                return Ok(raced(format!(
                    "device {device} is unknown or no longer at mid {}",
                    commit.mid
                )));
            }
            if let Some(entity) = &commit.entity {
                let keys = (
                    entity.band.as_str(),
                    entity.entity_type.as_str(),
                    entity.id.as_str(),
                );
                let written = if commit.expected_version == 0 {
                    let sql = "INSERT OR IGNORE INTO entities \
                               (band, entity_type, id, version, body) VALUES (?1, ?2, ?3, ?4, ?5)";
                    let row = params![
                        keys.0,
                        keys.1,
                        keys.2,
                        int(entity.version),
                        to_json(entity)?
                    ];
                    exec(tx, sql, row)?
                } else {
                    let sql = "UPDATE entities SET version = ?5, body = ?6 \
                               WHERE band = ?1 AND entity_type = ?2 AND id = ?3 AND version = ?4";
                    let row = params![
                        keys.0,
                        keys.1,
                        keys.2,
                        int(commit.expected_version),
                        int(entity.version),
                        to_json(entity)?
                    ];
                    exec(tx, sql, row)?
                };
                if written == 0 {
                    return Ok(raced(format!(
                        "{}/{} is no longer at version {}",
                        keys.1, keys.2, commit.expected_version
                    )));
                }
            }
            if let Some(h) = &commit.history {
                let sql = "INSERT OR REPLACE INTO entity_history \
                           (band, entity_type, id, version, at, body) \
                           VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
                let row = params![
                    h.band.as_str(),
                    h.entity_type.as_str(),
                    h.id.as_str(),
                    int(h.version),
                    ts(h.at),
                    to_json(h)?
                ];
                exec(tx, sql, row)?;
            }
            for conflict in &commit.conflicts {
                let sql = "INSERT OR REPLACE INTO conflicts (band, id, opened_at, open, body) \
                           VALUES (?1, ?2, ?3, ?4, ?5)";
                let row = params![
                    conflict.band.as_str(),
                    conflict.id.as_str(),
                    ts(conflict.opened_at),
                    conflict.resolution.is_none(),
                    to_json(conflict)?
                ];
                exec(tx, sql, row)?;
            }
            if let Some((band, entity_type, counts)) = crate::entities::stats::counters(commit) {
                let sql = "INSERT INTO verdict_counts (band, entity_type, counter, n) \
                           VALUES (?1, ?2, ?3, ?4) ON CONFLICT (band, entity_type, counter) \
                           DO UPDATE SET n = n + excluded.n";
                for (counter, n) in &counts {
                    exec(
                        tx,
                        sql,
                        params![band.as_str(), entity_type, counter, int(*n)],
                    )?;
                }
            }
            // The events before the receipt, so the receipt carries its event's seq; a
            // refused receipt rolls the appends back with everything else.
            let stored = match commit.events() {
                Some((channel, events)) => append_in(tx, channel, &events)?,
                None => Vec::new(),
            };
            if settlement {
                return Ok(Ok(stored));
            }
            let mut receipt = commit.receipt.clone();
            if let Some(first) = stored.first() {
                receipt.result.seq = Some(first.seq);
            }
            let parked = receipt.result.status == MutationStatus::Rejected;
            let sql = "INSERT OR IGNORE INTO receipts (device, mid, parked, body) \
                       VALUES (?1, ?2, ?3, ?4)";
            let row = params![device, int(commit.mid), parked, to_json(&receipt)?];
            if exec(tx, sql, row)? == 0 {
                return Ok(raced(format!(
                    "{device}#{} has a receipt already",
                    commit.mid
                )));
            }
            Ok(Ok(stored))
        })?
    }

    /// Newest first by the `conflicts_by_time` index.
    #[instrument(skip(self), level = "debug")]
    async fn list_conflicts(
        &self,
        band: &BandId,
        open_only: bool,
        limit: usize,
    ) -> PortResult<Vec<ConflictRecord>> {
        self.db.read("list_conflicts", |c| {
            let sql = "SELECT body FROM conflicts WHERE band = ?1 AND (open = 1 OR NOT ?2) \
                       ORDER BY opened_at DESC, id DESC LIMIT ?3";
            list_bodies(c, sql, params![band.as_str(), open_only, int(limit)])
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn get_conflict(
        &self,
        band: &BandId,
        id: &ConflictId,
    ) -> PortResult<Option<ConflictRecord>> {
        self.db.read("get_conflict", |c| {
            let sql = "SELECT body FROM conflicts WHERE band = ?1 AND id = ?2";
            get_body(c, sql, [band.as_str(), id.as_str()])
        })
    }

    /// One statement over the `entity_history_by_at` range; an entry at its entity's
    /// current version (the newest) is never matched.
    #[instrument(skip(self), level = "debug")]
    async fn prune_history(&self, band: &BandId, before: DateTime<Utc>) -> PortResult<u64> {
        self.db.write("prune_history", |tx| {
            let sql = "DELETE FROM entity_history AS h WHERE h.band = ?1 AND h.at < ?2 \
                       AND h.version < (SELECT e.version FROM entities e WHERE e.band = h.band \
                       AND e.entity_type = h.entity_type AND e.id = h.id)";
            Ok(exec(tx, sql, params![band.as_str(), ts(before)])? as u64)
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn verdict_counts(&self, band: &BandId) -> PortResult<Vec<VerdictCount>> {
        self.db.read("verdict_counts", |c| {
            let sql = "SELECT entity_type, counter, n FROM verdict_counts WHERE band = ?1 \
                       ORDER BY entity_type, counter";
            let mut stmt = c.prepare_cached(sql)?;
            let rows = stmt.query_map([band.as_str()], |r| {
                Ok(VerdictCount {
                    entity_type: r.get(0)?,
                    counter: r.get(1)?,
                    count: get_u64(r, 2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}
