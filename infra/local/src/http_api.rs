//! The HTTP API as API Gateway's HTTP API (payload v2) presents it: each request becomes
//! an `ApiGatewayV2httpRequest` for the same handler the Lambda runs, and the handler's
//! `ApiGatewayV2httpResponse` becomes the HTTP response.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body as LambdaBody;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// HTTP API's payload limit.
pub const MAX_BODY: usize = 10 * 1024 * 1024;

pub type HttpHandler = Arc<
    dyn Fn(ApiGatewayV2httpRequest) -> BoxFuture<'static, ApiGatewayV2httpResponse> + Send + Sync,
>;

/// Integrations by path prefix, as template.yaml routes them.
#[derive(Clone)]
pub struct HttpApi {
    pub webhook: HttpHandler,
    pub api: HttpHandler,
}

impl HttpApi {
    pub fn router(self) -> Router {
        Router::new().fallback(serve).with_state(self)
    }
}

fn not_found() -> Response {
    let mut r = (StatusCode::NOT_FOUND, r#"{"message":"Not Found"}"#).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// The route key template.yaml declares for a path (for handlers that read it), and the
/// path parameters API Gateway would give with it.
fn route_key(method: &str, path: &str) -> Option<(String, Vec<(&'static str, String)>)> {
    let path = path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let param = |name: &'static str, value: &str| (name, value.to_owned());
    let (template, params) = match segments.as_slice() {
        ["webhooks", "google" | "folder"]
        | [
            "sync",
            "status" | "trigger" | "operations" | "health" | "stats" | "entities" | "conflicts"
            | "presence",
        ] => (path.to_owned(), vec![]),
        ["sync", "operations", id] => ("/sync/operations/{id}".to_owned(), vec![param("id", id)]),
        ["sync", "bands", band] => ("/sync/bands/{band}".to_owned(), vec![param("band", band)]),
        ["sync", "bands", band, "credentials"] => (
            "/sync/bands/{band}/credentials".to_owned(),
            vec![param("band", band)],
        ),
        ["sync", "bands", band, "sources", source] => (
            "/sync/bands/{band}/sources/{source}".to_owned(),
            vec![param("band", band), param("source", source)],
        ),
        ["sync", "bands", band, "entity-types", ty] => (
            "/sync/bands/{band}/entity-types/{type}".to_owned(),
            vec![param("band", band), param("type", ty)],
        ),
        ["sync", "bands", band, "entities", "rebuild"] => (
            "/sync/bands/{band}/entities/rebuild".to_owned(),
            vec![param("band", band)],
        ),
        ["sync", "entities", ty, id] => (
            "/sync/entities/{type}/{id}".to_owned(),
            vec![param("type", ty), param("id", id)],
        ),
        ["sync", "entities", ty, id, "history"] => (
            "/sync/entities/{type}/{id}/history".to_owned(),
            vec![param("type", ty), param("id", id)],
        ),
        ["sync", "devices", device, "parked"] => (
            "/sync/devices/{device}/parked".to_owned(),
            vec![param("device", device)],
        ),
        ["sync", "devices", device, "parked", mid] => (
            "/sync/devices/{device}/parked/{mid}".to_owned(),
            vec![param("device", device), param("mid", mid)],
        ),
        _ => return None,
    };
    Some((format!("{method} {template}"), params))
}

async fn serve(
    State(api): State<HttpApi>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let Some((route_key, path_parameters)) = route_key(parts.method.as_str(), &path) else {
        return not_found();
    };
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        let mut r = (
            StatusCode::PAYLOAD_TOO_LARGE,
            r#"{"message":"Request Entity Too Large"}"#,
        )
            .into_response();
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        return r;
    };
    let mut req = ApiGatewayV2httpRequest::default();
    req.version = Some("2.0".into());
    req.route_key = Some(route_key.clone());
    req.raw_path = Some(path.clone());
    req.raw_query_string = Some(parts.uri.query().unwrap_or_default().to_owned());
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| url_decode_pairs(q).into_iter().collect())
        .unwrap_or_default();
    req.query_string_parameters = query.into();
    for (name, value) in path_parameters {
        req.path_parameters.insert(name.into(), value);
    }
    req.headers = parts.headers;
    let ctx = &mut req.request_context;
    ctx.route_key = Some(route_key);
    ctx.stage = Some("$default".into());
    ctx.request_id = Some(uuid::Uuid::new_v4().to_string());
    ctx.apiid = Some("local".into());
    ctx.time_epoch = chrono::Utc::now().timestamp_millis();
    ctx.http.method = parts.method;
    ctx.http.path = Some(path.clone());
    ctx.http.protocol = Some("HTTP/1.1".into());
    ctx.http.source_ip = Some(peer.ip().to_string());
    match String::from_utf8(bytes.to_vec()) {
        Ok(text) => req.body = (!text.is_empty()).then_some(text),
        Err(_) => {
            use base64::Engine;
            req.body = Some(base64::engine::general_purpose::STANDARD.encode(&bytes));
            req.is_base64_encoded = true;
        }
    }
    let handler = if path.starts_with("/webhooks/") {
        &api.webhook
    } else {
        &api.api
    };
    into_response(handler(req).await)
}

fn url_decode_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1])
                .zip(hex(bytes[i + 2]))
                .map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match (decoded, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn into_response(resp: ApiGatewayV2httpResponse) -> Response {
    let status = StatusCode::from_u16(u16::try_from(resp.status_code).unwrap_or(500))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match resp.body {
        Some(LambdaBody::Text(t)) => Body::from(t),
        Some(LambdaBody::Binary(b)) => Body::from(b),
        _ => Body::empty(),
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = resp.headers;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_query_decoding() {
        // Every route the template declares is served under its own key.
        let routes = bandsync::api::ROUTES
            .iter()
            .chain(&["POST /webhooks/google", "POST /webhooks/folder"]);
        for route in routes {
            let (method, template) = route.split_once(' ').unwrap();
            let path = bandsync_testkit::sample_path(template);
            let (key, _) = route_key(method, &path).unwrap_or_else(|| panic!("{route}"));
            assert_eq!(key, *route);
        }
        assert_eq!(
            route_key("PUT", "/sync/bands/demo/sources/charts/"),
            Some((
                "PUT /sync/bands/{band}/sources/{source}".to_owned(),
                vec![("band", "demo".to_owned()), ("source", "charts".to_owned())]
            ))
        );
        for unknown in [
            "/nope",
            "/sync/operations/a/b",
            "/sync/bands/demo/sources",
            "/",
        ] {
            assert_eq!(route_key("GET", unknown), None, "{unknown}");
        }
        assert_eq!(
            url_decode_pairs("band=demo&name=a%20b+c&x=%zz&flag"),
            vec![
                ("band".into(), "demo".into()),
                ("name".into(), "a b c".into()),
                ("x".into(), "%zz".into()),
                ("flag".into(), "".into())
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
    }
}
