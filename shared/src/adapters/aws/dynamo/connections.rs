//! The connections table: each WebSocket connection (`CONN#id / META`, expiring past
//! API Gateway's 2 h), each channel's subscribers (`CHAN#c / CONN#id`: fan-out is one
//! Query) and each connection's subscriptions (`CONN#id / SUB#c`: cleanup on disconnect).

use super::DynamoStore;
use super::item::{n, s, ts, with_body};
use super::keys;
use crate::model::{CONNECTION_TTL, ChannelName, Connection, ConnectionId};
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
