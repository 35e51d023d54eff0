//! The one SQLite connection the embedded store and queues share, its schema, and the
//! helpers every query goes through.
//!
//! One connection behind a mutex rather than a pool: every call is a few short statements
//! on a local file, so running them inline is cheaper than a hop to a blocking thread, and
//! a single writer makes SQLite's own locking a non-issue. The mutex is only ever held
//! inside [`Db::read`] / [`Db::write`], which are synchronous, so it is never held across
//! an `.await`.

use crate::ports::{PortError, PortResult};
use anyhow::{Context as _, bail};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use rusqlite::{Connection, Params, Transaction, TransactionBehavior};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;

/// How long a statement waits for another process holding the file (e.g. a `sqlite3`
/// shell an operator left open) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations: entry `i` brings a database from `user_version` `i` to `i + 1`.
/// Append, never edit: a file written by an older build is upgraded in place.
const MIGRATIONS: &[&str] = &[
    SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6,
];

/// v6: the revision of configurations and sources, which conditional writes name
/// (`UPDATE ... WHERE revision = ?`, nothing changed: someone else wrote first; 0 for
/// records written before); the purge marks of deleted sources.
const SCHEMA_V6: &str = "
ALTER TABLE configs ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sources ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS source_purges (
    band   TEXT NOT NULL,
    source TEXT NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (band, source)
) WITHOUT ROWID;
";

/// v5: conflict analytics. A band's verdict counters per (entity type, counter), bumped
/// inside each commit (see `entities::stats::counters`).
const SCHEMA_V5: &str = "
CREATE TABLE IF NOT EXISTS verdict_counts (
    band        TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    counter     TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (band, entity_type, counter)
) WITHOUT ROWID;
";

/// v4: presence. A member's session per band (`since`; `leaving_since` while its last
/// device is gone and the debounce runs, indexed for the sweep; `left_at`, the mark a
/// settle ended, so a repeated settle still says it left), and its live connections.
const SCHEMA_V4: &str = "
CREATE TABLE IF NOT EXISTS presence (
    band          TEXT NOT NULL,
    member        TEXT NOT NULL,
    since         TEXT,
    leaving_since TEXT,
    left_at       TEXT,
    PRIMARY KEY (band, member)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS presence_leaving ON presence (leaving_since)
    WHERE leaving_since IS NOT NULL;
CREATE TABLE IF NOT EXISTS presence_connections (
    band   TEXT NOT NULL,
    member TEXT NOT NULL,
    conn   TEXT NOT NULL,
    PRIMARY KEY (band, member, conn)
) WITHOUT ROWID;
";

/// v3: two-way sync. Devices (`next_mid` and `registered_at` as columns: a commit moves
/// the one, a re-registration keeps both), the (device, mid) receipts with a partial
/// index of the rejected (parked) ones, entities, their history (by time, for the
/// retention), and conflicts (newest first, open ones apart).
const SCHEMA_V3: &str = "
CREATE TABLE IF NOT EXISTS devices (
    device        TEXT PRIMARY KEY,
    member        TEXT NOT NULL,
    next_mid      INTEGER NOT NULL,
    registered_at TEXT NOT NULL,
    body          TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS receipts (
    device TEXT NOT NULL,
    mid    INTEGER NOT NULL,
    parked INTEGER NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (device, mid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS receipts_parked ON receipts (device, mid) WHERE parked = 1;
CREATE TABLE IF NOT EXISTS entities (
    band        TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    id          TEXT NOT NULL,
    version     INTEGER NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (band, entity_type, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entity_history (
    band        TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    id          TEXT NOT NULL,
    version     INTEGER NOT NULL,
    at          TEXT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (band, entity_type, id, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entity_history_by_at ON entity_history (band, at);
CREATE TABLE IF NOT EXISTS conflicts (
    band      TEXT NOT NULL,
    id        TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    open      INTEGER NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (band, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conflicts_by_time ON conflicts (band, opened_at, id);
";

/// v2: the broadcaster's per-channel watermark (the highest seq pushed to subscribers).
const SCHEMA_V2: &str =
    "ALTER TABLE channel_heads ADD COLUMN delivered INTEGER NOT NULL DEFAULT 0;";

/// Records are JSON in `body` (serde stays the single source of truth for their shape);
/// the columns beside it are the keys and what queries filter or sort on. Timestamps are
/// RFC 3339 text with nanoseconds and a `Z`, fixed width, so they compare and sort as
/// text and stay readable in a `sqlite3` shell.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS configs (
    band TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sources (
    band   TEXT NOT NULL,
    source TEXT NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (band, source)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    band    TEXT NOT NULL,
    source  TEXT NOT NULL,
    file_id TEXT NOT NULL,
    body    TEXT NOT NULL,
    PRIMARY KEY (band, source, file_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS operations (
    id         TEXT PRIMARY KEY,
    band       TEXT NOT NULL,
    started_at TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS operations_by_band ON operations (band, started_at, id);
CREATE TABLE IF NOT EXISTS items (
    operation TEXT NOT NULL,
    n         INTEGER NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (operation, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS generations (
    band   TEXT NOT NULL,
    source TEXT NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (band, source)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS watch_channels (
    id   TEXT PRIMARY KEY,
    band TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS watch_channels_by_band ON watch_channels (band);
CREATE TABLE IF NOT EXISTS dedupe (
    key        TEXT PRIMARY KEY,
    expires_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dedupe_by_expiry ON dedupe (expires_at);
CREATE TABLE IF NOT EXISTS channel_heads (
    channel TEXT PRIMARY KEY,
    seq     INTEGER NOT NULL,
    epoch   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS channel_events (
    channel TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    epoch   TEXT NOT NULL,
    id      TEXT NOT NULL,
    ts      TEXT NOT NULL,
    body    TEXT NOT NULL,
    PRIMARY KEY (channel, seq),
    UNIQUE (channel, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS channel_events_by_ts ON channel_events (channel, ts);
CREATE TABLE IF NOT EXISTS connections (
    id   TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    channel       TEXT NOT NULL,
    connection    TEXT NOT NULL,
    subscribed_at TEXT NOT NULL,
    PRIMARY KEY (channel, connection)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS subscriptions_by_connection ON subscriptions (connection);
CREATE TABLE IF NOT EXISTS messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT NOT NULL,
    id            TEXT NOT NULL UNIQUE,
    grp           TEXT NOT NULL,
    dedup_id      TEXT NOT NULL,
    body          TEXT NOT NULL,
    sent_at       TEXT NOT NULL,
    visible_at    TEXT NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT,
    origin_id     TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_group ON messages (queue, grp, seq);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_receipt ON messages (receipt)
    WHERE receipt IS NOT NULL;
CREATE TABLE IF NOT EXISTS queue_dedup (
    queue      TEXT NOT NULL,
    dedup_id   TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (queue, dedup_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS queue_dedup_by_expiry ON queue_dedup (queue, expires_at);
";

/// The shared handle: cheap to clone, one connection to one file (or one in-memory
/// database) behind it.
#[derive(Clone)]
pub struct Db {
    shared: Arc<Shared>,
}

struct Shared {
    conn: Mutex<Connection>,
    /// One wake-up per queue name, so every handle on a queue (the sender's and the
    /// poller's) shares it.
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
}

impl fmt::Debug for Db {
    /// Never waits for the lock (a Debug call from inside a closure would deadlock).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let conn = self.shared.conn.try_lock().ok();
        let path = conn.as_ref().and_then(|c| c.path().map(str::to_owned));
        f.debug_struct("Db").field("path", &path).finish()
    }
}

impl Db {
    /// Open (creating it and its directory if needed) the database file at `path` in WAL
    /// mode, so a crash loses at most the last transactions, never the file, and readers
    /// in other processes (an operator's `sqlite3` shell) don't block the stack.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the data directory {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("opening the database {}", path.display()))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .context("switching to WAL")?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!(
                "{} refused WAL mode (journal_mode = {mode})",
                path.display()
            );
        }
        // NORMAL is durable across process crashes in WAL mode; only a power cut can lose
        // the last commits, which the local stack can afford.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .context("setting synchronous")?;
        Self::init(conn).with_context(|| format!("preparing the database {}", path.display()))
    }

    /// A private database that lives as long as this handle (tests, throwaway stacks).
    pub fn in_memory() -> anyhow::Result<Self> {
        let conn = Connection::open_in_memory().context("opening an in-memory database")?;
        Self::init(conn)
    }

    fn init(mut conn: Connection) -> anyhow::Result<Self> {
        conn.busy_timeout(BUSY_TIMEOUT)
            .context("setting busy_timeout")?;
        conn.pragma_update(None, "foreign_keys", true)
            .context("enabling foreign keys")?;
        migrate(&mut conn)?;
        Ok(Self {
            shared: Arc::new(Shared {
                conn: Mutex::new(conn),
                wakers: Mutex::default(),
            }),
        })
    }

    /// Do two handles share one connection (and so can join one transaction)?
    pub fn same_as(&self, other: &Db) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The wake-up of the queue `name` in this database.
    pub(crate) fn waker(&self, name: &str) -> Arc<Notify> {
        let mut wakers = self
            .shared
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(wakers.entry(name.to_owned()).or_default())
    }

    /// A panic inside a closure rolls its transaction back while unwinding, so the
    /// connection is consistent and a poisoned lock can be taken over.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.shared
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Run read-only statements. A single statement sees one consistent snapshot; use
    /// [`Db::write`] when several must agree.
    pub(crate) fn read<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Connection) -> anyhow::Result<T>,
    ) -> PortResult<T> {
        blocking(|| f(&self.lock()).map_err(|e| backend(e, op)))
    }

    /// Run `f` in one IMMEDIATE transaction (the write lock is taken up front, so two
    /// processes on one file queue up instead of failing on upgrade): committed when `f`
    /// succeeds, rolled back otherwise.
    pub(crate) fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> anyhow::Result<T>,
    ) -> PortResult<T> {
        blocking(|| {
            let mut conn = self.lock();
            let run = || -> anyhow::Result<T> {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let out = f(&tx)?;
                tx.commit()?;
                Ok(out)
            };
            run().map_err(|e| backend(e, op))
        })
    }

    /// [`Db::write`] for a write that may be refused part-way (a condition that no longer
    /// holds): `Ok(Err(refusal))` rolls back everything `f` wrote, as an error does, but
    /// comes back as a value rather than a backend failure.
    pub(crate) fn write_if<T, E>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> anyhow::Result<Result<T, E>>,
    ) -> PortResult<Result<T, E>> {
        blocking(|| {
            let mut conn = self.lock();
            let run = || -> anyhow::Result<Result<T, E>> {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                match f(&tx)? {
                    Ok(out) => {
                        tx.commit()?;
                        Ok(Ok(out))
                    }
                    // Dropping the transaction rolls it back.
                    Err(refused) => Ok(Err(refused)),
                }
            };
            run().map_err(|e| backend(e, op))
        })
    }
}

/// Run a database call (it may wait on the mutex, on another process's lock or on an
/// fsync) without stalling the other tasks of a multi-threaded runtime: tokio moves them
/// off this worker first. A current-thread runtime (unit tests) runs it inline.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Name the failed operation, so a log line says what the store was doing.
fn backend(e: anyhow::Error, op: &'static str) -> PortError {
    PortError::Backend(e.context(format!("embedded store: {op}")))
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = MIGRATIONS.len();
    let from = usize::try_from(current).context("negative schema version")?;
    if from > known {
        bail!("schema version {from} is newer than this build knows ({known}): upgrade bandsync");
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from) {
        tx.execute_batch(sql)
            .with_context(|| format!("migrating the schema to version {}", i + 1))?;
    }
    tx.pragma_update(None, "user_version", int(known))?;
    tx.commit().context("committing the schema")?;
    Ok(())
}

/// Run one statement (prepared once per connection and cached); the number of rows changed.
pub(crate) fn exec(c: &Connection, sql: &str, params: impl Params) -> anyhow::Result<usize> {
    Ok(c.prepare_cached(sql)?.execute(params)?)
}

/// A count, limit or seq as SQLite's integer. Saturates: a limit or cursor past
/// `i64::MAX` means "everything" / "nothing after", which saturation preserves.
pub(crate) fn int(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

/// An unsigned column (a seq or a count): rusqlite reads only `i64` without its
/// `fallible_uint` feature, and a negative value means a corrupt row, not a wrap-around.
pub(crate) fn get_u64(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(idx)?;
    u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, v))
}

/// [`get_u64`] for a column that may be NULL (an aggregate over no rows).
pub(crate) fn get_opt_u64(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Option<u64>> {
    match row.get_ref(idx)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        _ => get_u64(row, idx).map(Some),
    }
}

/// The stored form of a timestamp (see [`SCHEMA_V1`]).
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub(crate) fn parse_ts(s: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(s)
        .with_context(|| format!("bad stored timestamp {s:?}"))?
        .with_timezone(&Utc))
}

/// `t + d`, failing (rather than wrapping or panicking) past chrono's range.
pub(crate) fn after(t: DateTime<Utc>, d: Duration) -> anyhow::Result<DateTime<Utc>> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .with_context(|| format!("{t} + {d:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_version(db: &Db) -> i64 {
        db.read("user_version", |c| {
            Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?)
        })
        .unwrap()
    }

    #[test]
    fn opens_in_wal_mode_and_reopens_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/bandsync.db");
        let db = Db::open(&path).unwrap();
        let mode: String = db
            .read("mode", |c| {
                Ok(c.pragma_query_value(None, "journal_mode", |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(user_version(&db), MIGRATIONS.len() as i64);
        drop(db);
        assert_eq!(
            user_version(&Db::open(&path).unwrap()),
            MIGRATIONS.len() as i64
        );
    }

    #[test]
    fn a_file_of_an_earlier_build_is_upgraded_in_place() {
        // GIVEN a file at schema v2 (before two-way sync) with a configuration in it
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bandsync.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA_V1).unwrap();
            c.execute_batch(SCHEMA_V2).unwrap();
            c.execute("INSERT INTO configs (band, body) VALUES ('b', '{}')", [])
                .unwrap();
            c.pragma_update(None, "user_version", 2).unwrap();
        }
        // WHEN this build opens it, THEN it is at the newest version, data kept, and the
        // entity tables are there
        let db = Db::open(&path).unwrap();
        assert_eq!(user_version(&db), MIGRATIONS.len() as i64);
        let (configs, devices): (i64, i64) = db
            .read("count", |c| {
                Ok(c.query_row(
                    "SELECT (SELECT COUNT(*) FROM configs), (SELECT COUNT(*) FROM devices)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .unwrap();
        assert_eq!((configs, devices), (1, 0));
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bandsync.db");
        Db::open(&path)
            .unwrap()
            .write("bump", |tx| {
                Ok(tx.pragma_update(None, "user_version", 99)?)
            })
            .unwrap();
        let err = Db::open(&path).unwrap_err();
        assert!(format!("{err:#}").contains("newer"), "{err:#}");
    }

    #[test]
    fn errors_name_the_operation_and_roll_back() {
        let db = Db::in_memory().unwrap();
        let err = db
            .write("put_thing", |tx| {
                tx.execute("INSERT INTO configs (band, body) VALUES ('b', '{}')", [])?;
                tx.execute("INSERT INTO nowhere VALUES (1)", [])?;
                Ok(())
            })
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("embedded store: put_thing"),
            "{err:#}"
        );
        let n: i64 = db
            .read("count", |c| {
                Ok(c.query_row("SELECT COUNT(*) FROM configs", [], |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(n, 0, "the failed transaction was rolled back");
    }

    #[test]
    fn timestamps_sort_as_text() {
        let a = parse_ts("2024-01-01T00:00:00.5Z").unwrap();
        let b = after(a, Duration::from_nanos(1)).unwrap();
        assert!(ts(a) < ts(b));
        assert_eq!(parse_ts(&ts(b)).unwrap(), b);
        assert!(after(a, Duration::MAX).is_err());
    }
}
