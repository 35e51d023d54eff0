//! Running SQS batches: one function per message, partial batch failure reported back.
//!
//! Our queues are FIFO, so the first failure stops the batch: that message and every one
//! after it are reported failed and come back in order; the ones before are done.
//! A message whose body cannot be parsed is different: no retry can ever handle it, and
//! nothing depends on its order, so it alone is reported failed (the queue's redrive
//! moves it to the dead-letter queue) and the batch goes on without it.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use serde::de::DeserializeOwned;
use std::fmt::Display;
use std::future::Future;
use tracing::Instrument;

pub async fn run_fifo_batch<T, F, Fut, E>(event: SqsEvent, mut handle: F) -> SqsBatchResponse
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
        if stopped {
            failed.push(id);
            continue;
        }
        let body: T = match parse_body(&message) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(message_id = %id, error = %e, "poison message; it goes to the dead-letter queue");
                crate::metrics::emit(
                    &[("Queue", "any")],
                    &[("PoisonMessages", 1.0, crate::metrics::Unit::Count)],
                );
                failed.push(id);
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
        let r = run_fifo_batch(event(&["a", "b", "c", "d"]), |body: String| {
            seen.push(body.clone());
            async move { if body == "b" { Err("boom") } else { Ok(()) } }
        })
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
    async fn all_good_reports_nothing() {
        let r = run_fifo_batch(event(&["a", "b"]), |_: String| async {
            Ok::<(), String>(())
        })
        .await;
        assert!(r.batch_item_failures.is_empty());
    }

    #[tokio::test]
    async fn a_poison_message_fails_alone() {
        let mut seen = Vec::new();
        let r = run_fifo_batch(event(&["a", "not-json", "c"]), |body: String| {
            seen.push(body);
            async { Ok::<(), String>(()) }
        })
        .await;
        assert_eq!(failed(&r), ["not-json"]);
        assert_eq!(seen, ["a", "c"], "the rest of the batch is handled");
    }
}
