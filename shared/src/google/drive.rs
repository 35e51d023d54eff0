//! A Google Drive API v3 client: the calls a Drive source needs to follow a folder.
//!
//! - [`DriveClient::get_start_page_token`]: `GET /drive/v3/changes/startPageToken`, the
//!   cursor to start following changes from;
//! - [`DriveClient::list_changes`]: `GET /drive/v3/changes`, one page of changes from a
//!   page token, which ends in [`PageEnd::More`] (the next page's token) until the last
//!   one's [`PageEnd::Done`] (the cursor for next time);
//! - [`DriveClient::list_folder`]: `GET /drive/v3/files` with
//!   `q='<folder>' in parents and trashed=false`, one page of a folder's children (the
//!   full sync walks the tree with it).
//!
//! Every call goes through [`ApiClient`]: a bearer token asked again on each attempt,
//! the band's throttle, retries with backoff honouring `Retry-After`, and failures
//! mapped to [`GoogleError`] (410 is [`GoogleError::Gone`]).
//!
//! The serde types follow Drive's JSON names (camelCase) and encodings: `size` and
//! `version` are int64 and so travel as decimal strings.

use super::GoogleError;
use super::client::{ApiClient, GoogleClient, int64};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where the real Drive API lives.
pub const DRIVE_BASE_URL: &str = "https://www.googleapis.com";

/// The MIME type of a Drive folder.
pub const FOLDER_MIME_TYPE: &str = "application/vnd.google-apps.folder";

/// The file fields every call asks for (partial response: Drive sends only these).
pub const FILE_FIELDS: &str =
    "id,name,mimeType,parents,trashed,md5Checksum,modifiedTime,size,version";

/// `fields` of `changes.list`.
pub const CHANGES_FIELDS: &str = "nextPageToken,newStartPageToken,changes(changeType,removed,fileId,time,file(id,name,mimeType,parents,trashed,md5Checksum,modifiedTime,size,version))";

/// `fields` of `files.list`.
pub const FILES_FIELDS: &str =
    "nextPageToken,files(id,name,mimeType,parents,trashed,md5Checksum,modifiedTime,size,version)";

/// The largest page both list calls accept (and the default here: fewest calls).
pub const MAX_PAGE_SIZE: u32 = 1000;

/// A file's metadata, as the fields in [`FILE_FIELDS`] return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriveFile {
    pub id: String,
    pub name: String,
    pub mime_type: String,
    /// Absent when the caller cannot see any parent (e.g. a file shared with them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<String>,
    #[serde(default)]
    pub trashed: bool,
    /// Only for files with binary content (not folders, not Docs/Sheets/…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5_checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_time: Option<DateTime<Utc>>,
    /// Bytes; only for files with binary content. int64 as a decimal string.
    #[serde(default, with = "int64", skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Grows with every change to the file on the server. int64 as a decimal string.
    #[serde(default, with = "int64", skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

impl DriveFile {
    pub fn is_folder(&self) -> bool {
        self.mime_type == FOLDER_MIME_TYPE
    }
}

/// `changeType` of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeType {
    File,
    /// A shared drive itself changed (not a file in it).
    Drive,
    /// A type this client does not know (Drive may add some).
    #[serde(other)]
    Other,
}

/// One entry of `changes.list`. Drive reports each file at most once per listing, at its
/// latest change, with its state at listing time (not at change time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub change_type: ChangeType,
    /// The file left the caller's view: deleted for good, or access lost. `file` is
    /// then absent. (A trashed file is not removed: it comes with `trashed: true`.)
    #[serde(default)]
    pub removed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    pub time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<DriveFile>,
}

/// One page of `changes.list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangesPage {
    pub changes: Vec<Change>,
    pub end: PageEnd,
}

/// How a page of `changes.list` ends: Drive sends exactly one of its two tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageEnd {
    /// More pages follow: `nextPageToken`, where the next one starts.
    More(String),
    /// The last page: `newStartPageToken`, the cursor for changes after this listing.
    Done(String),
}

impl PageEnd {
    /// The token to go on from (the next page's, or the next sync's).
    pub fn into_token(self) -> String {
        match self {
            PageEnd::More(token) | PageEnd::Done(token) => token,
        }
    }
}

/// One page of `files.list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesPage {
    pub files: Vec<DriveFile>,
    pub next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartPageTokenBody {
    start_page_token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangeListBody {
    #[serde(default)]
    changes: Vec<Change>,
    next_page_token: Option<String>,
    new_start_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileListBody {
    #[serde(default)]
    files: Vec<DriveFile>,
    next_page_token: Option<String>,
}

/// A Drive v3 client. Cheap to clone (the HTTP client and token source are shared).
#[derive(Clone, Debug)]
pub struct DriveClient {
    api: ApiClient,
    page_size: u32,
}

impl GoogleClient for DriveClient {
    const API: &'static str = "Drive";

    /// Pages of [`MAX_PAGE_SIZE`].
    fn from_api(api: ApiClient) -> Self {
        Self {
            api,
            page_size: MAX_PAGE_SIZE,
        }
    }

    fn api(&self) -> &ApiClient {
        &self.api
    }

    fn api_mut(&mut self) -> &mut ApiClient {
        &mut self.api
    }
}

impl DriveClient {
    /// The `pageSize` asked for (clamped to 1..=1000; Drive may still answer fewer).
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        self
    }

    /// `changes.getStartPageToken`: the page token from which later changes will be
    /// listed (of the shared drive `drive_id`, or of the user's view).
    pub async fn get_start_page_token(
        &self,
        drive_id: Option<&str>,
    ) -> Result<String, GoogleError> {
        let mut query = vec![("supportsAllDrives", "true")];
        if let Some(drive_id) = drive_id {
            query.push(("driveId", drive_id));
        }
        query.push(("fields", "startPageToken"));
        let body: StartPageTokenBody = self
            .api
            .get_json(&["drive", "v3", "changes", "startPageToken"], &query)
            .await?;
        Ok(body.start_page_token)
    }

    /// `changes.list`: one page of changes from `page_token`, removals included, across
    /// My Drive and shared drives (or only the shared drive `drive_id`).
    pub async fn list_changes(
        &self,
        page_token: &str,
        drive_id: Option<&str>,
    ) -> Result<ChangesPage, GoogleError> {
        let page_size = self.page_size.to_string();
        let mut query = vec![
            ("pageToken", page_token),
            ("pageSize", page_size.as_str()),
            ("includeRemoved", "true"),
            ("supportsAllDrives", "true"),
            ("includeItemsFromAllDrives", "true"),
        ];
        if let Some(drive_id) = drive_id {
            query.push(("driveId", drive_id));
        }
        query.push(("fields", CHANGES_FIELDS));
        let body: ChangeListBody = self
            .api
            .get_json(&["drive", "v3", "changes"], &query)
            .await?;
        // A page with neither token would leave the caller without a cursor.
        let end = match (body.next_page_token, body.new_start_page_token) {
            (Some(next), None) => PageEnd::More(next),
            (None, Some(new_start)) => PageEnd::Done(new_start),
            (next, _) => {
                let which = if next.is_none() { "neither" } else { "both" };
                return Err(GoogleError::Decode(format!(
                    "changes.list page with {which} of nextPageToken / newStartPageToken"
                )));
            }
        };
        Ok(ChangesPage {
            changes: body.changes,
            end,
        })
    }

    /// `files.list` of the folder's children that are not in the trash, one page
    /// (`page_token` from the previous page's `next_page_token`).
    pub async fn list_folder(
        &self,
        folder_id: &str,
        page_token: Option<&str>,
    ) -> Result<FilesPage, GoogleError> {
        let q = parents_query(folder_id);
        let page_size = self.page_size.to_string();
        let mut query = vec![
            ("q", q.as_str()),
            ("pageSize", page_size.as_str()),
            ("supportsAllDrives", "true"),
            ("includeItemsFromAllDrives", "true"),
            ("fields", FILES_FIELDS),
        ];
        if let Some(page_token) = page_token {
            query.push(("pageToken", page_token));
        }
        let body: FileListBody = self.api.get_json(&["drive", "v3", "files"], &query).await?;
        Ok(FilesPage {
            files: body.files,
            next_page_token: body.next_page_token,
        })
    }
}

/// `'<id>' in parents and trashed=false`, with the id escaped as Drive's query
/// language wants (`\` and `'` behind a backslash).
pub fn parents_query(folder_id: &str) -> String {
    let escaped = folder_id.replace('\\', "\\\\").replace('\'', "\\'");
    format!("'{escaped}' in parents and trashed=false")
}
