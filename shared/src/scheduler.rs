//! The scheduler job: what runs on a timer rather than on an event. Push notifications
//! can be dropped (Google says so; a folder watcher can overflow), so every source is
//! reconciled periodically; channel logs keep events only for the retention window; and,
//! with a [`WatchKeeper`], every Google source keeps a live watch channel (opened,
//! renewed with overlap, stopped when its source goes).

use crate::entities::settle::{SettleReport, Settler};
use crate::model::{BandId, ChannelName, SyncJob, Trigger};
use crate::ports::{
    ChannelLog, Clock, ConfigStore, DedupeStore, EntityStore, PortError, Queue, SourceStore,
};
use crate::sync::purge::{PurgeReport, Purger};
use crate::watch_keeper::{WatchKeeper, WatchReport};
use std::sync::Arc;
use std::time::Duration;

/// How long a queued reconcile counts as pending while its source's generation has not
/// moved (no pass started). Past it the job is presumed lost (dead-lettered, or dropped)
/// and the next tick queues another: well above a healthy queue's wait (the sync queue's
/// 900 s visibility times a few receives), far below "never".
pub const RECONCILE_PENDING_FOR: Duration = Duration::from_secs(3600);

/// The queue dedup id of a source's reconcile at a generation. Apart from the
/// notifications' ([`crate::webhook::pending_dedup_id`]): a notification read while a
/// reconcile waits is still its own job, as it always was.
pub fn reconcile_dedup_id(
    band: &BandId,
    source: &crate::model::SourceId,
    generation: u64,
) -> String {
    let who = crate::sync::short_hash(&[band.as_str(), source.as_str()]);
    format!("{who}:r{generation}")
}

pub struct Scheduler {
    sources: Arc<dyn SourceStore>,
    /// Which sources have a reconcile queued at their current generation.
    marks: Arc<dyn DedupeStore>,
    log: Arc<dyn ChannelLog>,
    queue: Arc<dyn Queue>,
    clock: Arc<dyn Clock>,
    /// How long the channel log keeps events for `resume`.
    pub retention: Duration,
    /// How long a tick may start Google's watch calls, after the reconciles are queued
    /// (the scheduler Lambda has 60 s in all; a call started just before may take a
    /// request timeout more).
    pub channel_budget: Duration,
    watch_keeper: Option<WatchKeeper>,
    registry: Option<Arc<dyn ConfigStore>>,
    /// Publishes the due `presence.left`s on every tick.
    presence: Option<crate::presence::Presence>,
    settler: Option<Settler>,
    /// Whose entity history is pruned past `history_retention` on every tick.
    entities: Option<Arc<dyn EntityStore>>,
    /// How long entity history is kept (an entity's newest entry is kept anyway),
    /// unless the band's configuration sets its own `history_days`.
    pub history_retention: Duration,
    /// Clears deleted sources' catalogs and old calendar tombstones on every tick.
    purger: Option<Purger>,
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    pub reconciles_queued: usize,
    pub events_pruned: u64,
    /// What the watch keeper did to the watch channels.
    pub watch_channels: WatchReport,
    /// What the `ask` fallback settled.
    pub conflicts: SettleReport,
    /// Entity history entries past the retention, forgotten.
    pub history_pruned: u64,
    /// What the purger cleared: deleted sources' catalogs, old calendar tombstones.
    pub purged: PurgeReport,
}

impl Scheduler {
    pub fn new(
        sources: Arc<dyn SourceStore>,
        marks: Arc<dyn DedupeStore>,
        log: Arc<dyn ChannelLog>,
        queue: Arc<dyn Queue>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            sources,
            marks,
            log,
            queue,
            clock,
            retention: Duration::from_secs(24 * 3600),
            channel_budget: Duration::from_secs(20),
            watch_keeper: None,
            registry: None,
            presence: None,
            settler: None,
            entities: None,
            history_retention: Duration::from_secs(90 * 24 * 3600),
            purger: None,
        }
    }

    /// Clear deleted sources' catalogs and old calendar tombstones on every tick.
    pub fn with_purger(mut self, purger: Purger) -> Self {
        self.purger = Some(purger);
        self
    }

    /// Sweep presence's leaving marks on every tick.
    pub fn with_presence(mut self, presence: crate::presence::Presence) -> Self {
        self.presence = Some(presence);
        self
    }

    /// Keep the watch channels of Google sources on every tick.
    pub fn with_watch_keeper(mut self, keeper: impl Into<Option<WatchKeeper>>) -> Self {
        self.watch_keeper = keeper.into();
        self
    }

    /// Settle the open `ask` conflicts past their deadline on every tick.
    pub fn with_settler(mut self, settler: impl Into<Option<Settler>>) -> Self {
        self.settler = settler.into();
        self
    }

    /// Prune the bands' entity history past `history_retention` on every tick.
    pub fn with_entities(mut self, entities: Arc<dyn EntityStore>) -> Self {
        self.entities = Some(entities);
        self
    }

    /// Also tick every band the store has a configuration for (the band registry), and
    /// read each band's `history_days` there.
    pub fn with_registry(mut self, configs: Arc<dyn ConfigStore>) -> Self {
        self.registry = Some(configs);
        self
    }

    async fn reconcile_band(
        &self,
        band: &BandId,
        now: chrono::DateTime<chrono::Utc>,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<(usize, u64), PortError> {
        let mut queued = 0;
        for source in self.sources.list_sources(band).await? {
            if self.queue_reconcile(band, &source.id, now).await? {
                queued += 1;
            }
        }
        let pruned = self
            .log
            .prune(&ChannelName::Band(band.clone()), cutoff)
            .await?;
        Ok((queued, pruned))
    }

    /// Queue a reconcile of one source unless one is pending already. True if queued.
    ///
    /// A slow source (a pass longer than the tick, or a group held up behind a failing
    /// job) must not gather one reconcile per tick. So the job's dedup id is one per
    /// source and generation ([`reconcile_dedup_id`]), and a mark per (source,
    /// generation) says one was queued; the worker bumps the generation when the pass
    /// starts, so the first tick after that queues the next one. Marked after the send,
    /// as the webhook does: a failed send leaves no mark, so the next tick tries again.
    async fn queue_reconcile(
        &self,
        band: &BandId,
        source: &crate::model::SourceId,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, PortError> {
        let generation = self.sources.generation(band, source).await?;
        let dedup_id = reconcile_dedup_id(band, source, generation);
        let mark = format!("reconcile:{dedup_id}");
        if self.marks.seen(&mark, now).await? {
            return Ok(false);
        }
        let job = SyncJob::new(
            band.clone(),
            source.clone(),
            Trigger::Reconcile,
            false,
            None,
            now,
        );
        crate::sync::enqueue(self.queue.as_ref(), &job, dedup_id).await?;
        self.marks
            .first_seen(&mark, now, RECONCILE_PENDING_FOR)
            .await?;
        Ok(true)
    }

    /// Entity history of `band` older than this goes: its `history_days` when the
    /// band's configuration sets it (read from the registry), else `history_retention`.
    pub async fn history_cutoff(
        &self,
        band: &BandId,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<chrono::DateTime<chrono::Utc>, PortError> {
        let days = match &self.registry {
            Some(configs) => configs.get_config(band).await?.and_then(|c| c.history_days),
            None => None,
        };
        let keep = match days {
            Some(days) => chrono::Duration::days(i64::from(days)),
            None => chrono::Duration::from_std(self.history_retention)
                .unwrap_or(chrono::Duration::days(90)),
        };
        Ok(now
            .checked_sub_signed(keep)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC))
    }

    /// `bands` and, with a registry, every registered band; each once, in order.
    async fn bands(&self, bands: &[BandId]) -> Result<Vec<BandId>, PortError> {
        let mut all = bands.to_vec();
        if let Some(registry) = &self.registry {
            all.extend(registry.list_bands().await?);
        }
        all.sort();
        all.dedup();
        Ok(all)
    }

    /// Queue a reconcile of every source of `bands` (and of the registry's), prune their
    /// channel logs, settle their due `ask` conflicts, prune their entity history, purge
    /// their deleted sources' catalogs and old calendar tombstones, then keep their watch
    /// channels.
    ///
    /// The reconciles come first: they are the safety net for lost notifications, and a
    /// slow or failing Google must not keep them from being queued. The channel keeper
    /// then gets what is left of `channel_budget`; its failures are logged and counted,
    /// never the tick's failure.
    #[tracing::instrument(skip(self, bands), fields(bands = bands.len()))]
    pub async fn tick(&self, bands: &[BandId]) -> Result<TickReport, PortError> {
        let bands = self.bands(bands).await?;
        let now = self.clock.now();
        let cutoff =
            now - chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::days(1));
        let mut report = TickReport::default();
        // One band's failure must not stop the others: log it, go on, fail at the end.
        let mut failed = None;
        for band in &bands {
            match self.reconcile_band(band, now, cutoff).await {
                Ok((queued, pruned)) => {
                    report.reconciles_queued += queued;
                    report.events_pruned += pruned;
                }
                Err(e) => {
                    tracing::error!(%band, error = %e, "scheduler tick of a band failed");
                    failed = Some(e);
                }
            }
        }
        if let Some(settler) = &self.settler {
            // Members' conflicts before Google's channels: their deadline is a promise.
            for band in &bands {
                match settler.settle_band(band, now).await {
                    Ok(r) => report.conflicts.add(&r),
                    Err(e) => {
                        tracing::error!(%band, error = %e, "settling a band's due conflicts failed");
                        failed = Some(e);
                    }
                }
            }
        }
        if let Some(entities) = &self.entities {
            for band in &bands {
                let pruned = match self.history_cutoff(band, now).await {
                    Ok(cutoff) => entities.prune_history(band, cutoff).await,
                    Err(e) => Err(e),
                };
                match pruned {
                    Ok(n) => report.history_pruned += n,
                    Err(e) => {
                        tracing::error!(%band, error = %e, "pruning a band's entity history failed");
                        failed = Some(e);
                    }
                }
            }
        }
        if let Some(purger) = &self.purger {
            for band in &bands {
                match purger.prune_band(band).await {
                    Ok(r) => report.purged.add(&r),
                    Err(e) => {
                        tracing::error!(%band, error = %e, "purging a band's deleted sources failed");
                        failed = Some(e);
                    }
                }
            }
        }
        if let Some(keeper) = &self.watch_keeper {
            let deadline = std::time::Instant::now() + self.channel_budget;
            for band in &bands {
                match keeper.tick_band(band, deadline).await {
                    Ok(r) => report.watch_channels.add(&r),
                    Err(e) => {
                        report.watch_channels.failed += 1;
                        tracing::error!(%band, error = %e, "watch channels of a band failed");
                    }
                }
            }
        }
        if let Some(presence) = &self.presence {
            presence.sweep_quietly().await;
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(report)
    }
}
