//! A local fake of Google's OAuth2 token endpoint, for tests and (later) the local stack.
//!
//! [`FakeTokenServer::start`] serves `POST /token` on `127.0.0.1:<free port>`; give
//! [`FakeTokenServer::token_uri`] as the credentials' `token_uri`. [`router`] builds the
//! same route on a [`FakeOAuthState`] so it can be mounted on a shared fake server.
//!
//! It accepts (form-encoded, as Google does):
//!
//! - the `refresh_token` grant for a registered client id / secret and one of its
//!   refresh tokens ([`FakeOAuthState::add_client`], [`FakeOAuthState::add_refresh_token`]);
//! - the JWT bearer grant (`urn:ietf:params:oauth:grant-type:jwt-bearer`) for a
//!   registered service account ([`FakeOAuthState::add_service_account`]): the RS256
//!   signature is **verified** with the account's public key (ring,
//!   `RSA_PKCS1_2048_8192_SHA256`), `kid` must be the key's id, `aud` the token URI,
//!   `iat`/`exp` a window of at most an hour around the fake's clock, and `scope` given.
//!
//! It answers `{"access_token","expires_in","token_type":"Bearer","scope"}` with a new
//! token each time ([`FakeOAuthState::set_expires_in`], default 3599 s), and errors
//! shaped as Google's: 400 `{"error":"invalid_grant","error_description":…}` for an
//! unknown or revoked refresh token or a bad assertion, 401 `invalid_client` for a wrong
//! client id or secret, 400 `unsupported_grant_type` / `invalid_request` /
//! `invalid_scope`. Faults can be queued ([`FakeOAuthState::fail_next`]: the next
//! requests answer 500, 503 or 429 whatever they ask). Requests are counted and recorded
//! without their secrets ([`FakeOAuthState::requests`]).
//!
//! The test credentials ([`test_authorized_user_json`], [`test_service_account_json`])
//! use a throwaway RSA key committed under `testdata/` for these tests only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use bandsync::ports::{Clock, SystemClock};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A **throwaway** 2048-bit RSA key (PKCS#8 PEM), generated with `openssl genpkey` for
/// these tests only. It guards nothing; never use it for anything real.
pub const TEST_SERVICE_ACCOUNT_KEY_PEM: &str = include_str!("../testdata/test-service-account.pem");
/// The public half of [`TEST_SERVICE_ACCOUNT_KEY_PEM`], PKCS#1 `RSAPublicKey` DER.
pub const TEST_SERVICE_ACCOUNT_PUBLIC_KEY_DER: &[u8] =
    include_bytes!("../testdata/test-service-account.pub.der");
pub const TEST_SERVICE_ACCOUNT_EMAIL: &str = "bandsync-test@bandsync-test.iam.gserviceaccount.com";
pub const TEST_SERVICE_ACCOUNT_KEY_ID: &str = "0123456789abcdef0123456789abcdef01234567";
pub const TEST_CLIENT_ID: &str = "123456789012-fake.apps.googleusercontent.com";
pub const TEST_CLIENT_SECRET: &str = "GOCSPX-fake-client-secret";
pub const TEST_REFRESH_TOKEN: &str = "1//0fake-refresh-token";
/// The scope granted to [`TEST_REFRESH_TOKEN`].
pub const TEST_REFRESH_SCOPE: &str = "https://www.googleapis.com/auth/drive.readonly";

/// An `authorized_user` file for the test client, pointing at `token_uri`.
pub fn test_authorized_user_json(token_uri: &str) -> String {
    json!({
        "type": "authorized_user",
        "client_id": TEST_CLIENT_ID,
        "client_secret": TEST_CLIENT_SECRET,
        "refresh_token": TEST_REFRESH_TOKEN,
        "token_uri": token_uri,
        "universe_domain": "googleapis.com",
    })
    .to_string()
}

/// A service-account key file as Google hands it out, with the throwaway test key,
/// pointing at `token_uri`.
pub fn test_service_account_json(token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": "bandsync-test",
        "private_key_id": TEST_SERVICE_ACCOUNT_KEY_ID,
        "private_key": TEST_SERVICE_ACCOUNT_KEY_PEM,
        "client_email": TEST_SERVICE_ACCOUNT_EMAIL,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/bandsync-test%40bandsync-test.iam.gserviceaccount.com",
        "universe_domain": "googleapis.com",
    })
    .to_string()
}

/// One token request, without its secrets.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRequest {
    pub grant_type: String,
    /// The `client_id` of a refresh-token grant.
    pub client_id: Option<String>,
    /// The decoded header and claims of a JWT bearer assertion (even a refused one).
    pub jwt_header: Option<Value>,
    pub jwt_claims: Option<Value>,
    /// The status answered.
    pub status: u16,
}

struct ServiceAccountKey {
    key_id: String,
    public_key_der: Vec<u8>,
}

struct OAuthState {
    /// client id -> client secret.
    clients: HashMap<String, String>,
    /// refresh token -> (client id, scope).
    refresh_tokens: HashMap<String, (String, String)>,
    /// client email -> key.
    service_accounts: HashMap<String, ServiceAccountKey>,
    /// The `aud` assertions must carry; `None`: any URI ending in `/token`.
    audience: Option<String>,
    expires_in: u64,
    latency: std::time::Duration,
    faults: VecDeque<u16>,
    requests: Vec<TokenRequest>,
    issued: Vec<String>,
    clock: Arc<dyn Clock>,
}

/// The fake's state, shared by its handler and the test. Cheap to clone.
#[derive(Clone)]
pub struct FakeOAuthState(Arc<Mutex<OAuthState>>);

impl std::fmt::Debug for FakeOAuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeOAuthState").finish_non_exhaustive()
    }
}

impl Default for FakeOAuthState {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeOAuthState {
    /// No clients, no accounts: every grant is refused until some are added.
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(OAuthState {
            clients: HashMap::new(),
            refresh_tokens: HashMap::new(),
            service_accounts: HashMap::new(),
            audience: None,
            expires_in: 3599,
            latency: std::time::Duration::ZERO,
            faults: VecDeque::new(),
            requests: Vec::new(),
            issued: Vec::new(),
            clock: Arc::new(SystemClock),
        })))
    }

    /// With the test client, its refresh token, and the test service account.
    pub fn with_test_accounts() -> Self {
        let state = Self::new();
        state.add_client(TEST_CLIENT_ID, TEST_CLIENT_SECRET);
        state.add_refresh_token(TEST_CLIENT_ID, TEST_REFRESH_TOKEN, TEST_REFRESH_SCOPE);
        state.add_service_account(
            TEST_SERVICE_ACCOUNT_EMAIL,
            TEST_SERVICE_ACCOUNT_KEY_ID,
            TEST_SERVICE_ACCOUNT_PUBLIC_KEY_DER,
        );
        state
    }

    fn lock(&self) -> MutexGuard<'_, OAuthState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn add_client(&self, client_id: &str, client_secret: &str) {
        self.lock()
            .clients
            .insert(client_id.to_owned(), client_secret.to_owned());
    }

    /// A refresh token `client_id` may use, granting `scope`.
    pub fn add_refresh_token(&self, client_id: &str, refresh_token: &str, scope: &str) {
        self.lock().refresh_tokens.insert(
            refresh_token.to_owned(),
            (client_id.to_owned(), scope.to_owned()),
        );
    }

    /// The user revoked the grant: the refresh token now gets `invalid_grant`.
    pub fn revoke(&self, refresh_token: &str) {
        self.lock().refresh_tokens.remove(refresh_token);
    }

    /// A service account whose assertions are checked with `public_key_der` (PKCS#1
    /// `RSAPublicKey` DER) and must name `key_id` as their `kid`.
    pub fn add_service_account(&self, client_email: &str, key_id: &str, public_key_der: &[u8]) {
        self.lock().service_accounts.insert(
            client_email.to_owned(),
            ServiceAccountKey {
                key_id: key_id.to_owned(),
                public_key_der: public_key_der.to_vec(),
            },
        );
    }

    /// The `aud` assertions must carry (by default any URI ending in `/token`;
    /// [`FakeTokenServer::start`] sets its own token URI).
    pub fn set_audience(&self, audience: &str) {
        self.lock().audience = Some(audience.to_owned());
    }

    /// The `expires_in` of the tokens handed out from now on.
    pub fn set_expires_in(&self, seconds: u64) {
        self.lock().expires_in = seconds;
    }

    /// The clock assertions' `iat`/`exp` are checked against (the system clock by
    /// default; tests share their fixed clock with the client).
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        self.lock().clock = clock;
    }

    /// How long each answer takes (none by default): makes concurrent requests overlap.
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.lock().latency = latency;
    }

    /// The next `n` requests answer `status` (500, 503, 429, …) whatever they ask.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.lock().faults.extend(std::iter::repeat_n(status, n));
    }

    /// How many token requests arrived (faulted ones included).
    pub fn request_count(&self) -> usize {
        self.lock().requests.len()
    }

    /// Every token request so far, in order, without secrets.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.lock().requests.clone()
    }

    /// Every access token handed out, in order.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().issued.clone()
    }

    /// Whether `token` is one this fake handed out.
    pub fn is_issued(&self, token: &str) -> bool {
        self.lock().issued.iter().any(|t| t == token)
    }
}

/// `POST /token` on `state`, to serve alone or mount on a shared fake server.
pub fn router(state: FakeOAuthState) -> Router {
    Router::new().route("/token", post(token)).with_state(state)
}

/// An axum router served on a loopback port by a background task, stopped when
/// dropped. (The serving half of a fake; `FakeDrive` could share it too.)
pub struct LoopbackServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LoopbackServer {
    /// Bind `addr` (port 0: a free one) and serve the router `app(bound address)`;
    /// `what` names the fake in the log line if serving stops.
    pub async fn serve(
        addr: SocketAddr,
        what: &'static str,
        app: impl FnOnce(SocketAddr) -> Router,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = app(addr);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, fake = what, "fake server stopped");
            }
        });
        Ok(Self { addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A running fake token endpoint. Stops serving when dropped.
pub struct FakeTokenServer {
    state: FakeOAuthState,
    server: LoopbackServer,
}

impl std::fmt::Debug for FakeTokenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FakeTokenServer({})", self.token_uri())
    }
}

impl FakeTokenServer {
    /// Serve `state` on 127.0.0.1 on a free port; assertions must then carry
    /// [`FakeTokenServer::token_uri`] as their `aud`.
    pub async fn start(state: FakeOAuthState) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), state).await
    }

    /// Serve on `addr` (the local stack picks a fixed port).
    pub async fn start_on(addr: SocketAddr, state: FakeOAuthState) -> std::io::Result<Self> {
        let server = LoopbackServer::serve(addr, "OAuth token endpoint", |addr| {
            state.set_audience(&format!("http://{addr}/token"));
            router(state.clone())
        })
        .await?;
        Ok(Self { state, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:<port>/token`: the `token_uri` for the credentials.
    pub fn token_uri(&self) -> String {
        format!("http://{}/token", self.addr())
    }

    pub fn state(&self) -> &FakeOAuthState {
        &self.state
    }
}

/// A refused request: its status and Google's `{"error","error_description"}`.
struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: String,
}

fn refuse(status: StatusCode, error: &'static str, description: impl Into<String>) -> Refusal {
    Refusal {
        status,
        error,
        description: description.into(),
    }
}

fn invalid_grant(description: impl Into<String>) -> Refusal {
    refuse(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "error_description": self.description});
        (self.status, Json(body)).into_response()
    }
}

/// What a grant was checked to allow: the scope to answer with.
type Granted = Result<String, Refusal>;

async fn token(
    State(state): State<FakeOAuthState>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let latency = state.lock().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut s = state.lock();
    let grant_type = form.get("grant_type").cloned().unwrap_or_default();
    let mut record = TokenRequest {
        grant_type: grant_type.clone(),
        client_id: None,
        jwt_header: None,
        jwt_claims: None,
        status: 200,
    };
    let outcome: Result<String, Response> = if let Some(status) = s.faults.pop_front() {
        Err(fault(status))
    } else {
        let granted = match grant_type.as_str() {
            "refresh_token" => {
                record.client_id = form.get("client_id").cloned();
                refresh_grant(&s, &form)
            }
            bandsync::google::oauth::JWT_BEARER_GRANT => jwt_grant(&s, &form, &mut record),
            "" => Err(refuse(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Invalid grant_type: ",
            )),
            other => Err(refuse(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("Invalid grant_type: {other}"),
            )),
        };
        granted.map_err(IntoResponse::into_response)
    };
    let response = match outcome {
        Ok(scope) => {
            let access_token = format!("ya29.fake-{}", uuid::Uuid::new_v4().simple());
            s.issued.push(access_token.clone());
            Json(json!({
                "access_token": access_token,
                "expires_in": s.expires_in,
                "token_type": "Bearer",
                "scope": scope,
            }))
            .into_response()
        }
        Err(response) => response,
    };
    record.status = response.status().as_u16();
    s.requests.push(record);
    response
}

/// An injected fault: 429 or 5xx with a body like Google's.
fn fault(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (error, description) = if status == StatusCode::TOO_MANY_REQUESTS {
        ("rate_limit_exceeded", "Rate Limit Exceeded")
    } else {
        ("internal_failure", "Backend Error")
    };
    let body = json!({"error": error, "error_description": description});
    (status, Json(body)).into_response()
}

fn param<'a>(form: &'a HashMap<String, String>, name: &str) -> Result<&'a str, Refusal> {
    form.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("Missing required parameter: {name}"),
            )
        })
}

fn refresh_grant(s: &OAuthState, form: &HashMap<String, String>) -> Granted {
    let client_id = param(form, "client_id")?;
    let client_secret = param(form, "client_secret")?;
    let refresh_token = param(form, "refresh_token")?;
    match s.clients.get(client_id) {
        None => {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "The OAuth client was not found.",
            ));
        }
        Some(secret) if secret != client_secret => {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Unauthorized",
            ));
        }
        Some(_) => {}
    }
    match s.refresh_tokens.get(refresh_token) {
        Some((owner, scope)) if owner == client_id => Ok(scope.clone()),
        _ => Err(invalid_grant("Bad Request")),
    }
}

const BAD_TIMES: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";

fn jwt_grant(s: &OAuthState, form: &HashMap<String, String>, record: &mut TokenRequest) -> Granted {
    let assertion = param(form, "assertion")?;
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header_b64, claims_b64, signature_b64] = parts[..] else {
        return Err(invalid_grant("Invalid JWT: not three dot-separated parts"));
    };
    let decode_json = |part: &str| -> Option<Value> {
        let bytes = B64URL.decode(part).ok()?;
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(Value::is_object)
    };
    let (Some(header), Some(claims)) = (decode_json(header_b64), decode_json(claims_b64)) else {
        return Err(invalid_grant(
            "Invalid JWT: header or claims are not base64url JSON",
        ));
    };
    record.jwt_header = Some(header.clone());
    record.jwt_claims = Some(claims.clone());
    if header["alg"] != "RS256" {
        return Err(invalid_grant("Invalid JWT: alg must be RS256"));
    }
    let Some(account) = claims["iss"]
        .as_str()
        .and_then(|iss| s.service_accounts.get(iss))
    else {
        return Err(invalid_grant("Invalid grant: account not found"));
    };
    if header
        .get("kid")
        .is_some_and(|kid| kid != account.key_id.as_str())
    {
        return Err(invalid_grant("Invalid JWT Signature."));
    }
    let signature = B64URL
        .decode(signature_b64)
        .map_err(|_| invalid_grant("Invalid JWT Signature."))?;
    let signing_input = &assertion[..header_b64.len() + 1 + claims_b64.len()];
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &account.public_key_der)
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| invalid_grant("Invalid JWT Signature."))?;
    let aud = claims["aud"].as_str().unwrap_or_default();
    let aud_ok = match &s.audience {
        Some(expected) => aud == expected,
        None => aud.ends_with("/token"),
    };
    if !aud_ok {
        return Err(invalid_grant(format!(
            "Invalid JWT: Failed audience check. The expected value was {}",
            s.audience.as_deref().unwrap_or("a token URI")
        )));
    }
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return Err(invalid_grant(BAD_TIMES));
    };
    let now = s.clock.now().timestamp();
    // Google allows some clock skew; a minute here.
    if exp <= iat || exp - iat > 3600 || iat > now + 60 || exp < now {
        return Err(invalid_grant(BAD_TIMES));
    }
    match claims["scope"].as_str() {
        Some(scope) if !scope.trim().is_empty() => Ok(scope.to_owned()),
        _ => Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        )),
    }
}
