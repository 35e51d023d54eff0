//! What every fake Google API shares: the gate a request passes first (one bearer
//! token, queued faults, a record of requests), the HTTP server running on its own task,
//! Google's error bodies, and the answer through the `fields` partial-response mask.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::fields::FieldMask;

/// What the next request answers instead of doing its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 `rateLimitExceeded` (`RESOURCE_EXHAUSTED`), with this `Retry-After` header
    /// (delay-seconds or an HTTP date) if given.
    RateLimited { retry_after: Option<String> },
    /// 500 `backendError`.
    ServerError,
    /// This status with Google's error body for it (`backendError` for 5xx).
    Status(u16),
    /// 410 for a stale token.
    Gone,
    /// 200 with a truncated JSON body.
    MalformedJson,
    /// Exactly this status and body (`application/json`).
    Raw { status: u16, body: String },
    /// No fault: the request is served normally (queue it before a fault to let that
    /// many requests through first).
    Pass,
}

impl Fault {
    pub fn rate_limited(retry_after: Option<&str>) -> Self {
        Fault::RateLimited {
            retry_after: retry_after.map(str::to_owned),
        }
    }
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The query parameters, decoded, in order.
    pub query: Vec<(String, String)>,
    /// Whether it carried the expected bearer token.
    pub authorized: bool,
}

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A fake's HTTP server, running on its own task until dropped. Shared by the fakes.
#[derive(Debug)]
pub(crate) struct Served {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Served {
    /// Serve `app` on `addr` (port 0: a free one); `what` names it in the log.
    pub(crate) async fn bind(
        addr: SocketAddr,
        app: Router,
        what: &'static str,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "fake {what} server stopped");
            }
        });
        Ok(Self { addr, task })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The state of a fake API that is served by [`Running`]: a cheap handle with a
/// [`Gate`], and its routes.
pub trait FakeState: Clone + Send + Sync + 'static {
    /// Names the fake in logs.
    const NAME: &'static str;
    /// An empty fake accepting `Bearer <token>`.
    fn with_token(token: &str) -> Self;
    /// Its routes with a fallback (404 in the API's own shape).
    fn app(&self) -> Router;
    /// Run `f` on the gate, under the state's lock.
    fn with_gate<R>(&self, f: impl FnOnce(&mut Gate) -> R) -> R;
}

/// A fake API whose state is a cheap handle, serving on its own task until dropped;
/// derefs to the state for the mutating methods. (The Calendar and Sheets fakes.)
#[derive(Debug)]
pub struct Running<S> {
    state: S,
    server: Served,
}

impl<S> std::ops::Deref for Running<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.state
    }
}

impl<S: FakeState> Running<S> {
    /// Serve on 127.0.0.1 on a free port, accepting `Bearer <token>`.
    pub async fn start(token: &str) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), token).await
    }

    /// Serve on `addr` (the local stack picks a fixed port).
    pub async fn start_on(addr: SocketAddr, token: &str) -> std::io::Result<Self> {
        let state = S::with_token(token);
        let server = Served::bind(addr, state.app(), S::NAME).await?;
        Ok(Self { state, server })
    }

    /// The next `n` requests answer `fault` (after any already queued).
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.state.with_gate(|g| g.fail_next(n, fault));
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.with_gate(|g| g.requests())
    }

    pub fn clear_requests(&self) {
        self.state.with_gate(|g| g.clear_requests());
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:<port>`: the base URL for the API's client.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// A handle on the state (e.g. to keep changing it from another task).
    pub fn state(&self) -> S {
        self.state.clone()
    }
}

pub(crate) type Params = Vec<(String, String)>;

pub(crate) fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub(crate) fn flag(params: &Params, name: &str, default: bool) -> bool {
    match param(params, name) {
        Some(v) => v == "true",
        None => default,
    }
}

/// Google's error body: `{"error":{"code","message","errors":[{…}],"status"}}`.
pub(crate) fn google_error(
    code: u16,
    domain: &str,
    reason: &str,
    message: &str,
    status: Option<&str>,
    location: Option<(&str, &str)>,
) -> Response {
    let mut item = json!({"domain": domain, "reason": reason, "message": message});
    if let Some((location_type, location)) = location {
        item["locationType"] = json!(location_type);
        item["location"] = json!(location);
    }
    let mut error = json!({"code": code, "message": message, "errors": [item]});
    if let Some(status) = status {
        error["status"] = json!(status);
    }
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(json!({ "error": error }))).into_response()
}

pub(crate) fn invalid_parameter(name: &str) -> Response {
    google_error(
        400,
        "global",
        "invalid",
        &format!("Invalid Value: {name}"),
        Some("INVALID_ARGUMENT"),
        Some(("parameter", name)),
    )
}

/// Google's 401: the top-level message explains, the `errors[]` item says
/// "Invalid Credentials".
fn unauthorized() -> Response {
    let body = json!({"error": {
        "code": 401,
        "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        "errors": [{
            "message": "Invalid Credentials",
            "domain": "global",
            "reason": "authError",
            "location": "Authorization",
            "locationType": "header",
        }],
        "status": "UNAUTHENTICATED",
    }});
    let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
        ),
    );
    response
}

/// The answer a queued fault gives instead of the work; none for [`Fault::Pass`].
pub(crate) fn fault_response(fault: Fault) -> Option<Response> {
    let response = match fault {
        Fault::RateLimited { retry_after } => {
            let mut response = google_error(
                429,
                "usageLimits",
                "rateLimitExceeded",
                "Rate Limit Exceeded",
                Some("RESOURCE_EXHAUSTED"),
                None,
            );
            if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Fault::ServerError => status_error(500),
        Fault::Status(code) => status_error(code),
        Fault::Gone => google_error(
            410,
            "global",
            "fullSyncRequired",
            "Page token is no longer valid, a full sync is required.",
            None,
            Some(("parameter", "pageToken")),
        ),
        Fault::MalformedJson => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
            r#"{"kind":"drive#changeList","changes":[{"kind":"drive#change","#,
        )
            .into_response(),
        Fault::Raw { status, body } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
            body,
        )
            .into_response(),
        Fault::Pass => return None,
    };
    Some(response)
}

pub(crate) fn status_error(code: u16) -> Response {
    let (domain, reason, message, status) = match code {
        400 => ("global", "badRequest", "Bad Request", "INVALID_ARGUMENT"),
        403 => ("global", "forbidden", "Forbidden", "PERMISSION_DENIED"),
        404 => ("global", "notFound", "Not Found", "NOT_FOUND"),
        429 => (
            "usageLimits",
            "rateLimitExceeded",
            "Rate Limit Exceeded",
            "RESOURCE_EXHAUSTED",
        ),
        503 => ("global", "backendError", "Backend Error", "UNAVAILABLE"),
        504 => (
            "global",
            "backendError",
            "Backend Error",
            "DEADLINE_EXCEEDED",
        ),
        500..=599 => ("global", "backendError", "Backend Error", "INTERNAL"),
        _ => ("global", "unknown", "Unknown Error", "UNKNOWN"),
    };
    google_error(code, domain, reason, message, Some(status), None)
}

/// What every fake Google API does first with a request: accept one bearer token, answer
/// the queued faults, and record the request. Shared by the Drive and Sheets fakes.
#[derive(Debug)]
pub struct Gate {
    token: String,
    faults: VecDeque<Fault>,
    requests: Vec<RecordedRequest>,
}

impl Gate {
    pub(crate) fn new(token: &str) -> Self {
        Self {
            token: token.to_owned(),
            faults: VecDeque::new(),
            requests: Vec::new(),
        }
    }

    /// The next `n` requests answer `fault` (after any already queued).
    pub(crate) fn fail_next(&mut self, n: usize, fault: Fault) {
        self.faults.extend(std::iter::repeat_n(fault, n));
    }

    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.clone()
    }

    pub(crate) fn clear_requests(&mut self) {
        self.requests.clear();
    }

    /// Record the request; the answer instead of the work if a fault is queued or the
    /// token is wrong.
    pub(crate) fn check(
        &mut self,
        method: &str,
        path: &str,
        params: &Params,
        headers: &HeaderMap,
    ) -> Option<Response> {
        let expected = format!("Bearer {}", self.token);
        let authorized = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == expected);
        self.requests.push(RecordedRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query: params.clone(),
            authorized,
        });
        if let Some(response) = self.faults.pop_front().and_then(fault_response) {
            return Some(response);
        }
        (!authorized).then(unauthorized)
    }
}

/// The response, through the `fields` mask if one was given.
pub(crate) fn answer(params: &Params, body: Value) -> Response {
    match param(params, "fields") {
        None => Json(body).into_response(),
        Some(fields) => match FieldMask::parse(fields) {
            Ok(mask) => Json(mask.apply(body)).into_response(),
            Err(e) => google_error(
                400,
                "global",
                "invalidParameter",
                &format!("Invalid field selection {fields}: {e}"),
                Some("INVALID_ARGUMENT"),
                Some(("parameter", "fields")),
            ),
        },
    }
}
