//! The local stack against fakes of the Google APIs (`bandsync-local --google-fake`):
//! a newcomer sees Drive-, Sheets- and Calendar-shaped events without a Google account.
//!
//! The fakes serve on loopback (Drive on the given address, Calendar and Sheets on free
//! ports), seeded with a band folder (`Band/Charts`, `Band/Recordings` and a few files),
//! a setlist spreadsheet and a band calendar with a rehearsal and a gig. The band gets
//! three sources: `drive` (the folder), `setlist` (the sheet) and `calendar`. The
//! scheduler opens a watch channel on each (`changes.watch`, `files.watch`,
//! `events.watch`) with the stack's `/webhooks/google` as the address, and the fakes POST
//! Google-shaped notifications there on every change. The worker syncs through the same
//! clients the Lambda uses.
//!
//! Changes are made through a small control API on the stack's HTTP port:
//!
//! - `POST /fake/drive/files` `{"name", "content"?, "parent"?, "mime_type"?}` → `{"id"}`
//!   (`parent` defaults to the band folder; `"folder": true` makes a folder);
//! - `PUT /fake/drive/files/{id}` `{"content"}`: new content;
//! - `POST /fake/drive/files/{id}/rename` `{"name"}`, `.../move` `{"parent"}`,
//!   `.../trash`, `.../untrash`; `DELETE /fake/drive/files/{id}`;
//! - `PUT /fake/setlist` `{"rows": [["Song", "Key"], ["So What", "Dm"], …]}`: the
//!   setlist sheet's cells (the first row is the header);
//! - `POST /fake/calendar/events` `{"summary", "start", "end", "location"?}` → `{"id"}`
//!   (`start`/`end` RFC 3339 times, or `yyyy-mm-dd` for all-day events);
//!   `PUT /fake/calendar/events/{id}` `{"summary"?, "location"?}`;
//!   `DELETE /fake/calendar/events/{id}` cancels it;
//! - `GET /fake/drive`: the ids of what was seeded.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bandsync::google::apis::{GoogleApis, GoogleUrls};
use bandsync::model::{BandId, Source, SourceId, SourceKind};
use bandsync_google_fake::FakeDrive;
use bandsync_google_fake::FakeSheets;
use bandsync_google_fake::calendar::{EventInput, FakeCalendar};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// The bearer token the fake accepts (it checks one, as Google does).
pub const FAKE_TOKEN: &str = "ya29.local-fake-google";

/// The band calendar of the fake.
pub const CALENDAR_ID: &str = "band-demo@group.calendar.google.com";

/// The setlist's sheet (tab) name.
pub const SETLIST_TAB: &str = "Setlist";

/// The running fakes and the ids of what they were seeded with.
#[derive(Clone)]
pub struct FakeGoogle {
    pub drive: Arc<FakeDrive>,
    pub calendar: Arc<FakeCalendar>,
    pub sheets: Arc<FakeSheets>,
    /// The band folder the Drive source follows.
    pub band_folder: String,
    pub charts: String,
    pub recordings: String,
    /// The setlist spreadsheet (also a Drive file, outside the band folder).
    pub setlist: String,
}

impl FakeGoogle {
    /// Start on `addr` (port 0: any free port) and seed the demo content.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let drive = Arc::new(FakeDrive::start_on(addr, FAKE_TOKEN).await?);
        let root = drive.root_id();
        let band_folder = drive.create_folder(&root, "Band");
        let charts = drive.create_folder(&band_folder, "Charts");
        let recordings = drive.create_folder(&band_folder, "Recordings");
        drive.create_file(&charts, "Blue Bossa.pdf", "application/pdf", b"%PDF chart");
        drive.create_file(&charts, "So What.pdf", "application/pdf", b"%PDF so what");
        drive.create_file(&recordings, "rehearsal-1.mp3", "audio/mpeg", b"ID3 take 1");
        drive.create_file(&root, "not-the-band.txt", "text/plain", b"outside the tree");
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let sheets = Arc::new(FakeSheets::start_on(loopback, FAKE_TOKEN).await?);
        let setlist = drive.create_file(
            &root,
            "Setlist",
            "application/vnd.google-apps.spreadsheet",
            b"",
        );
        sheets.create_spreadsheet(&setlist, &[SETLIST_TAB]);
        sheets.set_rows(
            &setlist,
            SETLIST_TAB,
            &[
                &["Song", "Key", "Notes"],
                &["Blue Bossa", "Cm", ""],
                &["So What", "Dm", "modal"],
            ],
        );
        sheets.set_push(drive.push().clone());
        let calendar = Arc::new(FakeCalendar::start_on(loopback, FAKE_TOKEN).await?);
        calendar.add_calendar(CALENDAR_ID);
        calendar.create_event(
            CALENDAR_ID,
            EventInput::timed(
                "Rehearsal",
                "2026-12-03T19:00:00+01:00",
                "2026-12-03T22:00:00+01:00",
            )
            .with_location("Studio B"),
        );
        calendar.create_event(
            CALENDAR_ID,
            EventInput::all_day("Gig at the Blue Note", "2026-12-12", "2026-12-13"),
        );
        Ok(Self {
            drive,
            calendar,
            sheets,
            band_folder,
            charts,
            recordings,
            setlist,
        })
    }

    pub fn base_url(&self) -> String {
        self.drive.base_url()
    }

    /// Per-band clients pointed at the fakes.
    pub fn apis(&self) -> anyhow::Result<GoogleApis> {
        let urls = GoogleUrls {
            drive: self.drive.base_url(),
            calendar: self.calendar.base_url(),
            sheets: self.sheets.base_url(),
        };
        Ok(GoogleApis::with_static_token(urls, FAKE_TOKEN)?)
    }

    /// The band's sources on the seeded content: `drive`, `setlist`, `calendar` (cursors
    /// cleared: the fakes start over with each run, so the first pass lists everything
    /// and compares it with what the store kept).
    pub fn sources(&self, band: &BandId) -> Vec<Source> {
        [
            ("drive", SourceKind::Drive, self.band_folder.clone()),
            ("setlist", SourceKind::Sheet, self.setlist.clone()),
            ("calendar", SourceKind::Calendar, CALENDAR_ID.to_owned()),
        ]
        .into_iter()
        .map(|(id, kind, location)| {
            let id = SourceId::parse(id).expect("a valid source id");
            Source::new(band.clone(), id, kind, location)
        })
        .collect()
    }

    /// The control API, to be mounted under `/fake`.
    pub fn control(&self) -> Router {
        Router::new()
            .route("/drive", get(seeded))
            .route("/drive/files", post(create))
            .route("/drive/files/{id}", put(update).delete(delete))
            .route("/drive/files/{id}/{action}", post(act))
            .route("/setlist", put(setlist))
            .route("/calendar/events", post(new_event))
            .route(
                "/calendar/events/{id}",
                put(edit_event).delete(cancel_event),
            )
            .with_state(self.clone())
    }
}

#[derive(Deserialize)]
struct NewFile {
    name: String,
    #[serde(default)]
    content: String,
    parent: Option<String>,
    mime_type: Option<String>,
    #[serde(default)]
    folder: bool,
}

#[derive(Deserialize, Default)]
struct Edit {
    content: Option<String>,
    name: Option<String>,
    parent: Option<String>,
}

fn bad(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// The fake panics on an id it does not have (a test bug there); here it is a 404.
fn unknown(g: &FakeGoogle, id: &str) -> Option<Response> {
    let listed = g.drive.file_ids();
    (!listed.iter().any(|f| f == id))
        .then(|| bad(StatusCode::NOT_FOUND, "not_found", format!("no file {id}")))
}

async fn seeded(State(g): State<FakeGoogle>) -> Response {
    Json(json!({
        "band_folder": g.band_folder, "charts": g.charts, "recordings": g.recordings,
        "setlist": g.setlist, "calendar": CALENDAR_ID, "base_url": g.base_url(),
    }))
    .into_response()
}

async fn create(State(g): State<FakeGoogle>, body: Option<Json<NewFile>>) -> Response {
    let Some(Json(f)) = body else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "expected JSON {\"name\", \"content\"?, \"parent\"?, \"mime_type\"?, \"folder\"?}",
        );
    };
    let parent = f.parent.unwrap_or_else(|| g.band_folder.clone());
    if let Some(r) = unknown(&g, &parent) {
        return r;
    }
    if f.name.is_empty() || f.name.contains('/') {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            "a name is required and has no '/'",
        );
    }
    let id = if f.folder {
        g.drive.create_folder(&parent, &f.name)
    } else {
        let mime = f
            .mime_type
            .unwrap_or_else(|| "application/octet-stream".into());
        g.drive
            .create_file(&parent, &f.name, &mime, f.content.as_bytes())
    };
    (StatusCode::CREATED, Json(json!({"id": id}))).into_response()
}

async fn update(
    State(g): State<FakeGoogle>,
    Path(id): Path<String>,
    body: Option<Json<Edit>>,
) -> Response {
    if let Some(r) = unknown(&g, &id) {
        return r;
    }
    let Some(content) = body.and_then(|Json(e)| e.content) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "expected JSON {\"content\"}",
        );
    };
    g.drive.update_content(&id, content.as_bytes());
    StatusCode::NO_CONTENT.into_response()
}

async fn delete(State(g): State<FakeGoogle>, Path(id): Path<String>) -> Response {
    if let Some(r) = unknown(&g, &id) {
        return r;
    }
    g.drive.delete(&id);
    StatusCode::NO_CONTENT.into_response()
}

async fn act(
    State(g): State<FakeGoogle>,
    Path((id, action)): Path<(String, String)>,
    body: Option<Json<Edit>>,
) -> Response {
    if let Some(r) = unknown(&g, &id) {
        return r;
    }
    let edit = body.map(|Json(e)| e).unwrap_or_default();
    match (action.as_str(), edit) {
        ("rename", Edit { name: Some(n), .. }) if !n.is_empty() && !n.contains('/') => {
            g.drive.rename(&id, &n)
        }
        (
            "move",
            Edit {
                parent: Some(p), ..
            },
        ) => {
            if let Some(r) = unknown(&g, &p) {
                return r;
            }
            g.drive.move_to(&id, &p)
        }
        ("trash", _) => g.drive.trash(&id),
        ("untrash", _) => g.drive.untrash(&id),
        ("rename" | "move", _) => {
            return bad(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "rename takes {\"name\"}, move takes {\"parent\"}",
            );
        }
        _ => {
            return bad(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no action {action}"),
            );
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct Rows {
    rows: Vec<Vec<String>>,
}

async fn setlist(State(g): State<FakeGoogle>, body: Option<Json<Rows>>) -> Response {
    let Some(Json(Rows { rows })) = body else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "expected JSON {\"rows\": [[\"Song\", …], …]}",
        );
    };
    let rows: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r.iter().map(String::as_str).collect())
        .collect();
    let rows: Vec<&[&str]> = rows.iter().map(Vec::as_slice).collect();
    g.sheets.set_rows(&g.setlist, SETLIST_TAB, &rows);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct NewEvent {
    summary: String,
    start: String,
    end: String,
    location: Option<String>,
}

/// `yyyy-mm-dd` is a date; anything else must be an RFC 3339 time.
fn is_date(s: &str) -> bool {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

async fn new_event(State(g): State<FakeGoogle>, body: Option<Json<NewEvent>>) -> Response {
    let Some(Json(e)) = body else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "expected JSON {\"summary\", \"start\", \"end\", \"location\"?}",
        );
    };
    let times = [&e.start, &e.end].map(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok());
    let mut input = match (is_date(&e.start) && is_date(&e.end), times) {
        (true, _) => EventInput::all_day(&e.summary, &e.start, &e.end),
        (false, [true, true]) => EventInput::timed(&e.summary, &e.start, &e.end),
        _ => {
            return bad(
                StatusCode::BAD_REQUEST,
                "invalid_time",
                "start and end are both yyyy-mm-dd dates or both RFC 3339 times",
            );
        }
    };
    if let Some(location) = &e.location {
        input = input.with_location(location);
    }
    let id = g.calendar.create_event(CALENDAR_ID, input);
    (StatusCode::CREATED, Json(json!({"id": id}))).into_response()
}

#[derive(Deserialize)]
struct EventEdit {
    summary: Option<String>,
    location: Option<String>,
}

fn unknown_event(g: &FakeGoogle, id: &str) -> Option<Response> {
    (!g.calendar.has_event(CALENDAR_ID, id))
        .then(|| bad(StatusCode::NOT_FOUND, "not_found", format!("no event {id}")))
}

async fn edit_event(
    State(g): State<FakeGoogle>,
    Path(id): Path<String>,
    body: Option<Json<EventEdit>>,
) -> Response {
    if let Some(r) = unknown_event(&g, &id) {
        return r;
    }
    let Some(Json(edit)) = body else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "expected JSON {\"summary\"?, \"location\"?}",
        );
    };
    g.calendar.update_event(CALENDAR_ID, &id, |e| {
        if let Some(s) = edit.summary {
            e.summary = Some(s);
        }
        if let Some(l) = edit.location {
            e.location = Some(l);
        }
    });
    StatusCode::NO_CONTENT.into_response()
}

async fn cancel_event(State(g): State<FakeGoogle>, Path(id): Path<String>) -> Response {
    if let Some(r) = unknown_event(&g, &id) {
        return r;
    }
    g.calendar.cancel_event(CALENDAR_ID, &id);
    StatusCode::NO_CONTENT.into_response()
}
