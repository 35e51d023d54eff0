//! The request path: a sync asked for (POST /sync/trigger, a client's `sync_request`,
//! a notification, the scheduler's reconcile) becomes jobs on the sync queue.

use crate::model::{BandId, SourceId, SyncJob, Trigger, UserId};
use crate::ports::{OutMessage, PortError, Queue, SourceStore};

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
