//! The lifecycle of a sync operation, the same for every source: begin (or take up
//! again) the job's operation, record its items, publish and apply its changes a chunk
//! at a time, then complete or fail it; and republish a finished one's outcome.
//!
//! The `sync.*` events are built here, each by its own function, from the operation.

use super::SyncError;
use super::delta::Change;
use super::short_hash;
use crate::model::*;
use crate::ports::{
    CatalogStore, Clock, ConfigStore, Notifier, OperationStore, SourceStore, WriteOutcome,
};
use crate::publish::Publisher;
use crate::transport::metrics::{self, Unit};
use crate::wire::events::{
    EventKind, FileChanged, SyncCompleted, SyncFailed, SyncFailure, SyncProgress, SyncStarted,
};
use std::collections::HashSet;
use std::sync::Arc;

/// Changes recorded (and events published) per step.
pub const CHUNK: usize = 50;

/// The error of an operation stopped by [`Operations::abandon`].
pub const SOURCE_GONE_OR_CHANGED: &str =
    "stopped: an operator deleted or changed the source while it synced";

/// What a change is on the channel: its event kind and payload.
pub type EventOfChange<'a> = dyn Fn(&Change) -> EventKind + Send + Sync + 'a;

/// A file source's event for a change: `file.*` with the file's catalog entry.
pub fn file_event(change: &Change) -> EventKind {
    let e = change.entry();
    let name = e.path.rsplit('/').next().unwrap_or(&e.path);
    let from_path = match change {
        Change::Moved { before, .. } => Some(before.path.clone()),
        _ => None,
    };
    EventKind::file(
        change.action(),
        FileChanged {
            source: e.source.clone(),
            file_id: e.file_id.clone(),
            path: e.path.clone(),
            name: name.to_owned(),
            size: e.size,
            hash: e.hash.clone(),
            modified_ms: e.modified_ms,
            from_path,
        },
    )
}

/// The event id of a change within an operation: the same change in a redelivered job
/// gets the same id, so the channel log keeps one copy.
fn change_event_id(op: &str, change: &Change) -> String {
    let e = change.entry();
    let action = EventKind::file_name(change.action());
    format!(
        "{op}:{}",
        short_hash(&[action, &e.file_id, &e.path, &e.hash])
    )
}

/// The first failures of an operation, as `sync.completed` lists them.
fn failure_list<'a>(failures: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<SyncFailure> {
    failures
        .take(20)
        .map(|(path, error)| SyncFailure {
            path: path.to_owned(),
            error: error.to_owned(),
        })
        .collect()
}

/// What the worker hands a source's engine: the job, the source as stored, the
/// operation an earlier delivery of the job started, the band's configuration and the
/// source's catalog.
pub(super) struct SourcePass<'a> {
    pub(super) job: &'a SyncJob,
    pub(super) source: Source,
    pub(super) existing: Option<SyncOperation>,
    pub(super) config: SyncConfiguration,
    pub(super) catalog: Vec<FileEntry>,
}

/// An operation under way: what this delivery and earlier ones recorded.
pub(super) struct OperationRun {
    pub(super) op: SyncOperation,
    pub(super) channel: ChannelName,
    /// The items earlier deliveries recorded, as (file id, action, path).
    recorded: HashSet<(String, ItemAction, String)>,
    /// Items recorded so far (the next item's number is `n + 1`).
    n: u32,
    synced_before: usize,
    synced_now: usize,
    /// Changes applied by this delivery (numbers `sync.progress`).
    done: usize,
}

impl OperationRun {
    /// Items synced by this operation, earlier deliveries included.
    pub(super) fn synced(&self) -> u64 {
        (self.synced_before + self.synced_now) as u64
    }

    /// The synced item for a change, unless an earlier delivery recorded it already.
    pub(super) fn synced_item(
        &mut self,
        file_id: String,
        action: ItemAction,
        path: String,
    ) -> Option<SyncItem> {
        let key = (file_id, action, path);
        if self.recorded.contains(&key) {
            return None;
        }
        let (file_id, action, path) = key;
        self.n += 1;
        self.synced_now += 1;
        Some(SyncItem {
            operation: self.op.id.clone(),
            n: self.n,
            file_id,
            path,
            action,
            status: ItemStatus::Synced,
            error: None,
        })
    }

    /// A failed item (e.g. a file that could not be read).
    pub(super) fn failed_item(
        &mut self,
        action: ItemAction,
        path: String,
        error: String,
    ) -> SyncItem {
        self.n += 1;
        SyncItem {
            operation: self.op.id.clone(),
            n: self.n,
            file_id: String::new(),
            path,
            action,
            status: ItemStatus::Failed,
            error: Some(error),
        }
    }
}

/// The stores the sync worker reads and writes: nothing else of the backend's storage.
#[derive(Clone)]
pub struct SyncStores {
    /// Bands' configurations (file types, credentials).
    pub configs: Arc<dyn ConfigStore>,
    /// Sources, their cursors and generations.
    pub sources: Arc<dyn SourceStore>,
    /// The sources' catalogs of files.
    pub catalog: Arc<dyn CatalogStore>,
    /// Sync operations and their items.
    pub operations: Arc<dyn OperationStore>,
}

/// What every source's engine records and publishes an operation through.
pub(super) struct Operations {
    sources: Arc<dyn SourceStore>,
    catalog: Arc<dyn CatalogStore>,
    operations: Arc<dyn OperationStore>,
    publisher: Publisher,
    clock: Arc<dyn Clock>,
    /// Told when a source cannot be synced at all (operators act on those).
    notifier: Option<Arc<dyn Notifier>>,
}

impl Operations {
    pub(super) fn new(stores: &SyncStores, publisher: Publisher, clock: Arc<dyn Clock>) -> Self {
        Self {
            sources: stores.sources.clone(),
            catalog: stores.catalog.clone(),
            operations: stores.operations.clone(),
            publisher,
            clock,
            notifier: None,
        }
    }

    pub(super) fn set_notifier(&mut self, notifier: Arc<dyn Notifier>) {
        self.notifier = Some(notifier);
    }

    /// The clock's now.
    pub(super) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// An event on the band's channel, stamped now.
    pub(super) fn event(&self, id: String, kind: EventKind) -> NewEvent {
        NewEvent::new(id, self.clock.now(), kind)
    }

    /// Publish `events` on `channel`.
    pub(super) async fn publish(
        &self,
        channel: &ChannelName,
        events: &[NewEvent],
    ) -> Result<(), SyncError> {
        self.publisher.publish(channel, events).await?;
        Ok(())
    }

    /// Start (or take up again) the job's operation, with what earlier deliveries
    /// recorded of it.
    pub(super) async fn begin(
        &self,
        job: &SyncJob,
        existing: Option<SyncOperation>,
    ) -> Result<OperationRun, SyncError> {
        let channel = ChannelName::Band(job.band.clone());
        let op = self.start(job, existing, &channel).await?;
        let recorded = self.operations.list_items(&op.id).await?;
        Ok(OperationRun {
            n: recorded.len() as u32,
            // What an earlier delivery of this job synced is no longer in this delta.
            synced_before: recorded
                .iter()
                .filter(|i| i.status == ItemStatus::Synced)
                .count(),
            // A change an earlier delivery recorded but did not apply to the catalog
            // comes back in this delta: apply it, but do not record (or count) it twice.
            recorded: recorded
                .iter()
                .map(|i| (i.file_id.clone(), i.action, i.path.clone()))
                .collect(),
            synced_now: 0,
            done: 0,
            op,
            channel,
        })
    }

    /// Publish, record and apply `changes`, a chunk at a time: the routine every source
    /// feeds its changes to. `event_of` gives each change's event
    /// ([`file_event`] for file sources).
    pub(super) async fn apply_changes(
        &self,
        run: &mut OperationRun,
        changes: &[Change],
        event_of: &EventOfChange<'_>,
    ) -> Result<(), SyncError> {
        let offset = run.done;
        let total = changes.len();
        for (i, chunk) in changes.chunks(CHUNK).enumerate() {
            let events: Vec<NewEvent> = chunk
                .iter()
                .map(|c| self.event(change_event_id(&run.op.id, c), event_of(c)))
                .collect();
            // Events first, then the catalog: if we die between, the redelivered job sees
            // the same changes again and the log recognises their ids.
            self.publish(&run.channel, &events).await?;
            let mut items = Vec::with_capacity(chunk.len());
            let mut puts = Vec::with_capacity(chunk.len());
            let mut deletes = Vec::new();
            for change in chunk {
                let e = change.entry();
                let item = run.synced_item(e.file_id.clone(), change.action(), e.path.clone());
                items.extend(item);
                match change {
                    Change::Deleted(e) => deletes.push(e),
                    other => puts.push(other.entry().clone()),
                }
            }
            // Items first: the catalog moving on is what marks the chunk applied.
            self.operations.put_items(&items).await?;
            self.catalog.put_files(&puts).await?;
            for e in deletes {
                self.catalog
                    .delete_file(&e.band, &e.source, &e.file_id)
                    .await?;
            }
            let done = (i * CHUNK + chunk.len()).min(total);
            run.done = offset + done;
            if done < total {
                let progress = self.progress_event(&run.op, offset + done, offset + total);
                self.publish(&run.channel, &[progress]).await?;
            }
        }
        Ok(())
    }

    /// Catalog entries whose metadata changed but not their content: stored, no event.
    pub(super) async fn refresh(&self, refreshed: &[FileEntry]) -> Result<(), SyncError> {
        Ok(self.catalog.put_files(refreshed).await?)
    }

    /// Delete catalog entries without an event (e.g. folders that left a Drive tree).
    pub(super) async fn forget_files(&self, forgotten: &[FileEntry]) -> Result<(), SyncError> {
        for e in forgotten {
            self.catalog
                .delete_file(&e.band, &e.source, &e.file_id)
                .await?;
        }
        Ok(())
    }

    /// Store the source as the engine moved it on (its cursor, mostly): what a
    /// redelivered job resumes from. Only onto the revision this pass read (or last
    /// wrote), which `source.revision` moves on to: if an operator deleted or changed the
    /// source meanwhile, nothing is written and the pass stops
    /// ([`SyncError::SourceGoneOrChanged`]) rather than bring back what they removed.
    pub(super) async fn put_cursor(&self, source: &mut Source) -> Result<(), SyncError> {
        match self
            .sources
            .write_source(source, Some(source.revision))
            .await?
        {
            WriteOutcome::Written { revision } => {
                source.revision = revision;
                Ok(())
            }
            WriteOutcome::GoneOrChanged => Err(SyncError::SourceGoneOrChanged),
        }
    }

    /// Record one item of the operation outside [`Self::apply_changes`] (a failed file,
    /// a setlist row).
    pub(super) async fn put_item(&self, item: &SyncItem) -> Result<(), SyncError> {
        Ok(self.operations.put_item(item).await?)
    }

    /// Record the operation as completed and publish `sync.completed`.
    pub(super) async fn complete(
        &self,
        mut op: SyncOperation,
        source: Source,
        metrics: SyncMetrics,
        failures: &[(String, String)],
    ) -> Result<SyncOperation, SyncError> {
        op.status = OperationStatus::Completed;
        op.finished_at = Some(self.clock.now());
        op.metrics = metrics;
        self.operations.put_operation(&op).await?;
        self.touch_source(source, &op).await?;
        let failures = failure_list(failures.iter().map(|(p, e)| (p.as_str(), e.as_str())));
        let completed = self.completed_event(&op, failures);
        let channel = ChannelName::Band(op.band.clone());
        self.publish(&channel, &[completed]).await?;
        metrics::emit(
            &[("Function", "sync-worker")],
            &[
                ("ItemsSynced", op.metrics.synced as f64, Unit::Count),
                ("ItemsFailed", op.metrics.failed as f64, Unit::Count),
                (
                    "SyncDuration",
                    op.metrics.duration_ms as f64,
                    Unit::Milliseconds,
                ),
            ],
        );
        tracing::info!(
            synced = op.metrics.synced,
            failed = op.metrics.failed,
            ms = op.metrics.duration_ms,
            "sync completed"
        );
        Ok(op)
    }

    /// The job's operation: the one an earlier delivery started, or a new one. Its
    /// `sync.started` is published either way: an earlier delivery may have died before it
    /// was, and the log keeps the first copy of an event id.
    async fn start(
        &self,
        job: &SyncJob,
        existing: Option<SyncOperation>,
        channel: &ChannelName,
    ) -> Result<SyncOperation, SyncError> {
        if let Some(op) = existing {
            self.publish(channel, &[self.started_event(&op)]).await?;
            return Ok(op);
        }
        let op = SyncOperation::start(job, self.clock.now());
        self.operations.put_operation(&op).await?;
        self.publish(channel, &[self.started_event(&op)]).await?;
        Ok(op)
    }

    /// Publish a finished operation's last event again: the delivery that recorded the
    /// outcome may have died before publishing it. The log keeps the first copy, and the
    /// broadcast repeats the first one's dedup id.
    pub(super) async fn republish_outcome(&self, op: &SyncOperation) -> Result<(), SyncError> {
        let event = match op.status {
            OperationStatus::Completed => {
                let items = self.operations.list_items(&op.id).await?;
                let failures = failure_list(
                    items
                        .iter()
                        .filter(|i| i.status == ItemStatus::Failed)
                        .map(|i| (i.path.as_str(), i.error.as_deref().unwrap_or_default())),
                );
                self.completed_event(op, failures)
            }
            OperationStatus::Failed => self.failed_event(op),
            OperationStatus::Running => return Ok(()),
        };
        let channel = ChannelName::Band(op.band.clone());
        self.publish(&channel, &[event]).await
    }

    /// The pass stopped because an operator deleted or changed the source while it ran
    /// ([`SyncError::SourceGoneOrChanged`]): record the operation as failed with that
    /// reason and publish `sync.failed`, so it does not stay running. No alert (an
    /// operator did it) and no retry: a moved source's next pass starts over from its new
    /// place, a deleted one has none.
    pub(super) async fn abandon(
        &self,
        job: &SyncJob,
        existing: Option<SyncOperation>,
    ) -> Result<SyncOperation, SyncError> {
        tracing::info!("the source was deleted or changed while it synced; the pass stops");
        let channel = ChannelName::Band(job.band.clone());
        let mut op = self.start(job, existing, &channel).await?;
        if op.status == OperationStatus::Running {
            op.status = OperationStatus::Failed;
            op.finished_at = Some(self.clock.now());
            op.error = Some(SOURCE_GONE_OR_CHANGED.to_owned());
            self.operations.put_operation(&op).await?;
        }
        self.republish_outcome(&op).await?;
        Ok(op)
    }

    /// Record the operation as failed, publish `sync.failed` and alert the operators.
    pub(super) async fn fail(
        &self,
        job: &SyncJob,
        existing: Option<SyncOperation>,
        error: String,
    ) -> Result<SyncOperation, SyncError> {
        tracing::error!(%error, "sync failed");
        let channel = ChannelName::Band(job.band.clone());
        let mut op = self.start(job, existing, &channel).await?;
        op.status = OperationStatus::Failed;
        op.finished_at = Some(self.clock.now());
        op.error = Some(error);
        self.operations.put_operation(&op).await?;
        self.publish(&channel, &[self.failed_event(&op)]).await?;
        metrics::emit(
            &[("Function", "sync-worker")],
            &[("SyncFailures", 1.0, Unit::Count)],
        );
        if let Some(notifier) = &self.notifier {
            let subject = format!("bandsync: sync of {}/{} failed", op.band, op.source);
            let message = format!(
                "Operation {} ({:?}) of source {} of band {} failed: {}",
                op.id,
                op.trigger,
                op.source,
                op.band,
                op.error.as_deref().unwrap_or_default()
            );
            // The failure is recorded and published already; a lost alert is logged, not retried.
            if let Err(e) = notifier.alert(&subject, &message).await {
                tracing::error!(error = %e, "could not send the alert");
            }
        }
        Ok(op)
    }

    async fn touch_source(&self, mut source: Source, op: &SyncOperation) -> Result<(), SyncError> {
        source.last_sync_at = op.finished_at;
        source.last_operation = Some(op.id.clone());
        self.put_cursor(&mut source).await
    }

    fn started_event(&self, op: &SyncOperation) -> NewEvent {
        self.event(
            format!("{}:started", op.id),
            EventKind::SyncStarted(SyncStarted {
                operation: op.id.clone(),
                source: op.source.clone(),
                trigger: op.trigger,
                full: op.full,
            }),
        )
    }

    fn progress_event(&self, op: &SyncOperation, done: usize, total: usize) -> NewEvent {
        self.event(
            format!("{}:progress:{done}", op.id),
            EventKind::SyncProgress(SyncProgress {
                operation: op.id.clone(),
                done: done as u64,
                total: total as u64,
            }),
        )
    }

    fn completed_event(&self, op: &SyncOperation, failures: Vec<SyncFailure>) -> NewEvent {
        self.event(
            format!("{}:completed", op.id),
            EventKind::SyncCompleted(SyncCompleted {
                operation: op.id.clone(),
                source: op.source.clone(),
                metrics: op.metrics,
                failures,
            }),
        )
    }

    fn failed_event(&self, op: &SyncOperation) -> NewEvent {
        self.event(
            format!("{}:failed", op.id),
            EventKind::SyncFailed(SyncFailed {
                operation: op.id.clone(),
                source: op.source.clone(),
                error: op.error.clone(),
            }),
        )
    }
}
