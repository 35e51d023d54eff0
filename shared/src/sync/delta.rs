//! Delta computation: what changed between the catalog (what the last sync saw) and what
//! the source holds now. Pure: no I/O, so every case is a unit test.

use crate::model::{BandId, FileEntry, ItemAction, SourceId};
use std::collections::{HashMap, HashSet};

/// A file as the source holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub path: String,
    pub size: u64,
    pub modified_ms: i64,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created(FileEntry),
    Updated {
        before: FileEntry,
        after: FileEntry,
    },
    Deleted(FileEntry),
    /// Same content, new path (a rename is a move within one folder). Keeps the file id.
    Moved {
        before: FileEntry,
        after: FileEntry,
    },
}

impl Change {
    pub fn action(&self) -> ItemAction {
        match self {
            Self::Created(_) => ItemAction::Created,
            Self::Updated { .. } => ItemAction::Updated,
            Self::Deleted(_) => ItemAction::Deleted,
            Self::Moved { .. } => ItemAction::Moved,
        }
    }

    /// The entry as it is after the change (for a delete: as it was).
    pub fn entry(&self) -> &FileEntry {
        match self {
            Self::Created(e) | Self::Deleted(e) => e,
            Self::Updated { after, .. } | Self::Moved { after, .. } => after,
        }
    }

    pub fn before(&self) -> Option<&FileEntry> {
        match self {
            Self::Created(_) => None,
            Self::Deleted(e) => Some(e),
            Self::Updated { before, .. } | Self::Moved { before, .. } => Some(before),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// In path order.
    pub changes: Vec<Change>,
    /// Same content, new size/mtime stamp (a touch): the catalog is refreshed, no event.
    pub refreshed: Vec<FileEntry>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.refreshed.is_empty()
    }
}

/// Is `path` at or under one of the `unreadable` paths (a file, or a folder that could
/// not be listed; `""` is the whole source)?
fn shadowed(path: &str, unreadable: &HashSet<String>) -> bool {
    unreadable.iter().any(|u| {
        u.is_empty()
            || path == u
            || path
                .strip_prefix(u.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Compare. `unreadable` paths (files, or folders that could not be listed) could not be
/// read this time: what the catalog has at or under them is neither changed nor deleted. `new_id` names a file seen for the first time.
pub fn diff(
    band: &BandId,
    source: &SourceId,
    catalog: &[FileEntry],
    observed: &[Observed],
    unreadable: &HashSet<String>,
    mut new_id: impl FnMut(&Observed) -> String,
) -> Delta {
    let by_path: HashMap<&str, &FileEntry> = catalog.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut observed: Vec<&Observed> = observed.iter().collect();
    observed.sort_by(|a, b| a.path.cmp(&b.path));

    let entry = |id: String, o: &Observed| FileEntry {
        band: band.clone(),
        source: source.clone(),
        file_id: id,
        path: o.path.clone(),
        size: o.size,
        hash: o.hash.clone(),
        modified_ms: o.modified_ms,
    };

    let mut delta = Delta::default();
    let mut created: Vec<&Observed> = Vec::new();
    let mut present: HashSet<&str> = HashSet::new();
    for o in &observed {
        present.insert(o.path.as_str());
        match by_path.get(o.path.as_str()) {
            None => created.push(o),
            Some(before) if before.hash != o.hash => delta.changes.push(Change::Updated {
                before: (*before).clone(),
                after: entry(before.file_id.clone(), o),
            }),
            Some(before) if before.size != o.size || before.modified_ms != o.modified_ms => {
                delta.refreshed.push(entry(before.file_id.clone(), o))
            }
            Some(_) => {}
        }
    }

    let mut deleted: Vec<&FileEntry> = catalog
        .iter()
        .filter(|e| !present.contains(e.path.as_str()) && !shadowed(&e.path, unreadable))
        .collect();
    deleted.sort_by(|a, b| a.path.cmp(&b.path));

    for o in created {
        match deleted.iter().position(|d| d.hash == o.hash) {
            Some(i) => {
                let before = deleted.remove(i);
                delta.changes.push(Change::Moved {
                    before: before.clone(),
                    after: entry(before.file_id.clone(), o),
                });
            }
            None => delta.changes.push(Change::Created(entry(new_id(o), o))),
        }
    }
    delta
        .changes
        .extend(deleted.into_iter().map(|d| Change::Deleted(d.clone())));
    delta
        .changes
        .sort_by(|a, b| a.entry().path.cmp(&b.entry().path));
    delta
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (BandId, SourceId) {
        (BandId::parse("b").unwrap(), SourceId::parse("s").unwrap())
    }

    fn cat(path: &str, id: &str, hash: &str) -> FileEntry {
        let (band, source) = ids();
        FileEntry {
            band,
            source,
            file_id: id.into(),
            path: path.into(),
            size: 1,
            hash: hash.into(),
            modified_ms: 1,
        }
    }

    fn obs(path: &str, hash: &str, modified_ms: i64) -> Observed {
        Observed {
            path: path.into(),
            size: 1,
            modified_ms,
            hash: hash.into(),
        }
    }

    fn run(catalog: &[FileEntry], observed: &[Observed], unreadable: &[&str]) -> Delta {
        let (band, source) = ids();
        let unreadable = unreadable.iter().map(|s| s.to_string()).collect();
        diff(&band, &source, catalog, observed, &unreadable, |o| {
            format!("new:{}", o.path)
        })
    }

    fn summary(d: &Delta) -> Vec<(ItemAction, String, String)> {
        d.changes
            .iter()
            .map(|c| {
                (
                    c.action(),
                    c.entry().path.clone(),
                    c.entry().file_id.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn created_updated_deleted() {
        let catalog = [
            cat("a.pdf", "1", "h1"),
            cat("b.pdf", "2", "h2"),
            cat("c.pdf", "3", "h3"),
        ];
        let d = run(
            &catalog,
            &[
                obs("a.pdf", "h1", 1),
                obs("b.pdf", "h2x", 2),
                obs("d.pdf", "h4", 1),
            ],
            &[],
        );
        assert_eq!(
            summary(&d),
            [
                (ItemAction::Updated, "b.pdf".into(), "2".into()),
                (ItemAction::Deleted, "c.pdf".into(), "3".into()),
                (ItemAction::Created, "d.pdf".into(), "new:d.pdf".into()),
            ]
        );
        assert!(d.refreshed.is_empty());
    }

    #[test]
    fn a_touch_is_not_an_update() {
        let d = run(&[cat("a.pdf", "1", "h1")], &[obs("a.pdf", "h1", 99)], &[]);
        assert!(d.changes.is_empty());
        assert_eq!(d.refreshed.len(), 1);
        assert_eq!(d.refreshed[0].modified_ms, 99);
        assert_eq!(d.refreshed[0].file_id, "1");
    }

    #[test]
    fn rename_and_move_keep_the_file_id() {
        let catalog = [cat("charts/a.pdf", "1", "h1"), cat("b.mp3", "2", "h2")];
        let d = run(
            &catalog,
            &[
                obs("charts/renamed.pdf", "h1", 1),
                obs("takes/b.mp3", "h2", 1),
            ],
            &[],
        );
        assert_eq!(
            summary(&d),
            [
                (ItemAction::Moved, "charts/renamed.pdf".into(), "1".into()),
                (ItemAction::Moved, "takes/b.mp3".into(), "2".into()),
            ]
        );
        let Change::Moved { before, .. } = &d.changes[0] else {
            panic!()
        };
        assert_eq!(before.path, "charts/a.pdf");
    }

    #[test]
    fn two_copies_of_one_content_pair_once() {
        // One file moved and a copy of it created: one move, one create.
        let d = run(
            &[cat("a.pdf", "1", "h")],
            &[obs("x.pdf", "h", 1), obs("y.pdf", "h", 1)],
            &[],
        );
        let s = summary(&d);
        assert_eq!(s[0], (ItemAction::Moved, "x.pdf".into(), "1".into()));
        assert_eq!(
            s[1],
            (ItemAction::Created, "y.pdf".into(), "new:y.pdf".into())
        );
    }

    #[test]
    fn files_under_an_unreadable_folder_are_not_deleted() {
        let catalog = [
            cat("charts/a.pdf", "1", "h1"),
            cat("charts/live/b.pdf", "2", "h2"),
            cat("chartsx.pdf", "3", "h3"),
        ];
        let d = run(&catalog, &[], &["charts"]);
        assert_eq!(
            summary(&d),
            [(ItemAction::Deleted, "chartsx.pdf".into(), "3".into())]
        );
        assert!(
            run(&catalog, &[], &[""]).is_empty(),
            "an unreadable root shadows everything"
        );
    }

    #[test]
    fn unreadable_files_are_not_deleted() {
        let d = run(&[cat("a.pdf", "1", "h1")], &[], &["a.pdf"]);
        assert!(d.is_empty());
    }

    #[test]
    fn nothing_changed_is_empty() {
        let catalog = [cat("a.pdf", "1", "h1")];
        assert!(run(&catalog, &[obs("a.pdf", "h1", 1)], &[]).is_empty());
        assert!(run(&[], &[], &[]).is_empty());
    }
}
