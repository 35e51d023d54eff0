//! The port contracts, written once and run against every backend: the embedded store's
//! tests run them on SQLite, the DynamoDB adapters' tests the very same suites on moto.
//!
//! Each suite makes its own fresh ids (uuids), so suites can run concurrently against one
//! shared backend (a DynamoDB Local table) without seeing each other's records, and never
//! assumes a table is empty. Timestamps are around `Utc::now()` so TTL attributes derived
//! from them don't make DynamoDB delete records mid-suite.
//!
//! Suites panic (assert) on a broken promise, naming it; they are for tests only
//! (the `bandsync-testkit` crate no function links).

use bandsync::model::{
    BandId, ChannelName, Connection, ConnectionId, Event, FileEntry, ItemAction, ItemStatus,
    NewEvent, OperationStatus, Source, SourceId, SourceKind, SyncConfiguration, SyncItem,
    SyncMetrics, SyncOperation, Trigger, UserId, WatchChannel,
};
use bandsync::ports::{
    CatalogStore, ChannelLog, ConfigStore, ConnectionStore, DedupeStore, HealthCheck,
    OperationStore, SourceStore, Store, WatchChannelStore,
};
use bandsync::wire::events::{EventKind, SyncCompleted, SyncFailure};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

mod channel_log;
mod connections;
mod entities;
mod presence;
mod purges;
mod records;
mod revisions;

pub use channel_log::{channel_log_concurrency_contract, channel_log_contract};
pub use connections::{connection_contract, health_contract};
pub use entities::{
    entity_commit_concurrency_contract, entity_store_contract, huge_entity_contract,
};
pub use presence::{presence_concurrency_contract, presence_contract};
pub use purges::{catalog_page_contract, operation_walk_contract, purge_mark_contract};
pub use records::{
    catalog_contract, config_store_contract, dedupe_contract, operation_contract,
    source_store_contract, watch_channel_contract,
};
pub use revisions::{
    config_revision_contract, source_revision_contract, source_revision_race_contract,
};

/// Every suite, one after the other, against one store.
pub async fn store_contract<S: Store + ?Sized + 'static>(store: Arc<S>) {
    config_store_contract(&*store).await;
    source_store_contract(&*store).await;
    config_revision_contract(&*store).await;
    source_revision_contract(&*store).await;
    source_revision_race_contract(&*store).await;
    catalog_contract(&*store).await;
    catalog_page_contract(&*store).await;
    purge_mark_contract(&*store).await;
    operation_walk_contract(&*store).await;
    operation_contract(&*store).await;
    watch_channel_contract(&*store).await;
    dedupe_contract(&*store).await;
    channel_log_contract(&*store).await;
    connection_contract(&*store).await;
    health_contract(&*store).await;
    entity_store_contract(&*store).await;
    presence_contract(&*store).await;
    channel_log_concurrency_contract(Arc::clone(&store)).await;
    entity_commit_concurrency_contract(store).await;
}

/// A fresh identifier, unique across runs and backends.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

fn band() -> BandId {
    BandId::parse(&unique("band")).expect("a valid band id")
}

fn source_id() -> SourceId {
    SourceId::parse(&unique("src")).expect("a valid source id")
}

fn connection_id() -> ConnectionId {
    ConnectionId::parse(&unique("conn")).expect("a valid connection id")
}

fn band_channel() -> ChannelName {
    ChannelName::Band(band())
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

/// Sorted, for comparing listings whose order the port leaves open.
fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn sorted_by<T, K: Ord>(mut v: Vec<T>, key: impl FnMut(&T) -> K) -> Vec<T> {
    v.sort_by_key(key);
    v
}

fn source(band: &BandId, id: &SourceId) -> Source {
    Source::new(
        band.clone(),
        id.clone(),
        SourceKind::Folder,
        format!("/bands/{band}/{id}"),
    )
}

fn file(band: &BandId, source: &SourceId, file_id: &str, path: &str) -> FileEntry {
    FileEntry {
        band: band.clone(),
        source: source.clone(),
        file_id: file_id.into(),
        path: path.into(),
        size: 42,
        hash: "ab".repeat(32),
        modified_ms: 1_700_000_000_000,
    }
}

fn operation(band: &BandId, started_at: DateTime<Utc>) -> SyncOperation {
    SyncOperation {
        id: unique("op"),
        band: band.clone(),
        source: source_id(),
        trigger: Trigger::Manual,
        full: false,
        status: OperationStatus::Running,
        started_at,
        finished_at: None,
        metrics: SyncMetrics::default(),
        error: None,
    }
}

fn item(operation: &str, n: u32) -> SyncItem {
    SyncItem {
        operation: operation.into(),
        n,
        file_id: format!("file-{n}"),
        path: format!("charts/{n}.pdf"),
        action: ItemAction::Created,
        status: ItemStatus::Synced,
        error: None,
    }
}

fn watch_channel(band: &BandId) -> WatchChannel {
    WatchChannel {
        id: unique("watch"),
        band: band.clone(),
        source: source_id(),
        resource_id: unique("resource"),
        token_hash: "cd".repeat(32),
        expires_at: Some(Utc::now() + TimeDelta::days(7)),
        last_message: None,
        last_message_at: None,
        kind: Some(SourceKind::Drive),
        created_at: Some(Utc::now()),
    }
}

fn connection(id: &ConnectionId) -> Connection {
    let now = Utc::now();
    Connection {
        id: id.clone(),
        user: UserId::parse("ringo@example.com").expect("a valid user id"),
        bands: vec![band()],
        connected_at: now,
        expires_at: now + TimeDelta::hours(3),
        device: None,
    }
}

/// An event with a nested payload (an object and a list in it), to see it stored as given.
fn new_event(id: &str, ts: DateTime<Utc>) -> NewEvent {
    new_event_failing(id, ts, "a failure")
}

/// The same event (id, time, kind), with another failure in its payload.
fn new_event_failing(id: &str, ts: DateTime<Utc>, error: &str) -> NewEvent {
    let completed = SyncCompleted {
        operation: id.into(),
        source: SourceId::parse("charts").expect("a valid source id"),
        metrics: SyncMetrics::default(),
        failures: vec![SyncFailure {
            path: "one.pdf".into(),
            error: error.into(),
        }],
    };
    NewEvent::new(id, ts, EventKind::SyncCompleted(completed))
}

fn seqs(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

fn ids(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}
