use super::lock;
use async_trait::async_trait;
use bandsync::model::{ChannelHead, ChannelName, Event, NewEvent};
use bandsync::ports::{ChannelLog, PortError, PortResult};
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};

/// A [`ChannelLog`] that passes everything to another, except the appends it was told to
/// fail (a store outage at that moment): `fail_append(n)` fails the nth append attempt;
/// and the events it was told to lose (`lose(seq)`: a hole in the log, as a store that
/// lost part of it would read).
pub struct FlakyLog {
    inner: Arc<dyn ChannelLog>,
    state: Mutex<(usize, Vec<usize>)>,
    lost: Mutex<Vec<u64>>,
}

impl FlakyLog {
    pub fn new(inner: Arc<dyn ChannelLog>) -> Self {
        Self {
            inner,
            state: Mutex::new((0, Vec::new())),
            lost: Mutex::new(Vec::new()),
        }
    }

    /// Fail the `n`th append attempt (1-based, over the log's whole life).
    pub fn fail_append(&self, n: usize) {
        lock(&self.state).1.push(n);
    }

    /// Reads skip the event of `seq` from now on.
    pub fn lose(&self, seq: u64) {
        lock(&self.lost).push(seq);
    }
}

#[async_trait]
impl ChannelLog for FlakyLog {
    async fn append(&self, channel: &ChannelName, events: &[NewEvent]) -> PortResult<Vec<Event>> {
        {
            let mut s = lock(&self.state);
            s.0 += 1;
            if s.1.contains(&s.0) {
                return Err(PortError::Backend(anyhow::anyhow!(
                    "FlakyLog: append #{} fails (as the test asked)",
                    s.0
                )));
            }
        }
        self.inner.append(channel, events).await
    }

    async fn read_after(
        &self,
        channel: &ChannelName,
        after_seq: u64,
        limit: usize,
    ) -> PortResult<Vec<Event>> {
        let mut events = self.inner.read_after(channel, after_seq, limit).await?;
        let lost = lock(&self.lost).clone();
        events.retain(|e| !lost.contains(&e.seq));
        Ok(events)
    }

    async fn head(&self, channel: &ChannelName) -> PortResult<Option<ChannelHead>> {
        self.inner.head(channel).await
    }

    async fn prune(&self, channel: &ChannelName, before: DateTime<Utc>) -> PortResult<u64> {
        self.inner.prune(channel, before).await
    }

    async fn delivered(&self, channel: &ChannelName) -> PortResult<u64> {
        self.inner.delivered(channel).await
    }

    async fn mark_delivered(&self, channel: &ChannelName, seq: u64) -> PortResult<()> {
        self.inner.mark_delivered(channel, seq).await
    }
}
