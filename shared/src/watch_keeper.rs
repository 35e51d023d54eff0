//! The [`WatchKeeper`]: the lifecycle of Google's watch channels (push notification
//! channels, not the bands' event channels), run by the scheduler on every tick: each
//! Google source (Drive folder, setlist sheet, calendar) keeps one live push channel.
//!
//! - a source without a live channel gets one: a random id (UUID) and token (244 random
//!   bits), of which only the token's hash is stored;
//! - a channel is renewed once less than a quarter of its life is left: the new channel
//!   is opened and stored *first*, then the old one is stopped (`channels.stop`) and
//!   forgotten, so the two overlap and no notification falls between them;
//! - channels of sources that are gone are stopped and forgotten; expired ones are just
//!   forgotten (Google has ended them). A source deleted while its channel was being
//!   opened is read again once the channel is stored, and the channel stopped at once:
//!   no watch outlives its source by more than the pass that opened it;
//! - a failure on one source is logged and counted; the others go on, and the old
//!   channel stays until a renewal succeeds. A stop that fails keeps the record so the
//!   next tick tries again (Google also ends it at its expiry).
//!
//! Folder sources (the local stack's stand-in for Drive) are left alone: the folder
//! watcher registers its own channel.

use crate::google::GoogleError;
use crate::google::apis::WatchApi;
use crate::google::watch::WatchRequest;
use crate::model::{BandId, Source, SourceKind, WatchChannel};
use crate::ports::{Clock, PortError, SourceStore, WatchChannelStore};
use crate::webhook::token_hash;
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::Arc;
use std::time::Instant;

/// How long a new channel is asked to live. Google caps it per resource (Drive files:
/// one day; the change log and calendars: longer) and answers the real expiry.
pub fn requested_ttl(kind: SourceKind) -> TimeDelta {
    match kind {
        SourceKind::Sheet => TimeDelta::days(1),
        _ => TimeDelta::days(7),
    }
}

/// What one pass did, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchReport {
    pub created: usize,
    pub renewed: usize,
    pub stopped: usize,
    pub forgotten: usize,
    pub failed: usize,
    /// Calls left for the next run: the time budget was spent.
    pub deferred: usize,
}

impl WatchReport {
    pub fn add(&mut self, other: &WatchReport) {
        self.created += other.created;
        self.renewed += other.renewed;
        self.stopped += other.stopped;
        self.forgotten += other.forgotten;
        self.failed += other.failed;
        self.deferred += other.deferred;
    }
}

/// Why a source's watch channel could not be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error(transparent)]
    Google(#[from] GoogleError),
    /// Google opened it but we could not keep it (so it was stopped again).
    #[error("storing the channel: {0}")]
    Store(PortError),
}

/// Keeps every Google source's watch channel alive (see the module documentation).
pub struct WatchKeeper {
    sources: Arc<dyn SourceStore>,
    channels: Arc<dyn WatchChannelStore>,
    api: Arc<dyn WatchApi>,
    clock: Arc<dyn Clock>,
    /// The public HTTPS URL of `/webhooks/google`.
    address: String,
}

fn is_google(kind: SourceKind) -> bool {
    !matches!(kind, SourceKind::Folder)
}

impl WatchKeeper {
    pub fn new(
        sources: Arc<dyn SourceStore>,
        channels: Arc<dyn WatchChannelStore>,
        api: Arc<dyn WatchApi>,
        clock: Arc<dyn Clock>,
        address: String,
    ) -> Self {
        Self {
            sources,
            channels,
            api,
            clock,
            address,
        }
    }

    /// One pass over a band's sources and channels. No Google call starts after
    /// `deadline`: what is left is counted as deferred, for the next run.
    #[tracing::instrument(skip(self, deadline), fields(band = %band))]
    pub async fn tick_band(
        &self,
        band: &BandId,
        deadline: Instant,
    ) -> Result<WatchReport, PortError> {
        let now = self.clock.now();
        let sources = self.sources.list_sources(band).await?;
        let channels = self.channels.list_watch_channels(band).await?;
        let mut report = WatchReport::default();
        // Channels this pass keeps: the live (or just opened) one of each source.
        let mut keep: Vec<String> = Vec::new();
        for source in sources.iter().filter(|s| is_google(s.kind)) {
            let newest = channels
                .iter()
                .filter(|c| c.source == source.id && c.expires_at.is_some_and(|at| at > now))
                .max_by_key(|c| c.expires_at);
            let due = newest.is_none_or(|c| renewal_due(c, now));
            if !due || Instant::now() >= deadline {
                report.deferred += usize::from(due);
                keep.extend(newest.map(|c| c.id.clone()));
                continue;
            }
            match self.open(source, now).await {
                Ok(None) => report.stopped += 1,
                Ok(Some(opened)) => {
                    if newest.is_some() {
                        report.renewed += 1;
                    } else {
                        report.created += 1;
                    }
                    keep.push(opened.id);
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::error!(source = %source.id, error = %e, "could not open a watch channel");
                    // Keep the old one while it lives: it still delivers.
                    keep.extend(newest.map(|c| c.id.clone()));
                }
            }
        }
        for old in channels.iter().filter(|c| !keep.contains(&c.id)) {
            let Some(kind) = old.kind.filter(|k| is_google(*k)) else {
                continue;
            };
            if old.expires_at.is_some_and(|at| at <= now) {
                self.channels.delete_watch_channel(old).await?;
                report.forgotten += 1;
                continue;
            }
            if Instant::now() >= deadline {
                report.deferred += 1;
                continue;
            }
            match self
                .api
                .stop(&old.band, kind, &old.id, &old.resource_id)
                .await
            {
                Ok(()) => {
                    self.channels.delete_watch_channel(old).await?;
                    report.stopped += 1;
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(channel = %old.id, error = %e, "could not stop a watch channel; will retry");
                }
            }
        }
        Ok(report)
    }

    /// Open and store a channel for `source`; `None` if the source was deleted meanwhile
    /// (the channel is stopped and forgotten again).
    async fn open(
        &self,
        source: &Source,
        now: DateTime<Utc>,
    ) -> Result<Option<WatchChannel>, OpenError> {
        let id = uuid::Uuid::new_v4().to_string();
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let asked = now + requested_ttl(source.kind);
        let request = WatchRequest::new(id.clone(), self.address.clone(), token.clone(), asked);
        let channel = self.api.watch(source, &request).await?;
        let stored = WatchChannel {
            id,
            band: source.band.clone(),
            source: source.id.clone(),
            resource_id: channel.resource_id.clone(),
            token_hash: token_hash(&token),
            expires_at: Some(channel.expires_at().unwrap_or(asked)),
            last_message: None,
            last_message_at: None,
            kind: Some(source.kind),
            created_at: Some(now),
        };
        if let Err(e) = self.channels.put_watch_channel(&stored).await {
            // Google has it, we do not: stop it rather than leave it unverifiable.
            let _ = self
                .api
                .stop(&source.band, source.kind, &stored.id, &stored.resource_id)
                .await;
            return Err(OpenError::Store(e));
        }
        // Stored first, then read again: a delete before this read is seen here, one after
        // it by the next pass, which stops the channel of a source that is gone.
        let exists = self.sources.get_source(&source.band, &source.id).await;
        if matches!(exists, Ok(None)) {
            tracing::info!(channel = %stored.id, source = %source.id, "the source was deleted while its watch channel opened; stopping it");
            self.api
                .stop(&source.band, source.kind, &stored.id, &stored.resource_id)
                .await?;
            self.channels
                .delete_watch_channel(&stored)
                .await
                .map_err(OpenError::Store)?;
            return Ok(None);
        }
        tracing::info!(channel = %stored.id, source = %source.id, expires_at = ?stored.expires_at, "watch channel opened");
        Ok(Some(stored))
    }
}

/// Less than a quarter of the channel's life left (its life: from creation, or the
/// requested TTL when the creation time is unknown).
fn renewal_due(channel: &WatchChannel, now: DateTime<Utc>) -> bool {
    let Some(expires) = channel.expires_at else {
        return true;
    };
    let life = match (channel.created_at, channel.kind) {
        (Some(created), _) => expires - created,
        (None, Some(kind)) => requested_ttl(kind),
        (None, None) => TimeDelta::days(1),
    };
    expires - now < life / 4
}
