//! JSON responses, and the HTTP edge of a [`Refusal`]: `{"error": {"code", "message"}}`
//! with the status of its [`ErrorCode`](crate::error::ErrorCode).

use crate::error::{ErrorCode, Refusal};
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use http::HeaderMap;
use http::header::{CONTENT_TYPE, HeaderValue};
use serde::Serialize;

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

/// An HTTP API (payload v2) refusal; a backend failure's cause goes to the log.
pub fn refused_v2(refusal: Refusal) -> ApiGatewayV2httpResponse {
    refusal.log();
    json_v2(refusal.status(), &refusal.body())
}

/// A WebSocket route (proxy v1) refusal; a backend failure's cause goes to the log.
pub fn refused_v1(refusal: Refusal) -> ApiGatewayProxyResponse {
    refusal.log();
    json_v1(refusal.status(), &refusal.body())
}

/// A header's value as text, by case-insensitive name.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Decode the request body (API Gateway may base64 it).
pub fn body_text(body: Option<&str>, is_base64: bool) -> Result<String, Refusal> {
    let raw = body.unwrap_or_default();
    if !is_base64 {
        return Ok(raw.to_owned());
    }
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|_| Refusal::new(ErrorCode::MalformedBody, "body is not valid base64"))?;
    String::from_utf8(bytes)
        .map_err(|_| Refusal::new(ErrorCode::MalformedBody, "body is not UTF-8"))
}
