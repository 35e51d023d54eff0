//! Lambda's SQS event source mapping, locally: receive batches, hand them to the
//! function's handler as an `SqsEvent`, delete what succeeded, leave the reported
//! failures to come back after the visibility timeout (or to the dead-letter queue).

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use bandsync::adapters::local::{EmbeddedQueue, ReceivedMessage};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

pub type SqsHandler = Arc<dyn Fn(SqsEvent) -> BoxFuture<'static, SqsBatchResponse> + Send + Sync>;

/// Longest wait on an empty queue before looking again (visibility expiry wakes nobody).
const IDLE_POLL: Duration = Duration::from_millis(250);
/// SQS's largest batch for FIFO queues.
pub const BATCH: usize = 10;

fn to_sqs_message(queue: &str, m: &ReceivedMessage) -> SqsMessage {
    let mut msg = SqsMessage::default();
    msg.message_id = Some(m.message_id.clone());
    msg.receipt_handle = Some(m.receipt_handle.clone());
    msg.body = Some(m.body.clone());
    msg.event_source = Some("aws:sqs".into());
    msg.event_source_arn = Some(format!("arn:aws:sqs:local:000000000000:{queue}"));
    msg.aws_region = Some("local".into());
    msg.attributes = HashMap::from([
        ("MessageGroupId".to_owned(), m.group.clone()),
        ("MessageDeduplicationId".to_owned(), m.dedup_id.clone()),
        (
            "ApproximateReceiveCount".to_owned(),
            m.receive_count.to_string(),
        ),
        (
            "SentTimestamp".to_owned(),
            m.sent_at.timestamp_millis().to_string(),
        ),
    ]);
    msg
}

/// Receive one batch and run it. Returns how many messages were handed to the handler.
///
/// While the handler runs, the batch's visibility is extended (a heartbeat), so a long
/// sync is never handed to a second poller while the first is still on it. A handler
/// that panics fails the whole batch, which comes back after the visibility timeout.
pub async fn poll_once(queue: &EmbeddedQueue, handler: &SqsHandler) -> anyhow::Result<usize> {
    let received = queue.receive(BATCH).await?;
    if received.is_empty() {
        return Ok(0);
    }
    let name = queue.config().name.clone();
    let mut event = SqsEvent::default();
    event.records = received.iter().map(|m| to_sqs_message(&name, m)).collect();
    let heartbeat = {
        let (queue, receipts) = (
            queue.clone(),
            received
                .iter()
                .map(|m| m.receipt_handle.clone())
                .collect::<Vec<_>>(),
        );
        let visibility = queue.config().visibility_timeout;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(visibility / 3).await;
                for r in &receipts {
                    if let Err(e) = queue.change_visibility(r, visibility).await {
                        tracing::warn!(error = %e, "could not extend a message's visibility");
                    }
                }
            }
        })
    };
    let outcome = std::panic::AssertUnwindSafe(handler(event))
        .catch_unwind()
        .await;
    heartbeat.abort();
    let response = match outcome {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(queue = %name, "handler panicked; the batch returns to the queue");
            return Ok(received.len());
        }
    };
    let failed: HashSet<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    for m in &received {
        if !failed.contains(m.message_id.as_str()) {
            queue.delete(&m.receipt_handle).await?;
        }
    }
    Ok(received.len())
}

/// Poll forever (until the task is aborted).
pub async fn run(queue: Arc<EmbeddedQueue>, handler: SqsHandler) {
    let wake = queue.wake_handle();
    loop {
        match poll_once(&queue, &handler).await {
            Ok(0) => {
                let _ = tokio::time::timeout(IDLE_POLL, wake.notified()).await;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(queue = %queue.config().name, error = ?e, "poller failed; retrying");
                tokio::time::sleep(IDLE_POLL).await;
            }
        }
    }
}
