//! Google watch channels: the record, and its entry in the band's listing.

use super::DynamoStore;
use super::client::{backend, build, lost_race};
use super::item::{Item, body, get_str, get_u64, n, s, ts, with_body};
use super::keys;
use crate::model::{BandId, WatchChannel};
use crate::ports::{PortResult, WatchChannelStore};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use tracing::instrument;

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
            keys::watch_channel(&channel.id),
            keys::band_watch(&channel.band, &channel.id),
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
            .get(&self.sync_table, keys::watch_channel(id), true)
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
            keys::band_pk(band),
            keys::WATCH_PREFIX,
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
            keys::watch_channel(&channel.id),
            keys::band_watch(&channel.band, &channel.id),
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
        for k in [keys::watch_channel(id), keys::band_watch(&channel.band, id)] {
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
