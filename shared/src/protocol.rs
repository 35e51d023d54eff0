//! The client protocol: JSON text frames over the WebSocket.
//!
//! Client -> server frames are parsed in two steps so every bad frame gets a precise
//! error code: not JSON (`malformed_json`), no `action` (`missing_action`), an action we
//! do not know (`unknown_action`), fields of the wrong shape (`invalid_request`).

use crate::error::ErrorCode;
pub use crate::wire::frames::{ClientRequest, ServerFrame, SyncRequestBody};
use serde_json::Value;

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

/// The actions this server knows.
pub const ACTIONS: &[&str] = ClientRequest::ACTIONS;

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
    if !ACTIONS.contains(&action.as_str()) {
        let message = format!(
            "unknown action {action:?}; expected one of {}",
            ACTIONS.join(", ")
        );
        return (
            reference,
            Err(ProtocolError::new(ErrorCode::UnknownAction, message)),
        );
    }
    fields.insert("action".into(), Value::String(action.clone()));
    let request = serde_json::from_value::<ClientRequest>(Value::Object(fields))
        .map_err(|e| ProtocolError::new(ErrorCode::InvalidRequest, format!("{action}: {e}")));
    (reference, request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BandId, ChannelName};
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
