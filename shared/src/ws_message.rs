//! $default route: the client protocol. Replies go back through the [`Pusher`] (as they
//! would through API Gateway's @connections), so every answer, error included, reaches
//! the client as a frame.

use crate::entities::categories;
use crate::entities::push::{PushRefused, PushService};
use crate::error::{ErrorCode, Refusal};
use crate::model::{ChannelHead, ChannelName, Connection, ConnectionId, DeviceBinding, Trigger};
use crate::ports::{
    ChannelLog, Clock, ConnectionStore, PresenceStore, PushOutcome, Pusher, Queue, SourceStore,
};
use crate::resume::{self, ResumePlan};
use crate::transport::http::{json_v1, refused_v1};
use crate::wire::frames::{ClientRequest, HistoryLostData, ServerFrame, parse_frame};
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
    /// `register_device` and `push`.
    push: PushService,
    /// Events replayed per `resume` (default [`MAX_REPLAY`]).
    pub max_replay: u64,
    /// Who is online, for `presence`.
    presence: Option<Arc<dyn PresenceStore>>,
}

/// The answer to a refused frame: what its `error` frame says.
struct ErrorReply {
    refusal: Refusal,
    /// Context for the client (the channel's head, for `history_lost`).
    data: Option<HistoryLostData>,
    /// `rate_limited`: seconds to wait.
    retry_after: Option<u64>,
}

impl<E: Into<Refusal>> From<E> for ErrorReply {
    fn from(e: E) -> Self {
        Self {
            refusal: e.into(),
            data: None,
            retry_after: None,
        }
    }
}

impl From<PushRefused> for ErrorReply {
    fn from(e: PushRefused) -> Self {
        Self {
            refusal: e.refusal,
            data: None,
            retry_after: e.retry_after,
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
        push: PushService,
    ) -> Self {
        Self {
            connections,
            log,
            sources,
            sync_queue,
            pusher,
            clock,
            push,
            max_replay: MAX_REPLAY,
            presence: None,
        }
    }

    /// Answer `presence` from this store.
    pub fn with_presence(mut self, presence: Arc<dyn PresenceStore>) -> Self {
        self.presence = Some(presence);
        self
    }

    /// The push service, to tune (its rate limit).
    pub fn push_service_mut(&mut self) -> &mut PushService {
        &mut self.push
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
                        Ok(request) => {
                            self.serve(&id, request, reference.clone(), body.len())
                                .await
                        }
                    };
                    (reference, reply)
                }
            };
        match reply {
            Ok(Some(frame)) => self.send(&id, &frame).await,
            Ok(None) => {}
            Err(ErrorReply {
                refusal,
                data,
                retry_after,
            }) => {
                // The WebSocket edge: the cause of a backend failure is logged here.
                refusal.log();
                let frame = ServerFrame::Error {
                    code: refusal.code,
                    message: refusal.message,
                    reference,
                    data,
                    retry_after,
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

    async fn member(&self, id: &ConnectionId) -> Result<Connection, ErrorReply> {
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
    ) -> Result<Connection, ErrorReply> {
        let conn = self.member(id).await?;
        if !may_read(&conn, channel) {
            return Err(
                Refusal::new(ErrorCode::Forbidden, format!("you may not read {channel}")).into(),
            );
        }
        Ok(conn)
    }

    /// Answer one request (its frame `bytes` long).
    async fn serve(
        &self,
        id: &ConnectionId,
        request: ClientRequest,
        reference: Option<Value>,
        bytes: usize,
    ) -> Result<Option<ServerFrame>, ErrorReply> {
        match request {
            ClientRequest::RegisterDevice(request) => {
                let conn = self.member(id).await?;
                let device = self.push.register(&conn, request).await?;
                // This connection is now sent what the device asks for (selective sync).
                let binding = DeviceBinding {
                    device: device.device.clone(),
                    categories: device.categories.clone(),
                };
                self.connections.bind_device(id, &binding).await?;
                Ok(Some(ServerFrame::Device {
                    device: device.device,
                    categories: device.categories,
                    reference,
                }))
            }
            ClientRequest::Push(request) => {
                let conn = self.member(id).await?;
                let device = request.device.clone();
                let results = self.push.push(&conn, request, bytes).await?;
                // Over one frame's limit, the verdicts come in several frames: all but
                // the last are posted here, in order, the last is the reply. After a
                // failed post nothing more is posted (a later frame would hide the gap):
                // the reply is an error naming the first mid not delivered, and pushing
                // again from it is safe (what was decided answers `duplicate`).
                let mut frames = ServerFrame::push_results(reference, device, results);
                let last = frames.pop();
                for frame in &frames {
                    let e = match self.pusher.post(id, &frame.to_bytes()).await {
                        Ok(PushOutcome::Delivered) => continue,
                        // Nobody left to answer.
                        Ok(PushOutcome::Gone) => return Ok(None),
                        Err(e) => e,
                    };
                    tracing::warn!(connection = %id, error = %e, "a push_result frame could not be posted; the rest is not sent");
                    let from = match frame {
                        ServerFrame::PushResult { results, .. } => results.first().map(|r| r.mid),
                        _ => None,
                    };
                    return Err(Refusal::new(
                        ErrorCode::Unavailable,
                        format!(
                            "the verdicts from mid {} on could not be sent; push them again \
                             (decided ones answer duplicate)",
                            from.unwrap_or(0)
                        ),
                    )
                    .into());
                }
                Ok(last)
            }
            ClientRequest::Presence { band } => {
                let conn = self.member(id).await?;
                if !conn.bands.contains(&band) {
                    return Err(Refusal::new(
                        ErrorCode::Forbidden,
                        format!("you are not a member of band {band}"),
                    )
                    .into());
                }
                let store = self.presence.as_deref().ok_or_else(|| {
                    Refusal::new(ErrorCode::Unavailable, "presence is not kept here")
                })?;
                let members = crate::presence::online(store, &band).await?;
                Ok(Some(ServerFrame::Presence {
                    band,
                    members,
                    reference,
                }))
            }
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
                let conn = self.readable(id, &channel).await?;
                // Subscribe first, so nothing published while we replay is missed; the
                // client drops the seqs it gets twice.
                self.connections
                    .subscribe(id, &channel, self.clock.now())
                    .await?;
                let categories = conn.device.map(|d| d.categories).unwrap_or_default();
                self.resume(id, channel, after_seq, epoch, &categories, reference)
                    .await
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
        categories: &[String],
        reference: Option<Value>,
    ) -> Result<Option<ServerFrame>, ErrorReply> {
        let head = self.log.head(&channel).await?;
        match resume::plan(head.as_ref(), after_seq, epoch.as_deref()) {
            ResumePlan::HistoryLost { reason } => {
                Err(history_lost(&channel, head.as_ref(), reason))
            }
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
                    // Seqs are gapless: a page that skips one (what a store lost, e.g. a
                    // prune cut short) cannot be replayed as if complete.
                    if page.iter().zip(cursor + 1..).any(|(e, seq)| e.seq != seq) {
                        let reason = "the events after after_seq have a gap in the log";
                        return Err(history_lost(&channel, head.as_ref(), reason));
                    }
                    // The device's categories filter a replay as they do live delivery.
                    for slot in categories::slots(categories, &page) {
                        let frame = match slot {
                            categories::Slot::Event(i) => ServerFrame::Event(page[i].clone()),
                            categories::Slot::Skipped {
                                from_seq, to_seq, ..
                            } => ServerFrame::Skipped {
                                channel: channel.clone(),
                                from_seq,
                                to_seq,
                            },
                        };
                        self.send(id, &frame).await;
                    }
                    if let Some(last) = page.last() {
                        cursor = last.seq;
                    }
                    replayed += page.len() as u64;
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

/// The refusal of a resume the log cannot serve: the client refetches the channel's
/// state from where its head is now.
fn history_lost(channel: &ChannelName, head: Option<&ChannelHead>, reason: &str) -> ErrorReply {
    ErrorReply {
        refusal: Refusal::new(
            ErrorCode::HistoryLost,
            format!("{reason}; refetch the state of {channel}"),
        ),
        data: Some(HistoryLostData {
            channel: channel.clone(),
            epoch: head.map(|h| h.epoch.clone()),
            seq: head.map_or(0, |h| h.seq),
        }),
        retry_after: None,
    }
}
