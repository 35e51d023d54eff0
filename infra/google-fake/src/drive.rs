//! A local fake of the Google Drive API v3 endpoints the Drive client uses, for tests
//! and (later) for the local stack without a Google account.
//!
//! [`FakeDrive::start`] serves on `127.0.0.1:<free port>`:
//!
//! - `GET /drive/v3/changes/startPageToken` → `{"kind":"drive#startPageToken",
//!   "startPageToken":"…"}`;
//! - `GET /drive/v3/changes?pageToken=…` → `{"kind":"drive#changeList","changes":[…],
//!   "nextPageToken"|"newStartPageToken":…}`, honouring `pageSize`, `includeRemoved`,
//!   `driveId` and `includeItemsFromAllDrives`;
//! - `GET /drive/v3/files?q=…` → `{"kind":"drive#fileList","incompleteSearch":false,
//!   "files":[…],"nextPageToken":…}`, for queries made of `'<id>' in parents` and
//!   `trashed=true|false` clauses joined by `and` (anything else is a 400, as an
//!   unsupported query would be from Google).
//!
//! Like Google it applies the `fields` partial-response mask (`a,b(c,d),e/f`, `*`), so
//! a client that forgets to ask for a field does not get it; without `fields` it
//! returns the full resources it models. int64 fields (`size`, `version`) are decimal
//! strings, times RFC 3339 with milliseconds.
//!
//! The file tree lives in memory and is changed through methods (create, update, rename,
//! move, trash, untrash, delete). Each change is recorded against a monotonically
//! increasing change number; page tokens are those numbers. As Drive does, a listing
//! shows each file once, at its latest change, with its state *now*; a file deleted for
//! good shows as `removed: true` without `file`; trashing or deleting a folder does the
//! same to everything under it. Files created under a shared drive
//! ([`FakeDrive::create_shared_drive`]) carry its `driveId`.
//!
//! Every request needs `Authorization: Bearer <token>`; a missing or wrong one gets
//! Google's 401 `authError`. Faults can be queued ([`FakeDrive::fail_next`]): the next
//! requests answer 429 (with or without `Retry-After`), 5xx, 410 or malformed JSON,
//! whatever they asked, before the token is even checked. Every request is recorded
//! ([`FakeDrive::requests`]) so tests can check what a client sent.
//!
//! What it does not model: real Drive page tokens never expire (410 here only comes from
//! an injected fault, shaped like the 410 Google Calendar documents for a stale sync
//! token); field masks are not validated against the schema (Google answers 400 to an
//! unknown field); ordering of `files.list` is creation order.
//!
//! The mutating methods panic on an id the fake does not have: that is a bug in the
//! test using it, not a condition to handle.

mod query;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::push::PushHub;
use crate::server::{
    Fault, Gate, Params, RecordedRequest, Served, answer, flag, google_error, invalid_parameter,
    param, rfc3339, status_error,
};
use query::{FilesQuery, parse_files_query};

/// The folder MIME type, and the prefix of Google-native types (no binary content, so
/// no `md5Checksum` or `size`).
const FOLDER: &str = bandsync::google::drive::FOLDER_MIME_TYPE;
const NATIVE_PREFIX: &str = "application/vnd.google-apps.";

/// Drive's default and largest `pageSize` for both list calls.
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// The hex MD5 of `bytes`, as Drive's `md5Checksum`.
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(bytes))
}

#[derive(Debug, Clone)]
struct FakeFile {
    id: String,
    name: String,
    mime_type: String,
    parents: Vec<String>,
    trashed: bool,
    explicitly_trashed: bool,
    md5: Option<String>,
    size: Option<u64>,
    version: u64,
    created_time: DateTime<Utc>,
    modified_time: DateTime<Utc>,
    drive_id: Option<String>,
    /// Creation order, for listing.
    seq: u64,
}

impl FakeFile {
    fn is_folder(&self) -> bool {
        self.mime_type == FOLDER
    }

    fn to_json(&self) -> Value {
        let mut f = Map::new();
        f.insert("kind".into(), json!("drive#file"));
        f.insert("id".into(), json!(self.id));
        f.insert("name".into(), json!(self.name));
        f.insert("mimeType".into(), json!(self.mime_type));
        if !self.parents.is_empty() {
            f.insert("parents".into(), json!(self.parents));
        }
        f.insert("trashed".into(), json!(self.trashed));
        f.insert("explicitlyTrashed".into(), json!(self.explicitly_trashed));
        f.insert("createdTime".into(), json!(rfc3339(self.created_time)));
        f.insert("modifiedTime".into(), json!(rfc3339(self.modified_time)));
        f.insert("version".into(), json!(self.version.to_string()));
        if let Some(md5) = &self.md5 {
            f.insert("md5Checksum".into(), json!(md5));
        }
        if let Some(size) = self.size {
            f.insert("size".into(), json!(size.to_string()));
        }
        if let Some(drive_id) = &self.drive_id {
            f.insert("driveId".into(), json!(drive_id));
        }
        Value::Object(f)
    }
}

/// A file's latest change.
#[derive(Debug, Clone)]
struct LogEntry {
    file_id: String,
    time: DateTime<Utc>,
    /// Kept for files deleted since, so `driveId` filtering still works for them.
    drive_id: Option<String>,
}

struct DriveState {
    gate: Gate,
    page_size: usize,
    /// The number the next change gets; `startPageToken` answers it.
    next_change: u64,
    /// change number -> entry; a file has only its latest change here.
    log: BTreeMap<u64, LogEntry>,
    latest: HashMap<String, u64>,
    files: HashMap<String, FakeFile>,
    root: String,
    next_id: u64,
    clock: DateTime<Utc>,
    /// Watch channels (`changes.watch`, `files.watch`) and their notifications.
    hub: PushHub,
}

impl DriveState {
    fn new(token: &str, hub: PushHub) -> Self {
        let clock = DateTime::from_timestamp(1_772_366_400, 0).expect("a valid timestamp");
        let root = "0AFakeMyDriveRoot".to_owned();
        let mut state = Self {
            gate: Gate::new(token),
            page_size: MAX_PAGE_SIZE,
            next_change: 1,
            log: BTreeMap::new(),
            latest: HashMap::new(),
            files: HashMap::new(),
            root: root.clone(),
            next_id: 1,
            clock,
            hub,
        };
        state.insert_root(root, "My Drive", None);
        state
    }

    fn insert_root(&mut self, id: String, name: &str, drive_id: Option<String>) {
        let seq = self.take_id_number();
        self.files.insert(
            id.clone(),
            FakeFile {
                id,
                name: name.to_owned(),
                mime_type: FOLDER.to_owned(),
                parents: Vec::new(),
                trashed: false,
                explicitly_trashed: false,
                md5: None,
                size: None,
                version: 1,
                created_time: self.clock,
                modified_time: self.clock,
                drive_id,
                seq,
            },
        );
    }

    fn take_id_number(&mut self) -> u64 {
        let n = self.next_id;
        self.next_id += 1;
        n
    }

    fn tick(&mut self) -> DateTime<Utc> {
        self.clock += TimeDelta::seconds(1);
        self.clock
    }

    fn resolve<'a>(&'a self, id: &'a str) -> &'a str {
        if id == "root" { &self.root } else { id }
    }

    fn expect_exists(&self, id: &str) {
        assert!(
            self.files.contains_key(id),
            "the fake Drive has no file {id:?}"
        );
    }

    fn file_mut(&mut self, id: &str) -> &mut FakeFile {
        self.files
            .get_mut(id)
            .unwrap_or_else(|| panic!("the fake Drive has no file {id:?}"))
    }

    /// Record `id`'s latest change (dropping its earlier one) at the current clock.
    fn record(&mut self, id: &str) {
        let number = self.next_change;
        self.next_change += 1;
        if let Some(old) = self.latest.insert(id.to_owned(), number) {
            self.log.remove(&old);
        }
        // Called before a deleted file leaves `files`, so its drive is still known.
        let drive_id = self.files.get(id).and_then(|f| f.drive_id.clone());
        self.log.insert(
            number,
            LogEntry {
                file_id: id.to_owned(),
                time: self.clock,
                drive_id,
            },
        );
        self.hub.notify("changes", "change", None);
        let state = if self.files.contains_key(id) {
            "update"
        } else {
            "remove"
        };
        self.hub
            .notify(&format!("file:{id}"), state, Some("content,properties"));
    }

    fn create(&mut self, parent: &str, name: &str, mime_type: &str, content: &[u8]) -> String {
        let parent = self.resolve(parent).to_owned();
        let drive_id = self
            .files
            .get(&parent)
            .unwrap_or_else(|| panic!("the fake Drive has no folder {parent:?}"))
            .drive_id
            .clone();
        let seq = self.take_id_number();
        let id = format!("1FakeFile{seq:08}");
        let now = self.tick();
        let binary = !mime_type.starts_with(NATIVE_PREFIX);
        self.files.insert(
            id.clone(),
            FakeFile {
                id: id.clone(),
                name: name.to_owned(),
                mime_type: mime_type.to_owned(),
                parents: vec![parent],
                trashed: false,
                explicitly_trashed: false,
                md5: binary.then(|| md5_hex(content)),
                size: binary.then_some(content.len() as u64),
                version: 1,
                created_time: now,
                modified_time: now,
                drive_id,
                seq,
            },
        );
        self.record(&id);
        id
    }

    /// `id` and everything under it, parents before children.
    fn subtree(&self, id: &str) -> Vec<String> {
        let mut out = vec![id.to_owned()];
        let mut i = 0;
        while i < out.len() {
            let current = out[i].clone();
            let mut children: Vec<&FakeFile> = self
                .files
                .values()
                .filter(|f| f.parents.contains(&current))
                .collect();
            children.sort_by_key(|f| f.seq);
            out.extend(children.into_iter().map(|f| f.id.clone()));
            i += 1;
        }
        out
    }

    fn visible(&self, drive_id: Option<&str>, all_drives: bool, entry_drive: Option<&str>) -> bool {
        match drive_id {
            Some(wanted) => entry_drive == Some(wanted),
            None => all_drives || entry_drive.is_none(),
        }
    }
}

type Shared = Arc<Mutex<DriveState>>;

fn lock(state: &Shared) -> MutexGuard<'_, DriveState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running fake Drive API. Stops serving when dropped.
pub struct FakeDrive {
    state: Shared,
    server: Served,
    hub: PushHub,
}

impl std::fmt::Debug for FakeDrive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDrive")
            .field("addr", &self.server.addr())
            .finish_non_exhaustive()
    }
}

impl FakeDrive {
    /// Serve on 127.0.0.1 on a free port, accepting `Bearer <token>`.
    pub async fn start(token: &str) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), token).await
    }

    /// Serve on `addr` (the local stack picks a fixed port).
    pub async fn start_on(addr: SocketAddr, token: &str) -> std::io::Result<Self> {
        let hub = PushHub::new();
        let state: Shared = Arc::new(Mutex::new(DriveState::new(token, hub.clone())));
        let app = Router::new()
            .route("/drive/v3/changes/startPageToken", get(start_page_token))
            .route("/drive/v3/changes", get(changes_list))
            .route("/drive/v3/changes/watch", post(changes_watch))
            .route("/drive/v3/files", get(files_list))
            .route("/drive/v3/files/{file_id}/watch", post(files_watch))
            .route("/drive/v3/channels/stop", post(channels_stop))
            .fallback(not_found)
            .with_state(state.clone());
        let server = Served::bind(addr, app, "Drive").await?;
        Ok(Self { state, server, hub })
    }

    /// Per-band clients pointed at this fake, with its token for every band.
    pub fn apis(&self) -> bandsync::google::apis::GoogleApis {
        let token = lock(&self.state).gate.token().to_owned();
        let urls = bandsync::google::apis::GoogleUrls::all_at(&self.base_url());
        bandsync::google::apis::GoogleApis::with_static_token(urls, &token)
            .expect("the HTTPS client builds")
    }

    /// The watch channels opened on this fake and the notifications sent.
    pub fn push(&self) -> &PushHub {
        &self.hub
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:<port>`: the base URL for [`bandsync::google::drive::DriveClient::new`].
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The most entries a list page holds, whatever `pageSize` asks (default 1000).
    pub fn set_page_size(&self, page_size: usize) {
        lock(&self.state).page_size = page_size.clamp(1, MAX_PAGE_SIZE);
    }

    /// The next `n` requests answer `fault` (after any already queued).
    pub fn fail_next(&self, n: usize, fault: Fault) {
        lock(&self.state).gate.fail_next(n, fault);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).gate.requests()
    }

    pub fn clear_requests(&self) {
        lock(&self.state).gate.clear_requests();
    }

    /// What `changes.getStartPageToken` answers now.
    pub fn current_token(&self) -> String {
        lock(&self.state).next_change.to_string()
    }

    /// The ids of every file and folder (roots included), in creation order.
    pub fn file_ids(&self) -> Vec<String> {
        let state = lock(&self.state);
        let mut files: Vec<&FakeFile> = state.files.values().collect();
        files.sort_by_key(|f| f.seq);
        files.into_iter().map(|f| f.id.clone()).collect()
    }

    /// The id of My Drive's root folder (`root` is accepted as an alias).
    pub fn root_id(&self) -> String {
        lock(&self.state).root.clone()
    }

    /// A new shared drive; its id is also the id of its root folder.
    pub fn create_shared_drive(&self, name: &str) -> String {
        let mut state = lock(&self.state);
        let n = state.take_id_number();
        let id = format!("0AFakeDrive{n:08}");
        state.insert_root(id.clone(), name, Some(id.clone()));
        id
    }

    pub fn create_folder(&self, parent: &str, name: &str) -> String {
        lock(&self.state).create(parent, name, FOLDER, b"")
    }

    /// A file with `content` (Google-native types, `application/vnd.google-apps.*`,
    /// get no `md5Checksum` or `size`, as in Drive).
    pub fn create_file(&self, parent: &str, name: &str, mime_type: &str, content: &[u8]) -> String {
        lock(&self.state).create(parent, name, mime_type, content)
    }

    /// New content: new checksum, size, modifiedTime and version.
    pub fn update_content(&self, id: &str, content: &[u8]) {
        let mut state = lock(&self.state);
        let now = state.tick();
        let file = state.file_mut(id);
        if !file.mime_type.starts_with(NATIVE_PREFIX) {
            file.md5 = Some(md5_hex(content));
            file.size = Some(content.len() as u64);
        }
        file.modified_time = now;
        file.version += 1;
        state.record(id);
    }

    /// A new name (metadata only: version grows, modifiedTime stays).
    pub fn rename(&self, id: &str, name: &str) {
        let mut state = lock(&self.state);
        state.tick();
        let file = state.file_mut(id);
        file.name = name.to_owned();
        file.version += 1;
        state.record(id);
    }

    /// Move to another folder (parents replaced). Only the moved item changes.
    pub fn move_to(&self, id: &str, new_parent: &str) {
        let mut state = lock(&self.state);
        let new_parent = state.resolve(new_parent).to_owned();
        assert!(
            state
                .files
                .get(&new_parent)
                .is_some_and(FakeFile::is_folder),
            "the fake Drive has no folder {new_parent:?}"
        );
        state.tick();
        let file = state.file_mut(id);
        file.parents = vec![new_parent];
        file.version += 1;
        state.record(id);
    }

    /// Move to the trash: the item explicitly, everything under it implicitly.
    pub fn trash(&self, id: &str) {
        self.set_trashed(id, true);
    }

    /// Restore from the trash, with what was trashed along with it.
    pub fn untrash(&self, id: &str) {
        self.set_trashed(id, false);
    }

    fn set_trashed(&self, id: &str, trashed: bool) {
        let mut state = lock(&self.state);
        state.expect_exists(id);
        state.tick();
        // Untrashing a folder leaves what was trashed on its own (and what is under
        // that) in the trash.
        let mut left: Vec<String> = Vec::new();
        for (i, each) in state.subtree(id).into_iter().enumerate() {
            let file = state.file_mut(&each);
            if i > 0
                && !trashed
                && (file.explicitly_trashed || file.parents.iter().any(|p| left.contains(p)))
            {
                left.push(each);
                continue;
            }
            if file.trashed == trashed {
                continue;
            }
            file.trashed = trashed;
            file.explicitly_trashed = trashed && i == 0;
            file.version += 1;
            state.record(&each);
        }
    }

    /// Delete for good (with everything under it): each shows as `removed`.
    pub fn delete(&self, id: &str) {
        let mut state = lock(&self.state);
        state.expect_exists(id);
        state.tick();
        let doomed = state.subtree(id);
        for each in doomed {
            state.record(&each);
            state.files.remove(&each);
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP side
// ---------------------------------------------------------------------------------------

/// `pageSize`: 1..=1000 (default 100), then capped by the fake's own page size.
/// `None` for an invalid one.
fn page_size(state: &DriveState, params: &Params) -> Option<usize> {
    let asked = match param(params, "pageSize") {
        None => DEFAULT_PAGE_SIZE,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))?,
    };
    Some(asked.min(state.page_size))
}

async fn start_page_token(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let path = "/drive/v3/changes/startPageToken";
    let state = match enter(&shared, "GET", path, &params, &headers) {
        Ok(state) => state,
        Err(response) => return response,
    };
    let body = json!({
        "kind": "drive#startPageToken",
        "startPageToken": state.next_change.to_string(),
    });
    drop(state);
    answer(&params, body)
}

async fn changes_list(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let state = match enter(&shared, "GET", "/drive/v3/changes", &params, &headers) {
        Ok(state) => state,
        Err(response) => return response,
    };
    let Some(token) = param(&params, "pageToken") else {
        return google_error(
            400,
            "global",
            "required",
            "Required parameter: pageToken",
            Some("INVALID_ARGUMENT"),
            Some(("parameter", "pageToken")),
        );
    };
    let from = match token.parse::<u64>() {
        Ok(n) if n >= 1 && n <= state.next_change => n,
        _ => return invalid_parameter("pageToken"),
    };
    let Some(size) = page_size(&state, &params) else {
        return invalid_parameter("pageSize");
    };
    let drive_id = param(&params, "driveId");
    let all_drives = flag(&params, "includeItemsFromAllDrives", false);
    let include_removed = flag(&params, "includeRemoved", true);

    let mut changes = Vec::new();
    let mut next_page_token = None;
    for (&number, entry) in state.log.range(from..) {
        if !state.visible(drive_id, all_drives, entry.drive_id.as_deref()) {
            continue;
        }
        let file = state.files.get(&entry.file_id);
        if file.is_none() && !include_removed {
            continue;
        }
        if changes.len() == size {
            next_page_token = Some(number.to_string());
            break;
        }
        let mut change = json!({
            "kind": "drive#change",
            "changeType": "file",
            "time": rfc3339(entry.time),
            "removed": file.is_none(),
            "fileId": entry.file_id,
        });
        if let Some(file) = file {
            change["file"] = file.to_json();
        }
        if let Some(drive_id) = &entry.drive_id {
            change["driveId"] = json!(drive_id);
        }
        changes.push(change);
    }
    let mut body = json!({"kind": "drive#changeList", "changes": changes});
    match next_page_token {
        Some(next) => body["nextPageToken"] = json!(next),
        None => body["newStartPageToken"] = json!(state.next_change.to_string()),
    }
    drop(state);
    answer(&params, body)
}

async fn files_list(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let state = match enter(&shared, "GET", "/drive/v3/files", &params, &headers) {
        Ok(state) => state,
        Err(response) => return response,
    };
    let query = match param(&params, "q") {
        None => FilesQuery::default(),
        Some(q) => match parse_files_query(q) {
            Some(query) => query,
            None => return invalid_parameter("q"),
        },
    };
    let Some(size) = page_size(&state, &params) else {
        return invalid_parameter("pageSize");
    };
    let offset = match param(&params, "pageToken") {
        None => 0,
        Some(token) => match token
            .strip_prefix("fl")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(offset) => offset,
            None => return invalid_parameter("pageToken"),
        },
    };
    let all_drives = flag(&params, "includeItemsFromAllDrives", false);
    let parents: Vec<&str> = query.parents.iter().map(|p| state.resolve(p)).collect();
    let mut matching: Vec<&FakeFile> = state
        .files
        .values()
        .filter(|f| !f.parents.is_empty()) // roots are not listed
        .filter(|f| all_drives || f.drive_id.is_none())
        .filter(|f| parents.iter().all(|p| f.parents.iter().any(|fp| fp == p)))
        .filter(|f| query.trashed.is_none_or(|t| f.trashed == t))
        .collect();
    matching.sort_by_key(|f| f.seq);
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(size)
        .map(|f| f.to_json())
        .collect();
    let mut body = json!({"kind": "drive#fileList", "incompleteSearch": false, "files": page});
    if offset + size < matching.len() {
        body["nextPageToken"] = json!(format!("fl{}", offset + size));
    }
    drop(state);
    answer(&params, body)
}

/// Record a request to `path` and pass the gate: the state to work on, or the answer.
#[allow(clippy::result_large_err)] // a test fake: the answer is returned at once
fn enter<'a>(
    shared: &'a Shared,
    method: &str,
    path: &str,
    params: &Params,
    headers: &HeaderMap,
) -> Result<MutexGuard<'a, DriveState>, Response> {
    let mut state = lock(shared);
    match state.gate.check(method, path, params, headers) {
        Some(response) => Err(response),
        None => Ok(state),
    }
}

/// `changes.watch`: a channel on the change log (a valid `pageToken` is required).
async fn changes_watch(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(params): Query<Params>,
    body: Option<Json<Value>>,
) -> Response {
    let state = match enter(
        &shared,
        "POST",
        "/drive/v3/changes/watch",
        &params,
        &headers,
    ) {
        Ok(state) => state,
        Err(response) => return response,
    };
    match param(&params, "pageToken").map(str::parse::<u64>) {
        Some(Ok(n)) if n >= 1 && n <= state.next_change => {}
        _ => return invalid_parameter("pageToken"),
    }
    let uri = "https://www.googleapis.com/drive/v3/changes?alt=json";
    state.hub.watch("changes", uri, &body.unwrap_or_default().0)
}

/// `files.watch`: a channel on one file.
async fn files_watch(
    State(shared): State<Shared>,
    Path(file_id): Path<String>,
    headers: HeaderMap,
    Query(params): Query<Params>,
    body: Option<Json<Value>>,
) -> Response {
    let path = format!("/drive/v3/files/{file_id}/watch");
    let state = match enter(&shared, "POST", &path, &params, &headers) {
        Ok(state) => state,
        Err(response) => return response,
    };
    if !state.files.contains_key(&file_id) {
        return status_error(404);
    }
    let uri = format!("https://www.googleapis.com/drive/v3/files/{file_id}?alt=json");
    let topic = format!("file:{file_id}");
    state.hub.watch(&topic, &uri, &body.unwrap_or_default().0)
}

/// `channels.stop`: 204, or 404 for a channel (and resource id) the fake does not have.
async fn channels_stop(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(params): Query<Params>,
    body: Option<Json<Value>>,
) -> Response {
    match enter(
        &shared,
        "POST",
        "/drive/v3/channels/stop",
        &params,
        &headers,
    ) {
        Ok(state) => state.hub.stop(&body.unwrap_or_default().0),
        Err(response) => response,
    }
}

async fn not_found() -> Response {
    status_error(404)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;

    const TOKEN: &str = "t0k3n";

    async fn get(
        fake: &FakeDrive,
        path_and_query: &str,
        token: Option<&str>,
    ) -> (u16, HeaderMap, Value) {
        let mut request = reqwest::Client::builder()
            .build()
            .unwrap()
            .get(format!("{}{path_and_query}", fake.base_url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }

    #[tokio::test]
    async fn answers_with_drive_shapes_and_kinds() {
        // GIVEN a fake with one file
        let fake = FakeDrive::start(TOKEN).await.unwrap();
        let start = fake.current_token();
        let id = fake.create_file(
            &fake.root_id(),
            "a.txt",
            "text/plain",
            b"The quick brown fox jumps over the lazy dog",
        );
        // WHEN the three endpoints are called without a field mask
        let (s1, _, token) = get(&fake, "/drive/v3/changes/startPageToken", Some(TOKEN)).await;
        let (s2, _, changes) = get(
            &fake,
            &format!("/drive/v3/changes?pageToken={start}"),
            Some(TOKEN),
        )
        .await;
        let (s3, _, files) = get(
            &fake,
            "/drive/v3/files?q=%27root%27+in+parents",
            Some(TOKEN),
        )
        .await;
        // THEN each has Drive's kind and shape, int64s as strings, a real MD5
        assert_eq!((s1, s2, s3), (200, 200, 200));
        assert_eq!(token["kind"], "drive#startPageToken");
        assert_eq!(token["startPageToken"], "2");
        assert_eq!(changes["kind"], "drive#changeList");
        assert_eq!(changes["newStartPageToken"], "2");
        assert!(changes.get("nextPageToken").is_none());
        let change = &changes["changes"][0];
        assert_eq!(change["kind"], "drive#change");
        assert_eq!(change["changeType"], "file");
        assert_eq!(change["removed"], false);
        assert_eq!(change["fileId"], id.as_str());
        assert_eq!(change["time"], "2026-03-01T12:00:01.000Z");
        let file = &change["file"];
        assert_eq!(file["kind"], "drive#file");
        assert_eq!(file["size"], "43");
        assert_eq!(file["version"], "1");
        assert_eq!(file["md5Checksum"], "9e107d9d372bb6826bd81d3542a419d6");
        assert_eq!(file["parents"], json!([fake.root_id()]));
        assert_eq!(files["kind"], "drive#fileList");
        assert_eq!(files["incompleteSearch"], false);
        assert_eq!(files["files"][0]["id"], id.as_str());
    }

    #[tokio::test]
    async fn applies_the_fields_mask() {
        // GIVEN a fake with a file and a Google Sheet (no md5/size)
        let fake = FakeDrive::start(TOKEN).await.unwrap();
        let root = fake.root_id();
        fake.create_file(&root, "a.txt", "text/plain", b"a");
        fake.create_file(
            &root,
            "Setlist",
            "application/vnd.google-apps.spreadsheet",
            b"",
        );
        // WHEN files are listed with a mask
        let (status, _, body) = get(
            &fake,
            "/drive/v3/files?fields=nextPageToken,files(id,size,md5Checksum)",
            Some(TOKEN),
        )
        .await;
        // THEN only the selected fields come back, absent ones stay absent
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"files": [
                {"id": "1FakeFile00000002", "size": "1", "md5Checksum": md5_hex(b"a")},
                {"id": "1FakeFile00000003"},
            ]})
        );
        // AND slash paths and '*' work
        let (_, _, body) = get(&fake, "/drive/v3/files?fields=files/name,kind", Some(TOKEN)).await;
        assert_eq!(
            body,
            json!({"kind": "drive#fileList", "files": [{"name": "a.txt"}, {"name": "Setlist"}]})
        );
        let (_, _, body) = get(&fake, "/drive/v3/files?fields=*", Some(TOKEN)).await;
        assert_eq!(
            body["files"][1]["mimeType"],
            "application/vnd.google-apps.spreadsheet"
        );
        // AND a broken mask is Google's 400
        let (status, _, body) = get(&fake, "/drive/v3/files?fields=files(id", Some(TOKEN)).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["errors"][0]["reason"], "invalidParameter");
    }

    #[tokio::test]
    async fn refuses_missing_or_wrong_tokens_with_googles_401() {
        let fake = FakeDrive::start(TOKEN).await.unwrap();
        for token in [None, Some("other")] {
            // WHEN a request has no or a wrong bearer token
            let (status, headers, body) =
                get(&fake, "/drive/v3/changes/startPageToken", token).await;
            // THEN it is Google's 401 shape
            assert_eq!(status, 401);
            assert!(headers.contains_key(header::WWW_AUTHENTICATE));
            assert_eq!(body["error"]["code"], 401);
            assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
            assert_eq!(body["error"]["errors"][0]["reason"], "authError");
            assert_eq!(body["error"]["errors"][0]["location"], "Authorization");
        }
        assert!(fake.requests().iter().all(|r| !r.authorized));
    }

    #[tokio::test]
    async fn faults_answer_the_next_requests_in_order() {
        // GIVEN two 429s with Retry-After, a 500, a 410 queued
        let fake = FakeDrive::start(TOKEN).await.unwrap();
        fake.fail_next(2, Fault::rate_limited(Some("7")));
        fake.fail_next(1, Fault::ServerError);
        fake.fail_next(1, Fault::Gone);
        let path = "/drive/v3/changes/startPageToken";
        // THEN the next four requests answer them, with Google's bodies, then normal
        for _ in 0..2 {
            let (status, headers, body) = get(&fake, path, Some(TOKEN)).await;
            assert_eq!(status, 429);
            assert_eq!(headers[header::RETRY_AFTER], "7");
            assert_eq!(
                body,
                json!({"error": {"code": 429, "message": "Rate Limit Exceeded",
                    "errors": [{"domain": "usageLimits", "reason": "rateLimitExceeded",
                                "message": "Rate Limit Exceeded"}],
                    "status": "RESOURCE_EXHAUSTED"}})
            );
        }
        let (status, _, body) = get(&fake, path, Some(TOKEN)).await;
        assert_eq!(
            (status, body["error"]["errors"][0]["reason"].clone()),
            (500, json!("backendError"))
        );
        let (status, _, body) = get(&fake, path, Some(TOKEN)).await;
        assert_eq!(status, 410);
        assert_eq!(body["error"]["code"], 410);
        let (status, _, _) = get(&fake, path, Some(TOKEN)).await;
        assert_eq!(status, 200);
        assert_eq!(fake.requests().len(), 5);
    }

    #[tokio::test]
    async fn rejects_bad_parameters_like_drive() {
        let fake = FakeDrive::start(TOKEN).await.unwrap();
        let bad = [
            ("/drive/v3/changes", "required"),
            ("/drive/v3/changes?pageToken=abc", "invalid"),
            ("/drive/v3/changes?pageToken=99", "invalid"),
            ("/drive/v3/changes?pageToken=1&pageSize=0", "invalid"),
            ("/drive/v3/changes?pageToken=1&pageSize=1001", "invalid"),
            ("/drive/v3/files?q=name+contains+%27x%27", "invalid"),
            ("/drive/v3/files?pageToken=nope", "invalid"),
        ];
        for (path, reason) in bad {
            let (status, _, body) = get(&fake, path, Some(TOKEN)).await;
            assert_eq!(status, 400, "{path}");
            assert_eq!(body["error"]["errors"][0]["reason"], reason, "{path}");
        }
        let (status, _, body) = get(&fake, "/drive/v2/files", Some(TOKEN)).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], 404);
    }

    #[tokio::test]
    async fn a_listing_shows_each_file_once_at_its_latest_change() {
        // GIVEN a file created, then another, then the first renamed
        let fake = FakeDrive::start(TOKEN).await.unwrap();
        let root = fake.root_id();
        let a = fake.create_file(&root, "a", "text/plain", b"a");
        let b = fake.create_file(&root, "b", "text/plain", b"b");
        fake.rename(&a, "a2");
        // WHEN changes are listed from the beginning
        let (_, _, body) = get(&fake, "/drive/v3/changes?pageToken=1", Some(TOKEN)).await;
        // THEN b comes first, then a once, with its new name
        let ids: Vec<_> = body["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["fileId"].clone())
            .collect();
        assert_eq!(ids, [json!(b), json!(a)]);
        assert_eq!(body["changes"][1]["file"]["name"], "a2");
        assert_eq!(body["changes"][1]["file"]["version"], "2");
    }

    #[tokio::test]
    async fn trash_and_delete_reach_the_whole_subtree() {
        // GIVEN a folder with a file and a subfolder with a file; one file trashed alone
        let fake = FakeDrive::start(TOKEN).await.unwrap();
        let root = fake.root_id();
        let top = fake.create_folder(&root, "top");
        let f1 = fake.create_file(&top, "f1", "text/plain", b"1");
        let sub = fake.create_folder(&top, "sub");
        let f2 = fake.create_file(&sub, "f2", "text/plain", b"2");
        fake.trash(&f1);
        let cursor = fake.current_token();
        // WHEN the folder is trashed, then restored
        fake.trash(&top);
        fake.untrash(&top);
        // THEN sub and f2 come back, f1 (trashed on its own) stays in the trash
        let (_, _, body) = get(
            &fake,
            &format!("/drive/v3/files?q=%27{sub}%27+in+parents+and+trashed%3Dfalse"),
            Some(TOKEN),
        )
        .await;
        assert_eq!(body["files"][0]["id"], f2.as_str());
        let (_, _, body) = get(
            &fake,
            &format!("/drive/v3/changes?pageToken={cursor}"),
            Some(TOKEN),
        )
        .await;
        let changed: Vec<_> = body["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["fileId"].clone())
            .collect();
        assert_eq!(changed, [json!(top), json!(sub), json!(f2)]);
        let (_, _, body) = get(
            &fake,
            &format!("/drive/v3/files?q=%27{top}%27+in+parents+and+trashed+%3D+true"),
            Some(TOKEN),
        )
        .await;
        assert_eq!(body["files"][0]["id"], f1.as_str());
        assert_eq!(body["files"][0]["explicitlyTrashed"], true);
        // WHEN the folder is deleted for good
        let cursor = fake.current_token();
        fake.delete(&top);
        // THEN all four show as removed (includeRemoved defaults to true), none without it
        let (_, _, body) = get(
            &fake,
            &format!("/drive/v3/changes?pageToken={cursor}"),
            Some(TOKEN),
        )
        .await;
        let removed: Vec<_> = body["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["fileId"].clone(),
                    c["removed"].clone(),
                    c.get("file").is_some(),
                )
            })
            .collect();
        assert_eq!(
            removed,
            [top, f1, sub, f2].map(|id| (json!(id), json!(true), false))
        );
        let (_, _, body) = get(
            &fake,
            &format!("/drive/v3/changes?pageToken={cursor}&includeRemoved=false"),
            Some(TOKEN),
        )
        .await;
        assert_eq!(body["changes"], json!([]));
    }

    #[tokio::test]
    async fn shared_drive_items_need_include_items_from_all_drives() {
        // GIVEN a file in a shared drive
        let fake = FakeDrive::start(TOKEN).await.unwrap();
        let drive = fake.create_shared_drive("Band");
        let f = fake.create_file(&drive, "gig.pdf", "application/pdf", b"g");
        // THEN changes.list shows it only with includeItemsFromAllDrives or its driveId
        let (_, _, body) = get(&fake, "/drive/v3/changes?pageToken=1", Some(TOKEN)).await;
        assert_eq!(body["changes"], json!([]));
        let (_, _, body) = get(
            &fake,
            "/drive/v3/changes?pageToken=1&includeItemsFromAllDrives=true",
            Some(TOKEN),
        )
        .await;
        assert_eq!(body["changes"][0]["fileId"], f.as_str());
        assert_eq!(body["changes"][0]["driveId"], drive.as_str());
        assert_eq!(body["changes"][0]["file"]["driveId"], drive.as_str());
        let (_, _, body) = get(
            &fake,
            &format!(
                "/drive/v3/changes?pageToken=1&driveId={drive}&includeItemsFromAllDrives=true"
            ),
            Some(TOKEN),
        )
        .await;
        assert_eq!(body["changes"].as_array().unwrap().len(), 1);
        let (_, _, body) = get(
            &fake,
            "/drive/v3/changes?pageToken=1&driveId=0AOther&includeItemsFromAllDrives=true",
            Some(TOKEN),
        )
        .await;
        assert_eq!(body["changes"], json!([]));
    }
}
