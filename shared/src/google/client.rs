//! The HTTP plumbing every Google API client shares: a base URL (Google's, or a local
//! fake's), a bearer token asked of [`AccessTokens`] before each attempt, an optional
//! [`Throttle`] (the per-band rate limit) passed before each attempt, the [`Retrier`]
//! (429 / 5xx / rate-limit 403s retried with backoff, `Retry-After` honoured), and the
//! mapping of failures to [`GoogleError`]: 410 is [`GoogleError::Gone`], other error
//! statuses [`GoogleError::Http`] with Google's reason and message, a body that is not
//! the expected JSON [`GoogleError::Decode`]. Nothing here panics on what a server sends.

use super::auth::AccessTokens;
use super::retry::{self, Attempt, Retrier};
use super::{ErrorBody, GoogleError, excerpt};
use async_trait::async_trait;
use reqwest::header::ACCEPT;
use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Waits for the right to make one request (a rate limit). Passed before every attempt,
/// retries included, so a retry storm spends the same budget as first tries.
#[async_trait]
pub trait Throttle: Send + Sync {
    async fn acquire(&self);
}

/// An API's base URL: http(s), and able to be a base (checked once, by [`Self::parse`]),
/// so path segments can always be appended to it.
#[derive(Clone, Debug)]
struct BaseUrl(Url);

impl BaseUrl {
    /// `base_url` if it is an http(s) URL; `what` names the API in the error.
    fn parse(base_url: &str, what: &str) -> Result<Self, GoogleError> {
        let parsed = Url::parse(base_url)
            .map_err(|e| GoogleError::Config(format!("{what} base URL {base_url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.cannot_be_a_base() {
            return Err(GoogleError::Config(format!(
                "{what} base URL {:?} is not an http(s) URL",
                parsed.as_str()
            )));
        }
        Ok(Self(parsed))
    }

    fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The base with `segments` appended (each percent-encoded as a path segment).
    fn join(&self, segments: &[&str]) -> Url {
        let mut url = self.0.clone();
        // `path_segments_mut` refuses only URLs that cannot be a base, which `parse` does.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }
}

/// A base URL, credentials, a retrier and a throttle. Cheap to clone.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base_url: BaseUrl,
    tokens: Arc<dyn AccessTokens>,
    retrier: Retrier,
    throttle: Option<Arc<dyn Throttle>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base_url", &self.base_url.as_str())
            .field("retrier", &self.retrier)
            .field("throttled", &self.throttle.is_some())
            .finish_non_exhaustive()
    }
}

/// A client of one Google API over the shared plumbing: how each is built and tuned.
pub trait GoogleClient: Sized {
    /// Names the API in configuration errors.
    const API: &'static str;

    /// A client over configured plumbing (base URL, token, retrier, throttle).
    fn from_api(api: ApiClient) -> Self;

    /// The shared plumbing.
    fn api(&self) -> &ApiClient;

    fn api_mut(&mut self) -> &mut ApiClient;

    /// A client for the API at `base_url` (Google's, or a fake's), with the default
    /// [`Retrier`]. `http` is the shared client ([`super::https_client`]).
    fn new(
        http: reqwest::Client,
        base_url: &str,
        tokens: Arc<dyn AccessTokens>,
    ) -> Result<Self, GoogleError> {
        ApiClient::new(http, base_url, tokens, Self::API).map(Self::from_api)
    }

    /// Retry with `retrier` (backoff, attempts, `Retry-After` cap).
    fn with_retrier(mut self, retrier: Retrier) -> Self {
        let api = self.api().clone().with_retrier(retrier);
        *self.api_mut() = api;
        self
    }

    /// Pass `throttle` (the band's rate limit) before every attempt.
    fn with_throttle(mut self, throttle: Arc<dyn Throttle>) -> Self {
        let api = self.api().clone().with_throttle(throttle);
        *self.api_mut() = api;
        self
    }
}

/// A request body for [`ApiClient::post_json`] that sends none.
pub const NO_BODY: Option<&()> = None;

impl ApiClient {
    /// A client for the API at `base_url` (e.g. `https://www.googleapis.com`, or a fake's
    /// URL); `what` names the API in configuration errors. `http` is the shared client
    /// ([`super::https_client`]).
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        tokens: Arc<dyn AccessTokens>,
        what: &str,
    ) -> Result<Self, GoogleError> {
        Ok(Self {
            http,
            base_url: BaseUrl::parse(base_url, what)?,
            tokens,
            retrier: Retrier::default(),
            throttle: None,
        })
    }

    pub fn with_retrier(mut self, retrier: Retrier) -> Self {
        self.retrier = retrier;
        self
    }

    /// Pass `throttle` before every attempt.
    pub fn with_throttle(mut self, throttle: Arc<dyn Throttle>) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// The base URL with `segments` appended (each percent-encoded as a path segment).
    pub fn url(&self, segments: &[&str]) -> Url {
        self.base_url.join(segments)
    }

    /// `GET` a JSON resource. GETs are idempotent: transport failures are retried too.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, GoogleError> {
        self.send_json(Method::GET, segments, query, NO_BODY).await
    }

    /// `POST` a JSON body (or none) and decode the JSON answer. An empty 2xx body (as
    /// `channels.stop` answers) decodes as JSON `null`, so `T = ()` accepts it.
    pub async fn post_json<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<T, GoogleError> {
        self.send_json(Method::POST, segments, query, body).await
    }

    async fn send_json<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<T, GoogleError> {
        let url = self.url(segments);
        let body = match body {
            Some(b) => Some(
                serde_json::to_vec(b)
                    .map_err(|e| GoogleError::Config(format!("encoding a request body: {e}")))?,
            ),
            None => None,
        };
        let (url, body, method) = (&url, body.as_deref(), &method);
        self.retrier
            .run(|attempt| self.attempt::<T>(attempt, method, url, query, body))
            .await
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        attempt: u32,
        method: &Method,
        url: &Url,
        query: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Attempt<T> {
        if let Some(throttle) = &self.throttle {
            throttle.acquire().await;
        }
        let token = match self.tokens.token().await {
            Ok(token) => token,
            Err(e) => return Attempt::Fail(e),
        };
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .query(query)
            .bearer_auth(&token)
            .header(ACCEPT, "application/json");
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        let response = match request.send().await {
            Ok(response) => response,
            // A refused / reset connection or a timeout is retried: every call made
            // through here is idempotent or keyed by a caller-chosen id.
            Err(e) => {
                return Attempt::Retry {
                    error: GoogleError::Transport(error_chain(&e)),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = retry::retry_after_header(response.headers());
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => {
                return Attempt::Retry {
                    error: GoogleError::Transport(format!(
                        "reading the response body: {}",
                        error_chain(&e)
                    )),
                    retry_after: None,
                };
            }
        };
        if status.is_success() {
            let decoded = if body.is_empty() {
                serde_json::from_slice::<T>(b"null")
            } else {
                serde_json::from_slice::<T>(&body)
            };
            return match decoded {
                Ok(value) => Attempt::Done(value),
                Err(e) => Attempt::Fail(GoogleError::Decode(format!(
                    "{e}; body starts {:?}",
                    excerpt(&body, 200)
                ))),
            };
        }
        let parsed = ErrorBody::parse(&body);
        let message = parsed
            .error
            .message
            .clone()
            .unwrap_or_else(|| excerpt(&body, 200));
        if status == reqwest::StatusCode::GONE {
            return Attempt::Fail(GoogleError::Gone { message });
        }
        let reason = parsed.reason().map(str::to_owned);
        // A 401 on the first attempt: the token may have been revoked or expired early.
        // Forget it and try once more with a fresh one; a second 401 is the answer.
        let unauthorized = status == reqwest::StatusCode::UNAUTHORIZED;
        if unauthorized && attempt == 1 {
            self.tokens.rejected(&token).await;
        }
        let retryable = retry::is_retryable(status.as_u16(), reason.as_deref())
            || (unauthorized && attempt == 1);
        let error = GoogleError::http(status, reason, message);
        if retryable {
            Attempt::Retry { error, retry_after }
        } else {
            Attempt::Fail(error)
        }
    }
}

/// An error with its sources (reqwest's Display alone hides the cause).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// int64 fields: Drive sends them as decimal strings; a plain number is accepted too.
pub mod int64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.serialize_str(&v.to_string()),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(u64),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Number(n)) => Ok(Some(n)),
            Some(Raw::Text(t)) => t
                .parse()
                .map(Some)
                .map_err(|_| D::Error::custom(format!("int64 string expected, got {t:?}"))),
        }
    }
}
