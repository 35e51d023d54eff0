//! Watching a folder: filesystem events (inotify and friends, through `notify`) are
//! collapsed over a short debounce window into one "something changed" call, the local
//! equivalent of a Google push notification.

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

/// Keeps the watch alive; dropping it stops the watch and its task.
pub struct FolderWatch {
    _watcher: RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FolderWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Is any component of `path` below `root` one the sync ignores?
fn ignored(root: &Path, path: &Path) -> bool {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .any(|c| {
            c.as_os_str()
                .to_str()
                .is_some_and(crate::model::is_ignored_name)
        })
}

/// Watch `root` recursively; call `on_change` at most once per `debounce` window after
/// changes settle into it. `on_change` runs on the tokio runtime of the caller.
pub fn watch<F, Fut>(root: &Path, debounce: Duration, on_change: F) -> notify::Result<FolderWatch>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let base = root.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        match res {
            // Reads and opens are not changes; nor are changes to files the sync ignores
            // (hidden, temporary), which also keeps a database inside the tree from looping.
            Ok(event) if matches!(event.kind, notify::EventKind::Access(_)) => {}
            Ok(event)
                if !event.paths.is_empty() && event.paths.iter().all(|p| ignored(&base, p)) => {}
            Ok(_) => {
                let _ = tx.send(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "folder watch error; the periodic reconcile will catch up");
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(root, RecursiveMode::Recursive)?;
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(debounce).await;
            while rx.try_recv().is_ok() {}
            on_change().await;
        }
    });
    Ok(FolderWatch {
        _watcher: watcher,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn hidden_and_temporary_paths_are_ignored() {
        let root = Path::new("/r");
        assert!(ignored(root, Path::new("/r/.bandsync/bandsync.db-wal")));
        assert!(ignored(root, Path::new("/r/charts/draft.pdf.part")));
        assert!(!ignored(root, Path::new("/r/charts/blue.pdf")));
    }

    #[tokio::test]
    async fn a_burst_of_writes_is_one_call() {
        let dir = tempfile::tempdir().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let _w = watch(dir.path(), Duration::from_millis(200), move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        })
        .unwrap();
        for i in 0..20 {
            std::fs::write(dir.path().join(format!("f{i}.pdf")), b"x").unwrap();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while calls.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "20 writes inside one window make one call"
        );
    }
}
