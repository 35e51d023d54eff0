//! The one backoff every retry loop uses: exponential windows with full jitter, an
//! optional limit on attempts, a server's `Retry-After` honoured, and the waits taken
//! through a [`Sleeper`] so tests can check every delay without waiting.
//!
//! - retry `n` (1-based) waits a uniform random time in `[0, min(cap, base * 2^(n-1)))`
//!   (full jitter: competing writers and clients spread over the whole window instead
//!   of coming back together);
//! - a `Retry-After` replaces the draw, up to a limit the caller sets (a Lambda
//!   invocation cannot wait for ever).
//!
//! The decisions are pure ([`Backoff::delay`] takes the random draw); [`random_unit`] is
//! the draw production code makes.
//!
//! Not the `backon` crate: its jitter adds a random part on top of the exponential delay
//! (`[d, 2d)`) rather than drawing the whole delay (`[0, d)`), and the loops here do not
//! share one shape (a call that succeeds or fails, a batch whose unprocessed part
//! shrinks, an append that lost a race, a time budget), so all it would give us is the
//! window arithmetic below and a sleep.

use async_trait::async_trait;
use std::time::Duration;

/// How long to wait before each retry, and how many attempts there may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The window of the first retry; it doubles with each retry after it.
    pub base: Duration,
    /// The largest window.
    pub cap: Duration,
    /// Attempts in all, the first one included (at least 1); `None`: until the caller
    /// stops for a reason of its own.
    pub max_attempts: Option<u32>,
}

impl Backoff {
    /// Windows from `base` doubling up to `cap`, with no limit on attempts.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            max_attempts: None,
        }
    }

    /// The same windows, with at most `attempts` attempts in all.
    pub const fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// May attempt `attempt` (1-based), which just failed, be followed by another?
    pub fn may_retry(&self, attempt: u32) -> bool {
        self.max_attempts.is_none_or(|max| attempt < max.max(1))
    }

    /// The window of retry `retry` (1-based): `min(cap, base * 2^(retry-1))`.
    pub fn window(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << exp)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// The wait before retry `retry` for a random draw `unit` in `[0, 1)`: that fraction
    /// of the window. A draw out of range is clamped; a NaN is zero.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.window(retry).mul_f64(unit)
    }

    /// The wait before retry `retry`: the server's `Retry-After` if it gave one (up to
    /// `limit`), else [`Backoff::delay`].
    pub fn delay_or_retry_after(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        limit: Duration,
        unit: f64,
    ) -> Duration {
        match retry_after {
            Some(wait) => wait.min(limit),
            None => self.delay(retry, unit),
        }
    }

    /// [`Backoff::delay`] with a fresh draw.
    pub fn jittered(&self, retry: u32) -> Duration {
        self.delay(retry, random_unit())
    }
}

/// A uniform draw in `[0, 1)` from the standard library's randomly seeded hasher:
/// enough entropy for jitter, no extra dependency.
pub fn random_unit() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let bits = RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Waits between attempts. [`TokioSleeper`] in production; tests use one that records
/// the delays and returns at once (`bandsync-testkit`'s `RecordingSleeper`).
#[async_trait]
pub trait Sleeper: Send + Sync + std::fmt::Debug {
    async fn sleep(&self, delay: Duration);
}

/// `tokio::time::sleep` (which `tokio::time::pause` makes virtual in tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSleeper;

#[async_trait]
impl Sleeper for TokioSleeper {
    async fn sleep(&self, delay: Duration) {
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn the_window_doubles_then_caps() {
        // GIVEN windows from 100 ms capped at 1 s
        let b = Backoff::new(ms(100), ms(1_000));
        // WHEN the windows of retries 1..6 are computed
        let windows: Vec<_> = (1..=6).map(|n| b.window(n)).collect();
        // THEN they double from the base and stop at the cap
        assert_eq!(
            windows,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        // AND a huge retry number neither overflows nor exceeds the cap
        assert_eq!(b.window(u32::MAX), ms(1000));
        assert_eq!(Backoff::new(Duration::MAX, ms(5)).window(3), ms(5));
        // AND retry 0 is treated as the first
        assert_eq!(b.window(0), ms(100));
    }

    #[test]
    fn the_delay_is_full_jitter_over_the_window() {
        let b = Backoff::new(ms(100), ms(1_000));
        // GIVEN draws across [0, 1): THEN the delay is that fraction of the window
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
        assert_eq!(b.delay(3, 0.25), ms(100));
        assert_eq!(b.delay(3, 0.5), ms(200));
        // AND out-of-range or NaN draws are clamped, never panic
        assert_eq!(b.delay(3, 7.0), ms(400));
        assert_eq!(b.delay(3, -1.0), Duration::ZERO);
        assert_eq!(b.delay(3, f64::NAN), Duration::ZERO);
        // AND a real draw stays inside the window
        for _ in 0..100 {
            assert!(b.jittered(2) < ms(200));
        }
    }

    #[test]
    fn retry_after_replaces_the_draw_up_to_the_limit() {
        let b = Backoff::new(ms(100), ms(1_000));
        let limit = Duration::from_secs(10);
        let secs = Duration::from_secs;
        assert_eq!(
            b.delay_or_retry_after(1, Some(secs(3)), limit, 0.9),
            secs(3)
        );
        assert_eq!(
            b.delay_or_retry_after(1, Some(secs(3_600)), limit, 0.9),
            limit
        );
        assert_eq!(b.delay_or_retry_after(2, None, limit, 0.5), ms(100));
    }

    #[test]
    fn attempts_are_limited_only_when_asked() {
        let unlimited = Backoff::new(ms(1), ms(2));
        assert!(unlimited.may_retry(1_000_000));
        let three = unlimited.with_max_attempts(3);
        assert!(three.may_retry(1) && three.may_retry(2));
        assert!(!three.may_retry(3));
        // A limit of 0 still means one attempt
        assert!(!unlimited.with_max_attempts(0).may_retry(1));
    }

    #[test]
    fn random_unit_is_in_range_and_varies() {
        let draws: Vec<f64> = (0..200).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let distinct: std::collections::HashSet<u64> = draws.iter().map(|d| d.to_bits()).collect();
        assert!(distinct.len() > 150, "{} distinct of 200", distinct.len());
    }
}
