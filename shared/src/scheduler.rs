//! The scheduler job: what runs on a timer rather than on an event. Push notifications
//! can be dropped (Google says so; a folder watcher can overflow), so every source is
//! reconciled periodically; channel logs keep events only for the retention window; and,
//! with a [`ChannelKeeper`], every Google source keeps a live watch channel (opened,
//! renewed with overlap, stopped when its source goes).

use crate::channels::{ChannelKeeper, ChannelReport};
use crate::model::{BandId, ChannelName, SyncJob, Trigger};
use crate::ports::{ChannelLog, Clock, PortError, Queue, SourceStore};
use std::sync::Arc;
use std::time::Duration;

pub struct Scheduler {
    sources: Arc<dyn SourceStore>,
    log: Arc<dyn ChannelLog>,
    queue: Arc<dyn Queue>,
    clock: Arc<dyn Clock>,
    /// How long the channel log keeps events for `resume`.
    pub retention: Duration,
    channels: Option<ChannelKeeper>,
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
            channels: None,
        }
    }

    /// Keep the watch channels of Google sources on every tick.
    pub fn with_channels(mut self, keeper: impl Into<Option<ChannelKeeper>>) -> Self {
        self.channels = keeper.into();
        self
    }

    async fn tick_band(
        &self,
        band: &BandId,
        now: chrono::DateTime<chrono::Utc>,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<(usize, u64, ChannelReport), PortError> {
        // Channels first: a reconcile queued below then covers what a gap between an
        // expired channel and its replacement missed.
        let channels = match &self.channels {
            Some(keeper) => keeper.tick_band(band).await?,
            None => ChannelReport::default(),
        };
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
        Ok((queued, pruned, channels))
    }

    /// Queue a reconcile of every source of `bands` and prune their channel logs.
    #[tracing::instrument(skip(self, bands), fields(bands = bands.len()))]
    pub async fn tick(&self, bands: &[BandId]) -> Result<TickReport, PortError> {
        let now = self.clock.now();
        let cutoff =
            now - chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::days(1));
        let mut report = TickReport::default();
        // One band's failure must not stop the others: log it, go on, fail at the end.
        let mut failed = None;
        for band in bands {
            match self.tick_band(band, now, cutoff).await {
                Ok((queued, pruned, channels)) => {
                    report.reconciles_queued += queued;
                    report.events_pruned += pruned;
                    let c = &mut report.channels;
                    c.created += channels.created;
                    c.renewed += channels.renewed;
                    c.stopped += channels.stopped;
                    c.forgotten += channels.forgotten;
                    c.failed += channels.failed;
                }
                Err(e) => {
                    tracing::error!(%band, error = %e, "scheduler tick of a band failed");
                    failed = Some(e);
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
}
