//! The HTTP API as API Gateway's HTTP API (payload v2) presents it: each request becomes
//! an `ApiGatewayV2httpRequest` for the same handler the Lambda runs, and the handler's
//! `ApiGatewayV2httpResponse` becomes the HTTP response. Beside it, [`LocalRoutes`]: what
//! only the local stack serves (the example page, dev tokens), never an API Gateway route.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body as LambdaBody;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use bandsync::auth::TokenKey;
use bandsync::error::{ErrorCode, Refusal};
use bandsync::model::{BandId, ConnectionId, UserId};
use bandsync::ports::ConnectionStore;
use bandsync::transport::http::{json_v2, refused_v2};
use futures_util::future::BoxFuture;
use serde::Deserialize;
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

/// The example page and the client bundle it imports, built into the binary so that
/// `cargo run -p bandsync-local` serves them with no npm on the machine.
const APP_PAGE: &str = include_str!("../../../shared/clients/ts/example/index.html");
const APP_BUNDLE: &str = include_str!("../../../shared/clients/ts/dist/bandsync.min.mjs");
/// What the page's WebSocket URL is written as; the served page has this stack's.
const WS_URL_MARK: &str = "__BANDSYNC_WS_URL__";

/// The local stack's own routes, for a developer on this machine: `/app/` (the example
/// page and its bundle) and `POST /local/token` (a member token for the page's
/// `getToken`). On AWS an app gets its tokens from its own backend, so no Lambda has a
/// token route: these are mounted by the local stack only, and only on loopback.
#[derive(Clone)]
pub struct LocalRoutes {
    pub tokens: TokenKey,
    /// Where the page connects (the stack's WebSocket API).
    pub ws_url: String,
    /// The open sockets, for `GET /local/connections` (whose to cut with @connections).
    pub registry: crate::gateway::Registry,
    pub connections: Arc<dyn ConnectionStore>,
}

/// `POST /local/token`: whose token, for which band, for how long (`seconds` wins over
/// `hours`; neither: one hour).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    user: String,
    band: String,
    hours: Option<i64>,
    seconds: Option<i64>,
}

/// The longest token the route mints (as `bandsync-local token --hours`).
const MAX_TOKEN_SECS: i64 = 8760 * 3600;

impl LocalRoutes {
    pub fn router(self) -> Router {
        let page: Arc<str> = APP_PAGE.replace(WS_URL_MARK, &self.ws_url).into();
        Router::new()
            .route("/app", get(|| async { Redirect::permanent("/app/") }))
            .route(
                "/app/",
                get(move || {
                    let page = page.clone();
                    async move { typed("text/html; charset=utf-8", page.to_string()) }
                }),
            )
            .route(
                "/app/bandsync.min.mjs",
                get(|| async { typed("text/javascript; charset=utf-8", APP_BUNDLE.to_owned()) }),
            )
            .route("/app/{*rest}", any(|| async { not_found() }))
            .route("/local/token", post(token))
            .route("/local/connections", get(connections))
            .with_state(self)
            .route_layer(from_fn(loopback_host_only))
    }
}

/// What the local stack answers a browser page of another origin. Only pages on this
/// machine (`http://localhost:*`, `http://127.0.0.1:*`, `http://[::1]:*`: a dev server
/// beside the stack) may call `/local/token` and `/sync/*`; any other origin gets no
/// CORS header at all, so its browser keeps the answer from it. On AWS the HttpApi's
/// CORS configuration (template parameter `AllowedOrigins`) does this.
pub fn with_local_cors(router: Router) -> Router {
    router.layer(from_fn(local_cors))
}

/// The methods the API's routes use, and the headers a client sends.
const CORS_METHODS: &str = "GET, POST, PUT, DELETE";
const CORS_HEADERS: &str = "authorization, content-type";
const CORS_MAX_AGE: &str = "600";

async fn local_cors(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let applies = path == "/local/token" || path.starts_with("/sync/");
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .filter(|o| applies && o.to_str().is_ok_and(is_loopback_origin))
        .cloned();
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(CORS_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(CORS_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(CORS_MAX_AGE),
        );
        r
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    // The answer differs by origin: a cache must not hand one origin's to another.
    h.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

/// `http://localhost[:port]`, `http://127.0.0.1[:port]` or `http://[::1][:port]`.
pub fn is_loopback_origin(origin: &str) -> bool {
    origin
        .strip_prefix("http://")
        .is_some_and(is_loopback_authority)
}

/// A host (and optional port) that names this machine, in the three spellings a browser
/// sends for it. `localhost` is matched whole: `localhost.evil.example` is not it.
fn is_loopback_authority(authority: &str) -> bool {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, port)) => (ip, port),
            None => return false,
        },
        None => match authority.split_once(':') {
            Some((host, _)) => (host, &authority[host.len()..]),
            None => (authority, ""),
        },
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
        });
    let host_ok = host.eq_ignore_ascii_case("localhost") || host == "127.0.0.1" || host == "::1";
    port_ok && host_ok
}

/// The `/local/*` routes mint tokens and list sockets for anyone who asks, which is safe
/// only for callers on this machine. Listening on loopback is not enough: a page on
/// `evil.example` whose name its DNS then points at 127.0.0.1 (DNS rebinding) is a
/// same-origin caller to the browser, but its requests say `Host: evil.example`.
async fn loopback_host_only(request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/local/") || host_is_loopback(request.headers()) {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    let refusal = Refusal::new(
        ErrorCode::Forbidden,
        format!(
            "the /local routes answer only requests for localhost, 127.0.0.1 or [::1]; \
             this one is for {}",
            host.map_or_else(|| "no host".to_owned(), |h| format!("{h:?}"))
        ),
    );
    into_response(refused_v2(refusal))
}

fn host_is_loopback(headers: &HeaderMap) -> bool {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(is_loopback_authority)
}

fn typed(content_type: &'static str, body: String) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    // The page and the bundle change with the binary: never a stale one after a rebuild.
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

async fn token(State(routes): State<LocalRoutes>, body: String) -> Response {
    let answer = mint(&routes.tokens, &body, chrono::Utc::now())
        .map_or_else(refused_v2, |body| json_v2(200, &body));
    into_response(answer)
}

/// `GET /local/connections`: every open socket with its member and device, oldest
/// first (what a developer, or a test, names in an @connections DELETE).
async fn connections(State(routes): State<LocalRoutes>) -> Response {
    let mut open = Vec::new();
    for id in routes.registry.ids() {
        let Ok(id) = ConnectionId::parse(&id) else {
            continue;
        };
        match routes.connections.get_connection(&id).await {
            Ok(Some(c)) => open.push(c),
            // Between the socket's open and its $connect's write, or after its $disconnect.
            Ok(None) => {}
            Err(e) => {
                let refusal = Refusal::from(e);
                return into_response(refused_v2(refusal));
            }
        }
    }
    open.sort_by_key(|c| c.connected_at);
    let list: Vec<serde_json::Value> = open
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id,
                "user": c.user,
                "device": c.device.as_ref().map(|d| &d.device),
                "connected_at": c.connected_at,
            })
        })
        .collect();
    into_response(json_v2(200, &serde_json::json!({ "connections": list })))
}

fn mint(
    tokens: &TokenKey,
    body: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<serde_json::Value, Refusal> {
    let req: TokenRequest = serde_json::from_str(body).map_err(|e| {
        Refusal::new(
            ErrorCode::MalformedBody,
            format!("expected {{\"user\", \"band\", \"hours\"?, \"seconds\"?}}: {e}"),
        )
    })?;
    let user = UserId::parse(&req.user)?;
    let band = BandId::parse(&req.band)?;
    let secs = match (req.seconds, req.hours) {
        (Some(s), _) => s,
        (None, Some(h)) => h.saturating_mul(3600),
        (None, None) => 3600,
    };
    if !(1..=MAX_TOKEN_SECS).contains(&secs) {
        return Err(Refusal::new(
            ErrorCode::InvalidParameter,
            format!("a token lives 1 s to {MAX_TOKEN_SECS} s (a year); {secs} s asked"),
        ));
    }
    let ttl = chrono::Duration::seconds(secs);
    let token = tokens.mint(user.as_str(), &[band.as_str()], now, ttl);
    Ok(serde_json::json!({
        "token": token,
        "expires_at": (now + ttl).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
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

    #[test]
    fn only_this_machines_origins_and_hosts_are_loopback() {
        for origin in [
            "http://localhost",
            "http://localhost:5173",
            "http://LOCALHOST:80",
            "http://127.0.0.1:8787",
            "http://[::1]:3000",
            "http://[::1]",
        ] {
            assert!(is_loopback_origin(origin), "{origin}");
        }
        for origin in [
            "https://localhost:5173",
            "http://localhost.evil.example",
            "http://evil.example",
            "http://127.0.0.2:80",
            "http://127.0.0.1:",
            "http://127.0.0.1:80x",
            "http://[::1",
            "http://[::2]:80",
            "null",
            "",
        ] {
            assert!(!is_loopback_origin(origin), "{origin}");
        }
        assert!(is_loopback_authority("127.0.0.1:8787"));
        assert!(!is_loopback_authority("evil.example:8787"));
        assert!(!is_loopback_authority("127.0.0.1.evil.example"));
    }

    #[test]
    fn dev_tokens_are_a_members_for_one_band_an_hour_by_default() {
        let key = TokenKey::new("local-routes-test-secret-of-32-bytes!");
        let now = chrono::Utc::now();
        let member = |answer: &serde_json::Value| {
            key.verify(answer["token"].as_str().unwrap(), now).unwrap()
        };
        // GIVEN user and band only THEN alice in demo, for an hour, as `expires_at` says
        let answer = mint(&key, r#"{"user":"alice","band":"demo"}"#, now).unwrap();
        let alice = member(&answer);
        assert_eq!(alice.user.as_str(), "alice");
        assert_eq!(
            alice.bands.iter().map(|b| b.as_str()).collect::<Vec<_>>(),
            ["demo"]
        );
        assert!(!alice.admin);
        assert_eq!(
            alice.expires_at.timestamp(),
            (now + chrono::Duration::hours(1)).timestamp()
        );
        assert_eq!(
            answer["expires_at"],
            alice
                .expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        // GIVEN hours, or seconds (which win) THEN that long
        let answer = mint(&key, r#"{"user":"bo","band":"demo","hours":3}"#, now).unwrap();
        assert_eq!(
            member(&answer).expires_at.timestamp(),
            now.timestamp() + 3 * 3600
        );
        let answer = mint(
            &key,
            r#"{"user":"bo","band":"demo","hours":3,"seconds":90}"#,
            now,
        )
        .unwrap();
        assert_eq!(member(&answer).expires_at.timestamp(), now.timestamp() + 90);
    }

    #[test]
    fn dev_token_requests_that_make_no_sense_are_refused_with_a_code() {
        let key = TokenKey::new("local-routes-test-secret-of-32-bytes!");
        let now = chrono::Utc::now();
        for (body, code) in [
            ("", ErrorCode::MalformedBody),
            ("not json", ErrorCode::MalformedBody),
            (r#"{"user":"alice"}"#, ErrorCode::MalformedBody),
            (
                r#"{"user":"alice","band":"demo","admin":true}"#,
                ErrorCode::MalformedBody,
            ),
            (
                r#"{"user":"alice","band":"demo","hours":"2"}"#,
                ErrorCode::MalformedBody,
            ),
            (r#"{"user":"","band":"demo"}"#, ErrorCode::InvalidParameter),
            (
                r#"{"user":"alice","band":"no such/band"}"#,
                ErrorCode::InvalidParameter,
            ),
            (
                r#"{"user":"alice","band":"demo","seconds":0}"#,
                ErrorCode::InvalidParameter,
            ),
            (
                r#"{"user":"alice","band":"demo","hours":-1}"#,
                ErrorCode::InvalidParameter,
            ),
            (
                r#"{"user":"alice","band":"demo","hours":8761}"#,
                ErrorCode::InvalidParameter,
            ),
        ] {
            let refusal = mint(&key, body, now).unwrap_err();
            assert_eq!(refusal.code, code, "{body}: {}", refusal.message);
            assert!(!refusal.message.is_empty());
        }
    }
}
