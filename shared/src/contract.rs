//! The port contracts, written once and run against every backend: the embedded store's
//! unit tests run them today, the DynamoDB adapters' tests run the very same suites.
//!
//! Each suite makes its own fresh ids (uuids), so suites can run concurrently against one
//! shared backend (a DynamoDB Local table) without seeing each other's records, and never
//! assumes a table is empty. Timestamps are around `Utc::now()` so TTL attributes derived
//! from them don't make DynamoDB delete records mid-suite.
//!
//! Suites panic (assert) on a broken promise, naming it; they are for tests only
//! (compiled with `cfg(test)` or the `testing` feature).

use crate::model::{
    BandId, ChannelName, Connection, ConnectionId, Event, FileEntry, ItemAction, ItemStatus,
    NewEvent, OperationStatus, Source, SourceId, SourceKind, SyncConfiguration, SyncItem,
    SyncMetrics, SyncOperation, Trigger, UserId, WatchChannel,
};
use crate::ports::{
    CatalogStore, ChannelLog, ConfigStore, ConnectionStore, DedupeStore, HealthCheck,
    OperationStore, SourceStore, Store, WatchChannelStore,
};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Every suite, one after the other, against one store.
pub async fn store_contract<S: Store + ?Sized + 'static>(store: Arc<S>) {
    config_store_contract(&*store).await;
    source_store_contract(&*store).await;
    catalog_contract(&*store).await;
    operation_contract(&*store).await;
    watch_channel_contract(&*store).await;
    dedupe_contract(&*store).await;
    channel_log_contract(&*store).await;
    connection_contract(&*store).await;
    health_contract(&*store).await;
    channel_log_concurrency_contract(store).await;
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
    }
}

fn new_event(id: &str, ts: DateTime<Utc>) -> NewEvent {
    NewEvent {
        id: id.into(),
        event: "file.created".into(),
        ts,
        data: serde_json::json!({ "id": id, "nested": { "n": [1, 2, 3] } }),
    }
}

fn seqs(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

fn ids(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}

/// Band configurations: get what was put, re-put replaces, bands are separate.
pub async fn config_store_contract<S: ConfigStore + ?Sized>(store: &S) {
    let (a, b) = (band(), band());
    assert_eq!(store.get_config(&a).await.unwrap(), None, "unknown band");
    let mut config = SyncConfiguration {
        band: a.clone(),
        name: "The Band".into(),
        file_types: vec!["pdf".into(), "mp3".into()],
        google_credentials: None,
    };
    store.put_config(&config).await.unwrap();
    assert_eq!(store.get_config(&a).await.unwrap().as_ref(), Some(&config));
    config.file_types.clear();
    config.name = "Renamed".into();
    store.put_config(&config).await.unwrap();
    assert_eq!(
        store.get_config(&a).await.unwrap(),
        Some(config),
        "re-put replaces"
    );
    assert_eq!(
        store.get_config(&b).await.unwrap(),
        None,
        "bands are separate"
    );
    let listed = store.list_bands().await.unwrap();
    assert!(listed.contains(&a), "the registry lists a configured band");
    assert!(!listed.contains(&b), "and only configured ones");
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "by id");
}

/// Sources: get, list per band, re-put replaces (the cursor moves on), delete is idempotent.
pub async fn source_store_contract<S: SourceStore + ?Sized>(store: &S) {
    let (a, b) = (band(), band());
    let (s1, s2) = (source_id(), source_id());
    assert_eq!(
        store.get_source(&a, &s1).await.unwrap(),
        None,
        "unknown source"
    );
    assert!(store.list_sources(&a).await.unwrap().is_empty());
    for (band, id) in [(&a, &s1), (&a, &s2), (&b, &s1)] {
        store.put_source(&source(band, id)).await.unwrap();
    }
    let mut moved = source(&a, &s1);
    moved.cursor = Some("page-token-2".into());
    moved.last_sync_at = Some(Utc::now());
    moved.last_operation = Some(unique("op"));
    store.put_source(&moved).await.unwrap();

    assert_eq!(
        store.get_source(&a, &s1).await.unwrap().as_ref(),
        Some(&moved)
    );
    assert_eq!(
        store.get_source(&b, &s1).await.unwrap(),
        Some(source(&b, &s1))
    );
    let by_id = |v| sorted_by(v, |s: &Source| s.id.clone());
    let listed = by_id(store.list_sources(&a).await.unwrap());
    assert_eq!(
        listed,
        by_id(vec![moved, source(&a, &s2)]),
        "a band's sources, each once"
    );

    // Deleting forgets that source only; deleting a missing one is not an error.
    store.delete_source(&a, &s1).await.unwrap();
    assert_eq!(store.get_source(&a, &s1).await.unwrap(), None, "deleted");
    assert_eq!(
        store.list_sources(&a).await.unwrap(),
        vec![source(&a, &s2)],
        "the band's other source stays"
    );
    assert_eq!(
        store.get_source(&b, &s1).await.unwrap(),
        Some(source(&b, &s1)),
        "another band's source of the same id stays"
    );
    store.delete_source(&a, &s1).await.unwrap();
    store.delete_source(&b, &source_id()).await.unwrap();

    // The generation: 0 at first, +1 per bump, per source, untouched by source writes.
    assert_eq!(store.generation(&a, &s2).await.unwrap(), 0);
    assert_eq!(store.bump_generation(&a, &s2).await.unwrap(), 1);
    assert_eq!(store.bump_generation(&a, &s2).await.unwrap(), 2);
    store.put_source(&source(&a, &s2)).await.unwrap();
    assert_eq!(
        store.generation(&a, &s2).await.unwrap(),
        2,
        "kept by a rewrite"
    );
    assert_eq!(store.generation(&b, &s2).await.unwrap(), 0, "per band");
    assert_eq!(
        store.generation(&a, &source_id()).await.unwrap(),
        0,
        "per source"
    );
}

/// The file catalog: per (band, source), replace by file id, deletes are idempotent.
pub async fn catalog_contract<S: CatalogStore + ?Sized>(store: &S) {
    let a = band();
    let (s1, s2) = (source_id(), source_id());
    assert!(store.list_files(&a, &s1).await.unwrap().is_empty());
    let f1 = file(&a, &s1, "f1", "charts/one.pdf");
    let f2 = file(&a, &s1, "f2", "charts/two.pdf");
    for f in [&f1, &f2, &file(&a, &s2, "f1", "elsewhere.pdf")] {
        store.put_file(f).await.unwrap();
    }
    let renamed = FileEntry {
        path: "charts/renamed.pdf".into(),
        ..f1.clone()
    };
    store.put_file(&renamed).await.unwrap();
    let listed = sorted_by(store.list_files(&a, &s1).await.unwrap(), |f| {
        f.file_id.clone()
    });
    assert_eq!(
        listed,
        vec![renamed, f2.clone()],
        "re-put replaces by file id"
    );

    store.delete_file(&a, &s1, "f1").await.unwrap();
    store.delete_file(&a, &s1, "f1").await.unwrap();
    store.delete_file(&a, &s1, "never-there").await.unwrap();
    assert_eq!(store.list_files(&a, &s1).await.unwrap(), vec![f2]);
    assert_eq!(
        store.list_files(&a, &s2).await.unwrap().len(),
        1,
        "sources are separate"
    );

    // Many at once (more than one DynamoDB batch), replacing what is there.
    let s3 = source_id();
    let many: Vec<FileEntry> = (0..60)
        .map(|i| file(&a, &s3, &format!("m{i:02}"), &format!("bulk/{i:02}.pdf")))
        .collect();
    store.put_files(&many).await.unwrap();
    store.put_files(&many[..5]).await.unwrap();
    store.put_files(&[]).await.unwrap();
    // The same file twice in one call: the later one wins.
    let stale = FileEntry {
        hash: "stale".into(),
        ..many[7].clone()
    };
    store.put_files(&[stale, many[7].clone()]).await.unwrap();
    let listed = sorted_by(store.list_files(&a, &s3).await.unwrap(), |f| {
        f.file_id.clone()
    });
    assert_eq!(listed, many, "put_files");
}

/// Operations: newest first with a limit, per band; re-put replaces; items by (op, n).
pub async fn operation_contract<S: OperationStore + ?Sized>(store: &S) {
    let (a, b) = (band(), band());
    let t0 = Utc::now();
    let ops: Vec<_> = (0..3).map(|i| operation(&a, t0 + secs(i))).collect();
    // Put out of order: the listing must sort, not echo insertion order.
    for op in [&ops[1], &ops[0], &ops[2], &operation(&b, t0 + secs(10))] {
        store.put_operation(op).await.unwrap();
    }
    let listed = async |limit| store.list_operations(&a, limit).await.unwrap();
    assert_eq!(
        listed(2).await,
        vec![ops[2].clone(), ops[1].clone()],
        "newest first, limited"
    );
    assert_eq!(
        listed(10).await,
        vec![ops[2].clone(), ops[1].clone(), ops[0].clone()]
    );

    let done = SyncOperation {
        status: OperationStatus::Completed,
        finished_at: Some(t0 + secs(5)),
        metrics: SyncMetrics {
            seen: 3,
            synced: 2,
            failed: 1,
            skipped: 0,
            duration_ms: 1234,
        },
        error: Some("one file failed".into()),
        ..ops[0].clone()
    };
    store.put_operation(&done).await.unwrap();
    assert_eq!(
        store.get_operation(&done.id).await.unwrap().as_ref(),
        Some(&done)
    );
    assert_eq!(
        listed(10).await.len(),
        3,
        "re-put replaces, never duplicates"
    );
    assert_eq!(store.get_operation(&unique("op")).await.unwrap(), None);

    let op = &ops[2].id;
    assert!(store.list_items(op).await.unwrap().is_empty());
    for n in [10, 2, 1] {
        store.put_item(&item(op, n)).await.unwrap();
    }
    store.put_item(&item(&ops[1].id, 1)).await.unwrap();
    let failed = SyncItem {
        status: ItemStatus::Failed,
        error: Some("403 from Drive".into()),
        ..item(op, 2)
    };
    store.put_item(&failed).await.unwrap();
    let items = store.list_items(op).await.unwrap();
    assert_eq!(
        items,
        vec![item(op, 1), failed, item(op, 10)],
        "by n, numerically; re-put replaces"
    );

    // Many at once (more than one DynamoDB batch), replacing what is there.
    let op = &ops[0].id;
    let many: Vec<SyncItem> = (1..=60).map(|n| item(op, n)).collect();
    store.put_items(&many).await.unwrap();
    store.put_items(&many[..5]).await.unwrap();
    store.put_items(&[]).await.unwrap();
    assert_eq!(store.list_items(op).await.unwrap(), many, "put_items");
}

/// Watch channels: by id, per band, and the message number only moves forward.
pub async fn watch_channel_contract<S: WatchChannelStore + ?Sized>(store: &S) {
    let (a, b) = (band(), band());
    let (w1, w2, w3) = (watch_channel(&a), watch_channel(&a), watch_channel(&b));
    for w in [&w1, &w2, &w3] {
        store.put_watch_channel(w).await.unwrap();
    }
    assert_eq!(
        store.get_watch_channel(&w1.id).await.unwrap().as_ref(),
        Some(&w1)
    );
    assert_eq!(
        store.get_watch_channel(&unique("watch")).await.unwrap(),
        None
    );
    let listed = sorted_by(store.list_watch_channels(&a).await.unwrap(), |w| {
        w.id.clone()
    });
    assert_eq!(
        listed,
        sorted_by(vec![w1.clone(), w2.clone()], |w| w.id.clone()),
        "per band"
    );

    let t0 = Utc::now();
    store.record_message(&w1.id, 5, t0).await.unwrap();
    store.record_message(&w1.id, 3, t0 + secs(1)).await.unwrap();
    let seen = store.get_watch_channel(&w1.id).await.unwrap().unwrap();
    assert_eq!(
        (seen.last_message, seen.last_message_at),
        (Some(5), Some(t0)),
        "never backwards"
    );
    store.record_message(&w1.id, 7, t0 + secs(2)).await.unwrap();
    let seen = store.get_watch_channel(&w1.id).await.unwrap().unwrap();
    assert_eq!(
        (seen.last_message, seen.last_message_at),
        (Some(7), Some(t0 + secs(2)))
    );
    assert_eq!(
        WatchChannel {
            last_message: None,
            last_message_at: None,
            ..seen
        },
        w1,
        "recording a message changes nothing else"
    );

    let renewed = WatchChannel {
        expires_at: Some(t0 + TimeDelta::days(14)),
        ..w2.clone()
    };
    store.put_watch_channel(&renewed).await.unwrap();
    assert_eq!(
        store.get_watch_channel(&w2.id).await.unwrap(),
        Some(renewed.clone()),
        "re-put replaces"
    );

    store.delete_watch_channel(&renewed).await.unwrap();
    assert_eq!(
        store.get_watch_channel(&w2.id).await.unwrap(),
        None,
        "deleted"
    );
    let listed = store.list_watch_channels(&a).await.unwrap();
    assert_eq!(
        listed.iter().map(|w| &w.id).collect::<Vec<_>>(),
        [&w1.id],
        "a deleted channel is not listed"
    );
    store.delete_watch_channel(&renewed).await.unwrap();
}

/// Webhook dedupe: first time true, repeats within the ttl false, after it true again.
pub async fn dedupe_contract<S: DedupeStore + ?Sized>(store: &S) {
    let (key, other) = (unique("dedupe"), unique("dedupe"));
    let ttl = Duration::from_secs(60);
    let t0 = Utc::now();
    assert!(store.first_seen(&key, t0, ttl).await.unwrap(), "first time");
    assert!(
        !store.first_seen(&key, t0, ttl).await.unwrap(),
        "immediate repeat"
    );
    assert!(
        !store.first_seen(&key, t0 + secs(59), ttl).await.unwrap(),
        "within the ttl"
    );
    assert!(
        store.first_seen(&other, t0 + secs(30), ttl).await.unwrap(),
        "keys are separate"
    );
    assert!(
        store.first_seen(&key, t0 + secs(61), ttl).await.unwrap(),
        "expired: seen anew"
    );
    assert!(
        !store.first_seen(&key, t0 + secs(100), ttl).await.unwrap(),
        "a new window began at 61 s"
    );
    assert!(
        store.first_seen(&key, t0 + secs(122), ttl).await.unwrap(),
        "and ended at 121 s"
    );
}

/// The channel log: gapless seqs, idempotent appends, one epoch, reads, head and prune.
pub async fn channel_log_contract<S: ChannelLog + ?Sized>(log: &S) {
    let (ch, other) = (band_channel(), band_channel());
    let t0 = Utc::now();
    assert_eq!(log.head(&ch).await.unwrap(), None, "never had an event");
    assert!(log.read_after(&ch, 0, 10).await.unwrap().is_empty());
    assert!(log.append(&ch, &[]).await.unwrap().is_empty());

    let (a, b, c) = (
        new_event("a", t0),
        new_event("b", t0 + secs(1)),
        new_event("c", t0 + secs(2)),
    );
    let first = log.append(&ch, &[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(seqs(&first), [1, 2]);
    assert_eq!(ids(&first), ["a", "b"]);
    let epoch = first[0].epoch.clone();
    assert!(!epoch.is_empty());
    assert!(first.iter().all(|e| e.epoch == epoch && e.channel == ch));
    assert_eq!(
        (first[0].event.as_str(), first[0].ts, &first[0].data),
        (a.event.as_str(), a.ts, &a.data),
        "the event is stored as given"
    );

    let b_again = NewEvent {
        data: serde_json::json!("a redelivery may carry other data"),
        ..b.clone()
    };
    let second = log.append(&ch, &[b_again, c.clone()]).await.unwrap();
    assert_eq!(seqs(&second), [2, 3], "b keeps its seq, c takes the next");
    assert_eq!(
        second[0], first[1],
        "a repeated event comes back as first stored"
    );

    let all = log.read_after(&ch, 0, 100).await.unwrap();
    assert_eq!(
        (seqs(&all), ids(&all)),
        (vec![1, 2, 3], vec!["a", "b", "c"]),
        "exactly once each"
    );
    assert_eq!(all[..2], first[..], "reads return what appends returned");
    assert_eq!(
        ids(&log.read_after(&ch, 1, 1).await.unwrap()),
        ["b"],
        "after, limited"
    );
    assert!(log.read_after(&ch, 3, 10).await.unwrap().is_empty());
    let head = log.head(&ch).await.unwrap().expect("a head");
    assert_eq!((head.seq, head.first_retained, &head.epoch), (3, 1, &epoch));

    let elsewhere = log.append(&other, std::slice::from_ref(&a)).await.unwrap();
    assert_eq!(seqs(&elsewhere), [1], "channels count separately");
    assert_ne!(elsewhere[0].epoch, epoch, "each channel has its own epoch");

    assert_eq!(
        log.prune(&ch, t0 + secs(1)).await.unwrap(),
        1,
        "strictly older than `before`"
    );
    let head = log.head(&ch).await.unwrap().unwrap();
    assert_eq!((head.seq, head.first_retained), (3, 2));
    assert_eq!(ids(&log.read_after(&ch, 0, 10).await.unwrap()), ["b", "c"]);
    assert_eq!(log.prune(&ch, t0 + secs(60)).await.unwrap(), 2);
    assert_eq!(log.prune(&ch, t0 + secs(60)).await.unwrap(), 0);
    let head = log.head(&ch).await.unwrap().unwrap();
    assert_eq!(
        (head.seq, head.first_retained, &head.epoch),
        (3, 4, &epoch),
        "all pruned: seq stays"
    );

    let d = log
        .append(&ch, &[new_event("d", t0 + secs(3))])
        .await
        .unwrap();
    assert_eq!((d[0].seq, &d[0].epoch), (4, &epoch), "seqs never go back");
    let head = log.head(&ch).await.unwrap().unwrap();
    assert_eq!((head.seq, head.first_retained), (4, 4));
    assert_eq!(
        log.head(&other).await.unwrap().unwrap().seq,
        1,
        "pruning is per channel"
    );

    // One id twice in one append: one event, one seq.
    let twice = new_event("twice", t0 + secs(4));
    let both = log.append(&ch, &[twice.clone(), twice]).await.unwrap();
    assert_eq!(seqs(&both), [5, 5], "the repeat keeps the first seq");
    assert_eq!(log.head(&ch).await.unwrap().unwrap().seq, 5);

    // The broadcaster's watermark: per channel, starts at 0, never moves back.
    assert_eq!(log.delivered(&ch).await.unwrap(), 0);
    log.mark_delivered(&ch, 3).await.unwrap();
    log.mark_delivered(&ch, 2).await.unwrap();
    assert_eq!(log.delivered(&ch).await.unwrap(), 3, "never moves back");
    assert_eq!(log.delivered(&other).await.unwrap(), 0, "per channel");
    log.mark_delivered(&ch, 4).await.unwrap();
    assert_eq!(log.delivered(&ch).await.unwrap(), 4);
}

/// Concurrent appends from several tasks: every event gets exactly one seq, the seqs are
/// 1..=N without gaps, each task sees its own events in order, and concurrent repeats of
/// one batch store it once.
pub async fn channel_log_concurrency_contract<S: ChannelLog + ?Sized + 'static>(log: Arc<S>) {
    const TASKS: usize = 8;
    const EVENTS: usize = 25;
    const TOTAL: u64 = (TASKS * EVENTS) as u64;
    let ch = band_channel();
    let t0 = Utc::now();

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let (log, ch) = (Arc::clone(&log), ch.clone());
        tasks.spawn(async move {
            let mut got = Vec::with_capacity(EVENTS);
            for i in 0..EVENTS {
                let event = new_event(&format!("t{task}-e{i}"), t0);
                got.extend(seqs(&log.append(&ch, &[event]).await.unwrap()));
            }
            got
        });
    }
    let mut all = Vec::new();
    for got in tasks.join_all().await {
        assert!(got.is_sorted(), "a task's events are in its order: {got:?}");
        all.extend(got);
    }
    assert_eq!(
        sorted(all),
        (1..=TOTAL).collect::<Vec<_>>(),
        "gapless, each seq once"
    );

    let stored = log.read_after(&ch, 0, 10 * TOTAL as usize).await.unwrap();
    assert_eq!(seqs(&stored), (1..=TOTAL).collect::<Vec<_>>());
    let distinct: BTreeSet<_> = stored.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(distinct.len(), TOTAL as usize, "every event stored once");

    let batch: Vec<_> = (0..3)
        .map(|i| new_event(&format!("shared-{i}"), t0))
        .collect();
    let mut repeats = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let (log, ch, batch) = (Arc::clone(&log), ch.clone(), batch.clone());
        repeats.spawn(async move { log.append(&ch, &batch).await.unwrap() });
    }
    let results = repeats.join_all().await;
    let want = vec![TOTAL + 1, TOTAL + 2, TOTAL + 3];
    assert!(
        results.iter().all(|r| seqs(r) == want),
        "one seq per event, whoever wins: {results:?}"
    );
    let head = log.head(&ch).await.unwrap().unwrap();
    assert_eq!(
        (head.seq, head.first_retained),
        (TOTAL + 3, 1),
        "no seq was burnt"
    );
}

/// Connections and subscriptions: idempotent subscribe, per-channel fan-out lists, and
/// deleting a connection takes its subscriptions with it.
pub async fn connection_contract<S: ConnectionStore + ?Sized>(store: &S) {
    let (c1, c2) = (connection_id(), connection_id());
    let (ch1, ch2, quiet) = (band_channel(), band_channel(), band_channel());
    let now = Utc::now();
    assert_eq!(store.get_connection(&c1).await.unwrap(), None);
    for id in [&c1, &c2] {
        store.put_connection(&connection(id)).await.unwrap();
    }
    assert_eq!(
        store.get_connection(&c1).await.unwrap().map(|c| c.id),
        Some(c1.clone())
    );

    for (id, ch) in [(&c1, &ch1), (&c1, &ch2), (&c1, &ch1), (&c2, &ch1)] {
        store.subscribe(id, ch, now).await.unwrap();
    }
    let subscribers = async |ch| sorted(store.subscribers(ch).await.unwrap());
    assert_eq!(
        subscribers(&ch1).await,
        sorted(vec![c1.clone(), c2.clone()]),
        "each once"
    );
    assert_eq!(subscribers(&ch2).await, vec![c1.clone()]);
    assert!(
        subscribers(&quiet).await.is_empty(),
        "channels are separate"
    );
    let subscriptions = sorted(store.subscriptions(&c1).await.unwrap());
    assert_eq!(subscriptions, sorted(vec![ch1.clone(), ch2.clone()]));

    store.unsubscribe(&c1, &ch2).await.unwrap();
    store.unsubscribe(&c1, &ch2).await.unwrap();
    assert!(subscribers(&ch2).await.is_empty());

    store.delete_connection(&c1).await.unwrap();
    assert_eq!(store.get_connection(&c1).await.unwrap(), None);
    assert_eq!(
        subscribers(&ch1).await,
        vec![c2.clone()],
        "its subscriptions went with it"
    );
    assert!(store.subscriptions(&c1).await.unwrap().is_empty());
    store.delete_connection(&c1).await.unwrap();
    store.delete_connection(&connection_id()).await.unwrap();
    assert_eq!(
        store.subscriptions(&c2).await.unwrap(),
        vec![ch1],
        "others untouched"
    );
}

/// The backend answers.
pub async fn health_contract<S: HealthCheck + ?Sized>(store: &S) {
    store.check().await.expect("a healthy backend");
}
