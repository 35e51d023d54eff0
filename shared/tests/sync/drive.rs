//! The Drive source's engine against the fake Drive API.

use crate::{SourceFixture, source_fixture};
use bandsync::google::apis::GoogleApis;
use bandsync::google::retry::{Retrier, RetryPolicy};
use bandsync::model::*;
use bandsync::ports::{CatalogStore, ConfigStore, OperationStore, SourceStore};
use bandsync::sync::SyncWorker;
use bandsync_google_fake::{FakeDrive, Fault};
use bandsync_testkit::*;
use std::sync::Arc;

const TOKEN: &str = "ya29.drive-sync-test";
const PDF: &str = "application/pdf";

/// Band `demo` (pdf and mp3 only) with a Drive source `drive` following the folder
/// `Band` of a fake Drive, which also has a file outside that folder.
struct Fixture {
    base: SourceFixture,
    fake: FakeDrive,
    client: Arc<GoogleApis>,
    folder: String,
}
source_fixture!(Fixture);

impl Fixture {
    async fn new() -> Self {
        let h = Harness::new();
        let band = h.add_band("demo").await;
        h.store
            .put_config(&SyncConfiguration {
                band: band.clone(),
                name: "demo".into(),
                file_types: vec!["pdf".into(), "mp3".into()],
                google_credentials: None,
                entity_types: vec![],
                strict_entities: false,
                history_days: None,
            })
            .await
            .unwrap();
        let fake = FakeDrive::start(TOKEN).await.unwrap();
        let folder = fake.create_folder(&fake.root_id(), "Band");
        fake.create_file(&fake.root_id(), "outside.pdf", PDF, b"elsewhere");
        let client = fake.apis().with_retrier(Retrier::new(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }));
        let source = Source::new(
            band.clone(),
            source_id("drive"),
            SourceKind::Drive,
            folder.clone(),
        );
        h.store.put_source(&source).await.unwrap();
        Self {
            base: SourceFixture {
                h,
                band,
                source: source.id,
            },
            fake,
            client: Arc::new(client),
            folder,
        }
    }

    fn worker(&self) -> SyncWorker {
        self.h.sync_worker().with_google(self.client.clone())
    }

    async fn run(&self, id: &str, trigger: Trigger) -> Option<SyncOperation> {
        self.worker().run(&self.job(id, trigger)).await.unwrap()
    }

    /// The catalog's files (not its folders): (path, file id), by path.
    async fn catalog(&self) -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = self
            .h
            .store
            .list_files(&self.band, &self.source)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| !bandsync::sync::drive::is_folder_entry(e))
            .map(|e| (e.path, e.file_id))
            .collect();
        files.sort();
        files
    }

    async fn cursor(&self) -> Option<String> {
        self.h
            .store
            .get_source(&self.band, &self.source)
            .await
            .unwrap()
            .unwrap()
            .cursor
    }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn the_first_sync_lists_the_tree_and_creates_each_file_of_the_configured_types() {
    // GIVEN a band folder with a chart, a take, a text file (not a configured type)
    // and a sub-folder with a chart, and a chart outside the band folder
    let f = Fixture::new().await;
    let chart = f.fake.create_file(&f.folder, "chart.pdf", PDF, b"chart");
    f.fake
        .create_file(&f.folder, "take.mp3", "audio/mpeg", b"take");
    f.fake
        .create_file(&f.folder, "notes.txt", "text/plain", b"notes");
    let sub = f.fake.create_folder(&f.folder, "Live");
    f.fake.create_file(&sub, "encore.pdf", PDF, b"encore");

    // WHEN the source syncs for the first time
    let op = f.run("job-1", Trigger::Manual).await.unwrap();

    // THEN file.created for each file of the configured types in the tree, once
    assert_eq!(op.status, OperationStatus::Completed);
    assert_eq!(op.metrics.synced, 3);
    let mut created = f.file_events(0).await;
    created.sort();
    assert_eq!(
        created,
        pairs(&[
            ("file.created", "Live/encore.pdf"),
            ("file.created", "chart.pdf"),
            ("file.created", "take.mp3"),
        ])
    );
    let names = f.log_names().await;
    assert_eq!(names.first().unwrap(), "sync.started");
    assert_eq!(names.last().unwrap(), "sync.completed");
    // AND the catalog has them under their Drive ids, the cursor is Drive's token
    let catalog = f.catalog().await;
    assert_eq!(catalog.len(), 3);
    assert!(catalog.contains(&("chart.pdf".into(), chart)));
    assert_eq!(f.cursor().await, Some(f.fake.current_token()));
}

#[tokio::test]
async fn deltas_become_created_updated_moved_and_deleted_events() {
    // GIVEN a synced band folder
    let f = Fixture::new().await;
    let chart = f.fake.create_file(&f.folder, "chart.pdf", PDF, b"chart");
    let take = f
        .fake
        .create_file(&f.folder, "take.mp3", "audio/mpeg", b"t");
    let leaving = f.fake.create_file(&f.folder, "leaving.pdf", PDF, b"l");
    let trashed = f.fake.create_file(&f.folder, "old.pdf", PDF, b"o");
    f.run("job-1", Trigger::Manual).await.unwrap();
    let before = f.log().await.len();

    // WHEN a file is created, one edited, one renamed, one moved out of the tree and
    // one trashed, and a file outside the tree changes
    let new = f.fake.create_file(&f.folder, "new.pdf", PDF, b"n");
    f.fake.update_content(&chart, b"chart v2");
    f.fake.rename(&take, "take-2.mp3");
    f.fake.move_to(&leaving, &f.fake.root_id());
    f.fake.trash(&trashed);
    f.fake
        .create_file(&f.fake.root_id(), "not-ours.pdf", PDF, b"x");
    let op = f.run("job-2", Trigger::Notification).await.unwrap();

    // THEN one event per change, the rename keeping its file id
    assert_eq!(op.metrics.synced, 5);
    assert_eq!(
        f.file_events(before).await,
        pairs(&[
            ("file.created", "new.pdf"),
            ("file.updated", "chart.pdf"),
            ("file.moved", "take-2.mp3"),
            ("file.deleted", "leaving.pdf"),
            ("file.deleted", "old.pdf"),
        ])
    );
    let log = f.log().await;
    let moved = log.iter().find(|e| e.event() == "file.moved").unwrap();
    assert_eq!(moved.data()["file_id"], take.as_str());
    assert_eq!(moved.data()["from_path"], "take.mp3");
    // AND the catalog follows
    assert_eq!(
        f.catalog().await,
        vec![
            ("chart.pdf".into(), chart),
            ("new.pdf".into(), new),
            ("take-2.mp3".into(), take),
        ]
    );
    assert_eq!(f.cursor().await, Some(f.fake.current_token()));

    // WHEN nothing changed in the tree and a notification comes
    f.fake
        .create_file(&f.fake.root_id(), "other.pdf", PDF, b"o");
    // THEN nothing is recorded, but the cursor moves on
    assert_eq!(f.run("job-3", Trigger::Notification).await, None);
    assert_eq!(f.log().await.len(), log.len());
    assert_eq!(f.cursor().await, Some(f.fake.current_token()));
}

#[tokio::test]
async fn folders_moving_in_and_out_of_the_tree_move_their_files() {
    // GIVEN a synced tree with a sub-folder, and a folder with a file outside it
    let f = Fixture::new().await;
    let sub = f.fake.create_folder(&f.folder, "Live");
    f.fake.create_file(&sub, "a.pdf", PDF, b"a");
    let outside = f.fake.create_folder(&f.fake.root_id(), "Archive");
    f.fake.create_file(&outside, "b.pdf", PDF, b"b");
    f.run("job-1", Trigger::Manual).await.unwrap();
    let before = f.log().await.len();

    // WHEN the sub-folder is renamed and the outside folder moved into the tree
    f.fake.rename(&sub, "Gigs");
    f.fake.move_to(&outside, &f.folder);
    f.run("job-2", Trigger::Notification).await.unwrap();

    // THEN its file moved, and the other folder's file was created
    assert_eq!(
        f.file_events(before).await,
        pairs(&[
            ("file.moved", "Gigs/a.pdf"),
            ("file.created", "Archive/b.pdf")
        ])
    );
    let before = f.log().await.len();

    // WHEN the renamed folder leaves the tree
    f.fake.move_to(&sub, &f.fake.root_id());
    f.run("job-3", Trigger::Notification).await.unwrap();

    // THEN its file is deleted
    assert_eq!(
        f.file_events(before).await,
        pairs(&[("file.deleted", "Gigs/a.pdf")])
    );
    let paths: Vec<String> = f.catalog().await.into_iter().map(|(p, _)| p).collect();
    assert_eq!(paths, ["Archive/b.pdf"]);
}

#[tokio::test]
async fn a_crash_between_pages_resumes_from_the_stored_page_without_duplicates() {
    // GIVEN a synced folder, then four new files, listed two changes a page
    let f = Fixture::new().await;
    f.run("job-1", Trigger::Manual).await.unwrap();
    let start = f.cursor().await.unwrap();
    f.fake.set_page_size(2);
    for name in ["a.pdf", "b.pdf", "c.pdf", "d.pdf"] {
        f.fake.create_file(&f.folder, name, PDF, name.as_bytes());
    }
    let before = f.log().await.len();

    // WHEN the job dies on the second page (a server error, and retries are off)
    f.fake.fail_next(1, Fault::Pass);
    f.fake.fail_next(1, Fault::ServerError);
    let job = f.job("job-2", Trigger::Notification);
    assert!(f.worker().run(&job).await.is_err());

    // THEN the first page's files are published and the cursor is the second page
    assert_eq!(
        f.file_events(before).await,
        pairs(&[("file.created", "a.pdf"), ("file.created", "b.pdf")])
    );
    let stored = f.cursor().await.unwrap();
    assert_ne!(stored, start);

    // WHEN the job is delivered again
    f.fake.clear_requests();
    let op = f.worker().run(&job).await.unwrap().unwrap();

    // THEN it lists from the stored page, and every event is in the log once, gapless
    let first = f.fake.requests().into_iter().next().unwrap();
    assert!(first.query.contains(&("pageToken".into(), stored)));
    assert_eq!(op.status, OperationStatus::Completed);
    assert_eq!(op.metrics.synced, 4);
    let log = f.log().await;
    let names: Vec<&str> = log[before..].iter().map(|e| e.event()).collect();
    assert_eq!(
        names,
        [
            "sync.started",
            "file.created",
            "file.created",
            "file.created",
            "file.created",
            "sync.completed"
        ]
    );
    let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=log.len() as u64).collect::<Vec<_>>());
    let mut ids: Vec<&str> = log.iter().map(|e| e.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), log.len());
    assert_eq!(f.h.store.list_items("job-2").await.unwrap().len(), 4);
    assert_eq!(f.catalog().await.len(), 4);
    assert_eq!(f.cursor().await, Some(f.fake.current_token()));
}

#[tokio::test]
async fn a_gone_page_token_resyncs_in_full_without_repeating_unchanged_files() {
    // GIVEN a synced folder of two files, then one of them edited
    let f = Fixture::new().await;
    let chart = f.fake.create_file(&f.folder, "chart.pdf", PDF, b"chart");
    f.fake
        .create_file(&f.folder, "take.mp3", "audio/mpeg", b"take");
    f.run("job-1", Trigger::Manual).await.unwrap();
    let before = f.log().await.len();
    f.fake.update_content(&chart, b"chart v2");

    // WHEN changes.list answers 410 Gone
    f.fake.fail_next(1, Fault::Gone);
    let op = f.run("job-2", Trigger::Notification).await.unwrap();

    // THEN a full listing runs: only the edited file has an event
    assert_eq!(op.metrics.synced, 1);
    assert_eq!(
        f.file_events(before).await,
        pairs(&[("file.updated", "chart.pdf")])
    );
    assert!(
        f.fake
            .requests()
            .iter()
            .any(|r| r.path == "/drive/v3/files")
    );
    assert_eq!(f.cursor().await, Some(f.fake.current_token()));
}

#[tokio::test]
async fn a_drive_source_without_a_client_fails_with_a_clear_error() {
    // GIVEN a Drive source and a worker with no Drive client
    let f = Fixture::new().await;
    // WHEN it syncs
    let op =
        f.h.sync_worker()
            .run(&f.job("job-1", Trigger::Manual))
            .await
            .unwrap()
            .unwrap();
    // THEN the operation failed, saying why
    assert_eq!(op.status, OperationStatus::Failed);
    assert!(op.error.unwrap().contains("Google API clients"));
}

#[tokio::test]
async fn a_folder_in_a_shared_drive_follows_that_drives_change_log() {
    // GIVEN the source's folder moved to a shared drive (its source knows the drive)
    let f = Fixture::new().await;
    let drive = f.fake.create_shared_drive("Band drive");
    let folder = f.fake.create_folder(&drive, "Band");
    f.fake.create_file(&folder, "chart.pdf", PDF, b"one");
    let mut source =
        f.h.store
            .get_source(&f.band, &f.source)
            .await
            .unwrap()
            .unwrap();
    source.location = folder.clone();
    source.drive_id = Some(drive.clone());
    f.h.store.put_source(&source).await.unwrap();

    // WHEN it syncs, and a file is added in the shared drive and synced
    f.run("job-1", Trigger::Manual).await.unwrap();
    f.fake.clear_requests();
    f.fake
        .create_file(&folder, "take.mp3", "audio/mpeg", b"two");
    f.run("job-2", Trigger::Notification).await.unwrap();

    // THEN both files came as created events
    let created: Vec<String> = f
        .file_events(0)
        .await
        .into_iter()
        .filter(|(e, _)| e == "file.created")
        .map(|(_, p)| p)
        .collect();
    assert_eq!(created, ["chart.pdf", "take.mp3"]);
    // AND the delta asked for that drive's changes
    let asked = f.fake.requests();
    assert!(
        asked
            .iter()
            .all(|r| r.query.contains(&("driveId".to_owned(), drive.clone()))),
        "{asked:?}"
    );
}

#[tokio::test]
async fn a_permanent_refusal_fails_the_operation_instead_of_retrying_it() {
    // GIVEN a Drive source whose folder Google no longer lets us see (404)
    let f = Fixture::new().await;
    f.fake.fail_next(1, Fault::Status(404));
    // WHEN it syncs
    let op = f
        .worker()
        .run(&f.job("job-1", Trigger::Manual))
        .await
        .expect("not an error to retry")
        .expect("an operation");
    // THEN the operation failed with Google's answer, and members were told
    assert_eq!(op.status, OperationStatus::Failed);
    let error = op.error.unwrap();
    assert!(error.contains("404"), "{error}");
    let names = f.log_names().await;
    assert!(names.contains(&"sync.failed".to_owned()), "{names:?}");
    // AND a 500 (retryable) is still an error, for the queue to redeliver
    f.fake.fail_next(1, Fault::ServerError);
    assert!(
        f.worker()
            .run(&f.job("job-2", Trigger::Manual))
            .await
            .is_err()
    );
}
