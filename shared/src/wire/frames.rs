//! The WebSocket frames: JSON text frames, a client's tagged by `action`
//! ([`ClientRequest`]), the server's by `type` ([`ServerFrame`]). A client frame may carry
//! a `ref` (any JSON value), which every reply to it echoes.
//!
//! Client frames are parsed in two steps ([`parse_frame`]) so every bad frame gets a
//! precise error code: not JSON (`malformed_json`), no `action` (`missing_action`), an
//! action we do not know (`unknown_action`), fields of the wrong shape
//! (`invalid_request`).
//!
//! Two-way sync adds `register_device` (answered by `device`) and `push` (answered by
//! `push_result`): a push's `mutations` are read one by one by the push service
//! ([`crate::entities::push`]), so a bad one is refused naming `mutations[i]` and its
//! field, not with serde's generic message about the whole frame.

use crate::entities::mutation::MutationResult;
use crate::entities::records::Platform;
use crate::error::ErrorCode;
use crate::model::{BandId, ChannelName, DeviceId, Event, SourceId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a client asks for (the frame without its `ref`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientRequest {
    /// Receive the channel's events from now on (answered by `subscribed`).
    Subscribe { channel: ChannelName },
    /// Stop receiving them (answered by `unsubscribed`).
    Unsubscribe { channel: ChannelName },
    /// Subscribe and replay what came after `after_seq` of `epoch` (answered by the
    /// events, then `resumed`; or by a `history_lost` error).
    Resume {
        channel: ChannelName,
        after_seq: u64,
        #[serde(default)]
        epoch: Option<String>,
    },
    /// Answered by `pong`.
    Ping {},
    /// Queue a sync of a band's sources (answered by `ack` with the jobs queued).
    SyncRequest(SyncRequestBody),
    /// Register this device for the member (answered by `device`). The first member to
    /// register an id keeps it; another member gets `device_taken`.
    RegisterDevice(RegisterDevice),
    /// Changes to a band's entities, in mid order (answered by `push_result`, one
    /// verdict per mutation; a malformed push by an `error`, and nothing applied).
    Push(PushRequest),
    /// Who of the band is online now (answered by `presence`; members of the band only).
    Presence { band: BandId },
}

impl ClientRequest {
    /// The actions this server knows, as clients spell them.
    pub const ACTIONS: &[&str] = &[
        "subscribe",
        "unsubscribe",
        "resume",
        "ping",
        "sync_request",
        "register_device",
        "push",
        "presence",
    ];
}

/// `register_device`: the device id is the app's own choice (8-64 of `[A-Za-z0-9_-]`), so
/// it can queue mutations before it was ever online.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterDevice {
    pub device: DeviceId,
    pub platform: Platform,
    /// What the member calls it ("Ringo's iPad"); at most 200 characters.
    pub name: String,
    /// What it wants to be sent; left out: what it had (a new device: everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
}

/// `push`: mutations of one band's entities from one device, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    pub band: BandId,
    pub device: DeviceId,
    /// Each is read on its own (so a refusal names `mutations[i]` and its field). At
    /// most [`MAX_PUSH_MUTATIONS`].
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Vec<crate::entities::mutation::WireMutation>")
    )]
    pub mutations: Vec<Value>,
}

/// Most mutations in one `push` (past it: `push_too_large`).
pub const MAX_PUSH_MUTATIONS: usize = 500;
/// Largest `push` frame in bytes: API Gateway's WebSocket message limit (128 KB).
pub const MAX_PUSH_BYTES: usize = 128 * 1024;
/// Largest frame the server posts: API Gateway's WebSocket message limit (128 KB).
pub const MAX_SERVER_FRAME_BYTES: usize = 128 * 1024;

/// "Sync this band (or one of its sources)": a `sync_request` frame and the body of
/// `POST /sync/trigger` alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SyncRequestBody {
    pub band: BandId,
    /// One source; none: every source of the band.
    #[serde(default)]
    pub source: Option<SourceId>,
    /// A full sync (compare everything) unless asked otherwise.
    #[serde(default = "full_by_default")]
    pub full: bool,
}

fn full_by_default() -> bool {
    true
}

/// What the server sends. Every frame is a JSON object whose `type` says what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// An event of a channel the connection is subscribed to (or replays).
    Event(Event),
    Subscribed {
        channel: ChannelName,
        /// The channel's newest seq (0: none yet).
        seq: u64,
        epoch: Option<String>,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none", default)]
        reference: Option<Value>,
    },
    Unsubscribed {
        channel: ChannelName,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none", default)]
        reference: Option<Value>,
    },
    /// Selective sync: the events `from_seq..=to_seq` of `channel` were left out for
    /// this connection's device categories. Every event or `skipped` frame covers the
    /// seqs after the previous one, so a seq missing from both is a real gap.
    Skipped {
        channel: ChannelName,
        from_seq: u64,
        to_seq: u64,
    },
    /// Sent after the replay of a `resume`: everything up to `seq` has been sent.
    Resumed {
        channel: ChannelName,
        seq: u64,
        epoch: Option<String>,
        replayed: u64,
        /// More events are missing after `seq`: send `resume` again from `seq`. A replay
        /// is bounded, so one request never outlasts a Lambda invocation.
        #[serde(default)]
        more: bool,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none", default)]
        reference: Option<Value>,
    },
    Pong {
        ts: chrono::DateTime<chrono::Utc>,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none", default)]
        reference: Option<Value>,
    },
    /// A request was carried out (a `sync_request`: the jobs it queued).
    Ack {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none", default)]
        reference: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        data: Option<SyncQueued>,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none", default)]
        reference: Option<Value>,
        /// `history_lost` only: where the channel's log is now.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        data: Option<HistoryLostData>,
        /// `rate_limited` only: seconds to wait before sending the frame again.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        retry_after: Option<u64>,
    },
    /// The device as registered: its id and what it is sent.
    Device {
        device: DeviceId,
        categories: Vec<String>,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none", default)]
        reference: Option<Value>,
    },
    /// One verdict per mutation of a `push`, in its order. Verdicts that would not fit
    /// one frame (API Gateway posts at most 128 KB) come in several `push_result` frames
    /// with the push's `ref`, in order, each but the last with `more: true`
    /// ([`ServerFrame::push_results`]).
    PushResult {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none", default)]
        reference: Option<Value>,
        device: DeviceId,
        results: Vec<MutationResult>,
        /// True when more `push_result` frames of the same push follow; left out on the
        /// last (or only) one.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
    /// The band's members online now (a `presence` request, or `GET /sync/presence`).
    Presence {
        band: BandId,
        members: Vec<PresentMember>,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none", default)]
        reference: Option<Value>,
    },
}

/// A member online in a band: listed from its `presence.joined` to its `presence.left`
/// (so with 0 devices while its last one's disconnect is within the debounce).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PresentMember {
    pub member: UserId,
    pub devices: u64,
    /// When its session began.
    pub since: chrono::DateTime<chrono::Utc>,
}

/// The `data` of a `history_lost` error: the channel's head, to refetch from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HistoryLostData {
    pub channel: ChannelName,
    /// Null: the channel has no log (yet).
    pub epoch: Option<String>,
    /// The channel's newest seq (0: none yet).
    pub seq: u64,
}

impl ServerFrame {
    pub fn error(code: ErrorCode, message: impl Into<String>, reference: Option<Value>) -> Self {
        Self::Error {
            code,
            message: message.into(),
            reference,
            data: None,
            retry_after: None,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising these types cannot fail: keys are strings, no maps with non-string keys.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The `push_result` frames of one push: its verdicts in order, as many to a frame
    /// as fit in [`MAX_SERVER_FRAME_BYTES`], each frame but the last with `more: true`.
    /// A verdict too large for a frame on its own (an entity near its bound, sent back
    /// in `fields`) goes without its `fields` (then its `losers` and `message`): the
    /// client has the entity from its event, or reads it over HTTP.
    pub fn push_results(
        reference: Option<Value>,
        device: DeviceId,
        results: Vec<MutationResult>,
    ) -> Vec<ServerFrame> {
        Self::push_results_within(reference, device, results, MAX_SERVER_FRAME_BYTES)
    }

    fn push_results_within(
        reference: Option<Value>,
        device: DeviceId,
        results: Vec<MutationResult>,
        limit: usize,
    ) -> Vec<ServerFrame> {
        let frame = |results: Vec<MutationResult>, more: bool| ServerFrame::PushResult {
            reference: reference.clone(),
            device: device.clone(),
            results,
            more,
        };
        let len = |r: &MutationResult| serde_json::to_vec(r).map_or(usize::MAX, |v| v.len());
        // The frame around its results (`more` included, so every frame is measured as
        // the larger kind).
        let envelope = frame(Vec::new(), true).to_bytes().len();
        let room = limit.saturating_sub(envelope);
        let mut frames = Vec::new();
        let mut current: Vec<MutationResult> = Vec::new();
        let mut used = 0;
        for mut r in results {
            if len(&r) > room {
                r.fields = None;
            }
            if len(&r) > room {
                r.losers.clear();
                r.message = None;
            }
            let size = len(&r);
            // One comma between results.
            let needed = size + usize::from(!current.is_empty());
            if !current.is_empty() && used + needed > room {
                frames.push(frame(std::mem::take(&mut current), true));
                used = 0;
                current.push(r);
                used += size;
            } else {
                current.push(r);
                used += needed;
            }
        }
        frames.push(frame(current, false));
        frames
    }
}

/// Why a frame was refused; becomes an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtocolError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Parse one text frame. The `ref` (if any) is returned even when the rest is refused,
/// so the error can carry it.
pub fn parse_frame(text: &str) -> (Option<Value>, Result<ClientRequest, ProtocolError>) {
    let malformed = |message: String| Err(ProtocolError::new(ErrorCode::MalformedJson, message));
    let mut fields = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return (None, malformed("a frame must be a JSON object".into())),
        Err(e) => return (None, malformed(format!("not JSON: {e}"))),
    };
    let reference = fields.remove("ref");
    (reference, request_of(fields))
}

/// The request a frame's fields (without its `ref`) spell.
fn request_of(mut fields: Map<String, Value>) -> Result<ClientRequest, ProtocolError> {
    let action = match fields.remove("action") {
        Some(Value::String(a)) => a,
        other => {
            let message = match other {
                Some(_) => "`action` must be a string",
                None => "a frame needs an `action`",
            };
            return Err(ProtocolError::new(ErrorCode::MissingAction, message));
        }
    };
    if !ClientRequest::ACTIONS.contains(&action.as_str()) {
        let message = format!(
            "unknown action {action:?}; expected one of {}",
            ClientRequest::ACTIONS.join(", ")
        );
        return Err(ProtocolError::new(ErrorCode::UnknownAction, message));
    }
    fields.insert("action".into(), Value::String(action.clone()));
    serde_json::from_value::<ClientRequest>(Value::Object(fields))
        .map_err(|e| ProtocolError::new(ErrorCode::InvalidRequest, format!("{action}: {e}")))
}

/// The `data` of the `ack` of a `sync_request`: one job per source queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SyncQueued {
    pub queued: Vec<QueuedSync>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct QueuedSync {
    /// The job id, which becomes the operation id of `sync.started`.
    pub job: String,
    pub source: SourceId,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::events::{EventKind, SyncStarted};
    use serde_json::json;

    fn code(text: &str) -> &'static str {
        parse_frame(text).1.unwrap_err().code.as_str()
    }

    #[test]
    fn parses_every_action() {
        let (r, req) = parse_frame(r#"{"action":"subscribe","channel":"band:demo","ref":7}"#);
        assert_eq!(r, Some(json!(7)));
        assert_eq!(
            req.unwrap(),
            ClientRequest::Subscribe {
                channel: ChannelName::parse("band:demo").unwrap()
            }
        );
        let (_, req) =
            parse_frame(r#"{"action":"resume","channel":"system","after_seq":41,"epoch":"e1"}"#);
        assert_eq!(
            req.unwrap(),
            ClientRequest::Resume {
                channel: ChannelName::System,
                after_seq: 41,
                epoch: Some("e1".into())
            }
        );
        assert_eq!(
            parse_frame(r#"{"action":"ping"}"#).1.unwrap(),
            ClientRequest::Ping {}
        );
        // Like POST /sync/trigger, a full sync unless asked otherwise.
        let (_, req) = parse_frame(r#"{"action":"sync_request","band":"demo"}"#);
        assert_eq!(
            req.unwrap(),
            ClientRequest::SyncRequest(SyncRequestBody {
                band: BandId::parse("demo").unwrap(),
                source: None,
                full: true
            })
        );
        let (_, req) = parse_frame(r#"{"action":"sync_request","band":"demo","full":false}"#);
        assert!(matches!(
            req.unwrap(),
            ClientRequest::SyncRequest(SyncRequestBody { full: false, .. })
        ));
        let (_, req) = parse_frame(
            r#"{"action":"register_device","device":"ipad-ringo","platform":"ios","name":"iPad"}"#,
        );
        assert_eq!(
            req.unwrap(),
            ClientRequest::RegisterDevice(RegisterDevice {
                device: DeviceId::parse("ipad-ringo").unwrap(),
                platform: Platform::Ios,
                name: "iPad".into(),
                categories: None,
            })
        );
        // The mutations are kept as they came: the push service reads each one.
        let (r, req) = parse_frame(
            r#"{"action":"push","band":"demo","device":"ipad-ringo","ref":1,"mutations":[{"mid":1,"bad":true}]}"#,
        );
        assert_eq!(r, Some(json!(1)));
        assert_eq!(
            req.unwrap(),
            ClientRequest::Push(PushRequest {
                band: BandId::parse("demo").unwrap(),
                device: DeviceId::parse("ipad-ringo").unwrap(),
                mutations: vec![json!({"mid": 1, "bad": true})],
            })
        );
    }

    #[test]
    fn refuses_bad_frames_with_precise_codes() {
        assert_eq!(code("not json"), "malformed_json");
        assert_eq!(code("[1,2]"), "malformed_json");
        assert_eq!(code(r#"{"channel":"band:x"}"#), "missing_action");
        assert_eq!(code(r#"{"action":5}"#), "missing_action");
        assert_eq!(code(r#"{"action":"dance"}"#), "unknown_action");
        assert_eq!(code(r#"{"action":"subscribe"}"#), "invalid_request");
        assert_eq!(
            code(r#"{"action":"subscribe","channel":"team:x"}"#),
            "invalid_request"
        );
        assert_eq!(
            code(r#"{"action":"resume","channel":"system","after_seq":-1}"#),
            "invalid_request"
        );
        assert_eq!(code(r#"{"action":"ping","extra":1}"#), "invalid_request");
        // A device id is 8-64 characters; a platform one of five.
        assert_eq!(
            code(r#"{"action":"register_device","device":"short","platform":"ios","name":"x"}"#),
            "invalid_request"
        );
        assert_eq!(
            code(
                r#"{"action":"register_device","device":"ipad-ringo","platform":"palm","name":"x"}"#
            ),
            "invalid_request"
        );
        assert_eq!(
            code(r#"{"action":"push","band":"demo","device":"ipad-ringo","mutations":{}}"#),
            "invalid_request"
        );
        // The ref survives a refused frame.
        assert_eq!(
            parse_frame(r#"{"action":"dance","ref":"a"}"#).0,
            Some(json!("a"))
        );
    }

    #[test]
    fn frames_carry_their_type() {
        let f = ServerFrame::error(ErrorCode::HistoryLost, "gone", Some(json!(1)));
        let v: Value = serde_json::from_slice(&f.to_bytes()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "history_lost");
        assert_eq!(v["ref"], 1);
        let pong = ServerFrame::Pong {
            ts: chrono::Utc::now(),
            reference: None,
        };
        let v: Value = serde_json::from_slice(&pong.to_bytes()).unwrap();
        assert_eq!(v["type"], "pong");
        assert!(v.get("ref").is_none());
    }

    fn channel() -> ChannelName {
        ChannelName::parse("band:demo").unwrap()
    }

    #[test]
    fn client_frames_keep_their_json() {
        let cases = [
            (
                ClientRequest::Subscribe { channel: channel() },
                r#"{"action":"subscribe","channel":"band:demo"}"#,
            ),
            (
                ClientRequest::Unsubscribe { channel: channel() },
                r#"{"action":"unsubscribe","channel":"band:demo"}"#,
            ),
            (
                ClientRequest::Resume {
                    channel: channel(),
                    after_seq: 4,
                    epoch: Some("e1".into()),
                },
                r#"{"action":"resume","channel":"band:demo","after_seq":4,"epoch":"e1"}"#,
            ),
            (ClientRequest::Ping {}, r#"{"action":"ping"}"#),
            (
                ClientRequest::SyncRequest(SyncRequestBody {
                    band: BandId::parse("demo").unwrap(),
                    source: Some(SourceId::parse("charts").unwrap()),
                    full: false,
                }),
                r#"{"action":"sync_request","band":"demo","source":"charts","full":false}"#,
            ),
            (
                ClientRequest::Presence {
                    band: BandId::parse("demo").unwrap(),
                },
                r#"{"action":"presence","band":"demo"}"#,
            ),
        ];
        for (request, text) in cases {
            assert_eq!(serde_json::to_string(&request).unwrap(), text);
            assert_eq!(
                serde_json::from_str::<ClientRequest>(text).unwrap(),
                request
            );
        }
        let actions: Vec<String> = ClientRequest::ACTIONS
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            actions,
            [
                "subscribe",
                "unsubscribe",
                "resume",
                "ping",
                "sync_request",
                "register_device",
                "push",
                "presence"
            ]
        );
    }

    #[test]
    fn server_frames_keep_their_json() {
        let ts = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let cases = [
            (
                ServerFrame::Subscribed {
                    channel: channel(),
                    seq: 2,
                    epoch: None,
                    reference: Some(json!("r1")),
                },
                r#"{"type":"subscribed","channel":"band:demo","seq":2,"epoch":null,"ref":"r1"}"#,
            ),
            (
                ServerFrame::Unsubscribed {
                    channel: channel(),
                    reference: None,
                },
                r#"{"type":"unsubscribed","channel":"band:demo"}"#,
            ),
            (
                ServerFrame::Resumed {
                    channel: channel(),
                    seq: 5,
                    epoch: Some("e1".into()),
                    replayed: 3,
                    more: false,
                    reference: Some(json!(7)),
                },
                r#"{"type":"resumed","channel":"band:demo","seq":5,"epoch":"e1","replayed":3,"more":false,"ref":7}"#,
            ),
            (
                ServerFrame::Pong {
                    ts,
                    reference: None,
                },
                r#"{"type":"pong","ts":"2023-11-14T22:13:20Z"}"#,
            ),
            (
                ServerFrame::Presence {
                    band: BandId::parse("demo").unwrap(),
                    members: vec![PresentMember {
                        member: UserId::parse("ringo").unwrap(),
                        devices: 2,
                        since: ts,
                    }],
                    reference: None,
                },
                r#"{"type":"presence","band":"demo","members":[{"member":"ringo","devices":2,"since":"2023-11-14T22:13:20Z"}]}"#,
            ),
            (
                ServerFrame::Ack {
                    reference: Some(json!(1)),
                    data: Some(SyncQueued {
                        queued: vec![QueuedSync {
                            job: "j1".into(),
                            source: SourceId::parse("charts").unwrap(),
                        }],
                    }),
                },
                r#"{"type":"ack","ref":1,"data":{"queued":[{"job":"j1","source":"charts"}]}}"#,
            ),
            (
                ServerFrame::Error {
                    code: ErrorCode::HistoryLost,
                    message: "gone".into(),
                    reference: None,
                    data: Some(HistoryLostData {
                        channel: channel(),
                        epoch: Some("e2".into()),
                        seq: 9,
                    }),
                    retry_after: None,
                },
                r#"{"type":"error","code":"history_lost","message":"gone","data":{"channel":"band:demo","epoch":"e2","seq":9}}"#,
            ),
            (
                ServerFrame::Error {
                    code: ErrorCode::RateLimited,
                    message: "slow down".into(),
                    reference: Some(json!(3)),
                    data: None,
                    retry_after: Some(2),
                },
                r#"{"type":"error","code":"rate_limited","message":"slow down","ref":3,"retry_after":2}"#,
            ),
            (
                ServerFrame::Device {
                    device: DeviceId::parse("ipad-ringo").unwrap(),
                    categories: vec!["setlists".into()],
                    reference: Some(json!("d")),
                },
                r#"{"type":"device","device":"ipad-ringo","categories":["setlists"],"ref":"d"}"#,
            ),
            (
                ServerFrame::PushResult {
                    reference: Some(json!(9)),
                    device: DeviceId::parse("ipad-ringo").unwrap(),
                    results: vec![MutationResult {
                        version: Some(1),
                        seq: Some(4),
                        ..MutationResult::bare(
                            1,
                            crate::entities::mutation::MutationStatus::Applied,
                        )
                    }],
                    more: false,
                },
                r#"{"type":"push_result","ref":9,"device":"ipad-ringo","results":[{"mid":1,"status":"applied","version":1,"seq":4}]}"#,
            ),
            (
                ServerFrame::Event(
                    crate::model::NewEvent::new(
                        "op1:started",
                        ts,
                        EventKind::SyncStarted(SyncStarted {
                            operation: "op1".into(),
                            source: SourceId::parse("charts").unwrap(),
                            trigger: crate::model::Trigger::Client,
                            full: true,
                        }),
                    )
                    .at(channel(), 1, "e1".into()),
                ),
                r#"{"type":"event","channel":"band:demo","seq":1,"epoch":"e1","id":"op1:started","event":"sync.started","ts":"2023-11-14T22:13:20Z","data":{"full":true,"operation":"op1","source":"charts","trigger":"client"}}"#,
            ),
        ];
        for (frame, text) in cases {
            assert_eq!(String::from_utf8(frame.to_bytes()).unwrap(), text);
            assert_eq!(serde_json::from_str::<ServerFrame>(text).unwrap(), frame);
        }
    }

    #[test]
    fn push_results_over_a_frame_are_split_in_order_under_the_limit() {
        use crate::entities::mutation::MutationStatus;
        let device = DeviceId::parse("ipad-ringo").unwrap();
        let big = |mid: u64| MutationResult {
            version: Some(mid),
            fields: Some(Map::from_iter([("notes".into(), json!("n".repeat(300)))])),
            ..MutationResult::bare(mid, MutationStatus::Applied)
        };
        // GIVEN 40 verdicts of about 370 bytes each, and frames of 2,000 bytes
        let results: Vec<MutationResult> = (1..=40).map(big).collect();
        let frames = ServerFrame::push_results_within(
            Some(json!("p")),
            device.clone(),
            results.clone(),
            2000,
        );
        // THEN they come in several frames, each under the limit, `more` on all but
        // the last, and together they are every verdict in order
        assert!(frames.len() >= 8, "{} frames", frames.len());
        let mut seen = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let bytes = f.to_bytes();
            assert!(bytes.len() <= 2000, "frame {i}: {} bytes", bytes.len());
            let json: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(json["ref"], "p");
            assert_eq!(
                json["more"].as_bool(),
                (i + 1 < frames.len()).then_some(true)
            );
            let ServerFrame::PushResult { results, .. } = f else {
                panic!("not a push_result: {f:?}");
            };
            seen.extend(results.iter().cloned());
        }
        assert_eq!(seen, results);
        // AND a verdict too large for a frame alone goes without its fields
        let huge = MutationResult {
            fields: Some(Map::from_iter([("notes".into(), json!("n".repeat(5000)))])),
            ..big(41)
        };
        let frames = ServerFrame::push_results_within(None, device, vec![huge.clone()], 2000);
        let [ServerFrame::PushResult { results, more, .. }] = frames.as_slice() else {
            panic!("one frame: {frames:?}");
        };
        assert!(!more);
        assert_eq!(
            results[0],
            MutationResult {
                fields: None,
                ..huge
            }
        );
    }
}
