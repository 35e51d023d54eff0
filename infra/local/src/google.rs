//! The local stack against a fake of the Google APIs (`bandsync-local --google-fake`):
//! a newcomer sees Drive-shaped events without a Google account.
//!
//! The fake serves on loopback, seeded with a band folder (`Band/Charts`, `Band/Recordings`
//! and a few files). The band gets a Drive source on that folder; the scheduler opens a
//! watch channel on it through `changes.watch` with the stack's `/webhooks/google` as the
//! address, and the fake POSTs Google-shaped notifications there on every change. The
//! worker syncs through the same Drive client the Lambda uses.
//!
//! Changes are made through a small control API on the stack's HTTP port:
//!
//! - `POST /fake/drive/files` `{"name", "content"?, "parent"?, "mime_type"?}` → `{"id"}`
//!   (`parent` defaults to the band folder; `"folder": true` makes a folder);
//! - `PUT /fake/drive/files/{id}` `{"content"}`: new content;
//! - `POST /fake/drive/files/{id}/rename` `{"name"}`, `.../move` `{"parent"}`,
//!   `.../trash`, `.../untrash`; `DELETE /fake/drive/files/{id}`;
//! - `GET /fake/drive`: the ids of the seeded folders.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bandsync::google::apis::GoogleApis;
use bandsync::google::fake::FakeDrive;
use bandsync::model::{BandId, Source, SourceId, SourceKind};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// The bearer token the fake accepts (it checks one, as Google does).
pub const FAKE_TOKEN: &str = "ya29.local-fake-google";

/// The running fake and the ids of what it was seeded with.
#[derive(Clone)]
pub struct FakeGoogle {
    pub drive: Arc<FakeDrive>,
    /// The band folder the Drive source follows.
    pub band_folder: String,
    pub charts: String,
    pub recordings: String,
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
        Ok(Self {
            drive,
            band_folder,
            charts,
            recordings,
        })
    }

    pub fn base_url(&self) -> String {
        self.drive.base_url()
    }

    /// Per-band clients pointed at the fake.
    pub fn apis(&self) -> GoogleApis {
        self.drive.apis()
    }

    /// The band's Drive source on the seeded folder (cursor cleared: the fake's page
    /// tokens start over with each run, so the first pass lists the tree and compares it
    /// with the catalog).
    pub fn drive_source(&self, band: &BandId) -> Source {
        Source::new(
            band.clone(),
            SourceId::parse("drive").expect("a valid source id"),
            SourceKind::Drive,
            self.band_folder.clone(),
        )
    }

    /// The control API, to be mounted under `/fake`.
    pub fn control(&self) -> Router {
        Router::new()
            .route("/drive", get(seeded))
            .route("/drive/files", post(create))
            .route("/drive/files/{id}", put(update).delete(delete))
            .route("/drive/files/{id}/{action}", post(act))
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
        "base_url": g.base_url(),
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
