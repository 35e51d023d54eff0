//! $default route: the client protocol. Replies go back through the [`Pusher`] (as they
//! would through API Gateway's @connections), so every answer, error included, reaches
//! the client as a frame.

use crate::error::{ErrorCode, Refusal};
use crate::model::{ChannelName, Connection, ConnectionId, Trigger};
use crate::ports::{ChannelLog, Clock, ConnectionStore, Pusher, Queue, SourceStore};
use crate::protocol::{ClientRequest, ServerFrame, parse_frame};
use crate::resume::{self, ResumePlan};
use crate::transport::http::{json_v1, refused_v1};
use crate::wire::frames::{QueuedSync, SyncQueued, SyncRequestBody};
use crate::ws_connect::connection_id;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use serde_json::{Value, json};
use std::sync::Arc;

/// Events replayed per log read during a resume.
const REPLAY_PAGE: usize = 100;
/// Events replayed per `resume` request; the client asks again while `more` is true.
pub const MAX_REPLAY: u64 = 500;

/// May this connection read that channel? Band channels are for members, a user channel
/// for its user, `system` for everyone.
pub fn may_read(conn: &Connection, channel: &ChannelName) -> bool {
    match channel {
        ChannelName::Band(b) => conn.bands.contains(b),
        ChannelName::User(u) => *u == conn.user,
        ChannelName::System => true,
    }
}

pub struct WsMessage {
    connections: Arc<dyn ConnectionStore>,
    log: Arc<dyn ChannelLog>,
    sources: Arc<dyn SourceStore>,
    sync_queue: Arc<dyn Queue>,
    pusher: Arc<dyn Pusher>,
    clock: Arc<dyn Clock>,
    /// Events replayed per `resume` (default [`MAX_REPLAY`]).
    pub max_replay: u64,
}

/// A refused frame: what the `error` frame says.
struct Refused {
    refusal: Refusal,
    /// Context for the client (the channel's head, for `history_lost`).
    data: Option<Value>,
}

impl<E: Into<Refusal>> From<E> for Refused {
    fn from(e: E) -> Self {
        Self {
            refusal: e.into(),
            data: None,
        }
    }
}

impl WsMessage {
    pub fn new(
        connections: Arc<dyn ConnectionStore>,
        log: Arc<dyn ChannelLog>,
        sources: Arc<dyn SourceStore>,
        sync_queue: Arc<dyn Queue>,
        pusher: Arc<dyn Pusher>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            connections,
            log,
            sources,
            sync_queue,
            pusher,
            clock,
            max_replay: MAX_REPLAY,
        }
    }

    #[tracing::instrument(skip_all, fields(connection = ?req.request_context.connection_id))]
    pub async fn handle(&self, req: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        let id = match connection_id(&req) {
            Ok(id) => id,
            Err(e) => return refused_v1(e),
        };
        let (reference, reply) =
            match crate::transport::http::body_text(req.body.as_deref(), req.is_base64_encoded) {
                Err(e) => (None, Err(e.into())),
                Ok(body) => {
                    let (reference, parsed) = parse_frame(&body);
                    let reply = match parsed {
                        Err(e) => Err(e.into()),
                        Ok(request) => self.serve(&id, request, reference.clone()).await,
                    };
                    (reference, reply)
                }
            };
        match reply {
            Ok(Some(frame)) => self.send(&id, &frame).await,
            Ok(None) => {}
            Err(Refused { refusal, data }) => {
                // The WebSocket edge: the cause of a backend failure is logged here.
                refusal.log();
                let frame = ServerFrame::Error {
                    code: refusal.code.as_str().to_owned(),
                    message: refusal.message,
                    reference,
                    data,
                };
                self.send(&id, &frame).await;
            }
        }
        json_v1(200, &json!({}))
    }

    async fn send(&self, id: &ConnectionId, frame: &ServerFrame) {
        if let Err(e) = self.pusher.post(id, &frame.to_bytes()).await {
            tracing::warn!(connection = %id, error = %e, "reply could not be posted");
        }
    }

    async fn member(&self, id: &ConnectionId) -> Result<Connection, Refused> {
        let conn = self.connections.get_connection(id).await?;
        Ok(conn.ok_or_else(|| {
            Refusal::new(
                ErrorCode::UnknownConnection,
                "this connection is not registered; reconnect",
            )
        })?)
    }

    async fn readable(
        &self,
        id: &ConnectionId,
        channel: &ChannelName,
    ) -> Result<Connection, Refused> {
        let conn = self.member(id).await?;
        if !may_read(&conn, channel) {
            return Err(
                Refusal::new(ErrorCode::Forbidden, format!("you may not read {channel}")).into(),
            );
        }
        Ok(conn)
    }

    async fn serve(
        &self,
        id: &ConnectionId,
        request: ClientRequest,
        reference: Option<Value>,
    ) -> Result<Option<ServerFrame>, Refused> {
        match request {
            ClientRequest::Ping {} => Ok(Some(ServerFrame::Pong {
                ts: self.clock.now(),
                reference,
            })),
            ClientRequest::Subscribe { channel } => {
                self.readable(id, &channel).await?;
                self.connections
                    .subscribe(id, &channel, self.clock.now())
                    .await?;
                let head = self.log.head(&channel).await?;
                Ok(Some(ServerFrame::Subscribed {
                    seq: head.as_ref().map_or(0, |h| h.seq),
                    epoch: head.map(|h| h.epoch),
                    channel,
                    reference,
                }))
            }
            ClientRequest::Unsubscribe { channel } => {
                self.member(id).await?;
                self.connections.unsubscribe(id, &channel).await?;
                Ok(Some(ServerFrame::Unsubscribed { channel, reference }))
            }
            ClientRequest::Resume {
                channel,
                after_seq,
                epoch,
            } => {
                self.readable(id, &channel).await?;
                // Subscribe first, so nothing published while we replay is missed; the
                // client drops the seqs it gets twice.
                self.connections
                    .subscribe(id, &channel, self.clock.now())
                    .await?;
                self.resume(id, channel, after_seq, epoch, reference).await
            }
            ClientRequest::SyncRequest(SyncRequestBody { band, source, full }) => {
                let conn = self.member(id).await?;
                if !conn.bands.contains(&band) {
                    return Err(Refusal::new(
                        ErrorCode::Forbidden,
                        format!("you are not a member of band {band}"),
                    )
                    .into());
                }
                let jobs = crate::sync::request_sync(
                    self.sources.as_ref(),
                    self.sync_queue.as_ref(),
                    crate::sync::SyncRequest {
                        band: &band,
                        source: source.as_ref(),
                        full,
                        trigger: Trigger::Client,
                        requested_by: &conn.user,
                    },
                    self.clock.now(),
                )
                .await?;
                let queued = jobs
                    .into_iter()
                    .map(|j| QueuedSync {
                        job: j.id,
                        source: j.source,
                    })
                    .collect();
                Ok(Some(ServerFrame::Ack {
                    reference,
                    data: Some(SyncQueued { queued }),
                }))
            }
        }
    }

    async fn resume(
        &self,
        id: &ConnectionId,
        channel: ChannelName,
        after_seq: u64,
        epoch: Option<String>,
        reference: Option<Value>,
    ) -> Result<Option<ServerFrame>, Refused> {
        let head = self.log.head(&channel).await?;
        match resume::plan(head.as_ref(), after_seq, epoch.as_deref()) {
            ResumePlan::HistoryLost { reason } => Err(Refused {
                refusal: Refusal::new(
                    ErrorCode::HistoryLost,
                    format!("{reason}; refetch the state of {channel}"),
                ),
                data: Some(json!({
                    "channel": channel,
                    "seq": head.as_ref().map_or(0, |h| h.seq),
                    "epoch": head.as_ref().map(|h| h.epoch.clone()),
                })),
            }),
            ResumePlan::UpToDate => Ok(Some(ServerFrame::Resumed {
                seq: head.as_ref().map_or(0, |h| h.seq),
                epoch: head.map(|h| h.epoch),
                channel,
                replayed: 0,
                more: false,
                reference,
            })),
            ResumePlan::Replay { after } => {
                let head_seq = head.as_ref().map_or(0, |h| h.seq);
                let mut cursor = after;
                let mut replayed = 0;
                while replayed < self.max_replay {
                    let want = REPLAY_PAGE
                        .min(usize::try_from(self.max_replay - replayed).unwrap_or(REPLAY_PAGE));
                    let page = self.log.read_after(&channel, cursor, want).await?;
                    for event in &page {
                        cursor = event.seq;
                        replayed += 1;
                        self.send(id, &ServerFrame::Event(event.clone())).await;
                    }
                    if page.len() < want {
                        break;
                    }
                }
                Ok(Some(ServerFrame::Resumed {
                    channel,
                    seq: cursor,
                    epoch: head.map(|h| h.epoch),
                    replayed,
                    more: cursor < head_seq,
                    reference,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BandId, UserId};
    use crate::testing::*;

    #[test]
    fn acl() {
        let conn = Connection {
            id: ConnectionId::parse("c1").unwrap(),
            user: UserId::parse("alice").unwrap(),
            bands: vec![BandId::parse("demo").unwrap()],
            connected_at: chrono::Utc::now(),
            expires_at: chrono::Utc::now(),
        };
        let ok = |s: &str| may_read(&conn, &ChannelName::parse(s).unwrap());
        assert!(ok("band:demo"));
        assert!(!ok("band:other"));
        assert!(ok("user:alice"));
        assert!(!ok("user:bob"));
        assert!(ok("system"));
    }

    const ALICE: &str = "L0SM9cOFvHcCIhw=";

    /// Alice connected, a member of band `demo` only.
    async fn alice() -> Harness {
        let h = Harness::new();
        h.add_connection(ALICE, "alice", &["demo"]).await;
        h
    }

    /// A frame from `connection`; returns the frames the pusher got back for it.
    async fn send(h: &Harness, connection: &str, frame: Value) -> Vec<Value> {
        let before = h.pusher.frames(&conn_id(connection)).len();
        let response = h
            .ws_message()
            .handle(ws_message_event(connection, &frame.to_string()))
            .await;
        assert_eq!(response.status(), 200, "the route always answers 200");
        h.pusher.frames(&conn_id(connection)).split_off(before)
    }

    /// A frame that must be answered with one frame only.
    async fn ask(h: &Harness, frame: Value) -> Value {
        let mut replies = send(h, ALICE, frame).await;
        assert_eq!(replies.len(), 1, "{replies:?}");
        replies.remove(0)
    }

    async fn subscribed(h: &Harness) -> Vec<ChannelName> {
        h.store.subscriptions(&conn_id(ALICE)).await.unwrap()
    }

    #[tokio::test]
    async fn subscribe_answers_subscribed_with_the_channel_head() {
        // GIVEN band:demo has two events
        let h = alice().await;
        let events = h.append(&channel("band:demo"), &["a", "b"]).await;

        // WHEN alice subscribes
        let reply = ask(
            &h,
            json!({"action": "subscribe", "channel": "band:demo", "ref": "r1"}),
        )
        .await;

        // THEN she is subscribed and told the head's seq and epoch, with her ref
        assert_eq!(
            reply,
            json!({"type": "subscribed", "channel": "band:demo", "seq": 2,
                   "epoch": events[0].epoch, "ref": "r1"})
        );
        assert_eq!(subscribed(&h).await, [channel("band:demo")]);
    }

    #[tokio::test]
    async fn another_bands_channel_is_forbidden_and_the_ref_is_echoed() {
        // GIVEN alice is not in band rock
        let h = alice().await;

        // WHEN she subscribes to it, or resumes it
        for action in [
            json!({"action": "subscribe", "channel": "band:rock", "ref": 7}),
            json!({"action": "resume", "channel": "band:rock", "after_seq": 0, "ref": 7}),
        ] {
            let reply = ask(&h, action).await;

            // THEN she gets a forbidden error carrying her ref, and no subscription
            assert_eq!(reply["type"], "error");
            assert_eq!(reply["code"], "forbidden");
            assert_eq!(reply["ref"], 7);
        }
        assert!(subscribed(&h).await.is_empty());
    }

    #[tokio::test]
    async fn resume_replays_what_was_missed_then_answers_resumed() {
        // GIVEN band:demo has five events and alice saw the first two
        let h = alice().await;
        let events = h
            .append(&channel("band:demo"), &["a", "b", "c", "d", "e"])
            .await;
        let epoch = events[0].epoch.clone();

        // WHEN she resumes after seq 2 of that epoch
        let replies = send(
            &h,
            ALICE,
            json!({"action": "resume", "channel": "band:demo", "after_seq": 2,
                   "epoch": epoch, "ref": "r"}),
        )
        .await;

        // THEN she gets events 3..=5 in order, then `resumed`, and is subscribed
        let replayed: Vec<(&str, u64)> = replies[..3]
            .iter()
            .map(|f| (f["type"].as_str().unwrap(), f["seq"].as_u64().unwrap()))
            .collect();
        assert_eq!(replayed, [("event", 3), ("event", 4), ("event", 5)]);
        assert_eq!(replies[0]["event"], "c");
        assert_eq!(
            replies[3],
            json!({"type": "resumed", "channel": "band:demo", "seq": 5, "epoch": epoch,
                   "replayed": 3, "more": false, "ref": "r"})
        );
        assert_eq!(replies.len(), 4);
        assert_eq!(subscribed(&h).await, [channel("band:demo")]);
    }

    #[tokio::test]
    async fn a_long_replay_comes_in_bounded_parts() {
        // GIVEN five missed events and a replay bound of two per request
        let h = alice().await;
        let events = h
            .append(&channel("band:demo"), &["a", "b", "c", "d", "e"])
            .await;
        let epoch = events[0].epoch.clone();
        let mut handler = h.ws_message();
        handler.max_replay = 2;
        let mut after = 0;
        let mut got = Vec::new();
        // WHEN alice resumes, and again while `more` says so
        for _ in 0..5 {
            let frame = json!({"action": "resume", "channel": "band:demo", "after_seq": after, "epoch": epoch});
            let before = h.pusher.frames(&conn_id(ALICE)).len();
            handler
                .handle(ws_message_event(ALICE, &frame.to_string()))
                .await;
            let replies = h.pusher.frames(&conn_id(ALICE)).split_off(before);
            let (resumed, replayed) = replies.split_last().unwrap();
            got.extend(replayed.iter().map(|f| f["seq"].as_u64().unwrap()));
            after = resumed["seq"].as_u64().unwrap();
            if resumed["more"] == false {
                break;
            }
            assert!(replayed.len() <= 2, "bounded: {replayed:?}");
        }
        // THEN she got 1..=5 exactly once, in three requests' worth of parts
        assert_eq!(got, [1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn resume_from_another_epoch_is_history_lost_with_the_current_head() {
        // GIVEN band:demo's log was recreated (a new epoch) since alice last saw it
        let h = alice().await;
        let events = h.append(&channel("band:demo"), &["a", "b", "c"]).await;

        // WHEN she resumes with her old epoch
        let reply = ask(
            &h,
            json!({"action": "resume", "channel": "band:demo", "after_seq": 1,
                   "epoch": "an-old-epoch", "ref": 3}),
        )
        .await;

        // THEN she is told the history is lost, and where the channel is now
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["code"], "history_lost");
        assert_eq!(reply["ref"], 3);
        assert_eq!(reply["data"]["seq"], 3);
        assert_eq!(reply["data"]["epoch"], json!(events[0].epoch));
        assert_eq!(reply["data"]["channel"], "band:demo");
    }

    #[tokio::test]
    async fn sync_request_queues_a_job_and_acks_it() {
        // GIVEN band demo has a source
        let h = alice().await;
        h.add_source(&band("demo"), "charts", "/srv/charts").await;

        // WHEN alice asks for a sync of her band
        let reply = ask(
            &h,
            json!({"action": "sync_request", "band": "demo", "ref": "s"}),
        )
        .await;

        // THEN one client job is queued in the source's group and acknowledged
        let jobs: Vec<crate::model::SyncJob> = h.sync_queue.bodies();
        assert_eq!(jobs.len(), 1);
        assert_eq!(h.sync_queue.messages()[0].group, "demo/charts");
        assert_eq!(jobs[0].trigger, Trigger::Client);
        assert_eq!(jobs[0].requested_by.as_deref(), Some("alice"));
        assert_eq!(reply["type"], "ack");
        assert_eq!(reply["ref"], "s");
        assert_eq!(
            reply["data"]["queued"],
            json!([{"job": jobs[0].id, "source": "charts"}])
        );
    }

    #[tokio::test]
    async fn sync_request_for_another_band_or_an_unknown_source_queues_nothing() {
        // GIVEN band demo has a source, band rock is not alice's
        let h = alice().await;
        h.add_source(&band("demo"), "charts", "/srv/charts").await;
        assert!(
            h.store
                .get_source(&band("demo"), &source_id("charts"))
                .await
                .unwrap()
                .is_some()
        );

        // WHEN she asks for rock, or for a source demo does not have
        let rock = ask(&h, json!({"action": "sync_request", "band": "rock"})).await;
        let unknown = ask(
            &h,
            json!({"action": "sync_request", "band": "demo", "source": "nope"}),
        )
        .await;

        // THEN both are refused and nothing is queued
        assert_eq!(rock["code"], "forbidden");
        assert_eq!(unknown["code"], "not_found");
        assert_eq!(h.sync_queue.attempts(), 0);
    }

    #[tokio::test]
    async fn a_frame_from_an_unknown_connection_is_answered_unknown_connection() {
        // GIVEN a connection the store does not know (its $connect was lost)
        let h = alice().await;

        // WHEN it sends a subscribe
        let replies = send(
            &h,
            "ZZZZ0000=",
            json!({"action": "subscribe", "channel": "band:demo", "ref": 1}),
        )
        .await;

        // THEN it is told to reconnect, and nothing is subscribed
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0]["code"], "unknown_connection");
        assert_eq!(replies[0]["ref"], 1);
        assert!(
            h.store
                .subscriptions(&conn_id("ZZZZ0000="))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn ping_pongs_and_unsubscribe_unsubscribes() {
        // GIVEN alice subscribed to band:demo
        let h = alice().await;
        ask(&h, json!({"action": "subscribe", "channel": "band:demo"})).await;

        // WHEN she pings, then unsubscribes
        let pong = ask(&h, json!({"action": "ping", "ref": 9})).await;
        let unsub = ask(&h, json!({"action": "unsubscribe", "channel": "band:demo"})).await;

        // THEN the pong carries the server time and her ref, and she is unsubscribed
        assert_eq!(pong, json!({"type": "pong", "ts": h.now(), "ref": 9}));
        assert_eq!(
            unsub,
            json!({"type": "unsubscribed", "channel": "band:demo"})
        );
        assert!(subscribed(&h).await.is_empty());
    }

    #[tokio::test]
    async fn a_bad_frame_gets_a_precise_error_frame() {
        // GIVEN alice connected
        let h = alice().await;
        // WHEN she sends a frame that is not a JSON object, or an unknown action
        let replies = [
            send(&h, ALICE, json!("not an object")).await,
            send(&h, ALICE, json!({"action": "dance", "ref": "d"})).await,
        ];
        // THEN each gets one error frame with its code (and the ref when there was one)
        assert_eq!(replies[0][0]["code"], "malformed_json");
        assert_eq!(replies[1][0]["code"], "unknown_action");
        assert_eq!(replies[1][0]["ref"], "d");
    }
}
