//! The per-channel event log on the sync table: the head (seq, epoch, delivered), one
//! item per event, and one per event id (what makes appends idempotent).

use super::DynamoStore;
use super::client::{SortKeys, backend, build, is_condition_failure, lost_race, transact_put};
use super::item::{Item, body, get_str, get_u64, n, s, ts, with_body};
use super::keys;
use crate::backoff::Backoff;
use crate::model::{ChannelHead, ChannelName, Event, NewEvent};
use crate::ports::{ChannelLog, PortError, PortResult};
use anyhow::anyhow;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::instrument;

/// Events per append transaction: 2 items each (the event and its id) plus the head,
/// under DynamoDB's 100 items per transaction.
const APPEND_CHUNK: usize = 49;
/// Attempts of an append that lost a race for the head, and the waits between them:
/// windows from 10 ms up to 500 ms, full jitter so competing writers spread out.
pub(super) const APPEND_RETRY: Backoff =
    Backoff::new(Duration::from_millis(10), Duration::from_millis(500)).with_max_attempts(50);

/// A channel head as stored.
pub(super) struct Head {
    pub(super) seq: u64,
    pub(super) epoch: String,
}

impl DynamoStore {
    /// The head, created (seq 0, new epoch) when the channel has none.
    pub(super) async fn head_or_create(&self, channel: &ChannelName) -> PortResult<Head> {
        if let Some(item) = self
            .get(&self.sync_table, keys::head(channel), true)
            .await?
        {
            return Ok(Head {
                seq: get_u64(&item, "seq")?.unwrap_or(0),
                epoch: get_str(&item, "epoch")?.to_owned(),
            });
        }
        let epoch = uuid::Uuid::new_v4().simple().to_string();
        let mut item = keys::head(channel);
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
    pub(super) async fn known_events(
        &self,
        channel: &ChannelName,
        events: &[NewEvent],
    ) -> PortResult<HashMap<String, Event>> {
        // DynamoDB refuses a batch that names one key twice.
        let ids: std::collections::BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let id_keys: Vec<Item> = ids.iter().map(|id| keys::event_id(channel, id)).collect();
        let mut seqs: HashMap<u64, String> = HashMap::new();
        for item in self.batch_get(id_keys).await? {
            let seq = get_u64(&item, "seq")?.ok_or_else(|| anyhow!("event id item without seq"))?;
            let id = get_str(&item, "sk")?
                .trim_start_matches(keys::EVENT_ID_PREFIX)
                .to_owned();
            seqs.insert(seq, id);
        }
        let seq_keys: Vec<Item> = seqs.keys().map(|seq| keys::event(channel, *seq)).collect();
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

    /// The turn of this process's writers to `channel`'s head (appends and entity
    /// commits): they wait for each other instead of racing.
    pub(super) fn turn(&self, channel: &ChannelName) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.appending.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(channel.to_string()).or_default())
    }

    /// A seq mark of the head (`delivered`; `pruned`, the last seq a prune took), read
    /// strongly consistent; 0 for none.
    async fn head_mark(&self, channel: &ChannelName, attribute: &str) -> PortResult<u64> {
        let head = self
            .get(&self.sync_table, keys::head(channel), true)
            .await?;
        Ok(match head {
            Some(item) => get_u64(&item, attribute)?.unwrap_or(0),
            None => 0,
        })
    }

    /// Raise the head's `attribute` (a seq mark: `delivered`, `pruned`) to `seq`, never
    /// lowering it: a concurrent writer may have moved it further.
    async fn raise_head(&self, channel: &ChannelName, attribute: &str, seq: u64) -> PortResult<()> {
        let condition = format!(
            "attribute_exists(pk) AND (attribute_not_exists({attribute}) OR {attribute} < :s)"
        );
        let result = self
            .client
            .update_item()
            .table_name(&self.sync_table)
            .set_key(Some(keys::head(channel)))
            .update_expression(format!("SET {attribute} = :s"))
            .condition_expression(condition)
            .expression_attribute_values(":s", n(seq))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => Ok(()),
            Err(e) => Err(backend("UpdateItem")(e)),
        }
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
        let mut writes = Vec::new();
        let mut out = Vec::with_capacity(events.len());
        let mut seq = head.seq;
        let mut fresh: HashMap<&str, u64> = HashMap::new();
        for e in events {
            if let Some(stored) = known.get(&e.id) {
                // The epoch lives on the head, not on each event item.
                let mut event = stored.clone();
                event.epoch = head.epoch.clone();
                out.push(event);
                continue;
            }
            if let Some(&first) = fresh.get(e.id.as_str()) {
                // The same id twice in one batch: one copy, as the embedded store does.
                out.push(event_at(channel, first, &head.epoch, e));
                continue;
            }
            seq += 1;
            fresh.insert(&e.id, seq);
            writes.extend(self.event_items(channel, e, seq)?);
            out.push(event_at(channel, seq, &head.epoch, e));
        }
        if writes.is_empty() {
            return Ok(Some(out));
        }
        writes.push(self.head_move(channel, &head, seq)?);
        match self.transact(writes).await {
            Ok(()) => Ok(Some(out)),
            Err(e) if e.as_service_error().is_some_and(lost_race) => Ok(None),
            Err(e) => Err(backend("TransactWriteItems")(e)),
        }
    }
}

impl DynamoStore {
    /// The two items of an event at `seq`: the event (with its time and id, for pruning)
    /// and its id entry, each only if absent.
    pub(super) fn event_items(
        &self,
        channel: &ChannelName,
        e: &NewEvent,
        seq: u64,
    ) -> PortResult<[TransactWriteItem; 2]> {
        let not_there = Some("attribute_not_exists(pk)");
        let mut record = with_body(keys::event(channel, seq), e)?;
        record.insert("ts".into(), s(ts(e.ts)));
        record.insert("evid".into(), s(e.id.clone()));
        let mut id_item = keys::event_id(channel, &e.id);
        id_item.insert("seq".into(), n(seq));
        Ok([
            transact_put(&self.sync_table, record, not_there)?,
            transact_put(&self.sync_table, id_item, not_there)?,
        ])
    }

    /// The head moved from `head.seq` to `seq`, if it is still there in the same epoch.
    pub(super) fn head_move(
        &self,
        channel: &ChannelName,
        head: &Head,
        seq: u64,
    ) -> PortResult<TransactWriteItem> {
        let update = build(
            Update::builder()
                .table_name(&self.sync_table)
                .set_key(Some(keys::head(channel)))
                .update_expression("SET seq = :new")
                .condition_expression("seq = :old AND epoch = :epoch")
                .expression_attribute_values(":new", n(seq))
                .expression_attribute_values(":old", n(head.seq))
                .expression_attribute_values(":epoch", s(head.epoch.clone()))
                .build(),
        )?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

pub(super) fn event_at(channel: &ChannelName, seq: u64, epoch: &str, e: &NewEvent) -> Event {
    e.clone().at(channel.clone(), seq, epoch.to_owned())
}

fn event_from(channel: &ChannelName, item: &Item) -> PortResult<Event> {
    let new: NewEvent = body(item)?;
    let seq = keys::seq_of(get_str(item, "sk")?)
        .ok_or_else(|| anyhow!("event item with a bad sort key"))?;
    let epoch = get_str(item, "epoch").unwrap_or_default().to_owned();
    Ok(new.at(channel.clone(), seq, epoch))
}

#[async_trait]
impl ChannelLog for DynamoStore {
    #[instrument(skip(self, events), fields(%channel, count = events.len()), level = "debug")]
    async fn append(&self, channel: &ChannelName, events: &[NewEvent]) -> PortResult<Vec<Event>> {
        let turn = self.turn(channel);
        let _turn = turn.lock().await;
        let mut out = Vec::with_capacity(events.len());
        for chunk in events.chunks(APPEND_CHUNK) {
            let mut attempt = 1;
            loop {
                if let Some(stored) = self.append_chunk(channel, chunk).await? {
                    out.extend(stored);
                    break;
                }
                if !APPEND_RETRY.may_retry(attempt) {
                    return Err(PortError::Conflict(format!(
                        "append to {channel} lost the race {attempt} times"
                    )));
                }
                self.sleeper.sleep(APPEND_RETRY.jittered(attempt)).await;
                attempt += 1;
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
            .get(&self.sync_table, keys::head(channel), true)
            .await?
        else {
            return Ok(Vec::new());
        };
        let epoch = get_str(&head, "epoch")?.to_owned();
        let range = SortKeys::Between(
            keys::seq_sk(after_seq.saturating_add(1)),
            keys::seq_sk(u64::MAX),
        );
        self.query_range(
            &self.sync_table,
            keys::channel_pk(channel),
            range,
            true,
            Some(limit),
            None,
        )
        .await?
        .iter()
        .map(|i| {
            event_from(channel, i).map(|mut e| {
                e.epoch = epoch.clone();
                e
            })
        })
        .collect()
    }

    #[instrument(skip(self), fields(%channel), level = "debug")]
    async fn head(&self, channel: &ChannelName) -> PortResult<Option<ChannelHead>> {
        let Some(item) = self
            .get(&self.sync_table, keys::head(channel), true)
            .await?
        else {
            return Ok(None);
        };
        let seq = get_u64(&item, "seq")?.unwrap_or(0);
        let oldest = self
            .query(
                &self.sync_table,
                keys::channel_pk(channel),
                keys::SEQ_PREFIX,
                true,
                Some(1),
            )
            .await?;
        let oldest = match oldest.first() {
            Some(i) => event_from(channel, i)?.seq,
            None => seq + 1,
        };
        // Everything up to the low-water mark counts as gone, whatever a prune cut short
        // left of it: a resume from below the mark is history lost, never a replay with
        // a hole in it.
        let first_retained = oldest.max(get_u64(&item, "pruned")?.unwrap_or(0) + 1);
        Ok(Some(ChannelHead {
            seq,
            epoch: get_str(&item, "epoch")?.to_owned(),
            first_retained,
        }))
    }

    /// Everything up to the newest event older than `before` goes (by seq, so the rest is
    /// one gapless run), with the id entries that made those appends idempotent.
    ///
    /// The deletes are batches, not one step: the head's low-water mark (`pruned`, the
    /// last seq that goes) moves first, so a prune cut short between batches (or with
    /// items DynamoDB left unprocessed) leaves leftovers below the mark that [`Self::head`]
    /// no longer counts, never a hole in what it reports retained. The next prune
    /// deletes the leftovers.
    #[instrument(skip(self), fields(%channel), level = "debug")]
    async fn prune(&self, channel: &ChannelName, before: DateTime<Utc>) -> PortResult<u64> {
        // Only the keys, times and ids: a prune reads every retained event of the channel.
        let events = self
            .query_range(
                &self.sync_table,
                keys::channel_pk(channel),
                SortKeys::Prefix(keys::SEQ_PREFIX),
                true,
                None,
                Some("sk, ts, evid"),
            )
            .await?;
        let cutoff = ts(before);
        let marked = self.head_mark(channel, "pruned").await?;
        let mut last_old = None;
        for (i, item) in events.iter().enumerate() {
            let sk = get_str(item, "sk")?;
            let seq = keys::seq_of(sk).ok_or_else(|| anyhow!("event with sort key {sk}"))?;
            if seq <= marked || get_str(item, "ts")? < cutoff.as_str() {
                last_old = Some((i, seq));
            }
        }
        let Some((last_old, mark)) = last_old else {
            return Ok(0);
        };
        if mark > marked {
            self.raise_head(channel, "pruned", mark).await?;
        }
        let pk = keys::channel_pk(channel);
        let mut gone = Vec::new();
        for item in &events[..=last_old] {
            gone.push(keys::key(pk.clone(), get_str(item, "sk")?));
            gone.push(keys::event_id(channel, get_str(item, "evid")?));
        }
        self.delete_all(&self.sync_table, gone).await?;
        Ok(last_old as u64 + 1)
    }

    #[instrument(skip(self), fields(%channel), level = "debug")]
    async fn delivered(&self, channel: &ChannelName) -> PortResult<u64> {
        self.head_mark(channel, "delivered").await
    }

    #[instrument(skip(self), fields(%channel), level = "debug")]
    async fn mark_delivered(&self, channel: &ChannelName, seq: u64) -> PortResult<()> {
        self.raise_head(channel, "delivered", seq).await
    }
}
