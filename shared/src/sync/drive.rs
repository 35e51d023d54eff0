//! The Drive source: a folder tree in Google Drive, followed with `changes.list`.
//!
//! Its engine (`sync`) goes page by page: each page of changes (or, without a cursor,
//! the full listing of the tree) becomes a [`PageDelta`] of [`Change`]s against the
//! catalog, which it records and publishes like the folder source's, and only then
//! stores the page's token as the source's cursor. It reads Drive through the
//! [`DriveApi`] port.
//!
//! Catalog conventions for Drive sources: a file's `file_id` is its Drive id, its `path`
//! the folder names from the source folder down, `/`-separated; `hash` is the
//! `md5Checksum` (or `v<version>` for Google-native files, which have none). Folders
//! under the source folder are kept in the catalog too, as entries whose path ends in
//! `/`: they are how the next sync knows which folder ids are in the tree. They never
//! produce events.

use super::SyncError;
use super::delta::Change;
use super::operation::{Operations, SourcePass, file_event};
use crate::google::GoogleError;
use crate::google::drive::{self as gdrive, DriveFile, PageEnd};
use crate::google::ports::{DriveApi, SourceApis};
use crate::model::{BandId, FileEntry, SourceId, SyncConfiguration};
use crate::model::{SyncMetrics, SyncOperation};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// What one page (or one full listing) does to the catalog.
#[derive(Debug, Default)]
pub struct PageDelta {
    /// File changes, each an event and an item.
    pub changes: Vec<Change>,
    /// Entries to put without an event: touched files, folder entries.
    pub refreshed: Vec<FileEntry>,
    /// Entries to delete without an event: folders that left the tree.
    pub forgotten: Vec<FileEntry>,
    /// Files of the tree looked at, and files skipped (outside the tree, filtered out).
    pub seen: u64,
    pub skipped: u64,
}

/// Is this catalog entry a folder of the tree (not a file)?
pub fn is_folder_entry(e: &FileEntry) -> bool {
    e.path.ends_with('/')
}

/// A Drive source, page by page: each page's changes are recorded and published, and
/// the catalog moved on, before the page's token becomes the source's cursor; so a
/// delivery that dies between pages resumes at the first page not yet applied.
pub(super) async fn sync(
    ops: &Operations,
    google: &dyn SourceApis,
    pass: SourcePass<'_>,
) -> Result<Option<SyncOperation>, SyncError> {
    let SourcePass {
        job,
        mut source,
        existing,
        config,
        catalog,
    } = pass;
    let client = google.drive_api(&job.band).await?;
    let client = client.as_ref();
    let started = Instant::now();
    let quiet = job.trigger.is_background();
    if job.full && existing.is_none() {
        source.cursor = None;
    }
    let mut tree = Tree::new(&job.band, &job.source, &source.location, &config, &catalog);
    let drive_id = source.drive_id.clone();
    let drive_id = drive_id.as_deref();
    let mut run = match existing {
        Some(op) => Some(ops.begin(job, Some(op)).await?),
        None => None,
    };
    let (mut seen, mut skipped) = (0, 0);
    loop {
        let (delta, end) = match source.cursor.clone() {
            None => {
                // The token first: what changes during the listing comes as changes.
                let token = client.get_start_page_token(drive_id).await?;
                (tree.apply_listing(client).await?, PageEnd::Done(token))
            }
            Some(cursor) => match client.list_changes(&cursor, drive_id).await {
                Ok(page) => (tree.apply_page(client, &page.changes).await?, page.end),
                Err(GoogleError::Gone { message }) => {
                    tracing::warn!(%message, "page token gone: full sync");
                    source.cursor = None;
                    continue;
                }
                Err(e) => return Err(e.into()),
            },
        };
        seen += delta.seen;
        skipped += delta.skipped;
        if run.is_none() && !(quiet && delta.changes.is_empty()) {
            run = Some(ops.begin(job, None).await?);
        }
        if let Some(run) = run.as_mut() {
            ops.apply_changes(run, &delta.changes, &file_event).await?;
        }
        ops.refresh(&delta.refreshed).await?;
        ops.forget_files(&delta.forgotten).await?;
        let last = matches!(end, PageEnd::Done(_));
        source.cursor = Some(end.into_token());
        ops.put_cursor(&mut source).await?;
        if last {
            break;
        }
    }
    let Some(run) = run else {
        tracing::debug!("nothing changed");
        return Ok(None);
    };
    let metrics = SyncMetrics {
        seen,
        synced: run.synced(),
        failed: 0,
        skipped,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    ops.complete(run.op, source, metrics, &[]).await.map(Some)
}

/// The tree as the catalog knows it, updated as pages are applied.
pub struct Tree<'a> {
    band: BandId,
    source: SourceId,
    root: String,
    config: &'a SyncConfiguration,
    /// Folder id -> its path prefix (`""` for the root, `"a/b/"` below).
    folders: HashMap<String, String>,
    /// Catalog entries (files and folders) by Drive id.
    entries: HashMap<String, FileEntry>,
}

impl<'a> Tree<'a> {
    pub fn new(
        band: &BandId,
        source: &SourceId,
        root: &str,
        config: &'a SyncConfiguration,
        catalog: &[FileEntry],
    ) -> Self {
        let mut folders: HashMap<String, String> = catalog
            .iter()
            .filter(|e| is_folder_entry(e))
            .map(|e| (e.file_id.clone(), e.path.clone()))
            .collect();
        folders.insert(root.to_owned(), String::new());
        Self {
            band: band.clone(),
            source: source.clone(),
            root: root.to_owned(),
            config,
            folders,
            entries: catalog
                .iter()
                .map(|e| (e.file_id.clone(), e.clone()))
                .collect(),
        }
    }

    fn entry(&self, file: &DriveFile, path: String) -> FileEntry {
        let hash = match (&file.md5_checksum, file.is_folder()) {
            (_, true) => "folder".to_owned(),
            (Some(md5), false) => md5.clone(),
            (None, false) => format!("v{}", file.version.unwrap_or_default()),
        };
        FileEntry {
            band: self.band.clone(),
            source: self.source.clone(),
            file_id: file.id.clone(),
            path,
            size: file.size.unwrap_or_default(),
            hash,
            modified_ms: file
                .modified_time
                .map(|t| t.timestamp_millis())
                .unwrap_or_default(),
        }
    }

    /// The path prefix of the folder holding `file`, if it is in the tree.
    fn parent_prefix(&self, file: &DriveFile) -> Option<&String> {
        if file.trashed {
            return None;
        }
        file.parents.iter().find_map(|p| self.folders.get(p))
    }

    /// A file's change (`file` None: removed for good).
    fn file_change(&mut self, id: &str, file: Option<&DriveFile>, out: &mut PageDelta) {
        let before = self.entries.get(id).cloned();
        let after = file.and_then(|f| {
            let prefix = self.parent_prefix(f)?;
            self.config
                .accepts(&f.name)
                .then(|| self.entry(f, format!("{prefix}{}", f.name)))
        });
        match (before, after) {
            (None, None) => out.skipped += 1,
            (None, Some(a)) => {
                out.seen += 1;
                self.entries.insert(id.to_owned(), a.clone());
                out.changes.push(Change::Created(a));
            }
            (Some(b), None) => {
                out.seen += 1;
                self.entries.remove(id);
                out.changes.push(Change::Deleted(b));
            }
            (Some(b), Some(a)) => {
                out.seen += 1;
                self.entries.insert(id.to_owned(), a.clone());
                let mut before = b;
                if before.path != a.path {
                    let moved = FileEntry {
                        path: a.path.clone(),
                        ..before.clone()
                    };
                    out.changes.push(Change::Moved {
                        before,
                        after: moved.clone(),
                    });
                    before = moved;
                }
                if before.hash != a.hash {
                    out.changes.push(Change::Updated { before, after: a });
                } else if before.size != a.size || before.modified_ms != a.modified_ms {
                    out.refreshed.push(a);
                }
            }
        }
    }

    /// A folder's change (`file` None: removed). Returns whether the tree changed.
    async fn folder_change(
        &mut self,
        client: &dyn DriveApi,
        id: &str,
        file: Option<&DriveFile>,
        out: &mut PageDelta,
    ) -> Result<bool, GoogleError> {
        if id == self.root {
            return Ok(false);
        }
        let old = self.folders.get(id).cloned();
        // The folder's metadata with its path, when it is (still) in the tree.
        let new = file.and_then(|f| {
            self.parent_prefix(f)
                .map(|prefix| (f, format!("{prefix}{}/", f.name)))
        });
        match (old, new) {
            (None, None) => Ok(false),
            (Some(old), Some((_, new))) if old == new => Ok(false),
            (None, Some((f, new))) => {
                self.put_folder(f, new.clone(), out);
                // Its content is new to the tree: list it.
                for (child, path) in list_tree(client, id, &new).await? {
                    if child.is_folder() {
                        self.put_folder(&child, path, out);
                    } else {
                        let child_id = child.id.clone();
                        self.file_change(&child_id, Some(&child), out);
                    }
                }
                Ok(true)
            }
            (Some(old), new) => {
                // Everything under `old` moves to `new`, or leaves the tree.
                let new = new.map(|(_, path)| path);
                let mut under: Vec<FileEntry> = self
                    .entries
                    .values()
                    .filter(|e| e.path.starts_with(&old))
                    .cloned()
                    .collect();
                under.sort_by(|a, b| a.path.cmp(&b.path));
                for e in under {
                    let renamed = new.as_ref().map(|n| format!("{n}{}", &e.path[old.len()..]));
                    match (renamed, is_folder_entry(&e)) {
                        (Some(path), true) => {
                            self.folders.insert(e.file_id.clone(), path.clone());
                            let moved = FileEntry { path, ..e };
                            self.entries.insert(moved.file_id.clone(), moved.clone());
                            out.refreshed.push(moved);
                        }
                        (None, true) => {
                            self.folders.remove(&e.file_id);
                            self.entries.remove(&e.file_id);
                            out.forgotten.push(e);
                        }
                        (Some(path), false) => {
                            let moved = FileEntry { path, ..e.clone() };
                            self.entries.insert(moved.file_id.clone(), moved.clone());
                            out.changes.push(Change::Moved {
                                before: e,
                                after: moved,
                            });
                        }
                        (None, false) => {
                            self.entries.remove(&e.file_id);
                            out.changes.push(Change::Deleted(e));
                        }
                    }
                }
                Ok(true)
            }
        }
    }

    fn put_folder(&mut self, f: &DriveFile, path: String, out: &mut PageDelta) {
        self.folders.insert(f.id.clone(), path.clone());
        let e = self.entry(f, path);
        self.entries.insert(f.id.clone(), e.clone());
        out.refreshed.push(e);
    }

    /// One page of `changes.list`: folders first (until none moves any more, as a new
    /// folder's parent may come later in the page), then files.
    pub async fn apply_page(
        &mut self,
        client: &dyn DriveApi,
        changes: &[gdrive::Change],
    ) -> Result<PageDelta, GoogleError> {
        let mut out = PageDelta::default();
        let relevant: Vec<(&str, Option<&DriveFile>)> = changes
            .iter()
            .filter(|c| c.change_type == gdrive::ChangeType::File)
            .filter_map(|c| {
                let id = c
                    .file_id
                    .as_deref()
                    .or(c.file.as_ref().map(|f| f.id.as_str()))?;
                let file = if c.removed { None } else { c.file.as_ref() };
                Some((id, file))
            })
            .collect();
        let is_folder = |id: &str, file: Option<&DriveFile>, tree: &Self| match file {
            Some(f) => f.is_folder(),
            None => tree.folders.contains_key(id),
        };
        let folders: Vec<_> = relevant
            .iter()
            .filter(|(id, f)| is_folder(id, *f, self))
            .copied()
            .collect();
        loop {
            let mut moved = false;
            for (id, file) in &folders {
                moved |= self.folder_change(client, id, *file, &mut out).await?;
            }
            if !moved {
                break;
            }
        }
        for (id, file) in relevant {
            if !file.is_some_and(DriveFile::is_folder) && !folders.iter().any(|(f, _)| *f == id) {
                self.file_change(id, file, &mut out);
            }
        }
        Ok(out)
    }

    /// A full listing of the tree against the catalog: what it lacks is created, what
    /// changed is updated or moved, what is gone is deleted, the rest stays quiet.
    pub async fn apply_listing(&mut self, client: &dyn DriveApi) -> Result<PageDelta, GoogleError> {
        let listing = list_tree(client, &self.root, "").await?;
        let mut out = PageDelta::default();
        let old_folders: HashMap<String, String> = std::mem::take(&mut self.folders);
        self.folders.insert(self.root.clone(), String::new());
        let mut listed: HashSet<String> = HashSet::new();
        for (f, path) in &listing {
            if f.is_folder() {
                listed.insert(f.id.clone());
                if old_folders.get(&f.id) != Some(path) {
                    self.put_folder(f, path.clone(), &mut out);
                } else {
                    self.folders.insert(f.id.clone(), path.clone());
                }
            }
        }
        for (f, _) in &listing {
            if !f.is_folder() {
                listed.insert(f.id.clone());
                self.file_change(&f.id, Some(f), &mut out);
            }
        }
        let mut gone: Vec<FileEntry> = self
            .entries
            .values()
            .filter(|e| !listed.contains(&e.file_id))
            .cloned()
            .collect();
        gone.sort_by(|a, b| a.path.cmp(&b.path));
        for e in gone {
            if is_folder_entry(&e) {
                self.entries.remove(&e.file_id);
                out.forgotten.push(e);
            } else {
                self.file_change(&e.file_id.clone(), None, &mut out);
            }
        }
        Ok(out)
    }
}

/// Every untrashed item under `folder` (breadth first, so a folder comes before its
/// content), with its path (`prefix` + names; folders end in `/`).
pub async fn list_tree(
    client: &dyn DriveApi,
    folder: &str,
    prefix: &str,
) -> Result<Vec<(DriveFile, String)>, GoogleError> {
    let mut out = Vec::new();
    let mut queue = std::collections::VecDeque::from([(folder.to_owned(), prefix.to_owned())]);
    while let Some((id, prefix)) = queue.pop_front() {
        let mut token: Option<String> = None;
        loop {
            let page = client.list_folder(&id, token.as_deref()).await?;
            for f in page.files {
                if f.is_folder() {
                    let path = format!("{prefix}{}/", f.name);
                    queue.push_back((f.id.clone(), path.clone()));
                    out.push((f, path));
                } else {
                    let path = format!("{prefix}{}", f.name);
                    out.push((f, path));
                }
            }
            match page.next_page_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
    }
    Ok(out)
}
