//! Real OAuth2 access tokens for the Google API clients.
//!
//! - [`GoogleCredentials`]: the JSON files Google hands out, parsed as they are: an
//!   OAuth client's `authorized_user` file (a refresh token) or a service account's key
//!   file (an RSA private key), plus the optional `subject` (domain-wide delegation) and
//!   `scopes` a band's stored credentials may add;
//! - [`OAuthTokens`]: an [`AccessTokens`] that gets tokens from the credentials'
//!   `token_uri` — the `refresh_token` grant, or the JWT bearer grant with an RS256
//!   assertion signed with ring — caches each until `expires_in` minus a margin
//!   (5 minutes by default) by an injectable [`Clock`], refreshes single-flight
//!   (concurrent callers wait for the one refresh), and retries 429 / 5xx / transport
//!   failures with the [`Retrier`]. Google's `invalid_grant` (a revoked refresh token, a
//!   deleted key) and `invalid_client` are permanent [`GoogleError::Http`]s;
//! - [`TokenCache`]: a registry `BandId -> Arc<OAuthTokens>` meant to live as long as
//!   the process (a warm Lambda reuses its tokens), replacing a band's entry when its
//!   credentials change (compared by a SHA-256 fingerprint, not the secrets).
//!
//! Nothing here logs or prints a token, a client secret, a refresh token or a key:
//! tracing fields are the band, the grant kind and `expires_in`; `Debug` redacts; error
//! messages come from Google's `error` / `error_description` or name the field at fault.

use super::auth::AccessTokens;
use super::client::error_chain;
use super::retry::{self, Attempt, Retrier};
use super::sealed::{self, CredentialKey, SealedSecret};
use super::{ErrorBody, GoogleError, excerpt};
use crate::model::BandId;
use crate::ports::{Clock, SystemClock};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::header::ACCEPT;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Google's token endpoint, the `token_uri` of an `authorized_user` file without one.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The scopes a service account asks for when its credentials name none: read-only
/// Drive, Calendar and Sheets, what bandsync follows. (An `authorized_user` refresh
/// token carries the scopes its user consented to; scopes given for one are ignored.)
pub const DEFAULT_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/drive.readonly",
    "https://www.googleapis.com/auth/calendar.readonly",
    "https://www.googleapis.com/auth/spreadsheets.readonly",
];

/// How long before its expiry a cached token is refreshed, by default.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// The lifetime of a service-account assertion: Google's maximum, one hour.
const ASSERTION_LIFETIME_SECS: i64 = 3600;

/// The JWT bearer grant type (RFC 7523).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

fn config(message: impl std::fmt::Display) -> GoogleError {
    GoogleError::Config(format!("Google credentials: {message}"))
}

/// A serde_json error without the input it quotes (which may be a secret): its kind
/// and position only.
fn json_error(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected value",
        serde_json::error::Category::Eof => "unexpected end",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

// ---------------------------------------------------------------------------------------
// Credentials

/// A band's Google credentials, from one of the JSON files Google hands out.
#[derive(Clone)]
pub enum GoogleCredentials {
    /// `{"type":"authorized_user","client_id","client_secret","refresh_token"}`.
    AuthorizedUser(AuthorizedUser),
    /// `{"type":"service_account","client_email","private_key_id","private_key",…}`.
    ServiceAccount(ServiceAccount),
}

/// An OAuth client's refresh token for one user.
#[derive(Clone)]
pub struct AuthorizedUser {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    token_uri: String,
}

/// A service account's key, signing its own assertions.
#[derive(Clone)]
pub struct ServiceAccount {
    client_email: String,
    private_key_id: String,
    project_id: Option<String>,
    key: Arc<RsaKeyPair>,
    /// SHA-256 of the PEM: what the fingerprint hashes instead of the key.
    key_digest: [u8; 32],
    token_uri: String,
    /// The user to act as (domain-wide delegation): the JWT's `sub`.
    subject: Option<String>,
    scopes: Vec<String>,
}

/// The fields of both file kinds, all optional so a missing one gets a clear error.
#[derive(Deserialize)]
struct RawCredentials {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    token_uri: Option<String>,
    project_id: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<String>,
    client_email: Option<String>,
    subject: Option<String>,
    scopes: Option<Scopes>,
}

/// `scopes` as a JSON array or one space-separated string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scopes {
    List(Vec<String>),
    Text(String),
}

impl Scopes {
    fn into_vec(self) -> Vec<String> {
        let list = match self {
            Scopes::List(list) => list,
            Scopes::Text(text) => text.split_whitespace().map(str::to_owned).collect(),
        };
        list.into_iter().filter(|s| !s.trim().is_empty()).collect()
    }
}

fn required(value: Option<String>, kind: &str, field: &str) -> Result<String, GoogleError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(config(format!("{kind} file: \"{field}\" is empty"))),
        None => Err(config(format!("{kind} file: \"{field}\" is missing"))),
    }
}

/// HTTPS, or plain HTTP to a loopback address (a local fake): the refresh token, client
/// secret or signed assertion must never travel in clear text over a network.
fn check_token_uri(uri: String) -> Result<String, GoogleError> {
    let loopback = |url: &reqwest::Url| {
        let host = url.host_str().unwrap_or_default();
        let ip = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || ip
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    match reqwest::Url::parse(&uri) {
        Ok(url) if url.scheme() == "https" => Ok(uri),
        Ok(url) if url.scheme() == "http" && loopback(&url) => Ok(uri),
        Ok(_) => Err(config(format!(
            "token_uri {uri:?} must be an https URL (plain http only to a loopback address)"
        ))),
        Err(e) => Err(config(format!("token_uri {uri:?}: {e}"))),
    }
}

/// The DER inside a PEM block, and the block's label.
fn pem_to_der(pem: &str) -> Result<(String, Vec<u8>), GoogleError> {
    // Keys pasted through environment variables often keep `\n` escaped.
    let pem = pem.replace("\\n", "\n");
    let mut lines = pem.lines().map(str::trim).filter(|l| !l.is_empty());
    let label = lines
        .next()
        .and_then(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .ok_or_else(|| config("private_key is not a PEM block (no -----BEGIN line)"))?
        .to_owned();
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    let mut ended = false;
    for line in lines {
        if line == end {
            ended = true;
            break;
        }
        body.push_str(line);
    }
    if !ended {
        return Err(config(format!("private_key: no {end} line")));
    }
    let der = B64
        .decode(body)
        .map_err(|e| config(format!("private_key: the PEM body is not base64 ({e})")))?;
    Ok((label, der))
}

fn parse_private_key(pem: &str) -> Result<RsaKeyPair, GoogleError> {
    let (label, der) = pem_to_der(pem)?;
    let key = match label.as_str() {
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
        other => {
            return Err(config(format!(
                "private_key is a {other:?} PEM block, expected \"PRIVATE KEY\" (PKCS#8 RSA)"
            )));
        }
    };
    key.map_err(|e| {
        config(format!(
            "private_key is not an RSA key we can sign with: {e}"
        ))
    })
}

impl GoogleCredentials {
    /// Parse a credentials file as Google hands it out (`authorized_user` or
    /// `service_account`), with the optional `subject` and `scopes` (an array or a
    /// space-separated string). Anything missing or unknown is a
    /// [`GoogleError::Config`] naming it; no secret is ever quoted.
    pub fn from_json(json: &[u8]) -> Result<Self, GoogleError> {
        let raw: RawCredentials = serde_json::from_slice(json).map_err(|e| {
            config(format!(
                "not a credentials JSON object ({})",
                json_error(&e)
            ))
        })?;
        let scopes = raw.scopes.map(Scopes::into_vec).unwrap_or_default();
        match raw.kind.as_deref() {
            Some("authorized_user") => {
                let kind = "authorized_user";
                Ok(Self::AuthorizedUser(AuthorizedUser {
                    client_id: required(raw.client_id, kind, "client_id")?,
                    client_secret: required(raw.client_secret, kind, "client_secret")?,
                    refresh_token: required(raw.refresh_token, kind, "refresh_token")?,
                    token_uri: check_token_uri(
                        raw.token_uri
                            .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned()),
                    )?,
                }))
            }
            Some("service_account") => {
                let kind = "service_account";
                let client_email = required(raw.client_email, kind, "client_email")?;
                let private_key_id = required(raw.private_key_id, kind, "private_key_id")?;
                let pem = required(raw.private_key, kind, "private_key")?;
                let token_uri = check_token_uri(required(raw.token_uri, kind, "token_uri")?)?;
                let key = parse_private_key(&pem)?;
                Ok(Self::ServiceAccount(ServiceAccount {
                    client_email,
                    private_key_id,
                    project_id: raw.project_id,
                    key: Arc::new(key),
                    key_digest: Sha256::digest(pem.as_bytes()).into(),
                    token_uri,
                    subject: raw.subject.filter(|s| !s.trim().is_empty()),
                    scopes,
                }))
            }
            Some(other) => Err(config(format!(
                "unknown \"type\" {other:?} (expected \"authorized_user\" or \"service_account\")"
            ))),
            None => Err(config(
                "\"type\" is missing (expected \"authorized_user\" or \"service_account\")",
            )),
        }
    }

    /// Act as `subject` (domain-wide delegation; service accounts only, ignored for an
    /// authorized user).
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        if let Self::ServiceAccount(sa) = &mut self {
            sa.subject = Some(subject.into());
        }
        self
    }

    /// Ask for these scopes (service accounts only; see [`DEFAULT_SCOPES`]).
    pub fn with_scopes<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        if let Self::ServiceAccount(sa) = &mut self {
            sa.scopes = scopes.into_iter().map(Into::into).collect();
        }
        self
    }

    /// The grant this uses: `refresh_token` or `jwt_bearer` (for logs).
    pub fn grant_kind(&self) -> &'static str {
        match self {
            Self::AuthorizedUser(_) => "refresh_token",
            Self::ServiceAccount(_) => "jwt_bearer",
        }
    }

    pub fn token_uri(&self) -> &str {
        match self {
            Self::AuthorizedUser(u) => &u.token_uri,
            Self::ServiceAccount(sa) => &sa.token_uri,
        }
    }

    /// The scopes a service account asks for (its own, else [`DEFAULT_SCOPES`]); empty
    /// for an authorized user.
    pub fn scopes(&self) -> Vec<String> {
        match self {
            Self::AuthorizedUser(_) => Vec::new(),
            Self::ServiceAccount(sa) if sa.scopes.is_empty() => {
                DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect()
            }
            Self::ServiceAccount(sa) => sa.scopes.clone(),
        }
    }

    /// A SHA-256 over every field (the private key through its own digest): equal for
    /// the same credentials, different when anything changed. Safe to keep and compare;
    /// not a way back to the secrets.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        match self {
            Self::AuthorizedUser(u) => {
                field(b"authorized_user");
                for part in [
                    &u.client_id,
                    &u.client_secret,
                    &u.refresh_token,
                    &u.token_uri,
                ] {
                    field(part.as_bytes());
                }
            }
            Self::ServiceAccount(sa) => {
                field(b"service_account");
                for part in [&sa.client_email, &sa.private_key_id, &sa.token_uri] {
                    field(part.as_bytes());
                }
                field(&sa.key_digest);
                field(sa.subject.as_deref().unwrap_or("").as_bytes());
                field(self.scopes().join(" ").as_bytes());
            }
        }
        hash.finalize().into()
    }

    /// The form of a token request. For a service account this signs a fresh assertion
    /// issued at `now`.
    fn grant_form(&self, now: DateTime<Utc>) -> Result<Vec<(&'static str, String)>, GoogleError> {
        match self {
            Self::AuthorizedUser(u) => Ok(vec![
                ("grant_type", "refresh_token".to_owned()),
                ("client_id", u.client_id.clone()),
                ("client_secret", u.client_secret.clone()),
                ("refresh_token", u.refresh_token.clone()),
            ]),
            Self::ServiceAccount(sa) => Ok(vec![
                ("grant_type", JWT_BEARER_GRANT.to_owned()),
                ("assertion", sa.assertion(&self.scopes(), now)?),
            ]),
        }
    }
}

impl ServiceAccount {
    /// The RS256 JWT of Google's "OAuth 2.0 for Server to Server Applications": header
    /// `{"alg":"RS256","typ":"JWT","kid":private_key_id}`, claims `iss` (the account),
    /// `scope` (space-separated), `aud` (the token URI), `iat`, `exp` (one hour later),
    /// and `sub` when delegating.
    fn assertion(&self, scopes: &[String], now: DateTime<Utc>) -> Result<String, GoogleError> {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id});
        let iat = now.timestamp();
        let mut claims = serde_json::json!({
            "iss": self.client_email,
            "scope": scopes.join(" "),
            "aud": self.token_uri,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME_SECS,
        });
        if let Some(subject) = &self.subject {
            claims["sub"] = serde_json::json!(subject);
        }
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| config("signing the service-account assertion failed"))?;
        Ok(format!("{signing_input}.{}", B64URL.encode(signature)))
    }
}

/// Names the account and what it is, never a secret.
impl std::fmt::Debug for GoogleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AuthorizedUser(u) => f
                .debug_struct("AuthorizedUser")
                .field("client_id", &u.client_id)
                .field("client_secret", &"<redacted>")
                .field("refresh_token", &"<redacted>")
                .field("token_uri", &u.token_uri)
                .finish(),
            Self::ServiceAccount(sa) => f
                .debug_struct("ServiceAccount")
                .field("client_email", &sa.client_email)
                .field("project_id", &sa.project_id)
                .field("private_key_id", &sa.private_key_id)
                .field("private_key", &"<redacted>")
                .field("token_uri", &sa.token_uri)
                .field("subject", &sa.subject)
                .field("scopes", &sa.scopes)
                .finish(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Access tokens

/// How [`OAuthTokens`] retries, tells time, and how early it refreshes.
#[derive(Clone)]
pub struct OAuthOptions {
    pub retrier: Retrier,
    pub clock: Arc<dyn Clock>,
    /// Refresh this long before `expires_in` runs out (at most half the lifetime).
    pub refresh_margin: Duration,
    /// Send every token request here instead of the credentials' `token_uri` (an
    /// emulator or a proxy; see [`super::endpoints`]).
    pub token_url: Option<String>,
}

impl Default for OAuthOptions {
    fn default() -> Self {
        Self {
            retrier: Retrier::default(),
            clock: Arc::new(SystemClock),
            refresh_margin: DEFAULT_REFRESH_MARGIN,
            token_url: None,
        }
    }
}

impl std::fmt::Debug for OAuthOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthOptions")
            .field("retrier", &self.retrier)
            .field("refresh_margin", &self.refresh_margin)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

impl OAuthOptions {
    pub fn with_retrier(mut self, retrier: Retrier) -> Self {
        self.retrier = retrier;
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }
}

struct CachedToken {
    access_token: String,
    /// When to stop handing it out: expiry minus the margin.
    refresh_at: DateTime<Utc>,
}

/// OAuth2 access tokens from a band's [`GoogleCredentials`], cached and refreshed.
pub struct OAuthTokens {
    http: reqwest::Client,
    credentials: GoogleCredentials,
    options: OAuthOptions,
    band: Option<BandId>,
    /// Held across a refresh: concurrent callers wait for it instead of refreshing too.
    cached: tokio::sync::Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthTokens")
            .field("band", &self.band)
            .field("credentials", &self.credentials)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A token endpoint's success body. No `Debug`: it holds the token.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<i64>,
    token_type: Option<String>,
}

/// Google's lifetime when an answer leaves `expires_in` out (it never does).
const DEFAULT_EXPIRES_IN: i64 = 3600;

impl OAuthTokens {
    /// Tokens from `credentials`, through the shared HTTPS client `http`
    /// ([`super::https_client`]).
    pub fn new(
        http: reqwest::Client,
        credentials: GoogleCredentials,
        options: OAuthOptions,
    ) -> Self {
        Self {
            http,
            credentials,
            options,
            band: None,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// Name the band in the logs.
    pub fn with_band(mut self, band: BandId) -> Self {
        self.band = Some(band);
        self
    }

    pub fn credentials(&self) -> &GoogleCredentials {
        &self.credentials
    }

    /// Forget the cached token: the next [`AccessTokens::token`] asks for a new one.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    /// Forget `rejected` if it is still the cached token (an API answered 401 to it).
    /// Many calls failing with the same token then cause one refresh, not one each.
    pub async fn reject(&self, rejected: &str) {
        let mut cached = self.cached.lock().await;
        let same = cached
            .as_ref()
            .is_some_and(|c| bool::from(c.access_token.as_bytes().ct_eq(rejected.as_bytes())));
        if same {
            *cached = None;
        }
    }

    /// Get a new token now, whatever is cached.
    pub async fn force_refresh(&self) -> Result<String, GoogleError> {
        let mut cached = self.cached.lock().await;
        *cached = None;
        self.refresh(&mut cached).await
    }

    async fn refresh(&self, cached: &mut Option<CachedToken>) -> Result<String, GoogleError> {
        let grant = self.credentials.grant_kind();
        let band = self.band.as_ref().map(BandId::as_str);
        let requested_at = self.options.clock.now();
        let result = async {
            let form = self.credentials.grant_form(requested_at)?;
            let form = &form;
            self.options
                .retrier
                .run(|_attempt| self.attempt(form))
                .await
        }
        .await;
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(band, grant, error = %error, "Google access token refresh failed");
                return Err(error);
            }
        };
        let expires_in = response.expires_in.unwrap_or(DEFAULT_EXPIRES_IN).max(0);
        let margin = i64::try_from(self.options.refresh_margin.as_secs())
            .unwrap_or(i64::MAX)
            .min(expires_in / 2);
        let refresh_at = requested_at + TimeDelta::seconds(expires_in - margin);
        tracing::info!(band, grant, expires_in, "Google access token refreshed");
        let token = response.access_token.clone();
        *cached = Some(CachedToken {
            access_token: response.access_token,
            refresh_at,
        });
        Ok(token)
    }

    async fn attempt(&self, form: &[(&'static str, String)]) -> Attempt<TokenResponse> {
        let request = self
            .http
            .post((self.options.token_url.as_deref()).unwrap_or(self.credentials.token_uri()))
            .header(ACCEPT, "application/json")
            .form(form);
        // A token request changes nothing on Google's side: transport failures are
        // retried like 429 and 5xx.
        let (status, retry_after, body) = match exchange(request).await {
            Ok(answer) => answer,
            Err(error) => {
                return Attempt::Retry {
                    error,
                    retry_after: None,
                };
            }
        };
        if status.is_success() {
            return match decode_token_response(&body) {
                Ok(response) => Attempt::Done(response),
                Err(error) => Attempt::Fail(error),
            };
        }
        let error = token_error(status, &body);
        if retry::is_retryable_status(status.as_u16()) {
            Attempt::Retry { error, retry_after }
        } else {
            Attempt::Fail(error)
        }
    }
}

/// Send `request` and read the whole answer: its status, its `Retry-After` (if any)
/// and its body. Failing to send or to read is a [`GoogleError::Transport`].
async fn exchange(
    request: reqwest::RequestBuilder,
) -> Result<(reqwest::StatusCode, Option<Duration>, Vec<u8>), GoogleError> {
    let response = request
        .send()
        .await
        .map_err(|e| GoogleError::Transport(error_chain(&e)))?;
    let status = response.status();
    let retry_after = retry::retry_after_header(response.headers());
    let body = response.bytes().await.map_err(|e| {
        GoogleError::Transport(format!("reading the token response: {}", error_chain(&e)))
    })?;
    Ok((status, retry_after, body.to_vec()))
}

/// A 2xx token answer, checked. The error never quotes the body (it has the token).
fn decode_token_response(body: &[u8]) -> Result<TokenResponse, GoogleError> {
    let response: TokenResponse = serde_json::from_slice(body).map_err(|e| {
        GoogleError::Decode(format!(
            "token response without a usable access_token / expires_in ({})",
            json_error(&e)
        ))
    })?;
    if response.access_token.is_empty() {
        return Err(GoogleError::Decode(
            "token response: empty access_token".into(),
        ));
    }
    match response.token_type.as_deref() {
        None => {}
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(other) => {
            return Err(GoogleError::Decode(format!(
                "token response: token_type {other:?}, expected Bearer"
            )));
        }
    }
    Ok(response)
}

/// An error answer of the token endpoint: OAuth's `{"error":"invalid_grant",
/// "error_description":…}`, else Google's API error shape, else the status.
fn token_error(status: reqwest::StatusCode, body: &[u8]) -> GoogleError {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
        error_description: Option<String>,
    }
    let (reason, message) = match serde_json::from_slice::<OAuthError>(body) {
        Ok(e) => (Some(e.error), e.error_description),
        Err(_) => {
            let parsed = ErrorBody::parse(body);
            (parsed.reason().map(str::to_owned), parsed.error.message)
        }
    };
    GoogleError::http(
        status,
        reason,
        message.unwrap_or_else(|| excerpt(body, 200)),
    )
}

#[async_trait]
impl AccessTokens for OAuthTokens {
    /// The cached token while it is fresh, else a new one (single-flight).
    async fn token(&self) -> Result<String, GoogleError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && self.options.clock.now() < c.refresh_at
        {
            return Ok(c.access_token.clone());
        }
        self.refresh(&mut cached).await
    }

    async fn rejected(&self, token: &str) {
        self.reject(token).await;
    }
}

// ---------------------------------------------------------------------------------------
// The per-process registry

struct CacheEntry {
    fingerprint: [u8; 32],
    tokens: Arc<OAuthTokens>,
}

/// Every band's [`OAuthTokens`], kept for the life of the process so warm Lambda
/// invocations reuse their cached tokens. A band's entry is replaced when its
/// credentials change.
pub struct TokenCache {
    http: reqwest::Client,
    options: OAuthOptions,
    entries: Mutex<HashMap<BandId, CacheEntry>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("bands", &self.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    pub fn new(http: reqwest::Client, options: OAuthOptions) -> Self {
        Self {
            http,
            options,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The process's cache (built on first use with [`super::https_client`] and the
    /// default options), for code that has nowhere else to keep one.
    pub fn process_wide() -> Result<&'static TokenCache, GoogleError> {
        static CACHE: OnceLock<TokenCache> = OnceLock::new();
        if let Some(cache) = CACHE.get() {
            return Ok(cache);
        }
        let http = super::https_client()?;
        Ok(CACHE.get_or_init(|| TokenCache::new(http, OAuthOptions::default())))
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<BandId, CacheEntry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The band's tokens: the cached ones if its credentials are unchanged, else new
    /// ones for `credentials` (replacing the old entry).
    pub fn tokens(&self, band: &BandId, credentials: GoogleCredentials) -> Arc<OAuthTokens> {
        let fingerprint = credentials.fingerprint();
        let mut entries = self.entries();
        if let Some(entry) = entries.get(band)
            && entry.fingerprint == fingerprint
        {
            return entry.tokens.clone();
        }
        let tokens = Arc::new(
            OAuthTokens::new(self.http.clone(), credentials, self.options.clone())
                .with_band(band.clone()),
        );
        if entries.contains_key(band) {
            tracing::info!(
                band = band.as_str(),
                "Google credentials changed, new token source"
            );
        }
        entries.insert(
            band.clone(),
            CacheEntry {
                fingerprint,
                tokens: tokens.clone(),
            },
        );
        tokens
    }

    /// The band's tokens from its stored credentials, sealed under `key` with
    /// [`sealed::credentials_context`]: opened, parsed, then as [`TokenCache::tokens`].
    pub fn tokens_from_sealed(
        &self,
        band: &BandId,
        credentials: &SealedSecret,
        key: &CredentialKey,
    ) -> Result<Arc<OAuthTokens>, GoogleError> {
        let plain = sealed::open(key, credentials, &sealed::credentials_context(band))
            .map_err(|e| GoogleError::Config(format!("band {band}'s Google credentials: {e}")))?;
        let parsed = GoogleCredentials::from_json(plain.as_bytes())?;
        Ok(self.tokens(band, parsed))
    }

    /// Drop the band's entry (its credentials were removed).
    pub fn remove(&self, band: &BandId) {
        self.entries().remove(band);
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::google::fake_oauth::{
        FakeOAuthState, FakeTokenServer, TEST_CLIENT_ID, TEST_CLIENT_SECRET, TEST_REFRESH_SCOPE,
        TEST_REFRESH_TOKEN, TEST_SERVICE_ACCOUNT_EMAIL, TEST_SERVICE_ACCOUNT_KEY_ID,
        TEST_SERVICE_ACCOUNT_KEY_PEM, test_authorized_user_json, test_service_account_json,
    };
    use crate::google::retry::{RecordingSleeper, RetryPolicy};
    use crate::testing::FixedClock;
    use serde_json::{Value, json};

    /// Every secret of the test credentials (pieces of the key's PEM body included):
    /// none may appear in an error or a Debug.
    fn assert_no_secret(text: &str) {
        let key_pieces = TEST_SERVICE_ACCOUNT_KEY_PEM
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 16)
            .map(|l| &l[..16]);
        for secret in [TEST_CLIENT_SECRET, TEST_REFRESH_TOKEN]
            .into_iter()
            .chain(key_pieces)
        {
            assert!(!text.contains(secret), "{secret:?} shows in {text}");
        }
    }

    /// A fake token server with the test accounts, a fixed clock shared with it, and a
    /// retrier that records its sleeps instead of sleeping.
    struct Setup {
        server: FakeTokenServer,
        clock: Arc<FixedClock>,
        sleeper: Arc<RecordingSleeper>,
    }

    impl Setup {
        async fn start() -> Self {
            let server = FakeTokenServer::start(FakeOAuthState::with_test_accounts())
                .await
                .expect("the fake token server starts");
            let clock = Arc::new(FixedClock::default());
            server.state().set_clock(clock.clone());
            Self {
                server,
                clock,
                sleeper: Arc::new(RecordingSleeper::default()),
            }
        }

        fn fake(&self) -> &FakeOAuthState {
            self.server.state()
        }

        fn options(&self) -> OAuthOptions {
            let policy = RetryPolicy {
                max_attempts: 4,
                ..RetryPolicy::default()
            };
            OAuthOptions::default()
                .with_clock(self.clock.clone())
                .with_retrier(
                    Retrier::new(policy)
                        .with_sleeper(self.sleeper.clone())
                        .with_random(|| 0.5),
                )
        }

        fn tokens(&self, credentials_json: &str) -> OAuthTokens {
            let credentials = GoogleCredentials::from_json(credentials_json.as_bytes())
                .expect("the test credentials parse");
            OAuthTokens::new(http(), credentials, self.options())
        }

        fn user_tokens(&self) -> OAuthTokens {
            self.tokens(&test_authorized_user_json(&self.server.token_uri()))
        }

        fn service_tokens(&self) -> OAuthTokens {
            self.tokens(&test_service_account_json(&self.server.token_uri()))
        }
    }

    /// `error` is Google's `status` / `reason`, came from a single request without any
    /// backoff, and names no secret.
    fn assert_permanent(setup: &Setup, error: &GoogleError, status: u16, reason: &str) {
        assert!(
            matches!(error, GoogleError::Http { status: s, reason: r, .. } if *s == status && r == reason),
            "{error:?}"
        );
        assert_eq!(setup.fake().request_count(), 1, "retried: {error}");
        assert!(setup.sleeper.delays().is_empty());
        assert_no_secret(&error.to_string());
        assert_no_secret(&format!("{error:?}"));
    }

    fn http() -> reqwest::Client {
        crate::google::https_client().expect("the HTTPS client builds")
    }

    fn minutes(m: i64) -> TimeDelta {
        TimeDelta::minutes(m)
    }

    fn parse(value: &Value) -> Result<GoogleCredentials, GoogleError> {
        GoogleCredentials::from_json(value.to_string().as_bytes())
    }

    fn service_account_value() -> Value {
        serde_json::from_str(&test_service_account_json(DEFAULT_TOKEN_URI)).unwrap()
    }

    // -- credentials files ---------------------------------------------------------------

    #[test]
    fn credentials_files_parse_as_google_hands_them_out() {
        // GIVEN an authorized_user file without token_uri
        let user = json!({"type": "authorized_user", "client_id": TEST_CLIENT_ID,
            "client_secret": TEST_CLIENT_SECRET, "refresh_token": TEST_REFRESH_TOKEN});
        // WHEN it is parsed
        let parsed = parse(&user).unwrap();
        // THEN it uses the refresh-token grant against Google's default token URI
        assert_eq!(parsed.grant_kind(), "refresh_token");
        assert_eq!(parsed.token_uri(), DEFAULT_TOKEN_URI);
        assert!(parsed.scopes().is_empty());

        // GIVEN a complete service-account key file (extra fields and all)
        let parsed = parse(&service_account_value()).unwrap();
        // THEN it uses the JWT bearer grant, its token_uri, and the default scopes
        assert_eq!(parsed.grant_kind(), "jwt_bearer");
        assert_eq!(parsed.token_uri(), DEFAULT_TOKEN_URI);
        assert_eq!(parsed.scopes(), DEFAULT_SCOPES);

        // GIVEN the same with a subject and scopes as a space-separated string
        let mut delegated = service_account_value();
        delegated["subject"] = json!("drummer@band.example");
        delegated["scopes"] = json!("https://www.googleapis.com/auth/drive  scope2");
        let parsed = parse(&delegated).unwrap();
        // THEN both are kept, and they change the fingerprint
        assert_eq!(
            parsed.scopes(),
            ["https://www.googleapis.com/auth/drive", "scope2"]
        );
        assert!(format!("{parsed:?}").contains("drummer@band.example"));
        let plain = parse(&service_account_value()).unwrap();
        assert_ne!(parsed.fingerprint(), plain.fingerprint());
        // AND the builders do the same as the fields
        let built = plain
            .with_subject("drummer@band.example")
            .with_scopes(["https://www.googleapis.com/auth/drive", "scope2"]);
        assert_eq!(built.fingerprint(), parsed.fingerprint());
    }

    #[test]
    fn bad_credentials_files_are_clear_config_errors_that_quote_no_secret() {
        let user = json!({"type": "authorized_user", "client_id": TEST_CLIENT_ID,
            "client_secret": TEST_CLIENT_SECRET, "refresh_token": TEST_REFRESH_TOKEN});
        let without = |value: &Value, field: &str| {
            let mut v = value.clone();
            v.as_object_mut().unwrap().remove(field);
            v
        };
        let with = |value: &Value, field: &str, new: Value| {
            let mut v = value.clone();
            v[field] = new;
            v
        };
        let sa = service_account_value();
        let pem_body_broken = TEST_SERVICE_ACCOUNT_KEY_PEM.replacen("MII", "M*I", 1);
        let pem_truncated = TEST_SERVICE_ACCOUNT_KEY_PEM
            .lines()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n");
        let mut pem_bytes_cut: Vec<&str> = TEST_SERVICE_ACCOUNT_KEY_PEM.lines().collect();
        pem_bytes_cut.remove(3);
        let cases: Vec<(Value, &str)> = vec![
            (json!([1, 2]), "not a credentials JSON object"),
            (json!({"client_id": "x"}), "\"type\" is missing"),
            (
                json!({"type": "external_account"}),
                "unknown \"type\" \"external_account\"",
            ),
            (without(&user, "client_id"), "\"client_id\" is missing"),
            (
                without(&user, "client_secret"),
                "\"client_secret\" is missing",
            ),
            (
                without(&user, "refresh_token"),
                "\"refresh_token\" is missing",
            ),
            (
                with(&user, "refresh_token", json!(" ")),
                "\"refresh_token\" is empty",
            ),
            (
                with(&user, "token_uri", json!("ftp://x/token")),
                "must be an https URL",
            ),
            (
                with(&user, "token_uri", json!("http://tokens.internal/token")),
                "must be an https URL",
            ),
            (with(&user, "client_secret", json!(42)), "unexpected value"),
            (without(&sa, "client_email"), "\"client_email\" is missing"),
            (
                without(&sa, "private_key_id"),
                "\"private_key_id\" is missing",
            ),
            (without(&sa, "private_key"), "\"private_key\" is missing"),
            (without(&sa, "token_uri"), "\"token_uri\" is missing"),
            (with(&sa, "private_key", json!("MIIEv…")), "not a PEM block"),
            (
                with(&sa, "private_key", json!(pem_truncated)),
                "no -----END PRIVATE KEY----- line",
            ),
            (
                with(&sa, "private_key", json!(pem_body_broken)),
                "not base64",
            ),
            (
                with(&sa, "private_key", json!(pem_bytes_cut.join("\n"))),
                "not an RSA key",
            ),
            (
                with(
                    &sa,
                    "private_key",
                    json!("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"),
                ),
                "\"CERTIFICATE\" PEM block",
            ),
        ];
        for (value, expected) in cases {
            // WHEN each is parsed
            let error = parse(&value).expect_err(expected);
            // THEN it is a configuration error saying what is wrong, with no secret in it
            assert!(matches!(error, GoogleError::Config(_)), "{error:?}");
            let message = error.to_string();
            assert!(
                message.contains(expected),
                "{message:?} should say {expected:?}"
            );
            assert_no_secret(&message);
        }
        // AND bytes that are not JSON at all
        let error = GoogleCredentials::from_json(b"\xff{not json").unwrap_err();
        assert!(
            error.to_string().contains("syntax error at line 1"),
            "{error}"
        );
    }

    #[test]
    fn a_pem_with_escaped_newlines_still_parses() {
        // GIVEN a key pasted through an environment variable, its newlines left as `\n`
        let mut sa = service_account_value();
        sa["private_key"] = json!(TEST_SERVICE_ACCOUNT_KEY_PEM.replace('\n', "\\n"));
        // THEN it parses to the same key
        let parsed = parse(&sa).unwrap();
        assert_eq!(parsed.grant_kind(), "jwt_bearer");
    }

    #[tokio::test]
    async fn debug_output_never_shows_secrets_or_tokens() {
        // GIVEN both kinds of credentials, token sources that hold a token, and a cache
        let setup = Setup::start().await;
        let user = setup.user_tokens();
        let token = user.token().await.unwrap();
        let service = setup.service_tokens();
        service.token().await.unwrap();
        let cache = TokenCache::new(http(), setup.options());
        cache.tokens(&BandId::parse("band").unwrap(), user.credentials().clone());
        // WHEN they are debug-printed
        let printed = format!(
            "{:?} {:?} {user:?} {service:?} {cache:?}",
            user.credentials(),
            service.credentials()
        );
        // THEN no secret and no access token shows, but the account names do
        assert_no_secret(&printed);
        assert!(!printed.contains(&token), "{printed}");
        assert!(!printed.contains("ya29"), "{printed}");
        assert!(printed.contains(TEST_CLIENT_ID), "{printed}");
        assert!(printed.contains(TEST_SERVICE_ACCOUNT_EMAIL), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }

    // -- refresh-token grant -------------------------------------------------------------

    #[tokio::test]
    async fn refresh_token_grant_is_cached_until_the_margin_before_expiry() {
        // GIVEN tokens from an authorized_user file; the fake gives 1-hour tokens
        let setup = Setup::start().await;
        setup.fake().set_expires_in(3600);
        let tokens = setup.user_tokens();
        // WHEN a token is asked for ten times
        let first = tokens.token().await.unwrap();
        for _ in 0..9 {
            assert_eq!(tokens.token().await.unwrap(), first);
        }
        // THEN one token request was made, the refresh-token grant of the test client,
        // and the token is one the fake issued
        assert_eq!(setup.fake().request_count(), 1);
        let request = &setup.fake().requests()[0];
        assert_eq!(request.grant_type, "refresh_token");
        assert_eq!(request.client_id.as_deref(), Some(TEST_CLIENT_ID));
        assert_eq!(request.status, 200);
        assert!(setup.fake().is_issued(&first));

        // WHEN the clock reaches 54 minutes: still cached (refreshed 5 minutes early)
        setup.clock.advance(minutes(54));
        assert_eq!(tokens.token().await.unwrap(), first);
        assert_eq!(setup.fake().request_count(), 1);
        // WHEN it reaches 55 minutes: a new token
        setup.clock.advance(minutes(1));
        let second = tokens.token().await.unwrap();
        assert_ne!(second, first);
        assert_eq!(setup.fake().request_count(), 2);
        // AND that one is cached in turn
        assert_eq!(tokens.token().await.unwrap(), second);
        assert_eq!(setup.fake().request_count(), 2);
    }

    #[tokio::test]
    async fn a_configured_token_url_replaces_the_credentials_token_uri() {
        // GIVEN credentials naming Google's token endpoint, and a configured one
        let setup = Setup::start().await;
        let credentials =
            GoogleCredentials::from_json(test_authorized_user_json(DEFAULT_TOKEN_URI).as_bytes())
                .unwrap();
        let options = OAuthOptions {
            token_url: Some(setup.server.token_uri()),
            ..setup.options()
        };
        // WHEN a token is asked for
        let tokens = OAuthTokens::new(http(), credentials, options);
        tokens.token().await.unwrap();
        // THEN the configured endpoint answered it
        assert_eq!(setup.fake().request_count(), 1);
    }

    #[tokio::test]
    async fn the_margin_is_configurable_and_at_most_half_a_short_lifetime() {
        // GIVEN a 1-minute refresh margin and 1-hour tokens
        let setup = Setup::start().await;
        setup.fake().set_expires_in(3600);
        let credentials = GoogleCredentials::from_json(
            test_authorized_user_json(&setup.server.token_uri()).as_bytes(),
        )
        .unwrap();
        let options = setup.options().with_refresh_margin(Duration::from_secs(60));
        let tokens = OAuthTokens::new(http(), credentials, options);
        let first = tokens.token().await.unwrap();
        // THEN the token is kept for 58 minutes, and refreshed at 59
        setup.clock.advance(minutes(58));
        assert_eq!(tokens.token().await.unwrap(), first);
        setup.clock.advance(minutes(1));
        assert_ne!(tokens.token().await.unwrap(), first);
        assert_eq!(setup.fake().request_count(), 2);

        // GIVEN tokens living 2 minutes, shorter than the default 5-minute margin
        setup.fake().set_expires_in(120);
        let short = setup.user_tokens();
        let first = short.token().await.unwrap();
        // THEN each is kept for half its life rather than refreshed on every call
        setup.clock.advance(TimeDelta::seconds(59));
        assert_eq!(short.token().await.unwrap(), first);
        setup.clock.advance(TimeDelta::seconds(1));
        assert_ne!(short.token().await.unwrap(), first);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_refresh() {
        // GIVEN tokens with nothing cached, and a token endpoint taking 100 ms to answer
        let setup = Setup::start().await;
        setup.fake().set_latency(Duration::from_millis(100));
        let tokens = Arc::new(setup.user_tokens());
        // WHEN 20 tasks ask for a token at once (released together by a barrier)
        let barrier = Arc::new(tokio::sync::Barrier::new(20));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (tokens, barrier) = (tokens.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    tokens.token().await
                })
            })
            .collect();
        let mut got = Vec::new();
        for task in tasks {
            got.push(task.await.unwrap().unwrap());
        }
        // THEN exactly one token request was made and all got its token
        assert_eq!(setup.fake().request_count(), 1);
        assert!(got.iter().all(|t| *t == got[0]));

        // AND after expiry, 20 concurrent callers again cause one refresh
        setup.clock.advance(minutes(60));
        let again = futures_util::future::join_all((0..20).map(|_| tokens.token())).await;
        assert_eq!(setup.fake().request_count(), 2);
        let again: Vec<String> = again.into_iter().map(Result::unwrap).collect();
        assert!(again.iter().all(|t| *t == again[0] && *t != got[0]));
    }

    #[tokio::test]
    async fn invalid_grant_is_permanent_and_quotes_no_secret() {
        // GIVEN a refresh token the user revoked
        let setup = Setup::start().await;
        setup.fake().revoke(TEST_REFRESH_TOKEN);
        let tokens = setup.user_tokens();
        // WHEN a token is asked for
        let error = tokens.token().await.unwrap_err();
        // THEN it is Google's 400 invalid_grant, not retried, with no secret in it
        assert_eq!(
            error,
            GoogleError::Http {
                status: 400,
                reason: "invalid_grant".into(),
                message: "Bad Request".into()
            }
        );
        assert_eq!(setup.fake().request_count(), 1);
        assert!(setup.sleeper.delays().is_empty());
        assert_no_secret(&error.to_string());
        assert_no_secret(&format!("{error:?}"));
        // AND the next call asks again (a failure is not cached), failing the same way
        assert_eq!(tokens.token().await.unwrap_err(), error);
        assert_eq!(setup.fake().request_count(), 2);
    }

    #[tokio::test]
    async fn a_wrong_client_secret_is_a_permanent_invalid_client() {
        // GIVEN credentials whose client secret is wrong
        let setup = Setup::start().await;
        let json = test_authorized_user_json(&setup.server.token_uri())
            .replace(TEST_CLIENT_SECRET, "GOCSPX-wrong");
        let tokens = setup.tokens(&json);
        // WHEN a token is asked for
        let error = tokens.token().await.unwrap_err();
        // THEN it is the 401 invalid_client, not retried, without either secret
        assert_permanent(&setup, &error, 401, "invalid_client");
        assert!(!error.to_string().contains("GOCSPX"), "{error}");
    }

    #[tokio::test]
    async fn server_errors_and_rate_limits_are_retried_then_succeed() {
        // GIVEN a token endpoint answering 503, 500, then 429, then normally
        let setup = Setup::start().await;
        setup.fake().fail_next(1, 503);
        setup.fake().fail_next(1, 500);
        setup.fake().fail_next(1, 429);
        let tokens = setup.user_tokens();
        // WHEN a token is asked for
        let token = tokens.token().await.unwrap();
        // THEN it came on the fourth request, after three backoffs
        assert!(setup.fake().is_issued(&token));
        let statuses: Vec<u16> = setup.fake().requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [503, 500, 429, 200]);
        assert_eq!(setup.sleeper.delays().len(), 3);
    }

    #[tokio::test]
    async fn retries_stop_after_max_attempts_with_the_last_error() {
        // GIVEN a token endpoint that keeps answering 503
        let setup = Setup::start().await;
        setup.fake().fail_next(10, 503);
        let tokens = setup.user_tokens();
        // WHEN a token is asked for
        let error = tokens.token().await.unwrap_err();
        // THEN the 4 attempts of the policy were made and the 503 is the result
        assert_eq!(error.status(), Some(503));
        assert_eq!(setup.fake().request_count(), 4);
    }

    #[tokio::test]
    async fn an_unreachable_token_endpoint_is_a_retried_transport_error() {
        // GIVEN credentials pointing at a port nobody listens on
        let setup = Setup::start().await;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = format!("http://{}/token", listener.local_addr().unwrap());
        drop(listener);
        let tokens = setup.tokens(&test_authorized_user_json(&dead));
        // WHEN a token is asked for
        let error = tokens.token().await.unwrap_err();
        // THEN it is a transport error, after the retries, naming no secret
        assert!(matches!(error, GoogleError::Transport(_)), "{error:?}");
        assert_eq!(setup.sleeper.delays().len(), 3);
        assert_no_secret(&error.to_string());
    }

    #[tokio::test]
    async fn invalidate_reject_and_force_refresh_get_a_new_token() {
        let setup = Setup::start().await;
        let tokens = setup.user_tokens();
        let first = tokens.token().await.unwrap();
        // WHEN a token other than the cached one is rejected: nothing changes
        tokens.reject("ya29.some-older-token").await;
        assert_eq!(tokens.token().await.unwrap(), first);
        // WHEN the cached one is rejected: the next call gets a new one
        tokens.reject(&first).await;
        let second = tokens.token().await.unwrap();
        assert_ne!(second, first);
        // WHEN invalidated: a new one again
        tokens.invalidate().await;
        let third = tokens.token().await.unwrap();
        assert_ne!(third, second);
        // WHEN forced: a new one, which is then the cached one
        let fourth = tokens.force_refresh().await.unwrap();
        assert_ne!(fourth, third);
        assert_eq!(tokens.token().await.unwrap(), fourth);
        assert_eq!(setup.fake().request_count(), 4);
    }

    // -- service accounts ----------------------------------------------------------------

    #[tokio::test]
    async fn a_service_account_assertion_is_signed_verified_and_accepted() {
        // GIVEN a service-account key file delegating to a user, with one scope
        let setup = Setup::start().await;
        let json = test_service_account_json(&setup.server.token_uri());
        let credentials = GoogleCredentials::from_json(json.as_bytes())
            .unwrap()
            .with_subject("drummer@band.example")
            .with_scopes(["https://www.googleapis.com/auth/drive.readonly"]);
        let tokens = OAuthTokens::new(http(), credentials, setup.options());
        // WHEN a token is asked for
        let token = tokens.token().await.unwrap();
        // THEN the fake verified the RS256 assertion and issued it
        assert!(setup.fake().is_issued(&token));
        let request = &setup.fake().requests()[0];
        assert_eq!(request.grant_type, JWT_BEARER_GRANT);
        assert_eq!(request.status, 200);
        // AND the assertion carries the documented header and claims
        let header = request.jwt_header.as_ref().unwrap();
        assert_eq!(
            *header,
            json!({"alg": "RS256", "typ": "JWT", "kid": TEST_SERVICE_ACCOUNT_KEY_ID})
        );
        let claims = request.jwt_claims.as_ref().unwrap();
        let iat = setup.clock.now().timestamp();
        assert_eq!(
            *claims,
            json!({
                "iss": TEST_SERVICE_ACCOUNT_EMAIL,
                "scope": "https://www.googleapis.com/auth/drive.readonly",
                "aud": setup.server.token_uri(),
                "iat": iat,
                "exp": iat + 3600,
                "sub": "drummer@band.example",
            })
        );
        // AND it is cached like any token
        assert_eq!(tokens.token().await.unwrap(), token);
        assert_eq!(setup.fake().request_count(), 1);
    }

    #[tokio::test]
    async fn default_scopes_are_asked_for_space_separated_without_a_subject() {
        let setup = Setup::start().await;
        setup.service_tokens().token().await.unwrap();
        let claims = setup.fake().requests()[0].jwt_claims.clone().unwrap();
        assert_eq!(claims["scope"], DEFAULT_SCOPES.join(" "));
        assert!(claims.get("sub").is_none(), "{claims}");
    }

    /// POST a jwt-bearer grant with `assertion` straight to the fake.
    async fn post_assertion(setup: &Setup, assertion: &str) -> (u16, Value) {
        let response = http()
            .post(setup.server.token_uri())
            .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", assertion)])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    fn service_account(setup: &Setup) -> ServiceAccount {
        let json = test_service_account_json(&setup.server.token_uri());
        match GoogleCredentials::from_json(json.as_bytes()).unwrap() {
            GoogleCredentials::ServiceAccount(sa) => sa,
            other => panic!("expected a service account, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_fake_refuses_a_tampered_signature_and_accepts_the_genuine_one() {
        // GIVEN a genuine assertion
        let setup = Setup::start().await;
        let sa = service_account(&setup);
        let scopes = vec!["s".to_owned()];
        let genuine = sa.assertion(&scopes, setup.clock.now()).unwrap();
        let (head, signature) = genuine.rsplit_once('.').unwrap();
        // WHEN one byte of its signature is changed
        let mut bytes = B64URL.decode(signature).unwrap();
        bytes[17] ^= 0x01;
        let tampered = format!("{head}.{}", B64URL.encode(&bytes));
        let (status, body) = post_assertion(&setup, &tampered).await;
        // THEN the fake refuses it as Google does
        assert_eq!(status, 400);
        assert_eq!(
            body,
            json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        );
        // WHEN the claims are changed under the genuine signature (another subject)
        let (header, _) = head.split_once('.').unwrap();
        let forged_claims = B64URL.encode(
            json!({"iss": TEST_SERVICE_ACCOUNT_EMAIL, "scope": "s", "aud": setup.server.token_uri(),
                "iat": setup.clock.now().timestamp(), "exp": setup.clock.now().timestamp() + 3600,
                "sub": "ceo@band.example"})
            .to_string(),
        );
        let (status, body) =
            post_assertion(&setup, &format!("{header}.{forged_claims}.{signature}")).await;
        // THEN it is refused too
        assert_eq!(
            (status, body["error_description"].as_str()),
            (400, Some("Invalid JWT Signature."))
        );
        // AND the genuine assertion is accepted
        let (status, body) = post_assertion(&setup, &genuine).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["scope"], "s");
        assert!(body["expires_in"].as_u64().is_some());
    }

    #[tokio::test]
    async fn the_fake_checks_audience_lifetime_issuer_and_key_id() {
        let setup = Setup::start().await;
        let mut sa = service_account(&setup);
        let scopes = vec!["s".to_owned()];
        let now = setup.clock.now();
        let refused = |body: &Value| body["error_description"].as_str().unwrap_or("").to_owned();
        // GIVEN an assertion issued two hours ago (expired)
        let (status, body) =
            post_assertion(&setup, &sa.assertion(&scopes, now - minutes(120)).unwrap()).await;
        assert_eq!(status, 400);
        assert!(refused(&body).contains("short-lived token"), "{body}");
        // GIVEN one issued an hour from now
        let (status, _) =
            post_assertion(&setup, &sa.assertion(&scopes, now + minutes(60)).unwrap()).await;
        assert_eq!(status, 400);
        // GIVEN no scope
        let (status, body) = post_assertion(&setup, &sa.assertion(&[], now).unwrap()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_scope"))
        );
        // GIVEN another audience
        sa.token_uri = "https://oauth2.googleapis.com/token".into();
        let (status, body) = post_assertion(&setup, &sa.assertion(&scopes, now).unwrap()).await;
        assert_eq!(status, 400);
        assert!(refused(&body).contains("audience"), "{body}");
        sa.token_uri = setup.server.token_uri();
        // GIVEN another key id
        sa.private_key_id = "another-key".into();
        let (status, body) = post_assertion(&setup, &sa.assertion(&scopes, now).unwrap()).await;
        assert_eq!(
            (status, refused(&body).as_str()),
            (400, "Invalid JWT Signature.")
        );
        sa.private_key_id = TEST_SERVICE_ACCOUNT_KEY_ID.into();
        // GIVEN an account the fake does not know
        sa.client_email = "stranger@elsewhere.iam.gserviceaccount.com".into();
        let (status, body) = post_assertion(&setup, &sa.assertion(&scopes, now).unwrap()).await;
        assert_eq!(status, 400);
        assert!(refused(&body).contains("account not found"), "{body}");
        // GIVEN garbage
        let (status, _) = post_assertion(&setup, "not.a.jwt").await;
        assert_eq!(status, 400);
        // AND none of these was issued a token
        assert!(setup.fake().issued_tokens().is_empty());
    }

    #[tokio::test]
    async fn a_service_account_the_endpoint_refuses_is_a_permanent_error() {
        // GIVEN the fake checking assertions against a clock two hours ahead
        let setup = Setup::start().await;
        let ahead = Arc::new(FixedClock::new(setup.clock.now() + minutes(120)));
        setup.fake().set_clock(ahead);
        let tokens = setup.service_tokens();
        // WHEN a token is asked for
        let error = tokens.token().await.unwrap_err();
        // THEN the invalid_grant comes back at once, without the assertion or the key
        assert_permanent(&setup, &error, 400, "invalid_grant");
        assert!(!error.to_string().contains("eyJ"), "{error}");
    }

    // -- answers -------------------------------------------------------------------------

    #[test]
    fn token_answers_are_checked_without_quoting_them() {
        // GIVEN a 200 without access_token, with an empty one, or a MAC token type
        let missing = decode_token_response(br#"{"expires_in":3599,"token_type":"Bearer"}"#);
        let empty = decode_token_response(br#"{"access_token":"","expires_in":3599}"#);
        let mac = decode_token_response(br#"{"access_token":"ya29.x","token_type":"mac"}"#);
        let garbage =
            decode_token_response(br#"{"access_token":"ya29.leaked","expires_in":"soon"}"#);
        // THEN each is a decode error, none of which shows the token
        for result in [missing, empty, mac, garbage] {
            let error = result.err().expect("an error");
            assert!(matches!(error, GoogleError::Decode(_)), "{error:?}");
            assert!(!error.to_string().contains("leaked"), "{error}");
        }
        // AND a normal answer decodes (token_type in any case, expires_in optional)
        let Ok(ok) = decode_token_response(br#"{"access_token":"ya29.ok","token_type":"bearer"}"#)
        else {
            panic!("a normal answer does not decode");
        };
        assert_eq!(ok.access_token, "ya29.ok");
        assert_eq!(ok.expires_in, None);
    }

    #[test]
    fn token_errors_take_oauth_then_google_then_the_status() {
        let status = |code| reqwest::StatusCode::from_u16(code).unwrap();
        // GIVEN OAuth's shape
        let error = token_error(status(400), br#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#);
        assert_eq!(
            error,
            GoogleError::Http {
                status: 400,
                reason: "invalid_grant".into(),
                message: "Token has been expired or revoked.".into()
            }
        );
        // GIVEN Google's API error shape
        let error = token_error(status(503), br#"{"error":{"code":503,"message":"The service is currently unavailable.","status":"UNAVAILABLE"}}"#);
        assert_eq!(
            error,
            GoogleError::Http {
                status: 503,
                reason: "UNAVAILABLE".into(),
                message: "The service is currently unavailable.".into()
            }
        );
        // GIVEN an HTML page from a proxy
        let error = token_error(status(502), b"<html>Bad Gateway</html>");
        assert_eq!(
            error,
            GoogleError::Http {
                status: 502,
                reason: "Bad Gateway".into(),
                message: "<html>Bad Gateway</html>".into()
            }
        );
    }

    // -- the per-process cache -----------------------------------------------------------

    #[tokio::test]
    async fn the_token_cache_keeps_one_source_per_band_until_its_credentials_change() {
        let setup = Setup::start().await;
        let cache = TokenCache::new(http(), setup.options());
        let band = BandId::parse("the-beatles").unwrap();
        let other = BandId::parse("the-stones").unwrap();
        let user_json = test_authorized_user_json(&setup.server.token_uri());
        let user = || GoogleCredentials::from_json(user_json.as_bytes()).unwrap();
        // GIVEN a band's tokens, used once
        let first = cache.tokens(&band, user());
        let token = first.token().await.unwrap();
        // WHEN the same credentials come again (a warm invocation)
        let again = cache.tokens(&band, user());
        // THEN it is the same source, with the token still cached
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(again.token().await.unwrap(), token);
        assert_eq!(setup.fake().request_count(), 1);
        // AND another band gets its own
        let others = cache.tokens(&other, user());
        assert!(!Arc::ptr_eq(&first, &others));
        assert_eq!(cache.len(), 2);
        // WHEN the band's credentials change (a new refresh token)
        setup
            .fake()
            .add_refresh_token(TEST_CLIENT_ID, "1//0new-refresh-token", TEST_REFRESH_SCOPE);
        let changed = user_json.replace(TEST_REFRESH_TOKEN, "1//0new-refresh-token");
        let replaced = cache.tokens(
            &band,
            GoogleCredentials::from_json(changed.as_bytes()).unwrap(),
        );
        // THEN the entry is replaced, and a new token fetched with them
        assert!(!Arc::ptr_eq(&first, &replaced));
        assert_ne!(replaced.token().await.unwrap(), token);
        assert!(Arc::ptr_eq(
            &replaced,
            &cache.tokens(
                &band,
                GoogleCredentials::from_json(changed.as_bytes()).unwrap()
            )
        ));
        assert_eq!(cache.len(), 2);
        // AND removing a band forgets it
        cache.remove(&other);
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn the_token_cache_opens_sealed_credentials_for_their_band_only() {
        // GIVEN a band's service-account file sealed under the credentials key
        let setup = Setup::start().await;
        let cache = TokenCache::new(http(), setup.options());
        let key = CredentialKey::generate().unwrap();
        let band = BandId::parse("the-beatles").unwrap();
        let json = test_service_account_json(&setup.server.token_uri());
        let stored =
            sealed::seal(&key, json.as_bytes(), &sealed::credentials_context(&band)).unwrap();
        // WHEN the band's tokens are built from it
        let tokens: Arc<dyn AccessTokens> = cache.tokens_from_sealed(&band, &stored, &key).unwrap();
        // THEN they work
        assert!(setup.fake().is_issued(&tokens.token().await.unwrap()));
        // AND the same sealed value on another band, or under another key, is refused
        // with a configuration error that names the band and shows nothing secret
        let thief = BandId::parse("the-stones").unwrap();
        let error = cache.tokens_from_sealed(&thief, &stored, &key).unwrap_err();
        assert!(
            matches!(&error, GoogleError::Config(m) if m.contains("the-stones") && m.contains("does not open")),
            "{error:?}"
        );
        let other_key = CredentialKey::generate().unwrap();
        assert!(
            cache
                .tokens_from_sealed(&band, &stored, &other_key)
                .is_err()
        );
        assert_eq!(cache.len(), 1);
        // AND sealed garbage is a parse error, not a panic
        let junk = sealed::seal(&key, b"{}", &sealed::credentials_context(&band)).unwrap();
        let error = cache.tokens_from_sealed(&band, &junk, &key).unwrap_err();
        assert!(error.to_string().contains("\"type\" is missing"), "{error}");
    }

    #[test]
    fn the_process_wide_cache_is_one_instance() {
        let a = TokenCache::process_wide().unwrap();
        let b = TokenCache::process_wide().unwrap();
        assert!(std::ptr::eq(a, b));
    }
}
