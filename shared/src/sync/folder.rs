//! The folder source: a directory on disk, synced like a Drive folder. Scanning is
//! blocking file I/O; the engine (`sync`) runs it on the blocking pool.
//!
//! A file whose size and mtime match the catalog is not read again (unless the sync is
//! full); every other file is hashed, so a touch without a change is not an update.

use super::delta::{self, Observed};
use super::operation::{Operations, SourcePass, file_event};
use super::{SyncError, short_hash};
use crate::model::{FileEntry, ItemAction, SyncConfiguration, SyncMetrics, SyncOperation};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Default)]
pub struct Scan {
    pub observed: Vec<Observed>,
    /// Files that could not be read: (path, why). Each becomes a failed item.
    pub unreadable: Vec<(String, String)>,
    /// Files the filter left out (hidden, temporary, or not of the band's file types).
    pub skipped: u64,
}

/// Files modified this recently are always hashed (see `scan`).
const RACY_WINDOW_MS: i64 = 2_000;

pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Scan `root`. Fails only when the root itself cannot be listed.
pub fn scan(
    root: &Path,
    config: &SyncConfiguration,
    catalog: &[FileEntry],
    full: bool,
) -> std::io::Result<Scan> {
    let known: HashMap<&str, &FileEntry> = catalog.iter().map(|e| (e.path.as_str(), e)).collect();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let mut scan = Scan::default();
    let mut dirs = vec![(root.to_path_buf(), String::new())];
    let mut is_root = true;
    while let Some((dir, prefix)) = dirs.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if is_root => return Err(e),
            Err(e) => {
                scan.unreadable.push((
                    prefix.trim_end_matches('/').to_owned(),
                    format!("cannot list folder: {e}"),
                ));
                continue;
            }
        };
        is_root = false;
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    // The entry's name is unknown: the whole folder is uncertain this time.
                    let folder = prefix.trim_end_matches('/').to_owned();
                    scan.unreadable
                        .push((folder, format!("cannot read folder entry: {e}")));
                    continue;
                }
            };
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                scan.unreadable.push((
                    format!("{prefix}{}", entry.file_name().to_string_lossy()),
                    "file name is not valid UTF-8".into(),
                ));
                continue;
            };
            if crate::model::is_ignored_name(&name) {
                scan.skipped += 1;
                continue;
            }
            let rel = format!("{prefix}{name}");
            // symlink_metadata: links are not followed (no loops, nothing outside the root).
            let meta = match entry.path().symlink_metadata() {
                Ok(m) => m,
                Err(e) => {
                    scan.unreadable.push((rel, format!("cannot stat: {e}")));
                    continue;
                }
            };
            if meta.is_dir() {
                dirs.push((entry.path(), format!("{rel}/")));
                continue;
            }
            if !meta.is_file() || !config.accepts(&name) {
                scan.skipped += 1;
                continue;
            }
            let modified_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64)
                .unwrap_or_default();
            let size = meta.len();
            // Size and mtime vouch for the content only when the mtime is not recent: two
            // same-size writes within one mtime tick look alike (git's "racy" rule).
            let settled = now_ms - modified_ms > RACY_WINDOW_MS;
            let unchanged = known
                .get(rel.as_str())
                .filter(|e| !full && settled && e.size == size && e.modified_ms == modified_ms);
            let hash = match unchanged {
                Some(e) => e.hash.clone(),
                None => match hash_file(&entry.path()) {
                    Ok(h) => h,
                    Err(e) => {
                        scan.unreadable.push((rel, format!("cannot read: {e}")));
                        continue;
                    }
                },
            };
            scan.observed.push(Observed {
                path: rel,
                size,
                modified_ms,
                hash,
            });
        }
    }
    Ok(scan)
}

/// A folder source: scan it on the blocking pool, diff the scan against the catalog,
/// publish and apply the changes, and record a failed item per unreadable file.
pub(super) async fn sync(
    ops: &Operations,
    pass: SourcePass<'_>,
) -> Result<Option<SyncOperation>, SyncError> {
    let SourcePass {
        job,
        source,
        existing,
        config,
        catalog,
    } = pass;
    let started = Instant::now();
    let root = PathBuf::from(&source.location);
    let full = job.full;
    let scanned_catalog = catalog.clone();
    let scan =
        match tokio::task::spawn_blocking(move || scan(&root, &config, &scanned_catalog, full))
            .await?
        {
            Ok(scan) => scan,
            Err(e) => {
                let error = format!("cannot read folder {}: {e}", source.location);
                return ops.fail(job, existing, error).await.map(Some);
            }
        };
    let unreadable: HashSet<String> = scan.unreadable.iter().map(|(p, _)| p.clone()).collect();
    let op_id = job.id.clone();
    let delta = delta::diff(
        &job.band,
        &job.source,
        &catalog,
        &scan.observed,
        &unreadable,
        |o| format!("f_{}", short_hash(&[&op_id, &o.path, &o.hash])),
    );
    let quiet = job.trigger.is_background();
    if existing.is_none() && quiet && delta.changes.is_empty() && scan.unreadable.is_empty() {
        ops.refresh(&delta.refreshed).await?;
        tracing::debug!("nothing changed");
        return Ok(None);
    }

    let mut run = ops.begin(job, existing).await?;
    ops.apply_changes(&mut run, &delta.changes, &file_event)
        .await?;
    ops.refresh(&delta.refreshed).await?;
    for (path, error) in &scan.unreadable {
        let action = if catalog.iter().any(|e| &e.path == path) {
            ItemAction::Updated
        } else {
            ItemAction::Created
        };
        let item = run.failed_item(action, path.clone(), error.clone());
        ops.put_item(&item).await?;
    }
    let metrics = SyncMetrics {
        seen: (scan.observed.len() + scan.unreadable.len()) as u64,
        synced: run.synced(),
        failed: scan.unreadable.len() as u64,
        skipped: scan.skipped,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    ops.complete(run.op, source, metrics, &scan.unreadable)
        .await
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BandId;

    fn config(types: &[&str]) -> SyncConfiguration {
        SyncConfiguration {
            band: BandId::parse("b").unwrap(),
            name: "b".into(),
            file_types: types.iter().map(|s| s.to_string()).collect(),
            google_credentials: None,
            entity_types: vec![],
            strict_entities: false,
            history_days: None,
        }
    }

    #[test]
    fn scans_nested_filters_and_hashes() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("charts/live")).unwrap();
        fs::write(dir.path().join("charts/live/a.pdf"), b"chart").unwrap();
        fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        fs::write(dir.path().join(".hidden.pdf"), b"x").unwrap();
        fs::write(dir.path().join("draft.pdf.part"), b"x").unwrap();
        let s = scan(dir.path(), &config(&["pdf"]), &[], false).unwrap();
        assert_eq!(s.observed.len(), 1);
        assert_eq!(s.observed[0].path, "charts/live/a.pdf");
        assert_eq!(s.observed[0].hash, hex::encode(Sha256::digest(b"chart")));
        assert_eq!(s.skipped, 3);
        assert!(s.unreadable.is_empty());
    }

    #[test]
    fn missing_root_is_an_error() {
        assert!(scan(Path::new("/nonexistent/bandsync"), &config(&[]), &[], false).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_non_utf8_name_is_one_failed_item_not_a_failed_scan() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(std::ffi::OsStr::from_bytes(b"bad\xff.pdf")),
            b"x",
        )
        .unwrap();
        fs::write(dir.path().join("good.pdf"), b"y").unwrap();
        let s = scan(dir.path(), &config(&[]), &[], false).unwrap();
        assert_eq!(s.observed.len(), 1);
        assert_eq!(s.unreadable.len(), 1);
        assert!(s.unreadable[0].1.contains("UTF-8"));
    }

    #[test]
    fn unchanged_stat_reuses_the_catalog_hash_unless_full() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.pdf"), b"x").unwrap();
        // Settled: modified well before the scan (a fresh mtime is always re-hashed).
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(dir.path().join("a.pdf"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let first = scan(dir.path(), &config(&[]), &[], false)
            .unwrap()
            .observed
            .remove(0);
        let entry = FileEntry {
            band: BandId::parse("b").unwrap(),
            source: crate::model::SourceId::parse("s").unwrap(),
            file_id: "1".into(),
            path: first.path.clone(),
            size: first.size,
            hash: "from-catalog".into(),
            modified_ms: first.modified_ms,
        };
        let quick = scan(
            dir.path(),
            &config(&[]),
            std::slice::from_ref(&entry),
            false,
        )
        .unwrap();
        assert_eq!(quick.observed[0].hash, "from-catalog");
        let full = scan(dir.path(), &config(&[]), std::slice::from_ref(&entry), true).unwrap();
        assert_eq!(full.observed[0].hash, first.hash);
        // A recent mtime is not trusted, even when it matches the catalog.
        fs::File::options()
            .write(true)
            .open(dir.path().join("a.pdf"))
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        let fresh = scan(dir.path(), &config(&[]), &[], false)
            .unwrap()
            .observed
            .remove(0);
        let racy = FileEntry {
            modified_ms: fresh.modified_ms,
            ..entry
        };
        let rescan = scan(dir.path(), &config(&[]), &[racy], false).unwrap();
        assert_eq!(
            rescan.observed[0].hash, first.hash,
            "re-hashed, not taken from the catalog"
        );
    }
}
