use bandsync::model::{BandId, ChannelName};
use bandsync::model::{NewEvent, Source, SourceId, SourceKind};
use bandsync::ports::{ChannelLog, SourceStore};
use bandsync::scheduler::*;
use bandsync::watch_keeper::{WatchKeeper, WatchReport};
use bandsync::wire::events::{EventKind, SyncProgress};
use bandsync_testkit::*;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn a_tick_reconciles_every_source_and_prunes_past_the_window() {
    // GIVEN a band with two sources and an event older than the retention window
    let h = Harness::new();
    let demo = BandId::parse("demo").unwrap();
    for id in ["charts", "takes"] {
        h.store
            .put_source(&Source::new(
                demo.clone(),
                SourceId::parse(id).unwrap(),
                SourceKind::Folder,
                "/nowhere",
            ))
            .await
            .unwrap();
    }
    let progress = || {
        EventKind::SyncProgress(SyncProgress {
            operation: "op1".into(),
            done: 1,
            total: 2,
        })
    };
    let old = NewEvent::new("old", h.now() - chrono::Duration::days(2), progress());
    let fresh = NewEvent::new("fresh", h.now(), progress());
    let channel = ChannelName::Band(demo.clone());
    h.store.append(&channel, &[old, fresh]).await.unwrap();
    let scheduler = Scheduler::new(
        h.store.clone(),
        h.store.clone(),
        h.store.clone(),
        h.sync_queue.clone(),
        h.clock.clone(),
    );

    // WHEN it ticks
    let report = scheduler.tick(std::slice::from_ref(&demo)).await.unwrap();

    // THEN one reconcile per source is queued in its group, and the old event is gone
    assert_eq!(
        report,
        TickReport {
            reconciles_queued: 2,
            events_pruned: 1,
            watch_channels: WatchReport::default(),
            conflicts: Default::default(),
            history_pruned: 0,
            purged: Default::default(),
        }
    );
    let groups: Vec<String> = h
        .sync_queue
        .messages()
        .into_iter()
        .map(|m| m.group)
        .collect();
    assert_eq!(groups, ["demo/charts", "demo/takes"]);
    assert_eq!(
        h.store
            .head(&channel)
            .await
            .unwrap()
            .unwrap()
            .first_retained,
        2
    );
}

/// Google down: every watch call fails after a while.
struct GoogleDown;

#[async_trait::async_trait]
impl bandsync::google::apis::WatchApi for GoogleDown {
    async fn watch(
        &self,
        _source: &Source,
        _request: &bandsync::google::watch::WatchRequest,
    ) -> Result<bandsync::google::watch::Channel, bandsync::google::GoogleError> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err(bandsync::google::GoogleError::Transport(
            "unreachable".into(),
        ))
    }
    async fn stop(
        &self,
        _band: &BandId,
        _kind: SourceKind,
        _id: &str,
        _resource_id: &str,
    ) -> Result<(), bandsync::google::GoogleError> {
        Err(bandsync::google::GoogleError::Transport(
            "unreachable".into(),
        ))
    }
}

#[tokio::test]
async fn registered_bands_are_reconciled_even_when_google_is_down() {
    // GIVEN two registered bands (one also named by BANDS) with three Drive sources,
    // and a Google that fails every watch call
    let h = Harness::new();
    let demo = h.add_band("demo").await;
    let jazz = h.add_band("jazz").await;
    for (band, id) in [(&demo, "charts"), (&demo, "takes"), (&jazz, "gigs")] {
        let source = Source::new(
            band.clone(),
            SourceId::parse(id).unwrap(),
            SourceKind::Drive,
            "folder-id",
        );
        h.store.put_source(&source).await.unwrap();
    }
    let keeper = WatchKeeper::new(
        h.store.clone(),
        h.store.clone(),
        Arc::new(GoogleDown),
        h.clock.clone(),
        "https://example.com/webhooks/google".into(),
    );
    let mut scheduler = Scheduler::new(
        h.store.clone(),
        h.store.clone(),
        h.store.clone(),
        h.sync_queue.clone(),
        h.clock.clone(),
    )
    .with_registry(h.store.clone())
    .with_watch_keeper(keeper);
    // AND a budget that only lets the first watch call start
    scheduler.channel_budget = Duration::from_millis(10);

    // WHEN it ticks with BANDS = demo
    let report = scheduler.tick(std::slice::from_ref(&demo)).await.unwrap();

    // THEN every source of both bands got its reconcile, each once
    assert_eq!(report.reconciles_queued, 3, "{report:?}");
    let mut groups: Vec<String> = h
        .sync_queue
        .messages()
        .into_iter()
        .map(|m| m.group)
        .collect();
    groups.sort();
    assert_eq!(groups, ["demo/charts", "demo/takes", "jazz/gigs"]);
    // AND the watch calls failed or were left for the next run, without failing
    // the tick
    assert_eq!(report.watch_channels.failed, 1, "{report:?}");
    assert_eq!(report.watch_channels.deferred, 2, "{report:?}");
    assert_eq!(report.watch_channels.created, 0);
}

/// Band `demo` with one source `charts`, and a scheduler on the harness's parts.
async fn one_source() -> (Harness, BandId, Scheduler) {
    let h = Harness::new();
    let demo = h.add_band("demo").await;
    h.add_source(&demo, "charts", "/nowhere").await;
    let scheduler = Scheduler::new(
        h.store.clone(),
        h.store.clone(),
        h.store.clone(),
        h.sync_queue.clone(),
        h.clock.clone(),
    );
    (h, demo, scheduler)
}

#[tokio::test]
async fn a_slow_source_has_at_most_one_reconcile_pending() {
    // GIVEN a source whose reconcile was queued, and no pass has started since
    let (h, demo, scheduler) = one_source().await;
    assert_eq!(
        scheduler
            .tick(std::slice::from_ref(&demo))
            .await
            .unwrap()
            .reconciles_queued,
        1
    );

    // WHEN the scheduler ticks again, 5 and 10 minutes later (the queue's own dedup
    // window is over)
    for _ in 0..2 {
        h.clock.advance(chrono::TimeDelta::minutes(5));
        let report = scheduler.tick(std::slice::from_ref(&demo)).await.unwrap();
        // THEN nothing more is sent: one reconcile is pending
        assert_eq!(report.reconciles_queued, 0, "{report:?}");
    }
    assert_eq!(h.sync_queue.attempts(), 1, "no backlog builds up");
    let first = h.sync_queue.messages()[0].dedup_id.clone();
    assert_eq!(
        first,
        reconcile_dedup_id(&demo, &SourceId::parse("charts").unwrap(), 0),
        "the dedup id is the source's and generation's, not a random one"
    );

    // WHEN the pass starts (the worker bumps the generation) THEN the next tick queues
    // the next reconcile, with the next generation's id
    let charts = SourceId::parse("charts").unwrap();
    h.store.bump_generation(&demo, &charts).await.unwrap();
    h.clock.advance(chrono::TimeDelta::minutes(5));
    assert_eq!(
        scheduler
            .tick(std::slice::from_ref(&demo))
            .await
            .unwrap()
            .reconciles_queued,
        1
    );
    assert_eq!(
        h.sync_queue.messages()[1].dedup_id,
        reconcile_dedup_id(&demo, &charts, 1)
    );

    // AND a reconcile pending for longer than RECONCILE_PENDING_FOR is presumed lost:
    // the next tick queues another
    h.clock
        .advance(chrono::TimeDelta::from_std(RECONCILE_PENDING_FOR).unwrap());
    assert_eq!(
        scheduler
            .tick(std::slice::from_ref(&demo))
            .await
            .unwrap()
            .reconciles_queued,
        1
    );
}

#[tokio::test]
async fn a_failed_send_leaves_no_mark() {
    // GIVEN the queue fails the first reconcile's send
    let (h, demo, scheduler) = one_source().await;
    h.sync_queue.fail_next_send();
    assert!(scheduler.tick(std::slice::from_ref(&demo)).await.is_err());
    // WHEN the next tick runs THEN the reconcile is queued: it was never pending
    h.clock.advance(chrono::TimeDelta::minutes(5));
    assert_eq!(
        scheduler
            .tick(std::slice::from_ref(&demo))
            .await
            .unwrap()
            .reconciles_queued,
        1
    );
    assert_eq!(h.sync_queue.messages().len(), 1);
}
