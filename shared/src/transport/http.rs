//! JSON responses and the one error type every HTTP-facing handler returns.
//!
//! Errors reach clients as `{"error": {"code", "message"}}` with the right status;
//! the mapping from failure to status lives here and nowhere else.

use crate::auth::AuthError;
use crate::model::ParseError;
use crate::ports::PortError;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use http::HeaderMap;
use http::header::{CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use serde_json::json;

/// A failure with the status, code and message the caller sees.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable", message)
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        Self::new(401, e.code(), e.to_string())
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        Self::bad_request("invalid_parameter", e.to_string())
    }
}

impl From<PortError> for ApiError {
    fn from(e: PortError) -> Self {
        // The detail goes to the log, not to the caller.
        tracing::error!(error = ?e, "backend failure");
        Self::unavailable("a backend is unavailable; try again")
    }
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers
}

/// An HTTP API (payload v2) JSON response.
pub fn json_v2(status: u16, body: &impl Serialize) -> ApiGatewayV2httpResponse {
    let mut r = ApiGatewayV2httpResponse::default();
    r.status_code = i64::from(status);
    r.headers = json_headers();
    r.body = Some(Body::Text(serde_json::to_string(body).unwrap_or_default()));
    r
}

/// A WebSocket route (proxy v1) JSON response.
pub fn json_v1(status: u16, body: &impl Serialize) -> ApiGatewayProxyResponse {
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = i64::from(status);
    r.headers = json_headers();
    r.body = Some(Body::Text(serde_json::to_string(body).unwrap_or_default()));
    r
}

impl From<ApiError> for ApiGatewayV2httpResponse {
    fn from(e: ApiError) -> Self {
        json_v2(e.status, &e.body())
    }
}

impl From<ApiError> for ApiGatewayProxyResponse {
    fn from(e: ApiError) -> Self {
        json_v1(e.status, &e.body())
    }
}

/// A header's value as text, by case-insensitive name.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Decode the request body (API Gateway may base64 it).
pub fn body_text(body: Option<&str>, is_base64: bool) -> Result<String, ApiError> {
    let raw = body.unwrap_or_default();
    if !is_base64 {
        return Ok(raw.to_owned());
    }
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|_| ApiError::bad_request("malformed_body", "body is not valid base64"))?;
    String::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request("malformed_body", "body is not UTF-8"))
}
