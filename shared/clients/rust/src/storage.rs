//! Where cursors, the outbox and parked mutations survive a restart: string keys, JSON
//! values (shared/clients/PROTOCOL.md, "Storage keys").

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a JSON object of keys: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another client (another process) holds the storage: two clients on one storage
    /// would hand out the same mids.
    #[error("{path} is in use by another client of this device")]
    DeviceInUse { path: PathBuf },
}

impl StorageError {
    /// `device_in_use`, or `storage` for any other failure.
    pub fn code(&self) -> &'static str {
        match self {
            StorageError::DeviceInUse { .. } => "device_in_use",
            _ => "storage",
        }
    }
}

/// One change: a key set to a value, or removed (`None`).
pub type Change = (String, Option<Value>);

/// A client's storage. `apply` is durable when it returns: the driver calls it before it
/// sends any frame that follows the changes (the outbox is on disk before a push leaves).
pub trait Storage: Send + 'static {
    /// Everything stored.
    fn load(&mut self) -> Result<BTreeMap<String, Value>, StorageError>;
    /// Apply the changes, in order, as one write.
    fn apply(&mut self, changes: &[Change]) -> Result<(), StorageError>;
}

/// In memory (tests, and apps that need nothing to survive). Clones share one map.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    map: Arc<Mutex<BTreeMap<String, Value>>>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// What it holds now.
    pub fn snapshot(&self) -> BTreeMap<String, Value> {
        self.map.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl Storage for MemoryStorage {
    fn load(&mut self) -> Result<BTreeMap<String, Value>, StorageError> {
        Ok(self.snapshot())
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), StorageError> {
        if let Ok(mut map) = self.map.lock() {
            apply_to(&mut map, changes);
        }
        Ok(())
    }
}

fn apply_to(map: &mut BTreeMap<String, Value>, changes: &[Change]) {
    for (key, value) in changes {
        match value {
            Some(v) => map.insert(key.clone(), v.clone()),
            None => map.remove(key),
        };
    }
}

/// One JSON file, rewritten whole on every change: written to a temporary file beside
/// it, flushed to disk, renamed over it, and the folder synced, so a crash leaves either
/// the old file or the new one, never half of one.
///
/// One client at a time: `load` takes an exclusive advisory lock on `<path>.lock` (an OS
/// lock, so a crashed process holds nothing) and keeps it until the storage is dropped;
/// a second client gets `device_in_use`.
#[derive(Debug)]
pub struct FileStorage {
    path: PathBuf,
    map: BTreeMap<String, Value>,
    loaded: bool,
    /// The open lock file while this storage holds it.
    lock: Option<std::fs::File>,
}

impl FileStorage {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            map: BTreeMap::new(),
            loaded: false,
            lock: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Take the device's lock. The lock file itself stays: removing it while another
    /// process has it open would let two processes each lock a different file.
    fn acquire(&mut self) -> Result<(), StorageError> {
        if self.lock.is_some() {
            return Ok(());
        }
        let mut path = self.path.clone().into_os_string();
        path.push(".lock");
        let path = PathBuf::from(path);
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StorageError::Read {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => {
                self.lock = Some(file);
                Ok(())
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::DeviceInUse { path }),
            Err(std::fs::TryLockError::Error(source)) => Err(StorageError::Read { path, source }),
        }
    }

    fn read(&self) -> Result<BTreeMap<String, Value>, StorageError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StorageError::Corrupt {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(source) => Err(StorageError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn write(&self, map: &BTreeMap<String, Value>) -> Result<(), StorageError> {
        let err = |source| StorageError::Write {
            path: self.path.clone(),
            source,
        };
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let bytes = serde_json::to_vec(map).map_err(|e| err(std::io::Error::other(e)))?;
        let mut file = std::fs::File::create(&tmp).map_err(err)?;
        file.write_all(&bytes).map_err(err)?;
        file.sync_all().map_err(err)?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        // The rename is durable once the folder is; a bare file name lives in the
        // current folder.
        std::fs::File::open(folder_of(&self.path))
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }
}

/// The folder a file is in: "." for a bare file name (whose parent is "").
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

impl Storage for FileStorage {
    fn load(&mut self) -> Result<BTreeMap<String, Value>, StorageError> {
        self.acquire()?;
        self.map = self.read()?;
        self.loaded = true;
        Ok(self.map.clone())
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), StorageError> {
        if changes.is_empty() {
            return Ok(());
        }
        if !self.loaded {
            self.load()?;
        }
        // On a copy: a failed write must leave the map as the file is, or the next
        // successful write would store the failed changes too.
        let mut next = self.map.clone();
        apply_to(&mut next, changes);
        self.write(&next)?;
        self.map = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_file_storage_round_trips_and_replaces_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.json");
        let mut s = FileStorage::new(&path);
        assert!(s.load().unwrap().is_empty(), "no file yet: nothing stored");
        s.apply(&[
            (
                "cursor:band:demo".into(),
                Some(json!({"epoch": "e1", "seq": 3})),
            ),
            ("outbox:1".into(), Some(json!({"mid": 1, "band": "demo"}))),
            ("mid:next".into(), Some(json!(2))),
        ])
        .unwrap();
        s.apply(&[("outbox:1".into(), None)]).unwrap();
        drop(s);
        // A new storage on the same file (a restart) reads what was written.
        let mut again = FileStorage::new(&path);
        let map = again.load().unwrap();
        assert_eq!(
            map.get("cursor:band:demo"),
            Some(&json!({"epoch": "e1", "seq": 3}))
        );
        assert_eq!(map.get("mid:next"), Some(&json!(2)));
        assert!(!map.contains_key("outbox:1"));
        // No temporary file is left beside it (only the lock's), and the file is one
        // JSON object.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["client.json", "client.json.lock"]);
        let on_disk: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(on_disk["mid:next"], 2);
    }

    #[test]
    fn a_torn_temporary_file_does_not_replace_the_stored_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.json");
        let mut s = FileStorage::new(&path);
        s.apply(&[("mid:next".into(), Some(json!(7)))]).unwrap();
        drop(s);
        // A crash mid-write leaves a half temporary file: the stored file is untouched.
        std::fs::write(dir.path().join("client.json.tmp"), b"{\"mid:ne").unwrap();
        let mut s = FileStorage::new(&path);
        assert_eq!(s.load().unwrap()["mid:next"], 7);
        // And the next write replaces the torn one.
        s.apply(&[("mid:next".into(), Some(json!(8)))]).unwrap();
        drop(s);
        assert_eq!(FileStorage::new(&path).load().unwrap()["mid:next"], 8);
    }

    #[test]
    fn one_client_at_a_time_holds_a_file_storage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.json");
        let mut first = FileStorage::new(&path);
        first.load().unwrap();
        let err = FileStorage::new(&path).load().unwrap_err();
        assert!(matches!(err, StorageError::DeviceInUse { .. }), "{err}");
        assert_eq!(err.code(), "device_in_use");
        // Its writes go on; once it is dropped (closed), the next client may start.
        first.apply(&[("mid:next".into(), Some(json!(3)))]).unwrap();
        drop(first);
        assert_eq!(FileStorage::new(&path).load().unwrap()["mid:next"], 3);
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.json");
        std::fs::write(&path, b"not json").unwrap();
        let err = FileStorage::new(&path).load().unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("client.json"), "{err}");
    }

    #[test]
    fn a_failed_write_is_not_stored_by_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.json");
        let mut s = FileStorage::new(&path);
        s.apply(&[("mid:next".into(), Some(json!(1)))]).unwrap();
        // The temporary file cannot be created (a folder is in its way): the write fails.
        std::fs::create_dir(dir.path().join("client.json.tmp")).unwrap();
        s.apply(&[("outbox:9".into(), Some(json!({"mid": 9})))])
            .unwrap_err();
        std::fs::remove_dir(dir.path().join("client.json.tmp")).unwrap();
        s.apply(&[("mid:next".into(), Some(json!(2)))]).unwrap();
        drop(s);
        let map = FileStorage::new(&path).load().unwrap();
        assert_eq!(map.get("mid:next"), Some(&json!(2)));
        assert!(
            !map.contains_key("outbox:9"),
            "the failed change was stored: {map:?}"
        );
    }

    #[test]
    fn a_bare_file_name_is_written_in_the_current_folder() {
        // The folder sync of a path without a folder goes to "." (and its errors count).
        let name = format!("bandsync-bare-{}.json", std::process::id());
        let s = FileStorage::new(&name);
        let r = s.write(&BTreeMap::from([("k".to_owned(), json!(1))]));
        let cwd = std::path::PathBuf::from(&name);
        let exists = cwd.exists();
        let _ = std::fs::remove_file(&cwd);
        r.unwrap();
        assert!(exists);
        assert_eq!(folder_of(Path::new("client.json")), Path::new("."));
        assert_eq!(folder_of(Path::new("/a/client.json")), Path::new("/a"));
    }

    #[test]
    fn memory_storage_clones_share_their_map() {
        let a = MemoryStorage::new();
        let mut b = a.clone();
        b.apply(&[("k".into(), Some(json!(1)))]).unwrap();
        assert_eq!(a.snapshot().get("k"), Some(&json!(1)));
    }
}
