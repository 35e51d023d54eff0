use super::lock;
use async_trait::async_trait;
use bandsync::ports::{OutMessage, PortError, PortResult, Queue};
use std::sync::Mutex;

/// A queue that records what it accepted, in order. `fail_send(n)` makes the nth send
/// attempt (counted from 1 over the queue's life) fail with a backend error; the failed
/// message is not recorded.
#[derive(Debug, Default)]
pub struct RecordingQueue {
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    attempts: usize,
    fail_on: Vec<usize>,
    accepted: Vec<OutMessage>,
}

impl RecordingQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fail the `n`th send attempt (1-based, over the queue's whole life).
    pub fn fail_send(&self, n: usize) {
        lock(&self.state).fail_on.push(n);
    }

    /// Fail the next send attempt.
    pub fn fail_next_send(&self) {
        let mut s = lock(&self.state);
        let next = s.attempts + 1;
        s.fail_on.push(next);
    }

    /// Send attempts so far, failed ones included.
    pub fn attempts(&self) -> usize {
        lock(&self.state).attempts
    }

    /// Every accepted message, in send order.
    pub fn messages(&self) -> Vec<OutMessage> {
        lock(&self.state).accepted.clone()
    }

    /// The accepted messages an SQS FIFO queue would pass on: a repeat of a dedup id
    /// (within the 5-minute window, which a unit test never leaves) is dropped.
    pub fn deduplicated(&self) -> Vec<OutMessage> {
        let mut seen = std::collections::HashSet::new();
        self.messages()
            .into_iter()
            .filter(|m| seen.insert(m.dedup_id.clone()))
            .collect()
    }

    /// The accepted bodies decoded as `T`, in send order.
    pub fn bodies<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        self.messages()
            .iter()
            .map(|m| serde_json::from_str(&m.body).expect("a queued body decodes"))
            .collect()
    }
}

#[async_trait]
impl Queue for RecordingQueue {
    async fn send(&self, message: OutMessage) -> PortResult<()> {
        let mut s = lock(&self.state);
        s.attempts += 1;
        let n = s.attempts;
        if s.fail_on.contains(&n) {
            return Err(PortError::Backend(anyhow::anyhow!(
                "RecordingQueue: send #{n} fails (as the test asked)"
            )));
        }
        s.accepted.push(message);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(n: usize) -> OutMessage {
        OutMessage {
            group: "g".into(),
            dedup_id: format!("d{n}"),
            body: format!("{n}"),
        }
    }

    #[tokio::test]
    async fn recording_queue_fails_only_the_nth_send() {
        let q = RecordingQueue::new();
        q.fail_send(2);
        assert!(q.send(out(1)).await.is_ok());
        assert!(q.send(out(2)).await.is_err());
        assert!(q.send(out(3)).await.is_ok());
        let ids: Vec<_> = q.messages().into_iter().map(|m| m.dedup_id).collect();
        assert_eq!(ids, ["d1", "d3"]);
        assert_eq!(q.attempts(), 3);
    }
}
