//! The scheduler job: what runs on a timer rather than on an event. Push notifications
//! can be dropped (Google says so; a folder watcher can overflow), so every source is
//! reconciled periodically; channel logs keep events only for the retention window; and,
//! with a [`ChannelKeeper`], every Google source keeps a live watch channel (opened,
//! renewed with overlap, stopped when its source goes).

use crate::channels::{ChannelKeeper, ChannelReport};
use crate::model::{BandId, ChannelName, SyncJob, Trigger};
use crate::ports::{ChannelLog, Clock, ConfigStore, PortError, Queue, SourceStore};
use std::sync::Arc;
use std::time::Duration;

pub struct Scheduler {
    sources: Arc<dyn SourceStore>,
    log: Arc<dyn ChannelLog>,
    queue: Arc<dyn Queue>,
    clock: Arc<dyn Clock>,
    /// How long the channel log keeps events for `resume`.
    pub retention: Duration,
    /// How long a tick may start Google's watch calls, after the reconciles are queued
    /// (the scheduler Lambda has 60 s in all; a call started just before may take a
    /// request timeout more).
    pub channel_budget: Duration,
    channels: Option<ChannelKeeper>,
    registry: Option<Arc<dyn ConfigStore>>,
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    pub reconciles_queued: usize,
    pub events_pruned: u64,
    pub channels: ChannelReport,
}

impl Scheduler {
    pub fn new(
        sources: Arc<dyn SourceStore>,
        log: Arc<dyn ChannelLog>,
        queue: Arc<dyn Queue>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            sources,
            log,
            queue,
            clock,
            retention: Duration::from_secs(24 * 3600),
            channel_budget: Duration::from_secs(20),
            channels: None,
            registry: None,
        }
    }

    /// Keep the watch channels of Google sources on every tick.
    pub fn with_channels(mut self, keeper: impl Into<Option<ChannelKeeper>>) -> Self {
        self.channels = keeper.into();
        self
    }

    /// Also tick every band the store has a configuration for (the band registry).
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
            let job = SyncJob::new(
                band.clone(),
                source.id,
                Trigger::Reconcile,
                false,
                None,
                now,
            );
            crate::sync::enqueue(self.queue.as_ref(), &job, job.id.clone()).await?;
            queued += 1;
        }
        let pruned = self
            .log
            .prune(&ChannelName::Band(band.clone()), cutoff)
            .await?;
        Ok((queued, pruned))
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
    /// channel logs, then keep their watch channels.
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
        if let Some(keeper) = &self.channels {
            let deadline = std::time::Instant::now() + self.channel_budget;
            for band in &bands {
                match keeper.tick_band(band, deadline).await {
                    Ok(r) => report.channels.add(&r),
                    Err(e) => {
                        report.channels.failed += 1;
                        tracing::error!(%band, error = %e, "watch channels of a band failed");
                    }
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NewEvent, Source, SourceId, SourceKind};
    use crate::ports::SourceStore;
    use crate::testing::*;

    #[tokio::test]
    async fn a_tick_reconciles_every_source_and_prunes_past_the_window() {
        // GIVEN a band with two sources and an event older than the retention window
        let h = Harness::new();
        let demo = BandId::parse("demo").unwrap();
        for id in ["charts", "takes"] {
            h.store
                .put_source(&Source::new(
                    demo.clone(),
                    SourceId::parse(id).unwrap(),
                    SourceKind::Folder,
                    "/nowhere",
                ))
                .await
                .unwrap();
        }
        let old = NewEvent {
            id: "old".into(),
            event: "file.created".into(),
            ts: h.now() - chrono::Duration::days(2),
            data: serde_json::json!({}),
        };
        let fresh = NewEvent {
            id: "fresh".into(),
            ts: h.now(),
            ..old.clone()
        };
        let channel = ChannelName::Band(demo.clone());
        h.store.append(&channel, &[old, fresh]).await.unwrap();
        let scheduler = Scheduler::new(
            h.store.clone(),
            h.store.clone(),
            h.sync_queue.clone(),
            h.clock.clone(),
        );

        // WHEN it ticks
        let report = scheduler.tick(std::slice::from_ref(&demo)).await.unwrap();

        // THEN one reconcile per source is queued in its group, and the old event is gone
        assert_eq!(
            report,
            TickReport {
                reconciles_queued: 2,
                events_pruned: 1,
                channels: ChannelReport::default(),
            }
        );
        let groups: Vec<String> = h
            .sync_queue
            .messages()
            .into_iter()
            .map(|m| m.group)
            .collect();
        assert_eq!(groups, ["demo/charts", "demo/takes"]);
        assert_eq!(
            h.store
                .head(&channel)
                .await
                .unwrap()
                .unwrap()
                .first_retained,
            2
        );
    }

    /// Google down: every watch call fails after a while.
    struct GoogleDown;

    #[async_trait::async_trait]
    impl crate::google::apis::WatchApi for GoogleDown {
        async fn watch(
            &self,
            _source: &Source,
            _request: &crate::google::watch::WatchRequest,
        ) -> Result<crate::google::watch::Channel, crate::google::GoogleError> {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err(crate::google::GoogleError::Transport("unreachable".into()))
        }
        async fn stop(
            &self,
            _band: &BandId,
            _kind: SourceKind,
            _id: &str,
            _resource_id: &str,
        ) -> Result<(), crate::google::GoogleError> {
            Err(crate::google::GoogleError::Transport("unreachable".into()))
        }
    }

    #[tokio::test]
    async fn registered_bands_are_reconciled_even_when_google_is_down() {
        // GIVEN two registered bands (one also named by BANDS) with three Drive sources,
        // and a Google that fails every watch call
        let h = Harness::new();
        let demo = h.add_band("demo").await;
        let jazz = h.add_band("jazz").await;
        for (band, id) in [(&demo, "charts"), (&demo, "takes"), (&jazz, "gigs")] {
            let source = Source::new(
                band.clone(),
                SourceId::parse(id).unwrap(),
                SourceKind::Drive,
                "folder-id",
            );
            h.store.put_source(&source).await.unwrap();
        }
        let keeper = ChannelKeeper::new(
            h.store.clone(),
            h.store.clone(),
            Arc::new(GoogleDown),
            h.clock.clone(),
            "https://example.com/webhooks/google".into(),
        );
        let mut scheduler = Scheduler::new(
            h.store.clone(),
            h.store.clone(),
            h.sync_queue.clone(),
            h.clock.clone(),
        )
        .with_registry(h.store.clone())
        .with_channels(keeper);
        // AND a budget that only lets the first watch call start
        scheduler.channel_budget = Duration::from_millis(10);

        // WHEN it ticks with BANDS = demo
        let report = scheduler.tick(std::slice::from_ref(&demo)).await.unwrap();

        // THEN every source of both bands got its reconcile, each once
        assert_eq!(report.reconciles_queued, 3, "{report:?}");
        let mut groups: Vec<String> = h
            .sync_queue
            .messages()
            .into_iter()
            .map(|m| m.group)
            .collect();
        groups.sort();
        assert_eq!(groups, ["demo/charts", "demo/takes", "jazz/gigs"]);
        // AND the watch calls failed or were left for the next run, without failing
        // the tick
        assert_eq!(report.channels.failed, 1, "{report:?}");
        assert_eq!(report.channels.deferred, 2, "{report:?}");
        assert_eq!(report.channels.created, 0);
    }
}
