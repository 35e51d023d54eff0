//! [`EmbeddedStore`]: every storage port on the shared SQLite file, with the same
//! guarantees the DynamoDB tables give (idempotent re-puts, gapless per-channel seqs,
//! key lookups for fan-out), checked by the same [`crate::contract`] suites.

use super::db::{Db, after, exec, get_opt_u64, get_u64, int, ts};
use crate::model::{
    BandId, ChannelHead, ChannelName, Connection, ConnectionId, DeviceBinding, Event, FileEntry,
    NewEvent, Source, SourceId, SourcePurge, Subscriber, SyncConfiguration, SyncItem,
    SyncOperation, WatchChannel,
};
use crate::ports::{
    CatalogStore, ChannelLog, ConfigStore, ConnectionStore, DedupeStore, HealthCheck,
    OperationStore, PortResult, Revised, SourceStore, WatchChannelStore, WriteOutcome,
    new_revision,
};
use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension as _, Params, params};
use serde::{Serialize, de::DeserializeOwned};
use std::path::Path;
use std::time::Duration;
use tracing::instrument;

/// The embedded implementation of every storage port. Clones share one connection.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    pub(super) db: Db,
}

impl EmbeddedStore {
    /// Open (or create) the database file, e.g. `<data_dir>/bandsync.db`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            db: Db::open(path)?,
        })
    }

    /// A store that lives in memory for as long as a clone of it does.
    pub fn in_memory() -> anyhow::Result<Self> {
        Ok(Self {
            db: Db::in_memory()?,
        })
    }

    /// The shared handle, for the [`super::EmbeddedQueue`]s that live in the same file.
    pub fn db(&self) -> Db {
        self.db.clone()
    }

    /// Forget every connection and subscription. The local stack calls this at start:
    /// no socket survives a restart, and (unlike DynamoDB) nothing here expires records
    /// by TTL. Not a port method: on AWS the TTL does this job.
    pub fn clear_connections(&self) -> PortResult<u64> {
        self.db.write("clear_connections", |tx| {
            exec(tx, "DELETE FROM subscriptions", [])?;
            Ok(exec(tx, "DELETE FROM connections", [])? as u64)
        })
    }
}

pub(super) fn to_json<T: Serialize>(record: &T) -> anyhow::Result<String> {
    serde_json::to_string(record).context("encoding a record")
}

pub(super) fn from_json<T: DeserializeOwned>(body: &str) -> anyhow::Result<T> {
    serde_json::from_str(body).context("decoding a stored record")
}

/// The first column of every row `sql` selects, decoded by `decode`, in the query's order.
fn list_decoded<T>(
    c: &rusqlite::Connection,
    sql: &str,
    params: impl Params,
    decode: impl Fn(&str) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |row| row.get::<_, String>(0))?;
    rows.map(|text| decode(&text?)).collect()
}

/// The records (JSON `body` as the first column) `sql` selects.
pub(super) fn list_bodies<T: DeserializeOwned>(
    c: &rusqlite::Connection,
    sql: &str,
    params: impl Params,
) -> anyhow::Result<Vec<T>> {
    list_decoded(c, sql, params, from_json)
}

/// The record of the one row `sql` selects by its key, if any.
pub(super) fn get_body<T: DeserializeOwned>(
    c: &rusqlite::Connection,
    sql: &str,
    params: impl Params,
) -> anyhow::Result<Option<T>> {
    let body: Option<String> = c
        .prepare_cached(sql)?
        .query_row(params, |row| row.get(0))
        .optional()?;
    body.as_deref().map(from_json).transpose()
}

/// The record (`body`) and revision (`revision`, the second column) of the one row `sql`
/// selects by its key, if any.
fn get_revised<T: DeserializeOwned>(
    c: &rusqlite::Connection,
    sql: &str,
    params: impl Params,
) -> anyhow::Result<Option<Revised<T>>> {
    let row: Option<(String, i64)> = c
        .prepare_cached(sql)?
        .query_row(params, |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    row.map(|(body, revision)| {
        Ok(Revised {
            record: from_json(&body)?,
            revision: revision as u64,
        })
    })
    .transpose()
}

/// A source as stored: its body, with the revision beside it.
fn revised_source(r: Revised<Source>) -> Source {
    Source {
        revision: r.revision,
        ..r.record
    }
}

/// A conditional write's outcome from the rows it changed (none: the condition failed).
fn outcome(changed: usize, revision: i64) -> WriteOutcome {
    if changed == 0 {
        WriteOutcome::GoneOrChanged
    } else {
        WriteOutcome::Written {
            revision: revision as u64,
        }
    }
}

/// Insert (`expected` None: only if the key is free) or update (only if the row still has
/// revision `expected`) one row of `table` keyed by `keys`, setting `body` and a new
/// revision. One statement, so the check and the write are one atomic step.
fn write_revised(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    keys: &[(&str, &str)],
    body: &str,
    expected: Option<u64>,
) -> anyhow::Result<WriteOutcome> {
    let revision = new_revision() as i64;
    let mut values: Vec<&dyn rusqlite::ToSql> = keys.iter().map(|(_, v)| v as _).collect();
    values.push(&body);
    values.push(&revision);
    let changed = match expected {
        None => {
            let names: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
            let marks: Vec<String> = (1..=keys.len() + 2).map(|i| format!("?{i}")).collect();
            let sql = format!(
                "INSERT INTO {table} ({}, body, revision) VALUES ({}) ON CONFLICT DO NOTHING",
                names.join(", "),
                marks.join(", ")
            );
            tx.prepare_cached(&sql)?.execute(values.as_slice())?
        }
        Some(expected) => {
            let expected = expected as i64;
            values.push(&expected);
            let n = keys.len();
            let wheres: Vec<String> = keys
                .iter()
                .enumerate()
                .map(|(i, (k, _))| format!("{k} = ?{}", i + 1))
                .collect();
            let sql = format!(
                "UPDATE {table} SET body = ?{}, revision = ?{} WHERE {} AND revision = ?{}",
                n + 1,
                n + 2,
                wheres.join(" AND "),
                n + 3
            );
            tx.prepare_cached(&sql)?.execute(values.as_slice())?
        }
    };
    Ok(outcome(changed, revision))
}

#[async_trait]
impl ConfigStore for EmbeddedStore {
    #[instrument(skip(self), level = "debug")]
    async fn get_config(&self, band: &BandId) -> PortResult<Option<SyncConfiguration>> {
        self.db.read("get_config", |c| {
            get_body(
                c,
                "SELECT body FROM configs WHERE band = ?1",
                [band.as_str()],
            )
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn get_config_revised(
        &self,
        band: &BandId,
    ) -> PortResult<Option<Revised<SyncConfiguration>>> {
        self.db.read("get_config_revised", |c| {
            let sql = "SELECT body, revision FROM configs WHERE band = ?1";
            get_revised(c, sql, [band.as_str()])
        })
    }

    #[instrument(skip_all, fields(band = %config.band), level = "debug")]
    async fn put_config(&self, config: &SyncConfiguration) -> PortResult<()> {
        self.db.write("put_config", |tx| {
            let sql = "INSERT OR REPLACE INTO configs (band, body, revision) VALUES (?1, ?2, ?3)";
            let revision = new_revision() as i64;
            exec(
                tx,
                sql,
                params![config.band.as_str(), to_json(config)?, revision],
            )?;
            Ok(())
        })
    }

    #[instrument(skip_all, fields(band = %config.band), level = "debug")]
    async fn write_config(
        &self,
        config: &SyncConfiguration,
        expected: Option<u64>,
    ) -> PortResult<WriteOutcome> {
        self.db.write("write_config", |tx| {
            let body = to_json(config)?;
            write_revised(
                tx,
                "configs",
                &[("band", config.band.as_str())],
                &body,
                expected,
            )
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn list_bands(&self) -> PortResult<Vec<BandId>> {
        self.db.read("list_bands", |c| {
            let mut stmt = c.prepare("SELECT band FROM configs ORDER BY band")?;
            let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
            ids.map(|id| Ok(BandId::parse(&id?)?)).collect()
        })
    }
}

#[async_trait]
impl SourceStore for EmbeddedStore {
    #[instrument(skip(self), level = "debug")]
    async fn get_source(&self, band: &BandId, source: &SourceId) -> PortResult<Option<Source>> {
        self.db.read("get_source", |c| {
            let sql = "SELECT body, revision FROM sources WHERE band = ?1 AND source = ?2";
            let got = get_revised(c, sql, [band.as_str(), source.as_str()])?;
            Ok(got.map(revised_source))
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn list_sources(&self, band: &BandId) -> PortResult<Vec<Source>> {
        self.db.read("list_sources", |c| {
            let sql = "SELECT body, revision FROM sources WHERE band = ?1 ORDER BY source";
            let mut stmt = c.prepare_cached(sql)?;
            let rows = stmt.query_map([band.as_str()], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?;
            rows.map(|row| {
                let (body, revision) = row?;
                Ok(revised_source(Revised {
                    record: from_json(&body)?,
                    revision: revision as u64,
                }))
            })
            .collect()
        })
    }

    #[instrument(skip_all, fields(band = %source.band, source = %source.id), level = "debug")]
    async fn put_source(&self, source: &Source) -> PortResult<()> {
        self.db.write("put_source", |tx| {
            let sql = "INSERT OR REPLACE INTO sources (band, source, body, revision) \
                       VALUES (?1, ?2, ?3, ?4)";
            let body = to_json(source)?;
            let revision = new_revision() as i64;
            exec(
                tx,
                sql,
                params![source.band.as_str(), source.id.as_str(), body, revision],
            )?;
            Ok(())
        })
    }

    #[instrument(skip_all, fields(band = %source.band, source = %source.id), level = "debug")]
    async fn write_source(
        &self,
        source: &Source,
        expected: Option<u64>,
    ) -> PortResult<WriteOutcome> {
        self.db.write("write_source", |tx| {
            let body = to_json(source)?;
            let keys = [
                ("band", source.band.as_str()),
                ("source", source.id.as_str()),
            ];
            write_revised(tx, "sources", &keys, &body, expected)
        })
    }
    #[instrument(skip(self), level = "debug")]
    async fn generation(&self, band: &BandId, source: &SourceId) -> PortResult<u64> {
        self.db.read("generation", |c| {
            let sql = "SELECT n FROM generations WHERE band = ?1 AND source = ?2";
            let n: Option<i64> = c
                .query_row(sql, [band.as_str(), source.as_str()], |r| r.get(0))
                .optional()?;
            Ok(n.unwrap_or(0) as u64)
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn bump_generation(&self, band: &BandId, source: &SourceId) -> PortResult<u64> {
        self.db.write("bump_generation", |tx| {
            let sql = "INSERT INTO generations (band, source, n) VALUES (?1, ?2, 1) \
                       ON CONFLICT (band, source) DO UPDATE SET n = n + 1 RETURNING n";
            let n: i64 = tx.query_row(sql, [band.as_str(), source.as_str()], |r| r.get(0))?;
            Ok(n as u64)
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn delete_source(&self, band: &BandId, source: &SourceId) -> PortResult<()> {
        self.db.write("delete_source", |tx| {
            let sql = "DELETE FROM sources WHERE band = ?1 AND source = ?2";
            exec(tx, sql, [band.as_str(), source.as_str()])?;
            Ok(())
        })
    }

    #[instrument(skip_all, fields(band = %purge.band, source = %purge.source), level = "debug")]
    async fn put_purge(&self, purge: &SourcePurge) -> PortResult<()> {
        self.db.write("put_purge", |tx| {
            let sql =
                "INSERT OR REPLACE INTO source_purges (band, source, body) VALUES (?1, ?2, ?3)";
            let body = to_json(purge)?;
            exec(
                tx,
                sql,
                params![purge.band.as_str(), purge.source.as_str(), body],
            )?;
            Ok(())
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn purges(&self, band: &BandId) -> PortResult<Vec<SourcePurge>> {
        self.db.read("purges", |c| {
            let sql = "SELECT body FROM source_purges WHERE band = ?1 ORDER BY source";
            list_bodies(c, sql, [band.as_str()])
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn forget_purge(&self, band: &BandId, source: &SourceId) -> PortResult<()> {
        self.db.write("forget_purge", |tx| {
            let sql = "DELETE FROM source_purges WHERE band = ?1 AND source = ?2";
            exec(tx, sql, [band.as_str(), source.as_str()])?;
            Ok(())
        })
    }
}

#[async_trait]
impl CatalogStore for EmbeddedStore {
    #[instrument(skip(self), level = "debug")]
    async fn list_files(&self, band: &BandId, source: &SourceId) -> PortResult<Vec<FileEntry>> {
        self.db.read("list_files", |c| {
            let sql = "SELECT body FROM files WHERE band = ?1 AND source = ?2 ORDER BY file_id";
            list_bodies(c, sql, [band.as_str(), source.as_str()])
        })
    }

    #[instrument(skip_all, fields(band = %file.band, source = %file.source, file = %file.file_id), level = "debug")]
    async fn put_file(&self, file: &FileEntry) -> PortResult<()> {
        self.put_files(std::slice::from_ref(file)).await
    }

    /// One transaction for them all.
    #[instrument(skip_all, fields(n = files.len()), level = "debug")]
    async fn put_files(&self, files: &[FileEntry]) -> PortResult<()> {
        self.db.write("put_files", |tx| {
            let sql =
                "INSERT OR REPLACE INTO files (band, source, file_id, body) VALUES (?1, ?2, ?3, ?4)";
            for file in files {
                let body = to_json(file)?;
                exec(tx, sql, params![file.band.as_str(), file.source.as_str(), file.file_id, body])?;
            }
            Ok(())
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn delete_file(&self, band: &BandId, source: &SourceId, file_id: &str) -> PortResult<()> {
        self.db.write("delete_file", |tx| {
            let sql = "DELETE FROM files WHERE band = ?1 AND source = ?2 AND file_id = ?3";
            exec(tx, sql, [band.as_str(), source.as_str(), file_id])?;
            Ok(())
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn first_files(
        &self,
        band: &BandId,
        source: &SourceId,
        limit: usize,
    ) -> PortResult<Vec<FileEntry>> {
        self.db.read("first_files", |c| {
            let sql = "SELECT body FROM files WHERE band = ?1 AND source = ?2 \
                       ORDER BY file_id LIMIT ?3";
            list_bodies(c, sql, params![band.as_str(), source.as_str(), int(limit)])
        })
    }

    /// One transaction for them all.
    #[instrument(skip(self, file_ids), fields(n = file_ids.len()), level = "debug")]
    async fn delete_files(
        &self,
        band: &BandId,
        source: &SourceId,
        file_ids: &[String],
    ) -> PortResult<()> {
        self.db.write("delete_files", |tx| {
            let sql = "DELETE FROM files WHERE band = ?1 AND source = ?2 AND file_id = ?3";
            for id in file_ids {
                exec(tx, sql, [band.as_str(), source.as_str(), id])?;
            }
            Ok(())
        })
    }
}

#[async_trait]
impl OperationStore for EmbeddedStore {
    #[instrument(skip_all, fields(id = %op.id, band = %op.band), level = "debug")]
    async fn put_operation(&self, op: &SyncOperation) -> PortResult<()> {
        self.db.write("put_operation", |tx| {
            let sql = "INSERT OR REPLACE INTO operations (id, band, started_at, body) \
                       VALUES (?1, ?2, ?3, ?4)";
            let body = to_json(op)?;
            exec(
                tx,
                sql,
                params![op.id, op.band.as_str(), ts(op.started_at), body],
            )?;
            Ok(())
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn get_operation(&self, id: &str) -> PortResult<Option<SyncOperation>> {
        self.db.read("get_operation", |c| {
            get_body(c, "SELECT body FROM operations WHERE id = ?1", [id])
        })
    }

    /// Newest first (ties broken by id, so pages are stable), walking the
    /// `operations_by_band` index backwards.
    #[instrument(skip(self), level = "debug")]
    async fn list_operations(&self, band: &BandId, limit: usize) -> PortResult<Vec<SyncOperation>> {
        self.db.read("list_operations", |c| {
            let sql = "SELECT body FROM operations WHERE band = ?1 \
                       ORDER BY started_at DESC, id DESC LIMIT ?2";
            list_bodies(c, sql, params![band.as_str(), int(limit)])
        })
    }

    /// Forwards along the `operations_by_band` index.
    #[instrument(skip(self), level = "debug")]
    async fn operations_after(
        &self,
        band: &BandId,
        after: Option<&(DateTime<Utc>, String)>,
        limit: usize,
    ) -> PortResult<Vec<SyncOperation>> {
        self.db.read("operations_after", |c| {
            let (at, id) = match after {
                Some((at, id)) => (ts(*at), id.clone()),
                None => (String::new(), String::new()),
            };
            let sql = "SELECT body FROM operations WHERE band = ?1 AND (started_at, id) > (?2, ?3) \
                       ORDER BY started_at, id LIMIT ?4";
            list_bodies(c, sql, params![band.as_str(), at, id, int(limit)])
        })
    }

    #[instrument(skip_all, fields(id = %op.id), level = "debug")]
    async fn delete_operation(&self, op: &SyncOperation) -> PortResult<()> {
        self.db.write("delete_operation", |tx| {
            exec(tx, "DELETE FROM items WHERE operation = ?1", [&op.id])?;
            exec(tx, "DELETE FROM operations WHERE id = ?1", [&op.id])?;
            Ok(())
        })
    }

    #[instrument(skip_all, fields(operation = %item.operation, n = item.n), level = "debug")]
    async fn put_item(&self, item: &SyncItem) -> PortResult<()> {
        self.put_items(std::slice::from_ref(item)).await
    }

    /// One transaction for them all.
    #[instrument(skip_all, fields(n = items.len()), level = "debug")]
    async fn put_items(&self, items: &[SyncItem]) -> PortResult<()> {
        self.db.write("put_items", |tx| {
            let sql = "INSERT OR REPLACE INTO items (operation, n, body) VALUES (?1, ?2, ?3)";
            for item in items {
                exec(tx, sql, params![item.operation, item.n, to_json(item)?])?;
            }
            Ok(())
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn list_items(&self, operation: &str) -> PortResult<Vec<SyncItem>> {
        self.db.read("list_items", |c| {
            let sql = "SELECT body FROM items WHERE operation = ?1 ORDER BY n";
            list_bodies(c, sql, [operation])
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn list_items_after(
        &self,
        operation: &str,
        after: u32,
        limit: usize,
    ) -> PortResult<Vec<SyncItem>> {
        self.db.read("list_items_after", |c| {
            let sql = "SELECT body FROM items WHERE operation = ?1 AND n > ?2 ORDER BY n LIMIT ?3";
            list_bodies(c, sql, params![operation, after, int(limit)])
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn count_items(&self, operation: &str) -> PortResult<u64> {
        self.db.read("count_items", |c| {
            let sql = "SELECT MAX(n) FROM items WHERE operation = ?1";
            let n: Option<i64> = c.query_row(sql, [operation], |r| r.get(0))?;
            Ok(n.map_or(0, |n| n.max(0) as u64))
        })
    }
}

const GET_WATCH_CHANNEL: &str = "SELECT body FROM watch_channels WHERE id = ?1";

#[async_trait]
impl WatchChannelStore for EmbeddedStore {
    #[instrument(skip_all, fields(id = %channel.id, band = %channel.band), level = "debug")]
    async fn put_watch_channel(&self, channel: &WatchChannel) -> PortResult<()> {
        self.db
            .write("put_watch_channel", |tx| put_watch_channel(tx, channel))
    }

    #[instrument(skip(self), level = "debug")]
    async fn get_watch_channel(&self, id: &str) -> PortResult<Option<WatchChannel>> {
        self.db.read("get_watch_channel", |c| {
            get_body(c, GET_WATCH_CHANNEL, [id])
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn list_watch_channels(&self, band: &BandId) -> PortResult<Vec<WatchChannel>> {
        self.db.read("list_watch_channels", |c| {
            let sql = "SELECT body FROM watch_channels WHERE band = ?1 ORDER BY id";
            list_bodies(c, sql, [band.as_str()])
        })
    }

    #[instrument(skip_all, fields(id = %channel.id), level = "debug")]
    async fn delete_watch_channel(&self, channel: &WatchChannel) -> PortResult<()> {
        self.db.write("delete_watch_channel", |tx| {
            tx.execute("DELETE FROM watch_channels WHERE id = ?1", [&channel.id])?;
            Ok(())
        })
    }

    /// Only ever moves forward: notifications can arrive out of order, and an older
    /// number must not hide a newer one. An unknown channel is left alone (it was
    /// replaced or stopped while the message was in flight).
    #[instrument(skip(self), level = "debug")]
    async fn record_message(&self, id: &str, number: u64, at: DateTime<Utc>) -> PortResult<()> {
        self.db.write("record_message", |tx| {
            let Some(mut channel) = get_body::<WatchChannel>(tx, GET_WATCH_CHANNEL, [id])? else {
                return Ok(());
            };
            if channel.last_message.is_some_and(|seen| seen >= number) {
                return Ok(());
            }
            channel.last_message = Some(number);
            channel.last_message_at = Some(at);
            put_watch_channel(tx, &channel)
        })
    }
}

fn put_watch_channel(tx: &rusqlite::Connection, channel: &WatchChannel) -> anyhow::Result<()> {
    let sql = "INSERT OR REPLACE INTO watch_channels (id, band, body) VALUES (?1, ?2, ?3)";
    exec(
        tx,
        sql,
        params![channel.id, channel.band.as_str(), to_json(channel)?],
    )?;
    Ok(())
}

#[async_trait]
impl DedupeStore for EmbeddedStore {
    /// Expired keys are swept first (an index range, amortised O(1) per key), so the
    /// table holds only live keys and "already there" means "seen within its ttl".
    #[instrument(skip(self), level = "debug")]
    async fn first_seen(&self, key: &str, now: DateTime<Utc>, ttl: Duration) -> PortResult<bool> {
        self.db.write("first_seen", |tx| {
            exec(tx, "DELETE FROM dedupe WHERE expires_at <= ?1", [ts(now)])?;
            let sql = "INSERT OR IGNORE INTO dedupe (key, expires_at) VALUES (?1, ?2)";
            let key = dedupe_key(key);
            let inserted = exec(tx, sql, params![key, ts(after(now, ttl)?)])?;
            Ok(inserted == 1)
        })
    }

    async fn seen(&self, key: &str, now: DateTime<Utc>) -> PortResult<bool> {
        self.db.read("seen", |c| {
            let sql = "SELECT 1 FROM dedupe WHERE key = ?1 AND expires_at > ?2";
            let found: Option<i64> = c
                .query_row(sql, params![dedupe_key(key), ts(now)], |r| r.get(0))
                .optional()?;
            Ok(found.is_some())
        })
    }
}

/// How the `dedupe` table keys a webhook message. Earlier builds were given
/// `WEBHOOK#<channel>#<n>` by the intake and stored it as is; the intake now passes
/// `<channel>#<n>` and the prefix is added here, so rows in an existing data dir keep
/// matching and need no migration.
fn dedupe_key(message: &str) -> String {
    format!("WEBHOOK#{message}")
}

/// Rebuild the envelope from what `channel_events` keeps: the seq and epoch columns and
/// the appended [`NewEvent`] as the body.
fn event_from(channel: &ChannelName, seq: u64, epoch: String, new: NewEvent) -> Event {
    new.at(channel.clone(), seq, epoch)
}

/// The events `sql` selects as `seq, epoch, body`, in the query's order.
fn query_events(
    c: &rusqlite::Connection,
    channel: &ChannelName,
    sql: &str,
    params: impl Params,
) -> anyhow::Result<Vec<Event>> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |row| {
        Ok((
            get_u64(row, 0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    rows.map(|row| {
        let (seq, epoch, body) = row?;
        Ok(event_from(channel, seq, epoch, from_json(&body)?))
    })
    .collect()
}

/// The channel's (seq, epoch), creating the head at seq 0 with a fresh epoch if the
/// channel has never had an event.
fn head_or_create(tx: &rusqlite::Connection, channel: &str) -> anyhow::Result<(u64, String)> {
    let sql = "SELECT seq, epoch FROM channel_heads WHERE channel = ?1";
    let head = tx
        .prepare_cached(sql)?
        .query_row([channel], |row| Ok((get_u64(row, 0)?, row.get(1)?)))
        .optional()?;
    if let Some(head) = head {
        return Ok(head);
    }
    let epoch = uuid::Uuid::new_v4().simple().to_string();
    let sql = "INSERT INTO channel_heads (channel, seq, epoch) VALUES (?1, 0, ?2)";
    exec(tx, sql, [channel, &epoch])?;
    Ok((0, epoch))
}

/// Append within the caller's transaction: what [`ChannelLog::append`] does, and what an
/// entity commit does with its event so the change and its event are one write.
pub(super) fn append_in(
    tx: &rusqlite::Connection,
    channel: &ChannelName,
    events: &[NewEvent],
) -> anyhow::Result<Vec<Event>> {
    let name = channel.to_string();
    let (mut seq, epoch) = head_or_create(tx, &name)?;
    let mut out = Vec::with_capacity(events.len());
    for new in events {
        let sql = "SELECT seq, epoch, body FROM channel_events WHERE channel = ?1 AND id = ?2";
        if let Some(stored) = query_events(tx, channel, sql, [&name, &new.id])?.pop() {
            out.push(stored);
            continue;
        }
        seq += 1;
        let sql = "INSERT INTO channel_events (channel, seq, epoch, id, ts, body) \
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
        let row = params![name, int(seq), epoch, new.id, ts(new.ts), to_json(new)?];
        exec(tx, sql, row)?;
        out.push(event_from(channel, seq, epoch.clone(), new.clone()));
    }
    let sql = "UPDATE channel_heads SET seq = ?2 WHERE channel = ?1";
    exec(tx, sql, params![name, int(seq)])?;
    Ok(out)
}

#[async_trait]
impl ChannelLog for EmbeddedStore {
    /// One transaction: the head's seq and the events move together, so seqs stay
    /// gapless whatever fails, and a re-appended event id (a redelivered job) finds its
    /// first copy instead of taking a new seq.
    #[instrument(skip(self, events), fields(%channel, events = events.len()), level = "debug")]
    async fn append(&self, channel: &ChannelName, events: &[NewEvent]) -> PortResult<Vec<Event>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.db.write("append", |tx| append_in(tx, channel, events))
    }

    #[instrument(skip(self), fields(%channel), level = "debug")]
    async fn read_after(
        &self,
        channel: &ChannelName,
        after_seq: u64,
        limit: usize,
    ) -> PortResult<Vec<Event>> {
        self.db.read("read_after", |c| {
            let sql = "SELECT seq, epoch, body FROM channel_events \
                       WHERE channel = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";
            let args = params![channel.to_string(), int(after_seq), int(limit)];
            query_events(c, channel, sql, args)
        })
    }

    /// One statement, so the seq and the oldest retained event come from one snapshot.
    #[instrument(skip(self), fields(%channel), level = "debug")]
    async fn head(&self, channel: &ChannelName) -> PortResult<Option<ChannelHead>> {
        self.db.read("head", |c| {
            let sql = "SELECT h.seq, h.epoch, \
                       (SELECT MIN(e.seq) FROM channel_events e WHERE e.channel = h.channel) \
                       FROM channel_heads h WHERE h.channel = ?1";
            let head = c
                .prepare_cached(sql)?
                .query_row([channel.to_string()], |row| {
                    let seq = get_u64(row, 0)?;
                    Ok(ChannelHead {
                        seq,
                        epoch: row.get(1)?,
                        first_retained: get_opt_u64(row, 2)?.unwrap_or(seq + 1),
                    })
                })
                .optional()?;
            Ok(head)
        })
    }

    #[instrument(skip(self), fields(%channel), level = "debug")]
    async fn delivered(&self, channel: &ChannelName) -> PortResult<u64> {
        self.db.read("delivered", |c| {
            let sql = "SELECT delivered FROM channel_heads WHERE channel = ?1";
            let seq = c
                .prepare_cached(sql)?
                .query_row([channel.to_string()], |row| get_u64(row, 0))
                .optional()?;
            Ok(seq.unwrap_or(0))
        })
    }

    #[instrument(skip(self), fields(%channel), level = "debug")]
    async fn mark_delivered(&self, channel: &ChannelName, seq: u64) -> PortResult<()> {
        self.db.write("mark_delivered", |tx| {
            let sql = "UPDATE channel_heads SET delivered = MAX(delivered, ?2) WHERE channel = ?1";
            exec(tx, sql, params![channel.to_string(), int(seq)])?;
            Ok(())
        })
    }

    /// The head is left alone, so seqs keep counting up after everything was pruned.
    #[instrument(skip(self), fields(%channel), level = "debug")]
    async fn prune(&self, channel: &ChannelName, before: DateTime<Utc>) -> PortResult<u64> {
        // By seq, not by ts alone: everything up to the newest event older than the cutoff
        // goes, so the retained events are always one gapless run ending at the head.
        self.db.write("prune", |tx| {
            let sql = "DELETE FROM channel_events WHERE channel = ?1 AND seq <= \
                       (SELECT COALESCE(MAX(seq), 0) FROM channel_events WHERE channel = ?1 AND ts < ?2)";
            let gone = exec(tx, sql, [channel.to_string(), ts(before)])?;
            Ok(gone as u64)
        })
    }
}

#[async_trait]
impl ConnectionStore for EmbeddedStore {
    #[instrument(skip_all, fields(id = %conn.id, user = %conn.user), level = "debug")]
    async fn put_connection(&self, conn: &Connection) -> PortResult<()> {
        self.db.write("put_connection", |tx| {
            let sql = "INSERT OR REPLACE INTO connections (id, body) VALUES (?1, ?2)";
            exec(tx, sql, params![conn.id.as_str(), to_json(conn)?])?;
            Ok(())
        })
    }

    #[instrument(skip(self), fields(%id), level = "debug")]
    async fn get_connection(&self, id: &ConnectionId) -> PortResult<Option<Connection>> {
        self.db.read("get_connection", |c| {
            get_body(
                c,
                "SELECT body FROM connections WHERE id = ?1",
                [id.as_str()],
            )
        })
    }

    /// One transaction, so no subscription outlives its connection (the broadcaster
    /// would otherwise keep posting to a dead id).
    #[instrument(skip(self), fields(%id), level = "debug")]
    async fn delete_connection(&self, id: &ConnectionId) -> PortResult<()> {
        self.db.write("delete_connection", |tx| {
            exec(
                tx,
                "DELETE FROM subscriptions WHERE connection = ?1",
                [id.as_str()],
            )?;
            exec(tx, "DELETE FROM connections WHERE id = ?1", [id.as_str()])?;
            Ok(())
        })
    }

    /// Idempotent: a repeated subscribe keeps the first subscription time.
    #[instrument(skip(self), fields(%id, %channel), level = "debug")]
    async fn subscribe(
        &self,
        id: &ConnectionId,
        channel: &ChannelName,
        at: DateTime<Utc>,
    ) -> PortResult<()> {
        self.db.write("subscribe", |tx| {
            let sql = "INSERT OR IGNORE INTO subscriptions (channel, connection, subscribed_at) \
                       VALUES (?1, ?2, ?3)";
            exec(tx, sql, [channel.to_string(), id.to_string(), ts(at)])?;
            Ok(())
        })
    }

    #[instrument(skip(self), fields(%id, %channel), level = "debug")]
    async fn unsubscribe(&self, id: &ConnectionId, channel: &ChannelName) -> PortResult<()> {
        self.db.write("unsubscribe", |tx| {
            let sql = "DELETE FROM subscriptions WHERE channel = ?1 AND connection = ?2";
            exec(tx, sql, [channel.to_string(), id.to_string()])?;
            Ok(())
        })
    }

    /// A range of the (channel, connection) primary key.
    #[instrument(skip(self), fields(%channel), level = "debug")]
    async fn subscribers(&self, channel: &ChannelName) -> PortResult<Vec<ConnectionId>> {
        self.db.read("subscribers", |c| {
            let sql = "SELECT connection FROM subscriptions WHERE channel = ?1 ORDER BY connection";
            list_decoded(c, sql, [channel.to_string()], |id| {
                ConnectionId::parse(id).context("stored connection id")
            })
        })
    }

    /// A range of the `subscriptions_by_connection` index.
    #[instrument(skip(self), fields(%id), level = "debug")]
    async fn subscriptions(&self, id: &ConnectionId) -> PortResult<Vec<ChannelName>> {
        self.db.read("subscriptions", |c| {
            let sql = "SELECT channel FROM subscriptions WHERE connection = ?1 ORDER BY channel";
            list_decoded(c, sql, [id.as_str()], |channel| {
                ChannelName::parse(channel).context("stored channel name")
            })
        })
    }

    /// The connection's record carries the binding; the subscribers' query joins it.
    #[instrument(skip(self, binding), fields(%id), level = "debug")]
    async fn bind_device(&self, id: &ConnectionId, binding: &DeviceBinding) -> PortResult<bool> {
        self.db.write("bind_device", |tx| {
            let found: Option<Connection> = get_body(
                tx,
                "SELECT body FROM connections WHERE id = ?1",
                [id.as_str()],
            )?;
            let Some(mut conn) = found else {
                return Ok(false);
            };
            conn.device = Some(binding.clone());
            let sql = "UPDATE connections SET body = ?2 WHERE id = ?1";
            exec(tx, sql, params![id.as_str(), to_json(&conn)?])?;
            Ok(true)
        })
    }

    /// The subscribers' key range joined with their records, in one statement.
    #[instrument(skip(self), fields(%channel), level = "debug")]
    async fn subscribers_filtered(&self, channel: &ChannelName) -> PortResult<Vec<Subscriber>> {
        self.db.read("subscribers_filtered", |c| {
            let sql = "SELECT s.connection, c.body FROM subscriptions s \
                       LEFT JOIN connections c ON c.id = s.connection \
                       WHERE s.channel = ?1 ORDER BY s.connection";
            let mut stmt = c.prepare_cached(sql)?;
            let rows = stmt.query_map([channel.to_string()], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, body) = row?;
                let connection = ConnectionId::parse(&id).context("stored connection id")?;
                let categories = match body {
                    Some(b) => {
                        let conn: Connection =
                            serde_json::from_str(&b).context("stored connection")?;
                        conn.device.map(|d| d.categories).unwrap_or_default()
                    }
                    None => Vec::new(),
                };
                out.push(Subscriber {
                    connection,
                    categories,
                });
            }
            Ok(out)
        })
    }
}

#[async_trait]
impl HealthCheck for EmbeddedStore {
    /// A round trip through SQLite: the file is open and the lock obtainable.
    #[instrument(skip(self), level = "debug")]
    async fn check(&self) -> PortResult<()> {
        self.db.read("check", |c| {
            c.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::events::{EventKind, SyncProgress};

    #[tokio::test]
    async fn data_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bandsync.db");
        let band = BandId::parse("reopen").unwrap();
        let channel = ChannelName::Band(band.clone());
        let config = SyncConfiguration {
            band: band.clone(),
            name: "Reopen".into(),
            file_types: vec!["pdf".into()],
            google_credentials: None,
            entity_types: vec![],
            strict_entities: false,
            history_days: None,
        };
        let event = |id: &str| {
            let progress = SyncProgress {
                operation: id.into(),
                done: 1,
                total: 2,
            };
            NewEvent::new(id, Utc::now(), EventKind::SyncProgress(progress))
        };
        let conn = ConnectionId::parse("conn-1").unwrap();

        let first = {
            let store = EmbeddedStore::open(&path).unwrap();
            store.put_config(&config).await.unwrap();
            store.subscribe(&conn, &channel, Utc::now()).await.unwrap();
            store
                .append(&channel, &[event("a"), event("b")])
                .await
                .unwrap()
        };

        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.get_config(&band).await.unwrap(), Some(config));
        assert_eq!(store.subscribers(&channel).await.unwrap(), vec![conn]);
        assert_eq!(store.read_after(&channel, 0, 10).await.unwrap(), first);
        let next = store.append(&channel, &[event("c")]).await.unwrap();
        assert_eq!(next[0].seq, 3, "seqs continue after a restart");
        assert_eq!(
            next[0].epoch, first[0].epoch,
            "a restart is not a new epoch"
        );
    }
}

/// Dedupe rows written before the intake stopped prefixing its keys (no contract suite
/// covers a store's own key layout).
#[cfg(test)]
mod dedupe_key_tests {
    use super::*;

    #[tokio::test]
    async fn a_message_remembered_by_an_earlier_build_is_still_a_repeat() {
        // GIVEN a data dir where an earlier build remembered message 7 of channel chan-1
        // (the intake passed `WEBHOOK#chan-1#7`, stored as is)
        let store = EmbeddedStore::in_memory().unwrap();
        let now = DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ttl = Duration::from_secs(3600);
        store
            .db()
            .write("seed", |tx| {
                let sql = "INSERT INTO dedupe (key, expires_at) VALUES (?1, ?2)";
                exec(tx, sql, params!["WEBHOOK#chan-1#7", ts(after(now, ttl)?)])
            })
            .unwrap();
        // WHEN this build's intake asks about the same message, THEN it is a repeat
        assert!(!store.first_seen("chan-1#7", now, ttl).await.unwrap());
        // AND another message is still new, and then remembered
        assert!(store.first_seen("chan-1#8", now, ttl).await.unwrap());
        assert!(!store.first_seen("chan-1#8", now, ttl).await.unwrap());
    }
}
