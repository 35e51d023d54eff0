//! Retries without waiting: a sleeper that only records the delays it was asked for,
//! and a Google retrier built on it for the client tests against the fakes.

use super::lock;
use async_trait::async_trait;
use bandsync::backoff::Sleeper;
use bandsync::google::retry::{Retrier, RetryPolicy};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A sleeper that only records the delays it was asked for, and returns at once.
#[derive(Debug, Default)]
pub struct RecordingSleeper {
    delays: Mutex<Vec<Duration>>,
}

impl RecordingSleeper {
    /// Every delay asked for so far, in order.
    pub fn delays(&self) -> Vec<Duration> {
        lock(&self.delays).clone()
    }
}

#[async_trait]
impl Sleeper for RecordingSleeper {
    async fn sleep(&self, delay: Duration) {
        lock(&self.delays).push(delay);
        tokio::task::yield_now().await;
    }
}

/// A retrier for tests against the Google fakes: `max_attempts`, backoff windows from
/// 100 ms, jitter fixed at one half, and sleeps only recorded (the test does not wait).
pub fn recording_retrier(max_attempts: u32) -> (Retrier, Arc<RecordingSleeper>) {
    let sleeper = Arc::new(RecordingSleeper::default());
    let policy = RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(100),
        ..RetryPolicy::default()
    };
    let retrier = Retrier::new(policy)
        .with_sleeper(sleeper.clone())
        .with_random(|| 0.5);
    (retrier, sleeper)
}
