//! [`ApiGatewayPusher`]: the [`Pusher`] port on API Gateway's WebSocket management API
//! (`@connections`): PostToConnection, plus GetConnection and DeleteConnection.
//!
//! - A `GoneException` (410) is not an error but the distinct [`PushOutcome::Gone`]
//!   (`None` / `false` for the other calls): the caller forgets the connection.
//! - Throttling (`LimitExceededException`, any 429) and transient failures (5xx, I/O
//!   errors, timeouts) are retried here, with exponential backoff and jitter, then
//!   reported as an error. The SDK's own retries are switched off for this client so that
//!   [`ApiGatewayPusher::attempts`] is the whole budget: the broadcaster fans out to many
//!   connections at once and must not stall for the SDK's second-long backoffs.
//! - Anything else (403, 413 payload too large, ...) is an error at once, with the
//!   operation, the connection and the endpoint in its message.

use crate::model::ConnectionId;
use crate::ports::{PortError, PortResult, PushOutcome, Pusher};
use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::config::retry::RetryConfig;
use aws_sdk_apigatewaymanagement::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use chrono::{DateTime, Utc};
use std::future::Future;
use std::time::Duration;

/// Default tries per call for a throttled or transient answer.
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// Default first backoff; it doubles with each retry.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(50);
/// No single backoff is longer than this.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// The management API of one WebSocket API stage. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiGatewayPusher {
    client: Client,
    endpoint: String,
    /// Tries per call when the answer is throttling or transient (at least 1).
    pub attempts: u32,
    /// The first backoff; retry `n` waits a random time in `[d/2, d]` with
    /// `d = base_delay * 2^(n-1)` (capped at 2 s).
    pub base_delay: Duration,
}

/// How a failed call is handled.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// 410: the connection is gone.
    Gone,
    /// Worth another try (throttled, 5xx, I/O, timeout); says which.
    Retry(&'static str),
    /// An error at once.
    Fatal,
}

fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Failure {
    let status = err.raw_response().map(|r| r.status().as_u16());
    match (err.code(), status) {
        (Some("GoneException"), _) | (None, Some(410)) => Failure::Gone,
        (
            Some(
                "LimitExceededException"
                | "TooManyRequestsException"
                | "ThrottlingException"
                | "Throttling",
            ),
            _,
        )
        | (_, Some(429)) => Failure::Retry("throttled"),
        (_, Some(s)) if s >= 500 => Failure::Retry("server error"),
        _ => match err {
            SdkError::TimeoutError(_) => Failure::Retry("timeout"),
            SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => {
                Failure::Retry("connection failed")
            }
            _ => Failure::Fatal,
        },
    }
}

/// A random duration in `[d/2, d]` for retry `n` (1-based), `d = base * 2^(n-1)`.
fn backoff(base: Duration, retry: u32) -> Duration {
    use std::hash::{BuildHasher, RandomState};
    let d = base
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
        .min(MAX_DELAY);
    let half = d / 2;
    // RandomState is seeded randomly per instance: enough entropy for jitter.
    let r = RandomState::new().hash_one(retry) % 1_000_001;
    half + half.mul_f64(r as f64 / 1_000_000.0)
}

impl ApiGatewayPusher {
    /// A client for the stage at `endpoint`
    /// (`https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`), with the region,
    /// credentials and HTTP client of `sdk`.
    pub fn new(sdk: &aws_config::SdkConfig, endpoint: &str) -> Self {
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            .retry_config(RetryConfig::disabled())
            .build();
        Self {
            client: Client::from_conf(config),
            endpoint: endpoint.to_owned(),
            attempts: DEFAULT_ATTEMPTS,
            base_delay: DEFAULT_BASE_DELAY,
        }
    }

    /// The same pusher with another retry budget.
    pub fn with_retry(mut self, attempts: u32, base_delay: Duration) -> Self {
        self.attempts = attempts;
        self.base_delay = base_delay;
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Run `call` until it succeeds (`Some`), the connection is gone (`None`), it fails
    /// for good, or the attempts are used up (both errors).
    async fn call<T, E, F, Fut>(
        &self,
        op: &str,
        connection: &ConnectionId,
        mut call: F,
    ) -> PortResult<Option<T>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let attempts = self.attempts.max(1);
        let mut attempt = 1;
        loop {
            let err = match call().await {
                Ok(v) => return Ok(Some(v)),
                Err(e) => e,
            };
            let why = match classify(&err) {
                Failure::Gone => return Ok(None),
                Failure::Retry(why) if attempt < attempts => {
                    let wait = backoff(self.base_delay, attempt);
                    tracing::debug!(op, connection = %connection, attempt, ?wait, why, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    continue;
                }
                Failure::Retry(why) => format!(" ({why}, gave up after {attempts} attempts)"),
                Failure::Fatal => String::new(),
            };
            return Err(PortError::Backend(anyhow::anyhow!(
                "{op} to connection {connection} at {}: {}{why}",
                self.endpoint,
                DisplayErrorContext(&err)
            )));
        }
    }

    /// GetConnection: when the connection was opened and from which address, or `None`
    /// when it is gone.
    #[tracing::instrument(skip(self), fields(endpoint = %self.endpoint))]
    pub async fn connection_info(
        &self,
        id: &ConnectionId,
    ) -> PortResult<Option<(DateTime<Utc>, Option<String>)>> {
        let Some(out) = self
            .call("GetConnection", id, || {
                self.client
                    .get_connection()
                    .connection_id(id.as_str())
                    .send()
            })
            .await?
        else {
            return Ok(None);
        };
        let at = out
            .connected_at()
            .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()))
            .ok_or_else(|| {
                PortError::Backend(anyhow::anyhow!(
                    "GetConnection of {id} at {}: the answer has no valid connectedAt",
                    self.endpoint
                ))
            })?;
        let source_ip = out
            .identity()
            .and_then(|i| i.source_ip())
            .map(str::to_owned);
        Ok(Some((at, source_ip)))
    }

    /// DeleteConnection: close it (API Gateway then invokes `$disconnect`). False when it
    /// was already gone.
    #[tracing::instrument(skip(self), fields(endpoint = %self.endpoint))]
    pub async fn disconnect(&self, id: &ConnectionId) -> PortResult<bool> {
        Ok(self
            .call("DeleteConnection", id, || {
                self.client
                    .delete_connection()
                    .connection_id(id.as_str())
                    .send()
            })
            .await?
            .is_some())
    }
}

#[async_trait]
impl Pusher for ApiGatewayPusher {
    #[tracing::instrument(skip(self, data), fields(endpoint = %self.endpoint, bytes = data.len()))]
    async fn post(&self, connection: &ConnectionId, data: &[u8]) -> PortResult<PushOutcome> {
        let sent = self
            .call("PostToConnection", connection, || {
                self.client
                    .post_to_connection()
                    .connection_id(connection.as_str())
                    .data(Blob::new(data))
                    .send()
            })
            .await?;
        Ok(match sent {
            Some(_) => PushOutcome::Delivered,
            None => PushOutcome::Gone,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_within_bounds() {
        let base = Duration::from_millis(50);
        for retry in 1..=4 {
            let d = base * (1 << (retry - 1));
            for _ in 0..50 {
                let wait = backoff(base, retry);
                assert!(wait >= d / 2 && wait <= d, "retry {retry}: {wait:?}");
            }
        }
        assert!(backoff(base, 30) <= MAX_DELAY);
    }

    #[test]
    fn backoff_is_jittered() {
        let waits: std::collections::HashSet<Duration> = (0..20)
            .map(|_| backoff(Duration::from_millis(100), 2))
            .collect();
        assert!(waits.len() > 1, "20 draws gave one value: {waits:?}");
    }
}
