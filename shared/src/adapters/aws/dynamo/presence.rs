//! Presence in the connections table: `PRES#b / MEMBER#m` holds a member's live
//! connection ids as a string set (`conns`), changed with `ADD` / `DELETE`, which are
//! idempotent under redelivery, and returning the item as it was (or became), so one
//! request tells whether this connect was the first device or this disconnect the last.
//! A leaving mark is indexed under `PRESENCE#LEAVING / <leaving_since>#<band>#<member>`,
//! put in the same transaction as the mark, so the sweep finds due marks with one Query.

use super::DynamoStore;
use super::client::{SortKeys, backend, build, is_condition_failure, lost_race, transact_put};
use super::item::{Item, get_str, s, ts};
use super::keys;
use crate::model::{BandId, ConnectionId, UserId};
use crate::ports::{Arrival, Departure, PortResult, PresenceRecord, PresenceStore};
use anyhow::Context as _;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{ReturnValue, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use tracing::instrument;

fn time(item: &Item, name: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .with_context(|| format!("bad stored {name} {t:?}"))
        })
        .transpose()
}

fn conns(item: &Item) -> &[String] {
    item.get("conns")
        .and_then(|v| v.as_ss().ok())
        .map(Vec::as_slice)
        .unwrap_or_default()
}

#[async_trait]
impl PresenceStore for DynamoStore {
    #[instrument(skip(self), level = "debug")]
    async fn arrive(
        &self,
        band: &BandId,
        member: &UserId,
        conn: &ConnectionId,
        at: DateTime<Utc>,
    ) -> PortResult<Arrival> {
        let out = self
            .client
            .update_item()
            .table_name(&self.connections_table)
            .set_key(Some(keys::presence(band, member)))
            .update_expression(
                "ADD conns :c SET since = if_not_exists(since, :at) REMOVE leaving_since, left_at",
            )
            .expression_attribute_values(
                ":c",
                aws_sdk_dynamodb::types::AttributeValue::Ss(vec![conn.to_string()]),
            )
            .expression_attribute_values(":at", s(ts(at)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(backend("UpdateItem"))?;
        let old = out.attributes.unwrap_or_default();
        let was = conns(&old);
        let kept = time(&old, "since")?;
        let leaving = time(&old, "leaving_since")?;
        let since = kept.unwrap_or(at);
        Ok(if was.iter().any(|c| c == conn.as_str()) {
            Arrival::Repeat { since }
        } else if was.is_empty() {
            match (leaving, kept) {
                (Some(mark), Some(_)) => {
                    // The mark went with the update; its index entry is only a hint (the
                    // sweep's settle refuses a member who is back), so a failure here is
                    // harmless and logged.
                    let gone = keys::leaving_mark(band, member, mark);
                    if let Err(e) = self
                        .delete_together(&self.connections_table, vec![gone])
                        .await
                    {
                        tracing::warn!(error = %e, "could not drop a leaving mark's index entry");
                    }
                    Arrival::Back { since }
                }
                _ => Arrival::Joined { since },
            }
        } else {
            Arrival::Another {
                since,
                devices: was.len() as u64 + 1,
            }
        })
    }

    #[instrument(skip(self), level = "debug")]
    async fn depart(
        &self,
        band: &BandId,
        member: &UserId,
        conn: &ConnectionId,
        at: DateTime<Utc>,
    ) -> PortResult<Departure> {
        let key = keys::presence(band, member);
        let result = self
            .client
            .update_item()
            .table_name(&self.connections_table)
            .set_key(Some(key.clone()))
            .update_expression("DELETE conns :c")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(
                ":c",
                aws_sdk_dynamodb::types::AttributeValue::Ss(vec![conn.to_string()]),
            )
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let now = match result {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => {
                return Ok(Departure::Unchanged);
            }
            Err(e) => return Err(backend("UpdateItem")(e)),
        };
        let Some(since) = time(&now, "since")? else {
            return Ok(Departure::Unchanged);
        };
        let remaining = conns(&now).len() as u64;
        if remaining > 0 {
            return Ok(Departure::Remaining { devices: remaining });
        }
        if now.contains_key("leaving_since") {
            return Ok(Departure::Unchanged);
        }
        // The mark and its index entry together: a mark the sweep cannot find would keep
        // the member online for ever.
        let mark = build(
            Update::builder()
                .table_name(&self.connections_table)
                .set_key(Some(key))
                .update_expression("SET leaving_since = :at")
                .condition_expression(
                    "attribute_exists(since) AND attribute_not_exists(conns) \
                     AND attribute_not_exists(leaving_since)",
                )
                .expression_attribute_values(":at", s(ts(at)))
                .build(),
        )?;
        let mut entry = keys::leaving_mark(band, member, at);
        entry.insert("band_id".into(), s(band.as_str()));
        entry.insert("member_id".into(), s(member.as_str()));
        entry.insert("since".into(), s(ts(since)));
        entry.insert("leaving_since".into(), s(ts(at)));
        let writes = vec![
            TransactWriteItem::builder().update(mark).build(),
            transact_put(&self.connections_table, entry, None)?,
        ];
        match self.transact(writes).await {
            Ok(()) => Ok(Departure::Leaving { since: at }),
            // A device came back, or another departure marked it, in between.
            Err(e) if e.as_service_error().is_some_and(lost_race) => Ok(Departure::Unchanged),
            Err(e) => Err(backend("TransactWriteItems")(e)),
        }
    }

    #[instrument(skip(self), level = "debug")]
    async fn leaving(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> PortResult<Vec<PresenceRecord>> {
        let items = self
            .query_range(
                &self.connections_table,
                keys::LEAVING_PK.to_owned(),
                SortKeys::Between("0".to_owned(), keys::leaving_until(before)),
                true,
                Some(limit),
                None,
            )
            .await?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let leaving = time(&item, "leaving_since")?.context("a leaving mark without a time")?;
            out.push(PresenceRecord {
                band: BandId::parse(get_str(&item, "band_id")?).map_err(anyhow::Error::from)?,
                member: UserId::parse(get_str(&item, "member_id")?).map_err(anyhow::Error::from)?,
                devices: 0,
                since: time(&item, "since")?.unwrap_or(leaving),
                leaving_since: Some(leaving),
            });
        }
        Ok(out)
    }

    #[instrument(skip(self), level = "debug")]
    async fn settle(
        &self,
        band: &BandId,
        member: &UserId,
        leaving_since: DateTime<Utc>,
    ) -> PortResult<bool> {
        let key = keys::presence(band, member);
        let mark = s(ts(leaving_since));
        let result = self
            .client
            .update_item()
            .table_name(&self.connections_table)
            .set_key(Some(key.clone()))
            .update_expression("REMOVE since SET left_at = :mark")
            .condition_expression("leaving_since = :mark AND attribute_not_exists(conns)")
            .expression_attribute_values(":mark", mark.clone())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => {
                // Settled already by an earlier round (true), or a device is back (false).
                let item = self.get(&self.connections_table, key, true).await?;
                Ok(item.is_some_and(|i| i.get("left_at") == Some(&mark)))
            }
            Err(e) => Err(backend("UpdateItem")(e)),
        }
    }

    #[instrument(skip(self), level = "debug")]
    async fn forget_mark(
        &self,
        band: &BandId,
        member: &UserId,
        leaving_since: DateTime<Utc>,
    ) -> PortResult<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.connections_table)
            .set_key(Some(keys::presence(band, member)))
            .update_expression("REMOVE leaving_since")
            .condition_expression("leaving_since = :mark")
            .expression_attribute_values(":mark", s(ts(leaving_since)))
            .send()
            .await;
        match result {
            Ok(_) => {}
            // A newer session or mark: leave it alone.
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => {}
            Err(e) => return Err(backend("UpdateItem")(e)),
        }
        let entry = keys::leaving_mark(band, member, leaving_since);
        self.delete_together(&self.connections_table, vec![entry])
            .await
    }

    #[instrument(skip(self), level = "debug")]
    async fn present(&self, band: &BandId) -> PortResult<Vec<PresenceRecord>> {
        let items = self
            .query(
                &self.connections_table,
                keys::presence_pk(band),
                keys::PRESENCE_MEMBER_PREFIX,
                true,
                None,
            )
            .await?;
        let mut out = Vec::new();
        for item in items {
            let Some(since) = time(&item, "since")? else {
                continue;
            };
            let sk = get_str(&item, "sk")?;
            let member = sk
                .strip_prefix(keys::PRESENCE_MEMBER_PREFIX)
                .context("a presence item outside its prefix")?;
            out.push(PresenceRecord {
                band: band.clone(),
                member: UserId::parse(member).map_err(anyhow::Error::from)?,
                devices: conns(&item).len() as u64,
                since,
                leaving_since: time(&item, "leaving_since")?,
            });
        }
        Ok(out)
    }
}
