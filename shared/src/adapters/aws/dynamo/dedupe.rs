//! Webhook message dedupe: one item per message, expiring after the ttl.

use super::DynamoStore;
use super::client::{backend, is_condition_failure};
use super::item::{get_u64, n};
use super::keys;
use crate::ports::{DedupeStore, PortResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tracing::instrument;

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
        let mut item = keys::dedupe(dedupe_key);
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
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => return Ok(false),
            Err(e) => return Err(backend("PutItem")(e)),
        }
        // Compatibility with tables written by earlier builds, which stored a message
        // under `WEBHOOK#WEBHOOK#...` (see `keys::legacy_dedupe`): a message first seen
        // before the upgrade and redelivered after it is still a repeat. Nothing writes
        // that form any more, so reading it after our put cannot race a writer; and as
        // dedupe rows live for the ttl (a day), this read can go once every deployment
        // has run this build for longer than that.
        Ok(!self.live_in_legacy_form(dedupe_key, now).await?)
    }

    #[instrument(skip(self), level = "debug")]
    async fn seen(&self, dedupe_key: &str, now: DateTime<Utc>) -> PortResult<bool> {
        let row = self
            .get(&self.sync_table, keys::dedupe(dedupe_key), true)
            .await?;
        if let Some(row) = row
            && live(&row, now)?
        {
            return Ok(true);
        }
        self.live_in_legacy_form(dedupe_key, now).await
    }
}

/// A dedupe row counts until its `expires_ms` has passed (the TTL sweeper runs late).
fn live(row: &super::item::Item, now: DateTime<Utc>) -> PortResult<bool> {
    Ok(get_u64(row, "expires_ms")?
        .is_none_or(|ms| i64::try_from(ms).unwrap_or(i64::MAX) > now.timestamp_millis()))
}

impl DynamoStore {
    /// Does an earlier build's row for this message still count? The same test as the
    /// put's condition: live unless its `expires_ms` has passed.
    async fn live_in_legacy_form(&self, dedupe_key: &str, now: DateTime<Utc>) -> PortResult<bool> {
        let Some(old) = self
            .get(&self.sync_table, keys::legacy_dedupe(dedupe_key), true)
            .await?
        else {
            return Ok(false);
        };
        live(&old, now)
    }
}
