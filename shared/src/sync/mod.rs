//! The sync worker: take a [`SyncJob`] off the sync queue, compute the delta of its source
//! against the catalog, record an operation with its items, and publish `sync.*` and
//! `file.*` events on the band's channel.
//!
//! Redelivery-safe: the operation id is the job id, event ids and new file ids are
//! derived from it, events are published before the catalog moves on, so a job that
//! dies half-way and comes back resumes the same operation without duplicates.

pub mod calendar;
pub mod delta;
pub mod drive;
pub mod folder;
pub mod setlist;

use crate::google::GoogleError;
use crate::google::apis::GoogleApis;
use crate::google::drive::DriveClient;
use crate::model::*;
use crate::ports::{Clock, Notifier, OutMessage, PortError, Queue, SourceStore, Store};
use crate::publish::Publisher;
use crate::transport::metrics::{self, Unit};
use crate::transport::sqs::{Budget, run_fifo_batch};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use delta::Change;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Changes recorded (and events published) per step.
pub const CHUNK: usize = 50;

/// Why a job must be retried (a permanent problem becomes a failed operation instead).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("store or queue failure: {0}")]
    Port(#[from] PortError),
    #[error("scan task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A Drive call failed (after its own retries); the job is retried and resumes from
    /// the last stored page token.
    #[error("Google API: {0}")]
    Google(#[from] GoogleError),
}

/// A Google error no retry fixes: a configuration problem (no or bad credentials), or
/// an answer that will not change (400, 401 after a fresh token, 403 that is not a rate
/// limit, 404). Rate limits, 5xx and transport errors are retried.
pub fn is_permanent(e: &GoogleError) -> bool {
    match e {
        GoogleError::Config(_) => true,
        GoogleError::Http { status, reason, .. } => {
            matches!(status, 400 | 401 | 404)
                || (*status == 403 && !crate::google::retry::is_retryable(403, Some(reason)))
        }
        _ => false,
    }
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

/// Why a sync request queued nothing.
#[derive(Debug, thiserror::Error)]
pub enum RequestSyncError {
    #[error("band {band} has no source {id}")]
    UnknownSource { band: BandId, id: SourceId },
    #[error("band {0} has no sources")]
    NoSources(BandId),
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Queue the jobs of a request.
pub async fn request_sync(
    sources: &dyn SourceStore,
    queue: &dyn Queue,
    request: SyncRequest<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<SyncJob>, RequestSyncError> {
    let band = request.band;
    let targets: Vec<SourceId> = match request.source {
        Some(s) => match sources.get_source(band, s).await? {
            Some(found) => vec![found.id],
            None => {
                return Err(RequestSyncError::UnknownSource {
                    band: band.clone(),
                    id: s.clone(),
                });
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
        return Err(RequestSyncError::NoSources(band.clone()));
    }
    let mut jobs = Vec::with_capacity(targets.len());
    for source in targets {
        let job = SyncJob::new(
            band.clone(),
            source,
            request.trigger,
            request.full,
            Some(request.requested_by.to_string()),
            now,
        );
        enqueue(queue, &job, job.id.clone()).await?;
        jobs.push(job);
    }
    Ok(jobs)
}

/// 24 hex characters of SHA-256 over `parts` (each ended by a NUL).
pub fn short_hash(parts: &[&str]) -> String {
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

/// The first failures of an operation, as `sync.completed` lists them.
fn failure_list<'a>(failures: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<serde_json::Value> {
    failures
        .take(20)
        .map(|(path, error)| json!({"path": path, "error": error}))
        .collect()
}

/// The item recording a synced change.
fn synced_item(op: &str, n: u32, change: &Change) -> SyncItem {
    let e = change.entry();
    SyncItem {
        operation: op.to_owned(),
        n,
        file_id: e.file_id.clone(),
        path: e.path.clone(),
        action: change.action(),
        status: ItemStatus::Synced,
        error: None,
    }
}

/// What a change is called on the channel, and what its event carries.
pub type Describe<'a> = dyn Fn(&Change) -> (&'static str, serde_json::Value) + Send + Sync + 'a;

/// A file source's event for a change: `file.*` with the file's catalog entry.
pub fn file_event(change: &Change) -> (&'static str, serde_json::Value) {
    (change.action().event_name(), file_event_data(change))
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
    /// Told when a source cannot be synced at all (operators act on those).
    notifier: Option<Arc<dyn Notifier>>,
    /// The Google API clients of Google sources (none: their jobs fail).
    google: Option<Arc<GoogleApis>>,
}

/// An operation under way: what this delivery and earlier ones recorded.
struct Run {
    op: SyncOperation,
    channel: ChannelName,
    already: HashSet<(String, ItemAction, String)>,
    /// Items recorded so far (the next item's number is `n + 1`).
    n: u32,
    synced_before: usize,
    synced_now: usize,
    /// Changes applied by this delivery (numbers `sync.progress`).
    done: usize,
}

impl SyncWorker {
    pub fn new(store: Arc<dyn Store>, publisher: Publisher, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            publisher,
            clock,
            notifier: None,
            google: None,
        }
    }

    /// Sync Google sources through these clients.
    pub fn with_google(mut self, apis: impl Into<Option<Arc<GoogleApis>>>) -> Self {
        self.google = apis.into();
        self
    }

    /// Alert operators (SNS on AWS) when a sync fails as a whole.
    pub fn with_notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// The SQS entry point (FIFO: stop at the first failure). With a `deadline` (the
    /// invocation's), no message is started later than 30 s before it.
    pub async fn handle_sqs(
        &self,
        event: SqsEvent,
        deadline: Option<std::time::SystemTime>,
    ) -> SqsBatchResponse {
        let budget = Budget::until(deadline, Duration::from_secs(30));
        run_fifo_batch(event, budget, |job: SyncJob| async move {
            self.run(&job).await.map(|_| ())
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

    /// Run one job. `Ok(None)` when there was nothing to do and nothing was recorded.
    #[tracing::instrument(skip(self, job), fields(job = %job.id, band = %job.band, source = %job.source))]
    pub async fn run(&self, job: &SyncJob) -> Result<Option<SyncOperation>, SyncError> {
        // Before anything reads the source: notifications read after this queue a new
        // pass, those read before are covered by this one (see `webhook`).
        self.store.bump_generation(&job.band, &job.source).await?;
        let Some(source) = self.store.get_source(&job.band, &job.source).await? else {
            tracing::warn!("job for an unknown source dropped");
            return Ok(None);
        };
        let existing = self.store.get_operation(&job.id).await?;
        if let Some(op) = existing
            .as_ref()
            .filter(|op| op.status != OperationStatus::Running)
        {
            tracing::info!("operation already finished; redelivery only republishes its outcome");
            self.republish_outcome(op).await?;
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
                google_credentials: None,
            });
        let catalog = self.store.list_files(&job.band, &job.source).await?;
        let kind = source.kind;
        if kind == SourceKind::Folder {
            return self
                .run_folder(job, source, existing, config, catalog)
                .await;
        }
        let Some(google) = self.google.clone() else {
            let error = format!(
                "sources of kind {kind:?} need Google API clients, and this worker has none"
            );
            return self.fail(job, existing, error).await.map(Some);
        };
        let result = match kind {
            SourceKind::Drive => match google.drive(&job.band).await {
                Ok(client) => {
                    self.run_drive(job, source, existing.clone(), &config, &catalog, &client)
                        .await
                }
                Err(e) => Err(e.into()),
            },
            SourceKind::Sheet => match google.sheets(&job.band).await {
                Ok(client) => self.run_sheet(job, source, existing.clone(), &client).await,
                Err(e) => Err(e.into()),
            },
            SourceKind::Calendar => match google.calendar(&job.band).await {
                Ok(client) => {
                    self.run_calendar(job, source, existing.clone(), &catalog, &client)
                        .await
                }
                Err(e) => Err(e.into()),
            },
            SourceKind::Folder => unreachable!("handled above"),
        };
        match result {
            // Retrying cannot fix these (no credentials, no access, no such folder,
            // calendar or sheet): fail the operation so operators and members see why.
            Err(SyncError::Google(e)) if is_permanent(&e) => {
                let existing = self.store.get_operation(&job.id).await?.or(existing);
                self.fail(job, existing, format!("Google refused the sync: {e}"))
                    .await
                    .map(Some)
            }
            other => other,
        }
    }

    async fn run_folder(
        &self,
        job: &SyncJob,
        source: Source,
        existing: Option<SyncOperation>,
        config: SyncConfiguration,
        catalog: Vec<FileEntry>,
    ) -> Result<Option<SyncOperation>, SyncError> {
        let started = Instant::now();
        let root = PathBuf::from(&source.location);
        let full = job.full;
        let scanned_catalog = catalog.clone();
        let scan = match tokio::task::spawn_blocking(move || {
            folder::scan(&root, &config, &scanned_catalog, full)
        })
        .await?
        {
            Ok(scan) => scan,
            Err(e) => {
                let error = format!("cannot read folder {}: {e}", source.location);
                return self.fail(job, existing, error).await.map(Some);
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
        let quiet = matches!(job.trigger, Trigger::Notification | Trigger::Reconcile);
        if existing.is_none() && quiet && delta.changes.is_empty() && scan.unreadable.is_empty() {
            self.refresh(&delta.refreshed).await?;
            tracing::debug!("nothing changed");
            return Ok(None);
        }

        let mut run = self.begin(job, existing).await?;
        self.apply_changes(&mut run, &delta.changes, &file_event)
            .await?;
        self.refresh(&delta.refreshed).await?;
        for (path, error) in &scan.unreadable {
            run.n += 1;
            let item = SyncItem {
                operation: run.op.id.clone(),
                n: run.n,
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
        let metrics = SyncMetrics {
            seen: (scan.observed.len() + scan.unreadable.len()) as u64,
            synced: (run.synced_before + run.synced_now) as u64,
            failed: scan.unreadable.len() as u64,
            skipped: scan.skipped,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        self.complete(run.op, source, metrics, &scan.unreadable)
            .await
            .map(Some)
    }

    /// A Drive source, page by page: each page's changes are recorded and published, and
    /// the catalog moved on, before the page's token becomes the source's cursor; so a
    /// delivery that dies between pages resumes at the first page not yet applied.
    async fn run_drive(
        &self,
        job: &SyncJob,
        mut source: Source,
        existing: Option<SyncOperation>,
        config: &SyncConfiguration,
        catalog: &[FileEntry],
        client: &DriveClient,
    ) -> Result<Option<SyncOperation>, SyncError> {
        let started = Instant::now();
        let quiet = matches!(job.trigger, Trigger::Notification | Trigger::Reconcile);
        if job.full && existing.is_none() {
            source.cursor = None;
        }
        let mut tree = drive::Tree::new(&job.band, &job.source, &source.location, config, catalog);
        let drive_id = source.drive_id.clone();
        let drive_id = drive_id.as_deref();
        let mut run = match existing {
            Some(op) => Some(self.begin(job, Some(op)).await?),
            None => None,
        };
        let (mut seen, mut skipped) = (0, 0);
        loop {
            let (delta, next, last) = match source.cursor.clone() {
                None => {
                    // The token first: what changes during the listing comes as changes.
                    let token = client.get_start_page_token(drive_id).await?;
                    (tree.apply_listing(client).await?, token, true)
                }
                Some(cursor) => match client.list_changes(&cursor, drive_id).await {
                    Ok(page) => {
                        let delta = tree.apply_page(client, &page.changes).await?;
                        match (page.next_page_token, page.new_start_page_token) {
                            (Some(next), _) => (delta, next, false),
                            (None, Some(new_start)) => (delta, new_start, true),
                            (None, None) => unreachable!("DriveClient::list_changes checks"),
                        }
                    }
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
                run = Some(self.begin(job, None).await?);
            }
            if let Some(run) = run.as_mut() {
                self.apply_changes(run, &delta.changes, &file_event).await?;
            }
            self.refresh(&delta.refreshed).await?;
            for e in &delta.forgotten {
                self.store
                    .delete_file(&e.band, &e.source, &e.file_id)
                    .await?;
            }
            source.cursor = Some(next);
            self.store.put_source(&source).await?;
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
            synced: (run.synced_before + run.synced_now) as u64,
            failed: 0,
            skipped,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        self.complete(run.op, source, metrics, &[]).await.map(Some)
    }

    /// Start (or take up again) the job's operation, with what earlier deliveries
    /// recorded of it.
    async fn begin(
        &self,
        job: &SyncJob,
        existing: Option<SyncOperation>,
    ) -> Result<Run, SyncError> {
        let channel = ChannelName::Band(job.band.clone());
        let op = self.start(job, existing, &channel).await?;
        let recorded = self.store.list_items(&op.id).await?;
        Ok(Run {
            n: recorded.len() as u32,
            // What an earlier delivery of this job synced is no longer in this delta.
            synced_before: recorded
                .iter()
                .filter(|i| i.status == ItemStatus::Synced)
                .count(),
            // A change an earlier delivery recorded but did not apply to the catalog
            // comes back in this delta: apply it, but do not record (or count) it twice.
            already: recorded
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
    /// feeds its changes to. `describe` gives each change's event name and data
    /// ([`file_event`] for file sources).
    async fn apply_changes(
        &self,
        run: &mut Run,
        changes: &[Change],
        describe: &Describe<'_>,
    ) -> Result<(), SyncError> {
        let offset = run.done;
        let total = changes.len();
        for (i, chunk) in changes.chunks(CHUNK).enumerate() {
            let events: Vec<NewEvent> = chunk
                .iter()
                .map(|c| {
                    let (name, data) = describe(c);
                    self.event(change_event_id(&run.op.id, c), name, data)
                })
                .collect();
            // Events first, then the catalog: if we die between, the redelivered job sees
            // the same changes again and the log recognises their ids.
            self.publisher.publish(&run.channel, &events).await?;
            let mut items = Vec::with_capacity(chunk.len());
            let mut puts = Vec::with_capacity(chunk.len());
            let mut deletes = Vec::new();
            for change in chunk {
                let e = change.entry();
                if !run
                    .already
                    .contains(&(e.file_id.clone(), change.action(), e.path.clone()))
                {
                    run.n += 1;
                    run.synced_now += 1;
                    items.push(synced_item(&run.op.id, run.n, change));
                }
                match change {
                    Change::Deleted(e) => deletes.push(e),
                    other => puts.push(other.entry().clone()),
                }
            }
            // Items first: the catalog moving on is what marks the chunk applied.
            self.store.put_items(&items).await?;
            self.store.put_files(&puts).await?;
            for e in deletes {
                self.store
                    .delete_file(&e.band, &e.source, &e.file_id)
                    .await?;
            }
            let done = (i * CHUNK + chunk.len()).min(total);
            run.done = offset + done;
            if done < total {
                let progress = self.event(
                    format!("{}:progress:{}", run.op.id, offset + done),
                    "sync.progress",
                    json!({"operation": run.op.id, "done": offset + done, "total": offset + total}),
                );
                self.publisher.publish(&run.channel, &[progress]).await?;
            }
        }
        Ok(())
    }

    /// Record the operation as completed and publish `sync.completed`.
    async fn complete(
        &self,
        mut op: SyncOperation,
        source: Source,
        metrics: SyncMetrics,
        failures: &[(String, String)],
    ) -> Result<SyncOperation, SyncError> {
        op.status = OperationStatus::Completed;
        op.finished_at = Some(self.clock.now());
        op.metrics = metrics;
        self.store.put_operation(&op).await?;
        self.touch_source(source, &op).await?;
        let failures = failure_list(failures.iter().map(|(p, e)| (p.as_str(), e.as_str())));
        let completed = self.completed_event(&op, failures);
        let channel = ChannelName::Band(op.band.clone());
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
            self.publisher
                .publish(channel, &[self.started_event(&op)])
                .await?;
            return Ok(op);
        }
        let op = SyncOperation::start(job, self.clock.now());
        self.store.put_operation(&op).await?;
        self.publisher
            .publish(channel, &[self.started_event(&op)])
            .await?;
        Ok(op)
    }

    fn started_event(&self, op: &SyncOperation) -> NewEvent {
        self.event(
            format!("{}:started", op.id),
            "sync.started",
            json!({"operation": op.id, "source": op.source, "trigger": op.trigger, "full": op.full}),
        )
    }

    fn completed_event(&self, op: &SyncOperation, failures: Vec<serde_json::Value>) -> NewEvent {
        self.event(
            format!("{}:completed", op.id),
            "sync.completed",
            json!({"operation": op.id, "source": op.source, "metrics": op.metrics, "failures": failures}),
        )
    }

    fn failed_event(&self, op: &SyncOperation) -> NewEvent {
        self.event(
            format!("{}:failed", op.id),
            "sync.failed",
            json!({"operation": op.id, "source": op.source, "error": op.error}),
        )
    }

    /// Publish a finished operation's last event again: the delivery that recorded the
    /// outcome may have died before publishing it. The log keeps the first copy, and the
    /// broadcast repeats the first one's dedup id.
    async fn republish_outcome(&self, op: &SyncOperation) -> Result<(), SyncError> {
        let event = match op.status {
            OperationStatus::Completed => {
                let items = self.store.list_items(&op.id).await?;
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
        self.publisher.publish(&channel, &[event]).await?;
        Ok(())
    }

    async fn fail(
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
        self.store.put_operation(&op).await?;
        self.publisher
            .publish(&channel, &[self.failed_event(&op)])
            .await?;
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

    async fn refresh(&self, refreshed: &[FileEntry]) -> Result<(), SyncError> {
        Ok(self.store.put_files(refreshed).await?)
    }

    async fn touch_source(&self, mut source: Source, op: &SyncOperation) -> Result<(), SyncError> {
        source.last_sync_at = op.finished_at;
        source.last_operation = Some(op.id.clone());
        Ok(self.store.put_source(&source).await?)
    }
}
