//! The connections table: each WebSocket connection (`CONN#id / META`, expiring past
//! API Gateway's 2 h), each channel's subscribers (`CHAN#c / CONN#id`: fan-out is one
//! Query) and each connection's subscriptions (`CONN#id / SUB#c`: cleanup on disconnect).
//! A fan-out entry carries its connection's device categories (`categories`, JSON), so
//! the broadcaster filters with the Query it already makes.

use super::DynamoStore;
use super::item::{Item, get_str, n, s, ts, with_body};
use super::keys;
use crate::model::{
    CONNECTION_TTL, ChannelName, Connection, ConnectionId, DeviceBinding, Subscriber,
};
use crate::ports::{ConnectionStore, PortResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tracing::instrument;

#[async_trait]
impl ConnectionStore for DynamoStore {
    #[instrument(skip_all, fields(id = %conn.id), level = "debug")]
    async fn put_connection(&self, conn: &Connection) -> PortResult<()> {
        let mut item = with_body(keys::connection(&conn.id), conn)?;
        item.insert("expires_at".into(), n(conn.expires_at.timestamp()));
        self.put(&self.connections_table, item).await
    }

    #[instrument(skip(self), level = "debug")]
    async fn get_connection(&self, id: &ConnectionId) -> PortResult<Option<Connection>> {
        self.get_body(&self.connections_table, keys::connection(id))
            .await
    }

    /// The record, its subscriptions and their fan-out entries (two Queries' worth of keys).
    #[instrument(skip(self), level = "debug")]
    async fn delete_connection(&self, id: &ConnectionId) -> PortResult<()> {
        let subscriptions = self.subscriptions(id).await?;
        let mut gone = vec![keys::connection(id)];
        for channel in subscriptions {
            gone.push(keys::subscription(id, &channel));
            gone.push(keys::subscriber(&channel, id));
        }
        self.delete_all(&self.connections_table, gone).await
    }

    #[instrument(skip(self), level = "debug")]
    async fn subscribe(
        &self,
        id: &ConnectionId,
        channel: &ChannelName,
        at: DateTime<Utc>,
    ) -> PortResult<()> {
        // Subscriptions expire with the longest a connection can live.
        let expires = (at + CONNECTION_TTL).timestamp();
        let mut fan_out = keys::subscriber(channel, id);
        let mut reverse = keys::subscription(id, channel);
        for item in [&mut fan_out, &mut reverse] {
            item.insert("subscribed_at".into(), s(ts(at)));
            item.insert("expires_at".into(), n(expires));
        }
        // One GetItem per subscribe (rare), so that fan-out needs none per event.
        let binding = self.get_connection(id).await?.and_then(|c| c.device);
        with_categories(&mut fan_out, binding.as_ref())?;
        self.put_together(&self.connections_table, vec![fan_out, reverse])
            .await
    }

    #[instrument(skip(self), level = "debug")]
    async fn unsubscribe(&self, id: &ConnectionId, channel: &ChannelName) -> PortResult<()> {
        let gone = vec![
            keys::subscriber(channel, id),
            keys::subscription(id, channel),
        ];
        self.delete_together(&self.connections_table, gone).await
    }

    #[instrument(skip(self), level = "debug")]
    async fn subscribers(&self, channel: &ChannelName) -> PortResult<Vec<ConnectionId>> {
        self.sort_key_ids(
            &self.connections_table,
            keys::channel_pk(channel),
            keys::SUBSCRIBER_PREFIX,
            ConnectionId::parse,
        )
        .await
    }

    /// The record, then every fan-out entry of its subscriptions (re-put with the
    /// categories, keeping their times).
    #[instrument(skip(self, binding), level = "debug")]
    async fn bind_device(&self, id: &ConnectionId, binding: &DeviceBinding) -> PortResult<bool> {
        let Some(mut conn) = self.get_connection(id).await? else {
            return Ok(false);
        };
        conn.device = Some(binding.clone());
        self.put_connection(&conn).await?;
        let reverse = self
            .entries(keys::connection_pk(id), keys::SUBSCRIPTION_PREFIX)
            .await?;
        for item in reverse {
            let channel = sk_id(&item, keys::SUBSCRIPTION_PREFIX, ChannelName::parse)?;
            let mut fan_out = keys::subscriber(&channel, id);
            for name in ["subscribed_at", "expires_at"] {
                if let Some(v) = item.get(name) {
                    fan_out.insert(name.into(), v.clone());
                }
            }
            with_categories(&mut fan_out, Some(binding))?;
            self.put(&self.connections_table, fan_out).await?;
        }
        Ok(true)
    }

    #[instrument(skip(self), level = "debug")]
    async fn subscribers_filtered(&self, channel: &ChannelName) -> PortResult<Vec<Subscriber>> {
        let items = self
            .entries(keys::channel_pk(channel), keys::SUBSCRIBER_PREFIX)
            .await?;
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            let connection = sk_id(item, keys::SUBSCRIBER_PREFIX, ConnectionId::parse)?;
            let categories = match item.get("categories").and_then(|v| v.as_s().ok()) {
                Some(raw) => serde_json::from_str(raw)
                    .map_err(|e| anyhow::anyhow!("decoding a subscriber's categories: {e}"))?,
                None => Vec::new(),
            };
            out.push(Subscriber {
                connection,
                categories,
            });
        }
        Ok(out)
    }

    #[instrument(skip(self), level = "debug")]
    async fn subscriptions(&self, id: &ConnectionId) -> PortResult<Vec<ChannelName>> {
        self.sort_key_ids(
            &self.connections_table,
            keys::connection_pk(id),
            keys::SUBSCRIPTION_PREFIX,
            ChannelName::parse,
        )
        .await
    }
}

impl DynamoStore {
    /// Every entry of a connections-table partition under `prefix`.
    async fn entries(&self, pk: String, prefix: &str) -> PortResult<Vec<Item>> {
        self.query(&self.connections_table, pk, prefix, true, None)
            .await
    }
}

/// The id an entry's sort key names after `prefix`.
fn sk_id<T>(
    item: &Item,
    prefix: &str,
    parse: fn(&str) -> Result<T, crate::model::ParseError>,
) -> PortResult<T> {
    let sk = get_str(item, "sk")?;
    Ok(parse(sk.trim_start_matches(prefix)).map_err(anyhow::Error::from)?)
}

/// Put a binding's categories on a fan-out entry (none: the attribute is left out).
fn with_categories(item: &mut Item, binding: Option<&DeviceBinding>) -> PortResult<()> {
    if let Some(b) = binding.filter(|b| !b.categories.is_empty()) {
        let raw = serde_json::to_string(&b.categories)
            .map_err(|e| anyhow::anyhow!("encoding categories: {e}"))?;
        item.insert("categories".into(), s(raw));
    }
    Ok(())
}
