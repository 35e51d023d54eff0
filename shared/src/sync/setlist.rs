//! The setlist source: a range of a Google Sheet, one song a row, followed by diffing the
//! rows against the last snapshot and publishing one `setlist.updated` event per change.
//!
//! # The source
//!
//! `location` is the spreadsheet id, optionally followed by `#` and an A1 range:
//! `1AbC…` or `1AbC…#Setlist!A1:F`. Without a range, [`DEFAULT_RANGE`] (`A:Z`) is read:
//! every row of columns A to Z of the first visible sheet (A1 notation without a sheet
//! name means that sheet), so a setlist that grows past row 1000 is not cut off.
//!
//! # The rows
//!
//! The first row of the range is the header (column names); every later row with a
//! non-blank cell is a setlist entry (blank rows are dropped, so positions count entries:
//! 1 is the first song). Columns without a name are called by their letter in the range
//! (`C`), a repeated name gets its occurrence (`Notes#2`). An entry's identity is its
//! key: the value of the column named `Song` (else `Title`, case-insensitively; else the
//! first column), trimmed, with repeats disambiguated by occurrence (`Encore`,
//! `Encore#2`) and a blank key called `(blank)`.
//!
//! [`diff`] compares two snapshots: keys only in the new one are `added`, only in the
//! old one `removed`; of the keys in both, those outside a longest common subsequence
//! of the two orders are `moved` (so one insertion moves nothing else), and those whose
//! cells differ, compared column by column by name, are `edited`. A header change is
//! `columns_changed`.
//!
//! # Where the snapshot lives, and why
//!
//! In the source's `cursor`, as compact JSON ([`SheetCursor`]): the snapshot is a
//! sheet's worth of short strings, read and written whole once per sync, and belongs to
//! the source exactly as a Drive page token does. The catalog is made of files (size,
//! hash, path) and would need one entry per row, written one by one with no atomic
//! switch from the old snapshot to the new. The source record is capped as it is stored
//! ([`MAX_SOURCE_RECORD_BYTES`], well under DynamoDB's 400 KB item): the cursor is JSON
//! inside the record's JSON body, so it is escaped twice (a cell of quotes stores four
//! bytes per character), and only the record's final size says whether it fits. A sheet
//! over it fails the operation with a clear error instead of writing a truncated
//! snapshot or a write DynamoDB refuses on every redelivery.
//!
//! # Exactly one event per change, across redeliveries
//!
//! The operation id is the job id, the event id `<operation>:setlist`. Before the event
//! is published, the new snapshot is written to the cursor as *pending* (a write-ahead
//! record: the committed snapshot does not move); after it is published and the items
//! recorded, it is committed. A redelivery that finds its own pending snapshot
//! republishes the same diff under the same id (the log keeps one copy) without reading
//! the sheet again, so a sheet edited in between cannot change what was announced; one
//! that finds its own committed snapshot only completes the operation. A pending
//! snapshot of another operation (one that died for good) is published under that
//! operation's id and committed before the new job reads the sheet.

use super::SyncError;
use super::operation::{OperationRun, Operations, SourcePass};
use crate::google::ports::SourceApis;
use crate::google::sheets::column_letters;
use crate::model::*;
use crate::ports::PortError;
use crate::wire::events::{EventKind, SetlistUpdated};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

/// What a sheet source reads when its location names no range.
pub const DEFAULT_RANGE: &str = "A:Z";

/// The largest cursor (committed plus pending snapshot, as JSON) written to a source.
pub const MAX_CURSOR_BYTES: usize = 256 * 1024;

/// The largest source record, measured as the store writes it (the source serialised to
/// JSON, the cursor escaped inside it): DynamoDB's item limit is 400 KB for the body,
/// keys and attribute names together, so this leaves room for the rest.
pub const MAX_SOURCE_RECORD_BYTES: usize = 360_000;

/// The size of `source` as a store writes it (its JSON body).
pub fn stored_size(source: &Source) -> Result<usize, SyncError> {
    serde_json::to_vec(source)
        .map(|b| b.len())
        .map_err(|e| SyncError::Port(PortError::Backend(e.into())))
}

/// The largest `setlist.updated` payload: a broadcast message must stay under SQS's
/// 256 KiB with its envelope.
pub const MAX_EVENT_BYTES: usize = 200 * 1024;

/// The names a key column goes by, in order of preference (compared lowercased).
const KEY_COLUMNS: [&str; 2] = ["song", "title"];

/// A sheet source's `location` that names nothing to read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("sheet source location {0:?} has no spreadsheet id")]
    NoSpreadsheet(String),
    #[error("sheet source location {0:?} has an empty range after '#'")]
    EmptyRange(String),
}

/// A sheet source's `location`: the spreadsheet id and the range to read.
pub fn parse_location(location: &str) -> Result<(&str, &str), LocationError> {
    let (id, range) = match location.split_once('#') {
        Some((id, range)) => (id.trim(), range.trim()),
        None => (location.trim(), DEFAULT_RANGE),
    };
    if id.is_empty() {
        return Err(LocationError::NoSpreadsheet(location.to_owned()));
    }
    if range.is_empty() {
        return Err(LocationError::EmptyRange(location.to_owned()));
    }
    Ok((id, range))
}

/// The rows a sync saw: the header and the non-blank rows after it, each without its
/// trailing empty cells.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// One setlist entry as [`diff`] compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    /// 1-based position among the entries.
    pub position: usize,
    /// Column name → value ("" for an empty cell), every column of the snapshot.
    pub cells: BTreeMap<String, String>,
}

fn trimmed(row: &[String]) -> Vec<String> {
    let len = row
        .iter()
        .rposition(|c| !c.trim().is_empty())
        .map_or(0, |i| i + 1);
    row[..len].to_vec()
}

/// `name`, or `name#2`, `name#3`… for its later occurrences.
fn with_occurrence(seen: &mut HashMap<String, usize>, name: String) -> String {
    let n = seen.entry(name.clone()).or_insert(0);
    *n += 1;
    match *n {
        1 => name,
        n => format!("{name}#{n}"),
    }
}

impl Snapshot {
    /// From the values of a range, as `values.get` returns them.
    pub fn from_values(values: &[Vec<String>]) -> Self {
        let Some((header, rows)) = values.split_first() else {
            return Self::default();
        };
        Self {
            header: trimmed(header),
            rows: rows
                .iter()
                .map(|r| trimmed(r))
                .filter(|r| !r.is_empty())
                .collect(),
        }
    }

    /// The column names: the header's, trimmed; the column letter for an unnamed one;
    /// repeats with their occurrence. As many as the widest row needs.
    pub fn columns(&self) -> Vec<String> {
        let width = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let mut seen = HashMap::new();
        (0..width)
            .map(|i| {
                let name = self.header.get(i).map_or("", |h| h.trim());
                let name = if name.is_empty() {
                    column_letters(i)
                } else {
                    name.to_owned()
                };
                with_occurrence(&mut seen, name)
            })
            .collect()
    }

    /// The index of the key column (see the module documentation).
    pub fn key_column(&self) -> usize {
        let columns = self.columns();
        KEY_COLUMNS
            .iter()
            .find_map(|wanted| columns.iter().position(|c| c.to_lowercase() == *wanted))
            .unwrap_or(0)
    }

    /// The entries, in order, with their keys.
    pub fn entries(&self) -> Vec<Entry> {
        let columns = self.columns();
        let key_column = self.key_column();
        let mut seen = HashMap::new();
        self.rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let key = row.get(key_column).map_or("", |k| k.trim());
                let key = if key.is_empty() { "(blank)" } else { key };
                Entry {
                    key: with_occurrence(&mut seen, key.to_owned()),
                    position: i + 1,
                    cells: columns
                        .iter()
                        .enumerate()
                        .map(|(c, name)| (name.clone(), row.get(c).cloned().unwrap_or_default()))
                        .collect(),
                }
            })
            .collect()
    }
}

// The row diff's parts are the `setlist.updated` payload's, as clients get them.
pub use crate::wire::events::{CellChange, ColumnsChange, RowChange, RowEdit, RowMove};

/// What changed between two snapshots. Each list is in position order (`moved` by new
/// position).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RowDiff {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns_changed: Option<ColumnsChange>,
    pub added: Vec<RowChange>,
    pub removed: Vec<RowChange>,
    pub moved: Vec<RowMove>,
    pub edited: Vec<RowEdit>,
}

impl RowDiff {
    pub fn is_empty(&self) -> bool {
        self.columns_changed.is_none()
            && self.added.is_empty()
            && self.removed.is_empty()
            && self.moved.is_empty()
            && self.edited.is_empty()
    }
}

/// The indexes (into `seq`) of one longest strictly increasing subsequence: patience
/// sorting, O(n log n). Ties resolve the same way every time.
fn longest_increasing(seq: &[usize]) -> HashSet<usize> {
    // tails[k]: index into seq of the smallest tail of an increasing run of length k+1.
    let mut tails: Vec<usize> = Vec::new();
    let mut previous: Vec<Option<usize>> = vec![None; seq.len()];
    for (i, &value) in seq.iter().enumerate() {
        let k = tails.partition_point(|&t| seq[t] < value);
        previous[i] = k.checked_sub(1).map(|p| tails[p]);
        if k == tails.len() {
            tails.push(i);
        } else {
            tails[k] = i;
        }
    }
    let mut kept = HashSet::new();
    let mut at = tails.last().copied();
    while let Some(i) = at {
        kept.insert(i);
        at = previous[i];
    }
    kept
}

/// Compare two snapshots (see the module documentation). Pure.
pub fn diff(old: &Snapshot, new: &Snapshot) -> RowDiff {
    let before = old.entries();
    let after = new.entries();
    let old_by_key: HashMap<&str, &Entry> = before.iter().map(|e| (e.key.as_str(), e)).collect();
    let new_keys: HashSet<&str> = after.iter().map(|e| e.key.as_str()).collect();
    let mut out = RowDiff::default();
    let (old_columns, new_columns) = (old.columns(), new.columns());
    if old_columns != new_columns {
        out.columns_changed = Some(ColumnsChange {
            before: old_columns,
            after: new_columns,
        });
    }
    out.removed = before
        .iter()
        .filter(|e| !new_keys.contains(e.key.as_str()))
        .map(|e| RowChange {
            position: e.position,
            key: e.key.clone(),
            row: e.cells.clone(),
        })
        .collect();
    // The entries in both, in their new order, with their old positions.
    let mut common: Vec<(&Entry, &Entry)> = Vec::new();
    for e in &after {
        match old_by_key.get(e.key.as_str()) {
            None => out.added.push(RowChange {
                position: e.position,
                key: e.key.clone(),
                row: e.cells.clone(),
            }),
            Some(o) => common.push((o, e)),
        }
    }
    // Keys are unique within a snapshot, so the common keys' old positions in new
    // order are a permutation: its longest increasing run is a longest common
    // subsequence of the two orders. The rest moved.
    let old_positions: Vec<usize> = common.iter().map(|(o, _)| o.position).collect();
    let in_order = longest_increasing(&old_positions);
    for (i, (o, n)) in common.iter().enumerate() {
        if !in_order.contains(&i) {
            out.moved.push(RowMove {
                key: n.key.clone(),
                from: o.position,
                to: n.position,
            });
        }
        let names: std::collections::BTreeSet<&String> =
            o.cells.keys().chain(n.cells.keys()).collect();
        let changes: BTreeMap<String, CellChange> = names
            .into_iter()
            .filter_map(|name| {
                let b = o.cells.get(name).map_or("", String::as_str);
                let a = n.cells.get(name).map_or("", String::as_str);
                (a != b).then(|| {
                    (
                        name.clone(),
                        CellChange {
                            before: b.to_owned(),
                            after: a.to_owned(),
                        },
                    )
                })
            })
            .collect();
        if !changes.is_empty() {
            out.edited.push(RowEdit {
                key: n.key.clone(),
                position: n.position,
                changes,
            });
        }
    }
    out
}

/// What a sheet source keeps in its `cursor` (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SheetCursor {
    /// The committed snapshot: what the last published event brought clients to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
    /// The operation that committed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// A snapshot whose event is being published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub op: String,
    /// A full sync: the event is an initial one (every row added), whatever was
    /// committed before.
    #[serde(default)]
    pub full: bool,
    pub snapshot: Snapshot,
}

impl SheetCursor {
    /// A source's cursor; anything unreadable counts as none (the next event is then
    /// an initial one, which is safe for clients).
    pub fn parse(cursor: Option<&str>) -> Self {
        let Some(text) = cursor else {
            return Self::default();
        };
        serde_json::from_str(text).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "unreadable sheet cursor: starting from no snapshot");
            Self::default()
        })
    }

    fn encode(&self) -> Result<String, SyncError> {
        serde_json::to_string(self).map_err(|e| SyncError::Port(PortError::Backend(e.into())))
    }

    /// What the pending snapshot's event compares with.
    fn base_of(&self, pending: &Pending) -> Option<&Snapshot> {
        if pending.full {
            None
        } else {
            self.snapshot.as_ref()
        }
    }
}

/// Where a sheet source reads, for its events.
struct Target<'a> {
    source: &'a SourceId,
    spreadsheet_id: &'a str,
    range: &'a str,
}

/// The diff from `base` (none: a first sync, every row added) to `new`, and its
/// `setlist.updated` event.
fn setlist_event(
    target: &Target<'_>,
    base: Option<&Snapshot>,
    new: &Snapshot,
) -> (RowDiff, EventKind) {
    let initial = base.is_none();
    let mut diff = diff(base.unwrap_or(&Snapshot::default()), new);
    if initial {
        diff.columns_changed = None;
    }
    let event = EventKind::SetlistUpdated(SetlistUpdated {
        source: target.source.clone(),
        spreadsheet_id: target.spreadsheet_id.to_owned(),
        range: target.range.to_owned(),
        rows: new.rows.len() as u64,
        columns: new.columns(),
        initial,
        added: diff.added.clone(),
        removed: diff.removed.clone(),
        moved: diff.moved.clone(),
        edited: diff.edited.clone(),
        columns_changed: diff.columns_changed.clone(),
    });
    (diff, event)
}

/// The SyncItems of a diff: (file id = the row key, action, path = `row N: key`).
fn row_items(diff: &RowDiff) -> Vec<(String, ItemAction, String)> {
    let rows = (diff.added.iter())
        .map(|r| (&r.key, ItemAction::Created, r.position))
        .chain(
            diff.removed
                .iter()
                .map(|r| (&r.key, ItemAction::Deleted, r.position)),
        )
        .chain(diff.moved.iter().map(|m| (&m.key, ItemAction::Moved, m.to)))
        .chain(
            diff.edited
                .iter()
                .map(|e| (&e.key, ItemAction::Updated, e.position)),
        );
    rows.map(|(key, action, position)| (key.clone(), action, format!("row {position}: {key}")))
        .collect()
}

/// A sheet source: read the range, diff it against the committed snapshot, publish
/// one `setlist.updated`, record one item per row change, commit the snapshot.
pub(super) async fn sync(
    ops: &Operations,
    google: &dyn SourceApis,
    pass: SourcePass<'_>,
) -> Result<Option<SyncOperation>, SyncError> {
    let SourcePass {
        job,
        mut source,
        existing,
        ..
    } = pass;
    let client = google.sheets_api(&job.band).await?;
    let started = Instant::now();
    let location = source.location.clone();
    let (spreadsheet_id, range) = match parse_location(&location) {
        Ok(parsed) => parsed,
        Err(error) => return ops.fail(job, existing, error.to_string()).await.map(Some),
    };
    let source_id = source.id.clone();
    let target = Target {
        source: &source_id,
        spreadsheet_id,
        range,
    };
    let mut cursor = SheetCursor::parse(source.cursor.as_deref());

    // An event that may have gone out: finish it before anything else.
    if let Some(pending) = cursor.pending.clone() {
        if pending.op == job.id {
            tracing::info!("redelivered: republishing the pending setlist diff");
            let run = ops.begin(job, existing).await?;
            return finish(ops, run, source, &target, cursor, pending, started)
                .await
                .map(Some);
        }
        tracing::warn!(operation = %pending.op, "finishing another operation's setlist event");
        let channel = ChannelName::Band(job.band.clone());
        let (_, kind) = setlist_event(&target, cursor.base_of(&pending), &pending.snapshot);
        let event = ops.event(format!("{}:setlist", pending.op), kind);
        ops.publish(&channel, &[event]).await?;
        cursor = commit(ops, &mut source, pending).await?;
    }
    if cursor.op.as_deref() == Some(job.id.as_str()) {
        // Committed by an earlier delivery that died before completing.
        let Some(op) = existing else {
            return Ok(None);
        };
        let run = ops.begin(job, Some(op)).await?;
        let rows = cursor.snapshot.as_ref().map_or(0, |s| s.rows.len());
        return complete(ops, run, source, rows, started).await.map(Some);
    }

    let values = match client.get_values(spreadsheet_id, range).await {
        Ok(values) => values,
        Err(e) if e.is_permanent() => {
            let error = format!("cannot read spreadsheet {spreadsheet_id} range {range}: {e}");
            return ops.fail(job, existing, error).await.map(Some);
        }
        Err(e) => return Err(e.into()),
    };
    let pending = Pending {
        op: job.id.clone(),
        full: job.full,
        snapshot: Snapshot::from_values(&values.values),
    };
    let base = cursor.base_of(&pending);
    let (diff, kind) = setlist_event(&target, base, &pending.snapshot);
    let changed = base.is_none() || !diff.is_empty();
    if existing.is_none() && job.trigger.is_background() && !changed {
        tracing::debug!("setlist unchanged");
        return Ok(None);
    }
    let rows = pending.snapshot.rows.len();
    let written = SheetCursor {
        pending: Some(pending.clone()),
        ..cursor.clone()
    }
    .encode()?;
    // The payload as the log stores it.
    let event_bytes = kind.into_parts().1.to_string().len();
    // The record as the store writes it: the cursor's JSON escaped again in the body.
    let record_bytes = stored_size(&Source {
        cursor: Some(written.clone()),
        ..source.clone()
    })?;
    let too_large = if written.len() > MAX_CURSOR_BYTES {
        Some(format!(
            "the setlist is too large to keep: {} bytes of snapshot, at most {MAX_CURSOR_BYTES}; narrow the range of {spreadsheet_id}",
            written.len()
        ))
    } else if record_bytes > MAX_SOURCE_RECORD_BYTES {
        Some(format!(
            "the setlist is too large to keep: {record_bytes} bytes of stored source record, at most {MAX_SOURCE_RECORD_BYTES}; narrow the range of {spreadsheet_id}"
        ))
    } else if event_bytes > MAX_EVENT_BYTES {
        Some(format!(
            "the setlist change is too large to publish: {event_bytes} bytes, at most {MAX_EVENT_BYTES}; narrow the range of {spreadsheet_id}"
        ))
    } else {
        None
    };
    if let Some(error) = too_large {
        return ops.fail(job, existing, error).await.map(Some);
    }
    let run = ops.begin(job, existing).await?;
    if !changed {
        return complete(ops, run, source, rows, started).await.map(Some);
    }
    source.cursor = Some(written);
    ops.put_cursor(&mut source).await?;
    finish(ops, run, source, &target, cursor, pending, started)
        .await
        .map(Some)
}

/// Publish the pending snapshot's event, record its items, commit it, complete.
async fn finish(
    ops: &Operations,
    mut run: OperationRun,
    mut source: Source,
    target: &Target<'_>,
    cursor: SheetCursor,
    pending: Pending,
    started: Instant,
) -> Result<SyncOperation, SyncError> {
    let (diff, kind) = setlist_event(target, cursor.base_of(&pending), &pending.snapshot);
    let event = ops.event(format!("{}:setlist", run.op.id), kind);
    ops.publish(&run.channel, &[event]).await?;
    for (file_id, action, path) in row_items(&diff) {
        if let Some(item) = run.synced_item(file_id, action, path) {
            ops.put_item(&item).await?;
        }
    }
    let rows = pending.snapshot.rows.len();
    commit(ops, &mut source, pending).await?;
    complete(ops, run, source, rows, started).await
}

/// Make the pending snapshot the committed one.
async fn commit(
    ops: &Operations,
    source: &mut Source,
    pending: Pending,
) -> Result<SheetCursor, SyncError> {
    let committed = SheetCursor {
        op: Some(pending.op),
        snapshot: Some(pending.snapshot),
        pending: None,
    };
    source.cursor = Some(committed.encode()?);
    ops.put_cursor(source).await?;
    Ok(committed)
}

async fn complete(
    ops: &Operations,
    run: OperationRun,
    source: Source,
    rows: usize,
    started: Instant,
) -> Result<SyncOperation, SyncError> {
    let metrics = SyncMetrics {
        seen: rows as u64,
        synced: run.synced(),
        failed: 0,
        skipped: 0,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    ops.complete(run.op, source, metrics, &[]).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snap(rows: &[&[&str]]) -> Snapshot {
        let values: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect();
        Snapshot::from_values(&values)
    }

    /// A setlist with a Song and a Key column, one row per song (key = "<song> key").
    fn songs(names: &[&str]) -> Snapshot {
        let mut rows = vec![vec!["Song".to_owned(), "Key".to_owned()]];
        rows.extend(
            names
                .iter()
                .map(|n| vec![n.to_string(), format!("{n} key")]),
        );
        Snapshot::from_values(&rows)
    }

    fn moves(d: &RowDiff) -> Vec<(&str, usize, usize)> {
        d.moved
            .iter()
            .map(|m| (m.key.as_str(), m.from, m.to))
            .collect()
    }

    fn keyed(changes: &[RowChange]) -> Vec<(usize, &str)> {
        changes
            .iter()
            .map(|c| (c.position, c.key.as_str()))
            .collect()
    }

    #[test]
    fn locations_name_the_spreadsheet_and_optionally_a_range() {
        assert_eq!(parse_location("1AbC"), Ok(("1AbC", DEFAULT_RANGE)));
        assert_eq!(
            parse_location("1AbC#Setlist!A1:F"),
            Ok(("1AbC", "Setlist!A1:F"))
        );
        assert_eq!(
            parse_location(" 1AbC # 'Gig 2'!A:D "),
            Ok(("1AbC", "'Gig 2'!A:D"))
        );
        for bad in ["", "#Sheet1", "1AbC#", "  "] {
            assert!(parse_location(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn snapshots_drop_blank_rows_and_name_every_column() {
        // GIVEN a header with an unnamed and a repeated column, blank rows and a row
        // wider than the header
        let s = snap(&[
            &["Song", "", "Notes", " Notes ", ""],
            &["Blue Bossa", "Cm", "fast", "", ""],
            &[],
            &["", "  ", ""],
            &["So What", "Dm", "", "modal", "", "extra"],
        ]);
        // THEN the header and rows lose their trailing empties, blank rows are gone
        assert_eq!(s.header, ["Song", "", "Notes", " Notes "]);
        assert_eq!(s.rows.len(), 2);
        // AND columns are named by header, letter or occurrence
        assert_eq!(s.columns(), ["Song", "B", "Notes", "Notes#2", "E", "F"]);
        let entries = s.entries();
        assert_eq!(entries[1].key, "So What");
        assert_eq!(entries[1].position, 2);
        assert_eq!(entries[1].cells["Notes#2"], "modal");
        assert_eq!(entries[1].cells["F"], "extra");
        assert_eq!(entries[0].cells["F"], "");
        // AND an empty range is an empty snapshot
        assert_eq!(Snapshot::from_values(&[]), Snapshot::default());
        assert!(Snapshot::default().entries().is_empty());
    }

    #[test]
    fn the_key_is_song_then_title_then_the_first_column() {
        assert_eq!(snap(&[&["#", "Title", "SONG"]]).key_column(), 2);
        assert_eq!(snap(&[&["#", "title", "Key"]]).key_column(), 1);
        assert_eq!(snap(&[&["#", "Tune", "Key"]]).key_column(), 0);
        let s = snap(&[&["Key", "Song"], &["Cm", " Blue Bossa "], &["Dm", ""]]);
        let keys: Vec<String> = s.entries().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["Blue Bossa", "(blank)"]);
    }

    #[test]
    fn added_removed_and_edited_rows_with_their_cells() {
        // GIVEN a setlist where one song is dropped, one added and one's key changes
        let old = songs(&["Blue Bossa", "So What", "Autumn Leaves"]);
        let mut new = songs(&["Blue Bossa", "Autumn Leaves", "Footprints"]);
        new.rows[1][1] = "Em".into();
        // WHEN they are compared
        let d = diff(&old, &new);
        // THEN each change is reported once, with positions and cells
        assert_eq!(keyed(&d.removed), [(2, "So What")]);
        assert_eq!(
            d.removed[0].row,
            BTreeMap::from([
                ("Key".to_owned(), "So What key".to_owned()),
                ("Song".to_owned(), "So What".to_owned()),
            ])
        );
        assert_eq!(keyed(&d.added), [(3, "Footprints")]);
        assert_eq!(d.added[0].row["Key"], "Footprints key");
        assert_eq!(d.edited.len(), 1);
        assert_eq!(d.edited[0].key, "Autumn Leaves");
        assert_eq!(d.edited[0].position, 2);
        assert_eq!(
            d.edited[0].changes,
            BTreeMap::from([(
                "Key".to_owned(),
                CellChange {
                    before: "Autumn Leaves key".into(),
                    after: "Em".into()
                }
            )])
        );
        assert!(d.moved.is_empty(), "a removal shifts rows, it moves none");
        assert_eq!(d.columns_changed, None);
        assert!(!d.is_empty());
        // AND the same snapshot twice is no change
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn one_insertion_moves_nothing_else() {
        let old = songs(&["A", "B", "C", "D", "E"]);
        let new = songs(&["New", "A", "B", "C", "D", "E"]);
        let d = diff(&old, &new);
        assert_eq!(keyed(&d.added), [(1, "New")]);
        assert!(d.moved.is_empty());
        assert!(d.edited.is_empty());
        assert!(d.removed.is_empty());
    }

    #[test]
    fn moves_are_the_rows_outside_the_longest_common_order() {
        let old = songs(&["A", "B", "C", "D"]);
        // One row dragged to the top: only it moved.
        assert_eq!(
            moves(&diff(&old, &songs(&["D", "A", "B", "C"]))),
            [("D", 4, 1)]
        );
        // One row dragged to the bottom: only it moved.
        assert_eq!(
            moves(&diff(&old, &songs(&["B", "C", "D", "A"]))),
            [("A", 1, 4)]
        );
        // Two rows swapped far apart: both moved.
        assert_eq!(
            moves(&diff(&old, &songs(&["D", "B", "C", "A"]))),
            [("D", 4, 1), ("A", 1, 4)]
        );
        // Two neighbours swapped: one move is enough (the later one moved up).
        assert_eq!(
            moves(&diff(&old, &songs(&["B", "A", "C", "D"]))),
            [("B", 2, 1)]
        );
        // Reversed: all but one moved, in new order.
        assert_eq!(
            moves(&diff(&old, &songs(&["D", "C", "B", "A"]))),
            [("D", 4, 1), ("C", 3, 2), ("B", 2, 3)]
        );
        // A move with an insertion and a removal around it.
        let d = diff(&old, &songs(&["X", "C", "A", "D"]));
        assert_eq!(moves(&d), [("C", 3, 2)]);
        assert_eq!(keyed(&d.added), [(1, "X")]);
        assert_eq!(keyed(&d.removed), [(2, "B")]);
    }

    #[test]
    fn a_moved_and_edited_row_is_reported_as_both() {
        let old = songs(&["A", "B", "C"]);
        let mut new = songs(&["C", "A", "B"]);
        new.rows[0][1] = "Bb".into();
        let d = diff(&old, &new);
        assert_eq!(moves(&d), [("C", 3, 1)]);
        assert_eq!(d.edited.len(), 1);
        assert_eq!((d.edited[0].key.as_str(), d.edited[0].position), ("C", 1));
    }

    #[test]
    fn duplicate_songs_are_told_apart_by_occurrence() {
        // GIVEN a setlist that plays "Encore" twice
        let old = snap(&[
            &["Song", "Key"],
            &["Encore", "C"],
            &["Ballad", "F"],
            &["Encore", "D"],
        ]);
        assert_eq!(old.entries()[2].key, "Encore#2");
        // WHEN only the second one's key changes
        let mut edited = old.clone();
        edited.rows[2][1] = "E".into();
        let d = diff(&old, &edited);
        // THEN only Encore#2 is edited
        assert_eq!(d.edited.len(), 1);
        assert_eq!(d.edited[0].key, "Encore#2");
        assert_eq!(d.edited[0].position, 3);
        assert!(d.added.is_empty() && d.removed.is_empty() && d.moved.is_empty());
        // WHEN a third one is appended
        let mut third = old.clone();
        third.rows.push(vec!["Encore".into(), "G".into()]);
        let d = diff(&old, &third);
        // THEN it is Encore#3, added
        assert_eq!(keyed(&d.added), [(4, "Encore#3")]);
        assert!(d.edited.is_empty());
    }

    #[test]
    fn an_emptied_sheet_removes_every_row_and_its_columns() {
        let old = songs(&["A", "B"]);
        let d = diff(&old, &Snapshot::default());
        assert_eq!(keyed(&d.removed), [(1, "A"), (2, "B")]);
        assert_eq!(
            d.columns_changed,
            Some(ColumnsChange {
                before: vec!["Song".into(), "Key".into()],
                after: vec![],
            })
        );
        assert!(diff(&Snapshot::default(), &Snapshot::default()).is_empty());
    }

    #[test]
    fn a_header_change_is_reported_and_cells_compare_by_column_name() {
        // GIVEN the Key column renamed Tonality and a BPM column added (filled for one)
        let old = songs(&["A", "B"]);
        let new = snap(&[
            &["Song", "Tonality", "BPM"],
            &["A", "A key", "120"],
            &["B", "B key"],
        ]);
        // WHEN compared
        let d = diff(&old, &new);
        // THEN the columns change, and each row's cells move to the new names
        assert_eq!(
            d.columns_changed,
            Some(ColumnsChange {
                before: vec!["Song".into(), "Key".into()],
                after: vec!["Song".into(), "Tonality".into(), "BPM".into()],
            })
        );
        let changed: Vec<(&str, Vec<&str>)> = d
            .edited
            .iter()
            .map(|e| {
                (
                    e.key.as_str(),
                    e.changes.keys().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            changed,
            [
                ("A", vec!["BPM", "Key", "Tonality"]),
                ("B", vec!["Key", "Tonality"])
            ]
        );
        assert_eq!(d.edited[0].changes["Key"].after, "");
        assert_eq!(d.edited[0].changes["Tonality"].after, "A key");
        assert!(d.added.is_empty() && d.removed.is_empty() && d.moved.is_empty());
    }

    #[test]
    fn the_diff_serializes_in_a_stable_shape() {
        let d = diff(&songs(&["A", "B"]), &songs(&["B", "C"]));
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({
                "added": [{"position": 2, "key": "C", "row": {"Key": "C key", "Song": "C"}}],
                "removed": [{"position": 1, "key": "A", "row": {"Key": "A key", "Song": "A"}}],
                "moved": [],
                "edited": [],
            })
        );
    }

    #[test]
    fn cursors_round_trip_and_garbage_reads_as_none() {
        let cursor = SheetCursor {
            snapshot: Some(songs(&["A"])),
            op: Some("job-1".into()),
            pending: Some(Pending {
                op: "job-2".into(),
                full: false,
                snapshot: songs(&["A", "B"]),
            }),
        };
        let text = cursor.encode().unwrap();
        assert_eq!(SheetCursor::parse(Some(&text)), cursor);
        assert_eq!(SheetCursor::parse(None), SheetCursor::default());
        assert_eq!(
            SheetCursor::parse(Some("42:page-token")),
            SheetCursor::default()
        );
        assert_eq!(
            cursor.base_of(cursor.pending.as_ref().unwrap()),
            cursor.snapshot.as_ref()
        );
    }
}
