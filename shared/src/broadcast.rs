//! The broadcast job: deliver a channel's events to every connection subscribed to it.
//!
//! One Query for the subscribers, frames serialised once, posts with bounded concurrency
//! (each connection gets the events in seq order), a Gone connection forgotten, a
//! throttled or failing post retried with backoff. A post that still fails is counted
//! and left: the event is in the channel log, and the client's next seq shows it a gap
//! it closes with `resume`.

use crate::metrics::{self, Unit};
use crate::model::{ChannelName, ConnectionId, Event};
use crate::ports::{Clock, ConnectionStore, PortResult, PushOutcome, Pusher};
use crate::protocol::ServerFrame;
use crate::sqs::{parse_body, run_fifo_batch};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// What the broadcast queue carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BroadcastMessage {
    pub channel: ChannelName,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub connections: u64,
    pub delivered: u64,
    pub gone: u64,
    pub failed: u64,
}

#[derive(Clone)]
pub struct Broadcaster {
    connections: Arc<dyn ConnectionStore>,
    pusher: Arc<dyn Pusher>,
    clock: Arc<dyn Clock>,
    /// Connections posted to at once.
    pub concurrency: usize,
    /// Tries per post before it counts as failed.
    pub attempts: u32,
    pub backoff: Duration,
}

enum ConnectionResult {
    Delivered(u64),
    Gone,
    Failed,
}

impl Broadcaster {
    pub fn new(
        connections: Arc<dyn ConnectionStore>,
        pusher: Arc<dyn Pusher>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            connections,
            pusher,
            clock,
            concurrency: 32,
            attempts: 3,
            backoff: Duration::from_millis(50),
        }
    }

    /// The SQS entry point (FIFO: stop at the first failure).
    pub async fn handle_sqs(&self, event: SqsEvent) -> SqsBatchResponse {
        run_fifo_batch(event, |m| async move {
            let message: BroadcastMessage = parse_body(&m)?;
            self.deliver(&message).await.map_err(anyhow::Error::from)?;
            Ok::<(), anyhow::Error>(())
        })
        .await
    }

    #[tracing::instrument(skip(self, message), fields(channel = %message.channel, events = message.events.len()))]
    pub async fn deliver(&self, message: &BroadcastMessage) -> PortResult<DeliveryReport> {
        let subscribers = self.connections.subscribers(&message.channel).await?;
        let frames: Vec<Vec<u8>> = message
            .events
            .iter()
            .map(|e| ServerFrame::Event(e.clone()).to_bytes())
            .collect();
        let results: Vec<(ConnectionId, ConnectionResult)> =
            futures_util::stream::iter(subscribers)
                .map(|conn| {
                    let frames = &frames;
                    async move {
                        let result = self.post_all(&conn, frames).await;
                        (conn, result)
                    }
                })
                .buffer_unordered(self.concurrency.max(1))
                .collect()
                .await;

        let mut report = DeliveryReport::default();
        for (conn, result) in results {
            report.connections += 1;
            match result {
                ConnectionResult::Delivered(n) => report.delivered += n,
                ConnectionResult::Gone => {
                    report.gone += 1;
                    tracing::info!(connection = %conn, "connection gone; removing it and its subscriptions");
                    self.connections.delete_connection(&conn).await?;
                }
                ConnectionResult::Failed => report.failed += 1,
            }
        }
        let latency_ms = message
            .events
            .first()
            .map(|e| (self.clock.now() - e.ts).num_milliseconds().max(0) as f64)
            .unwrap_or_default();
        metrics::emit(
            &[("Function", "broadcast")],
            &[
                ("EventsOut", report.delivered as f64, Unit::Count),
                ("GoneConnections", report.gone as f64, Unit::Count),
                ("FailedPosts", report.failed as f64, Unit::Count),
                ("DeliveryLatency", latency_ms, Unit::Milliseconds),
            ],
        );
        Ok(report)
    }

    /// Post every frame to one connection, in order.
    async fn post_all(&self, conn: &ConnectionId, frames: &[Vec<u8>]) -> ConnectionResult {
        let mut delivered = 0;
        for frame in frames {
            match self.post_with_retry(conn, frame).await {
                Some(PushOutcome::Delivered) => delivered += 1,
                Some(PushOutcome::Gone) => return ConnectionResult::Gone,
                None => return ConnectionResult::Failed,
            }
        }
        ConnectionResult::Delivered(delivered)
    }

    async fn post_with_retry(&self, conn: &ConnectionId, frame: &[u8]) -> Option<PushOutcome> {
        let mut delay = self.backoff;
        for attempt in 1..=self.attempts.max(1) {
            match self.pusher.post(conn, frame).await {
                Ok(outcome) => return Some(outcome),
                Err(e) => {
                    tracing::warn!(connection = %conn, attempt, error = %e, "post failed");
                    if attempt < self.attempts {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
        None
    }
}
