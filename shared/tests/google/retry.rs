//! The retrier's give-up rules, with the sleeps only recorded
//! (`bandsync_testkit::RecordingSleeper`).

use bandsync::google::GoogleError;
use bandsync::google::retry::{Attempt, Retrier, RetryPolicy};
use bandsync_testkit::RecordingSleeper;
use std::sync::Arc;
use std::time::Duration;

/// Five attempts over windows from 100 ms, capped at 1 s (Retry-After up to 10 s).
fn policy() -> RetryPolicy {
    let ms = Duration::from_millis;
    let (base_delay, max_delay, max_retry_after) = (ms(100), ms(1_000), ms(10_000));
    RetryPolicy {
        max_attempts: 5,
        base_delay,
        max_delay,
        max_retry_after,
        ..RetryPolicy::default()
    }
}

fn http(status: u16) -> GoogleError {
    let status = reqwest::StatusCode::from_u16(status).expect("a valid status");
    GoogleError::http(status, Some("backendError".into()), "Backend Error".into())
}

#[tokio::test]
async fn retrier_gives_up_after_max_attempts_with_the_last_error() {
    // GIVEN an operation that always answers 500
    let sleeper = Arc::new(RecordingSleeper::default());
    let retrier = Retrier::new(policy())
        .with_sleeper(sleeper.clone())
        .with_random(|| 1.0);
    let mut attempts = 0;
    // WHEN it runs
    let result: Result<(), _> = retrier
        .run(|_| {
            attempts += 1;
            async {
                Attempt::Retry {
                    error: http(500),
                    retry_after: None,
                }
            }
        })
        .await;
    // THEN it stops after max_attempts with the 500, having slept 4 growing windows
    assert_eq!(result, Err(http(500)));
    assert_eq!(attempts, 5);
    let ms = |v: u64| Duration::from_millis(v);
    assert_eq!(sleeper.delays(), [ms(100), ms(200), ms(400), ms(800)]);
}

#[tokio::test]
async fn retrier_stops_at_once_on_a_permanent_failure() {
    // GIVEN an operation that fails permanently
    let sleeper = Arc::new(RecordingSleeper::default());
    let retrier = Retrier::new(policy()).with_sleeper(sleeper.clone());
    let mut attempts = 0;
    // WHEN it runs
    let result: Result<(), _> = retrier
        .run(|_| {
            attempts += 1;
            async { Attempt::Fail(http(401)) }
        })
        .await;
    // THEN there is one attempt and no sleep
    assert_eq!(result, Err(http(401)));
    assert_eq!(attempts, 1);
    assert!(sleeper.delays().is_empty());
}

#[tokio::test]
async fn retries_stop_when_the_time_budget_is_spent() {
    // GIVEN a budget of 25 s and a server that keeps asking to come back in 10 s
    let sleeper = Arc::new(RecordingSleeper::default());
    let retrier = Retrier::new(RetryPolicy {
        max_attempts: 10,
        max_elapsed: Duration::from_secs(25),
        ..policy()
    })
    .with_sleeper(sleeper.clone());
    // WHEN a call keeps failing
    let mut calls = 0;
    let result: Result<(), GoogleError> = retrier
        .run(|_| {
            calls += 1;
            async {
                Attempt::Retry {
                    error: GoogleError::Transport("busy".into()),
                    retry_after: Some(Duration::from_secs(10)),
                }
            }
        })
        .await;
    // THEN it waited twice (20 s) and gave up rather than wait past 25 s
    assert!(result.is_err());
    assert_eq!(calls, 3);
    assert_eq!(sleeper.delays(), [Duration::from_secs(10); 2]);
}
