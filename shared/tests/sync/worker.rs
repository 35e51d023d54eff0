//! The sync worker on folder sources: operations, redeliveries, failures, requests.

use crate::{SourceFixture, source_fixture};
use bandsync::broadcast::BroadcastMessage;
use bandsync::error::Refusal;
use bandsync::model::*;
use bandsync::ports::{CatalogStore, Clock, OperationStore, SourceStore};
use bandsync::sync::*;
use bandsync_testkit::*;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::fs;
use std::sync::Arc;

/// Band `demo` with one folder source `charts` in a fresh directory.
struct Fixture {
    base: SourceFixture,
    dir: tempfile::TempDir,
}
source_fixture!(Fixture);

impl Fixture {
    async fn new() -> Self {
        let h = Harness::new();
        let dir = tempfile::tempdir().unwrap();
        let band = h.add_band("demo").await;
        let source = h
            .add_source(&band, "charts", dir.path().to_str().unwrap())
            .await
            .id;
        Self {
            base: SourceFixture { h, band, source },
            dir,
        }
    }

    fn write(&self, rel: &str, content: &str) {
        fs::write(self.dir.path().join(rel), content).unwrap();
    }

    /// One delivery of a job to a fresh worker (as a fresh Lambda invocation).
    async fn run(&self, job: &SyncJob) -> Result<Option<SyncOperation>, SyncError> {
        self.h.sync_worker().run(job).await
    }

    /// The seqs subscribers would be sent: the broadcast messages the FIFO queue
    /// passes on, in order.
    fn broadcast_seqs(&self) -> Vec<u64> {
        let messages = self.h.broadcast_queue.deduplicated();
        for m in &messages {
            assert_eq!(m.group, "band:demo", "broadcasts are grouped by channel");
        }
        messages
            .iter()
            .flat_map(|m| {
                let b: BroadcastMessage = serde_json::from_str(&m.body).unwrap();
                assert_eq!(b.channel, self.channel());
                b.events.into_iter().map(|e| e.seq)
            })
            .collect()
    }

    async fn catalog_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self
            .h
            .store
            .list_files(&self.band, &self.source)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        paths.sort();
        paths
    }

    /// Job `job-1` for a source `gone` whose folder does not exist.
    async fn missing_folder_job(&self) -> SyncJob {
        let missing = self.dir.path().join("gone");
        let source = self
            .h
            .add_source(&self.band, "gone", missing.to_str().unwrap())
            .await;
        self.h
            .sync_job("job-1", &self.band, &source.id, Trigger::Manual)
    }

    async fn items(&self, op: &str) -> Vec<SyncItem> {
        self.h.store.list_items(op).await.unwrap()
    }
}

fn seqs(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

fn one_to(n: u64) -> Vec<u64> {
    (1..=n).collect()
}

#[tokio::test]
async fn a_created_file_completes_an_operation_and_publishes_started_created_completed() {
    // GIVEN a folder source with one new file
    let f = Fixture::new().await;
    f.write("blue-bossa.txt", "Blue Bossa, in C minor");

    // WHEN the worker runs a notification job
    let op = f
        .run(&f.job("job-1", Trigger::Notification))
        .await
        .unwrap()
        .expect("an operation is recorded");

    // THEN the operation completed with one synced item, and is stored as returned
    assert_eq!(op.id, "job-1");
    assert_eq!(op.status, OperationStatus::Completed);
    assert_eq!((op.metrics.seen, op.metrics.synced), (1, 1));
    assert_eq!((op.metrics.failed, op.metrics.skipped), (0, 0));
    assert_eq!(f.h.store.get_operation("job-1").await.unwrap(), Some(op));
    let items = f.items("job-1").await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].path, "blue-bossa.txt");
    assert_eq!(
        (items[0].n, items[0].action, items[0].status),
        (1, ItemAction::Created, ItemStatus::Synced)
    );
    // AND the channel log holds started, created, completed with gapless seqs
    let log = f.log().await;
    assert_eq!(
        f.log_names().await,
        ["sync.started", "file.created", "sync.completed"]
    );
    assert_eq!(seqs(&log), one_to(3));
    let created = log[1].data();
    assert_eq!(created["path"], "blue-bossa.txt");
    assert_eq!(created["size"], 22);
    assert_eq!(created["file_id"], json!(items[0].file_id));
    assert_eq!(log[2].data()["metrics"]["synced"], 1);
    // AND the same events were queued for broadcast on the band's group, in order
    assert_eq!(f.broadcast_seqs(), one_to(3));
    assert_eq!(f.h.broadcast_queue.messages().len(), 3, "no repeats");
    // AND the catalog and the source moved on
    assert_eq!(f.catalog_paths().await, ["blue-bossa.txt"]);
    let source =
        f.h.store
            .get_source(&f.band, &f.source)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(source.last_operation.as_deref(), Some("job-1"));
}

#[tokio::test]
async fn a_job_that_crashes_mid_publish_and_is_redelivered_publishes_each_event_once() {
    // GIVEN a new file, and a broadcast queue that fails on its 2nd send (the file
    // event's): the job dies after sync.started went out
    let f = Fixture::new().await;
    f.write("take-1.mp3", "la la la");
    f.h.broadcast_queue.fail_send(2);
    let job = f.job("job-1", Trigger::Notification);
    assert!(
        f.run(&job).await.is_err(),
        "the crash is reported for a retry"
    );
    assert!(
        f.catalog_paths().await.is_empty(),
        "the catalog did not move on"
    );

    // WHEN the same job is delivered again (the queue works now)
    let op = f.run(&job).await.unwrap().unwrap();

    // THEN the one operation completes
    assert_eq!(op.status, OperationStatus::Completed);
    assert_eq!(op.metrics.synced, 1);
    assert_eq!(
        f.h.store.list_operations(&f.band, 10).await.unwrap().len(),
        1
    );
    // AND the log holds each event exactly once, gapless
    let log = f.log().await;
    assert_eq!(
        f.log_names().await,
        ["sync.started", "file.created", "sync.completed"]
    );
    assert_eq!(seqs(&log), one_to(3));
    // AND subscribers are sent every seq once, in order
    assert_eq!(f.broadcast_seqs(), one_to(3));
    // AND the catalog and the items record the file once
    assert_eq!(f.catalog_paths().await, ["take-1.mp3"]);
    assert_eq!(f.items("job-1").await.len(), 1);
}

#[tokio::test]
async fn a_redelivered_job_recovers_from_a_failure_at_any_publish_step() {
    // A one-file job publishes three times: started, created, completed. Each publish
    // can fail at the log append (store outage) or at the broadcast send.
    for step in 1..=3 {
        for append_fails in [true, false] {
            let case = format!("step {step}, append fails: {append_fails}");
            // GIVEN a job that fails at that step
            let f = Fixture::new().await;
            f.write("chart.pdf", "chart");
            if append_fails {
                f.h.log.fail_append(step);
            } else {
                f.h.broadcast_queue.fail_send(step);
            }
            let job = f.job("job-1", Trigger::Notification);
            assert!(
                f.run(&job).await.is_err(),
                "{case}: the failure is reported"
            );

            // WHEN it is delivered again
            let op = f.run(&job).await.unwrap().unwrap();

            // THEN the operation, the log and the broadcasts are those of a clean run
            assert_eq!(op.status, OperationStatus::Completed, "{case}");
            assert_eq!(op.metrics.synced, 1, "{case}");
            assert_eq!(
                f.log_names().await,
                ["sync.started", "file.created", "sync.completed"],
                "{case}"
            );
            assert_eq!(seqs(&f.log().await), one_to(3), "{case}");
            assert_eq!(f.broadcast_seqs(), one_to(3), "{case}");
            assert_eq!(f.items("job-1").await.len(), 1, "{case}");
            assert_eq!(f.catalog_paths().await, ["chart.pdf"], "{case}");
        }
    }
}

#[tokio::test]
async fn a_resumed_operation_counts_the_items_of_every_delivery() {
    // GIVEN more changes than one chunk, and a job that dies sending the second chunk
    let f = Fixture::new().await;
    for i in 0..=CHUNK {
        f.write(&format!("chart-{i:03}.pdf"), &format!("chart {i}"));
    }
    // sends: 1 started, 2 first chunk, 3 progress, 4 second chunk
    f.h.broadcast_queue.fail_send(4);
    let job = f.job("job-1", Trigger::Manual);
    assert!(f.run(&job).await.is_err());

    // WHEN it is delivered again
    let op = f.run(&job).await.unwrap().unwrap();

    // THEN the operation counts every change once, whichever delivery made it
    let items = f.items("job-1").await;
    assert_eq!(items.len(), CHUNK + 1);
    let ns: Vec<u32> = items.iter().map(|i| i.n).collect();
    assert_eq!(ns, (1..=(CHUNK as u32 + 1)).collect::<Vec<_>>());
    assert_eq!(op.metrics.synced, CHUNK as u64 + 1);
    let completed = f.log().await.pop().unwrap();
    assert_eq!(completed.event(), "sync.completed");
    assert_eq!(completed.data()["metrics"]["synced"], CHUNK + 1);
    assert_eq!(f.catalog_paths().await.len(), CHUNK + 1);
}

#[tokio::test]
async fn a_change_recorded_but_not_applied_is_applied_and_not_recorded_twice() {
    // GIVEN a delivery that recorded the item of a new file, then died before the
    // catalog took the file (the operation is Running, the catalog empty)
    let f = Fixture::new().await;
    f.write("a.pdf", "a");
    let job = f.job("job-1", Trigger::Manual);
    let hash = hex::encode(Sha256::digest(b"a"));
    let op = SyncOperation::start(&job, f.h.now());
    f.h.store.put_operation(&op).await.unwrap();
    let item = SyncItem {
        operation: job.id.clone(),
        n: 1,
        file_id: format!("f_{}", short_hash(&[&job.id, "a.pdf", &hash])),
        path: "a.pdf".into(),
        action: ItemAction::Created,
        status: ItemStatus::Synced,
        error: None,
    };
    f.h.store.put_item(&item).await.unwrap();

    // WHEN the job is delivered again
    let op = f.run(&job).await.unwrap().unwrap();

    // THEN the file is in the catalog, the item is there once, and counted once
    assert_eq!(f.catalog_paths().await, ["a.pdf"]);
    assert_eq!(f.items("job-1").await, [item]);
    assert_eq!(op.metrics.synced, 1);
}

#[tokio::test]
async fn running_a_finished_job_again_changes_nothing() {
    // GIVEN a job that completed
    let f = Fixture::new().await;
    f.write("a.pdf", "a");
    let job = f.job("job-1", Trigger::Notification);
    let first = f.run(&job).await.unwrap().unwrap();
    let log = f.log().await;
    let broadcasts = f.h.broadcast_queue.deduplicated();
    let items = f.items("job-1").await;
    // (and, since then, time passed and the folder changed)
    f.h.clock.advance(chrono::TimeDelta::minutes(1));
    f.write("b.pdf", "b");

    // WHEN the same job is delivered again
    let again = f.run(&job).await.unwrap();

    // THEN it reports the finished operation and records or publishes nothing new
    assert_eq!(again, Some(first.clone()));
    assert_eq!(f.h.store.get_operation("job-1").await.unwrap(), Some(first));
    assert_eq!(f.log().await, log);
    assert_eq!(f.h.broadcast_queue.deduplicated(), broadcasts);
    assert_eq!(f.items("job-1").await, items);
    assert_eq!(
        f.catalog_paths().await,
        ["a.pdf"],
        "b.pdf waits for its own job"
    );
}

#[tokio::test]
async fn a_notification_that_finds_nothing_records_nothing_but_a_manual_sync_does() {
    // GIVEN a folder already synced
    let f = Fixture::new().await;
    f.write("a.pdf", "a");
    f.run(&f.job("job-1", Trigger::Notification))
        .await
        .unwrap()
        .unwrap();
    let log_before = f.log().await.len();
    let sent_before = f.h.broadcast_queue.messages().len();

    // WHEN a notification job finds nothing changed
    let quiet = f.run(&f.job("job-2", Trigger::Notification)).await.unwrap();

    // THEN no operation is recorded and nothing is published
    assert_eq!(quiet, None);
    assert_eq!(f.h.store.get_operation("job-2").await.unwrap(), None);
    assert_eq!(f.log().await.len(), log_before);
    assert_eq!(f.h.broadcast_queue.messages().len(), sent_before);

    // WHEN a manual job finds nothing changed
    let manual = f
        .run(&f.job("job-3", Trigger::Manual))
        .await
        .unwrap()
        .unwrap();

    // THEN it still records a completed operation and publishes started + completed
    assert_eq!(manual.status, OperationStatus::Completed);
    assert_eq!(manual.metrics.synced, 0);
    assert!(f.h.store.get_operation("job-3").await.unwrap().is_some());
    let names = f.log_names().await;
    assert_eq!(names[log_before..], ["sync.started", "sync.completed"]);
}

#[tokio::test]
async fn a_missing_folder_fails_the_operation_and_publishes_sync_failed() {
    // GIVEN a source whose folder does not exist
    let f = Fixture::new().await;
    let job = f.missing_folder_job().await;

    // WHEN the job runs
    let op = f
        .run(&job)
        .await
        .expect("a permanent failure is not retried");

    // THEN the operation failed with the reason, and sync.failed was published
    let op = op.unwrap();
    assert_eq!(op.status, OperationStatus::Failed);
    assert!(op.error.as_deref().unwrap().contains("cannot read folder"));
    assert_eq!(f.h.store.get_operation("job-1").await.unwrap(), Some(op));
    let log = f.log().await;
    assert_eq!(f.log_names().await, ["sync.started", "sync.failed"]);
    assert!(log[1].data()["error"].as_str().unwrap().contains("gone"));
    assert_eq!(f.broadcast_seqs(), one_to(2));
}

#[tokio::test]
async fn a_failed_sync_alerts_the_operators() {
    // GIVEN a worker with a notifier, and a source whose folder does not exist
    let f = Fixture::new().await;
    let job = f.missing_folder_job().await;
    let notifier = Arc::new(RecordingNotifier::default());
    let worker = f.h.sync_worker().with_notifier(notifier.clone());
    // WHEN the job runs
    worker.run(&job).await.unwrap();
    // THEN one alert names the band, the source and the reason
    let alerts = notifier.alerts();
    assert_eq!(alerts.len(), 1);
    assert!(
        alerts[0]
            .0
            .contains(&format!("{}/{}", job.band, job.source)),
        "{alerts:?}"
    );
    assert!(alerts[0].1.contains("cannot read folder"), "{alerts:?}");
}

#[tokio::test]
async fn a_redelivered_failed_job_publishes_the_sync_failed_it_lost() {
    // GIVEN a job for a missing folder whose sync.failed could not be appended (the
    // store failed after the operation was marked failed)
    let f = Fixture::new().await;
    let job = f.missing_folder_job().await;
    f.h.log.fail_append(2);
    assert!(f.run(&job).await.is_err());

    // WHEN it is delivered again
    let op = f.run(&job).await.unwrap().unwrap();

    // THEN the operation stays failed and sync.failed is in the log and broadcast
    assert_eq!(op.status, OperationStatus::Failed);
    assert_eq!(f.log_names().await, ["sync.started", "sync.failed"]);
    assert_eq!(f.broadcast_seqs(), one_to(2));
}

#[tokio::test]
async fn handle_sqs_runs_the_good_jobs_and_a_malformed_one_holds_nothing_up() {
    // GIVEN a batch: a good job, a body that is no job, another good job
    let f = Fixture::new().await;
    f.write("a.pdf", "a");
    let good = |id: &str| serde_json::to_string(&f.job(id, Trigger::Manual)).unwrap();
    let (one, three) = (good("job-1"), good("job-3"));
    let event = sqs_event(
        "demo/charts",
        &[("m1", &one), ("m2", "{\"id\":\"job-2\"}"), ("m3", &three)],
    );

    // WHEN the worker handles the batch
    let response = f.h.sync_worker().handle_sqs(event, None).await;

    // THEN both good jobs ran, and the malformed one is acknowledged (logged, counted)
    assert!(failed_ids(&response).is_empty());
    for id in ["job-1", "job-3"] {
        let op = f.h.store.get_operation(id).await.unwrap().unwrap();
        assert_eq!(op.status, OperationStatus::Completed);
    }
}

#[tokio::test]
async fn more_than_a_chunk_of_changes_publishes_progress() {
    // GIVEN CHUNK + 1 new files
    let f = Fixture::new().await;
    for i in 0..=CHUNK {
        f.write(&format!("take-{i:03}.mp3"), &format!("take {i}"));
    }

    // WHEN the worker runs
    f.run(&f.job("job-1", Trigger::Manual))
        .await
        .unwrap()
        .unwrap();

    // THEN a sync.progress event follows the first chunk, and seqs stay gapless
    let log = f.log().await;
    let names: Vec<&str> = log.iter().map(|e| e.event()).collect();
    let mut expected = vec!["sync.started"];
    expected.extend(std::iter::repeat_n("file.created", CHUNK));
    expected.extend(["sync.progress", "file.created", "sync.completed"]);
    assert_eq!(names, expected);
    assert_eq!(seqs(&log), one_to(CHUNK as u64 + 4));
    let progress = log[CHUNK + 1].data();
    assert_eq!(
        (progress["done"].as_u64(), progress["total"].as_u64()),
        (Some(50), Some(51))
    );
    assert_eq!(f.broadcast_seqs(), one_to(CHUNK as u64 + 4));
}

/// `request_sync` by `alice` for band `demo`.
async fn request(h: &Harness, source: Option<&str>) -> Result<Vec<SyncJob>, RequestSyncError> {
    let band = band("demo");
    let source = source.map(source_id);
    let alice = UserId::parse("alice").unwrap();
    let request = SyncRequest {
        band: &band,
        source: source.as_ref(),
        full: true,
        trigger: Trigger::Client,
        requested_by: &alice,
    };
    request_sync(
        h.store.as_ref(),
        h.sync_queue.as_ref(),
        request,
        h.clock.now(),
    )
    .await
}

#[tokio::test]
async fn request_sync_refuses_unknown_or_missing_sources() {
    // GIVEN a band with no sources yet
    let h = Harness::new();
    let demo = h.add_band("demo").await;

    // WHEN a sync of all its sources, or of an unknown one, is requested
    // THEN both are not_found and nothing is queued
    let none = Refusal::from(request(&h, None).await.unwrap_err());
    assert_eq!((none.status(), none.code.as_str()), (404, "not_found"));
    h.add_source(&demo, "charts", "/srv/charts").await;
    let unknown = Refusal::from(request(&h, Some("nope")).await.unwrap_err());
    assert_eq!(
        (unknown.status(), unknown.code.as_str()),
        (404, "not_found")
    );
    assert!(unknown.message.contains("nope"));
    assert_eq!(h.sync_queue.attempts(), 0);
}

#[tokio::test]
async fn request_sync_queues_one_job_per_source_in_its_group() {
    // GIVEN a band with two sources
    let h = Harness::new();
    let demo = h.add_band("demo").await;
    h.add_source(&demo, "charts", "/srv/charts").await;
    h.add_source(&demo, "takes", "/srv/takes").await;

    // WHEN a sync of every source is requested
    let jobs = request(&h, None).await.unwrap();

    // THEN one job per source is queued in the band/source group, deduplicated by id
    let queued = h.sync_queue.messages();
    let groups: Vec<&str> = queued.iter().map(|m| m.group.as_str()).collect();
    assert_eq!(groups, ["demo/charts", "demo/takes"]);
    let bodies: Vec<SyncJob> = h.sync_queue.bodies();
    assert_eq!(bodies, jobs);
    for (m, job) in queued.iter().zip(&jobs) {
        assert_eq!(m.dedup_id, job.id);
        assert_eq!(job.trigger, Trigger::Client);
        assert!(job.full);
        assert_eq!(job.requested_by.as_deref(), Some("alice"));
    }

    // WHEN one source is requested
    let one = request(&h, Some("takes")).await.unwrap();

    // THEN only that source is queued
    assert_eq!(one.len(), 1);
    assert_eq!(h.sync_queue.messages()[2].group, "demo/takes");
}

#[tokio::test]
async fn on_aws_a_folder_source_is_never_read() {
    // GIVEN a folder source with a file (stored before the API refused them on AWS),
    // and a worker deployed on AWS
    let f = Fixture::new().await;
    f.write("chart.pdf", "chart");
    let worker =
        f.h.sync_worker()
            .with_deployment(bandsync::deployment::Deployment::Aws);
    let job = f.job("job-1", Trigger::Manual);

    // WHEN its job runs
    let op = worker.run(&job).await.expect("a refusal is not retried");

    // THEN the operation failed saying why, and nothing of the folder was read
    let op = op.unwrap();
    assert_eq!(op.status, OperationStatus::Failed);
    assert!(
        op.error.as_deref().unwrap().contains("local stack only"),
        "{op:?}"
    );
    assert!(f.catalog_paths().await.is_empty());
    assert!(f.items("job-1").await.is_empty());
}
