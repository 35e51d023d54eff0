//! No write undoes another: an operator's request landing between a writer's read and
//! its write (a sync pass's cursor writes, a band edit, the watch keeper's listing) at
//! every write point, with the deleted source, the move or the revoked credentials
//! checked afterwards. The store-level interleavings run on both adapters in the
//! contract suites (`contract::source_revision_contract` and friends); these run the
//! real worker, API and keeper on the embedded store.

use async_trait::async_trait;
use bandsync::api::{Api, ApiStores};
use bandsync::google::apis::{GoogleApis, GoogleUrls};
use bandsync::model::*;
use bandsync::ports::{
    CatalogStore, ConfigStore, OperationStore, PortResult, Revised, SourceStore, WatchChannelStore,
    WriteOutcome,
};
use bandsync::sync::purge::Purger;
use bandsync::sync::{SOURCE_GONE_OR_CHANGED, SyncStores, SyncWorker};
use bandsync::watch_keeper::WatchKeeper;
use bandsync_google_fake::calendar::{EventInput, FakeCalendar};
use bandsync_testkit::*;
use futures_util::future::BoxFuture;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const TOKEN: &str = "ya29.races-test";
const CAL: &str = "races@group.calendar.google.com";

type Hook = BoxFuture<'static, ()>;

/// The harness's store for sources and configurations, running `hook` just before the
/// `at`-th write of a source or configuration made through it (a pass or an edit paused
/// between its read and that write while the operator's request lands). Counts every
/// write either way.
struct Interleave {
    inner: Arc<bandsync::adapters::local::EmbeddedStore>,
    writes: AtomicUsize,
    at: usize,
    hook: Mutex<Option<Hook>>,
    /// For the keeper: run the hook right after a listing of sources instead.
    after_listing: bool,
}

impl Interleave {
    fn new(h: &Harness, at: usize, hook: Option<Hook>) -> Arc<Self> {
        Arc::new(Self {
            inner: h.store.clone(),
            writes: AtomicUsize::new(0),
            at,
            hook: Mutex::new(hook),
            after_listing: false,
        })
    }

    async fn before_write(&self) {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.at {
            self.run_hook().await;
        }
    }

    async fn run_hook(&self) {
        let hook = self.hook.lock().unwrap().take();
        if let Some(hook) = hook {
            hook.await;
        }
    }
}

#[async_trait]
impl SourceStore for Interleave {
    async fn get_source(&self, band: &BandId, source: &SourceId) -> PortResult<Option<Source>> {
        self.inner.get_source(band, source).await
    }
    async fn list_sources(&self, band: &BandId) -> PortResult<Vec<Source>> {
        let listed = self.inner.list_sources(band).await;
        if self.after_listing {
            self.run_hook().await;
        }
        listed
    }
    async fn put_source(&self, source: &Source) -> PortResult<()> {
        self.before_write().await;
        self.inner.put_source(source).await
    }
    async fn write_source(
        &self,
        source: &Source,
        expected: Option<u64>,
    ) -> PortResult<WriteOutcome> {
        self.before_write().await;
        self.inner.write_source(source, expected).await
    }
    async fn generation(&self, band: &BandId, source: &SourceId) -> PortResult<u64> {
        self.inner.generation(band, source).await
    }
    async fn bump_generation(&self, band: &BandId, source: &SourceId) -> PortResult<u64> {
        self.inner.bump_generation(band, source).await
    }
    async fn delete_source(&self, band: &BandId, source: &SourceId) -> PortResult<()> {
        self.inner.delete_source(band, source).await
    }
    async fn put_purge(&self, purge: &SourcePurge) -> PortResult<()> {
        self.inner.put_purge(purge).await
    }
    async fn purges(&self, band: &BandId) -> PortResult<Vec<SourcePurge>> {
        self.inner.purges(band).await
    }
    async fn forget_purge(&self, band: &BandId, source: &SourceId) -> PortResult<()> {
        self.inner.forget_purge(band, source).await
    }
}

#[async_trait]
impl ConfigStore for Interleave {
    async fn get_config(&self, band: &BandId) -> PortResult<Option<SyncConfiguration>> {
        self.inner.get_config(band).await
    }
    async fn get_config_revised(
        &self,
        band: &BandId,
    ) -> PortResult<Option<Revised<SyncConfiguration>>> {
        self.inner.get_config_revised(band).await
    }
    async fn put_config(&self, config: &SyncConfiguration) -> PortResult<()> {
        self.before_write().await;
        self.inner.put_config(config).await
    }
    async fn write_config(
        &self,
        config: &SyncConfiguration,
        expected: Option<u64>,
    ) -> PortResult<WriteOutcome> {
        self.before_write().await;
        self.inner.write_config(config, expected).await
    }
    async fn list_bands(&self) -> PortResult<Vec<BandId>> {
        self.inner.list_bands().await
    }
}

/// Band `demo` with a Calendar source `gigs` synced once, and three events added since:
/// the next pass lists them a page at a time, writing its cursor after each page and
/// the source's last sync when it completes.
struct Fixture {
    h: Harness,
    band: BandId,
    source: SourceId,
    fake: FakeCalendar,
    client: Arc<GoogleApis>,
    ops: String,
}

impl Fixture {
    /// Give the band (sealed) Google credentials.
    async fn with_credentials(&self) {
        let mut config = self.h.store.get_config(&self.band).await.unwrap().unwrap();
        config.google_credentials = Some(SealedSecret {
            v: 1,
            alg: "A256GCM".into(),
            nonce: "bm9uY2U=".into(),
            ct: "Y2lwaGVy".into(),
        });
        self.h.store.put_config(&config).await.unwrap();
    }

    async fn new() -> Self {
        let h = Harness::new();
        let band = h.add_band("demo").await;
        let fake = FakeCalendar::start(TOKEN).await.unwrap();
        fake.add_calendar(CAL);
        let urls = GoogleUrls {
            calendar: fake.base_url(),
            ..GoogleUrls::default()
        };
        let client = Arc::new(GoogleApis::with_static_token(urls, TOKEN).unwrap());
        let source = Source::new(band.clone(), source_id("gigs"), SourceKind::Calendar, CAL);
        h.store.put_source(&source).await.unwrap();
        fake.create_event(CAL, gig("Rehearsal"));
        let f = Self {
            ops: format!(
                "Bearer {}",
                h.tokens
                    .mint_admin("ops", h.now(), chrono::TimeDelta::hours(1))
            ),
            h,
            band,
            source: source.id,
            fake,
            client,
        };
        let first = f.h.sync_job("seed", &f.band, &f.source, Trigger::Manual);
        let op = f.worker(&f.plain()).run(&first).await.unwrap().unwrap();
        assert_eq!(op.status, OperationStatus::Completed);
        for name in ["Gig", "Soundcheck", "Party"] {
            f.fake.create_event(CAL, gig(name));
        }
        f.fake.set_page_size(1);
        f
    }

    /// The store with no hook.
    fn plain(&self) -> Arc<Interleave> {
        Interleave::new(&self.h, 0, None)
    }

    /// A sync worker whose source writes go through `sources`.
    fn worker(&self, sources: &Arc<Interleave>) -> SyncWorker {
        let stores = SyncStores {
            configs: self.h.store.clone(),
            sources: sources.clone(),
            catalog: self.h.store.clone(),
            operations: self.h.store.clone(),
        };
        SyncWorker::new(stores, self.h.publisher(), self.h.clock.clone())
            .with_google(self.client.clone())
    }

    /// The API, its configurations and sources through `stores`.
    fn api(&self, stores: &Arc<Interleave>) -> Api {
        let s = &self.h.store;
        Api::new(
            ApiStores {
                configs: stores.clone(),
                sources: stores.clone(),
                operations: s.clone(),
                watch_channels: s.clone(),
                log: s.clone(),
                entities: s.clone(),
            },
            self.h.sync_queue.clone(),
            self.h.tokens.clone(),
            self.h.clock.clone(),
            vec![],
        )
    }

    /// An operator's request, answered by an API on the plain store: its status.
    fn operator(&self, method: &'static str, target: String, body: Option<String>) -> Hook {
        let api = self.api(&self.plain());
        let auth = self.ops.clone();
        Box::pin(async move {
            let headers = [("Authorization", auth.as_str())];
            let response = api
                .handle(http_event(method, &target, &headers, body.as_deref()))
                .await;
            assert!(
                (200..300).contains(&response.status()),
                "{method} {target}: {}",
                response.status()
            );
        })
    }

    fn delete_source(&self) -> Hook {
        let target = format!("/sync/bands/{}/sources/{}", self.band, self.source);
        self.operator("DELETE", target, None)
    }

    fn move_source(&self) -> Hook {
        let target = format!("/sync/bands/{}/sources/{}", self.band, self.source);
        let body = json!({"kind": "calendar", "location": "moved@group.calendar.google.com"});
        self.operator("PUT", target, Some(body.to_string()))
    }

    /// The pass's source writes, counted on a run without a hook (on a copy of the
    /// fixture: the count is the same for every fresh one).
    async fn write_points() -> usize {
        let f = Self::new().await;
        let counted = f.plain();
        let job =
            f.h.sync_job("count", &f.band, &f.source, Trigger::Notification);
        f.worker(&counted).run(&job).await.unwrap();
        counted.writes.load(Ordering::SeqCst)
    }
}

/// A fresh fixture's pass of job `job-2`, with `hook` (made from the fixture) run before
/// the pass's `at`-th write of the source: the fixture and the operation it ended with.
/// The pass must end cleanly (no error, so no retry or DLQ), not left running.
async fn paused_pass(at: usize, hook: fn(&Fixture) -> Hook) -> (Fixture, SyncOperation) {
    let f = Fixture::new().await;
    let paused = Interleave::new(&f.h, at, Some(hook(&f)));
    let job =
        f.h.sync_job("job-2", &f.band, &f.source, Trigger::Notification);
    let op = f
        .worker(&paused)
        .run(&job)
        .await
        .unwrap_or_else(|e| panic!("write {at}: the pass failed: {e}"))
        .expect("the operation is recorded");
    assert_ne!(op.status, OperationStatus::Running, "write {at}");
    if op.status == OperationStatus::Failed {
        assert_eq!(
            op.error.as_deref(),
            Some(SOURCE_GONE_OR_CHANGED),
            "write {at}"
        );
    }
    (f, op)
}

fn gig(summary: &str) -> EventInput {
    EventInput::timed(
        summary,
        "2026-03-10T19:00:00+01:00",
        "2026-03-10T22:00:00+01:00",
    )
}

#[tokio::test]
async fn a_source_deleted_during_a_sync_never_comes_back() {
    let points = Fixture::write_points().await;
    assert!(points >= 4, "a cursor per page and the last sync: {points}");
    for at in 1..=points {
        // GIVEN a pass paused before its `at`-th write of the source
        // WHEN the operator deletes the source there, and the pass goes on
        // THEN the pass stops cleanly ...
        let (f, op) = paused_pass(at, Fixture::delete_source).await;
        let job =
            f.h.sync_job("job-2", &f.band, &f.source, Trigger::Notification);
        // ... and the source stays deleted, as does a redelivery of the job
        let gone = f.h.store.get_source(&f.band, &f.source).await.unwrap();
        assert_eq!(gone, None, "write {at}: the deleted source came back");
        f.worker(&f.plain()).run(&job).await.unwrap();
        assert!(
            f.h.store.list_sources(&f.band).await.unwrap().is_empty(),
            "write {at}: not after a redelivery either"
        );
        assert_eq!(
            f.h.store
                .get_operation("job-2")
                .await
                .unwrap()
                .map(|o| o.status),
            Some(op.status),
            "write {at}: the operation stays as it ended"
        );
        // AND the scheduler's purge clears its catalog, chunks the pass wrote after the
        // delete included
        let purger = Purger::new(
            f.h.store.clone(),
            f.h.store.clone(),
            f.h.store.clone(),
            f.h.publisher(),
            f.h.clock.clone(),
        );
        purger.prune_band(&f.band).await.unwrap();
        let left = f.h.store.list_files(&f.band, &f.source).await.unwrap();
        assert!(left.is_empty(), "write {at}: {left:?}");
    }
}

#[tokio::test]
async fn a_source_moved_during_a_sync_stays_moved() {
    let points = Fixture::write_points().await;
    for at in 1..=points {
        // GIVEN a pass paused before its `at`-th write of the source
        // WHEN the operator moves the source to another calendar there
        // THEN the pass stops cleanly, and the move (with its reset cursor) stands
        let (f, _) = paused_pass(at, Fixture::move_source).await;
        let stored = f.h.store.get_source(&f.band, &f.source).await.unwrap();
        let stored = stored.expect("the source is still there");
        assert_eq!(
            stored.location, "moved@group.calendar.google.com",
            "write {at}: the move was reverted"
        );
        assert_eq!(
            stored.cursor, None,
            "write {at}: the old calendar's cursor was put back"
        );
    }
}

/// A guard more than a regression test: the worker reads the configuration but never
/// writes it, so this held before the conditional writes too; it keeps it that way.
#[tokio::test]
async fn credentials_deleted_during_a_sync_stay_deleted() {
    let points = Fixture::write_points().await;
    for at in 1..=points {
        // GIVEN band demo with credentials, and a pass paused before its `at`-th write
        let f = Fixture::new().await;
        f.with_credentials().await;
        let revoke = f.operator(
            "DELETE",
            format!("/sync/bands/{}/credentials", f.band),
            None,
        );
        let paused = Interleave::new(&f.h, at, Some(revoke));
        let job =
            f.h.sync_job("job-2", &f.band, &f.source, Trigger::Notification);
        // WHEN the operator deletes the credentials there and the pass goes on
        f.worker(&paused).run(&job).await.unwrap();
        // THEN they stay deleted
        let stored = f.h.store.get_config(&f.band).await.unwrap().unwrap();
        assert_eq!(stored.google_credentials, None, "write {at}");
    }
}

#[tokio::test]
async fn a_band_edit_never_brings_back_deleted_credentials() {
    // GIVEN band demo with Google credentials
    let f = Fixture::new().await;
    f.with_credentials().await;
    // AND a rename paused between its read and its write
    let delete = f.operator(
        "DELETE",
        format!("/sync/bands/{}/credentials", f.band),
        None,
    );
    let paused = Interleave::new(&f.h, 1, Some(delete));
    // WHEN the operator deletes the credentials there
    let headers = [("Authorization", f.ops.as_str())];
    let target = format!("/sync/bands/{}", f.band);
    let body = json!({"name": "The Demo"}).to_string();
    let response = f
        .api(&paused)
        .handle(http_event("PUT", &target, &headers, Some(&body)))
        .await;
    // THEN the rename lands and the credentials stay deleted
    assert_eq!(response.status(), 200);
    let stored = f.h.store.get_config(&f.band).await.unwrap().unwrap();
    assert_eq!(stored.name, "The Demo");
    assert_eq!(
        stored.google_credentials, None,
        "the revoked credentials came back"
    );
    assert!(
        paused.writes.load(Ordering::SeqCst) >= 2,
        "the rename was applied again"
    );
}

#[tokio::test]
async fn a_pass_moving_its_cursor_under_an_operator_edit_keeps_it() {
    // GIVEN an unchanged re-put of the source, paused between its read and its write
    let f = Fixture::new().await;
    let before =
        f.h.store
            .get_source(&f.band, &f.source)
            .await
            .unwrap()
            .unwrap();
    let job =
        f.h.sync_job("job-2", &f.band, &f.source, Trigger::Notification);
    let worker = f.worker(&f.plain());
    let pass: Hook = Box::pin(async move {
        worker.run(&job).await.unwrap();
    });
    let paused = Interleave::new(&f.h, 1, Some(pass));
    // WHEN a whole pass runs there
    let headers = [("Authorization", f.ops.as_str())];
    let target = format!("/sync/bands/{}/sources/{}", f.band, f.source);
    let body = json!({"kind": "calendar", "location": CAL}).to_string();
    let response = f
        .api(&paused)
        .handle(http_event("PUT", &target, &headers, Some(&body)))
        .await;
    // THEN the re-put lands without putting back the cursor the pass moved on from
    assert_eq!(response.status(), 200);
    let after =
        f.h.store
            .get_source(&f.band, &f.source)
            .await
            .unwrap()
            .unwrap();
    assert_ne!(
        after.cursor, before.cursor,
        "the pass's cursor was reverted"
    );
    assert_eq!(after.last_operation.as_deref(), Some("job-2"));
}

#[tokio::test]
async fn the_keeper_stops_the_watch_of_a_source_deleted_while_it_opened_it() {
    // GIVEN the keeper, with the operator deleting the source just after its listing
    let f = Fixture::new().await;
    let sources = Arc::new(Interleave {
        after_listing: true,
        ..Arc::into_inner(Interleave::new(&f.h, 0, Some(f.delete_source()))).unwrap()
    });
    let keeper = WatchKeeper::new(
        sources,
        f.h.store.clone(),
        f.client.clone(),
        f.h.clock.clone(),
        "https://bandsync.example.com/webhooks/google".into(),
    );
    // WHEN it runs
    let far = Instant::now() + std::time::Duration::from_secs(30);
    let report = keeper.tick_band(&f.band, far).await.unwrap();
    // THEN no channel is kept for the deleted source: the one it opened is stopped
    assert_eq!(report.created, 0, "{report:?}");
    assert_eq!(report.stopped, 1, "{report:?}");
    let channels = f.h.store.list_watch_channels(&f.band).await.unwrap();
    assert!(channels.is_empty(), "{channels:?}");
}
