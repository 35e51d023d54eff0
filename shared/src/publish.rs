//! Publishing: append events to a channel's log (which gives them their seq), then queue
//! them for broadcast on the channel's FIFO group. Both steps are idempotent, so a job
//! that is delivered again publishes nothing twice.
//!
//! Priorities (see [`Backpressure`]): a publisher of bulk events (normal and low: a
//! source's sync) appends a window of them only once the broadcaster has delivered the
//! channel to within `window` events of its head; high and critical events (a member's
//! edit) are appended at once. The channel keeps one gapless order, and an edit waits
//! behind at most one window plus one message of bulk events, not the whole sync.

use crate::backoff::{Sleeper, TokioSleeper};
use crate::broadcast::BroadcastMessage;
use crate::model::{ChannelName, Event, NewEvent};
use crate::ports::{ChannelLog, OutMessage, PortResult, Queue};
use crate::wire::events::Priority;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Events per broadcast message: keeps a message far under SQS's 256 KB.
pub const EVENTS_PER_MESSAGE: usize = 50;

/// How bulk publishing waits for the broadcaster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backpressure {
    /// Undelivered events of a channel a bulk window may be appended behind.
    pub window: u64,
    /// How often the delivered watermark is read while waiting.
    pub poll: Duration,
    /// A wait during which the watermark does not move at all (counted in `poll`s slept,
    /// so a test's sleeper decides it, not the wall clock) gives up: the broadcaster
    /// is down or not running. The channel is then not waited on again until its
    /// watermark moves, so a stalled broadcaster costs a sync one `stall`, not one per
    /// window (the events are in the log; the broadcaster catches up from it).
    pub stall: Duration,
}

impl Default for Backpressure {
    /// 100 events: two broadcast messages, well under a second of delivery.
    fn default() -> Self {
        Self {
            window: 100,
            poll: Duration::from_millis(10),
            stall: Duration::from_secs(2),
        }
    }
}

#[derive(Clone)]
pub struct Publisher {
    log: Arc<dyn ChannelLog>,
    broadcast: Arc<dyn Queue>,
    backpressure: Option<Backpressure>,
    /// Channels whose broadcaster stalled, with the watermark it stalled at.
    stalled: Arc<Mutex<HashMap<ChannelName, u64>>>,
    /// Where the polls of a backpressure wait are slept.
    sleeper: Arc<dyn Sleeper>,
}

impl Publisher {
    /// A publisher that never waits (every event appended at once).
    pub fn new(log: Arc<dyn ChannelLog>, broadcast: Arc<dyn Queue>) -> Self {
        Self {
            log,
            broadcast,
            backpressure: None,
            stalled: Arc::default(),
            sleeper: Arc::new(TokioSleeper),
        }
    }

    /// The same publisher, sleeping its polls through `sleeper` (tests record them).
    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// The same publisher, holding bulk events back as `backpressure` says.
    pub fn with_backpressure(mut self, backpressure: Backpressure) -> Self {
        self.backpressure = Some(backpressure);
        self
    }

    /// Wait (bounded, see [`Backpressure::stall`]) until the broadcaster has delivered
    /// `channel` to within a window of its head.
    async fn wait_for_room(&self, channel: &ChannelName, bp: Backpressure) -> PortResult<()> {
        let mut seen: Option<u64> = None;
        // Time slept since the watermark last moved.
        let mut still = Duration::ZERO;
        loop {
            let head = self.log.head(channel).await?.map_or(0, |h| h.seq);
            let delivered = self.log.delivered(channel).await?;
            // The lock is held in this block only, never across an await.
            {
                let mut stalled = self.stalled.lock().unwrap_or_else(|e| e.into_inner());
                if head.saturating_sub(delivered) <= bp.window {
                    stalled.remove(channel);
                    return Ok(());
                }
                if stalled.get(channel) == Some(&delivered) {
                    return Ok(());
                }
                if seen != Some(delivered) {
                    seen = Some(delivered);
                    still = Duration::ZERO;
                } else if still >= bp.stall {
                    tracing::warn!(%channel, head, delivered, "the broadcaster is not moving; publishing without waiting");
                    stalled.insert(channel.clone(), delivered);
                    return Ok(());
                }
            }
            self.sleeper.sleep(bp.poll).await;
            still += bp.poll;
        }
    }

    #[tracing::instrument(skip(self, events), fields(channel = %channel, count = events.len()))]
    pub async fn publish(
        &self,
        channel: &ChannelName,
        events: &[NewEvent],
    ) -> PortResult<Vec<Event>> {
        let mut published = Vec::with_capacity(events.len());
        for chunk in events.chunks(EVENTS_PER_MESSAGE) {
            let bulk = chunk.iter().all(|e| Priority::of(e.event()).is_bulk());
            if let Some(bp) = self.backpressure.filter(|_| bulk) {
                self.wait_for_room(channel, bp).await?;
            }
            let stored = self.log.append(channel, chunk).await?;
            self.send(channel, &stored).await?;
            published.extend(stored);
        }
        Ok(published)
    }

    /// Queue for broadcast events that are in the channel's log already (a push's
    /// commit appended them with the entity, in one write). Idempotent like
    /// [`Self::publish`]: the same events queued again carry the same dedup id, and the
    /// broadcaster fills any gap before them from the log.
    #[tracing::instrument(skip(self, events), fields(channel = %channel, count = events.len()))]
    pub async fn enqueue(&self, channel: &ChannelName, events: &[Event]) -> PortResult<()> {
        for chunk in events.chunks(EVENTS_PER_MESSAGE) {
            self.send(channel, chunk).await?;
        }
        Ok(())
    }

    /// One broadcast message of stored events, named by their epoch and seqs.
    async fn send(&self, channel: &ChannelName, stored: &[Event]) -> PortResult<()> {
        let (Some(first), Some(last)) = (stored.first(), stored.last()) else {
            return Ok(());
        };
        let message = BroadcastMessage {
            channel: channel.clone(),
            events: stored.to_vec(),
        };
        self.broadcast
            .send(OutMessage {
                group: channel.to_string(),
                dedup_id: format!("{channel}:{}:{}-{}", first.epoch, first.seq, last.seq),
                body: serde_json::to_string(&message).map_err(anyhow::Error::from)?,
            })
            .await
    }
}
