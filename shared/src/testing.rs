//! TEMPORARY: the part of the test kit (`bandsync-testkit`, infra/testkit) that the unit
//! tests of `sync/`, `google/` and `channels.rs` still use from inside the crate. A unit
//! test cannot use the kit's copy (the kit links this library as another crate, so its
//! types differ); this file goes once those tests are integration tests on the kit.
//!
//! - [`RecordingQueue`], [`FlakyLog`], [`RecordingNotifier`], [`FixedClock`];
//! - [`sqs_event`] and [`failed_ids`] for SQS batches;
//! - [`Harness`]: the store, the queues and the clock the sync worker and the keeper use.

use crate::model::{ChannelHead, ChannelName, Event, NewEvent};
use crate::ports::{ChannelLog, Clock, OutMessage, PortError, PortResult, Queue};
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// The fixed "now" every test starts at (2026-03-01T12:00:00Z).
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_772_366_400, 0).expect("a valid timestamp")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------
// Queue

/// A queue that records what it accepted, in order. `fail_send(n)` makes the nth send
/// attempt (counted from 1 over the queue's life) fail with a backend error; the failed
/// message is not recorded.
#[derive(Debug, Default)]
pub struct RecordingQueue {
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    attempts: usize,
    fail_on: Vec<usize>,
    accepted: Vec<OutMessage>,
}

impl RecordingQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fail the `n`th send attempt (1-based, over the queue's whole life).
    pub fn fail_send(&self, n: usize) {
        lock(&self.state).fail_on.push(n);
    }

    /// Send attempts so far, failed ones included.
    pub fn attempts(&self) -> usize {
        lock(&self.state).attempts
    }

    /// Every accepted message, in send order.
    pub fn messages(&self) -> Vec<OutMessage> {
        lock(&self.state).accepted.clone()
    }

    /// The accepted messages an SQS FIFO queue would pass on: a repeat of a dedup id
    /// (within the 5-minute window, which a unit test never leaves) is dropped.
    pub fn deduplicated(&self) -> Vec<OutMessage> {
        let mut seen = std::collections::HashSet::new();
        self.messages()
            .into_iter()
            .filter(|m| seen.insert(m.dedup_id.clone()))
            .collect()
    }

    /// The accepted bodies decoded as `T`, in send order.
    pub fn bodies<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        self.messages()
            .iter()
            .map(|m| serde_json::from_str(&m.body).expect("a queued body decodes"))
            .collect()
    }
}

#[async_trait]
impl Queue for RecordingQueue {
    async fn send(&self, message: OutMessage) -> PortResult<()> {
        let mut s = lock(&self.state);
        s.attempts += 1;
        let n = s.attempts;
        if s.fail_on.contains(&n) {
            return Err(PortError::Backend(anyhow::anyhow!(
                "RecordingQueue: send #{n} fails (as the test asked)"
            )));
        }
        s.accepted.push(message);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Channel log

/// A [`ChannelLog`] that passes everything to another, except the appends it was told to
/// fail (a store outage at that moment): `fail_append(n)` fails the nth append attempt.
pub struct FlakyLog {
    inner: Arc<dyn ChannelLog>,
    state: Mutex<(usize, Vec<usize>)>,
}

impl FlakyLog {
    pub fn new(inner: Arc<dyn ChannelLog>) -> Self {
        Self {
            inner,
            state: Mutex::new((0, Vec::new())),
        }
    }

    /// Fail the `n`th append attempt (1-based, over the log's whole life).
    pub fn fail_append(&self, n: usize) {
        lock(&self.state).1.push(n);
    }
}

#[async_trait]
impl ChannelLog for FlakyLog {
    async fn append(&self, channel: &ChannelName, events: &[NewEvent]) -> PortResult<Vec<Event>> {
        {
            let mut s = lock(&self.state);
            s.0 += 1;
            if s.1.contains(&s.0) {
                return Err(PortError::Backend(anyhow::anyhow!(
                    "FlakyLog: append #{} fails (as the test asked)",
                    s.0
                )));
            }
        }
        self.inner.append(channel, events).await
    }

    async fn read_after(
        &self,
        channel: &ChannelName,
        after_seq: u64,
        limit: usize,
    ) -> PortResult<Vec<Event>> {
        self.inner.read_after(channel, after_seq, limit).await
    }

    async fn head(&self, channel: &ChannelName) -> PortResult<Option<ChannelHead>> {
        self.inner.head(channel).await
    }

    async fn prune(&self, channel: &ChannelName, before: DateTime<Utc>) -> PortResult<u64> {
        self.inner.prune(channel, before).await
    }

    async fn delivered(&self, channel: &ChannelName) -> PortResult<u64> {
        self.inner.delivered(channel).await
    }

    async fn mark_delivered(&self, channel: &ChannelName, seq: u64) -> PortResult<()> {
        self.inner.mark_delivered(channel, seq).await
    }
}

// ---------------------------------------------------------------------------------------
// Notifier

/// Keeps every alert as (subject, message).
#[derive(Debug, Default)]
pub struct RecordingNotifier {
    alerts: Mutex<Vec<(String, String)>>,
}

impl RecordingNotifier {
    pub fn alerts(&self) -> Vec<(String, String)> {
        lock(&self.alerts).clone()
    }
}

#[async_trait]
impl crate::ports::Notifier for RecordingNotifier {
    async fn alert(&self, subject: &str, message: &str) -> PortResult<()> {
        lock(&self.alerts).push((subject.to_owned(), message.to_owned()));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Clock

/// A clock that stands still until set or advanced.
#[derive(Debug)]
pub struct FixedClock {
    now: Mutex<DateTime<Utc>>,
}

impl FixedClock {
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(now),
        }
    }

    pub fn advance(&self, by: TimeDelta) {
        *lock(&self.now) += by;
    }
}

impl Default for FixedClock {
    fn default() -> Self {
        Self::new(t0())
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *lock(&self.now)
    }
}

// ---------------------------------------------------------------------------------------
// SQS events

/// An SQS event as a FIFO queue delivers a batch to Lambda: `(message id, body)` pairs,
/// in order, all in `group`.
pub fn sqs_event(group: &str, messages: &[(&str, &str)]) -> aws_lambda_events::sqs::SqsEvent {
    let sent = t0().timestamp_millis().to_string();
    let records: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, (id, body))| {
            json!({
                "messageId": id,
                "receiptHandle": format!("AQEB{id}"),
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": sent,
                    "SenderId": "AROAIWPX5BD2BHG722MW4:sender",
                    "ApproximateFirstReceiveTimestamp": sent,
                    "SequenceNumber": format!("1884949646046769{i:04}"),
                    "MessageGroupId": group,
                    "MessageDeduplicationId": id,
                },
                "messageAttributes": {},
                "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:bandsync.fifo",
                "awsRegion": "eu-west-1",
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("an SQS event fixture decodes")
}

/// The message ids a batch response reports failed, in order.
pub fn failed_ids(response: &aws_lambda_events::sqs::SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

#[cfg(feature = "local")]
pub use harness::*;

#[cfg(feature = "local")]
mod harness {
    use super::*;
    use crate::adapters::local::EmbeddedStore;
    use crate::model::*;
    use crate::ports::{ChannelLog, ConfigStore, SourceStore, Store};
    use crate::publish::Publisher;
    use crate::sync::SyncWorker;

    pub fn band(id: &str) -> BandId {
        BandId::parse(id).expect("a valid band id")
    }

    pub fn source_id(id: &str) -> SourceId {
        SourceId::parse(id).expect("a valid source id")
    }

    /// The sync worker wired to one in-memory store, recording queues and a fixed clock
    /// (the kit's `Harness` wires every handler).
    pub struct Harness {
        pub store: Arc<EmbeddedStore>,
        pub sync_queue: Arc<RecordingQueue>,
        pub broadcast_queue: Arc<RecordingQueue>,
        pub clock: Arc<FixedClock>,
        /// The store's channel log as the publisher sees it (can be told to fail).
        pub log: Arc<FlakyLog>,
    }

    impl Default for Harness {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Harness {
        pub fn new() -> Self {
            let store = Arc::new(EmbeddedStore::in_memory().expect("an in-memory store"));
            Self {
                log: Arc::new(FlakyLog::new(store.clone())),
                store,
                sync_queue: Arc::new(RecordingQueue::new()),
                broadcast_queue: Arc::new(RecordingQueue::new()),
                clock: Arc::new(FixedClock::default()),
            }
        }

        fn store_dyn(&self) -> Arc<dyn Store> {
            self.store.clone()
        }

        /// The clock's now.
        pub fn now(&self) -> DateTime<Utc> {
            self.clock.now()
        }

        /// A band with its configuration (every file type).
        pub async fn add_band(&self, id: &str) -> BandId {
            let b = band(id);
            self.store
                .put_config(&SyncConfiguration {
                    band: b.clone(),
                    name: id.to_owned(),
                    file_types: vec![],
                    google_credentials: None,
                })
                .await
                .expect("put_config");
            b
        }

        /// A source of a band (a folder source at `location`).
        pub async fn add_source(&self, band: &BandId, id: &str, location: &str) -> Source {
            let s = Source::new(band.clone(), source_id(id), SourceKind::Folder, location);
            self.store.put_source(&s).await.expect("put_source");
            s
        }

        /// A job as the webhook or the API would queue it, requested now.
        pub fn sync_job(
            &self,
            id: &str,
            band: &BandId,
            source: &SourceId,
            trigger: Trigger,
        ) -> SyncJob {
            SyncJob {
                id: id.to_owned(),
                band: band.clone(),
                source: source.clone(),
                trigger,
                full: false,
                requested_by: None,
                requested_at: self.clock.now(),
            }
        }

        /// Everything in a channel's log, oldest first.
        pub async fn log(&self, channel: &ChannelName) -> Vec<Event> {
            self.store
                .read_after(channel, 0, 10_000)
                .await
                .expect("read_after")
        }

        pub fn publisher(&self) -> Publisher {
            Publisher::new(self.log.clone(), self.broadcast_queue.clone())
        }

        pub fn sync_worker(&self) -> SyncWorker {
            SyncWorker::new(self.store_dyn(), self.publisher(), self.clock.clone())
        }
    }
}
