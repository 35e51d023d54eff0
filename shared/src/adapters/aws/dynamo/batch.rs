//! BatchWriteItem and BatchGetItem: many keys per request, and the retries of what
//! DynamoDB leaves unprocessed (it does so under throttling, and then only for some keys).

use super::DynamoStore;
use super::client::{backend, build};
use super::item::Item;
use crate::backoff::Backoff;
use crate::ports::{PortError, PortResult};
use aws_sdk_dynamodb::types::{DeleteRequest, KeysAndAttributes, PutRequest, WriteRequest};
use std::time::Duration;

/// Retries of what a batch request left unprocessed: windows from 20 ms up to 1 s.
const UNPROCESSED: Backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
/// BatchWriteItem requests per chunk, the first included.
const WRITE_ROUNDS: u32 = 8;

impl DynamoStore {
    /// Delete keys in batches, retrying what DynamoDB leaves unprocessed.
    pub(super) async fn delete_all(&self, table: &str, keys: Vec<Item>) -> PortResult<()> {
        let requests = keys
            .into_iter()
            .map(|k| {
                build(DeleteRequest::builder().set_key(Some(k)).build())
                    .map(|d| WriteRequest::builder().delete_request(d).build())
            })
            .collect::<PortResult<Vec<_>>>()?;
        self.write_all(table, requests).await
    }

    /// Put items in batches (not conditional, not atomic as a whole).
    pub(super) async fn put_all(&self, table: &str, items: Vec<Item>) -> PortResult<()> {
        let requests = items
            .into_iter()
            .map(|i| {
                build(PutRequest::builder().set_item(Some(i)).build())
                    .map(|p| WriteRequest::builder().put_request(p).build())
            })
            .collect::<PortResult<Vec<_>>>()?;
        self.write_all(table, requests).await
    }

    /// BatchWriteItem in chunks, retrying what DynamoDB leaves unprocessed.
    pub(super) async fn write_all(
        &self,
        table: &str,
        requests: Vec<WriteRequest>,
    ) -> PortResult<()> {
        // 24, not DynamoDB's 25: callers that pass keys in pairs (an event and its id
        // entry) get each pair written in the same request.
        for chunk in requests.chunks(24) {
            let mut requests = chunk.to_vec();
            // Bounded: under sustained throttling the caller fails (and its job is
            // retried by the queue) rather than spinning until the Lambda times out.
            let backoff = UNPROCESSED.with_max_attempts(WRITE_ROUNDS);
            let mut round = 1;
            loop {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(table, requests)
                    .send()
                    .await
                    .map_err(backend("BatchWriteItem"))?;
                requests = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(table))
                    .unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                if !backoff.may_retry(round) {
                    return Err(PortError::Backend(anyhow::anyhow!(
                        "BatchWriteItem on {table}: {} items still unprocessed after {WRITE_ROUNDS} rounds",
                        requests.len()
                    )));
                }
                self.sleeper.sleep(backoff.jittered(round)).await;
                round += 1;
            }
        }
        Ok(())
    }

    /// BatchGetItem (consistent) in chunks of 100, retrying unprocessed keys.
    pub(super) async fn batch_get(&self, keys: Vec<Item>) -> PortResult<Vec<Item>> {
        let mut found = Vec::new();
        for chunk in keys.chunks(100) {
            let mut pending = chunk.to_vec();
            // Not bounded: reads are retried until DynamoDB answers them all.
            let mut round = 1;
            while !pending.is_empty() {
                let request = build(
                    KeysAndAttributes::builder()
                        .set_keys(Some(pending))
                        .consistent_read(true)
                        .build(),
                )?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.sync_table, request)
                    .send()
                    .await
                    .map_err(backend("BatchGetItem"))?;
                found.extend(
                    out.responses
                        .and_then(|mut r| r.remove(&self.sync_table))
                        .unwrap_or_default(),
                );
                pending = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.sync_table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
                if !pending.is_empty() {
                    self.sleeper.sleep(UNPROCESSED.jittered(round)).await;
                    round += 1;
                }
            }
        }
        Ok(found)
    }
}
