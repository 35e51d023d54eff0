//! The sync worker: take a [`SyncJob`] off the sync queue, compute the delta of its source
//! against the catalog, record an operation with its items, and publish `sync.*` and
//! `file.*` events on the band's channel.
//!
//! Redelivery-safe: the operation id is the job id, event ids and new file ids are
//! derived from it, events are published before the catalog moves on, so a job that
//! dies half-way and comes back resumes the same operation without duplicates.

pub mod delta;
pub mod folder;

use crate::http::ApiError;
use crate::metrics::{self, Unit};
use crate::model::*;
use crate::ports::{Clock, OutMessage, PortError, Queue, SourceStore, Store};
use crate::publish::Publisher;
use crate::sqs::{parse_body, run_fifo_batch};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use delta::{Change, Delta};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Changes recorded (and events published) per step.
pub const CHUNK: usize = 50;

/// Why a job must be retried (a permanent problem becomes a failed operation instead).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("store or queue failure: {0}")]
    Port(#[from] PortError),
    #[error("scan task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The FIFO group of a source's jobs: one sync at a time per source.
pub fn sync_group(band: &BandId, source: &SourceId) -> String {
    format!("{band}/{source}")
}

/// Queue a job; `dedup_id` makes a repeated send of the same request a no-op.
pub async fn enqueue(queue: &dyn Queue, job: &SyncJob, dedup_id: String) -> Result<(), PortError> {
    queue
        .send(OutMessage {
            group: sync_group(&job.band, &job.source),
            dedup_id,
            body: serde_json::to_string(job).map_err(anyhow::Error::from)?,
        })
        .await
}

/// A request to sync one source, or every source of a band (POST /sync/trigger and a
/// client's `sync_request`).
#[derive(Debug, Clone)]
pub struct SyncRequest<'a> {
    pub band: &'a BandId,
    pub source: Option<&'a SourceId>,
    pub full: bool,
    pub trigger: Trigger,
    pub requested_by: &'a UserId,
}

/// Queue the jobs of a request; unknown sources are `not_found`.
pub async fn request_sync(
    sources: &dyn SourceStore,
    queue: &dyn Queue,
    request: SyncRequest<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<SyncJob>, ApiError> {
    let band = request.band;
    let targets: Vec<SourceId> = match request.source {
        Some(s) => match sources.get_source(band, s).await? {
            Some(found) => vec![found.id],
            None => {
                return Err(ApiError::not_found(format!(
                    "band {band} has no source {s}"
                )));
            }
        },
        None => sources
            .list_sources(band)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect(),
    };
    if targets.is_empty() {
        return Err(ApiError::not_found(format!("band {band} has no sources")));
    }
    let mut jobs = Vec::with_capacity(targets.len());
    for source in targets {
        let job = SyncJob {
            id: uuid::Uuid::new_v4().to_string(),
            band: band.clone(),
            source,
            trigger: request.trigger,
            full: request.full,
            requested_by: Some(request.requested_by.to_string()),
            requested_at: now,
        };
        enqueue(queue, &job, job.id.clone()).await?;
        jobs.push(job);
    }
    Ok(jobs)
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..12])
}

/// The event id of a change within an operation: the same change in a redelivered job
/// gets the same id, so the channel log keeps one copy.
fn change_event_id(op: &str, change: &Change) -> String {
    let e = change.entry();
    let action = change.action().event_name();
    format!(
        "{op}:{}",
        short_hash(&[action, &e.file_id, &e.path, &e.hash])
    )
}

fn file_event_data(change: &Change) -> serde_json::Value {
    let e = change.entry();
    let name = e.path.rsplit('/').next().unwrap_or(&e.path);
    let mut data = json!({
        "source": e.source,
        "file_id": e.file_id,
        "path": e.path,
        "name": name,
        "size": e.size,
        "hash": e.hash,
        "modified_ms": e.modified_ms,
    });
    if let Change::Moved { before, .. } = change {
        data["from_path"] = json!(before.path);
    }
    data
}

pub struct SyncWorker {
    store: Arc<dyn Store>,
    publisher: Publisher,
    clock: Arc<dyn Clock>,
}

/// What a scan of the source produced.
enum Scanned {
    Ok(folder::Scan),
    /// The source cannot be read at all; the operation fails with this message.
    Failed(String),
}

impl SyncWorker {
    pub fn new(store: Arc<dyn Store>, publisher: Publisher, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            publisher,
            clock,
        }
    }

    /// The SQS entry point (FIFO: stop at the first failure).
    pub async fn handle_sqs(&self, event: SqsEvent) -> SqsBatchResponse {
        run_fifo_batch(event, |m| async move {
            let job: SyncJob = parse_body(&m)?;
            self.run(&job).await?;
            Ok::<(), anyhow::Error>(())
        })
        .await
    }

    fn event(&self, id: String, name: &str, data: serde_json::Value) -> NewEvent {
        NewEvent {
            id,
            event: name.to_owned(),
            ts: self.clock.now(),
            data,
        }
    }

    async fn scan(
        &self,
        source: &Source,
        config: &SyncConfiguration,
        catalog: Vec<FileEntry>,
        full: bool,
    ) -> Result<Scanned, SyncError> {
        match source.kind {
            SourceKind::Folder => {
                let root = PathBuf::from(&source.location);
                let config = config.clone();
                let result = tokio::task::spawn_blocking(move || {
                    folder::scan(&root, &config, &catalog, full)
                })
                .await?;
                Ok(match result {
                    Ok(scan) => Scanned::Ok(scan),
                    Err(e) => {
                        Scanned::Failed(format!("cannot read folder {}: {e}", source.location))
                    }
                })
            }
            other => Ok(Scanned::Failed(format!(
                "sources of kind {other:?} have no sync engine in this build"
            ))),
        }
    }

    /// Run one job. `Ok(None)` when there was nothing to do and nothing was recorded.
    #[tracing::instrument(skip(self, job), fields(job = %job.id, band = %job.band, source = %job.source))]
    pub async fn run(&self, job: &SyncJob) -> Result<Option<SyncOperation>, SyncError> {
        let Some(source) = self.store.get_source(&job.band, &job.source).await? else {
            tracing::warn!("job for an unknown source dropped");
            return Ok(None);
        };
        let existing = self.store.get_operation(&job.id).await?;
        if let Some(op) = existing
            .as_ref()
            .filter(|op| op.status != OperationStatus::Running)
        {
            tracing::info!("operation already finished; redelivery ignored");
            return Ok(Some(op.clone()));
        }
        let config = self
            .store
            .get_config(&job.band)
            .await?
            .unwrap_or_else(|| SyncConfiguration {
                band: job.band.clone(),
                name: job.band.to_string(),
                file_types: vec![],
            });
        let started = Instant::now();
        let catalog = self.store.list_files(&job.band, &job.source).await?;
        let scan = match self
            .scan(&source, &config, catalog.clone(), job.full)
            .await?
        {
            Scanned::Ok(scan) => scan,
            Scanned::Failed(error) => return self.fail(job, existing, error).await.map(Some),
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
        let quiet = matches!(job.trigger, Trigger::Notification | Trigger::Reconcile);
        if existing.is_none() && quiet && delta.changes.is_empty() && scan.unreadable.is_empty() {
            self.refresh(&delta).await?;
            tracing::debug!("nothing changed");
            return Ok(None);
        }

        let channel = ChannelName::Band(job.band.clone());
        let mut op = match existing {
            Some(op) => op,
            None => self.start(job, &channel).await?,
        };
        let mut n = self.store.list_items(&op.id).await?.len() as u32;
        let total = delta.changes.len();
        for (i, chunk) in delta.changes.chunks(CHUNK).enumerate() {
            let events: Vec<NewEvent> = chunk
                .iter()
                .map(|c| {
                    self.event(
                        change_event_id(&op.id, c),
                        c.action().event_name(),
                        file_event_data(c),
                    )
                })
                .collect();
            // Events first, then the catalog: if we die between, the redelivered job sees
            // the same changes again and the log recognises their ids.
            self.publisher.publish(&channel, &events).await?;
            for change in chunk {
                n += 1;
                self.record_item(&op.id, n, change, ItemStatus::Synced, None)
                    .await?;
                self.apply(change).await?;
            }
            let done = (i * CHUNK + chunk.len()).min(total);
            if done < total {
                let progress = self.event(
                    format!("{}:progress:{done}", op.id),
                    "sync.progress",
                    json!({"operation": op.id, "done": done, "total": total}),
                );
                self.publisher.publish(&channel, &[progress]).await?;
            }
        }
        self.refresh(&delta).await?;
        for (path, error) in &scan.unreadable {
            n += 1;
            let item = SyncItem {
                operation: op.id.clone(),
                n,
                file_id: String::new(),
                path: path.clone(),
                action: if catalog.iter().any(|e| &e.path == path) {
                    ItemAction::Updated
                } else {
                    ItemAction::Created
                },
                status: ItemStatus::Failed,
                error: Some(error.clone()),
            };
            self.store.put_item(&item).await?;
        }

        op.status = OperationStatus::Completed;
        op.finished_at = Some(self.clock.now());
        op.metrics = SyncMetrics {
            seen: (scan.observed.len() + scan.unreadable.len()) as u64,
            synced: total as u64,
            failed: scan.unreadable.len() as u64,
            skipped: scan.skipped,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        self.store.put_operation(&op).await?;
        self.touch_source(source, &op).await?;
        let failures: Vec<_> = scan
            .unreadable
            .iter()
            .take(20)
            .map(|(p, e)| json!({"path": p, "error": e}))
            .collect();
        let completed = self.event(
            format!("{}:completed", op.id),
            "sync.completed",
            json!({"operation": op.id, "source": op.source, "metrics": op.metrics, "failures": failures}),
        );
        self.publisher.publish(&channel, &[completed]).await?;
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
        Ok(Some(op))
    }

    async fn start(
        &self,
        job: &SyncJob,
        channel: &ChannelName,
    ) -> Result<SyncOperation, SyncError> {
        let op = SyncOperation {
            id: job.id.clone(),
            band: job.band.clone(),
            source: job.source.clone(),
            trigger: job.trigger,
            full: job.full,
            status: OperationStatus::Running,
            started_at: self.clock.now(),
            finished_at: None,
            metrics: SyncMetrics::default(),
            error: None,
        };
        self.store.put_operation(&op).await?;
        let started = self.event(
            format!("{}:started", op.id),
            "sync.started",
            json!({"operation": op.id, "source": op.source, "trigger": op.trigger, "full": op.full}),
        );
        self.publisher.publish(channel, &[started]).await?;
        Ok(op)
    }

    async fn fail(
        &self,
        job: &SyncJob,
        existing: Option<SyncOperation>,
        error: String,
    ) -> Result<SyncOperation, SyncError> {
        tracing::error!(%error, "sync failed");
        let channel = ChannelName::Band(job.band.clone());
        let mut op = match existing {
            Some(op) => op,
            None => self.start(job, &channel).await?,
        };
        op.status = OperationStatus::Failed;
        op.finished_at = Some(self.clock.now());
        op.error = Some(error.clone());
        self.store.put_operation(&op).await?;
        let failed = self.event(
            format!("{}:failed", op.id),
            "sync.failed",
            json!({"operation": op.id, "source": op.source, "error": error}),
        );
        self.publisher.publish(&channel, &[failed]).await?;
        metrics::emit(
            &[("Function", "sync-worker")],
            &[("SyncFailures", 1.0, Unit::Count)],
        );
        Ok(op)
    }

    async fn record_item(
        &self,
        op: &str,
        n: u32,
        change: &Change,
        status: ItemStatus,
        error: Option<String>,
    ) -> Result<(), SyncError> {
        let e = change.entry();
        let item = SyncItem {
            operation: op.to_owned(),
            n,
            file_id: e.file_id.clone(),
            path: e.path.clone(),
            action: change.action(),
            status,
            error,
        };
        Ok(self.store.put_item(&item).await?)
    }

    async fn apply(&self, change: &Change) -> Result<(), SyncError> {
        match change {
            Change::Deleted(e) => {
                self.store
                    .delete_file(&e.band, &e.source, &e.file_id)
                    .await?
            }
            other => self.store.put_file(other.entry()).await?,
        }
        Ok(())
    }

    async fn refresh(&self, delta: &Delta) -> Result<(), SyncError> {
        for e in &delta.refreshed {
            self.store.put_file(e).await?;
        }
        Ok(())
    }

    async fn touch_source(&self, mut source: Source, op: &SyncOperation) -> Result<(), SyncError> {
        source.last_sync_at = op.finished_at;
        source.last_operation = Some(op.id.clone());
        Ok(self.store.put_source(&source).await?)
    }
}
