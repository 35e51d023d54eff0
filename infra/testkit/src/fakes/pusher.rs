use super::lock;
use async_trait::async_trait;
use bandsync::model::ConnectionId;
use bandsync::ports::{PortError, PortResult, PushOutcome, Pusher};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;

/// What a [`RecordingPusher`] does with posts to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PushBehaviour {
    /// Every post is delivered.
    #[default]
    Deliver,
    /// Every post answers Gone (API Gateway's 410).
    Gone,
    /// The first K posts fail with an error, later ones are delivered
    /// (`u32::MAX`: always fail).
    ErrFirst(u32),
}

/// A pusher that records every delivered frame per connection.
#[derive(Debug, Default)]
pub struct RecordingPusher {
    state: Mutex<PusherState>,
}

#[derive(Debug, Default)]
struct PusherState {
    behaviour: HashMap<ConnectionId, PushBehaviour>,
    attempts: HashMap<ConnectionId, u32>,
    delivered: Vec<(ConnectionId, Vec<u8>)>,
}

impl RecordingPusher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&self, connection: &ConnectionId, behaviour: PushBehaviour) {
        lock(&self.state)
            .behaviour
            .insert(connection.clone(), behaviour);
    }

    /// Post attempts to a connection, failed ones included.
    pub fn attempts(&self, connection: &ConnectionId) -> u32 {
        lock(&self.state)
            .attempts
            .get(connection)
            .copied()
            .unwrap_or(0)
    }

    /// Every delivered (connection, bytes), in post order.
    pub fn delivered(&self) -> Vec<(ConnectionId, Vec<u8>)> {
        lock(&self.state).delivered.clone()
    }

    /// The frames delivered to one connection, parsed as JSON, in post order.
    pub fn frames(&self, connection: &ConnectionId) -> Vec<Value> {
        self.delivered()
            .into_iter()
            .filter(|(c, _)| c == connection)
            .map(|(_, bytes)| serde_json::from_slice(&bytes).expect("a frame is JSON"))
            .collect()
    }

    /// The one frame delivered to a connection (panics unless exactly one was).
    pub fn only_frame(&self, connection: &ConnectionId) -> Value {
        let mut frames = self.frames(connection);
        assert_eq!(
            frames.len(),
            1,
            "expected exactly one frame to {connection}, got {frames:?}"
        );
        frames.remove(0)
    }
}

#[async_trait]
impl Pusher for RecordingPusher {
    async fn post(&self, connection: &ConnectionId, data: &[u8]) -> PortResult<PushOutcome> {
        let mut s = lock(&self.state);
        let attempt = {
            let a = s.attempts.entry(connection.clone()).or_default();
            *a += 1;
            *a
        };
        match s.behaviour.get(connection).copied().unwrap_or_default() {
            PushBehaviour::Gone => Ok(PushOutcome::Gone),
            PushBehaviour::ErrFirst(k) if attempt <= k => Err(PortError::Backend(anyhow::anyhow!(
                "RecordingPusher: attempt {attempt} to {connection} fails"
            ))),
            PushBehaviour::Deliver | PushBehaviour::ErrFirst(_) => {
                s.delivered.push((connection.clone(), data.to_vec()));
                Ok(PushOutcome::Delivered)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recording_pusher_follows_each_connections_script() {
        let p = RecordingPusher::new();
        let (ok, gone, flaky) = (
            ConnectionId::parse("ok").unwrap(),
            ConnectionId::parse("gone").unwrap(),
            ConnectionId::parse("flaky").unwrap(),
        );
        p.set(&gone, PushBehaviour::Gone);
        p.set(&flaky, PushBehaviour::ErrFirst(1));
        assert_eq!(p.post(&ok, b"{}").await.unwrap(), PushOutcome::Delivered);
        assert_eq!(p.post(&gone, b"{}").await.unwrap(), PushOutcome::Gone);
        assert!(p.post(&flaky, b"{}").await.is_err());
        assert_eq!(p.post(&flaky, b"{}").await.unwrap(), PushOutcome::Delivered);
        assert_eq!(p.frames(&ok).len(), 1);
        assert!(p.frames(&gone).is_empty());
        assert_eq!(p.attempts(&flaky), 2);
    }
}
