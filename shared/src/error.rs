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
use crate::protocol::ProtocolError;
use crate::sync::RequestSyncError;
use crate::webhook::IntakeError;
use serde_json::{Value, json};

/// Every error code a client or operator can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The body is not what the route expects (not base64, not UTF-8, not the JSON shape).
    MalformedBody,
    /// A WebSocket frame that is not a JSON object.
    MalformedJson,
    /// A WebSocket frame with no `action`.
    MissingAction,
    /// A WebSocket frame with an action the protocol does not have.
    UnknownAction,
    /// A WebSocket frame whose fields have the wrong shape.
    InvalidRequest,
    MissingParameter,
    /// An id or query parameter that does not parse.
    InvalidParameter,
    /// A webhook notification without a header Google always sends.
    MissingHeader,
    InvalidHeader,
    /// API Gateway gave no connection id (never seen from a real gateway).
    MissingConnectionId,
    InvalidName,
    InvalidFileType,
    InvalidKind,
    InvalidLocation,
    InvalidCredentials,
    MissingToken,
    InvalidToken,
    TokenExpired,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// A conditional write lost to another writer: the state moved, try again.
    Conflict,
    /// A watch channel past its expiry: Google is told to stop using it.
    ChannelExpired,
    /// The connection is not registered (it expired or never connected).
    UnknownConnection,
    /// The channel's history cannot be replayed from where the client asks.
    HistoryLost,
    /// The deployment lacks a setting the route needs.
    NotConfigured,
    /// A backend failed; the detail is in the log, never in the answer.
    Unavailable,
}

/// What a code means to a WebSocket client, which gets it in an `error` frame (or, at
/// `$connect`, as the HTTP status of the refused upgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnWebSocket {
    /// The frame is wrong: sent again as it is, it gets the same answer.
    FixTheFrame,
    /// Not this member's to do, or nothing by that name: do not retry.
    Refused,
    /// `$connect` is refused: get a (new) token and connect again.
    ConnectRefused,
    /// The connection is not registered: connect again.
    Reconnect,
    /// The history is gone: refetch the channel's state, then subscribe.
    Refetch,
    /// A passing failure: the same frame may succeed later.
    RetryLater,
    /// Not sent on the WebSocket: a code of the HTTP routes only.
    HttpOnly,
}

impl ErrorCode {
    /// Every code, in the order of the table in [`Self::spec`].
    pub const ALL: [Self; 27] = [
        Self::MalformedBody,
        Self::MalformedJson,
        Self::MissingAction,
        Self::UnknownAction,
        Self::InvalidRequest,
        Self::MissingParameter,
        Self::InvalidParameter,
        Self::MissingHeader,
        Self::InvalidHeader,
        Self::MissingConnectionId,
        Self::InvalidName,
        Self::InvalidFileType,
        Self::InvalidKind,
        Self::InvalidLocation,
        Self::InvalidCredentials,
        Self::MissingToken,
        Self::InvalidToken,
        Self::TokenExpired,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Conflict,
        Self::ChannelExpired,
        Self::UnknownConnection,
        Self::HistoryLost,
        Self::NotConfigured,
        Self::Unavailable,
    ];

    /// The one table: wire name, HTTP status, WebSocket meaning. (The codes only the
    /// WebSocket sends have the status an HTTP route would give; the `$default` route
    /// itself always answers 200, the code travels in the frame.)
    const fn spec(self) -> (&'static str, u16, OnWebSocket) {
        use OnWebSocket::*;
        match self {
            Self::MalformedBody => ("malformed_body", 400, FixTheFrame),
            Self::MalformedJson => ("malformed_json", 400, FixTheFrame),
            Self::MissingAction => ("missing_action", 400, FixTheFrame),
            Self::UnknownAction => ("unknown_action", 400, FixTheFrame),
            Self::InvalidRequest => ("invalid_request", 400, FixTheFrame),
            Self::MissingParameter => ("missing_parameter", 400, HttpOnly),
            Self::InvalidParameter => ("invalid_parameter", 400, FixTheFrame),
            Self::MissingHeader => ("missing_header", 400, HttpOnly),
            Self::InvalidHeader => ("invalid_header", 400, HttpOnly),
            Self::MissingConnectionId => ("missing_connection_id", 400, Reconnect),
            Self::InvalidName => ("invalid_name", 400, HttpOnly),
            Self::InvalidFileType => ("invalid_file_type", 400, HttpOnly),
            Self::InvalidKind => ("invalid_kind", 400, HttpOnly),
            Self::InvalidLocation => ("invalid_location", 400, HttpOnly),
            Self::InvalidCredentials => ("invalid_credentials", 400, HttpOnly),
            Self::MissingToken => ("missing_token", 401, ConnectRefused),
            Self::InvalidToken => ("invalid_token", 401, ConnectRefused),
            Self::TokenExpired => ("token_expired", 401, ConnectRefused),
            Self::Forbidden => ("forbidden", 403, Refused),
            Self::NotFound => ("not_found", 404, Refused),
            Self::MethodNotAllowed => ("method_not_allowed", 405, HttpOnly),
            Self::Conflict => ("conflict", 409, RetryLater),
            Self::ChannelExpired => ("channel_expired", 410, HttpOnly),
            Self::UnknownConnection => ("unknown_connection", 410, Reconnect),
            Self::HistoryLost => ("history_lost", 410, Refetch),
            Self::NotConfigured => ("not_configured", 503, HttpOnly),
            Self::Unavailable => ("unavailable", 503, RetryLater),
        }
    }

    /// The code as clients see it.
    pub const fn as_str(self) -> &'static str {
        self.spec().0
    }

    /// The HTTP status it is answered with.
    pub const fn status(self) -> u16 {
        self.spec().1
    }

    pub const fn on_websocket(self) -> OnWebSocket {
        self.spec().2
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
        json!({"error": {"code": self.code.as_str(), "message": self.message}})
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
