//! What a deleted source leaves behind, cleared by the scheduler's prune pass, a bounded
//! number of entries per tick; and the calendar tombstones past their retention.
//!
//! - **A deleted source's catalog.** DELETE of a source first marks it for purging
//!   ([`SourcePurge`], with the kind it had), then deletes it. Each tick takes, for each
//!   mark, up to [`PAGES_PER_TICK`] pages of its catalog (the first [`PAGE`] entries, in
//!   file-id order, so no cursor is needed: a page is gone once done), publishes for
//!   each entry the event a sync would have published had it vanished at the source
//!   (`file.deleted` for files, `calendar.event.cancelled` for live calendar events;
//!   none for Drive folder entries and calendar tombstones, which members never got as
//!   items), then deletes the page: events first, then the catalog, so a tick that dies
//!   in between republishes the same ids (the log keeps one copy). Members thus drop
//!   what the source brought them, as they would had the files gone one by one.
//! - **The mark lives on for [`GRACE`]** after the delete, even once the catalog is
//!   empty: a pass that was running when the source went may still write a chunk to the
//!   catalog before its next source write stops it (see `Operations::abandon`), and the
//!   next ticks clear that too. A mark whose source exists again (created anew by the
//!   operator) is left alone during the grace and then dropped: the new source's first,
//!   full sync compares what is left of the catalog with its place.
//! - **Operations and their items** go once the grace is over (a pass stopped by the
//!   delete has recorded its end by then): the band's listing is walked oldest first,
//!   [`OPERATIONS_PAGE`] entries per mark per tick, from where the last tick stopped (kept
//!   in the mark), up to the first operation started after the delete; those of the
//!   source go with their items. The mark goes when the catalog is empty and the walk
//!   over.
//! - **Calendar tombstones.** A cancelled occurrence of a recurring event is kept as a
//!   tombstone row so that listing it again makes no second `calendar.event.cancelled`;
//!   once the occurrence's original start is more than [`calendar::TOMBSTONE_RETENTION`]
//!   ago it is dropped, at most [`TOMBSTONES_PER_TICK`] per source per tick, and the
//!   calendar engine ignores a first-seen cancellation of an occurrence that far back,
//!   so a dropped tombstone listed again stays silent.

use super::calendar::{self, calendar_event, is_tombstone};
use super::delta::Change;
use super::drive::is_folder_entry;
use super::{file_event, short_hash};
use crate::model::*;
use crate::ports::{CatalogStore, Clock, OperationStore, PortError, SourceStore};
use crate::publish::Publisher;
use crate::wire::events::EventKind;
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::Arc;

/// Catalog entries read, announced and deleted at a time.
pub const PAGE: usize = 100;
/// Pages per mark per tick: at most 500 entries of a deleted source per tick.
pub const PAGES_PER_TICK: usize = 5;
/// How long a mark outlives its source: longer than any pass runs (the sync worker's
/// timeout is 15 minutes).
pub const GRACE: TimeDelta = TimeDelta::hours(1);
/// Operations of a band's listing looked at per mark per tick.
pub const OPERATIONS_PAGE: usize = 100;
/// Tombstones dropped per calendar source per tick.
pub const TOMBSTONES_PER_TICK: usize = 500;

/// What one prune pass over a band did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Catalog entries of deleted sources removed (each announced, if members had it).
    pub purged: u64,
    /// Marks dropped (their catalog cleared and their grace over).
    pub marks_done: u64,
    /// Calendar tombstones past their retention, dropped.
    pub tombstones: u64,
    /// Operations of deleted sources removed, with their items.
    pub operations: u64,
}

impl PurgeReport {
    pub fn add(&mut self, other: &PurgeReport) {
        self.purged += other.purged;
        self.marks_done += other.marks_done;
        self.tombstones += other.tombstones;
        self.operations += other.operations;
    }
}

/// The event members get for a purged catalog entry, if they ever had it.
fn purge_event(kind: SourceKind, entry: &FileEntry) -> Option<EventKind> {
    let gone = Change::Deleted(entry.clone());
    match kind {
        SourceKind::Folder => Some(file_event(&gone)),
        SourceKind::Drive if !is_folder_entry(entry) => Some(file_event(&gone)),
        SourceKind::Calendar if !is_tombstone(entry) => Some(calendar_event(&gone, None)),
        _ => None,
    }
}

/// Clears deleted sources' catalogs and old calendar tombstones (see the module doc).
pub struct Purger {
    sources: Arc<dyn SourceStore>,
    catalog: Arc<dyn CatalogStore>,
    operations: Arc<dyn OperationStore>,
    publisher: Publisher,
    clock: Arc<dyn Clock>,
}

impl Purger {
    pub fn new(
        sources: Arc<dyn SourceStore>,
        catalog: Arc<dyn CatalogStore>,
        operations: Arc<dyn OperationStore>,
        publisher: Publisher,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            sources,
            catalog,
            operations,
            publisher,
            clock,
        }
    }

    /// One pass over a band: its marks, then its calendar sources' tombstones.
    #[tracing::instrument(skip(self), fields(band = %band))]
    pub async fn prune_band(&self, band: &BandId) -> Result<PurgeReport, PortError> {
        let now = self.clock.now();
        let mut report = PurgeReport::default();
        for mark in self.sources.purges(band).await? {
            self.purge(&mark, now, &mut report).await?;
        }
        let cutoff = now - calendar::TOMBSTONE_RETENTION;
        for source in self.sources.list_sources(band).await? {
            if source.kind == SourceKind::Calendar {
                report.tombstones += self.prune_tombstones(&source, cutoff).await?;
            }
        }
        Ok(report)
    }

    async fn purge(
        &self,
        mark: &SourcePurge,
        now: DateTime<Utc>,
        report: &mut PurgeReport,
    ) -> Result<(), PortError> {
        let graced = now - mark.deleted_at > GRACE;
        if self
            .sources
            .get_source(&mark.band, &mark.source)
            .await?
            .is_some()
        {
            // Created again: its own sync takes the catalog over.
            if graced {
                self.sources.forget_purge(&mark.band, &mark.source).await?;
                report.marks_done += 1;
            }
            return Ok(());
        }
        let emptied = self.purge_catalog(mark, now, report).await?;
        // Operations only after the grace: a pass stopped by the delete records its
        // operation's end then, and none is still running.
        if !graced {
            return Ok(());
        }
        let mut mark = mark.clone();
        if !mark.operations_done {
            self.purge_operations(&mut mark, report).await?;
        }
        if emptied && mark.operations_done {
            self.sources.forget_purge(&mark.band, &mark.source).await?;
            report.marks_done += 1;
            tracing::info!(source = %mark.source, "a deleted source's catalog and operations are purged");
        }
        Ok(())
    }

    /// Up to [`PAGES_PER_TICK`] pages of the catalog; true once it is empty.
    async fn purge_catalog(
        &self,
        mark: &SourcePurge,
        now: DateTime<Utc>,
        report: &mut PurgeReport,
    ) -> Result<bool, PortError> {
        let channel = ChannelName::Band(mark.band.clone());
        let deleted = mark.deleted_at.timestamp_millis().to_string();
        for _ in 0..PAGES_PER_TICK {
            let page = self
                .catalog
                .first_files(&mark.band, &mark.source, PAGE)
                .await?;
            if page.is_empty() {
                return Ok(true);
            }
            let events: Vec<NewEvent> = page
                .iter()
                .filter_map(|e| {
                    let kind = purge_event(mark.kind, e)?;
                    let id = short_hash(&[mark.source.as_str(), &deleted, &e.file_id, &e.hash]);
                    Some(NewEvent::new(format!("purge:{id}"), now, kind))
                })
                .collect();
            self.publisher.publish(&channel, &events).await?;
            let ids: Vec<String> = page.iter().map(|e| e.file_id.clone()).collect();
            self.catalog
                .delete_files(&mark.band, &mark.source, &ids)
                .await?;
            report.purged += page.len() as u64;
        }
        Ok(false)
    }

    /// One page of the band's operations, oldest first from where the walk stopped:
    /// those of the source (started before its delete) go. The walk ends at the first
    /// operation started after the delete, or at the end of the listing.
    async fn purge_operations(
        &self,
        mark: &mut SourcePurge,
        report: &mut PurgeReport,
    ) -> Result<(), PortError> {
        let page = self
            .operations
            .operations_after(&mark.band, mark.operations_after.as_ref(), OPERATIONS_PAGE)
            .await?;
        let mut done = page.len() < OPERATIONS_PAGE;
        for op in &page {
            if op.started_at > mark.deleted_at {
                done = true;
                break;
            }
            if op.source == mark.source {
                self.operations.delete_operation(op).await?;
                report.operations += 1;
            }
            mark.operations_after = Some((op.started_at, op.id.clone()));
        }
        mark.operations_done = done;
        self.sources.put_purge(mark).await
    }

    async fn prune_tombstones(
        &self,
        source: &Source,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, PortError> {
        let cutoff_ms = cutoff.timestamp_millis();
        let old: Vec<String> = self
            .catalog
            .list_files(&source.band, &source.id)
            .await?
            .into_iter()
            // `modified_ms`: the occurrence's original start (0 for tombstones of older
            // builds, which recorded `updated` when Google sent one: dropped too).
            .filter(|e| is_tombstone(e) && e.modified_ms < cutoff_ms)
            .take(TOMBSTONES_PER_TICK)
            .map(|e| e.file_id)
            .collect();
        if !old.is_empty() {
            self.catalog
                .delete_files(&source.band, &source.id, &old)
                .await?;
            tracing::info!(source = %source.id, n = old.len(), "calendar tombstones past their retention dropped");
        }
        Ok(old.len() as u64)
    }
}
