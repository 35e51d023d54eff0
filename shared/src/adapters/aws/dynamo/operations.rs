//! Sync operations (a record, and a newest-first listing per band) and their items.

use super::DynamoStore;
use super::client::SortKeys;
use super::item::{Item, bodies, ts, with_body};
use super::keys;
use crate::model::{BandId, SyncItem, SyncOperation};
use crate::ports::{OperationStore, PortError, PortResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use tracing::instrument;

fn item_record(item: &SyncItem) -> PortResult<Item> {
    let k = keys::operation_item(&item.operation, item.n);
    Ok(with_body(k, item)?)
}

#[async_trait]
impl OperationStore for DynamoStore {
    /// The record and its newest-first listing entry, in one transaction.
    #[instrument(skip_all, fields(op = %op.id), level = "debug")]
    async fn put_operation(&self, op: &SyncOperation) -> PortResult<()> {
        let record = with_body(keys::operation(&op.id), op)?;
        let listing = with_body(keys::operation_listing(op), op)?;
        self.put_together(&self.sync_table, vec![record, listing])
            .await
    }

    #[instrument(skip(self), level = "debug")]
    async fn get_operation(&self, id: &str) -> PortResult<Option<SyncOperation>> {
        self.get_body(&self.sync_table, keys::operation(id)).await
    }

    #[instrument(skip(self), level = "debug")]
    async fn list_operations(&self, band: &BandId, limit: usize) -> PortResult<Vec<SyncOperation>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        bodies(
            &self
                .query(
                    &self.sync_table,
                    keys::operations_pk(band),
                    "",
                    false,
                    Some(limit),
                )
                .await?,
        )
    }

    /// A Query of the band's listing, forwards from just after `after`'s sort key.
    #[instrument(skip(self), level = "debug")]
    async fn operations_after(
        &self,
        band: &BandId,
        after: Option<&(DateTime<Utc>, String)>,
        limit: usize,
    ) -> PortResult<Vec<SyncOperation>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Sort keys are `<fixed-width time>#<id>`: the next one is above `<key>\u{1}`
        // (ids have no control characters), and every one is below `~`.
        let from = match after {
            Some((at, id)) => format!("{}#{id}\u{1}", ts(*at)),
            None => "0".to_owned(),
        };
        let range = SortKeys::Between(from, "~".to_owned());
        bodies(
            &self
                .query_range(
                    &self.sync_table,
                    keys::operations_pk(band),
                    range,
                    true,
                    Some(limit),
                    None,
                )
                .await?,
        )
    }

    /// The record, the listing entry and every item, in batches.
    #[instrument(skip_all, fields(op = %op.id), level = "debug")]
    async fn delete_operation(&self, op: &SyncOperation) -> PortResult<()> {
        let items = self
            .query_range(
                &self.sync_table,
                keys::operation_pk(&op.id),
                SortKeys::Prefix(keys::OPERATION_ITEM_PREFIX),
                true,
                None,
                Some("pk, sk"),
            )
            .await?;
        let mut doomed: Vec<Item> = items
            .into_iter()
            .filter(|i| i.contains_key("pk") && i.contains_key("sk"))
            .collect();
        doomed.push(keys::operation(&op.id));
        doomed.push(keys::operation_listing(op));
        self.delete_all(&self.sync_table, doomed).await
    }

    #[instrument(skip_all, fields(op = %item.operation, n = item.n), level = "debug")]
    async fn put_item(&self, item: &SyncItem) -> PortResult<()> {
        self.put(&self.sync_table, item_record(item)?).await
    }

    /// The last of each (operation, n), as [`DynamoStore::put_files`] does.
    #[instrument(skip_all, fields(n = items.len()), level = "debug")]
    async fn put_items(&self, items: &[SyncItem]) -> PortResult<()> {
        let last: HashMap<(&str, u32), &SyncItem> = items
            .iter()
            .map(|i| ((i.operation.as_str(), i.n), i))
            .collect();
        let records = last
            .into_values()
            .map(item_record)
            .collect::<PortResult<_>>()?;
        self.put_all(&self.sync_table, records).await
    }

    #[instrument(skip(self), level = "debug")]
    async fn list_items(&self, operation: &str) -> PortResult<Vec<SyncItem>> {
        self.query_bodies(
            &self.sync_table,
            keys::operation_pk(operation),
            keys::OPERATION_ITEM_PREFIX,
        )
        .await
    }

    #[instrument(skip(self), level = "debug")]
    async fn list_items_after(
        &self,
        operation: &str,
        after: u32,
        limit: usize,
    ) -> PortResult<Vec<SyncItem>> {
        let Some(first) = after.checked_add(1).filter(|_| limit > 0) else {
            return Ok(Vec::new());
        };
        let sk = |n: u32| keys::operation_item_sk(n);
        bodies(
            &self
                .query_range(
                    &self.sync_table,
                    keys::operation_pk(operation),
                    SortKeys::Between(sk(first), sk(u32::MAX)),
                    true,
                    Some(limit),
                    None,
                )
                .await?,
        )
    }

    /// The last item's key alone (newest first, one item, its sort key projected).
    #[instrument(skip(self), level = "debug")]
    async fn count_items(&self, operation: &str) -> PortResult<u64> {
        let last = self
            .query_range(
                &self.sync_table,
                keys::operation_pk(operation),
                SortKeys::Prefix(keys::OPERATION_ITEM_PREFIX),
                false,
                Some(1),
                Some("sk"),
            )
            .await?;
        let Some(last) = last.first() else {
            return Ok(0);
        };
        let sk = super::item::get_str(last, "sk")?;
        sk.trim_start_matches(keys::OPERATION_ITEM_PREFIX)
            .parse::<u64>()
            .map_err(|e| PortError::Backend(anyhow::anyhow!("item key {sk} of {operation}: {e}")))
    }
}
