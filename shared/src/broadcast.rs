//! The broadcast job: deliver a channel's events to every connection subscribed to it.
//!
//! One Query for the subscribers, frames serialised once, posts with bounded concurrency
//! (each connection gets the events in seq order), a Gone connection forgotten, a
//! throttled or failing post retried with the crate's [`Backoff`] (full jitter). A post that still fails is counted
//! and left: the event is in the channel log, and the client's next seq shows it a gap
//! it closes with `resume`.
//!
//! Selective sync: each subscriber comes with its device's categories (on the same
//! Query); an event they do not cover is not posted, and each run of such events is one
//! `skipped` frame, so the connection still tells a filtered seq from a lost one.

use crate::backoff::{Backoff, Sleeper, TokioSleeper};
use crate::entities::categories;
use crate::model::{ChannelName, ConnectionId, Event};
use crate::ports::{ChannelLog, Clock, ConnectionStore, PortResult, PushOutcome, Pusher};
use crate::transport::metrics::{self, Unit};
use crate::transport::sqs::{Budget, run_fifo_batch};
use crate::wire::frames::ServerFrame;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
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
    /// Events left out for a connection's device categories (summed over connections;
    /// each run of them is one `skipped` frame).
    pub skipped: u64,
}

/// Events read per page when a gap before a message is filled from the log.
const GAP_PAGE: usize = 100;

/// Events one delivery may take beyond its message's (see [`Broadcaster::coalesce`]):
/// two broadcast messages' worth of a sync, far under a Lambda's time.
pub const DEFAULT_COALESCE: usize = 100;

/// The largest wait between two tries of a post. With the default 3 attempts the windows
/// are 50 and 100 ms, well under it; it bounds a larger `attempts`.
const POST_BACKOFF_CAP: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Broadcaster {
    connections: Arc<dyn ConnectionStore>,
    log: Arc<dyn ChannelLog>,
    pusher: Arc<dyn Pusher>,
    clock: Arc<dyn Clock>,
    /// Connections posted to at once.
    pub concurrency: usize,
    /// Tries per post before it counts as failed.
    pub attempts: u32,
    /// The first backoff window between tries of a post; it doubles with each retry.
    pub backoff: Duration,
    /// Events appended after a message's own that one delivery may take with it (read
    /// from the log, gapless after the message's last): under a burst of pushes, each
    /// queuing its own message, one delivery carries what the messages queued behind it
    /// hold, and they find it delivered. 0 delivers each message's events only.
    pub coalesce: usize,
    /// Where the waits between tries are taken.
    sleeper: Arc<dyn Sleeper>,
    /// Uncounts a gone connection for presence before forgetting it.
    presence: Option<Arc<dyn crate::ports::PresenceStore>>,
}

/// What one connection is posted for a batch: the event frames its categories want and,
/// for each run of events they do not, one `skipped` frame in its place, so the seqs it
/// is shown stay gapless.
struct Plan<'a> {
    frames: Vec<Piece<'a>>,
    skipped: u64,
}

enum Piece<'a> {
    Event(&'a Vec<u8>),
    Skipped(Vec<u8>),
}

fn plan<'a>(
    channel: &ChannelName,
    categories: &[String],
    events: &[Event],
    frames: &'a [Vec<u8>],
) -> Plan<'a> {
    let mut skipped = 0;
    let frames = categories::slots(categories, events)
        .into_iter()
        .map(|slot| match slot {
            categories::Slot::Event(i) => Piece::Event(&frames[i]),
            categories::Slot::Skipped {
                from_seq,
                to_seq,
                count,
            } => {
                skipped += count;
                Piece::Skipped(
                    ServerFrame::Skipped {
                        channel: channel.clone(),
                        from_seq,
                        to_seq,
                    }
                    .to_bytes(),
                )
            }
        })
        .collect();
    Plan { frames, skipped }
}

enum ConnectionResult {
    Delivered(u64),
    Gone,
    Failed,
}

impl Broadcaster {
    pub fn new(
        connections: Arc<dyn ConnectionStore>,
        log: Arc<dyn ChannelLog>,
        pusher: Arc<dyn Pusher>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            connections,
            log,
            pusher,
            clock,
            concurrency: 32,
            attempts: 3,
            backoff: Duration::from_millis(50),
            coalesce: DEFAULT_COALESCE,
            sleeper: Arc::new(TokioSleeper),
            presence: None,
        }
    }

    /// Uncount gone connections for presence (their $disconnect may never come).
    pub fn with_presence(mut self, presence: Arc<dyn crate::ports::PresenceStore>) -> Self {
        self.presence = Some(presence);
        self
    }

    /// The same broadcaster, waiting between tries through `sleeper` (tests record the
    /// waits instead of taking them).
    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// The retry policy of one post.
    fn post_backoff(&self) -> Backoff {
        Backoff::new(self.backoff, POST_BACKOFF_CAP).with_max_attempts(self.attempts)
    }

    /// The SQS entry point (FIFO: stop at the first failure). With a `deadline` (the
    /// invocation's), no message is started later than 5 s before it.
    pub async fn handle_sqs(
        &self,
        event: SqsEvent,
        deadline: Option<std::time::SystemTime>,
    ) -> SqsBatchResponse {
        let budget = Budget::until(deadline, Duration::from_secs(5));
        run_fifo_batch(event, budget, |message: BroadcastMessage| async move {
            self.deliver(&message).await.map(|_| ())
        })
        .await
    }

    /// The events of `message` not yet pushed, in seq order, with any gap before them
    /// filled from the log. Publishers append and send in two steps, so messages can
    /// reach the queue out of seq order (two sources of one band); the watermark makes
    /// the pushes come out in seq order anyway. One broadcaster runs per channel at a
    /// time (the FIFO group is the channel), so reading and then moving it is safe.
    async fn pending(&self, message: &BroadcastMessage) -> PortResult<Vec<Event>> {
        let mut events = self.own_pending(message).await?;
        let Some(mut cursor) = events.last().map(|e| e.seq) else {
            return Ok(events);
        };
        let mut room = self.coalesce;
        while room > 0 {
            let page = self
                .log
                .read_after(&message.channel, cursor, room.min(GAP_PAGE))
                .await?;
            let Some(newest) = page.last().map(|e| e.seq) else {
                break;
            };
            room = room.saturating_sub(page.len());
            events.extend(page);
            cursor = newest;
        }
        Ok(events)
    }

    /// The message's own events not yet pushed, with any gap before them filled.
    async fn own_pending(&self, message: &BroadcastMessage) -> PortResult<Vec<Event>> {
        let Some(last) = message.events.last().map(|e| e.seq) else {
            return Ok(Vec::new());
        };
        let delivered = self.log.delivered(&message.channel).await?;
        if last <= delivered {
            return Ok(Vec::new());
        }
        let first = message.events.first().map_or(last, |e| e.seq);
        if first <= delivered + 1 {
            return Ok(message
                .events
                .iter()
                .filter(|e| e.seq > delivered)
                .cloned()
                .collect());
        }
        let mut events = Vec::new();
        let mut cursor = delivered;
        while cursor < last {
            let page = self
                .log
                .read_after(&message.channel, cursor, GAP_PAGE)
                .await?;
            let Some(newest) = page.last().map(|e| e.seq) else {
                break;
            };
            events.extend(page.into_iter().filter(|e| e.seq <= last));
            cursor = newest;
        }
        Ok(events)
    }

    #[tracing::instrument(skip(self, message), fields(channel = %message.channel, events = message.events.len()))]
    pub async fn deliver(&self, message: &BroadcastMessage) -> PortResult<DeliveryReport> {
        let events = self.pending(message).await?;
        let Some(last) = events.last().map(|e| e.seq) else {
            tracing::debug!("already delivered");
            return Ok(DeliveryReport::default());
        };
        let subscribers = self
            .connections
            .subscribers_filtered(&message.channel)
            .await?;
        let frames: Vec<Vec<u8>> = events
            .iter()
            .map(|e| ServerFrame::Event(e.clone()).to_bytes())
            .collect();
        // One plan per distinct set of categories (most connections share one), made
        // with the frames serialised once above.
        let mut plans: Vec<Plan> = Vec::new();
        let mut plan_of: HashMap<&[String], usize> = HashMap::new();
        let mut jobs: Vec<(ConnectionId, usize)> = Vec::with_capacity(subscribers.len());
        for sub in &subscribers {
            let i = *plan_of.entry(sub.categories.as_slice()).or_insert_with(|| {
                plans.push(plan(&message.channel, &sub.categories, &events, &frames));
                plans.len() - 1
            });
            jobs.push((sub.connection.clone(), i));
        }
        let results: Vec<(ConnectionId, ConnectionResult, u64)> = futures_util::stream::iter(jobs)
            .map(|(conn, i)| {
                let plan = &plans[i];
                async move {
                    let result = self.post_all(&conn, &plan.frames).await;
                    (conn, result, plan.skipped)
                }
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;

        let mut report = DeliveryReport::default();
        for (conn, result, skipped) in results {
            report.connections += 1;
            report.skipped += skipped;
            match result {
                ConnectionResult::Delivered(n) => report.delivered += n,
                ConnectionResult::Gone => {
                    report.gone += 1;
                    tracing::info!(connection = %conn, "connection gone; removing it and its subscriptions");
                    // Every post of this message is done: a failed cleanup must not send
                    // them all again. The next push finds the connection gone again.
                    if let Err(e) = self.uncount(&conn).await {
                        tracing::warn!(connection = %conn, error = %e, "could not uncount a gone connection");
                    }
                    if let Err(e) = self.connections.delete_connection(&conn).await {
                        tracing::warn!(connection = %conn, error = %e, "could not remove a gone connection");
                    }
                }
                ConnectionResult::Failed => report.failed += 1,
            }
        }
        self.log.mark_delivered(&message.channel, last).await?;
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

    /// Uncount a gone connection for presence, while its record still says whose it was.
    async fn uncount(&self, conn: &ConnectionId) -> PortResult<()> {
        let Some(presence) = &self.presence else {
            return Ok(());
        };
        match self.connections.get_connection(conn).await? {
            Some(c) => crate::presence::uncount(presence.as_ref(), &c, self.clock.now()).await,
            None => Ok(()),
        }
    }

    /// Post every frame to one connection, in order; counts the event frames.
    async fn post_all(&self, conn: &ConnectionId, frames: &[Piece<'_>]) -> ConnectionResult {
        let mut delivered = 0;
        for piece in frames {
            let frame = match piece {
                Piece::Event(f) => f.as_slice(),
                Piece::Skipped(f) => f.as_slice(),
            };
            match self.post_with_retry(conn, frame).await {
                Some(PushOutcome::Delivered) => {
                    if matches!(piece, Piece::Event(_)) {
                        delivered += 1;
                    }
                }
                Some(PushOutcome::Gone) => return ConnectionResult::Gone,
                None => return ConnectionResult::Failed,
            }
        }
        ConnectionResult::Delivered(delivered)
    }

    async fn post_with_retry(&self, conn: &ConnectionId, frame: &[u8]) -> Option<PushOutcome> {
        let backoff = self.post_backoff();
        let mut attempt = 1;
        loop {
            match self.pusher.post(conn, frame).await {
                Ok(outcome) => return Some(outcome),
                Err(e) => {
                    tracing::warn!(connection = %conn, attempt, error = %e, "post failed");
                    if !backoff.may_retry(attempt) {
                        return None;
                    }
                    self.sleeper.sleep(backoff.jittered(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }
}
