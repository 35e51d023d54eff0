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
