//! A per-band rate limit for the Google API calls, so one band syncing a huge folder
//! cannot starve the others of the project's quota.
//!
//! [`BandRateLimits`] keeps one token bucket per band (created on first use): it holds
//! at most `burst` tokens, refills at `rate_per_sec`, and each request takes one. A
//! request that finds the bucket empty waits for the next token. The callers of one
//! band wait in a FIFO queue (a fair `tokio::sync::Mutex` held while waiting), so none
//! of them is overtaken for ever; the bands are independent, so a band with a long queue
//! delays nobody else. Time is `tokio::time`, which `start_paused` tests control.
//!
//! [`BandRateLimits::for_band`] gives the band's [`Throttle`] for
//! [`super::client::ApiClient::with_throttle`], which passes it before every attempt.

use super::GoogleError;
use super::client::Throttle;
use crate::model::BandId;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// One token bucket per band, created on first use.
#[derive(Debug)]
pub struct BandRateLimits {
    rate_per_sec: f64,
    burst: u32,
    buckets: Mutex<HashMap<BandId, Arc<TokenBucket>>>,
}

impl BandRateLimits {
    /// `rate_per_sec` requests a second per band in the long run (finite, above zero),
    /// after a burst of up to `burst` (at least 1; 0 is taken as 1) at once.
    pub fn new(rate_per_sec: f64, burst: u32) -> Result<Self, GoogleError> {
        if !rate_per_sec.is_finite() || rate_per_sec <= 0.0 {
            return Err(GoogleError::Config(format!(
                "per-band rate limit: {rate_per_sec} requests/s is not a positive number"
            )));
        }
        Ok(Self {
            rate_per_sec,
            burst: burst.max(1),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// The band's throttle (the same bucket for every call with this band).
    pub fn for_band(&self, band: &BandId) -> Arc<dyn Throttle> {
        self.bucket(band)
    }

    fn bucket(&self, band: &BandId) -> Arc<TokenBucket> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        buckets
            .entry(band.clone())
            .or_insert_with(|| Arc::new(TokenBucket::new(self.rate_per_sec, self.burst)))
            .clone()
    }
}

/// A token bucket whose waiters queue in FIFO order.
#[derive(Debug)]
pub struct TokenBucket {
    rate_per_sec: f64,
    capacity: f64,
    /// Held by the caller at the head of the queue while it waits for its token: tokio's
    /// mutex wakes waiters in the order they came.
    state: tokio::sync::Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilling at `rate_per_sec` (both assumed valid:
    /// [`BandRateLimits::new`] checks them).
    fn new(rate_per_sec: f64, burst: u32) -> Self {
        let capacity = f64::from(burst.max(1));
        Self {
            rate_per_sec,
            capacity,
            state: tokio::sync::Mutex::new(BucketState {
                tokens: capacity,
                updated: Instant::now(),
            }),
        }
    }
}

#[async_trait]
impl Throttle for TokenBucket {
    async fn acquire(&self) {
        let mut state = self.state.lock().await;
        loop {
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(state.updated).as_secs_f64();
            state.tokens = (state.tokens + elapsed * self.rate_per_sec).min(self.capacity);
            state.updated = now;
            if state.tokens >= 1.0 {
                state.tokens -= 1.0;
                return;
            }
            let wait = (1.0 - state.tokens) / self.rate_per_sec;
            // At least a microsecond: a rounding error must not spin.
            let wait = Duration::from_secs_f64(wait).max(Duration::from_micros(1));
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn band(id: &str) -> BandId {
        BandId::parse(id).unwrap()
    }

    /// Spawn `n` acquirers on `throttle`, each queued before the next is spawned; each
    /// reports (its index, when it got through relative to `start`).
    async fn spawn_acquirers(
        throttle: &Arc<dyn Throttle>,
        n: usize,
        start: Instant,
    ) -> Vec<tokio::task::JoinHandle<(usize, Duration)>> {
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let throttle = throttle.clone();
            handles.push(tokio::spawn(async move {
                throttle.acquire().await;
                (i, start.elapsed())
            }));
            // Let it reach the queue before the next one starts.
            tokio::task::yield_now().await;
        }
        handles
    }

    async fn join_all(
        handles: Vec<tokio::task::JoinHandle<(usize, Duration)>>,
    ) -> Vec<(usize, Duration)> {
        let mut out = Vec::with_capacity(handles.len());
        for handle in handles {
            out.push(handle.await.expect("the acquirer finished"));
        }
        out
    }

    fn close(actual: Duration, expected: Duration) -> bool {
        actual.abs_diff(expected) <= Duration::from_millis(1)
    }

    #[tokio::test(start_paused = true)]
    async fn a_flooding_band_does_not_delay_another_band() {
        // GIVEN 10 requests/s per band with a burst of 5
        let limits = BandRateLimits::new(10.0, 5).unwrap();
        let a = limits.for_band(&band("flood"));
        let b = limits.for_band(&band("quiet"));
        let start = Instant::now();
        // WHEN band A queues 100 requests, and then band B makes 3
        let flood = spawn_acquirers(&a, 100, start).await;
        let quiet = join_all(spawn_acquirers(&b, 3, start).await).await;
        // THEN B's 3 go through at once, without waiting for A's queue
        for (i, at) in &quiet {
            assert_eq!(*at, Duration::ZERO, "B's request {i}");
        }
        // AND A's last goes through after (100 - 5) / 10 = 9.5 s
        let flood = join_all(flood).await;
        let last = flood.iter().map(|(_, at)| *at).max().unwrap();
        assert!(close(last, Duration::from_millis(9_500)), "{last:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn one_band_gets_its_burst_then_exactly_the_rate_in_fifo_order() {
        // GIVEN 4 requests/s with a burst of 2
        let limits = BandRateLimits::new(4.0, 2).unwrap();
        let throttle = limits.for_band(&band("solo"));
        let start = Instant::now();
        // WHEN 10 requests queue up
        let done = join_all(spawn_acquirers(&throttle, 10, start).await).await;
        // THEN the first 2 pass at once and then one every 250 ms, in arrival order
        let mut by_time = done.clone();
        by_time.sort_by_key(|(_, at)| *at);
        let order: Vec<usize> = by_time.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, (0..10).collect::<Vec<_>>());
        for (i, at) in &done {
            let expected = Duration::from_millis(250 * (*i as u64).saturating_sub(1));
            assert!(
                close(*at, expected),
                "request {i} at {at:?}, expected {expected:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_refills_while_idle_up_to_the_burst_only() {
        // GIVEN 2 requests/s with a burst of 3, emptied
        let limits = BandRateLimits::new(2.0, 3).unwrap();
        let throttle = limits.for_band(&band("idle"));
        for _ in 0..3 {
            throttle.acquire().await;
        }
        // WHEN the band stays idle for a minute, then makes 4 requests
        tokio::time::advance(Duration::from_secs(60)).await;
        let start = Instant::now();
        let done = join_all(spawn_acquirers(&throttle, 4, start).await).await;
        // THEN 3 pass at once (the burst, not 120 saved tokens) and the 4th waits 500 ms
        let times: Vec<Duration> = done.iter().map(|(_, at)| *at).collect();
        assert_eq!(times[..3], [Duration::ZERO; 3]);
        assert!(close(times[3], Duration::from_millis(500)), "{times:?}");
    }

    #[tokio::test]
    async fn the_same_band_shares_one_bucket() {
        // GIVEN a burst of 1 at a slow rate
        let limits = BandRateLimits::new(0.001, 1).unwrap();
        // WHEN the band's throttle is fetched twice and the first takes the one token
        limits.for_band(&band("same")).acquire().await;
        // THEN the second fetch sees an empty bucket
        let second = limits.for_band(&band("same"));
        let waited = tokio::time::timeout(Duration::from_millis(20), second.acquire()).await;
        assert!(waited.is_err(), "the second throttle had its own bucket");
    }

    #[test]
    fn bad_rates_are_configuration_errors() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let error = BandRateLimits::new(rate, 5).unwrap_err();
            assert!(matches!(error, GoogleError::Config(_)), "{rate}: {error}");
        }
        // AND a burst of 0 is taken as 1, not a bucket that never lets anything through
        let limits = BandRateLimits::new(1.0, 0).unwrap();
        assert_eq!(limits.burst, 1);
    }
}
