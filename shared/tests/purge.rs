//! DELETE of a source: its catalog is purged by the scheduler's prune pass, a bounded
//! number of entries per tick, and members are told of each file it brought them.

use bandsync::model::*;
use bandsync::ports::{CatalogStore, OperationStore, SourceStore};
use bandsync::scheduler::{Scheduler, TickReport};
use bandsync::sync::purge::{GRACE, PAGE, PAGES_PER_TICK};
use bandsync_testkit::*;
use serde_json::json;

/// Band `demo` with a folder source `charts` holding three files, synced once.
struct Fixture {
    h: Harness,
    band: BandId,
    source: SourceId,
    _dir: tempfile::TempDir,
    ops: String,
}

impl Fixture {
    async fn new() -> Self {
        let h = Harness::new();
        let dir = tempfile::tempdir().unwrap();
        for name in ["one.pdf", "two.pdf", "three.pdf"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let band = h.add_band("demo").await;
        let source = h
            .add_source(&band, "charts", dir.path().to_str().unwrap())
            .await
            .id;
        let job = h.sync_job("job-1", &band, &source, Trigger::Manual);
        h.sync_worker().run(&job).await.unwrap().unwrap();
        let ops = h
            .tokens
            .mint_admin("ops", h.now(), chrono::TimeDelta::hours(1));
        Self {
            h,
            band,
            source,
            _dir: dir,
            ops: format!("Bearer {ops}"),
        }
    }

    fn scheduler(&self) -> Scheduler {
        bandsync::wiring::scheduler(&self.h.ports()).unwrap()
    }

    async fn tick(&self) -> TickReport {
        self.scheduler().tick(&[]).await.unwrap()
    }

    /// The operator's request: its status.
    async fn operator(&self, method: &str, target: &str, body: Option<&str>) -> i64 {
        let headers = [("Authorization", self.ops.as_str())];
        let event = http_event(method, target, &headers, body);
        self.h.api().handle(event).await.status()
    }

    async fn delete(&self) {
        let target = format!("/sync/bands/{}/sources/{}", self.band, self.source);
        assert_eq!(self.operator("DELETE", &target, None).await, 204);
    }

    async fn catalog_len(&self) -> usize {
        let files = self.h.store.list_files(&self.band, &self.source).await;
        files.unwrap().len()
    }

    /// The (event, path) of the band's `file.*` events after `skip`.
    async fn file_events(&self, skip: usize) -> Vec<(String, String)> {
        let log = self.h.log(&ChannelName::Band(self.band.clone())).await;
        log.into_iter()
            .skip(skip)
            .filter(|e| e.event().starts_with("file."))
            .map(|e| {
                (
                    e.event().to_owned(),
                    e.data()["path"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    async fn log_len(&self) -> usize {
        self.h
            .log(&ChannelName::Band(self.band.clone()))
            .await
            .len()
    }
}

#[tokio::test]
async fn a_deleted_source_s_catalog_is_purged_and_members_told() {
    // GIVEN a synced source whose three files members got
    let f = Fixture::new().await;
    assert_eq!(f.catalog_len().await, 3);
    let before = f.log_len().await;
    // AND an operation of another source of the band
    let other = SyncOperation {
        id: "takes-1".into(),
        source: source_id("takes"),
        ..f.h.store.get_operation("job-1").await.unwrap().unwrap()
    };
    f.h.store.put_operation(&other).await.unwrap();
    assert!(!f.h.store.list_items("job-1").await.unwrap().is_empty());
    // WHEN the operator deletes it and the scheduler ticks
    f.delete().await;
    let report = f.tick().await;
    // THEN its catalog is gone, and members got a file.deleted for each file
    assert_eq!(f.catalog_len().await, 0, "the catalog outlived its source");
    assert_eq!(report.purged.purged, 3);
    let mut deleted = f.file_events(before).await;
    deleted.sort();
    let expected: Vec<(String, String)> = ["one.pdf", "three.pdf", "two.pdf"]
        .iter()
        .map(|p| ("file.deleted".to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(deleted, expected);
    // AND the mark stays through the grace (a pass stopped by the delete may still
    // write a chunk), then goes; later ticks announce nothing again
    let marks = f.h.store.purges(&f.band).await.unwrap();
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].kind, SourceKind::Folder);
    let seen = f.log_len().await;
    assert_eq!(f.tick().await.purged.marks_done, 0);
    assert!(f.h.store.get_operation("job-1").await.unwrap().is_some());
    f.h.clock.advance(GRACE + chrono::TimeDelta::minutes(1));
    let report = f.tick().await;
    assert_eq!(report.purged.marks_done, 1);
    assert!(f.h.store.purges(&f.band).await.unwrap().is_empty());
    assert_eq!(f.file_events(seen).await, []);
    // AND its operations went with their items after the grace; the other source's stay
    assert_eq!(report.purged.operations, 1);
    assert_eq!(f.h.store.get_operation("job-1").await.unwrap(), None);
    assert!(f.h.store.list_items("job-1").await.unwrap().is_empty());
    assert_eq!(
        f.h.store.get_operation("takes-1").await.unwrap(),
        Some(other)
    );
}

#[tokio::test]
async fn a_large_catalog_is_purged_a_bounded_page_at_a_time() {
    // GIVEN a deleted Drive source that left 1,234 files and a folder entry
    let f = Fixture::new().await;
    let drive = Source::new(
        f.band.clone(),
        source_id("gdrive"),
        SourceKind::Drive,
        "1AbCfolder",
    );
    f.h.store.put_source(&drive).await.unwrap();
    let entry = |id: String, path: String, hash: &str| FileEntry {
        band: f.band.clone(),
        source: drive.id.clone(),
        file_id: id,
        path,
        size: 1,
        hash: hash.into(),
        modified_ms: 1,
    };
    let mut files: Vec<FileEntry> = (0..1234)
        .map(|i| entry(format!("f{i:05}"), format!("Band/{i}.pdf"), "ab"))
        .collect();
    files.push(entry("folder-1".into(), "Band/".into(), "folder"));
    f.h.store.put_files(&files).await.unwrap();
    let target = format!("/sync/bands/{}/sources/gdrive", f.band);
    assert_eq!(f.operator("DELETE", &target, None).await, 204);
    let before = f.log_len().await;
    // WHEN the scheduler ticks THEN each tick clears at most its budget
    let budget = (PAGE * PAGES_PER_TICK) as u64;
    let mut purged = Vec::new();
    for _ in 0..4 {
        purged.push(f.tick().await.purged.purged);
    }
    assert_eq!(purged, [budget, budget, 1235 - 2 * budget, 0]);
    let left = f.h.store.list_files(&f.band, &drive.id).await.unwrap();
    assert!(left.is_empty());
    // AND members got one file.deleted per file, none for the folder
    let events = f.file_events(before).await;
    assert_eq!(events.len(), 1234);
    assert!(events.iter().all(|(name, _)| name == "file.deleted"));
    assert!(!events.iter().any(|(_, path)| path == "Band/"));
}

#[tokio::test]
async fn a_source_created_again_keeps_its_catalog() {
    // GIVEN a source deleted and put back by the operator before the scheduler ticks
    let f = Fixture::new().await;
    let location =
        f.h.store
            .get_source(&f.band, &f.source)
            .await
            .unwrap()
            .unwrap()
            .location;
    f.delete().await;
    let target = format!("/sync/bands/{}/sources/{}", f.band, f.source);
    let body = json!({"kind": "folder", "location": location}).to_string();
    assert_eq!(f.operator("PUT", &target, Some(&body)).await, 200);
    let before = f.log_len().await;
    // WHEN it ticks, during the grace and after it
    f.tick().await;
    f.h.clock.advance(GRACE + chrono::TimeDelta::minutes(1));
    let report = f.tick().await;
    // THEN the catalog is left to the new source's sync, the mark dropped, nobody told
    assert_eq!(f.catalog_len().await, 3);
    assert_eq!(report.purged.marks_done, 1);
    assert!(f.h.store.purges(&f.band).await.unwrap().is_empty());
    assert_eq!(f.file_events(before).await, []);
}

#[tokio::test]
async fn calendar_tombstones_are_pruned_past_their_retention_only() {
    // GIVEN a calendar source's catalog: a live event, and tombstones of occurrences
    // that were to start 31 days ago and a day ago, and one of an older build (no time)
    let f = Fixture::new().await;
    let gigs = Source::new(
        f.band.clone(),
        source_id("gigs"),
        SourceKind::Calendar,
        "band@group.calendar.google.com",
    );
    f.h.store.put_source(&gigs).await.unwrap();
    let now = f.h.now().timestamp_millis();
    let day = 24 * 3600 * 1000;
    let row = |id: &str, hash: &str, modified_ms: i64| FileEntry {
        band: f.band.clone(),
        source: gigs.id.clone(),
        file_id: id.into(),
        path: "Rehearsal".into(),
        size: 0,
        hash: hash.into(),
        modified_ms,
    };
    let rows = [
        row("live", "etag-1", now - 40 * day),
        row("old", "cancelled:etag-2", now - 31 * day),
        row("recent", "cancelled:etag-3", now - day),
        row("timeless", "cancelled:etag-4", 0),
    ];
    f.h.store.put_files(&rows).await.unwrap();
    let before = f.log_len().await;
    // WHEN the scheduler ticks
    let report = f.tick().await;
    // THEN the tombstones past the retention went, silently
    assert_eq!(report.purged.tombstones, 2);
    let mut left: Vec<String> =
        f.h.store
            .list_files(&f.band, &gigs.id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.file_id)
            .collect();
    left.sort();
    assert_eq!(left, ["live", "recent"]);
    assert_eq!(f.log_len().await, before);
}
