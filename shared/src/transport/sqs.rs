//! Running SQS batches: one function per message, partial batch failure reported back.
//!
//! Our queues are FIFO, so a failure stops its message group (one channel or one
//! source): that message and every later one *of its group* are reported failed and come
//! back in order; the ones before are done. Other groups of the batch go on: one bad
//! source must not send the healthy jobs that happen to share its batch to the
//! dead-letter queue without ever running them. (A message without a `MessageGroupId`
//! attribute counts as one group of its own kind: all of them stop together.)
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
    // The groups with a failed message: the rest of each returns to the queue unrun.
    let mut failed_groups: std::collections::HashSet<String> = Default::default();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let group = group_of(&message).to_owned();
        if !stopped && budget.exhausted() {
            tracing::warn!(message_id = %id, "the invocation's time is nearly up; the rest of the batch returns to the queue");
            stopped = true;
        }
        if stopped || failed_groups.contains(&group) {
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
            tracing::warn!(message_id = %id, error = %e, "message failed; it and the rest of its group return to the queue");
            failed.push(id);
            failed_groups.insert(group);
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

/// The message's FIFO group (empty when SQS gave none).
fn group_of(message: &SqsMessage) -> &str {
    message
        .attributes
        .get("MessageGroupId")
        .map_or("", String::as_str)
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
        grouped(&ids.iter().map(|id| ("", *id)).collect::<Vec<_>>())
    }

    /// A batch of (group, id) messages; an empty group sets no `MessageGroupId`.
    fn grouped(messages: &[(&str, &str)]) -> SqsEvent {
        let mut e = SqsEvent::default();
        e.records = messages
            .iter()
            .map(|(group, id)| {
                let mut m = SqsMessage::default();
                if !group.is_empty() {
                    m.attributes
                        .insert("MessageGroupId".into(), (*group).to_owned());
                }
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

    #[tokio::test]
    async fn a_failure_stops_only_its_own_group() {
        // GIVEN a batch of two groups, interleaved, where a1 fails
        let mut seen = Vec::new();
        let r = run_fifo_batch(
            grouped(&[
                ("a", "a1"),
                ("b", "b1"),
                ("a", "a2"),
                ("b", "b2"),
                ("a", "not-json"),
            ]),
            Budget::unlimited(),
            |body: String| {
                seen.push(body.clone());
                async move { if body == "a1" { Err("boom") } else { Ok(()) } }
            },
        )
        .await;
        // THEN a1 and the rest of a come back (the poison one too: it is behind a1),
        // and b runs in full
        assert_eq!(failed(&r), ["a1", "a2", "not-json"]);
        assert_eq!(seen, ["a1", "b1", "b2"]);
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
