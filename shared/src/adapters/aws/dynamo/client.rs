//! Single requests on one table, and what their failures mean: the Get, Put, Query and
//! transaction helpers every port is written with.

use super::DynamoStore;
use super::item::{Item, bodies, body, get_str, s};
use crate::model::ParseError;
use crate::ports::{PortError, PortResult};
use anyhow::anyhow;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};
use serde::de::DeserializeOwned;

/// Which sort keys of a partition a Query reads.
pub(super) enum SortKeys<'a> {
    All,
    Prefix(&'a str),
    Between(String, String),
}

/// An SDK error as a backend failure naming the operation.
pub(super) fn backend<E>(op: &'static str) -> impl FnOnce(E) -> PortError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| {
        PortError::Backend(anyhow!("{}", DisplayErrorContext(&e)).context(format!("dynamodb {op}")))
    }
}

pub(super) fn is_condition_failure<E: ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

/// Did a transaction lose a race (a condition failed, or another transaction touched its
/// items)? Any other cancellation (validation, size, throttling) is a real failure and
/// must not be retried as if another writer had won.
pub(super) fn lost_race(e: &TransactWriteItemsError) -> bool {
    let TransactWriteItemsError::TransactionCanceledException(c) = e else {
        return false;
    };
    let codes: Vec<&str> = c
        .cancellation_reasons()
        .iter()
        .filter_map(|r| r.code())
        .filter(|code| *code != "None")
        .collect();
    !codes.is_empty()
        && codes
            .iter()
            .all(|code| matches!(*code, "ConditionalCheckFailed" | "TransactionConflict"))
}

pub(super) fn build<T, E: std::fmt::Display>(r: Result<T, E>) -> PortResult<T> {
    r.map_err(|e| PortError::Backend(anyhow!("building a DynamoDB request: {e}")))
}

impl DynamoStore {
    pub(super) async fn get(
        &self,
        table: &str,
        key: Item,
        consistent: bool,
    ) -> PortResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(backend("GetItem"))?;
        Ok(out.item)
    }

    pub(super) async fn get_body<T: DeserializeOwned>(
        &self,
        table: &str,
        key: Item,
    ) -> PortResult<Option<T>> {
        match self.get(table, key, true).await? {
            Some(item) => Ok(Some(body(&item)?)),
            None => Ok(None),
        }
    }

    pub(super) async fn put(&self, table: &str, item: Item) -> PortResult<()> {
        self.client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(backend("PutItem"))?;
        Ok(())
    }

    /// Every item of a partition whose sort key starts with `prefix`, in sort order
    /// (`forward`), up to `limit`.
    pub(super) async fn query(
        &self,
        table: &str,
        pk: String,
        prefix: &str,
        forward: bool,
        limit: Option<usize>,
    ) -> PortResult<Vec<Item>> {
        // An empty prefix means the whole partition (DynamoDB refuses an empty key value).
        let range = if prefix.is_empty() {
            SortKeys::All
        } else {
            SortKeys::Prefix(prefix)
        };
        self.query_range(table, pk, range, forward, limit, None)
            .await
    }

    /// The items of a partition in `range`, following `LastEvaluatedKey` (a page stops at
    /// 1 MB) until `limit` items or the end; only the `projection` attributes if given.
    pub(super) async fn query_range(
        &self,
        table: &str,
        pk: String,
        range: SortKeys<'_>,
        forward: bool,
        limit: Option<usize>,
        projection: Option<&str>,
    ) -> PortResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(table)
                .expression_attribute_values(":pk", s(pk.clone()))
                .scan_index_forward(forward)
                .consistent_read(true)
                .set_projection_expression(projection.map(str::to_owned))
                .set_exclusive_start_key(start.take());
            q = match &range {
                SortKeys::All => q.key_condition_expression("pk = :pk"),
                SortKeys::Prefix(prefix) => q
                    .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                    .expression_attribute_values(":prefix", s(*prefix)),
                SortKeys::Between(from, to) => q
                    .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                    .expression_attribute_values(":from", s(from.clone()))
                    .expression_attribute_values(":to", s(to.clone())),
            };
            if let Some(limit) = limit {
                q = q.limit(i32::try_from(limit - items.len()).unwrap_or(i32::MAX));
            }
            let out = q.send().await.map_err(backend("Query"))?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() || limit.is_some_and(|l| items.len() >= l) {
                return Ok(items);
            }
        }
    }

    pub(super) async fn query_bodies<T: DeserializeOwned>(
        &self,
        table: &str,
        pk: String,
        prefix: &str,
    ) -> PortResult<Vec<T>> {
        bodies(&self.query(table, pk, prefix, true, None).await?)
    }

    /// The ids a partition keeps in its sort keys after `prefix`.
    pub(super) async fn sort_key_ids<T>(
        &self,
        table: &str,
        pk: String,
        prefix: &str,
        parse: fn(&str) -> Result<T, ParseError>,
    ) -> PortResult<Vec<T>> {
        self.query(table, pk, prefix, true, None)
            .await?
            .iter()
            .map(|i| {
                let sk = get_str(i, "sk")?;
                Ok(parse(sk.trim_start_matches(prefix)).map_err(anyhow::Error::from)?)
            })
            .collect()
    }

    pub(super) async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<(), SdkError<TransactWriteItemsError>> {
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(|_| ())
    }

    /// Put every item, all or none.
    pub(super) async fn put_together(&self, table: &str, items: Vec<Item>) -> PortResult<()> {
        let writes = items
            .into_iter()
            .map(|item| transact_put(table, item, None))
            .collect::<PortResult<Vec<_>>>()?;
        self.transact(writes)
            .await
            .map_err(backend("TransactWriteItems"))
    }

    /// Delete every key, all or none (a missing item is not an error).
    pub(super) async fn delete_together(&self, table: &str, keys: Vec<Item>) -> PortResult<()> {
        let mut deletes = Vec::new();
        for k in keys {
            let delete = build(Delete::builder().table_name(table).set_key(Some(k)).build())?;
            deletes.push(TransactWriteItem::builder().delete(delete).build());
        }
        self.transact(deletes)
            .await
            .map_err(backend("TransactWriteItems"))
    }
}

/// One put of a transaction, under `condition` if given.
pub(super) fn transact_put(
    table: &str,
    item: Item,
    condition: Option<&str>,
) -> PortResult<TransactWriteItem> {
    let put = build(
        Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_owned))
            .build(),
    )?;
    Ok(TransactWriteItem::builder().put(put).build())
}
