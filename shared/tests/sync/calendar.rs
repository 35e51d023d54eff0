//! The calendar source's engine against the fake Calendar API.

use crate::{SourceFixture, source_fixture};
use bandsync::google::apis::{GoogleApis, GoogleUrls};
use bandsync::google::calendar::EventDateTime;
use bandsync::model::*;
use bandsync::ports::{CatalogStore, OperationStore, SourceStore};
use bandsync::sync::SyncError;
use bandsync::sync::calendar::*;
use bandsync_google_fake::Fault;
use bandsync_google_fake::calendar::{EventInput, FakeCalendar};
use bandsync_testkit::*;
use bandsync_testkit::{RecordingSleeper, recording_retrier};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::{sync::Arc, time::Duration};

const TOKEN: &str = "ya29.calendar-sync-test";
const CAL: &str = "demo-band@group.calendar.google.com";

// The calendar event names as clients know them (spelled out: the test pins the wire).
const EVENT_CREATED: &str = "calendar.event.created";
const EVENT_UPDATED: &str = "calendar.event.updated";
const EVENT_CANCELLED: &str = "calendar.event.cancelled";

/// Band `demo` with a Calendar source `gigs` following a fake calendar.
struct Fixture {
    base: SourceFixture,
    fake: FakeCalendar,
    sleeper: Arc<RecordingSleeper>,
    client: Arc<GoogleApis>,
}
source_fixture!(Fixture);

impl Fixture {
    /// `attempts`: how often the client tries a request (1: faults are not retried).
    async fn new(attempts: u32) -> Self {
        let h = Harness::new();
        let band = h.add_band("demo").await;
        let fake = FakeCalendar::start(TOKEN).await.unwrap();
        fake.add_calendar(CAL);
        let (retrier, sleeper) = recording_retrier(attempts);
        let apis = GoogleApis::with_static_token(
            GoogleUrls {
                calendar: fake.base_url(),
                ..GoogleUrls::default()
            },
            TOKEN,
        )
        .unwrap()
        .with_retrier(retrier);
        let source = Source::new(band.clone(), source_id("gigs"), SourceKind::Calendar, CAL);
        h.store.put_source(&source).await.unwrap();
        Self {
            base: SourceFixture {
                h,
                band,
                source: source.id,
            },
            fake,
            client: Arc::new(apis),
            sleeper,
        }
    }

    /// One delivery of a job to a fresh worker (as a fresh Lambda invocation).
    async fn deliver(&self, job: &SyncJob) -> Result<Option<SyncOperation>, SyncError> {
        self.h
            .sync_worker()
            .with_google(self.client.clone())
            .run(job)
            .await
    }

    async fn sync(&self, id: &str, trigger: Trigger) -> Option<SyncOperation> {
        self.deliver(&self.job(id, trigger)).await.unwrap()
    }

    /// The calendar events of the log after `skip` events: (event, event id).
    async fn calendar_events(&self, skip: usize) -> Vec<(String, String)> {
        let log = self.log().await;
        let about = |e: &bandsync::model::Event| {
            let id = e.data()["event_id"].as_str()?.to_owned();
            e.event()
                .starts_with("calendar.")
                .then(|| (e.event().to_owned(), id))
        };
        log[skip..].iter().filter_map(about).collect()
    }

    /// The data of the last event named `name` about `event_id`.
    async fn data(&self, name: &str, event_id: &str) -> Value {
        let log = self.log().await;
        let found = log
            .iter()
            .rev()
            .find(|e| e.event() == name && e.data()["event_id"] == event_id);
        found.expect("such an event").data().clone()
    }

    /// The catalog: (event id, label), by id.
    async fn catalog(&self) -> Vec<(String, String)> {
        let files = self.h.store.list_files(&self.band, &self.source).await;
        let mut rows: Vec<_> = files
            .unwrap()
            .into_iter()
            .map(|e| (e.file_id, e.path))
            .collect();
        rows.sort();
        rows
    }

    async fn cursor(&self) -> Option<CalendarCursor> {
        let source = self.h.store.get_source(&self.band, &self.source).await;
        source
            .unwrap()
            .unwrap()
            .cursor
            .as_deref()
            .map(CalendarCursor::decode)
    }

    /// The cursor a complete listing made now would leave.
    fn caught_up(&self) -> Option<CalendarCursor> {
        Some(CalendarCursor::at(self.fake.current_sync_token()))
    }
}

fn rehearsal() -> EventInput {
    EventInput::timed(
        "Rehearsal",
        "2026-03-10T19:00:00+01:00",
        "2026-03-10T22:00:00+01:00",
    )
    .with_location("Studio A")
}

fn rehearsal_named(summary: &str) -> EventInput {
    EventInput {
        summary: Some(summary.to_owned()),
        ..rehearsal()
    }
}

fn pairs(name: &str, ids: &[&String]) -> Vec<(String, String)> {
    ids.iter()
        .map(|id| (name.to_owned(), (*id).clone()))
        .collect()
}

#[tokio::test]
async fn a_full_sync_then_deltas_become_created_updated_and_cancelled_events() {
    // GIVEN a rehearsal, an all-day gig, and an event cancelled before any sync
    let f = Fixture::new(1).await;
    let rehearsal = f.fake.create_event(CAL, rehearsal());
    let gig = f.fake.create_event(
        CAL,
        EventInput::all_day("Gig: Paradiso", "2026-04-04", "2026-04-05"),
    );
    let never = f
        .fake
        .create_event(CAL, EventInput::all_day("Off", "2026-05-01", "2026-05-02"));
    f.fake.cancel_event(CAL, &never);

    // WHEN the source syncs for the first time
    let op = f.sync("job-1", Trigger::Manual).await.unwrap();

    // THEN the two live events are created, the cancelled one skipped
    assert_eq!(op.status, OperationStatus::Completed);
    assert_eq!(
        (op.metrics.synced, op.metrics.seen, op.metrics.skipped),
        (2, 2, 1)
    );
    let mut created = f.calendar_events(0).await;
    created.sort();
    let mut expected = pairs(EVENT_CREATED, &[&rehearsal, &gig]);
    expected.sort();
    assert_eq!(created, expected);
    // AND a member's app gets what it needs to show the rehearsal
    let data = f.data(EVENT_CREATED, &rehearsal).await;
    assert_eq!(data["source"], "gigs");
    assert_eq!(data["summary"], "Rehearsal");
    assert_eq!(data["location"], "Studio A");
    assert_eq!(
        data["start"],
        json!({"date_time": "2026-03-10T19:00:00+01:00", "time_zone": "Europe/Paris"})
    );
    assert_eq!(data["end"]["date_time"], "2026-03-10T22:00:00+01:00");
    assert_eq!(data["status"], "confirmed");
    assert!(
        data["updated"]
            .as_str()
            .unwrap()
            .starts_with("2026-03-01T12:00:0")
    );
    assert!(data["html_link"].as_str().unwrap().starts_with("https://"));
    assert_eq!(data["recurring_event_id"], Value::Null);
    assert_eq!(
        f.data(EVENT_CREATED, &gig).await["start"],
        json!({"date": "2026-04-04"})
    );
    // AND the catalog holds them under their ids and labels; the cursor is the token
    let mut catalog = vec![
        (rehearsal.clone(), "Rehearsal".to_owned()),
        (gig.clone(), "Gig: Paradiso".to_owned()),
    ];
    catalog.sort();
    assert_eq!(f.catalog().await, catalog);
    assert_eq!(f.cursor().await, f.caught_up());
    let before = f.log().await.len();

    // WHEN an event is added, the rehearsal moved to another room, the gig called off
    let new = f.fake.create_event(
        CAL,
        EventInput::all_day("Photo shoot", "2026-03-20", "2026-03-21"),
    );
    f.fake
        .update_event(CAL, &rehearsal, |e| e.location = Some("Studio B".into()));
    f.fake.cancel_event(CAL, &gig);
    f.fake.clear_requests();
    let op = f.sync("job-2", Trigger::Notification).await.unwrap();

    // THEN one event per change, in the order Google listed them
    assert_eq!(op.metrics.synced, 3);
    let mut expected = pairs(EVENT_CREATED, &[&new]);
    expected.extend(pairs(EVENT_UPDATED, &[&rehearsal]));
    expected.extend(pairs(EVENT_CANCELLED, &[&gig]));
    assert_eq!(f.calendar_events(before).await, expected);
    assert_eq!(
        f.data(EVENT_UPDATED, &rehearsal).await["location"],
        "Studio B"
    );
    // AND the cancellation names the gig although Google sent only its id and status
    let cancelled = f.data(EVENT_CANCELLED, &gig).await;
    assert_eq!(
        (cancelled["summary"].clone(), cancelled["status"].clone()),
        (json!("Gig: Paradiso"), json!("cancelled"))
    );
    // AND the delta was one incremental request; the catalog and cursor follow
    let requests = f.fake.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].query.iter().any(|(k, _)| k == "syncToken"));
    let labels: Vec<String> = f.catalog().await.into_iter().map(|(_, l)| l).collect();
    assert_eq!(labels.len(), 2);
    assert!(labels.contains(&"Photo shoot".to_owned()) && labels.contains(&"Rehearsal".to_owned()));
    assert_eq!(f.cursor().await, f.caught_up());
}

#[tokio::test]
async fn an_unchanged_resync_publishes_no_calendar_event() {
    // GIVEN a synced calendar
    let f = Fixture::new(1).await;
    f.fake.create_event(CAL, rehearsal());
    f.sync("job-1", Trigger::Manual).await.unwrap();
    let before = f.log().await.len();
    // WHEN a notification finds nothing new THEN nothing is recorded
    assert_eq!(f.sync("job-2", Trigger::Notification).await, None);
    assert_eq!(f.h.store.get_operation("job-2").await.unwrap(), None);
    assert_eq!(f.log().await.len(), before);
    // WHEN a full manual sync lists everything again
    f.fake.clear_requests();
    let mut job = f.job("job-3", Trigger::Manual);
    job.full = true;
    let op = f.deliver(&job).await.unwrap().unwrap();
    // THEN it was a full listing, and only sync.started and sync.completed came of it
    assert!(
        f.fake
            .requests()
            .iter()
            .all(|r| r.query.iter().all(|(k, _)| k != "syncToken"))
    );
    assert_eq!(op.metrics.synced, 0);
    let names: Vec<String> = f
        .log()
        .await
        .into_iter()
        .skip(before)
        .map(|e| e.event().to_owned())
        .collect();
    assert_eq!(names, ["sync.started", "sync.completed"]);
    assert_eq!(f.cursor().await, f.caught_up());
}

#[tokio::test]
async fn one_called_off_rehearsal_of_a_weekly_series_is_a_cancellation_once() {
    // GIVEN a synced weekly rehearsal series
    let f = Fixture::new(1).await;
    let mut weekly = rehearsal();
    weekly.recurrence = vec!["RRULE:FREQ=WEEKLY;BYDAY=TH".into()];
    let series = f.fake.create_event(CAL, weekly);
    f.sync("job-1", Trigger::Manual).await.unwrap();
    let before = f.log().await.len();

    // WHEN one occurrence is called off (Google lists a cancelled exception that was
    // never listed live)
    let original = EventDateTime::at("2026-12-10T19:00:00+01:00", "Europe/Berlin");
    let mut occurrence = rehearsal();
    occurrence.recurring_event_id = Some(series.clone());
    occurrence.original_start_time = Some(original);
    let exception = f.fake.create_event(CAL, occurrence);
    f.fake.cancel_event(CAL, &exception);
    f.sync("job-2", Trigger::Notification).await.unwrap();

    // THEN members get one calendar.event.cancelled naming the series and the date
    let log = f.log().await;
    let cancelled: Vec<&bandsync::model::Event> = log[before..]
        .iter()
        .filter(|e| e.event() == EVENT_CANCELLED)
        .collect();
    assert_eq!(cancelled.len(), 1, "{:?}", f.calendar_events(before).await);
    let data = cancelled[0].data();
    assert_eq!(data["event_id"], exception.as_str());
    assert_eq!(data["recurring_event_id"], series.as_str());
    assert_eq!(data["status"], "cancelled");
    assert_eq!(data["summary"], "Rehearsal");
    assert_eq!(
        data["original_start"]["date_time"],
        "2026-12-10T19:00:00+01:00"
    );

    // WHEN a full sync lists everything again THEN no second cancellation comes
    let after = f.log().await.len();
    let mut job = f.job("job-3", Trigger::Manual);
    job.full = true;
    f.deliver(&job).await.unwrap();
    assert_eq!(f.calendar_events(after).await, []);
}

#[tokio::test]
async fn a_tombstone_past_its_retention_is_pruned_and_stays_silent() {
    // GIVEN a weekly series with one called-off occurrence, announced once
    let f = Fixture::new(1).await;
    let mut weekly = rehearsal();
    weekly.recurrence = vec!["RRULE:FREQ=WEEKLY;BYDAY=TH".into()];
    let series = f.fake.create_event(CAL, weekly);
    f.sync("job-1", Trigger::Manual).await.unwrap();
    let mut occurrence = rehearsal();
    occurrence.recurring_event_id = Some(series.clone());
    occurrence.original_start_time = Some(EventDateTime::at(
        "2026-03-12T19:00:00+01:00",
        "Europe/Berlin",
    ));
    let exception = f.fake.create_event(CAL, occurrence);
    f.fake.cancel_event(CAL, &exception);
    f.sync("job-2", Trigger::Notification).await.unwrap();
    assert!(f.catalog().await.iter().any(|(id, _)| *id == exception));
    let purger = bandsync::sync::purge::Purger::new(
        f.h.store.clone(),
        f.h.store.clone(),
        f.h.store.clone(),
        f.h.publisher(),
        f.h.clock.clone(),
    );
    // WHEN the scheduler's prune pass runs within the retention THEN it is kept
    let report = purger.prune_band(&f.band).await.unwrap();
    assert_eq!(report.tombstones, 0);

    // WHEN it runs once the retention after the occurrence's start (12 March) is over
    f.h.clock
        .advance(TOMBSTONE_RETENTION + chrono::TimeDelta::days(12));
    let report = purger.prune_band(&f.band).await.unwrap();
    // THEN the tombstone is gone, the series stays, and nobody is told
    assert_eq!(report.tombstones, 1);
    assert_eq!(
        f.catalog().await,
        [(series.clone(), "Rehearsal".to_owned())]
    );
    let after = f.log().await.len();
    // AND a full listing that shows the old cancellation again announces nothing
    let mut job = f.job("job-3", Trigger::Manual);
    job.full = true;
    f.deliver(&job).await.unwrap();
    assert_eq!(f.calendar_events(after).await, []);
    assert_eq!(f.catalog().await.len(), 1, "and keeps no tombstone for it");
}

/// A synced calendar, then five new events listed two a page, and a delivery of
/// `job-2` that dies on the second page; returns the log length before it, the new
/// events' ids and the cursor `job-1` left.
async fn crash_on_the_second_page(f: &Fixture) -> (usize, Vec<String>, CalendarCursor) {
    f.sync("job-1", Trigger::Manual).await;
    let start = f.cursor().await.expect("job-1 stored a cursor");
    f.fake.set_page_size(2);
    let new: Vec<String> = (1..=5)
        .map(|i| {
            f.fake.create_event(
                CAL,
                EventInput::all_day(&format!("Gig {i}"), "2026-06-01", "2026-06-02"),
            )
        })
        .collect();
    let before = f.log().await.len();
    f.fake.fail_next(1, Fault::Pass);
    f.fake.fail_next(1, Fault::ServerError);
    assert!(
        f.deliver(&f.job("job-2", Trigger::Notification))
            .await
            .is_err()
    );
    (before, new, start)
}

/// `job-2` delivered again, with the fake's request log cleared first.
async fn redeliver(f: &Fixture) -> SyncOperation {
    f.fake.clear_requests();
    let job = f.job("job-2", Trigger::Notification);
    f.deliver(&job).await.unwrap().expect("an operation")
}

/// The log after `before` is exactly one sync of the `new` events, gapless and
/// without a repeated id; items, catalog and cursor agree.
async fn assert_one_clean_sync(f: &Fixture, before: usize, new: &[String], op: &SyncOperation) {
    assert_eq!(op.status, OperationStatus::Completed);
    assert_eq!(op.metrics.synced, new.len() as u64);
    let ids: Vec<&String> = new.iter().collect();
    assert_eq!(f.calendar_events(before).await, pairs(EVENT_CREATED, &ids));
    let log = f.log().await;
    let names: Vec<&str> = log[before..].iter().map(|e| e.event()).collect();
    assert_eq!(names.first(), Some(&"sync.started"));
    assert_eq!(names.last(), Some(&"sync.completed"));
    assert_eq!(names.len(), new.len() + 2);
    let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=log.len() as u64).collect::<Vec<_>>());
    let unique: HashSet<&str> = log.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(unique.len(), log.len());
    assert_eq!(
        f.h.store.list_items("job-2").await.unwrap().len(),
        new.len()
    );
    assert_eq!(f.catalog().await.len(), new.len());
    assert_eq!(f.cursor().await, f.caught_up());
}

#[tokio::test]
async fn a_crash_between_pages_resumes_from_the_stored_page_without_loss_or_duplicates() {
    // GIVEN a delivery that died on the second page of five new events
    let f = Fixture::new(1).await;
    let (before, new, start) = crash_on_the_second_page(&f).await;
    // THEN the first page's two events are out, and the cursor is the sync token it
    // started from with the second page's token
    assert_eq!(
        f.calendar_events(before).await,
        pairs(EVENT_CREATED, &[&new[0], &new[1]])
    );
    let stored = f.cursor().await.unwrap();
    assert!(stored.page_token.is_some());
    assert_eq!(stored.sync_token, start.sync_token);
    assert_eq!(start.page_token, None);

    // WHEN the job is delivered again
    let op = redeliver(&f).await;

    // THEN it goes on from the stored page, with the same sync token, and the log has
    // every event once
    let first = &f.fake.requests()[0];
    assert!(
        first
            .query
            .contains(&("pageToken".into(), stored.page_token.clone().unwrap()))
    );
    assert!(
        first
            .query
            .contains(&("syncToken".into(), stored.sync_token.clone()))
    );
    assert_one_clean_sync(&f, before, &new, &op).await;
}

#[tokio::test]
async fn a_failure_while_publishing_a_page_keeps_the_cursor_before_that_page() {
    // GIVEN a synced calendar, then three new events listed two a page
    let f = Fixture::new(1).await;
    f.sync("job-1", Trigger::Manual).await;
    let start = f.cursor().await;
    f.fake.set_page_size(2);
    let new: Vec<String> = ["Soundcheck", "Gig", "Afterparty"]
        .map(|s| f.fake.create_event(CAL, rehearsal_named(s)))
        .into();
    let before = f.log().await.len();
    // WHEN the broadcast of the first page's events fails (sends: sync.started, then
    // the page's chunk)
    let queue = &f.h.broadcast_queue;
    queue.fail_send(queue.attempts() + 2);
    let job = f.job("job-2", Trigger::Notification);
    assert!(f.deliver(&job).await.is_err());
    // THEN the cursor has not moved past that page
    assert_eq!(f.cursor().await, start);
    // AND a redelivery publishes and records every event once
    let op = f.deliver(&job).await.unwrap().unwrap();
    assert_one_clean_sync(&f, before, &new, &op).await;
}

#[tokio::test]
async fn a_refused_page_token_lists_again_from_the_sync_token_without_duplicates() {
    // GIVEN a delivery that died on the second page, and Google refusing its page token
    let f = Fixture::new(1).await;
    let (before, new, _) = crash_on_the_second_page(&f).await;
    let stored = f.cursor().await.unwrap();
    f.fake.fail_next(1, Fault::Gone);
    // WHEN the job is delivered again
    let op = redeliver(&f).await;
    // THEN after the 410 it listed from the sync token alone, the first page's
    // events came again but made no second event
    let second = &f.fake.requests()[1];
    assert!(
        second
            .query
            .contains(&("syncToken".into(), stored.sync_token))
    );
    assert!(second.query.iter().all(|(k, _)| k != "pageToken"));
    assert_one_clean_sync(&f, before, &new, &op).await;
}

#[tokio::test]
async fn a_stale_sync_token_clears_the_cursor_and_a_full_sync_finds_every_change() {
    // GIVEN a synced calendar of four events
    let f = Fixture::new(1).await;
    let [a, b, c, d] = ["A", "B", "C", "D"].map(|s| {
        f.fake
            .create_event(CAL, EventInput::all_day(s, "2026-03-30", "2026-03-31"))
    });
    f.sync("job-1", Trigger::Manual).await.unwrap();
    let before = f.log().await.len();
    // WHEN A is cancelled, B deleted for good, C edited, E created, and Google
    // invalidates the sync token
    f.fake.cancel_event(CAL, &a);
    f.fake.delete_event(CAL, &b);
    f.fake
        .update_event(CAL, &c, |e| e.summary = Some("C (moved)".into()));
    let e = f
        .fake
        .create_event(CAL, EventInput::all_day("E", "2026-04-01", "2026-04-02"));
    f.fake.invalidate_sync_tokens();
    f.fake.clear_requests();
    let op = f.sync("job-2", Trigger::Notification).await.unwrap();

    // THEN after the 410 a full listing ran and found every change, D unchanged
    let requests = f.fake.requests();
    assert!(requests[0].query.iter().any(|(k, _)| k == "syncToken"));
    assert!(
        requests[1..]
            .iter()
            .all(|r| r.query.iter().all(|(k, _)| k != "syncToken"))
    );
    assert_eq!(op.metrics.synced, 4);
    let mut expected = pairs(EVENT_CANCELLED, &[&a]);
    expected.extend(pairs(EVENT_UPDATED, &[&c]));
    expected.extend(pairs(EVENT_CREATED, &[&e]));
    expected.extend(pairs(EVENT_CANCELLED, &[&b]));
    assert_eq!(f.calendar_events(before).await, expected);
    // AND B, which no listing shows any more, is called off by its catalog label
    let gone = f.data(EVENT_CANCELLED, &b).await;
    assert_eq!(
        (gone["summary"].clone(), gone["start"].clone()),
        (json!("B"), Value::Null)
    );
    // AND the catalog is C, D, E; the cursor the new sync token
    let ids: Vec<String> = f.catalog().await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, [c, d, e]);
    assert_eq!(f.cursor().await, f.caught_up());
}

#[tokio::test]
async fn a_storm_of_429s_completes_honouring_retry_after_without_sleeping() {
    // GIVEN a calendar whose next four requests answer 429 with Retry-After: 5
    let f = Fixture::new(6).await;
    let id = f.fake.create_event(CAL, rehearsal());
    f.fake.fail_next(4, Fault::rate_limited(Some("5")));
    // WHEN the source syncs
    let op = f.sync("job-1", Trigger::Manual).await.unwrap();
    // THEN it completed on the fifth attempt, having waited (on paper) 5 s each time
    assert_eq!(op.status, OperationStatus::Completed);
    assert_eq!(f.calendar_events(0).await, pairs(EVENT_CREATED, &[&id]));
    assert_eq!(f.fake.requests().len(), 5);
    assert_eq!(f.sleeper.delays(), [Duration::from_secs(5); 4]);
}

#[tokio::test]
async fn a_calendar_source_without_a_client_fails_with_a_clear_error() {
    let f = Fixture::new(1).await;
    let op =
        f.h.sync_worker()
            .run(&f.job("job-1", Trigger::Manual))
            .await;
    let op = op.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Failed);
    assert!(op.error.unwrap().contains("Google API clients"));
}

#[test]
fn cursors_round_trip_and_a_bare_token_is_a_sync_token() {
    let mid = CalendarCursor {
        sync_token: "CPDAlvWDx70CEPDAlvWDx70CGAU=".into(),
        page_token: Some("CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA".into()),
    };
    assert_eq!(CalendarCursor::decode(&mid.encode()), mid);
    let done = CalendarCursor::at("CPDAlvWDx70CEPDAlvWDx70CGAU=");
    assert_eq!(
        done.encode(),
        r#"{"sync_token":"CPDAlvWDx70CEPDAlvWDx70CGAU="}"#
    );
    assert_eq!(CalendarCursor::decode(&done.encode()), done);
    assert_eq!(
        CalendarCursor::decode("CPDAlvWDx70C"),
        CalendarCursor::at("CPDAlvWDx70C")
    );
    assert_eq!(
        CalendarCursor::decode("{\"x\":1}"),
        CalendarCursor::at("{\"x\":1}")
    );
}
