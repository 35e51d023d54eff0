//! [`EmbeddedQueue`]: durable FIFO queues in the shared SQLite file, with the SQS FIFO
//! semantics the pipeline is built on, so the handlers behave locally as they do on AWS:
//!
//! - per message group, strict send order, and nothing of a group is handed out while an
//!   earlier message of it is in flight (received, not deleted, visibility not expired);
//! - a receive hides a message for the visibility timeout; not deleting it in time means
//!   it comes back with a higher receive count;
//! - past `max_receive_count` receives a message moves to the dead-letter queue, and the
//!   rest of its group flows again;
//! - a second send with the same deduplication id within the window is dropped.
//!
//! All time comes from the [`Clock`], so tests drive expiry with a fake one. All queues
//! live in one `messages` table keyed by queue name; `seq` (AUTOINCREMENT, never reused)
//! is the send order.

use super::db::{Db, after, exec, get_u64, int, parse_ts, ts};
use crate::ports::{Clock, OutMessage, PortError, PortResult, Queue};
use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Params, Transaction, params};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::instrument;
use uuid::Uuid;

/// How a queue behaves: the knobs of an SQS FIFO queue and its redrive policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    pub name: String,
    /// How long a received message stays hidden before it is handed out again.
    pub visibility_timeout: Duration,
    /// Receives after which the next one moves the message to `dead_letter` instead.
    /// SQS's minimum is 1, and 0 is treated as 1. Ignored without a `dead_letter`
    /// queue (SQS without a redrive policy redelivers forever).
    pub max_receive_count: u32,
    /// Name of the dead-letter queue (in the same database).
    pub dead_letter: Option<String>,
    /// How long a deduplication id is remembered (SQS: 5 minutes).
    pub dedup_window: Duration,
}

impl QueueConfig {
    /// SQS's defaults (30 s visibility, 5 min dedup window), 5 receives, no dead-letter queue.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            visibility_timeout: Duration::from_secs(30),
            max_receive_count: 5,
            dead_letter: None,
            dedup_window: Duration::from_secs(5 * 60),
        }
    }

    pub fn with_dead_letter(mut self, name: impl Into<String>) -> Self {
        self.dead_letter = Some(name.into());
        self
    }
}

/// A message handed out by [`EmbeddedQueue::receive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    /// New on every receive; only the latest one deletes or changes visibility.
    pub receipt_handle: String,
    pub group: String,
    pub dedup_id: String,
    pub body: String,
    /// Receives so far, this one included.
    pub receive_count: u32,
    pub sent_at: DateTime<Utc>,
}

/// A message as [`EmbeddedQueue::list`] shows it, without receiving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub message_id: String,
    pub group: String,
    pub dedup_id: String,
    pub body: String,
    pub receive_count: u32,
    pub sent_at: DateTime<Utc>,
    /// Received and its visibility timeout not yet over.
    pub in_flight: bool,
    /// For a dead-lettered or redriven message, the id it was first sent with.
    pub origin_id: Option<String>,
}

/// What the dashboard's queue widgets show (SQS's approximate-number attributes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Not in flight (including messages waiting behind an in-flight one of their group).
    pub visible: u64,
    pub in_flight: u64,
    /// Age of the oldest message, in flight or not; None when the queue is empty.
    pub oldest_age_ms: Option<u64>,
}

/// One durable FIFO queue. Handles are cheap to clone; every handle on the same queue
/// name and database shares its rows and its wake-up.
#[derive(Clone)]
pub struct EmbeddedQueue {
    db: Db,
    config: QueueConfig,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
}

impl fmt::Debug for EmbeddedQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedQueue")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A `messages` row, as every query here reads it.
struct Row {
    seq: i64,
    id: String,
    group: String,
    dedup_id: String,
    body: String,
    sent_at: String,
    visible_at: String,
    receive_count: u32,
    origin_id: Option<String>,
}

const ROW_COLUMNS: &str =
    "seq, id, grp, dedup_id, body, sent_at, visible_at, receive_count, origin_id";

impl Row {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: r.get(0)?,
            id: r.get(1)?,
            group: r.get(2)?,
            dedup_id: r.get(3)?,
            body: r.get(4)?,
            sent_at: r.get(5)?,
            visible_at: r.get(6)?,
            receive_count: r.get(7)?,
            origin_id: r.get(8)?,
        })
    }

    /// The first id this message was sent with, through dead-lettering and redrives.
    fn origin(&self) -> &str {
        self.origin_id.as_deref().unwrap_or(&self.id)
    }
}

/// The `messages` rows matching `filter` (a WHERE clause, ORDER BY and LIMIT).
fn select_rows(
    tx: &rusqlite::Connection,
    filter: &str,
    params: impl Params,
) -> anyhow::Result<Vec<Row>> {
    let sql = format!("SELECT {ROW_COLUMNS} FROM messages WHERE {filter}");
    let mut stmt = tx.prepare_cached(&sql)?;
    let rows = stmt.query_map(params, Row::read)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Enqueue a message (visible at once, never received) and return its new id.
fn insert_message(
    tx: &rusqlite::Connection,
    queue: &str,
    group: &str,
    dedup_id: &str,
    body: &str,
    now: DateTime<Utc>,
    origin_id: Option<&str>,
) -> anyhow::Result<String> {
    let id = Uuid::new_v4().to_string();
    let sql = "INSERT INTO messages \
               (queue, id, grp, dedup_id, body, sent_at, visible_at, receive_count, origin_id) \
               VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 0, ?7)";
    exec(
        tx,
        sql,
        params![queue, id, group, dedup_id, body, ts(now), origin_id],
    )?;
    Ok(id)
}

/// Move `row` to the end of `queue` as a fresh message (receive count 0), remembering
/// where it came from.
fn move_row(
    tx: &rusqlite::Connection,
    row: &Row,
    queue: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    insert_message(
        tx,
        queue,
        &row.group,
        &row.dedup_id,
        &row.body,
        now,
        Some(row.origin()),
    )?;
    exec(tx, "DELETE FROM messages WHERE seq = ?1", [row.seq])?;
    Ok(())
}

/// One receive in progress: its transaction, its instant, and what it has taken so far.
struct Batch<'a> {
    tx: &'a rusqlite::Connection,
    config: &'a QueueConfig,
    now: DateTime<Utc>,
    hidden_until: String,
    max: usize,
    taken: Vec<ReceivedMessage>,
}

impl Batch<'_> {
    /// Take `group`'s messages in order until the batch is full, dead-lettering those
    /// that were received too often on the way (so the rest of the group can flow).
    fn take_group(&mut self, group: &str) -> anyhow::Result<()> {
        let name = self.config.name.as_str();
        let mut cursor = 0;
        while self.taken.len() < self.max {
            let filter = "queue = ?1 AND grp = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4";
            let room = int(self.max - self.taken.len());
            let rows = select_rows(self.tx, filter, params![name, group, cursor, room])?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                cursor = row.seq;
                match self.dead_letter_for(&row) {
                    Some(dlq) => self.dead_letter(row, dlq)?,
                    None => self.take(row)?,
                }
            }
        }
        Ok(())
    }

    /// Where `row` goes instead of being received again, if it has used up its receives.
    fn dead_letter_for(&self, row: &Row) -> Option<&'_ str> {
        let dlq = self.config.dead_letter.as_deref()?;
        (row.receive_count >= self.config.max_receive_count).then_some(dlq)
    }

    fn dead_letter(&self, row: Row, dlq: &str) -> anyhow::Result<()> {
        move_row(self.tx, &row, dlq, self.now)?;
        tracing::warn!(
            queue = %self.config.name,
            dead_letter = dlq,
            message_id = %row.id,
            receive_count = row.receive_count,
            "moved to the dead-letter queue"
        );
        Ok(())
    }

    fn take(&mut self, row: Row) -> anyhow::Result<()> {
        let receipt = Uuid::new_v4().to_string();
        let sql = "UPDATE messages SET visible_at = ?2, receipt = ?3, \
                   receive_count = receive_count + 1 WHERE seq = ?1";
        exec(self.tx, sql, params![row.seq, self.hidden_until, receipt])?;
        self.taken.push(ReceivedMessage {
            sent_at: parse_ts(&row.sent_at)?,
            message_id: row.id,
            receipt_handle: receipt,
            group: row.group,
            dedup_id: row.dedup_id,
            body: row.body,
            receive_count: row.receive_count + 1,
        });
        Ok(())
    }
}

impl EmbeddedQueue {
    pub fn new(db: Db, mut config: QueueConfig, clock: Arc<dyn Clock>) -> Self {
        config.max_receive_count = config.max_receive_count.max(1);
        let wake = db.waker(&config.name);
        Self {
            db,
            config,
            clock,
            wake,
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Notified (`notify_one`, so a wake-up between a poller's empty receive and its
    /// wait is kept, not lost) whenever a message may have become receivable: a send, a
    /// delete that unblocks a group, a visibility change, a redrive into this queue. A
    /// poller receives until empty, then waits on this or a short timeout (visibility
    /// expiry wakes nobody).
    pub fn wake_handle(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Run `f` in one transaction on this queue, naming the queue in errors.
    fn run<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>, &str) -> anyhow::Result<T>,
    ) -> PortResult<T> {
        let name = self.config.name.as_str();
        self.db.write(op, |tx| {
            f(tx, name).with_context(|| format!("queue {name}"))
        })
    }

    /// Up to `max` messages, each hidden for the visibility timeout; fewer (or none) when
    /// fewer are receivable. Groups are served oldest head first, and a group gives as
    /// many consecutive messages as fit.
    #[instrument(skip(self), fields(queue = %self.config.name), level = "debug")]
    pub async fn receive(&self, max: usize) -> PortResult<Vec<ReceivedMessage>> {
        let now = self.clock.now();
        let hidden_until = after(now, self.config.visibility_timeout);
        self.run("receive", |tx, name| {
            // Groups whose every message is visible: none in flight.
            let sql = "SELECT grp FROM messages WHERE queue = ?1 GROUP BY grp \
                       HAVING MAX(visible_at) <= ?2 ORDER BY MIN(seq)";
            let groups: Vec<String> = tx
                .prepare_cached(sql)?
                .query_map(params![name, ts(now)], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut batch = Batch {
                tx,
                config: &self.config,
                now,
                hidden_until: ts(hidden_until?),
                max,
                taken: Vec::new(),
            };
            for group in groups {
                if batch.taken.len() >= max {
                    break;
                }
                batch.take_group(&group)?;
            }
            Ok(batch.taken)
        })
    }

    /// Done with a message. A receipt from before the latest receive (the message timed
    /// out and went to someone else) or of a deleted message is ignored, as SQS does.
    #[instrument(skip(self), fields(queue = %self.config.name), level = "debug")]
    pub async fn delete(&self, receipt_handle: &str) -> PortResult<()> {
        let deleted = self.run("delete", |tx, name| {
            let sql = "DELETE FROM messages WHERE queue = ?1 AND receipt = ?2";
            exec(tx, sql, [name, receipt_handle])
        })?;
        if deleted > 0 {
            // The next message of its group may now flow.
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Hand out again, at once, every message a previous run of the process had received
    /// and not deleted. Only for a process that owns the data dir (see the stack's lock):
    /// its pollers died with it, so waiting out their visibility timeouts would only hold
    /// each message's group back (a FIFO group waits behind its message in flight). The
    /// receive count stays, so a message that crashes the process every time still ends
    /// in the dead-letter queue. Returns how many were released.
    #[instrument(skip(self), fields(queue = %self.config.name), level = "debug")]
    pub async fn release_in_flight(&self) -> PortResult<u64> {
        let now = ts(self.clock.now());
        let released = self.run("release_in_flight", |tx, name| {
            let sql = "UPDATE messages SET visible_at = ?2, receipt = NULL \
                       WHERE queue = ?1 AND receipt IS NOT NULL AND visible_at > ?2";
            exec(tx, sql, params![name, now])
        })?;
        if released > 0 {
            self.wake.notify_one();
        }
        Ok(released as u64)
    }

    /// Hide an in-flight message for `timeout` from now (0 hands it out again at once:
    /// how a worker gives a job back for a retry). A stale receipt, or a message no
    /// longer in flight, is ignored.
    #[instrument(skip(self), fields(queue = %self.config.name), level = "debug")]
    pub async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> PortResult<()> {
        let now = self.clock.now();
        let until = after(now, timeout);
        let changed = self.run("change_visibility", |tx, name| {
            let sql = "UPDATE messages SET visible_at = ?3 \
                       WHERE queue = ?1 AND receipt = ?2 AND visible_at > ?4";
            exec(tx, sql, params![name, receipt_handle, ts(until?), ts(now)])
        })?;
        if changed > 0 {
            self.wake.notify_one();
        }
        Ok(())
    }

    #[instrument(skip(self), fields(queue = %self.config.name), level = "debug")]
    pub async fn depth(&self) -> PortResult<QueueDepth> {
        let now = self.clock.now();
        let (visible, in_flight, oldest) = self.run("depth", |tx, name| {
            let sql = "SELECT COALESCE(SUM(visible_at <= ?2), 0), COALESCE(SUM(visible_at > ?2), 0), \
                       MIN(sent_at) FROM messages WHERE queue = ?1";
            let counts = tx.prepare_cached(sql)?.query_row(params![name, ts(now)], |r| {
                Ok((get_u64(r, 0)?, get_u64(r, 1)?, r.get::<_, Option<String>>(2)?))
            })?;
            Ok(counts)
        })?;
        let oldest_age_ms = oldest
            .map(|sent| parse_ts(&sent))
            .transpose()
            .map_err(|e| PortError::Backend(e.context("queue depth")))?
            .map(|sent| u64::try_from((now - sent).num_milliseconds()).unwrap_or(0));
        Ok(QueueDepth {
            visible,
            in_flight,
            oldest_age_ms,
        })
    }

    /// Up to `limit` messages in send order, without receiving them (inspecting a
    /// dead-letter queue).
    #[instrument(skip(self), fields(queue = %self.config.name), level = "debug")]
    pub async fn list(&self, limit: usize) -> PortResult<Vec<QueuedMessage>> {
        let now = ts(self.clock.now());
        self.run("list", |tx, name| {
            let rows = select_rows(
                tx,
                "queue = ?1 ORDER BY seq LIMIT ?2",
                params![name, int(limit)],
            )?;
            rows.into_iter()
                .map(|row| {
                    Ok(QueuedMessage {
                        sent_at: parse_ts(&row.sent_at)?,
                        in_flight: row.visible_at > now,
                        message_id: row.id,
                        group: row.group,
                        dedup_id: row.dedup_id,
                        body: row.body,
                        receive_count: row.receive_count,
                        origin_id: row.origin_id,
                    })
                })
                .collect()
        })
    }

    /// Move every message of this queue (a dead-letter queue) to the end of `to`, in
    /// order, as fresh messages (receive count 0, not deduplicated: a redrive is a
    /// deliberate resend). Both queues must share one database, so the move is one
    /// transaction. Returns how many moved.
    #[instrument(skip_all, fields(from = %self.config.name, to = %to.config.name), level = "info")]
    pub async fn redrive_dead_letters(&self, to: &EmbeddedQueue) -> PortResult<u64> {
        if !self.db.same_as(&to.db) {
            return Err(PortError::Backend(anyhow!(
                "cannot redrive {} into {}: the queues live in different databases",
                self.config.name,
                to.config.name
            )));
        }
        let now = self.clock.now();
        let moved = self.run("redrive_dead_letters", |tx, name| {
            let rows = select_rows(tx, "queue = ?1 ORDER BY seq", [name])?;
            for row in &rows {
                move_row(tx, row, &to.config.name, now)?;
            }
            Ok(rows.len() as u64)
        })?;
        if moved > 0 {
            to.wake.notify_one();
        }
        Ok(moved)
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    /// A dedup id sent within the window is dropped silently, like SQS: the sender
    /// can't tell, and needn't. The window runs from the first send, whether or not the
    /// message has been deleted since.
    #[instrument(skip_all, fields(queue = %self.config.name, group = %message.group, dedup_id = %message.dedup_id), level = "debug")]
    async fn send(&self, message: OutMessage) -> PortResult<()> {
        let now = self.clock.now();
        let forget_at = after(now, self.config.dedup_window);
        let sent = self.run("send", |tx, name| {
            let sql = "DELETE FROM queue_dedup WHERE queue = ?1 AND expires_at <= ?2";
            exec(tx, sql, [name, &ts(now)])?;
            let sql = "INSERT OR IGNORE INTO queue_dedup (queue, dedup_id, expires_at) \
                       VALUES (?1, ?2, ?3)";
            if exec(tx, sql, [name, &message.dedup_id, &ts(forget_at?)])? == 0 {
                return Ok(false);
            }
            insert_message(
                tx,
                name,
                &message.group,
                &message.dedup_id,
                &message.body,
                now,
                None,
            )?;
            Ok(true)
        })?;
        if sent {
            self.wake.notify_one();
        } else {
            tracing::debug!("duplicate within the deduplication window, dropped");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::local::EmbeddedStore;
    use crate::model::{BandId, SyncConfiguration};
    use crate::ports::ConfigStore;
    use std::sync::Mutex;

    /// A clock the test moves by hand.
    struct FakeClock(Mutex<DateTime<Utc>>);

    impl FakeClock {
        fn new() -> Arc<Self> {
            let start = DateTime::parse_from_rfc3339("2025-06-01T12:00:00.123456789Z").unwrap();
            Arc::new(Self(Mutex::new(start.with_timezone(&Utc))))
        }
        fn advance(&self, d: Duration) {
            *self.0.lock().unwrap() += d;
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }

    const VISIBILITY: Duration = Duration::from_secs(30);

    fn config(name: &str) -> QueueConfig {
        QueueConfig {
            visibility_timeout: VISIBILITY,
            max_receive_count: 2,
            ..QueueConfig::new(name).with_dead_letter(format!("{name}-dlq"))
        }
    }

    /// A queue `q` and its dead-letter queue `q-dlq` on a fresh in-memory database.
    fn queues() -> (EmbeddedQueue, EmbeddedQueue, Arc<FakeClock>) {
        let db = Db::in_memory().unwrap();
        let clock = FakeClock::new();
        let q = EmbeddedQueue::new(db.clone(), config("q"), clock.clone());
        let dlq = EmbeddedQueue::new(db, QueueConfig::new("q-dlq"), clock.clone());
        (q, dlq, clock)
    }

    async fn send(q: &EmbeddedQueue, group: &str, body: &str) {
        let dedup_id = format!("{group}/{body}");
        send_dedup(q, group, body, &dedup_id).await;
    }

    async fn send_dedup(q: &EmbeddedQueue, group: &str, body: &str, dedup_id: &str) {
        let message = OutMessage {
            group: group.into(),
            dedup_id: dedup_id.into(),
            body: body.into(),
        };
        q.send(message).await.unwrap();
    }

    async fn bodies(q: &EmbeddedQueue, max: usize) -> Vec<String> {
        let got = q.receive(max).await.unwrap();
        got.into_iter().map(|m| m.body).collect()
    }

    async fn receive_one(q: &EmbeddedQueue) -> ReceivedMessage {
        let mut got = q.receive(1).await.unwrap();
        assert_eq!(got.len(), 1, "expected one message, got {got:?}");
        got.remove(0)
    }

    #[tokio::test]
    async fn a_batch_takes_groups_in_order_and_consecutive_messages_of_a_group() {
        let (q, _, _) = queues();
        for (group, body) in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("c", "c1")] {
            send(&q, group, body).await;
        }
        assert_eq!(bodies(&q, 3).await, ["a1", "a2", "b1"]);
        assert_eq!(bodies(&q, 10).await, ["c1"]);
        assert!(q.receive(10).await.unwrap().is_empty());
        assert!(q.receive(0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_group_waits_while_a_message_of_it_is_in_flight_and_others_flow() {
        let (q, _, _) = queues();
        for (group, body) in [("a", "a1"), ("a", "a2"), ("b", "b1"), ("a", "a3")] {
            send(&q, group, body).await;
        }
        let a1 = receive_one(&q).await;
        assert_eq!(a1.body, "a1");
        assert_eq!(bodies(&q, 10).await, ["b1"], "group a is blocked behind a1");
        q.delete(&a1.receipt_handle).await.unwrap();
        assert_eq!(bodies(&q, 10).await, ["a2", "a3"], "in send order");
    }

    #[tokio::test]
    async fn an_expired_visibility_timeout_hands_the_message_out_again() {
        let (q, _, clock) = queues();
        send(&q, "g", "m").await;
        let first = receive_one(&q).await;
        assert_eq!((first.receive_count, first.group.as_str()), (1, "g"));
        clock.advance(VISIBILITY - Duration::from_secs(1));
        assert!(q.receive(10).await.unwrap().is_empty(), "still in flight");
        clock.advance(Duration::from_secs(2));
        let second = receive_one(&q).await;
        assert_eq!(second.message_id, first.message_id);
        assert_eq!(second.receive_count, 2);
        assert_ne!(second.receipt_handle, first.receipt_handle);
        assert_eq!(second.sent_at, first.sent_at);
    }

    #[tokio::test]
    async fn a_restart_releases_what_the_dead_run_had_in_flight_and_unblocks_its_group() {
        let (q, _, _) = queues();
        send(&q, "g", "m1").await;
        send(&q, "g", "m2").await;
        send(&q, "h", "other").await;
        let dead = q.receive(1).await.unwrap();
        assert_eq!(dead.len(), 1, "the dead run held one message of group g");
        assert_eq!(bodies(&q, 10).await, ["other"], "group g waits behind m1");
        // The receive just above holds "other" now too: both are released.
        assert_eq!(q.release_in_flight().await.unwrap(), 2);
        let again = q.receive(10).await.unwrap();
        let order: Vec<_> = again.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(order, ["m1", "m2", "other"], "in order, nothing lost");
        assert_eq!(again[0].receive_count, 2, "the receive count stays");
        q.delete(&dead[0].receipt_handle).await.unwrap();
        assert_eq!(
            q.depth().await.unwrap().in_flight,
            3,
            "the dead receipt is void"
        );
        assert_eq!(q.release_in_flight().await.unwrap(), 3);
        assert_eq!(q.release_in_flight().await.unwrap(), 0, "idempotent");
    }

    #[tokio::test]
    async fn a_stale_receipt_deletes_nothing_and_deleting_twice_is_fine() {
        let (q, _, clock) = queues();
        send(&q, "g", "m").await;
        let stale = receive_one(&q).await;
        clock.advance(VISIBILITY * 2);
        let current = receive_one(&q).await;
        q.delete(&stale.receipt_handle).await.unwrap();
        assert_eq!(
            q.depth().await.unwrap().in_flight,
            1,
            "the stale receipt was ignored"
        );
        q.delete(&current.receipt_handle).await.unwrap();
        q.delete(&current.receipt_handle).await.unwrap();
        q.delete("no-such-receipt").await.unwrap();
        assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
    }

    #[tokio::test]
    async fn change_visibility_extends_or_releases_a_message() {
        let (q, _, clock) = queues();
        send(&q, "g", "m").await;
        let m = receive_one(&q).await;
        q.change_visibility(&m.receipt_handle, Duration::from_secs(120))
            .await
            .unwrap();
        clock.advance(VISIBILITY * 2);
        assert!(
            q.receive(1).await.unwrap().is_empty(),
            "extended past the default"
        );
        clock.advance(Duration::from_secs(61));
        let again = receive_one(&q).await;
        assert_eq!(again.receive_count, 2);
        q.change_visibility(&m.receipt_handle, Duration::ZERO)
            .await
            .unwrap();
        assert!(
            q.receive(1).await.unwrap().is_empty(),
            "a stale receipt changes nothing"
        );
        q.change_visibility(&again.receipt_handle, Duration::ZERO)
            .await
            .unwrap();
        let depth = q.depth().await.unwrap();
        assert_eq!((depth.visible, depth.in_flight), (1, 0), "released at once");
    }

    #[tokio::test]
    async fn too_many_receives_dead_letter_the_message_and_unblock_its_group() {
        let (q, dlq, clock) = queues();
        send(&q, "g", "poison").await;
        send(&q, "g", "next").await;
        let mut poison_id = String::new();
        for count in 1..=2 {
            let m = receive_one(&q).await;
            assert_eq!((m.body.as_str(), m.receive_count), ("poison", count));
            poison_id = m.message_id;
            clock.advance(VISIBILITY);
        }
        let next = receive_one(&q).await;
        assert_eq!(
            next.body, "next",
            "the poison message went to the DLQ instead"
        );

        let dead = dlq.list(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        let dead = &dead[0];
        assert_eq!((dead.body.as_str(), dead.group.as_str()), ("poison", "g"));
        assert_eq!(dead.receive_count, 0);
        assert_eq!(dead.origin_id.as_deref(), Some(poison_id.as_str()));
        assert_ne!(dead.message_id, poison_id);
        let depth = dlq.depth().await.unwrap();
        assert_eq!((depth.visible, depth.in_flight), (1, 0));

        q.delete(&next.receipt_handle).await.unwrap();
        assert_eq!(dlq.redrive_dead_letters(&q).await.unwrap(), 1);
        assert!(dlq.list(10).await.unwrap().is_empty());
        let back = receive_one(&q).await;
        assert_eq!((back.body.as_str(), back.receive_count), ("poison", 1));
        let listed = q.list(10).await.unwrap();
        assert_eq!(listed[0].origin_id.as_deref(), Some(poison_id.as_str()));
        assert!(listed[0].in_flight);
    }

    #[tokio::test]
    async fn without_a_dead_letter_queue_messages_are_redelivered_forever() {
        let db = Db::in_memory().unwrap();
        let clock = FakeClock::new();
        let config = QueueConfig {
            max_receive_count: 1,
            ..QueueConfig::new("plain")
        };
        let q = EmbeddedQueue::new(db, config, clock.clone());
        send(&q, "g", "m").await;
        for count in 1..=3 {
            assert_eq!(receive_one(&q).await.receive_count, count);
            clock.advance(Duration::from_secs(31));
        }
    }

    #[tokio::test]
    async fn a_repeated_dedup_id_within_the_window_is_dropped() {
        let (q, other, clock) = queues();
        send_dedup(&q, "g", "first", "d").await;
        send_dedup(&q, "g", "second", "d").await;
        send_dedup(&other, "g", "elsewhere", "d").await;
        let m = receive_one(&q).await;
        assert_eq!(m.body, "first");
        q.delete(&m.receipt_handle).await.unwrap();
        clock.advance(Duration::from_secs(4 * 60));
        send_dedup(&q, "g", "still-dropped", "d").await;
        assert!(
            q.receive(10).await.unwrap().is_empty(),
            "deleted, but remembered"
        );
        clock.advance(Duration::from_secs(61));
        send_dedup(&q, "g", "after-window", "d").await;
        assert_eq!(bodies(&q, 10).await, ["after-window"]);
        assert_eq!(
            bodies(&other, 10).await,
            ["elsewhere"],
            "windows are per queue"
        );
    }

    #[tokio::test]
    async fn depth_counts_visible_and_in_flight_and_the_oldest_age() {
        let (q, _, clock) = queues();
        assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
        send(&q, "a", "a1").await;
        clock.advance(Duration::from_millis(10_500));
        send(&q, "b", "b1").await;
        receive_one(&q).await;
        let depth = q.depth().await.unwrap();
        assert_eq!(
            depth,
            QueueDepth {
                visible: 1,
                in_flight: 1,
                oldest_age_ms: Some(10_500)
            }
        );
    }

    #[tokio::test]
    async fn sends_deletes_and_redrives_wake_pollers_of_every_handle() {
        let (q, dlq, _) = queues();
        let poller = EmbeddedQueue::new(q.db.clone(), config("q"), FakeClock::new());
        let wake = poller.wake_handle();
        let woken = || tokio::time::timeout(Duration::from_millis(100), wake.notified());

        send(&q, "g", "m").await;
        woken()
            .await
            .expect("a send wakes the poller, even before it waits");
        let m = receive_one(&poller).await;
        q.delete(&m.receipt_handle).await.unwrap();
        woken().await.expect("a delete may unblock a group");
        woken().await.expect_err("no wake-up without a change");

        send(&dlq, "g", "dead").await;
        dlq.redrive_dead_letters(&q).await.unwrap();
        woken().await.expect("a redrive fills the queue");
    }

    #[tokio::test]
    async fn redriving_across_databases_is_refused() {
        let (q, _, clock) = queues();
        let elsewhere = EmbeddedQueue::new(Db::in_memory().unwrap(), config("q"), clock);
        let err = q.redrive_dead_letters(&elsewhere).await.unwrap_err();
        assert!(err.to_string().contains("different databases"), "{err}");
    }

    #[tokio::test]
    async fn messages_and_store_data_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bandsync.db");
        let clock = FakeClock::new();
        let band = BandId::parse("durable").unwrap();
        let cfg = SyncConfiguration {
            band: band.clone(),
            name: "Durable".into(),
            file_types: vec![],
            google_credentials: None,
            entity_types: vec![],
            strict_entities: false,
            history_days: None,
        };
        let in_flight = {
            let store = EmbeddedStore::open(&path).unwrap();
            store.put_config(&cfg).await.unwrap();
            let q = EmbeddedQueue::new(store.db(), config("q"), clock.clone());
            send(&q, "a", "a1").await;
            send(&q, "b", "b1").await;
            receive_one(&q).await
        };

        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.get_config(&band).await.unwrap(), Some(cfg));
        let q = EmbeddedQueue::new(store.db(), config("q"), clock.clone());
        let listed = q.list(10).await.unwrap();
        let state: Vec<_> = listed
            .iter()
            .map(|m| (m.body.as_str(), m.in_flight))
            .collect();
        assert_eq!(state, [("a1", true), ("b1", false)]);
        assert_eq!(bodies(&q, 10).await, ["b1"]);
        clock.advance(VISIBILITY);
        let again = receive_one(&q).await;
        assert_eq!(
            (again.message_id, again.receive_count),
            (in_flight.message_id, 2)
        );
        send(&q, "a", "a1").await;
        assert_eq!(
            q.list(10).await.unwrap().len(),
            2,
            "the dedup window survived too"
        );
    }
}
