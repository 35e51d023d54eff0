//! [`SqsQueue`]: the [`Queue`] port on an SQS FIFO queue. Every message carries its
//! `MessageGroupId` (per-group order) and an explicit `MessageDeduplicationId` (the queues
//! are created with `ContentBasedDeduplication: false`), so a redelivered job that sends
//! the same message again within SQS's 5-minute window is dropped by SQS itself.

use crate::ports::{HealthCheck, OutMessage, PortError, PortResult, Queue};
use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};

/// SQS takes at most 10 entries per SendMessageBatch.
pub const MAX_BATCH: usize = 10;

/// One FIFO queue, by URL. Cheap to clone: the SDK client is shared.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: String) -> Self {
        Self { client, queue_url }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Send `messages` in order, [`MAX_BATCH`] to a SendMessageBatch call, one call after
    /// the other (so a group's messages keep their order across calls).
    ///
    /// Any entry SQS refuses makes the whole send an error naming the refused entries
    /// (their dedup ids and SQS's codes), and no later chunk is sent. Sending the same
    /// messages again is safe: the ones that went through are dropped by the dedup window.
    #[tracing::instrument(skip(self, messages), fields(queue = %self.queue_url, count = messages.len()))]
    pub async fn send_batch(&self, messages: Vec<OutMessage>) -> PortResult<()> {
        for (chunk_no, chunk) in messages.chunks(MAX_BATCH).enumerate() {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(format!("m{i}"))
                        .message_body(&m.body)
                        .message_group_id(&m.group)
                        .message_deduplication_id(&m.dedup_id)
                        .build()
                        .map_err(|e| {
                            self.error(format!("SendMessageBatch entry {}", m.dedup_id), e)
                        })
                })
                .collect::<PortResult<Vec<_>>>()?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| {
                    self.error(
                        format!(
                            "SendMessageBatch of messages {}..{}",
                            chunk_no * MAX_BATCH,
                            chunk_no * MAX_BATCH + chunk.len()
                        ),
                        e,
                    )
                })?;
            if !out.failed().is_empty() {
                let failed: Vec<String> = out
                    .failed()
                    .iter()
                    .map(|f| {
                        let dedup = f
                            .id()
                            .strip_prefix('m')
                            .and_then(|i| i.parse::<usize>().ok())
                            .and_then(|i| chunk.get(i))
                            .map_or("?", |m| m.dedup_id.as_str());
                        format!(
                            "entry {} (dedup id {dedup}): {}{}{}",
                            f.id(),
                            f.code(),
                            f.message().map_or(String::new(), |m| format!(": {m}")),
                            if f.sender_fault() {
                                " (sender fault)"
                            } else {
                                ""
                            },
                        )
                    })
                    .collect();
                return Err(PortError::Backend(anyhow::anyhow!(
                    "SendMessageBatch to queue {}: {} of {} entries failed: {}",
                    self.queue_url,
                    failed.len(),
                    chunk.len(),
                    failed.join("; ")
                )));
            }
        }
        Ok(())
    }

    fn error(&self, what: String, e: impl std::error::Error) -> PortError {
        PortError::Backend(anyhow::anyhow!(
            "{what} to queue {}: {}",
            self.queue_url,
            DisplayErrorContext(e)
        ))
    }
}

#[async_trait]
impl Queue for SqsQueue {
    #[tracing::instrument(skip(self, message), fields(queue = %self.queue_url, group = %message.group, dedup = %message.dedup_id))]
    async fn send(&self, message: OutMessage) -> PortResult<()> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_group_id(message.group)
            .message_deduplication_id(message.dedup_id)
            .message_body(message.body)
            .send()
            .await
            .map_err(|e| self.error("SendMessage".into(), e))?;
        Ok(())
    }
}

#[async_trait]
impl HealthCheck for SqsQueue {
    #[tracing::instrument(skip(self), fields(queue = %self.queue_url))]
    async fn check(&self) -> PortResult<()> {
        self.client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| self.error("GetQueueAttributes".into(), e))?;
        Ok(())
    }
}
