//! The error vocabulary: every code a client or an operator can see, and the [`Refusal`]
//! that carries one to the edge.
//!
//! The jobs fail with their own domain errors ([`PortError`], [`RequestSyncError`],
//! [`IntakeError`], [`AuthError`], ...); each becomes a `Refusal` here, in one place, and
//! the edge renders it: `{"error": {"code", "message"}}` with the code's status over
//! HTTP ([`crate::transport::http::refused_v2`]), an `error` frame on the WebSocket
//! (`ws_message`). The code strings are wire contracts: clients switch on them.

use crate::auth::AuthError;
use crate::model::ParseError;
use crate::ports::PortError;
use crate::sync::RequestSyncError;
use crate::webhook::IntakeError;
use crate::wire::frames::ProtocolError;
use serde_json::{Value, json};

/// The one table of codes: each variant with its wire name, the HTTP status it is
/// answered with, and what it means to a WebSocket client. The enum, [`ErrorCode::ALL`]
/// and the table are written from this list, so a code cannot be left out of one.
/// (The codes only the WebSocket sends have the status an HTTP route would give; the
/// `$default` route itself always answers 200, the code travels in the frame.)
macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = ($name:literal, $status:literal, $ws:ident), )*) => {
        /// Every error code a client or operator can see.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in the order of the table.
            pub const ALL: &[Self] = &[$(Self::$variant),*];

            /// Wire name, HTTP status, WebSocket meaning.
            const fn spec(self) -> (&'static str, u16, OnWebSocket) {
                match self {
                    $(Self::$variant => ($name, $status, OnWebSocket::$ws),)*
                }
            }

            /// What the code says (its doc comment; empty when its name says it all).
            pub fn description(self) -> &'static str {
                match self {
                    $(Self::$variant => concat!($($doc,)* "").trim_start(),)*
                }
            }
        }
    };
}

error_codes! {
    /// The body is not what the route expects (not base64, not UTF-8, not the JSON shape).
    MalformedBody = ("malformed_body", 400, FixTheFrame),
    /// A WebSocket frame that is not a JSON object.
    MalformedJson = ("malformed_json", 400, FixTheFrame),
    /// A WebSocket frame with no `action`.
    MissingAction = ("missing_action", 400, FixTheFrame),
    /// A WebSocket frame with an action the protocol does not have.
    UnknownAction = ("unknown_action", 400, FixTheFrame),
    /// A WebSocket frame whose fields have the wrong shape.
    InvalidRequest = ("invalid_request", 400, FixTheFrame),
    MissingParameter = ("missing_parameter", 400, HttpOnly),
    /// An id or query parameter that does not parse.
    InvalidParameter = ("invalid_parameter", 400, FixTheFrame),
    /// A webhook notification without a header Google always sends.
    MissingHeader = ("missing_header", 400, HttpOnly),
    InvalidHeader = ("invalid_header", 400, HttpOnly),
    /// API Gateway gave no connection id (never seen from a real gateway).
    MissingConnectionId = ("missing_connection_id", 400, Reconnect),
    InvalidName = ("invalid_name", 400, HttpOnly),
    InvalidFileType = ("invalid_file_type", 400, HttpOnly),
    InvalidKind = ("invalid_kind", 400, HttpOnly),
    InvalidLocation = ("invalid_location", 400, HttpOnly),
    InvalidCredentials = ("invalid_credentials", 400, HttpOnly),
    /// A push's mutation of the wrong shape (its message names the mutation and field).
    InvalidMutation = ("invalid_mutation", 400, FixTheFrame),
    /// A field operation the protocol does not have, or one the field's policy does not
    /// take (`$inc` on a set field).
    InvalidFieldOperation = ("invalid_field_operation", 400, FixTheFrame),
    /// An entity type the band does not declare (strict mode).
    UnknownEntityType = ("unknown_entity_type", 400, FixTheFrame),
    /// A field the entity type does not declare.
    UnknownField = ("unknown_field", 400, FixTheFrame),
    /// A field value over its type's size limit.
    FieldTooLarge = ("field_too_large", 413, FixTheFrame),
    /// A push over the frame's mutation count or size.
    PushTooLarge = ("push_too_large", 413, FixTheFrame),
    /// A `base_version` newer than the entity: the client invented it.
    BaseVersionFromFuture = ("base_version_from_future", 400, FixTheFrame),
    /// A push from a device that was never registered (send `register_device` first).
    UnknownDevice = ("unknown_device", 400, FixTheFrame),
    /// The device id is bound to another member.
    DeviceTaken = ("device_taken", 409, Refused),
    /// A write to a field only the entity's owner may write.
    NotOwner = ("not_owner", 403, Refused),
    /// A `reject` field changed since the mutation's base: rebase on the current state
    /// (sent with the verdict) and push again under a new mid.
    StaleBase = ("stale_base", 409, Refused),
    /// A mutation's verdict (`rejected`, parked): the entity after it, or the history
    /// entry of that version, would pass the bound an entity may be (128 KB of JSON; its
    /// history entry 288 KB). Split the entity, or remove fields, and push anew.
    EntityTooLarge = ("entity_too_large", 413, Refused),
    /// The conflict a mutation names is not open (settled, or never was).
    ConflictNotOpen = ("conflict_not_open", 409, Refused),
    /// Too many frames or mutations from this device: wait `retry_after` seconds.
    RateLimited = ("rate_limited", 429, RetryLater),
    MissingToken = ("missing_token", 401, ConnectRefused),
    InvalidToken = ("invalid_token", 401, ConnectRefused),
    TokenExpired = ("token_expired", 401, ConnectRefused),
    Forbidden = ("forbidden", 403, Refused),
    NotFound = ("not_found", 404, Refused),
    MethodNotAllowed = ("method_not_allowed", 405, HttpOnly),
    /// A conditional write lost to another writer: the state moved, try again.
    Conflict = ("conflict", 409, RetryLater),
    /// A watch channel past its expiry: Google is told to stop using it.
    ChannelExpired = ("channel_expired", 410, HttpOnly),
    /// The connection is not registered (it expired or never connected).
    UnknownConnection = ("unknown_connection", 410, Reconnect),
    /// The channel's history cannot be replayed from where the client asks.
    HistoryLost = ("history_lost", 410, Refetch),
    /// The deployment lacks a setting the route needs.
    NotConfigured = ("not_configured", 503, HttpOnly),
    /// A backend failed; the detail is in the log, never in the answer.
    Unavailable = ("unavailable", 503, RetryLater),
}

/// What a code means to a WebSocket client, which gets it in an `error` frame (or, at
/// `$connect`, as the HTTP status of the refused upgrade); [`Self::advice`] says it in
/// words, for the documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnWebSocket {
    FixTheFrame,
    Refused,
    ConnectRefused,
    Reconnect,
    Refetch,
    RetryLater,
    HttpOnly,
}

impl OnWebSocket {
    /// What a client does about it, as the documents say it.
    pub const fn advice(self) -> &'static str {
        match self {
            Self::FixTheFrame => {
                "the frame is wrong; sent again as it is, it gets the same answer."
            }
            Self::Refused => "not this member's to do, or nothing by that name; do not retry.",
            Self::ConnectRefused => {
                "`$connect` is refused with this status; get a (new) token and connect again."
            }
            Self::Reconnect => "the connection is not registered; connect again.",
            Self::Refetch => "the history is gone; refetch the channel's state, then subscribe.",
            Self::RetryLater => "a passing failure; the same frame may succeed later.",
            Self::HttpOnly => "not sent (a code of the HTTP routes only).",
        }
    }
}

impl ErrorCode {
    /// The code as clients see it.
    pub const fn as_str(self) -> &'static str {
        self.spec().0
    }

    /// The HTTP status it is answered with.
    pub const fn status(self) -> u16 {
        self.spec().1
    }

    /// What it means to a WebSocket client (the documents say it for every code).
    pub const fn on_websocket(self) -> OnWebSocket {
        self.spec().2
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownErrorCode(s.to_owned()))
    }
}

/// A code string this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownErrorCode(pub String);

/// On the wire a code is its name (`"not_found"`).
impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// The schema lists every code, each with its HTTP status and what it means on the
/// WebSocket, so a client can switch on them exhaustively.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for ErrorCode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ErrorCode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let codes: Vec<Value> = Self::ALL
            .iter()
            .map(|c| {
                let what = match c.description() {
                    "" => String::new(),
                    d => format!("{d} "),
                };
                json!({
                    "const": c.as_str(),
                    "description": format!(
                        "{what}HTTP {}. On the WebSocket: {}",
                        c.status(),
                        c.on_websocket().advice()
                    ),
                })
            })
            .collect();
        schemars::json_schema!({
            "description": "Every error code, stable for programs to switch on.",
            "type": "string",
            "oneOf": codes,
        })
    }
}

/// A refused request: the code and the message its client is told, and (for a backend
/// failure) the cause, which the edge logs and never shows.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// Why a backend failed (logged by the edge that answers).
    pub cause: Option<PortError>,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            cause: None,
        }
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// `{"error": {"code", "message"}}`: the body of an HTTP refusal.
    pub fn body(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }

    /// A backend failed (503, try again); the cause is for the log only.
    pub fn unavailable(cause: PortError) -> Self {
        Self {
            cause: Some(cause),
            ..Self::new(
                ErrorCode::Unavailable,
                "a backend is unavailable; try again",
            )
        }
    }

    /// Log the cause of a backend failure: the edge that answers calls this once.
    pub fn log(&self) {
        if let Some(cause) = &self.cause {
            tracing::error!(code = %self.code, error = ?cause, "backend failure");
        }
    }
}

impl From<PortError> for Refusal {
    fn from(e: PortError) -> Self {
        // The detail goes to the log (at the edge), not to the caller.
        match e {
            PortError::Conflict(_) => Self {
                cause: Some(e),
                ..Self::new(
                    ErrorCode::Conflict,
                    "the record changed meanwhile; try again",
                )
            },
            PortError::Backend(_) => Self::unavailable(e),
        }
    }
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        let code = match e {
            AuthError::Missing => ErrorCode::MissingToken,
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::Malformed(_)
            | AuthError::Algorithm
            | AuthError::Signature
            | AuthError::Claims(_) => ErrorCode::InvalidToken,
        };
        Self::new(code, e.to_string())
    }
}

impl From<ParseError> for Refusal {
    fn from(e: ParseError) -> Self {
        Self::new(ErrorCode::InvalidParameter, e.to_string())
    }
}

impl From<crate::entities::mutation::MutationError> for Refusal {
    fn from(e: crate::entities::mutation::MutationError) -> Self {
        Self::new(e.code, e.message)
    }
}

impl From<ProtocolError> for Refusal {
    fn from(e: ProtocolError) -> Self {
        Self::new(e.code, e.message)
    }
}

impl From<RequestSyncError> for Refusal {
    fn from(e: RequestSyncError) -> Self {
        match e {
            RequestSyncError::Port(e) => e.into(),
            RequestSyncError::UnknownSource { .. } | RequestSyncError::NoSources(_) => {
                Self::new(ErrorCode::NotFound, e.to_string())
            }
        }
    }
}

impl From<IntakeError> for Refusal {
    fn from(e: IntakeError) -> Self {
        let code = match e {
            // Whatever the port says (even a lost conditional write), a 5xx: Google
            // retries only those, and a notification refused with a 4xx is lost.
            IntakeError::Port(e) => return Self::unavailable(e),
            IntakeError::MissingHeader(_) => ErrorCode::MissingHeader,
            IntakeError::InvalidMessageNumber => ErrorCode::InvalidHeader,
            IntakeError::UnknownChannel => ErrorCode::NotFound,
            IntakeError::TokenMismatch | IntakeError::ResourceMismatch => ErrorCode::Forbidden,
            IntakeError::ChannelExpired => ErrorCode::ChannelExpired,
        };
        Self::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_names_are_the_ones_clients_know() {
        // The strings are a contract: renaming one breaks every client switching on it.
        let names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "malformed_body",
                "malformed_json",
                "missing_action",
                "unknown_action",
                "invalid_request",
                "missing_parameter",
                "invalid_parameter",
                "missing_header",
                "invalid_header",
                "missing_connection_id",
                "invalid_name",
                "invalid_file_type",
                "invalid_kind",
                "invalid_location",
                "invalid_credentials",
                "invalid_mutation",
                "invalid_field_operation",
                "unknown_entity_type",
                "unknown_field",
                "field_too_large",
                "push_too_large",
                "base_version_from_future",
                "unknown_device",
                "device_taken",
                "not_owner",
                "stale_base",
                "entity_too_large",
                "conflict_not_open",
                "rate_limited",
                "missing_token",
                "invalid_token",
                "token_expired",
                "forbidden",
                "not_found",
                "method_not_allowed",
                "conflict",
                "channel_expired",
                "unknown_connection",
                "history_lost",
                "not_configured",
                "unavailable",
            ]
        );
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn a_lost_condition_is_a_conflict_and_a_failed_backend_unavailable() {
        // GIVEN the two ways a port fails
        let conflict = Refusal::from(PortError::Conflict("version 3 != 4".into()));
        let backend = Refusal::from(PortError::Backend(anyhow::anyhow!("table gone")));
        // THEN a lost condition is 409 and a failure 503, neither telling the detail
        assert_eq!(
            (conflict.status(), conflict.code.as_str()),
            (409, "conflict")
        );
        assert_eq!(
            (backend.status(), backend.code.as_str()),
            (503, "unavailable")
        );
        for r in [&conflict, &backend] {
            assert!(!r.message.contains("version") && !r.message.contains("table"));
            assert!(r.cause.is_some(), "the edge logs the cause");
        }
    }

    #[test]
    fn a_webhook_port_failure_is_a_5xx_whatever_the_port_says() {
        // GIVEN the intake failed on a port, with a lost condition or a backend failure
        for e in [
            PortError::Conflict("version 3".into()),
            PortError::Backend(anyhow::anyhow!("table gone")),
        ] {
            // WHEN refused THEN 503, so that Google retries the notification
            let r = Refusal::from(IntakeError::Port(e));
            assert_eq!((r.status(), r.code.as_str()), (503, "unavailable"));
            assert!(r.cause.is_some(), "the edge logs the cause");
        }
    }

    #[test]
    fn token_failures_are_401_with_a_code_per_remedy() {
        #[rustfmt::skip]
        let cases = [
            (AuthError::Missing, "missing_token"),
            (AuthError::Expired, "token_expired"),
            (AuthError::Signature, "invalid_token"),
            (AuthError::Algorithm, "invalid_token"),
            (AuthError::Malformed("not base64url"), "invalid_token"),
            (AuthError::Claims("exp".into()), "invalid_token"),
        ];
        for (e, code) in cases {
            let r = Refusal::from(e);
            assert_eq!((r.status(), r.code.as_str()), (401, code));
        }
    }
}
