//! Publishing: append events to a channel's log (which gives them their seq), then queue
//! them for broadcast on the channel's FIFO group. Both steps are idempotent, so a job
//! that is delivered again publishes nothing twice.

use crate::broadcast::BroadcastMessage;
use crate::model::{ChannelName, Event, NewEvent};
use crate::ports::{ChannelLog, OutMessage, PortResult, Queue};
use std::sync::Arc;

/// Events per broadcast message: keeps a message far under SQS's 256 KB.
pub const EVENTS_PER_MESSAGE: usize = 50;

#[derive(Clone)]
pub struct Publisher {
    log: Arc<dyn ChannelLog>,
    broadcast: Arc<dyn Queue>,
}

impl Publisher {
    pub fn new(log: Arc<dyn ChannelLog>, broadcast: Arc<dyn Queue>) -> Self {
        Self { log, broadcast }
    }

    #[tracing::instrument(skip(self, events), fields(channel = %channel, count = events.len()))]
    pub async fn publish(
        &self,
        channel: &ChannelName,
        events: &[NewEvent],
    ) -> PortResult<Vec<Event>> {
        let mut published = Vec::with_capacity(events.len());
        for chunk in events.chunks(EVENTS_PER_MESSAGE) {
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
