//! The setlist source's engine against the fake Sheets API.

use crate::{SourceFixture, source_fixture};
use bandsync::google::apis::{GoogleApis, GoogleUrls};
use bandsync::google::retry::{Retrier, RetryPolicy};
use bandsync::model::*;
use bandsync::ports::{OperationStore, SourceStore};
use bandsync::sync::SyncError;
use bandsync_google_fake::sheets::FakeSheets;
use bandsync_testkit::*;
use serde_json::{Value, json};
use std::sync::Arc;

/// The spreadsheet, the title of its one sheet, the token the fake accepts.
const SHEET_ID: &str = "1SetlistSpreadsheet";
const TAB: &str = "Setlist";
const TOKEN: &str = "ya29.setlist-test";

/// Band `demo` with a sheet source `setlist` reading spreadsheet [`SHEET_ID`] (no
/// range: the first sheet's A:Z), which holds a three-song setlist.
struct Fixture {
    base: SourceFixture,
    fake: FakeSheets,
    client: Arc<GoogleApis>,
}
source_fixture!(Fixture);

impl Fixture {
    async fn new() -> Self {
        Self::with_location(SHEET_ID).await
    }

    async fn with_location(location: &str) -> Self {
        let h = Harness::new();
        let band = h.add_band("demo").await;
        let fake = FakeSheets::start(TOKEN).await.unwrap();
        fake.create_spreadsheet(SHEET_ID, &[TAB]);
        fake.set_rows(
            SHEET_ID,
            TAB,
            &[
                &["Song", "Key", "Notes"],
                &["Blue Bossa", "Cm"],
                &["So What", "Dm", "modal"],
                &["Autumn Leaves", "Gm"],
            ],
        );
        let client = GoogleApis::with_static_token(
            GoogleUrls {
                sheets: fake.base_url(),
                ..GoogleUrls::default()
            },
            TOKEN,
        )
        .unwrap()
        .with_retrier(Retrier::new(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }));
        let source = Source::new(
            band.clone(),
            source_id("setlist"),
            SourceKind::Sheet,
            location,
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
        }
    }

    /// One delivery of `job` to a fresh worker with the Sheets client.
    async fn deliver(&self, job: &SyncJob) -> Result<Option<SyncOperation>, SyncError> {
        let worker = self.h.sync_worker().with_google(self.client.clone());
        worker.run(job).await
    }

    /// A job `id` delivered once, which must not fail as a whole.
    async fn run(&self, id: &str, trigger: Trigger) -> Option<SyncOperation> {
        self.deliver(&self.job(id, trigger)).await.unwrap()
    }

    /// The `setlist.updated` events' data, in log order.
    async fn updates(&self) -> Vec<Value> {
        self.log()
            .await
            .into_iter()
            .filter(|e| e.event() == "setlist.updated")
            .map(|e| e.data().clone())
            .collect()
    }

    async fn items(&self, op: &str) -> Vec<(ItemAction, String, String)> {
        self.h
            .store
            .list_items(op)
            .await
            .unwrap()
            .into_iter()
            .map(|i| (i.action, i.file_id, i.path))
            .collect()
    }

    async fn cursor(&self) -> bandsync::sync::setlist::SheetCursor {
        let source = self
            .h
            .store
            .get_source(&self.band, &self.source)
            .await
            .unwrap()
            .unwrap();
        bandsync::sync::setlist::SheetCursor::parse(source.cursor.as_deref())
    }
}

fn item(action: ItemAction, key: &str, path: &str) -> (ItemAction, String, String) {
    (action, key.to_owned(), path.to_owned())
}

#[tokio::test]
async fn the_first_sync_publishes_every_row_as_added_and_keeps_a_snapshot() {
    // GIVEN a never-synced sheet source
    let f = Fixture::new().await;
    // WHEN it syncs on a notification
    let op = f.run("job-1", Trigger::Notification).await.unwrap();
    // THEN one setlist.updated between started and completed, marked initial
    assert_eq!(op.status, OperationStatus::Completed);
    assert_eq!((op.metrics.seen, op.metrics.synced), (3, 3));
    assert_eq!(
        f.log_names().await,
        ["sync.started", "setlist.updated", "sync.completed"]
    );
    let log = f.log().await;
    assert_eq!(log[1].id, "job-1:setlist");
    let data = log[1].data();
    assert_eq!(data["initial"], true);
    assert_eq!(data["source"], "setlist");
    assert_eq!(data["spreadsheet_id"], SHEET_ID);
    assert_eq!(data["range"], "A:Z");
    assert_eq!(data["rows"], 3);
    assert_eq!(data["columns"], json!(["Song", "Key", "Notes"]));
    assert_eq!(
        data["added"][1],
        json!({"position": 2, "key": "So What",
               "row": {"Song": "So What", "Key": "Dm", "Notes": "modal"}})
    );
    assert_eq!(data["added"].as_array().unwrap().len(), 3);
    for empty in ["removed", "moved", "edited"] {
        assert_eq!(data[empty], json!([]), "{empty}");
    }
    assert!(data.get("columns_changed").is_none());
    // AND one Created item per row
    assert_eq!(
        f.items("job-1").await,
        [
            item(ItemAction::Created, "Blue Bossa", "row 1: Blue Bossa"),
            item(ItemAction::Created, "So What", "row 2: So What"),
            item(ItemAction::Created, "Autumn Leaves", "row 3: Autumn Leaves"),
        ]
    );
    // AND the cursor holds the committed snapshot, nothing pending
    let cursor = f.cursor().await;
    assert_eq!(cursor.op.as_deref(), Some("job-1"));
    assert_eq!(cursor.pending, None);
    assert_eq!(cursor.snapshot.unwrap().rows.len(), 3);
    // AND the request read the default range
    assert_eq!(
        f.fake.requests()[0].path,
        format!("/v4/spreadsheets/{SHEET_ID}/values/A:Z")
    );
}

#[tokio::test]
async fn an_edit_publishes_exactly_the_row_diff() {
    // GIVEN a synced setlist
    let f = Fixture::new().await;
    f.run("job-1", Trigger::Manual).await.unwrap();
    let before = f.log().await.len();
    // WHEN a song is inserted at the top, one deleted, one's key edited, and the
    // last dragged above the one before it
    f.fake.insert_row(SHEET_ID, TAB, 1, &["Footprints", "Cm"]);
    f.fake.delete_row(SHEET_ID, TAB, 2); // Blue Bossa
    f.fake.set_cell(SHEET_ID, TAB, 2, 1, "Em"); // So What's key
    f.fake.move_row(SHEET_ID, TAB, 3, 2); // Autumn Leaves above So What
    let op = f.run("job-2", Trigger::Notification).await.unwrap();
    // THEN one setlist.updated with exactly those changes
    let names = f.log_names().await;
    assert_eq!(
        names[before..],
        ["sync.started", "setlist.updated", "sync.completed"]
    );
    let updates = f.updates().await;
    let data = &updates[1];
    assert_eq!(data["initial"], false);
    assert_eq!(data["rows"], 3);
    assert_eq!(
        data["added"],
        json!([{"position": 1, "key": "Footprints",
                "row": {"Song": "Footprints", "Key": "Cm", "Notes": ""}}])
    );
    assert_eq!(
        data["removed"],
        json!([{"position": 1, "key": "Blue Bossa",
                "row": {"Song": "Blue Bossa", "Key": "Cm", "Notes": ""}}])
    );
    assert_eq!(
        data["moved"],
        json!([{"key": "Autumn Leaves", "from": 3, "to": 2}])
    );
    assert_eq!(
        data["edited"],
        json!([{"key": "So What", "position": 3,
                "changes": {"Key": {"before": "Dm", "after": "Em"}}}])
    );
    // AND one item per row change
    assert_eq!(op.metrics.synced, 4);
    assert_eq!(
        f.items("job-2").await,
        [
            item(ItemAction::Created, "Footprints", "row 1: Footprints"),
            item(ItemAction::Deleted, "Blue Bossa", "row 1: Blue Bossa"),
            item(ItemAction::Moved, "Autumn Leaves", "row 2: Autumn Leaves"),
            item(ItemAction::Updated, "So What", "row 3: So What"),
        ]
    );
}

#[tokio::test]
async fn an_unchanged_sheet_publishes_nothing() {
    // GIVEN a synced setlist, then a change in a blank row and trailing cells only
    let f = Fixture::new().await;
    f.run("job-1", Trigger::Manual).await.unwrap();
    f.fake.insert_row(SHEET_ID, TAB, 2, &["", " "]);
    let log = f.log().await;
    // WHEN notifications and a reconcile find the same rows
    // THEN nothing is recorded or published
    assert_eq!(f.run("job-2", Trigger::Notification).await, None);
    assert_eq!(f.run("job-3", Trigger::Reconcile).await, None);
    assert_eq!(f.h.store.get_operation("job-2").await.unwrap(), None);
    assert_eq!(f.log().await, log);
    // AND a manual sync records an operation with no setlist.updated
    let op = f.run("job-4", Trigger::Manual).await.unwrap();
    assert_eq!(op.metrics.synced, 0);
    assert_eq!(
        f.log_names().await[log.len()..],
        ["sync.started", "sync.completed"]
    );
    assert_eq!(f.cursor().await.op.as_deref(), Some("job-1"));
}

#[tokio::test]
async fn a_redelivered_job_publishes_its_diff_once_even_if_the_sheet_changed_since() {
    for append_fails in [false, true] {
        let case = format!("append fails: {append_fails}");
        // GIVEN a synced setlist, then an edit, and a job that dies publishing its
        // setlist.updated (the 5th publish: 3 for job-1, then started)
        let f = Fixture::new().await;
        f.run("job-1", Trigger::Manual).await.unwrap();
        f.fake.set_cell(SHEET_ID, TAB, 1, 1, "C");
        if append_fails {
            f.h.log.fail_append(5);
        } else {
            f.h.broadcast_queue.fail_send(5);
        }
        let job = f.job("job-2", Trigger::Notification);
        assert!(f.deliver(&job).await.is_err(), "{case}");
        assert!(f.cursor().await.pending.is_some(), "{case}");
        // (and the sheet changes again before the redelivery)
        f.fake.set_cell(SHEET_ID, TAB, 2, 1, "D");
        f.fake.clear_requests();

        // WHEN the job is delivered again
        let op = f.deliver(&job).await.unwrap().unwrap();

        // THEN it completes without reading the sheet, with the diff it had
        assert_eq!(op.status, OperationStatus::Completed, "{case}");
        assert!(f.fake.requests().is_empty(), "{case}");
        let updates = f.updates().await;
        assert_eq!(updates.len(), 2, "{case}: one update per job");
        assert_eq!(updates[1]["edited"].as_array().unwrap().len(), 1, "{case}");
        assert_eq!(updates[1]["edited"][0]["key"], "Blue Bossa", "{case}");
        let broadcast_ids: Vec<String> =
            f.h.broadcast_queue
                .deduplicated()
                .iter()
                .map(|m| m.dedup_id.clone())
                .collect();
        assert_eq!(broadcast_ids.len(), f.log().await.len(), "{case}");
        assert_eq!(f.items("job-2").await.len(), 1, "{case}");
        assert_eq!(f.cursor().await.op.as_deref(), Some("job-2"), "{case}");

        // AND the next job brings the later edit
        f.run("job-3", Trigger::Notification).await.unwrap();
        let updates = f.updates().await;
        assert_eq!(updates.len(), 3, "{case}");
        assert_eq!(updates[2]["edited"][0]["key"], "So What", "{case}");
    }
}

#[tokio::test]
async fn a_job_that_died_after_committing_only_completes_on_redelivery() {
    // GIVEN a job that committed its snapshot, then died sending sync.completed...
    // which `complete` publishes after recording the outcome; simulate the death
    // between commit and complete by a store whose operation is still Running
    let f = Fixture::new().await;
    f.run("job-1", Trigger::Manual).await.unwrap();
    f.fake.set_cell(SHEET_ID, TAB, 1, 1, "C");
    let job = f.job("job-2", Trigger::Notification);
    f.deliver(&job).await.unwrap().unwrap();
    let mut op = f.h.store.get_operation("job-2").await.unwrap().unwrap();
    op.status = OperationStatus::Running;
    op.finished_at = None;
    f.h.store.put_operation(&op).await.unwrap();
    let log = f.log().await;
    f.fake.set_cell(SHEET_ID, TAB, 2, 1, "D");
    f.fake.clear_requests();
    // WHEN it is delivered again
    let op = f.deliver(&job).await.unwrap().unwrap();
    // THEN it completes, reads nothing, and publishes no new setlist event
    assert_eq!(op.status, OperationStatus::Completed);
    assert_eq!(op.metrics.synced, 1);
    assert!(f.fake.requests().is_empty());
    assert_eq!(
        f.log().await.len(),
        log.len(),
        "started and completed are repeats"
    );
}

#[tokio::test]
async fn another_operations_pending_event_is_finished_before_the_next_sync() {
    // GIVEN a job whose setlist.updated never reached the log, and which is never
    // delivered again
    let f = Fixture::new().await;
    f.run("job-1", Trigger::Manual).await.unwrap();
    f.fake.set_cell(SHEET_ID, TAB, 1, 1, "C");
    f.h.log.fail_append(5);
    assert!(f.deliver(&f.job("job-2", Trigger::Manual)).await.is_err());
    f.fake.set_cell(SHEET_ID, TAB, 2, 1, "D");
    // WHEN the next job runs
    f.run("job-3", Trigger::Notification).await.unwrap();
    // THEN job-2's diff is published under its id, then job-3's own
    let log = f.log().await;
    let updates: Vec<(&str, &Value)> = log
        .iter()
        .filter(|e| e.event() == "setlist.updated")
        .map(|e| (e.id.as_str(), &e.data()["edited"][0]["key"]))
        .collect();
    assert_eq!(
        updates,
        [
            ("job-1:setlist", &json!(null)),
            ("job-2:setlist", &json!("Blue Bossa")),
            ("job-3:setlist", &json!("So What")),
        ]
    );
    assert_eq!(f.cursor().await.op.as_deref(), Some("job-3"));
}

#[tokio::test]
async fn an_unknown_or_forbidden_spreadsheet_fails_the_operation_once() {
    for (location, status) in [("1Missing", "404"), (SHEET_ID, "403")] {
        // GIVEN a source whose spreadsheet is unknown, or not shared with us
        let f = Fixture::with_location(location).await;
        f.fake.deny(SHEET_ID);
        // WHEN it syncs
        let op = f.run("job-1", Trigger::Manual).await.unwrap();
        // THEN the operation failed with a clear error after one request, and
        // sync.failed was published (the job is not retried)
        assert_eq!(op.status, OperationStatus::Failed, "{location}");
        let error = op.error.unwrap();
        assert!(error.contains("cannot read spreadsheet"), "{error}");
        assert!(error.contains(status), "{error}");
        assert_eq!(f.log_names().await, ["sync.started", "sync.failed"]);
        assert_eq!(f.fake.requests().len(), 1);
        assert_eq!(
            f.cursor().await,
            bandsync::sync::setlist::SheetCursor::default()
        );
    }
}

#[tokio::test]
async fn a_setlist_too_large_to_keep_fails_with_a_clear_error() {
    // GIVEN a sheet of 300 rows of 1000 characters
    let f = Fixture::new().await;
    let long = "x".repeat(1000);
    for i in 0..300 {
        f.fake.set_cell(SHEET_ID, TAB, i + 1, 2, &long);
        f.fake
            .set_cell(SHEET_ID, TAB, i + 1, 0, &format!("song {i}"));
    }
    // WHEN it syncs
    let op = f.run("job-1", Trigger::Manual).await.unwrap();
    // THEN it fails saying why, and stores nothing
    assert_eq!(op.status, OperationStatus::Failed);
    assert!(op.error.unwrap().contains("too large"));
    assert_eq!(
        f.cursor().await,
        bandsync::sync::setlist::SheetCursor::default()
    );
    assert!(f.updates().await.is_empty());
}

#[tokio::test]
async fn a_setlist_that_fits_as_json_but_not_once_stored_fails_with_a_clear_error() {
    // GIVEN a synced sheet whose cells escape heavily (quotes, control characters,
    // non-ASCII)
    let f = Fixture::new().await;
    let cell = format!(
        "{}{}{}",
        "\"".repeat(600),
        "\u{1}".repeat(50),
        "é".repeat(100)
    );
    for i in 0..70 {
        f.fake.set_cell(SHEET_ID, TAB, i + 1, 2, &cell);
        f.fake
            .set_cell(SHEET_ID, TAB, i + 1, 0, &format!("song {i}"));
    }
    let first = f.run("job-1", Trigger::Manual).await.unwrap();
    assert_eq!(first.status, OperationStatus::Completed);
    let committed = f.cursor().await;
    // WHEN one cell is edited and it syncs again: the small diff fits an event, and the
    // write-ahead cursor (committed plus pending snapshot) fits MAX_CURSOR_BYTES as
    // JSON, but that JSON is escaped again inside the stored record, where each quote
    // takes four bytes: over DynamoDB's 400 KB item
    let as_json = 2 * 70 * serde_json::to_string(&cell).unwrap().len();
    assert!(as_json < bandsync::sync::setlist::MAX_CURSOR_BYTES);
    assert!(2 * as_json > 400_000);
    f.fake.set_cell(SHEET_ID, TAB, 1, 1, "F#m");
    let op = f.run("job-2", Trigger::Manual).await.unwrap();
    // THEN it fails saying why, and the stored cursor has not moved
    assert_eq!(op.status, OperationStatus::Failed);
    assert!(op.error.unwrap().contains("stored source record"));
    assert_eq!(f.cursor().await, committed);
    assert_eq!(f.updates().await.len(), 1);
}

#[tokio::test]
async fn a_heavily_escaped_setlist_that_fits_is_stored_under_the_item_limit() {
    // GIVEN a smaller sheet of cells that escape as heavily (its event fits too)
    let f = Fixture::new().await;
    let cell = format!("{}{}", "\"\u{1}".repeat(600), "é".repeat(100));
    for i in 0..30 {
        f.fake.set_cell(SHEET_ID, TAB, i + 1, 2, &cell);
        f.fake
            .set_cell(SHEET_ID, TAB, i + 1, 0, &format!("song {i}"));
    }
    // WHEN it syncs
    let op = f.run("job-1", Trigger::Manual).await.unwrap();
    // THEN it completes, and the record as stored is under the cap
    assert_eq!(op.status, OperationStatus::Completed);
    let source =
        f.h.store
            .get_source(&f.band, &f.source)
            .await
            .unwrap()
            .unwrap();
    let stored = bandsync::sync::setlist::stored_size(&source).unwrap();
    assert!(stored > 100_000, "{stored}");
    assert!(stored <= bandsync::sync::setlist::MAX_SOURCE_RECORD_BYTES);
}

#[tokio::test]
async fn a_sheet_source_without_a_client_and_a_full_sync() {
    // GIVEN a synced setlist
    let f = Fixture::with_location(&format!("{SHEET_ID}#{TAB}!A1:B")).await;
    // WHEN a worker without a Sheets client runs it, THEN it fails saying why
    let op =
        f.h.sync_worker()
            .run(&f.job("job-0", Trigger::Manual))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(op.status, OperationStatus::Failed);
    assert!(op.error.unwrap().contains("Google API clients"));
    // WHEN it syncs with the range, then a full sync runs on an unchanged sheet
    f.run("job-1", Trigger::Manual).await.unwrap();
    let mut full = f.job("job-2", Trigger::Manual);
    full.full = true;
    f.deliver(&full).await.unwrap().unwrap();
    // THEN both publish an initial update of the range's columns
    let updates = f.updates().await;
    assert_eq!(updates.len(), 2);
    for u in &updates {
        assert_eq!(u["initial"], true);
        assert_eq!(u["columns"], json!(["Song", "Key"]));
        assert_eq!(u["range"], "Setlist!A1:B");
        assert_eq!(u["added"].as_array().unwrap().len(), 3);
    }
}
