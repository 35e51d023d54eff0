//! The sync worker's entry point: a job off the queue goes to its source's engine.

use super::operation::{Operations, SourcePass, SyncStores};
use super::{SyncError, calendar, drive, folder, setlist};
use crate::google::ports::SourceApis;
use crate::model::*;
use crate::ports::{Clock, Notifier};
use crate::publish::Publisher;
use crate::transport::sqs::{Budget, run_fifo_batch};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use std::sync::Arc;
use std::time::Duration;

pub struct SyncWorker {
    stores: SyncStores,
    operations: Operations,
    /// The Google API clients of Google sources (none: their jobs fail).
    google: Option<Arc<dyn SourceApis>>,
    /// Folder sources are read only where the deployment allows them.
    deployment: crate::deployment::Deployment,
}

impl SyncWorker {
    pub fn new(stores: SyncStores, publisher: Publisher, clock: Arc<dyn Clock>) -> Self {
        Self {
            operations: Operations::new(&stores, publisher, clock),
            stores,
            google: None,
            deployment: crate::deployment::Deployment::default(),
        }
    }

    /// Where this worker runs (AWS unless said: folder sources are refused there).
    pub fn with_deployment(mut self, deployment: crate::deployment::Deployment) -> Self {
        self.deployment = deployment;
        self
    }

    /// Sync Google sources through these ports: Google's clients, or in-memory doubles.
    pub fn with_google(mut self, apis: Arc<dyn SourceApis>) -> Self {
        self.google = Some(apis);
        self
    }

    /// Alert operators (SNS on AWS) when a sync fails as a whole.
    pub fn with_notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.operations.set_notifier(notifier);
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

    /// Run one job. `Ok(None)` when there was nothing to do and nothing was recorded.
    #[tracing::instrument(skip(self, job), fields(job = %job.id, band = %job.band, source = %job.source))]
    pub async fn run(&self, job: &SyncJob) -> Result<Option<SyncOperation>, SyncError> {
        let ops = &self.operations;
        // Before anything reads the source: notifications read after this queue a new
        // pass, those read before are covered by this one (see `webhook`).
        self.stores
            .sources
            .bump_generation(&job.band, &job.source)
            .await?;
        let Some(source) = self
            .stores
            .sources
            .get_source(&job.band, &job.source)
            .await?
        else {
            tracing::warn!("job for an unknown source dropped");
            return Ok(None);
        };
        let existing = self.stores.operations.get_operation(&job.id).await?;
        if let Some(op) = existing
            .as_ref()
            .filter(|op| op.status != OperationStatus::Running)
        {
            tracing::info!("operation already finished; redelivery only republishes its outcome");
            ops.republish_outcome(op).await?;
            return Ok(Some(op.clone()));
        }
        let config = self
            .stores
            .configs
            .get_config(&job.band)
            .await?
            .unwrap_or_else(|| SyncConfiguration {
                band: job.band.clone(),
                name: job.band.to_string(),
                file_types: vec![],
                google_credentials: None,
                entity_types: vec![],
                strict_entities: false,
                history_days: None,
            });
        let catalog = self
            .stores
            .catalog
            .list_files(&job.band, &job.source)
            .await?;
        let kind = source.kind;
        let pass = SourcePass {
            job,
            source,
            existing: existing.clone(),
            config,
            catalog,
        };
        let result = match (kind, self.google.as_deref()) {
            // A folder source stored before the API refused them on AWS, or written to
            // the table by hand: never read the function's own file system.
            (SourceKind::Folder, _) if !self.deployment.allows_folder_sources() => {
                let error = crate::deployment::Deployment::FOLDER_REFUSED.to_owned();
                return ops.fail(job, existing, error).await.map(Some);
            }
            (SourceKind::Folder, _) => folder::sync(ops, pass).await,
            (kind, None) => {
                let error = format!(
                    "sources of kind {kind:?} need Google API clients, and this worker has none"
                );
                return ops.fail(job, existing, error).await.map(Some);
            }
            (SourceKind::Drive, Some(google)) => drive::sync(ops, google, pass).await,
            (SourceKind::Sheet, Some(google)) => setlist::sync(ops, google, pass).await,
            (SourceKind::Calendar, Some(google)) => calendar::sync(ops, google, pass).await,
        };
        // The operation as the pass left it (it may have begun one), for ending it here.
        let current = async {
            let stored = self.stores.operations.get_operation(&job.id).await?;
            Ok::<_, SyncError>(stored.or(existing))
        };
        match result {
            // An operator deleted or changed the source under this pass: stop, and write
            // nothing of the source (neither recreate it nor revert their change).
            Err(SyncError::SourceGoneOrChanged) => ops.abandon(job, current.await?).await.map(Some),
            // Retrying cannot fix these (no credentials, no access, no such folder,
            // calendar or sheet): fail the operation so operators and members see why.
            Err(SyncError::Google(e)) if e.is_permanent() => ops
                .fail(job, current.await?, format!("Google refused the sync: {e}"))
                .await
                .map(Some),
            other => other,
        }
    }
}
