//! Running SQS batches: one function per message, partial batch failure reported back.
//!
//! Our queues are FIFO, so the first failure stops the batch: that message and every one
//! after it are reported failed and come back in order; the ones before are done.
//!
//! A message whose body cannot be parsed is different: no retry can ever handle it, and
//! putting it back would hold up its whole group (one channel or one source) for five
//! visibility timeouts before the redrive moves it on. So it is logged in full at error
//! level (the log keeps it), counted in the `PoisonMessages` metric (alarmed), and
//! acknowledged. We only ever send bodies we serialised ourselves, so this is a bug
//! detector, not a path real traffic takes.
//!
//! A [`Budget`] stops the batch before the invocation's deadline: messages not started
//! are reported failed (they come back), instead of the whole batch timing out and
//! every message in it being retried.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use serde::de::DeserializeOwned;
use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, SystemTime};
use tracing::Instrument;

/// When to stop starting messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    stop_at: Option<SystemTime>,
}

impl Budget {
    /// No deadline (the local stack's pollers, tests).
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// Stop `reserve` before `deadline` (what one message may take at most).
    pub fn until(deadline: Option<SystemTime>, reserve: Duration) -> Self {
        Self {
            stop_at: deadline.map(|d| d.checked_sub(reserve).unwrap_or(d)),
        }
    }

    fn exhausted(&self) -> bool {
        self.stop_at.is_some_and(|t| SystemTime::now() >= t)
    }
}

pub async fn run_fifo_batch<T, F, Fut, E>(
    event: SqsEvent,
    budget: Budget,
    mut handle: F,
) -> SqsBatchResponse
where
    T: DeserializeOwned,
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut failed: Vec<String> = Vec::new();
    let mut stopped = false;
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        if !stopped && budget.exhausted() {
            tracing::warn!(message_id = %id, "the invocation's time is nearly up; the rest of the batch returns to the queue");
            stopped = true;
        }
        if stopped {
            failed.push(id);
            continue;
        }
        let body: T = match parse_body(&message) {
            Ok(body) => body,
            Err(e) => {
                let raw = message.body.as_deref().unwrap_or_default();
                let shown: String = raw.chars().take(64 * 1024).collect();
                tracing::error!(message_id = %id, error = %e, body = %shown, "poison message acknowledged; its body is in this log line");
                crate::transport::metrics::emit(
                    &[("Queue", "any")],
                    &[(
                        "PoisonMessages",
                        1.0,
                        crate::transport::metrics::Unit::Count,
                    )],
                );
                continue;
            }
        };
        let span = tracing::info_span!("sqs_message", message_id = %id);
        if let Err(e) = handle(body).instrument(span).await {
            tracing::warn!(message_id = %id, error = %e, "message failed; it and the rest of the batch return to the queue");
            failed.push(id);
            stopped = true;
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    response
}

/// The body of a message parsed as JSON of type `T`.
fn parse_body<T: DeserializeOwned>(message: &SqsMessage) -> anyhow::Result<T> {
    let body = message
        .body
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("message has no body"))?;
    serde_json::from_str(body).map_err(|e| {
        anyhow::anyhow!(
            "message body is not a valid {}: {e}",
            std::any::type_name::<T>()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ids: &[&str]) -> SqsEvent {
        let mut e = SqsEvent::default();
        e.records = ids
            .iter()
            .map(|id| {
                let mut m = SqsMessage::default();
                m.message_id = Some((*id).into());
                // Valid JSON strings, except an id that says it is not.
                m.body = Some(if *id == "not-json" {
                    "{".into()
                } else {
                    format!("{id:?}")
                });
                m
            })
            .collect();
        e
    }

    #[tokio::test]
    async fn stops_at_first_failure_and_reports_the_rest() {
        let mut seen = Vec::new();
        let r = run_fifo_batch(
            event(&["a", "b", "c", "d"]),
            Budget::unlimited(),
            |body: String| {
                seen.push(body.clone());
                async move { if body == "b" { Err("boom") } else { Ok(()) } }
            },
        )
        .await;
        assert_eq!(failed(&r), ["b", "c", "d"]);
        assert_eq!(seen, ["a", "b"], "nothing after the failure is handled");
    }

    fn failed(r: &SqsBatchResponse) -> Vec<&str> {
        r.batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect()
    }

    #[tokio::test]
    async fn a_spent_budget_returns_the_unstarted_messages() {
        let mut seen = Vec::new();
        let past = Budget::until(Some(SystemTime::now()), Duration::from_secs(1));
        let r = run_fifo_batch(event(&["a", "b"]), past, |body: String| {
            seen.push(body);
            async { Ok::<(), String>(()) }
        })
        .await;
        assert_eq!(failed(&r), ["a", "b"]);
        assert!(seen.is_empty(), "nothing is started after the deadline");
        let later = Budget::until(
            Some(SystemTime::now() + Duration::from_secs(60)),
            Duration::from_secs(1),
        );
        assert!(
            failed(
                &run_fifo_batch(event(&["a"]), later, |_: String| async {
                    Ok::<(), String>(())
                })
                .await
            )
            .is_empty()
        );
    }

    #[tokio::test]
    async fn all_good_reports_nothing() {
        let r = run_fifo_batch(event(&["a", "b"]), Budget::unlimited(), |_: String| async {
            Ok::<(), String>(())
        })
        .await;
        assert!(r.batch_item_failures.is_empty());
    }

    #[tokio::test]
    async fn a_poison_message_is_acknowledged_and_does_not_hold_up_the_batch() {
        let mut seen = Vec::new();
        let r = run_fifo_batch(
            event(&["a", "not-json", "c"]),
            Budget::unlimited(),
            |body: String| {
                seen.push(body);
                async { Ok::<(), String>(()) }
            },
        )
        .await;
        assert!(
            failed(&r).is_empty(),
            "acknowledged (and logged), not put back"
        );
        assert_eq!(seen, ["a", "c"], "the rest of the batch is handled");
    }
}
