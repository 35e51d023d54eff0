//! [`ApiGatewayPusher`]: the [`Pusher`] port on API Gateway's WebSocket management API
//! (`@connections`): PostToConnection, plus GetConnection and DeleteConnection.
//!
//! - A `GoneException` (410) is not an error but the distinct [`PushOutcome::Gone`]
//!   (`None` / `false` for the other calls): the caller forgets the connection.
//! - Throttling (`LimitExceededException`, any 429) and transient failures (5xx, I/O
//!   errors, timeouts) are retried here, with the crate's [`Backoff`] (full jitter), then
//!   reported as an error. The SDK's own retries are switched off for this client so that
//!   [`ApiGatewayPusher::attempts`] is the whole budget: the broadcaster fans out to many
//!   connections at once and must not stall for the SDK's second-long backoffs.
//! - Anything else (403, 413 payload too large, ...) is an error at once, with the
//!   operation, the connection and the endpoint in its message.

use crate::backoff::{Backoff, Sleeper, TokioSleeper};
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
use std::sync::Arc;
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
    /// The first backoff window; retry `n` waits a random time in `[0, d)` with
    /// `d = base_delay * 2^(n-1)` (capped at 2 s).
    pub base_delay: Duration,
    /// Where the waits between attempts are taken.
    sleeper: Arc<dyn Sleeper>,
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
            sleeper: Arc::new(TokioSleeper),
        }
    }

    /// The same pusher with another retry budget.
    pub fn with_retry(mut self, attempts: u32, base_delay: Duration) -> Self {
        self.attempts = attempts;
        self.base_delay = base_delay;
        self
    }

    /// The same pusher, waiting between attempts through `sleeper` (tests record the
    /// waits instead of taking them).
    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// The retry policy of every call.
    fn backoff(&self) -> Backoff {
        Backoff::new(self.base_delay, MAX_DELAY).with_max_attempts(self.attempts)
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
        let backoff = self.backoff();
        let attempts = self.attempts.max(1);
        let mut attempt = 1;
        loop {
            let err = match call().await {
                Ok(v) => return Ok(Some(v)),
                Err(e) => e,
            };
            let why = match classify(&err) {
                Failure::Gone => return Ok(None),
                Failure::Retry(why) if backoff.may_retry(attempt) => {
                    let wait = backoff.jittered(attempt);
                    tracing::debug!(op, connection = %connection, attempt, ?wait, why, "retrying");
                    self.sleeper.sleep(wait).await;
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

    fn pusher() -> ApiGatewayPusher {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-west-1"))
            .build();
        ApiGatewayPusher::new(&sdk, "https://abc.execute-api.eu-west-1.amazonaws.com/prod")
    }

    #[test]
    fn the_default_budget_is_three_attempts_from_50_ms_up_to_2_s() {
        // GIVEN a pusher with the default retry budget
        let backoff = pusher().backoff();
        // THEN windows double from 50 ms and never pass 2 s, over 3 attempts in all
        let ms = Duration::from_millis;
        assert_eq!(backoff.window(1), ms(50));
        assert_eq!(backoff.window(2), ms(100));
        assert_eq!(backoff.window(30), MAX_DELAY);
        assert!(backoff.may_retry(2) && !backoff.may_retry(3));
        // AND another budget is another policy
        let other = pusher().with_retry(5, ms(10)).backoff();
        assert_eq!((other.window(1), other.max_attempts), (ms(10), Some(5)));
    }
}
