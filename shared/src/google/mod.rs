//! Google APIs: the HTTP clients the Google sources (issue 4) are built on.
//!
//! - [`retry`]: exponential backoff with full jitter on 429 / 5xx, honouring
//!   `Retry-After`, with the pure delay computations apart from the sleeping;
//! - [`auth`]: where access tokens come from ([`auth::AccessTokens`]), and a static
//!   token for tests and the local stack;
//! - [`oauth`]: real OAuth2 access tokens from a band's Google credentials (a refresh
//!   token or a service-account key), cached and refreshed, and the per-process
//!   [`oauth::TokenCache`] of every band's;
//! - [`sealed`]: a band's Google credentials encrypted at rest (AES-256-GCM, bound
//!   to the band);
//! - [`ratelimit`]: a token bucket per band, so one band cannot starve the others;
//! - [`drive`]: a Drive v3 client (`changes.getStartPageToken`, `changes.list`,
//!   `files.list` by parent folder);
//! - [`sheets`]: a Sheets v4 client (`spreadsheets.values.get`, formatted rows);
//! - [`calendar`]: a Calendar v3 client (`events.list`, full or from a sync token);
//! - [`ports`]: one trait per API with the calls the sync engines make (Drive, Sheets,
//!   Calendar), which the clients implement;
//! - [`watch`]: `*.watch` and `channels.stop`; [`apis`]: the per-band clients;
//! - [`endpoints`]: where the APIs and the token endpoint are (Google, an emulator, a proxy).
//!
//! Base URLs are configurable so tests and the local stack can point the clients at the
//! fakes (the `bandsync-google-fake` crate, which no Lambda links). Every client shares one `reqwest::Client` built by [`https_client`]: rustls with
//! ring and the OS root store, the same TLS stack as the AWS SDK clients.

pub mod apis;
pub mod auth;
pub mod calendar;
pub mod client;
pub mod drive;
pub mod endpoints;
pub mod oauth;
pub mod ports;
pub mod ratelimit;
pub mod retry;
pub mod sealed;
pub mod sheets;
pub mod watch;

use std::time::Duration;

/// What a call to a Google API can fail with.
///
/// Never carries an access token: messages come from Google's error body or from the
/// transport, and request URLs hold no credentials (the token travels in a header).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoogleError {
    /// Google answered with an error status (after the retries, for retryable ones).
    /// `reason` is the first `error.errors[].reason` (e.g. `rateLimitExceeded`,
    /// `authError`), else `error.status`, else the HTTP reason phrase.
    #[error("Google API answered HTTP {status} ({reason}): {message}")]
    Http {
        status: u16,
        reason: String,
        message: String,
    },
    /// 410 Gone: the page / sync token is no longer valid; the caller starts over
    /// (a full sync).
    #[error("Google API answered 410 Gone: {message}")]
    Gone { message: String },
    /// The request did not complete: connection refused or reset, timeout, TLS.
    #[error("Google API transport error: {0}")]
    Transport(String),
    /// A 2xx answer whose body is not the JSON we asked for.
    #[error("could not decode Google API response: {0}")]
    Decode(String),
    /// A client configured wrongly (e.g. a base URL that is not http(s)).
    #[error("Google API client configuration: {0}")]
    Config(String),
}

impl GoogleError {
    /// An error status, with Google's reason if it gave one (else the status's reason
    /// phrase).
    pub fn http(status: reqwest::StatusCode, reason: Option<String>, message: String) -> Self {
        GoogleError::Http {
            status: status.as_u16(),
            reason: reason.unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("unknown status")
                    .to_owned()
            }),
            message,
        }
    }

    /// Will asking again not help? A configuration problem (no or bad credentials), or
    /// an answer that will not change: 400, 401 (after a fresh token), 404, or a 403
    /// that is not a rate limit. Rate limits, 5xx, transport and decode errors are
    /// worth retrying.
    pub fn is_permanent(&self) -> bool {
        match self {
            GoogleError::Config(_) => true,
            GoogleError::Http { status, reason, .. } => {
                matches!(status, 400 | 401 | 404)
                    || (*status == 403 && !retry::is_retryable(403, Some(reason)))
            }
            _ => false,
        }
    }

    /// The HTTP status Google answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            GoogleError::Http { status, .. } => Some(*status),
            GoogleError::Gone { .. } => Some(410),
            _ => None,
        }
    }
}

/// Google's JSON error body: `{"error":{"code":…,"message":…,"errors":[{"domain":…,
/// "reason":…,"message":…}],"status":…}}`. Every field optional: a proxy or an outage
/// may answer with something else, which must not stop us from reporting the status.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ErrorDetail {
    pub code: Option<u16>,
    pub message: Option<String>,
    pub status: Option<String>,
    #[serde(default)]
    pub errors: Vec<ErrorItem>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ErrorItem {
    pub domain: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl ErrorBody {
    /// Parse an error body leniently: anything that is not Google's shape gives the
    /// default (all fields empty).
    pub fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// The first `errors[].reason`, else `status`.
    pub fn reason(&self) -> Option<&str> {
        self.error
            .errors
            .iter()
            .find_map(|e| e.reason.as_deref())
            .or(self.error.status.as_deref())
    }
}

/// The first `max` characters of a response body, for error messages (lossy UTF-8).
pub(crate) fn excerpt(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(max).collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Default timeouts of [`https_client`]: Google answers list calls in well under a
/// second; a stuck connection must not eat a Lambda invocation.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The HTTPS client every Google API client shares (connection pool included): rustls
/// with ring and the OS root store, HTTP/1.1, JSON. Build it once per process (per
/// Lambda cold start) and clone it.
pub fn https_client() -> Result<reqwest::Client, GoogleError> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("bandsync/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| GoogleError::Config(format!("building the HTTPS client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_client_builds_with_ring_and_native_roots() {
        // GIVEN only rustls with ring in the build (no aws-lc, no native-tls)
        // WHEN the shared client is built
        // THEN it builds: no crypto provider had to be installed by hand
        https_client().expect("the HTTPS client builds");
    }

    #[test]
    fn error_body_reason_prefers_errors_then_status() {
        // GIVEN Google's documented 429 body
        let body = br#"{"error":{"code":429,"message":"Rate Limit Exceeded","errors":[{"domain":"usageLimits","reason":"rateLimitExceeded","message":"Rate Limit Exceeded"}],"status":"RESOURCE_EXHAUSTED"}}"#;
        // WHEN it is parsed
        let parsed = ErrorBody::parse(body);
        // THEN the reason is the first errors[].reason and the message is kept
        assert_eq!(parsed.reason(), Some("rateLimitExceeded"));
        assert_eq!(parsed.error.message.as_deref(), Some("Rate Limit Exceeded"));
        assert_eq!(parsed.error.code, Some(429));

        // AND a body with only a status falls back to it; garbage gives nothing
        let only_status = ErrorBody::parse(br#"{"error":{"code":503,"status":"UNAVAILABLE"}}"#);
        assert_eq!(only_status.reason(), Some("UNAVAILABLE"));
        assert_eq!(ErrorBody::parse(b"<html>bad gateway</html>").reason(), None);
        assert_eq!(ErrorBody::parse(b"[1,2]").reason(), None);
    }

    #[test]
    fn permanent_errors_are_config_400_401_404_and_403_but_not_rate_limits() {
        let http = |status, reason: &str| GoogleError::Http {
            status,
            reason: reason.into(),
            message: String::new(),
        };
        for permanent in [
            http(404, "NOT_FOUND"),
            http(403, "PERMISSION_DENIED"),
            http(400, "INVALID_ARGUMENT"),
            http(401, "authError"),
            GoogleError::Config("no credentials".into()),
        ] {
            assert!(permanent.is_permanent(), "{permanent:?}");
        }
        for passing in [
            http(403, "rateLimitExceeded"),
            http(403, "userRateLimitExceeded"),
            http(429, "RESOURCE_EXHAUSTED"),
            http(503, "UNAVAILABLE"),
            GoogleError::Gone {
                message: String::new(),
            },
            GoogleError::Transport("reset".into()),
        ] {
            assert!(!passing.is_permanent(), "{passing:?}");
        }
    }

    #[test]
    fn excerpt_truncates_on_char_boundaries() {
        assert_eq!(excerpt(b"short", 10), "short");
        assert_eq!(excerpt("ééééé".as_bytes(), 2), "éé…");
        assert_eq!(excerpt(&[0xff, b'a'], 10), "\u{fffd}a");
    }
}
