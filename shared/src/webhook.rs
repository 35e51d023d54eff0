//! Webhook intake: a push notification says "something changed in this source".
//!
//! Google signs nothing, so a notification is accepted only when its channel id is one
//! we created, its token matches the stored hash (constant-time) and its resource id
//! matches. The `sync` handshake is acknowledged and starts nothing; unknown states are
//! ignored; a repeated message number is deduplicated before anything is queued. We answer 2xx as soon as the job
//! is queued, and 5xx only when queueing failed, so that Google retries.
//!
//! Bursts collapse: the job's queue dedup id is `<band>/<source>:g<generation>`, where
//! the generation is the source's count of sync passes started. Every notification read
//! before the next pass starts gets the same id, and the FIFO queue drops the repeats;
//! the pass covers them all because the worker bumps the generation *before* it reads
//! the source, so a change notified before the bump happened before the read. A
//! notification read after the bump gets a new id and a new pass.
//! The folder watcher of the local stack sends the same headers through the same path.

use crate::error::Refusal;
use crate::model::{BandId, SourceId, SyncJob, Trigger};
use crate::ports::{Clock, DedupeStore, PortError, Queue, SourceStore, WatchChannelStore};
use crate::transport::http::{header, json_v2, refused_v2};
use crate::transport::untrusted;
use crate::wire::http::WebhookAnswer;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

pub const H_CHANNEL_ID: &str = "x-goog-channel-id";
pub const H_CHANNEL_TOKEN: &str = "x-goog-channel-token";
pub const H_RESOURCE_ID: &str = "x-goog-resource-id";
pub const H_RESOURCE_STATE: &str = "x-goog-resource-state";
pub const H_MESSAGE_NUMBER: &str = "x-goog-message-number";

/// How long a message number is remembered. Google retries for much less than this.
pub const DEDUPE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Resource states that mean "go and look" (Drive, Calendar and the folder watcher).
const CHANGE_STATES: &[&str] = &[
    "add",
    "remove",
    "update",
    "trash",
    "untrash",
    "change",
    "exists",
    "not_exists",
];

/// The queue dedup id of a notification's job: one per source and generation, so that
/// the notifications of one burst queue one job (see the module doc).
/// (`<hash of band/source>:g<generation>`: SQS allows 128 characters, and a band and
/// source id may take 128 between them.)
pub fn pending_dedup_id(band: &BandId, source: &SourceId, generation: u64) -> String {
    let who = crate::sync::short_hash(&[band.as_str(), source.as_str()]);
    format!("{who}:g{generation}")
}

/// What is stored instead of a channel token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub struct WebhookIntake {
    /// The channel a notification names, and its newest message number.
    channels: Arc<dyn WatchChannelStore>,
    /// The generation of the channel's source (the job's dedup id).
    sources: Arc<dyn SourceStore>,
    /// The message numbers already seen.
    dedupe: Arc<dyn DedupeStore>,
    queue: Arc<dyn Queue>,
    clock: Arc<dyn Clock>,
}

/// What happened to an accepted notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Intake {
    Queued(SyncJob),
    SyncHandshake,
    Duplicate,
    Ignored(String),
}

/// Why a notification was refused.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("header {0} is required")]
    MissingHeader(&'static str),
    #[error("{H_MESSAGE_NUMBER} must be a number")]
    InvalidMessageNumber,
    #[error("unknown channel")]
    UnknownChannel,
    #[error("channel token does not match")]
    TokenMismatch,
    #[error("resource id does not match the channel")]
    ResourceMismatch,
    #[error("the channel has expired")]
    ChannelExpired,
    /// Reading the channel or queueing the job failed: Google retries on the 5xx.
    #[error(transparent)]
    Port(#[from] PortError),
}

impl WebhookIntake {
    pub fn new(
        channels: Arc<dyn WatchChannelStore>,
        sources: Arc<dyn SourceStore>,
        dedupe: Arc<dyn DedupeStore>,
        queue: Arc<dyn Queue>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            channels,
            sources,
            dedupe,
            queue,
            clock,
        }
    }

    #[tracing::instrument(skip_all, fields(channel = %untrusted(header(&req.headers, H_CHANNEL_ID).unwrap_or_default())))]
    pub async fn handle(&self, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        match self.intake(&req.headers).await {
            Ok(intake) => {
                let answer = match intake {
                    Intake::Queued(job) => WebhookAnswer::Queued { job: job.id },
                    Intake::SyncHandshake => WebhookAnswer::SyncAcknowledged,
                    Intake::Duplicate => WebhookAnswer::Duplicate,
                    Intake::Ignored(state) => WebhookAnswer::Ignored { state },
                };
                // Through a Value, so the keys keep the alphabetical order they had.
                json_v2(200, &serde_json::to_value(answer).unwrap_or_default())
            }
            Err(e) => {
                let refusal = Refusal::from(e);
                tracing::info!(code = %refusal.code, message = %refusal.message, "notification refused");
                refused_v2(refusal)
            }
        }
    }

    pub async fn intake(&self, headers: &http::HeaderMap) -> Result<Intake, IntakeError> {
        let required = |name: &'static str| {
            header(headers, name)
                .filter(|v| !v.is_empty())
                .ok_or(IntakeError::MissingHeader(name))
        };
        let channel_id = required(H_CHANNEL_ID)?;
        let token = header(headers, H_CHANNEL_TOKEN).unwrap_or_default();
        let resource_id = required(H_RESOURCE_ID)?;
        let state = required(H_RESOURCE_STATE)?;
        let number: u64 = required(H_MESSAGE_NUMBER)?
            .parse()
            .map_err(|_| IntakeError::InvalidMessageNumber)?;

        let channel = self
            .channels
            .get_watch_channel(channel_id)
            .await?
            .ok_or(IntakeError::UnknownChannel)?;
        let token_ok: bool = token_hash(token)
            .as_bytes()
            .ct_eq(channel.token_hash.as_bytes())
            .into();
        if !token_ok {
            return Err(IntakeError::TokenMismatch);
        }
        if resource_id != channel.resource_id {
            return Err(IntakeError::ResourceMismatch);
        }
        let now = self.clock.now();
        if channel.expires_at.is_some_and(|at| at <= now) {
            return Err(IntakeError::ChannelExpired);
        }
        if state == "sync" {
            return Ok(Intake::SyncHandshake);
        }
        if !CHANGE_STATES.contains(&state) {
            return Ok(Intake::Ignored(state.to_owned()));
        }
        // Check, queue, then remember: a repeated message number (Google's retry of one
        // we queued, or a replay) queues nothing. Remembering only after the send keeps
        // the old guarantee: a send that fails, or a crash between the two, leaves the
        // number unmarked, so Google's retry queues the job again (the queue's dedup id
        // drops a repeat that did get through), never loses it. Two copies arriving at
        // once may both pass the check; they get the same dedup id unless a pass started
        // between them, and a second pass is harmless.
        // (A source that is gone has its channel stopped by the scheduler; a job queued
        // meanwhile is dropped by the worker.)
        // The message, not a storage key: each store adds its own namespace.
        let key = format!("{channel_id}#{number}");
        if self.dedupe.seen(&key, now).await? {
            return Ok(Intake::Duplicate);
        }
        let generation = self
            .sources
            .generation(&channel.band, &channel.source)
            .await?;
        let job = SyncJob::new(
            channel.band.clone(),
            channel.source.clone(),
            Trigger::Notification,
            false,
            None,
            now,
        );
        let dedup_id = pending_dedup_id(&channel.band, &channel.source, generation);
        crate::sync::enqueue(self.queue.as_ref(), &job, dedup_id).await?;
        if !self.dedupe.first_seen(&key, now, DEDUPE_TTL).await? {
            // The twin that raced this one marked it first; both sent the same job.
            return Ok(Intake::Duplicate);
        }
        if let Err(e) = self.channels.record_message(channel_id, number, now).await {
            // Operator information only; the job is queued.
            tracing::warn!(error = ?e, "could not record the channel's last message");
        }
        Ok(Intake::Queued(job))
    }
}
