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
//! One file per concern: `credentials.rs` (the files and the service-account
//! assertion), `tokens.rs` (the token endpoint, caching and refresh), `cache.rs` (the
//! per-process registry).
//!
//! Nothing here logs or prints a token, a client secret, a refresh token or a key:
//! tracing fields are the band, the grant kind and `expires_in`; `Debug` redacts; error
//! messages come from Google's `error` / `error_description` or name the field at fault.

mod cache;
mod credentials;
mod tokens;

pub use cache::*;
pub use credentials::*;
pub use tokens::*;

use super::auth::AccessTokens;
use super::client::error_chain;
use super::retry::{self, Attempt, Retrier};
use super::sealed::{self, CredentialKey};
use super::{ErrorBody, GoogleError, excerpt};
use crate::model::{BandId, SealedSecret};
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
