//! The Google sources' engines against in-memory doubles of their ports: no HTTP, the
//! pages exactly as a test writes them.

use crate::SourceFixture;
use async_trait::async_trait;
use bandsync::google::GoogleError;
use bandsync::google::calendar::{
    Event as CalendarEvent, EventDateTime, EventStatus, EventsPage, EventsQuery,
};
use bandsync::google::drive::{
    Change, ChangeType, ChangesPage, DriveFile, FOLDER_MIME_TYPE, FilesPage, PageEnd,
};
use bandsync::google::ports::{CalendarApi, DriveApi, SheetsApi, SourceApis};
use bandsync::google::sheets::ValueRange;
use bandsync::model::*;
use bandsync::ports::SourceStore;
use bandsync_testkit::*;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// A Drive whose folder listing and change pages are given, answered in order.
#[derive(Default)]
struct DriveDouble {
    start_token: String,
    listing: Vec<DriveFile>,
    pages: Mutex<VecDeque<ChangesPage>>,
    /// The page tokens `changes.list` was asked for.
    asked: Mutex<Vec<String>>,
}

#[async_trait]
impl DriveApi for DriveDouble {
    async fn get_start_page_token(&self, _drive_id: Option<&str>) -> Result<String, GoogleError> {
        Ok(self.start_token.clone())
    }

    async fn list_changes(
        &self,
        page_token: &str,
        _drive_id: Option<&str>,
    ) -> Result<ChangesPage, GoogleError> {
        self.asked.lock().unwrap().push(page_token.to_owned());
        let page = self.pages.lock().unwrap().pop_front();
        page.ok_or_else(|| GoogleError::Decode("no page left in the double".into()))
    }

    async fn list_folder(
        &self,
        folder_id: &str,
        _page_token: Option<&str>,
    ) -> Result<FilesPage, GoogleError> {
        let files = self
            .listing
            .iter()
            .filter(|f| f.parents.iter().any(|p| p == folder_id))
            .cloned()
            .collect();
        Ok(FilesPage {
            files,
            next_page_token: None,
        })
    }
}

/// A spreadsheet whose range reads the given rows, and the ranges it was asked for.
#[derive(Default)]
struct SheetsDouble {
    rows: Vec<Vec<String>>,
    asked: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl SheetsApi for SheetsDouble {
    async fn get_values(
        &self,
        spreadsheet_id: &str,
        range: &str,
    ) -> Result<ValueRange, GoogleError> {
        let asked = (spreadsheet_id.to_owned(), range.to_owned());
        self.asked.lock().unwrap().push(asked);
        Ok(ValueRange {
            range: format!("Sheet1!{range}"),
            major_dimension: "ROWS".into(),
            values: self.rows.clone(),
        })
    }
}

/// A calendar whose event pages are given, answered in order, and the queries (sync
/// token, page token) it was asked.
#[derive(Default)]
struct CalendarDouble {
    pages: Mutex<VecDeque<EventsPage>>,
    asked: Mutex<Vec<(Option<String>, Option<String>)>>,
}

#[async_trait]
impl CalendarApi for CalendarDouble {
    async fn list_events(
        &self,
        _calendar_id: &str,
        query: &EventsQuery,
    ) -> Result<EventsPage, GoogleError> {
        let asked = (query.sync_token.clone(), query.page_token.clone());
        self.asked.lock().unwrap().push(asked);
        let page = self.pages.lock().unwrap().pop_front();
        page.ok_or_else(|| GoogleError::Decode("no page left in the double".into()))
    }
}

/// A band's Google APIs: the doubles a test gives, none for the others.
#[derive(Default)]
struct Doubles {
    drive: Option<Arc<DriveDouble>>,
    sheets: Option<Arc<SheetsDouble>>,
    calendar: Option<Arc<CalendarDouble>>,
}

fn absent(api: &str) -> GoogleError {
    GoogleError::Config(format!("no {api} in this test"))
}

#[async_trait]
impl SourceApis for Doubles {
    async fn drive_api(&self, _band: &BandId) -> Result<Arc<dyn DriveApi>, GoogleError> {
        let drive = self.drive.clone().ok_or_else(|| absent("Drive"))?;
        Ok(drive)
    }

    async fn sheets_api(&self, _band: &BandId) -> Result<Arc<dyn SheetsApi>, GoogleError> {
        let sheets = self.sheets.clone().ok_or_else(|| absent("Sheets"))?;
        Ok(sheets)
    }

    async fn calendar_api(&self, _band: &BandId) -> Result<Arc<dyn CalendarApi>, GoogleError> {
        let calendar = self.calendar.clone().ok_or_else(|| absent("Calendar"))?;
        Ok(calendar)
    }
}

/// A source `google` of `kind` on `location`, stored.
async fn stored_source(h: &Harness, band: &BandId, kind: SourceKind, location: &str) -> Source {
    let source = Source::new(band.clone(), source_id("google"), kind, location);
    h.store.put_source(&source).await.unwrap();
    source
}

fn pdf(id: &str, name: &str, parent: &str, md5: &str) -> DriveFile {
    DriveFile {
        id: id.into(),
        name: name.into(),
        mime_type: "application/pdf".into(),
        parents: vec![parent.into()],
        trashed: false,
        md5_checksum: Some(md5.into()),
        modified_time: None,
        size: Some(3),
        version: Some(1),
    }
}

fn changed(file: DriveFile) -> Change {
    Change {
        change_type: ChangeType::File,
        removed: false,
        file_id: Some(file.id.clone()),
        time: t0(),
        file: Some(file),
    }
}

#[tokio::test]
async fn the_drive_engine_lists_then_follows_pages_to_the_last_token() {
    // GIVEN a Drive source on folder `F` holding one file, and a Drive whose changes
    // come in two pages: a new file, then an edit of the first one
    let h = Harness::new();
    let band = h.add_band("demo").await;
    let source = stored_source(&h, &band, SourceKind::Drive, "F").await;
    let folder = DriveFile {
        mime_type: FOLDER_MIME_TYPE.into(),
        md5_checksum: None,
        size: None,
        ..pdf("F", "Band", "root", "")
    };
    let drive = Arc::new(DriveDouble {
        start_token: "start-1".into(),
        listing: vec![folder, pdf("a", "a.pdf", "F", "md5-a")],
        pages: Mutex::new(VecDeque::from([
            ChangesPage {
                changes: vec![changed(pdf("b", "b.pdf", "F", "md5-b"))],
                end: PageEnd::More("page-2".into()),
            },
            ChangesPage {
                changes: vec![changed(pdf("a", "a.pdf", "F", "md5-a2"))],
                end: PageEnd::Done("start-2".into()),
            },
        ])),
        ..DriveDouble::default()
    });
    let worker = h.sync_worker().with_google(Arc::new(Doubles {
        drive: Some(drive.clone()),
        ..Doubles::default()
    }));
    let f = SourceFixture {
        h,
        band,
        source: source.id,
    };
    let job = |id: &str| f.job(id, Trigger::Manual);
    let cursor = || async {
        let stored = f.h.store.get_source(&f.band, &f.source).await.unwrap();
        stored.unwrap().cursor
    };

    // WHEN it syncs for the first time
    worker.run(&job("job-1")).await.unwrap().unwrap();
    // THEN the listing created the file and the start token is the cursor
    assert_eq!(
        f.file_events(0).await,
        [("file.created".to_owned(), "a.pdf".to_owned())]
    );
    assert_eq!(cursor().await.as_deref(), Some("start-1"));

    // WHEN it syncs again
    let seen = f.log().await.len();
    let op = worker.run(&job("job-2")).await.unwrap().unwrap();
    // THEN it followed the first page's token to the last page, whose token is the
    // new cursor, and published both pages' changes
    assert_eq!(*drive.asked.lock().unwrap(), ["start-1", "page-2"]);
    assert_eq!(cursor().await.as_deref(), Some("start-2"));
    assert_eq!(
        f.file_events(seen).await,
        [
            ("file.created".to_owned(), "b.pdf".to_owned()),
            ("file.updated".to_owned(), "a.pdf".to_owned())
        ]
    );
    assert_eq!(op.metrics.synced, 2);
}

#[tokio::test]
async fn the_setlist_engine_reads_its_range_and_publishes_the_rows_once() {
    // GIVEN a sheet source on range `A:C` of spreadsheet `1Sheet`, which reads a header
    // and two songs
    let h = Harness::new();
    let band = h.add_band("demo").await;
    let source = stored_source(&h, &band, SourceKind::Sheet, "1Sheet#A:C").await;
    let row = |cells: &[&str]| cells.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    let sheets = Arc::new(SheetsDouble {
        rows: vec![
            row(&["Song", "Key"]),
            row(&["Intro", "E"]),
            row(&["Outro", "A"]),
        ],
        ..SheetsDouble::default()
    });
    let worker = h.sync_worker().with_google(Arc::new(Doubles {
        sheets: Some(sheets.clone()),
        ..Doubles::default()
    }));
    let f = SourceFixture {
        h,
        band,
        source: source.id,
    };

    // WHEN it syncs, then a notification comes with the sheet unchanged
    worker
        .run(&f.job("job-1", Trigger::Manual))
        .await
        .unwrap()
        .unwrap();
    let again = worker
        .run(&f.job("job-2", Trigger::Notification))
        .await
        .unwrap();

    // THEN the range was read twice, one setlist.updated added both songs, and the
    // unchanged read recorded no operation
    let asked = sheets.asked.lock().unwrap().clone();
    let read = ("1Sheet".to_owned(), "A:C".to_owned());
    assert_eq!(asked, [read.clone(), read]);
    let updates: Vec<Event> = f
        .log()
        .await
        .into_iter()
        .filter(|e| e.event() == "setlist.updated")
        .collect();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].data()["initial"], true);
    assert_eq!(updates[0].data()["rows"], 2);
    assert_eq!(updates[0].data()["added"].as_array().map(Vec::len), Some(2));
    assert!(again.is_none());
}

/// A live calendar event `id` named `summary` at its `etag`.
fn gig(id: &str, summary: &str, etag: &str) -> CalendarEvent {
    CalendarEvent {
        id: id.into(),
        summary: Some(summary.into()),
        start: Some(EventDateTime::date("2026-12-24")),
        updated: Some(t0()),
        etag: Some(etag.into()),
        ..CalendarEvent::default()
    }
}

fn page(items: Vec<CalendarEvent>, next_page: Option<&str>, next_sync: Option<&str>) -> EventsPage {
    EventsPage {
        items,
        next_page_token: next_page.map(str::to_owned),
        next_sync_token: next_sync.map(str::to_owned),
    }
}

#[tokio::test]
async fn the_calendar_engine_lists_every_page_then_follows_its_sync_token() {
    // GIVEN a Calendar source, and a calendar whose full listing is two pages of one
    // event each, then whose changes since that listing edit one and cancel the other
    let h = Harness::new();
    let band = h.add_band("demo").await;
    let source = stored_source(&h, &band, SourceKind::Calendar, "band@calendar").await;
    let cancelled = CalendarEvent {
        status: EventStatus::Cancelled,
        ..gig("g2", "Gig", "etag-2b")
    };
    let calendar = Arc::new(CalendarDouble {
        pages: Mutex::new(VecDeque::from([
            page(vec![gig("g1", "Rehearsal", "etag-1")], Some("page-2"), None),
            page(vec![gig("g2", "Gig", "etag-2")], None, Some("sync-1")),
            page(
                vec![gig("g1", "Rehearsal", "etag-1b"), cancelled],
                None,
                Some("sync-2"),
            ),
        ])),
        ..CalendarDouble::default()
    });
    let worker = h.sync_worker().with_google(Arc::new(Doubles {
        calendar: Some(calendar.clone()),
        ..Doubles::default()
    }));
    let f = SourceFixture {
        h,
        band,
        source: source.id,
    };

    // WHEN it syncs twice
    worker.run(&f.job("job-1", Trigger::Manual)).await.unwrap();
    let seen = f.log().await.len();
    worker.run(&f.job("job-2", Trigger::Manual)).await.unwrap();

    // THEN the full listing followed its page token, the second sync asked from the
    // listing's sync token, and the events became created, then updated and cancelled
    let asked = calendar.asked.lock().unwrap().clone();
    let sync = |token: &str| Some(token.to_owned());
    assert_eq!(
        asked,
        [(None, None), (None, sync("page-2")), (sync("sync-1"), None)]
    );
    let calendar_events = |log: Vec<Event>| -> Vec<(String, String)> {
        log.into_iter()
            .filter(|e| e.event().starts_with("calendar."))
            .map(|e| {
                let id = e.data()["event_id"].as_str().unwrap().to_owned();
                (e.event().to_owned(), id)
            })
            .collect()
    };
    let log = f.log().await;
    let named = |name: &str, id: &str| (name.to_owned(), id.to_owned());
    assert_eq!(
        calendar_events(log[..seen].to_vec()),
        [
            named("calendar.event.created", "g1"),
            named("calendar.event.created", "g2")
        ]
    );
    assert_eq!(
        calendar_events(log[seen..].to_vec()),
        [
            named("calendar.event.updated", "g1"),
            named("calendar.event.cancelled", "g2")
        ]
    );
}
