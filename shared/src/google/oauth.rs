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
    pub fn assertion(&self, scopes: &[String], now: DateTime<Utc>) -> Result<String, GoogleError> {
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
}
