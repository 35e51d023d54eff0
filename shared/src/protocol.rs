//! The client protocol: JSON text frames over the WebSocket.
//!
//! Client -> server frames are parsed in two steps so every bad frame gets a precise
//! error code: not JSON (`malformed_json`), no `action` (`missing_action`), an action we
//! do not know (`unknown_action`), fields of the wrong shape (`invalid_request`).

use crate::error::ErrorCode;
use crate::model::{BandId, ChannelName, Event, SourceId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a client asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRequest {
    Subscribe {
        channel: ChannelName,
    },
    Unsubscribe {
        channel: ChannelName,
    },
    Resume {
        channel: ChannelName,
        after_seq: u64,
        epoch: Option<String>,
    },
    Ping,
    SyncRequest {
        band: BandId,
        source: Option<SourceId>,
        full: bool,
    },
}

/// A parsed frame: the request and the client's correlation `ref`, echoed in replies.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    pub request: ClientRequest,
    pub reference: Option<Value>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelArgs {
    channel: ChannelName,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeArgs {
    channel: ChannelName,
    after_seq: u64,
    #[serde(default)]
    epoch: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncArgs {
    band: BandId,
    #[serde(default)]
    source: Option<SourceId>,
    /// Like POST /sync/trigger: a full sync unless asked otherwise.
    #[serde(default = "full_by_default")]
    full: bool,
}

fn full_by_default() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// The actions this server knows.
pub const ACTIONS: &[&str] = &["subscribe", "unsubscribe", "resume", "ping", "sync_request"];

fn args<T: serde::de::DeserializeOwned>(
    action: &str,
    fields: serde_json::Map<String, Value>,
) -> Result<T, ProtocolError> {
    serde_json::from_value(Value::Object(fields))
        .map_err(|e| ProtocolError::new(ErrorCode::InvalidRequest, format!("{action}: {e}")))
}

/// Parse one text frame. The `ref` (if any) is returned even when the rest is refused,
/// so the error can carry it.
pub fn parse_frame(text: &str) -> (Option<Value>, Result<ClientRequest, ProtocolError>) {
    let mut fields = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return (
                None,
                Err(ProtocolError::new(
                    ErrorCode::MalformedJson,
                    "a frame must be a JSON object",
                )),
            );
        }
        Err(e) => {
            return (
                None,
                Err(ProtocolError::new(
                    ErrorCode::MalformedJson,
                    format!("not JSON: {e}"),
                )),
            );
        }
    };
    let reference = fields.remove("ref");
    let action = match fields.remove("action") {
        Some(Value::String(a)) => a,
        Some(_) => {
            return (
                reference,
                Err(ProtocolError::new(
                    ErrorCode::MissingAction,
                    "`action` must be a string",
                )),
            );
        }
        None => {
            return (
                reference,
                Err(ProtocolError::new(
                    ErrorCode::MissingAction,
                    "a frame needs an `action`",
                )),
            );
        }
    };
    let request = match action.as_str() {
        "subscribe" => args::<ChannelArgs>(&action, fields)
            .map(|a| ClientRequest::Subscribe { channel: a.channel }),
        "unsubscribe" => args::<ChannelArgs>(&action, fields)
            .map(|a| ClientRequest::Unsubscribe { channel: a.channel }),
        "resume" => args::<ResumeArgs>(&action, fields).map(|a| ClientRequest::Resume {
            channel: a.channel,
            after_seq: a.after_seq,
            epoch: a.epoch,
        }),
        "ping" => args::<NoArgs>(&action, fields).map(|_| ClientRequest::Ping),
        "sync_request" => args::<SyncArgs>(&action, fields).map(|a| ClientRequest::SyncRequest {
            band: a.band,
            source: a.source,
            full: a.full,
        }),
        other => Err(ProtocolError::new(
            ErrorCode::UnknownAction,
            format!(
                "unknown action {other:?}; expected one of {}",
                ACTIONS.join(", ")
            ),
        )),
    };
    (reference, request)
}

/// What the server sends. Every frame is a JSON object whose `type` says what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Event(Event),
    Subscribed {
        channel: ChannelName,
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
    Ack {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none", default)]
        reference: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        data: Option<Value>,
    },
    Error {
        code: String,
        message: String,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none", default)]
        reference: Option<Value>,
        /// Extra context (e.g. the channel's current seq and epoch for `history_lost`).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        data: Option<Value>,
    },
}

impl ServerFrame {
    pub fn error(code: ErrorCode, message: impl Into<String>, reference: Option<Value>) -> Self {
        Self::Error {
            code: code.as_str().to_owned(),
            message: message.into(),
            reference,
            data: None,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising these types cannot fail: keys are strings, no maps with non-string keys.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            ClientRequest::Ping
        );
        // Like POST /sync/trigger, a full sync unless asked otherwise.
        let (_, req) = parse_frame(r#"{"action":"sync_request","band":"demo"}"#);
        assert_eq!(
            req.unwrap(),
            ClientRequest::SyncRequest {
                band: BandId::parse("demo").unwrap(),
                source: None,
                full: true
            }
        );
        let (_, req) = parse_frame(r#"{"action":"sync_request","band":"demo","full":false}"#);
        assert!(matches!(
            req.unwrap(),
            ClientRequest::SyncRequest { full: false, .. }
        ));
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
}
