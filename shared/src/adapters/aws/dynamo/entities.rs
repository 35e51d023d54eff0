//! [`EntityStore`] on the sync table (keys in [`super::keys`]): a commit is one
//! TransactWriteItems with the device's mid, the receipt (and its parked copy), the
//! entity conditional on its version, the history entry, the conflicts, and the event as
//! the channel log's append writes it (event item, event-id item, head update
//! conditional on seq and epoch).
//!
//! Items are at most 400 KB. A record whose item would be larger (a huge entity; its
//! history entry, which carries the entity after, is the first to hit it) is refused
//! before anything is sent, with a [`PortError::Backend`] naming the item and its size:
//! nothing is written, the device's mid does not move, and the caller answers the
//! mutation as refused.

use super::DynamoStore;
use super::client::{SortKeys, backend, build, is_condition_failure, lost_race, transact_put};
use super::item::{Item, bodies, body, get_str, get_u64, n, s, ts, with_body};
use super::keys;
use super::log::{APPEND_RETRY, event_at};
use crate::entities::mutation::MutationStatus;
use crate::entities::records::{
    Commit, CommitError, ConflictRecord, DeviceRecord, EntityPage, EntityRecord, HistoryEntry,
    Receipt,
};
use crate::entities::stats::VerdictCount;
use crate::model::{BandId, ConflictId, DeviceId, EntityId, EntityTypeName, Event};
use crate::ports::{EntityStore, PortError, PortResult};
use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    Delete, Put, ReturnConsumedCapacity, ReturnValue, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use tracing::{debug, instrument};

/// The most receipts one [`EntityStore::receipts`] call returns.
const MAX_RECEIPTS: u64 = 1_000;
/// What one item may hold, short of DynamoDB's 400 KB: room for the keys and the other
/// attributes beside the body.
const MAX_BODY: usize = 390 * 1024;
/// Items of a commit besides its conflicts: device, receipt, parked copy, entity,
/// history, verdict counters, and the log's event, event id and head.
const FIXED_ITEMS: usize = 9;
/// What one TransactWriteItems holds.
const MAX_ITEMS: usize = 100;
/// Each conflict is three items (by id, in every listing, in the open listing).
const MAX_CONFLICTS: usize = (MAX_ITEMS - FIXED_ITEMS) / 3;
/// Entities per page when the history retention walks a band.
const PRUNE_PAGE: usize = 100;

/// `with_body`, refusing a body that would not fit in an item.
fn sized_body<T: serde::Serialize>(item: Item, record: &T, what: &str) -> PortResult<Item> {
    let item = with_body(item, record)?;
    let size = item
        .get("body")
        .and_then(|b| b.as_s().ok())
        .map_or(0, String::len);
    if size > MAX_BODY {
        return Err(PortError::Backend(anyhow!(
            "{what} is {size} bytes as JSON, more than a DynamoDB item holds ({MAX_BODY})"
        )));
    }
    Ok(item)
}

fn device_from(item: &Item) -> PortResult<DeviceRecord> {
    let mut record: DeviceRecord = body(item)?;
    record.next_mid =
        get_u64(item, "next_mid")?.ok_or_else(|| anyhow!("a device item without next_mid"))?;
    record.registered_at = DateTime::parse_from_rfc3339(get_str(item, "registered_at")?)
        .context("a device's registered_at")?
        .with_timezone(&Utc);
    Ok(record)
}

fn update(update: Update) -> TransactWriteItem {
    TransactWriteItem::builder().update(update).build()
}

/// The first of a commit's guarded items (the device, the receipt and its parked copy,
/// the entity: the first `guarded` writes) whose condition failed, if any.
fn refused_at(e: &SdkError<TransactWriteItemsError>, guarded: usize) -> Option<usize> {
    let TransactWriteItemsError::TransactionCanceledException(c) = e.as_service_error()? else {
        return None;
    };
    c.cancellation_reasons()
        .iter()
        .take(guarded)
        .position(|r| r.code() == Some("ConditionalCheckFailed"))
}

impl DynamoStore {
    async fn query_items(
        &self,
        pk: String,
        range: SortKeys<'_>,
        forward: bool,
        limit: Option<usize>,
    ) -> PortResult<Vec<Item>> {
        self.query_range(&self.sync_table, pk, range, forward, limit, None)
            .await
    }

    /// A device's part of a commit: its mid moves, its receipt (and a rejected one's
    /// parked copy) is put, all guarded.
    fn device_writes(
        &self,
        commit: &Commit,
        receipt: &Receipt,
    ) -> PortResult<Vec<TransactWriteItem>> {
        let table = &self.sync_table;
        let not_there = Some("attribute_not_exists(pk)");
        let mut writes = vec![update(build(
            Update::builder()
                .table_name(table)
                .set_key(Some(keys::device(&commit.device)))
                .update_expression("SET next_mid = :next")
                .condition_expression("next_mid = :mid")
                .expression_attribute_values(":mid", n(commit.mid))
                .expression_attribute_values(":next", n(commit.mid + 1))
                .build(),
        )?)];
        let item = sized_body(
            keys::receipt(&commit.device, commit.mid),
            receipt,
            "the receipt",
        )?;
        writes.push(transact_put(table, item, not_there)?);
        if receipt.result.status == MutationStatus::Rejected {
            let item = sized_body(
                keys::parked(&commit.device, commit.mid),
                receipt,
                "the receipt",
            )?;
            writes.push(transact_put(table, item, not_there)?);
        }
        Ok(writes)
    }

    /// The writes of a commit but the log's, the guarded ones first; and how many are
    /// guarded.
    fn commit_writes(
        &self,
        commit: &Commit,
        receipt: &Receipt,
    ) -> PortResult<(Vec<TransactWriteItem>, usize)> {
        let table = &self.sync_table;
        let not_there = Some("attribute_not_exists(pk)");
        let mut writes = Vec::new();
        if !commit.is_settlement() {
            writes.extend(self.device_writes(commit, receipt)?);
        }
        if let Some(e) = &commit.entity {
            let key = keys::entity(&e.band, &e.entity_type, &e.id);
            let mut item = sized_body(key, e, "the entity")?;
            item.insert("entity_version".into(), n(e.version));
            let put = if commit.expected_version == 0 {
                transact_put(table, item, not_there)?
            } else {
                let put = Put::builder()
                    .table_name(table)
                    .set_item(Some(item))
                    .condition_expression("entity_version = :expected")
                    .expression_attribute_values(":expected", n(commit.expected_version))
                    .build();
                TransactWriteItem::builder().put(build(put)?).build()
            };
            writes.push(put);
        }
        let guarded = writes.len();
        if let Some(h) = &commit.history {
            let key = keys::history(&h.band, &h.entity_type, &h.id, h.version);
            let mut item = sized_body(key, h, "the history entry")?;
            item.insert("committed_at".into(), s(ts(h.at)));
            writes.push(transact_put(table, item, None)?);
        }
        if let Some(counters) = Self::counter_write(table, commit)? {
            writes.push(counters);
        }
        if commit.conflicts.len() > MAX_CONFLICTS {
            return Err(PortError::Backend(anyhow!(
                "a commit settles at most {MAX_CONFLICTS} conflicts, not {}",
                commit.conflicts.len()
            )));
        }
        for c in &commit.conflicts {
            let item = sized_body(keys::conflict(&c.band, &c.id), c, "the conflict")?;
            writes.push(transact_put(table, item, None)?);
            let listed =
                keys::conflict_listing(keys::CONFLICT_AT_PREFIX, &c.band, c.opened_at, &c.id);
            writes.push(transact_put(table, with_body(listed, c)?, None)?);
            let open =
                keys::conflict_listing(keys::CONFLICT_OPEN_PREFIX, &c.band, c.opened_at, &c.id);
            writes.push(if c.resolution.is_none() {
                transact_put(table, with_body(open, c)?, None)?
            } else {
                let delete = Delete::builder()
                    .table_name(table)
                    .set_key(Some(open))
                    .build();
                TransactWriteItem::builder().delete(build(delete)?).build()
            });
        }
        Ok((writes, guarded))
    }

    /// The verdict's counters, added to its (band, type, device) shard (see
    /// [`keys::stats_shard`]): `ADD` on one small item, in the commit's transaction.
    fn counter_write(table: &str, commit: &Commit) -> PortResult<Option<TransactWriteItem>> {
        let Some((band, entity_type, counts)) = crate::entities::stats::counters(commit) else {
            return Ok(None);
        };
        let mut builder = Update::builder()
            .table_name(table)
            .set_key(Some(keys::stats_shard(band, &entity_type, &commit.device)))
            .expression_attribute_names("#type", "entity_type")
            .expression_attribute_values(":type", s(entity_type.clone()));
        let mut adds = Vec::with_capacity(counts.len());
        for (i, (counter, count)) in counts.iter().enumerate() {
            adds.push(format!("#c{i} :c{i}"));
            builder = builder
                .expression_attribute_names(format!("#c{i}"), counter)
                .expression_attribute_values(format!(":c{i}"), n(count));
        }
        let expression = format!("SET #type = :type ADD {}", adds.join(", "));
        Ok(Some(update(build(
            builder.update_expression(expression).build(),
        )?)))
    }

    /// One attempt: `Ok(None)` when it lost a race for the log's head alone (read the
    /// head again and retry).
    async fn try_commit(&self, commit: &Commit) -> Result<Option<Vec<Event>>, CommitError> {
        // The log's part first: the seqs are known from the head read here, so the
        // receipt is written with its event's seq in the same transaction.
        let mut log_writes = Vec::new();
        let mut stored = Vec::new();
        if let Some((channel, events)) = commit.events() {
            let head = self.head_or_create(channel).await?;
            let known = self.known_events(channel, &events).await?;
            let mut seq = head.seq;
            // (`Commit::check` refused a commit naming one event id twice.)
            for event in &events {
                if let Some(first) = known.get(&event.id) {
                    // Already in the log: it keeps its seq (the epoch lives on the head).
                    let mut first = first.clone();
                    first.epoch = head.epoch.clone();
                    stored.push(first);
                    continue;
                }
                seq += 1;
                // Sized like every item of the commit: the log's own writes do not check.
                sized_body(Item::new(), event, "the event")?;
                log_writes.extend(self.event_items(channel, event, seq)?);
                stored.push(event_at(channel, seq, &head.epoch, event));
            }
            if seq > head.seq {
                log_writes.push(self.head_move(channel, &head, seq)?);
            }
        }
        let mut receipt = commit.receipt.clone();
        if let Some(first) = stored.first() {
            receipt.result.seq = Some(first.seq);
        }
        let (mut writes, guarded) = self.commit_writes(commit, &receipt)?;
        writes.extend(log_writes);
        if writes.len() > MAX_ITEMS {
            return Err(PortError::Backend(anyhow!(
                "a commit of {} items is more than one transaction holds ({MAX_ITEMS})",
                writes.len()
            ))
            .into());
        }
        let items = writes.len();
        let sent = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match sent {
            Ok(out) => {
                let units: f64 = out
                    .consumed_capacity()
                    .iter()
                    .filter_map(|c| c.capacity_units())
                    .sum();
                self.commit_cost.commits.fetch_add(1, Ordering::Relaxed);
                // Milli-units, so an atomic integer adds them up.
                let milli = (units * 1000.0).round() as u64;
                self.commit_cost
                    .milli_units
                    .fetch_add(milli, Ordering::Relaxed);
                debug!(items, write_units = units, "entity commit");
                Ok(Some(stored))
            }
            Err(e) => {
                if let Some(i) = refused_at(&e, guarded) {
                    let what = match i {
                        _ if i + 1 == guarded && commit.entity.is_some() => format!(
                            "the entity is no longer at version {}",
                            commit.expected_version
                        ),
                        0 => format!(
                            "device {} is unknown or no longer at mid {}",
                            commit.device, commit.mid
                        ),
                        _ => format!("{}#{} has a receipt already", commit.device, commit.mid),
                    };
                    return Err(CommitError::Raced(what));
                }
                if e.as_service_error().is_some_and(lost_race) {
                    return Ok(None);
                }
                Err(backend("TransactWriteItems")(e).into())
            }
        }
    }

    /// The sort-key range of `ENTITIES#b` a listing reads, and the sort key to drop
    /// from it (the cursor itself: ranges are inclusive). None: nothing can follow.
    fn entity_range(
        entity_type: Option<&EntityTypeName>,
        after: Option<&(EntityTypeName, EntityId)>,
    ) -> Option<(SortKeys<'static>, Option<String>)> {
        let cursor = after.map(|(t, i)| keys::entity_sk(t, i));
        match (entity_type, after) {
            (None, None) => Some((SortKeys::All, None)),
            (None, Some(_)) => {
                let from = cursor.clone()?;
                Some((SortKeys::Between(from, keys::ENTITY_SK_END.into()), cursor))
            }
            (Some(t), after) => {
                let (start, end) = keys::entity_type_range(t);
                match after {
                    Some((at, _)) if at > t => None,
                    Some((at, _)) if at == t => {
                        let from = cursor.clone()?;
                        Some((SortKeys::Between(from, end), cursor))
                    }
                    _ => Some((SortKeys::Between(start, end), None)),
                }
            }
        }
    }
}

#[async_trait]
impl EntityStore for DynamoStore {
    #[instrument(skip(self), fields(%device), level = "debug")]
    async fn get_device(&self, device: &DeviceId) -> PortResult<Option<DeviceRecord>> {
        let item = self
            .get(&self.sync_table, keys::device(device), true)
            .await?;
        item.as_ref().map(device_from).transpose()
    }

    /// One conditional UpdateItem: it creates the device, or updates its record if the
    /// member is the one who registered it; `next_mid` and `registered_at` are only ever
    /// set when absent. When another member holds it, the stored record is read back.
    #[instrument(skip_all, fields(device = %device.device, member = %device.member), level = "debug")]
    async fn register_device(&self, device: &DeviceRecord) -> PortResult<DeviceRecord> {
        let record = with_body(Item::new(), device)?;
        let result = self
            .client
            .update_item()
            .table_name(&self.sync_table)
            .set_key(Some(keys::device(&device.device)))
            .update_expression(
                "SET #member = :member, #body = :body, \
                 next_mid = if_not_exists(next_mid, :mid), \
                 registered_at = if_not_exists(registered_at, :at)",
            )
            .condition_expression("attribute_not_exists(pk) OR #member = :member")
            .expression_attribute_names("#member", "member")
            .expression_attribute_names("#body", "body")
            .set_expression_attribute_values(Some(
                [
                    (":member".to_owned(), s(device.member.as_str())),
                    (":body".to_owned(), record["body"].clone()),
                    (":mid".to_owned(), n(device.next_mid.max(1))),
                    (":at".to_owned(), s(ts(device.registered_at))),
                ]
                .into(),
            ))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => device_from(&out.attributes.unwrap_or_default()),
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => {
                self.get_device(&device.device).await?.ok_or_else(|| {
                    anyhow!("device {} vanished while registering", device.device).into()
                })
            }
            Err(e) => Err(backend("UpdateItem")(e)),
        }
    }

    #[instrument(skip(self), fields(%device), level = "debug")]
    async fn receipts(&self, device: &DeviceId, from: u64, to: u64) -> PortResult<Vec<Receipt>> {
        let to = to.min(from.saturating_add(MAX_RECEIPTS - 1));
        if from > to {
            return Ok(Vec::new());
        }
        let range = SortKeys::Between(
            keys::mid_sk(keys::RECEIPT_PREFIX, from),
            keys::mid_sk(keys::RECEIPT_PREFIX, to),
        );
        bodies(
            &self
                .query_items(keys::device_pk(device), range, true, None)
                .await?,
        )
    }

    /// One Query of the device's `PARKED#` items, backwards.
    #[instrument(skip(self), fields(%device), level = "debug")]
    async fn parked(&self, device: &DeviceId, limit: usize) -> PortResult<Vec<Receipt>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let range = SortKeys::Prefix(keys::PARKED_PREFIX);
        bodies(
            &self
                .query_items(keys::device_pk(device), range, false, Some(limit))
                .await?,
        )
    }

    /// One Query of the device's `PARKED#` items below `before`, backwards.
    #[instrument(skip(self), fields(%device), level = "debug")]
    async fn parked_before(
        &self,
        device: &DeviceId,
        before: Option<u64>,
        limit: usize,
    ) -> PortResult<Vec<Receipt>> {
        let Some(last) = before.unwrap_or(u64::MAX).checked_sub(1) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let range = SortKeys::Between(
            keys::mid_sk(keys::PARKED_PREFIX, 0),
            keys::mid_sk(keys::PARKED_PREFIX, last),
        );
        bodies(
            &self
                .query_items(keys::device_pk(device), range, false, Some(limit))
                .await?,
        )
    }

    /// One DeleteItem of the parked copy (the receipt stays), answering whether it was
    /// there.
    #[instrument(skip(self), fields(%device), level = "debug")]
    async fn dismiss_parked(&self, device: &DeviceId, mid: u64) -> PortResult<bool> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.sync_table)
            .set_key(Some(keys::parked(device, mid)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(backend("DeleteItem"))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    #[instrument(skip(self), level = "debug")]
    async fn get_entity(
        &self,
        band: &BandId,
        entity_type: &EntityTypeName,
        id: &EntityId,
    ) -> PortResult<Option<EntityRecord>> {
        self.get_body(&self.sync_table, keys::entity(band, entity_type, id))
            .await
    }

    /// One Query of the band's `ENTITIES#b` partition. A `limit` of 0 reads one.
    #[instrument(skip(self), level = "debug")]
    async fn list_entities(
        &self,
        band: &BandId,
        entity_type: Option<&EntityTypeName>,
        after: Option<&(EntityTypeName, EntityId)>,
        limit: usize,
    ) -> PortResult<EntityPage> {
        let limit = limit.max(1);
        let Some((range, skip)) = Self::entity_range(entity_type, after) else {
            return Ok(EntityPage {
                entities: Vec::new(),
                next: None,
            });
        };
        // One more than asked, to know whether a next page exists; one more again when
        // the cursor itself may come back.
        let fetch = limit.saturating_add(1 + usize::from(skip.is_some()));
        let items = self
            .query_items(keys::entities_pk(band), range, true, Some(fetch))
            .await?;
        let mut entities = Vec::with_capacity(items.len());
        for item in &items {
            if skip.as_deref() == Some(get_str(item, "sk")?) {
                continue;
            }
            entities.push(body::<EntityRecord>(item)?);
        }
        Ok(EntityPage::of(entities, limit))
    }

    #[instrument(skip(self), level = "debug")]
    async fn history(
        &self,
        band: &BandId,
        entity_type: &EntityTypeName,
        id: &EntityId,
        after_version: u64,
        limit: usize,
    ) -> PortResult<Vec<HistoryEntry>> {
        if limit == 0 || after_version == u64::MAX {
            return Ok(Vec::new());
        }
        let range = SortKeys::Between(
            keys::version_sk(after_version + 1),
            keys::version_sk(u64::MAX),
        );
        let pk = keys::history_pk(band, entity_type, id);
        bodies(&self.query_items(pk, range, true, Some(limit)).await?)
    }

    #[instrument(skip(self), level = "debug")]
    async fn history_entry(
        &self,
        band: &BandId,
        entity_type: &EntityTypeName,
        id: &EntityId,
        version: u64,
    ) -> PortResult<Option<HistoryEntry>> {
        let key = keys::history(band, entity_type, id, version);
        self.get_body(&self.sync_table, key).await
    }

    /// Retried (after reading the head again) only when it lost the race for the log's
    /// head; this process's writers to one channel take turns, as appends do.
    #[instrument(skip_all, fields(device = %commit.device, mid = commit.mid), level = "debug")]
    async fn commit_events(&self, commit: &Commit) -> Result<Vec<Event>, CommitError> {
        commit.check()?;
        let turn = commit.event.as_ref().map(|(channel, _)| self.turn(channel));
        let _turn = match &turn {
            Some(t) => Some(t.lock().await),
            None => None,
        };
        let mut attempt = 1;
        loop {
            if let Some(stored) = self.try_commit(commit).await? {
                return Ok(stored);
            }
            if !APPEND_RETRY.may_retry(attempt) {
                return Err(PortError::Conflict(format!(
                    "commit of {}#{} lost the race for the log's head {attempt} times",
                    commit.device, commit.mid
                ))
                .into());
            }
            self.sleeper.sleep(APPEND_RETRY.jittered(attempt)).await;
            attempt += 1;
        }
    }

    /// One Query of the `AT#` (or `OPEN#`) listing, backwards.
    #[instrument(skip(self), level = "debug")]
    async fn list_conflicts(
        &self,
        band: &BandId,
        open_only: bool,
        limit: usize,
    ) -> PortResult<Vec<ConflictRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let prefix = if open_only {
            keys::CONFLICT_OPEN_PREFIX
        } else {
            keys::CONFLICT_AT_PREFIX
        };
        let items = self
            .query_items(
                keys::conflicts_pk(band),
                SortKeys::Prefix(prefix),
                false,
                Some(limit),
            )
            .await?;
        bodies(&items)
    }

    #[instrument(skip(self), level = "debug")]
    async fn get_conflict(
        &self,
        band: &BandId,
        id: &ConflictId,
    ) -> PortResult<Option<ConflictRecord>> {
        self.get_body(&self.sync_table, keys::conflict(band, id))
            .await
    }

    /// The operator's retention pass: a Query of the band's entities, page by page, and
    /// for each a Query of its history's keys and times (no bodies); old entries below
    /// the entity's version go in batches.
    #[instrument(skip(self), level = "debug")]
    async fn prune_history(&self, band: &BandId, before: DateTime<Utc>) -> PortResult<u64> {
        let cutoff = ts(before);
        let mut gone = 0;
        let mut after = None;
        loop {
            let page = self
                .list_entities(band, None, after.as_ref(), PRUNE_PAGE)
                .await?;
            for e in &page.entities {
                let pk = keys::history_pk(band, &e.entity_type, &e.id);
                let entries = self
                    .query_range(
                        &self.sync_table,
                        pk.clone(),
                        SortKeys::Prefix(keys::VERSION_PREFIX),
                        true,
                        None,
                        Some("sk, committed_at"),
                    )
                    .await?;
                let mut old = Vec::new();
                for item in &entries {
                    let sk = get_str(item, "sk")?;
                    let version = keys::version_of(sk)
                        .ok_or_else(|| anyhow!("a history item with a bad sort key {sk}"))?;
                    if version < e.version && get_str(item, "committed_at")? < cutoff.as_str() {
                        old.push(keys::key(pk.clone(), sk));
                    }
                }
                gone += old.len() as u64;
                self.delete_all(&self.sync_table, old).await?;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(gone),
            }
        }
    }

    /// One Query of the band's `STATS#b` shards, summed per (type, counter).
    #[instrument(skip(self), level = "debug")]
    async fn verdict_counts(&self, band: &BandId) -> PortResult<Vec<VerdictCount>> {
        let items = self
            .query_items(keys::stats_pk(band), SortKeys::All, true, None)
            .await?;
        let mut sums: BTreeMap<(String, String), u64> = BTreeMap::new();
        for item in &items {
            let entity_type = get_str(item, "entity_type")?;
            for name in item.keys() {
                if !crate::entities::stats::is_counter(name) {
                    continue;
                }
                let count = get_u64(item, name)?.unwrap_or(0);
                *sums
                    .entry((entity_type.to_owned(), name.clone()))
                    .or_default() += count;
            }
        }
        Ok(sums
            .into_iter()
            .map(|((entity_type, counter), count)| VerdictCount {
                entity_type,
                counter,
                count,
            })
            .collect())
    }
}
