//! Every store port on DynamoDB, in the two tables of template.yaml (`pk`/`sk` strings,
//! TTL attribute `expires_at`). Every request path is a GetItem, a Query on a key, or a
//! (transactional) write: never a Scan.
//!
//! Sync table:
//! - `BAND#b / CONFIG`, `BAND#b / SOURCE#s`, `FILES#b#s / FILE#id`;
//! - `CHANNEL#id / CHANNEL` (+ `BAND#b / WATCH#id`, the band's listing);
//! - `OP#id / OP` (+ `OPS#b / <started_at>#<id>`, newest-first listing), `OP#id / ITEM#n`;
//! - `WEBHOOK#key / DEDUPE` with `expires_at`;
//! - `CHAN#c / HEAD` (seq, epoch, delivered), `CHAN#c / SEQ#n` (the events),
//!   `CHAN#c / EVID#id` (seq of an event id: what makes appends idempotent).
//!
//! Connections table: `CONN#id / META` (TTL past API Gateway's 2 h), `CHAN#c / CONN#id`
//! (fan-out is one Query), `CONN#id / SUB#c` (cleanup on disconnect).
//!
//! Records are JSON in a `body` attribute beside the keys, as in the embedded store.

use crate::model::*;
use crate::ports::*;
use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, DeleteRequest, KeysAndAttributes, Put, PutRequest, TransactWriteItem,
    Update, WriteRequest,
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::instrument;

type Item = HashMap<String, AttributeValue>;

/// Events per append transaction: 2 items each (the event and its id) plus the head,
/// under DynamoDB's 100 items per transaction.
const APPEND_CHUNK: usize = 49;
/// Attempts of an append that lost a race for the head.
const APPEND_ATTEMPTS: usize = 50;

/// Which sort keys of a partition a Query reads.
enum SortKeys<'a> {
    All,
    Prefix(&'a str),
    Between(String, String),
}

#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    sync_table: String,
    connections_table: String,
    /// Appends to one channel from this process take turns, so they do not race each
    /// other for the head; writers in other processes are handled by the conditional
    /// head update and retries.
    appending: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

fn with_body<T: Serialize>(mut item: Item, body: &T) -> anyhow::Result<Item> {
    item.insert(
        "body".into(),
        s(serde_json::to_string(body).context("encoding a record")?),
    );
    Ok(item)
}

fn body<T: DeserializeOwned>(item: &Item) -> anyhow::Result<T> {
    let raw = item
        .get("body")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| anyhow!("item has no body"))?;
    serde_json::from_str(raw).context("decoding a record")
}

fn get_u64(item: &Item, name: &str) -> anyhow::Result<Option<u64>> {
    item.get(name)
        .map(|v| {
            v.as_n()
                .map_err(|_| anyhow!("{name} is not a number"))?
                .parse::<u64>()
                .with_context(|| format!("{name} is not a u64"))
        })
        .transpose()
}

fn get_str<'a>(item: &'a Item, name: &str) -> anyhow::Result<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| anyhow!("item has no {name}"))
}

/// Fixed width, so string order is time order.
fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn seq_key(seq: u64) -> String {
    format!("SEQ#{seq:020}")
}

fn item_key(n: u32) -> String {
    format!("ITEM#{n:010}")
}

/// An SDK error as a backend failure naming the operation.
fn backend<E>(op: &'static str) -> impl FnOnce(E) -> PortError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| {
        PortError::Backend(anyhow!("{}", DisplayErrorContext(&e)).context(format!("dynamodb {op}")))
    }
}

fn is_condition_failure<E: ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

/// Did a transaction lose a race (a condition failed, or another transaction touched its
/// items)? Any other cancellation (validation, size, throttling) is a real failure and
/// must not be retried as if another writer had won.
fn lost_race(e: &TransactWriteItemsError) -> bool {
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

fn build<T, E: std::fmt::Display>(r: Result<T, E>) -> PortResult<T> {
    r.map_err(|e| PortError::Backend(anyhow!("building a DynamoDB request: {e}")))
}

impl DynamoStore {
    pub fn new(client: Client, sync_table: String, connections_table: String) -> Self {
        Self {
            client,
            sync_table,
            connections_table,
            appending: Arc::default(),
        }
    }

    async fn get(
        &self,
        table: &str,
        pk: String,
        sk: &str,
        consistent: bool,
    ) -> PortResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(backend("GetItem"))?;
        Ok(out.item)
    }

    async fn get_body<T: DeserializeOwned>(
        &self,
        table: &str,
        pk: String,
        sk: &str,
    ) -> PortResult<Option<T>> {
        match self.get(table, pk, sk, true).await? {
            Some(item) => Ok(Some(body(&item)?)),
            None => Ok(None),
        }
    }

    async fn put(&self, table: &str, item: Item) -> PortResult<()> {
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
    async fn query(
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
    async fn query_range(
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

    async fn query_bodies<T: DeserializeOwned>(
        &self,
        table: &str,
        pk: String,
        prefix: &str,
    ) -> PortResult<Vec<T>> {
        self.query(table, pk, prefix, true, None)
            .await?
            .iter()
            .map(|i| body(i).map_err(PortError::from))
            .collect()
    }

    /// Delete keys in batches, retrying what DynamoDB leaves unprocessed.
    async fn delete_all(&self, table: &str, keys: Vec<Item>) -> PortResult<()> {
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
    async fn put_all(&self, table: &str, items: Vec<Item>) -> PortResult<()> {
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
    async fn write_all(&self, table: &str, requests: Vec<WriteRequest>) -> PortResult<()> {
        // 24, not DynamoDB's 25: callers that pass keys in pairs (an event and its id
        // entry) get each pair written in the same request.
        for chunk in requests.chunks(24) {
            let mut requests = chunk.to_vec();
            let mut backoff = Duration::from_millis(20);
            // Bounded: under sustained throttling the caller fails (and its job is
            // retried by the queue) rather than spinning until the Lambda times out.
            for round in 1.. {
                if requests.is_empty() {
                    break;
                }
                if round > 8 {
                    return Err(PortError::Backend(anyhow::anyhow!(
                        "BatchWriteItem on {table}: {} items still unprocessed after 8 rounds",
                        requests.len()
                    )));
                }
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
                if !requests.is_empty() {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        Ok(())
    }

    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<
        (),
        aws_sdk_dynamodb::error::SdkError<
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
        >,
    > {
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(|_| ())
    }

    /// The ids a connections-table partition keeps in its sort keys after `prefix`.
    async fn sort_key_ids<T>(
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

    /// Put every item, all or none.
    async fn put_together(&self, table: &str, items: Vec<Item>) -> PortResult<()> {
        let writes = items
            .into_iter()
            .map(|item| self.put_item(table, item, None))
            .collect::<PortResult<Vec<_>>>()?;
        self.transact(writes)
            .await
            .map_err(backend("TransactWriteItems"))
    }

    /// Delete every key, all or none (a missing item is not an error).
    async fn delete_together(&self, table: &str, keys: Vec<Item>) -> PortResult<()> {
        let mut deletes = Vec::new();
        for k in keys {
            let delete = build(Delete::builder().table_name(table).set_key(Some(k)).build())?;
            deletes.push(TransactWriteItem::builder().delete(delete).build());
        }
        self.transact(deletes)
            .await
            .map_err(backend("TransactWriteItems"))
    }

    fn put_item(
        &self,
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
}

#[async_trait]
impl ConfigStore for DynamoStore {
    #[instrument(skip(self), level = "debug")]
    async fn get_config(&self, band: &BandId) -> PortResult<Option<SyncConfiguration>> {
        self.get_body(&self.sync_table, format!("BAND#{band}"), "CONFIG")
            .await
    }

    #[instrument(skip_all, fields(band = %config.band), level = "debug")]
    /// With the band's entry in the registry partition (`BANDS`), in one transaction.
    async fn put_config(&self, config: &SyncConfiguration) -> PortResult<()> {
        let item = with_body(key(format!("BAND#{}", config.band), "CONFIG"), config)?;
        let registry = key(REGISTRY_PK, format!("BAND#{}", config.band));
        self.put_together(&self.sync_table, vec![item, registry])
            .await
    }

    /// A Query of the registry partition. (One partition for every band: bands are few
    /// and their configurations rarely written.)
    #[instrument(skip(self), level = "debug")]
    async fn list_bands(&self) -> PortResult<Vec<BandId>> {
        self.sort_key_ids(&self.sync_table, REGISTRY_PK.into(), "BAND#", BandId::parse)
            .await
    }
}

#[async_trait]
impl SourceStore for DynamoStore {
    #[instrument(skip(self), level = "debug")]
    async fn get_source(&self, band: &BandId, source: &SourceId) -> PortResult<Option<Source>> {
        let (pk, sk) = source_key(band, source);
        self.get_body(&self.sync_table, pk, &sk).await
    }

    #[instrument(skip(self), level = "debug")]
    async fn list_sources(&self, band: &BandId) -> PortResult<Vec<Source>> {
        self.query_bodies(&self.sync_table, format!("BAND#{band}"), "SOURCE#")
            .await
    }

    #[instrument(skip_all, fields(band = %source.band, source = %source.id), level = "debug")]
    async fn put_source(&self, source: &Source) -> PortResult<()> {
        let (pk, sk) = source_key(&source.band, &source.id);
        let item = with_body(key(pk, sk), source)?;
        self.put(&self.sync_table, item).await
    }

    #[instrument(skip(self), level = "debug")]
    async fn delete_source(&self, band: &BandId, source: &SourceId) -> PortResult<()> {
        let (pk, sk) = source_key(band, source);
        self.delete_all(&self.sync_table, vec![key(pk, sk)]).await
    }

    /// A strongly consistent read of the `BAND#b / GEN#s` counter item.
    #[instrument(skip(self), level = "debug")]
    async fn generation(&self, band: &BandId, source: &SourceId) -> PortResult<u64> {
        let item = self
            .get(
                &self.sync_table,
                format!("BAND#{band}"),
                &generation_sk(source),
                true,
            )
            .await?;
        Ok(match item {
            Some(item) => get_u64(&item, "n")?.unwrap_or(0),
            None => 0,
        })
    }

    /// `ADD n :1`: atomic, whoever else writes the source.
    #[instrument(skip(self), level = "debug")]
    async fn bump_generation(&self, band: &BandId, source: &SourceId) -> PortResult<u64> {
        let out = self
            .client
            .update_item()
            .table_name(&self.sync_table)
            .set_key(Some(key(format!("BAND#{band}"), generation_sk(source))))
            .update_expression("ADD n :one")
            .expression_attribute_values(":one", n(1))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(backend("UpdateItem"))?;
        let attributes = out.attributes.unwrap_or_default();
        Ok(get_u64(&attributes, "n")?.unwrap_or(1))
    }
}

fn generation_sk(source: &SourceId) -> String {
    format!("GEN#{source}")
}

/// `BAND#b / SOURCE#s`.
fn source_key(band: &BandId, source: &SourceId) -> (String, String) {
    (format!("BAND#{band}"), format!("SOURCE#{source}"))
}

/// The partition that lists every band with a configuration.
const REGISTRY_PK: &str = "BANDS";

fn files_pk(band: &BandId, source: &SourceId) -> String {
    format!("FILES#{band}#{source}")
}

fn file_item(file: &FileEntry) -> PortResult<Item> {
    let k = key(
        files_pk(&file.band, &file.source),
        format!("FILE#{}", file.file_id),
    );
    Ok(with_body(k, file)?)
}

fn item_record(item: &SyncItem) -> PortResult<Item> {
    let k = key(format!("OP#{}", item.operation), item_key(item.n));
    Ok(with_body(k, item)?)
}

#[async_trait]
impl CatalogStore for DynamoStore {
    #[instrument(skip(self), level = "debug")]
    async fn list_files(&self, band: &BandId, source: &SourceId) -> PortResult<Vec<FileEntry>> {
        self.query_bodies(&self.sync_table, files_pk(band, source), "FILE#")
            .await
    }

    #[instrument(skip_all, fields(file = %file.file_id), level = "debug")]
    async fn put_file(&self, file: &FileEntry) -> PortResult<()> {
        self.put(&self.sync_table, file_item(file)?).await
    }

    /// The last of each file id (BatchWriteItem refuses a key twice in one request).
    #[instrument(skip_all, fields(n = files.len()), level = "debug")]
    async fn put_files(&self, files: &[FileEntry]) -> PortResult<()> {
        let last: HashMap<(&BandId, &SourceId, &str), &FileEntry> = files
            .iter()
            .map(|f| ((&f.band, &f.source, f.file_id.as_str()), f))
            .collect();
        let items = last
            .into_values()
            .map(file_item)
            .collect::<PortResult<_>>()?;
        self.put_all(&self.sync_table, items).await
    }

    #[instrument(skip(self), level = "debug")]
    async fn delete_file(&self, band: &BandId, source: &SourceId, file_id: &str) -> PortResult<()> {
        self.delete_all(
            &self.sync_table,
            vec![key(files_pk(band, source), format!("FILE#{file_id}"))],
        )
        .await
    }
}

#[async_trait]
impl OperationStore for DynamoStore {
    /// The record and its newest-first listing entry, in one transaction.
    #[instrument(skip_all, fields(op = %op.id), level = "debug")]
    async fn put_operation(&self, op: &SyncOperation) -> PortResult<()> {
        let record = with_body(key(format!("OP#{}", op.id), "OP"), op)?;
        let listing = with_body(
            key(
                format!("OPS#{}", op.band),
                format!("{}#{}", ts(op.started_at), op.id),
            ),
            op,
        )?;
        self.put_together(&self.sync_table, vec![record, listing])
            .await
    }

    #[instrument(skip(self), level = "debug")]
    async fn get_operation(&self, id: &str) -> PortResult<Option<SyncOperation>> {
        self.get_body(&self.sync_table, format!("OP#{id}"), "OP")
            .await
    }

    #[instrument(skip(self), level = "debug")]
    async fn list_operations(&self, band: &BandId, limit: usize) -> PortResult<Vec<SyncOperation>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.query(
            &self.sync_table,
            format!("OPS#{band}"),
            "",
            false,
            Some(limit),
        )
        .await?
        .iter()
        .map(|i| body(i).map_err(PortError::from))
        .collect()
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
        self.query_bodies(&self.sync_table, format!("OP#{operation}"), "ITEM#")
            .await
    }
}

/// A watch channel as stored: the record, with the last message kept in attributes of
/// its own so `record_message` can move it forward with a conditional update.
fn watch_channel_from(item: &Item) -> PortResult<WatchChannel> {
    let mut channel: WatchChannel = body(item)?;
    if let Some(number) = get_u64(item, "last_message")? {
        channel.last_message = Some(number);
        channel.last_message_at = get_str(item, "last_message_at")
            .ok()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
    }
    Ok(channel)
}

#[async_trait]
impl WatchChannelStore for DynamoStore {
    #[instrument(skip_all, fields(id = %channel.id), level = "debug")]
    async fn put_watch_channel(&self, channel: &WatchChannel) -> PortResult<()> {
        let mut items = Vec::new();
        for k in [
            key(format!("CHANNEL#{}", channel.id), "CHANNEL"),
            key(
                format!("BAND#{}", channel.band),
                format!("WATCH#{}", channel.id),
            ),
        ] {
            let mut item = with_body(k, channel)?;
            if let Some(number) = channel.last_message {
                item.insert("last_message".into(), n(number));
                if let Some(at) = channel.last_message_at {
                    item.insert("last_message_at".into(), s(ts(at)));
                }
            }
            items.push(item);
        }
        self.put_together(&self.sync_table, items).await
    }

    #[instrument(skip(self), level = "debug")]
    async fn get_watch_channel(&self, id: &str) -> PortResult<Option<WatchChannel>> {
        match self
            .get(&self.sync_table, format!("CHANNEL#{id}"), "CHANNEL", true)
            .await?
        {
            Some(item) => Ok(Some(watch_channel_from(&item)?)),
            None => Ok(None),
        }
    }

    #[instrument(skip(self), level = "debug")]
    async fn list_watch_channels(&self, band: &BandId) -> PortResult<Vec<WatchChannel>> {
        self.query(
            &self.sync_table,
            format!("BAND#{band}"),
            "WATCH#",
            true,
            None,
        )
        .await?
        .iter()
        .map(watch_channel_from)
        .collect()
    }

    #[instrument(skip_all, fields(id = %channel.id), level = "debug")]
    async fn delete_watch_channel(&self, channel: &WatchChannel) -> PortResult<()> {
        let keys = vec![
            key(format!("CHANNEL#{}", channel.id), "CHANNEL"),
            key(
                format!("BAND#{}", channel.band),
                format!("WATCH#{}", channel.id),
            ),
        ];
        self.delete_together(&self.sync_table, keys).await
    }

    /// Moves forward only; an unknown channel or an older number is a no-op.
    #[instrument(skip(self), level = "debug")]
    async fn record_message(&self, id: &str, number: u64, at: DateTime<Utc>) -> PortResult<()> {
        let Some(channel) = self.get_watch_channel(id).await? else {
            return Ok(());
        };
        let mut updates = Vec::new();
        for k in [
            key(format!("CHANNEL#{id}"), "CHANNEL"),
            key(format!("BAND#{}", channel.band), format!("WATCH#{id}")),
        ] {
            let update = build(
                Update::builder()
                    .table_name(&self.sync_table)
                    .set_key(Some(k))
                    .update_expression("SET last_message = :n, last_message_at = :at")
                    .condition_expression("attribute_exists(pk) AND (attribute_not_exists(last_message) OR last_message < :n)")
                    .expression_attribute_values(":n", n(number))
                    .expression_attribute_values(":at", s(ts(at)))
                    .build(),
            )?;
            updates.push(TransactWriteItem::builder().update(update).build());
        }
        match self.transact(updates).await {
            Ok(()) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(lost_race) => Ok(()),
            Err(e) => Err(backend("TransactWriteItems")(e)),
        }
    }
}

#[async_trait]
impl DedupeStore for DynamoStore {
    #[instrument(skip(self), level = "debug")]
    async fn first_seen(
        &self,
        dedupe_key: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> PortResult<bool> {
        let expires = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
        let mut item = key(format!("WEBHOOK#{dedupe_key}"), "DEDUPE");
        // Seconds for DynamoDB's TTL sweeper; milliseconds for our own expiry check,
        // because the sweeper can run up to days late.
        item.insert("expires_at".into(), n(expires.timestamp()));
        item.insert("expires_ms".into(), n(expires.timestamp_millis()));
        let result = self
            .client
            .put_item()
            .table_name(&self.sync_table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR expires_ms <= :now")
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => Ok(false),
            Err(e) => Err(backend("PutItem")(e)),
        }
    }
}

fn chan_pk(channel: &ChannelName) -> String {
    format!("CHAN#{channel}")
}

/// A channel head as stored.
struct Head {
    seq: u64,
    epoch: String,
}

impl DynamoStore {
    /// The head, created (seq 0, new epoch) when the channel has none.
    async fn head_or_create(&self, channel: &ChannelName) -> PortResult<Head> {
        if let Some(item) = self
            .get(&self.sync_table, chan_pk(channel), "HEAD", true)
            .await?
        {
            return Ok(Head {
                seq: get_u64(&item, "seq")?.unwrap_or(0),
                epoch: get_str(&item, "epoch")?.to_owned(),
            });
        }
        let epoch = uuid::Uuid::new_v4().simple().to_string();
        let mut item = key(chan_pk(channel), "HEAD");
        item.insert("seq".into(), n(0));
        item.insert("epoch".into(), s(epoch.clone()));
        item.insert("delivered".into(), n(0));
        let created = self
            .client
            .put_item()
            .table_name(&self.sync_table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match created {
            Ok(_) => Ok(Head { seq: 0, epoch }),
            // Another writer created it first: use theirs.
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => {
                Box::pin(self.head_or_create(channel)).await
            }
            Err(e) => Err(backend("PutItem")(e)),
        }
    }

    /// The stored events for event ids the channel already has: id -> event.
    async fn known_events(
        &self,
        channel: &ChannelName,
        events: &[NewEvent],
    ) -> PortResult<HashMap<String, Event>> {
        let pk = chan_pk(channel);
        // DynamoDB refuses a batch that names one key twice.
        let ids: std::collections::BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let id_keys: Vec<Item> = ids
            .iter()
            .map(|id| key(pk.clone(), format!("EVID#{id}")))
            .collect();
        let mut seqs: HashMap<u64, String> = HashMap::new();
        for item in self.batch_get(id_keys).await? {
            let seq = get_u64(&item, "seq")?.ok_or_else(|| anyhow!("event id item without seq"))?;
            let id = get_str(&item, "sk")?.trim_start_matches("EVID#").to_owned();
            seqs.insert(seq, id);
        }
        let seq_keys: Vec<Item> = seqs
            .keys()
            .map(|seq| key(pk.clone(), seq_key(*seq)))
            .collect();
        let mut known = HashMap::new();
        for item in self.batch_get(seq_keys).await? {
            let event = event_from(channel, &item)?;
            seqs.remove(&event.seq);
            known.insert(event.id.clone(), event);
        }
        // An id whose event was pruned (a prune cut short between the two deletes) is
        // still known: it keeps its seq and is not appended again.
        for (seq, id) in seqs {
            if let Some(e) = events.iter().find(|e| e.id == id) {
                known.insert(id, event_at(channel, seq, "", e));
            }
        }
        Ok(known)
    }

    /// BatchGetItem (consistent) in chunks of 100, retrying unprocessed keys.
    async fn batch_get(&self, keys: Vec<Item>) -> PortResult<Vec<Item>> {
        let mut found = Vec::new();
        for chunk in keys.chunks(100) {
            let mut pending = chunk.to_vec();
            let mut backoff = Duration::from_millis(20);
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
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        Ok(found)
    }

    /// One atomic step of an append: events get head.seq+1.. if the head has not moved
    /// and none of their ids is taken. `Ok(None)` when another writer won the race.
    async fn append_chunk(
        &self,
        channel: &ChannelName,
        events: &[NewEvent],
    ) -> PortResult<Option<Vec<Event>>> {
        let head = self.head_or_create(channel).await?;
        let known = self.known_events(channel, events).await?;
        let pk = chan_pk(channel);
        let mut writes = Vec::new();
        let mut out = Vec::with_capacity(events.len());
        let mut seq = head.seq;
        let mut fresh: HashMap<&str, u64> = HashMap::new();
        for e in events {
            if let Some(stored) = known.get(&e.id) {
                // The epoch lives on the head, not on each event item.
                out.push(Event {
                    epoch: head.epoch.clone(),
                    ..stored.clone()
                });
                continue;
            }
            if let Some(&first) = fresh.get(e.id.as_str()) {
                // The same id twice in one batch: one copy, as the embedded store does.
                out.push(event_at(channel, first, &head.epoch, e));
                continue;
            }
            seq += 1;
            fresh.insert(&e.id, seq);
            let mut record = with_body(key(pk.clone(), seq_key(seq)), e)?;
            record.insert("ts".into(), s(ts(e.ts)));
            record.insert("evid".into(), s(e.id.clone()));
            writes.push(self.put_item(
                &self.sync_table,
                record,
                Some("attribute_not_exists(pk)"),
            )?);
            let mut id_item = key(pk.clone(), format!("EVID#{}", e.id));
            id_item.insert("seq".into(), n(seq));
            writes.push(self.put_item(
                &self.sync_table,
                id_item,
                Some("attribute_not_exists(pk)"),
            )?);
            out.push(event_at(channel, seq, &head.epoch, e));
        }
        if writes.is_empty() {
            return Ok(Some(out));
        }
        let update = build(
            Update::builder()
                .table_name(&self.sync_table)
                .set_key(Some(key(pk, "HEAD")))
                .update_expression("SET seq = :new")
                .condition_expression("seq = :old AND epoch = :epoch")
                .expression_attribute_values(":new", n(seq))
                .expression_attribute_values(":old", n(head.seq))
                .expression_attribute_values(":epoch", s(head.epoch.clone()))
                .build(),
        )?;
        writes.push(TransactWriteItem::builder().update(update).build());
        match self.transact(writes).await {
            Ok(()) => Ok(Some(out)),
            Err(e) if e.as_service_error().is_some_and(lost_race) => Ok(None),
            Err(e) => Err(backend("TransactWriteItems")(e)),
        }
    }
}

fn event_at(channel: &ChannelName, seq: u64, epoch: &str, e: &NewEvent) -> Event {
    Event {
        channel: channel.clone(),
        seq,
        epoch: epoch.to_owned(),
        id: e.id.clone(),
        event: e.event.clone(),
        ts: e.ts,
        data: e.data.clone(),
    }
}

fn event_from(channel: &ChannelName, item: &Item) -> PortResult<Event> {
    let new: NewEvent = body(item)?;
    let seq = get_str(item, "sk")?
        .strip_prefix("SEQ#")
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| anyhow!("event item with a bad sort key"))?;
    let epoch = get_str(item, "epoch").unwrap_or_default().to_owned();
    Ok(Event {
        epoch,
        ..event_at(channel, seq, "", &new)
    })
}

#[async_trait]
impl ChannelLog for DynamoStore {
    #[instrument(skip(self, events), fields(%channel, count = events.len()), level = "debug")]
    async fn append(&self, channel: &ChannelName, events: &[NewEvent]) -> PortResult<Vec<Event>> {
        let turn = {
            let mut locks = self.appending.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(channel.to_string()).or_default())
        };
        let _turn = turn.lock().await;
        let mut out = Vec::with_capacity(events.len());
        for chunk in events.chunks(APPEND_CHUNK) {
            let mut ceiling = Duration::from_millis(10);
            let mut attempt = 0;
            loop {
                attempt += 1;
                if let Some(stored) = self.append_chunk(channel, chunk).await? {
                    out.extend(stored);
                    break;
                }
                if attempt >= APPEND_ATTEMPTS {
                    return Err(PortError::Conflict(format!(
                        "append to {channel} lost the race {attempt} times"
                    )));
                }
                // Full jitter: competing writers spread over the whole window.
                let random = u64::from(u16::from_le_bytes([
                    uuid::Uuid::new_v4().as_bytes()[0],
                    uuid::Uuid::new_v4().as_bytes()[1],
                ]));
                let ceiling_ms = u64::try_from(ceiling.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1);
                tokio::time::sleep(Duration::from_millis(random % ceiling_ms)).await;
                ceiling = (ceiling * 2).min(Duration::from_millis(500));
            }
        }
        Ok(out)
    }

    #[instrument(skip(self), fields(%channel), level = "debug")]
    async fn read_after(
        &self,
        channel: &ChannelName,
        after_seq: u64,
        limit: usize,
    ) -> PortResult<Vec<Event>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let Some(head) = self
            .get(&self.sync_table, chan_pk(channel), "HEAD", true)
            .await?
        else {
            return Ok(Vec::new());
        };
        let epoch = get_str(&head, "epoch")?.to_owned();
        let range = SortKeys::Between(seq_key(after_seq.saturating_add(1)), seq_key(u64::MAX));
        self.query_range(
            &self.sync_table,
            chan_pk(channel),
            range,
            true,
            Some(limit),
            None,
        )
        .await?
        .iter()
        .map(|i| {
            event_from(channel, i).map(|e| Event {
                epoch: epoch.clone(),
                ..e
            })
        })
        .collect()
    }

    #[instrument(skip(self), fields(%channel), level = "debug")]
    async fn head(&self, channel: &ChannelName) -> PortResult<Option<ChannelHead>> {
        let Some(item) = self
            .get(&self.sync_table, chan_pk(channel), "HEAD", true)
            .await?
        else {
            return Ok(None);
        };
        let seq = get_u64(&item, "seq")?.unwrap_or(0);
        let oldest = self
            .query(&self.sync_table, chan_pk(channel), "SEQ#", true, Some(1))
            .await?;
        let first_retained = match oldest.first() {
            Some(i) => event_from(channel, i)?.seq,
            None => seq + 1,
        };
        Ok(Some(ChannelHead {
            seq,
            epoch: get_str(&item, "epoch")?.to_owned(),
            first_retained,
        }))
    }

    /// Everything up to the newest event older than `before` goes (by seq, so the rest is
    /// one gapless run), with the id entries that made those appends idempotent.
    #[instrument(skip(self), fields(%channel), level = "debug")]
    async fn prune(&self, channel: &ChannelName, before: DateTime<Utc>) -> PortResult<u64> {
        // Only the keys, times and ids: a prune reads every retained event of the channel.
        let events = self
            .query_range(
                &self.sync_table,
                chan_pk(channel),
                SortKeys::Prefix("SEQ#"),
                true,
                None,
                Some("sk, ts, evid"),
            )
            .await?;
        let cutoff = ts(before);
        let mut last_old = None;
        for (i, item) in events.iter().enumerate() {
            if get_str(item, "ts")? < cutoff.as_str() {
                last_old = Some(i);
            }
        }
        let Some(last_old) = last_old else {
            return Ok(0);
        };
        let pk = chan_pk(channel);
        let mut keys = Vec::new();
        for item in &events[..=last_old] {
            keys.push(key(pk.clone(), get_str(item, "sk")?));
            keys.push(key(pk.clone(), format!("EVID#{}", get_str(item, "evid")?)));
        }
        self.delete_all(&self.sync_table, keys).await?;
        Ok(last_old as u64 + 1)
    }

    #[instrument(skip(self), fields(%channel), level = "debug")]
    async fn delivered(&self, channel: &ChannelName) -> PortResult<u64> {
        let head = self
            .get(&self.sync_table, chan_pk(channel), "HEAD", true)
            .await?;
        Ok(match head {
            Some(item) => get_u64(&item, "delivered")?.unwrap_or(0),
            None => 0,
        })
    }

    #[instrument(skip(self), fields(%channel), level = "debug")]
    async fn mark_delivered(&self, channel: &ChannelName, seq: u64) -> PortResult<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.sync_table)
            .set_key(Some(key(chan_pk(channel), "HEAD")))
            .update_expression("SET delivered = :s")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(delivered) OR delivered < :s)",
            )
            .expression_attribute_values(":s", n(seq))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => Ok(()),
            Err(e) => Err(backend("UpdateItem")(e)),
        }
    }
}

#[async_trait]
impl ConnectionStore for DynamoStore {
    #[instrument(skip_all, fields(id = %conn.id), level = "debug")]
    async fn put_connection(&self, conn: &Connection) -> PortResult<()> {
        let mut item = with_body(key(format!("CONN#{}", conn.id), "META"), conn)?;
        item.insert("expires_at".into(), n(conn.expires_at.timestamp()));
        self.put(&self.connections_table, item).await
    }

    #[instrument(skip(self), level = "debug")]
    async fn get_connection(&self, id: &ConnectionId) -> PortResult<Option<Connection>> {
        self.get_body(&self.connections_table, format!("CONN#{id}"), "META")
            .await
    }

    /// The record, its subscriptions and their fan-out entries (two Queries' worth of keys).
    #[instrument(skip(self), level = "debug")]
    async fn delete_connection(&self, id: &ConnectionId) -> PortResult<()> {
        let subscriptions = self.subscriptions(id).await?;
        let mut keys = vec![key(format!("CONN#{id}"), "META")];
        for channel in subscriptions {
            keys.push(key(format!("CONN#{id}"), format!("SUB#{channel}")));
            keys.push(key(chan_pk(&channel), format!("CONN#{id}")));
        }
        self.delete_all(&self.connections_table, keys).await
    }

    #[instrument(skip(self), level = "debug")]
    async fn subscribe(
        &self,
        id: &ConnectionId,
        channel: &ChannelName,
        at: DateTime<Utc>,
    ) -> PortResult<()> {
        // Subscriptions expire with the longest a connection can live.
        let expires = (at + crate::model::CONNECTION_TTL).timestamp();
        let mut fan_out = key(chan_pk(channel), format!("CONN#{id}"));
        let mut reverse = key(format!("CONN#{id}"), format!("SUB#{channel}"));
        for item in [&mut fan_out, &mut reverse] {
            item.insert("subscribed_at".into(), s(ts(at)));
            item.insert("expires_at".into(), n(expires));
        }
        self.put_together(&self.connections_table, vec![fan_out, reverse])
            .await
    }

    #[instrument(skip(self), level = "debug")]
    async fn unsubscribe(&self, id: &ConnectionId, channel: &ChannelName) -> PortResult<()> {
        let keys = vec![
            key(chan_pk(channel), format!("CONN#{id}")),
            key(format!("CONN#{id}"), format!("SUB#{channel}")),
        ];
        self.delete_together(&self.connections_table, keys).await
    }

    #[instrument(skip(self), level = "debug")]
    async fn subscribers(&self, channel: &ChannelName) -> PortResult<Vec<ConnectionId>> {
        self.sort_key_ids(
            &self.connections_table,
            chan_pk(channel),
            "CONN#",
            ConnectionId::parse,
        )
        .await
    }

    #[instrument(skip(self), level = "debug")]
    async fn subscriptions(&self, id: &ConnectionId) -> PortResult<Vec<ChannelName>> {
        self.sort_key_ids(
            &self.connections_table,
            format!("CONN#{id}"),
            "SUB#",
            ChannelName::parse,
        )
        .await
    }
}

#[async_trait]
impl HealthCheck for DynamoStore {
    /// A key lookup on each table: a data-plane call, cheap and not rate-limited like
    /// DescribeTable.
    async fn check(&self) -> PortResult<()> {
        self.get(&self.sync_table, "HEALTH".into(), "CHECK", false)
            .await?;
        self.get(&self.connections_table, "HEALTH".into(), "CHECK", false)
            .await?;
        Ok(())
    }
}
