//! Retries for Google API calls: exponential backoff with full jitter on 429 and 5xx
//! (and on Drive's 403 rate-limit reasons), honouring `Retry-After`.
//!
//! The decisions are pure functions ([`RetryPolicy::backoff`], [`RetryPolicy::delay`],
//! [`parse_retry_after`], [`is_retryable`]) with the random draw and "now" passed in;
//! [`Retrier`] runs an operation with them, sleeping through a [`Sleeper`] and drawing
//! from an injectable random source, so tests can check every delay without waiting.
//! The windows, the jitter and the sleepers are the crate's one [`crate::backoff`]; what
//! is Google's here is which answers to retry, `Retry-After` parsing, and the budget.
//!
//! Rules:
//! - retry `n` (1-based) waits a uniform random time in `[0, min(max_delay,
//!   base_delay * 2^(n-1)))` (full jitter: competing clients spread over the window);
//! - an answer with a `Retry-After` (seconds or HTTP date) waits exactly that long
//!   instead, capped at `max_retry_after` (a Lambda invocation cannot wait for ever);
//! - at most `max_attempts` attempts in all; the last retryable error is returned.

use super::GoogleError;
use crate::backoff::Backoff;
use crate::backoff::{Sleeper, TokioSleeper, random_unit};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How many times and how long to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (at least 1).
    pub max_attempts: u32,
    /// The backoff window of the first retry.
    pub base_delay: Duration,
    /// The largest backoff window.
    pub max_delay: Duration,
    /// The longest `Retry-After` we wait; longer ones are cut to this.
    pub max_retry_after: Duration,
    /// No retry once the call has taken this long (attempts and waits together, or the
    /// waits alone where the sleeper does not really sleep): a call must end well
    /// inside a Lambda invocation.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts; windows 0.5 s, 1 s, 2 s, 4 s, 8 s (at most 15.5 s of backoff in all);
    /// `Retry-After` honoured up to 30 s; no retry that would end past 60 s.
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(32),
            max_retry_after: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The backoff windows: from `base_delay`, doubling up to `max_delay`.
    pub fn windows(&self) -> Backoff {
        Backoff::new(self.base_delay, self.max_delay).with_max_attempts(self.max_attempts)
    }

    /// The backoff before retry `retry` (1-based) for a random draw `unit` in `[0, 1)`:
    /// `unit * min(max_delay, base_delay * 2^(retry-1))`.
    pub fn backoff(&self, retry: u32, unit: f64) -> Duration {
        self.windows().delay(retry, unit)
    }

    /// The wait before retry `retry`: the server's `Retry-After` if it gave one (capped
    /// at `max_retry_after`), else the jittered backoff.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        self.windows()
            .delay_or_retry_after(retry, retry_after, self.max_retry_after, unit)
    }
}

/// Whether an HTTP status is worth retrying on its own: 429 and every 5xx.
pub fn is_retryable_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// Whether an error answer is worth retrying: [`is_retryable_status`], or a 403 whose
/// reason is one of the rate limits Drive documents as "retry with exponential backoff"
/// (`rateLimitExceeded`, `userRateLimitExceeded`).
pub fn is_retryable(status: u16, reason: Option<&str>) -> bool {
    is_retryable_status(status)
        || (status == 403 && matches!(reason, Some("rateLimitExceeded" | "userRateLimitExceeded")))
}

/// The `Retry-After` of a response, if it has a valid one (as of now).
pub fn retry_after_header(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}

/// Parse a `Retry-After` value: delay-seconds (`"120"`) or an HTTP date (`"Wed, 21 Oct
/// 2015 07:28:00 GMT"`, and the two obsolete formats), relative to `now`. A date in the
/// past is a zero wait; anything else unparseable is `None` (fall back to backoff).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long digit strings saturate rather than fail: the cap applies anyway.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What one attempt came to.
#[derive(Debug)]
pub enum Attempt<T> {
    /// Success: stop.
    Done(T),
    /// A transient failure: retry (after `retry_after` if the server said so), unless
    /// the attempts are used up, in which case `error` is the result.
    Retry {
        error: GoogleError,
        retry_after: Option<Duration>,
    },
    /// A permanent failure: stop with it.
    Fail(GoogleError),
}

/// Runs operations under a [`RetryPolicy`], sleeping through a [`Sleeper`] and drawing
/// jitter from a random source; both injectable for tests.
#[derive(Clone)]
pub struct Retrier {
    policy: RetryPolicy,
    sleeper: Arc<dyn Sleeper>,
    random: Arc<dyn Fn() -> f64 + Send + Sync>,
}

impl std::fmt::Debug for Retrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrier")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Default for Retrier {
    fn default() -> Self {
        Self::new(RetryPolicy::default())
    }
}

impl Retrier {
    /// Real sleeps ([`TokioSleeper`]) and real randomness ([`random_unit`]).
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            sleeper: Arc::new(TokioSleeper),
            random: Arc::new(random_unit),
        }
    }

    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// The jitter source: each call returns a draw in `[0, 1)`.
    pub fn with_random(mut self, random: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.random = Arc::new(random);
        self
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Run `op` (given the 1-based attempt number) until it is done, fails permanently,
    /// or has used `max_attempts`.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T, GoogleError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let max = self.policy.max_attempts.max(1);
        let started = std::time::Instant::now();
        let mut waited = Duration::ZERO;
        let mut attempt = 1;
        loop {
            match op(attempt).await {
                Attempt::Done(value) => return Ok(value),
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry { error, .. } if attempt >= max => return Err(error),
                Attempt::Retry { error, retry_after } => {
                    let delay = self.policy.delay(attempt, retry_after, (self.random)());
                    let spent = started.elapsed().max(waited);
                    if spent + delay > self.policy.max_elapsed {
                        tracing::warn!(attempt, error = %error, "Google API call out of time; not retrying");
                        return Err(error);
                    }
                    waited += delay;
                    tracing::warn!(
                        attempt,
                        max_attempts = max,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        retry_after_s = retry_after.map(|d| d.as_secs()),
                        error = %error,
                        "Google API call failed, retrying"
                    );
                    self.sleeper.sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1_000),
            max_retry_after: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(60),
        }
    }

    fn http(status: u16) -> GoogleError {
        GoogleError::Http {
            status,
            reason: "backendError".into(),
            message: "Backend Error".into(),
        }
    }

    #[test]
    fn backoff_window_doubles_then_caps() {
        let p = policy();
        // GIVEN a draw at the top of the range
        // WHEN the delays of retries 1..6 are computed
        let top: Vec<_> = (1..=6).map(|n| p.backoff(n, 1.0)).collect();
        // THEN the window doubles from base_delay and stops at max_delay
        let ms = |v: u64| Duration::from_millis(v);
        assert_eq!(
            top,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        // AND a huge retry number neither overflows nor exceeds the cap
        assert_eq!(p.backoff(u32::MAX, 1.0), ms(1000));
    }

    #[test]
    fn backoff_is_full_jitter_over_the_window() {
        let p = policy();
        // GIVEN draws across [0, 1)
        // THEN the delay is that fraction of the window, from zero up
        assert_eq!(p.backoff(3, 0.0), Duration::ZERO);
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(200));
        assert_eq!(p.backoff(3, 0.25), Duration::from_millis(100));
        // AND out-of-range or NaN draws are clamped, never panic
        assert_eq!(p.backoff(3, 7.0), Duration::from_millis(400));
        assert_eq!(p.backoff(3, -1.0), Duration::ZERO);
        assert_eq!(p.backoff(3, f64::NAN), Duration::ZERO);
    }

    #[test]
    fn retry_after_replaces_backoff_up_to_the_cap() {
        let p = policy();
        // GIVEN a server-provided Retry-After
        // THEN it is the delay, whatever the draw
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3)), 0.9),
            Duration::from_secs(3)
        );
        // AND one beyond max_retry_after is cut to it
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3_600)), 0.9),
            Duration::from_secs(10)
        );
        // AND without one, the jittered backoff applies
        assert_eq!(p.delay(2, None, 0.5), Duration::from_millis(100));
    }

    #[test]
    fn parses_retry_after_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_400); // 07:26:40
        // GIVEN delay-seconds
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        // GIVEN an IMF-fixdate 80 s after now, and the obsolete RFC 850 / asctime forms
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(80))
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now),
            Some(Duration::from_secs(80))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:00 2015", now),
            Some(Duration::from_secs(80))
        );
        // GIVEN a date in the past: no wait
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        // GIVEN garbage: no value (fall back to backoff)
        for bad in ["", "-5", "1.5", "soon", "Wed, 99 Oct 2015 07:28:00 GMT"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn retryable_statuses() {
        for s in [429, 500, 502, 503, 504] {
            assert!(is_retryable(s, None), "{s}");
        }
        for s in [200, 400, 401, 404, 410] {
            assert!(!is_retryable(s, None), "{s}");
        }
        // Drive's 403 rate limits are retried; other 403s (permissions) are not
        assert!(is_retryable(403, Some("userRateLimitExceeded")));
        assert!(is_retryable(403, Some("rateLimitExceeded")));
        assert!(!is_retryable(403, Some("insufficientFilePermissions")));
        assert!(!is_retryable(403, None));
    }

    #[tokio::test(start_paused = true)]
    async fn retrier_sleeps_the_computed_delays_then_succeeds() {
        // GIVEN an operation failing twice with 503 (one with Retry-After: 2), then ok,
        // a real tokio sleeper on paused time, and a fixed jitter draw of 0.5
        let retrier = Retrier::new(policy()).with_random(|| 0.5);
        let calls = Mutex::new(Vec::new());
        let started = tokio::time::Instant::now();
        // WHEN it runs
        let result = retrier
            .run(|attempt| {
                calls
                    .lock()
                    .unwrap()
                    .push(tokio::time::Instant::now() - started);
                async move {
                    match attempt {
                        1 => Attempt::Retry {
                            error: http(503),
                            retry_after: None,
                        },
                        2 => Attempt::Retry {
                            error: http(503),
                            retry_after: Some(Duration::from_secs(2)),
                        },
                        _ => Attempt::Done(attempt),
                    }
                }
            })
            .await;
        // THEN it succeeds on the third attempt, after 50 ms (half of the first 100 ms
        // window) and then exactly the 2 s the server asked for
        assert_eq!(result, Ok(3));
        let calls = calls.into_inner().unwrap();
        assert_eq!(
            calls,
            [
                Duration::ZERO,
                Duration::from_millis(50),
                Duration::from_millis(2_050)
            ]
        );
    }
}
