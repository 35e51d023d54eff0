//! Bands' configurations (with the registry of bands) and their sources.
//!
//! Both records carry their revision as a number attribute `rev` beside the body, so a
//! conditional write can name it (`rev = :rev`): a write from a read that another write
//! overtook fails its condition and writes nothing. Items written before revisions have
//! no `rev` (revision 0).

use super::DynamoStore;
use super::client::{backend, build, is_condition_failure, lost_race};
use super::item::{Item, body, get_u64, n, with_body};
use super::keys;
use crate::model::{BandId, Source, SourceId, SourcePurge, SyncConfiguration};
use crate::ports::{ConfigStore, PortResult, Revised, SourceStore, WriteOutcome, new_revision};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use serde::de::DeserializeOwned;
use tracing::instrument;

/// The stored revision attribute.
const REV: &str = "rev";

/// `item` with `revision` in its `rev` attribute.
fn with_revision(mut item: Item, revision: u64) -> Item {
    item.insert(REV.into(), n(revision));
    item
}

fn revised<T: DeserializeOwned>(item: &Item) -> PortResult<Revised<T>> {
    Ok(Revised {
        record: body(item)?,
        revision: get_u64(item, REV)?.unwrap_or(0),
    })
}

fn revised_source(item: &Item) -> PortResult<Source> {
    let r = revised::<Source>(item)?;
    Ok(Source {
        revision: r.revision,
        ..r.record
    })
}

/// The condition of a write that expects `expected` (see [`SourceStore::write_source`]),
/// and the value it names.
fn condition(expected: Option<u64>) -> (&'static str, Option<u64>) {
    match expected {
        None => ("attribute_not_exists(pk)", None),
        // Written before revisions (nothing writes a 0 any more).
        Some(0) => ("attribute_exists(pk) AND attribute_not_exists(rev)", None),
        Some(rev) => ("rev = :rev", Some(rev)),
    }
}

#[async_trait]
impl ConfigStore for DynamoStore {
    #[instrument(skip(self), level = "debug")]
    async fn get_config(&self, band: &BandId) -> PortResult<Option<SyncConfiguration>> {
        self.get_body(&self.sync_table, keys::config(band)).await
    }

    #[instrument(skip(self), level = "debug")]
    async fn get_config_revised(
        &self,
        band: &BandId,
    ) -> PortResult<Option<Revised<SyncConfiguration>>> {
        let item = self.get(&self.sync_table, keys::config(band), true).await?;
        item.as_ref().map(revised).transpose()
    }

    #[instrument(skip_all, fields(band = %config.band), level = "debug")]
    /// With the band's entry in the registry partition (`BANDS`), in one transaction.
    async fn put_config(&self, config: &SyncConfiguration) -> PortResult<()> {
        let item = with_revision(
            with_body(keys::config(&config.band), config)?,
            new_revision(),
        );
        let registry = keys::registry_entry(&config.band);
        self.put_together(&self.sync_table, vec![item, registry])
            .await
    }

    /// [`Self::put_config`]'s transaction, the configuration's put under the condition.
    #[instrument(skip_all, fields(band = %config.band), level = "debug")]
    async fn write_config(
        &self,
        config: &SyncConfiguration,
        expected: Option<u64>,
    ) -> PortResult<WriteOutcome> {
        let revision = new_revision();
        let item = with_revision(with_body(keys::config(&config.band), config)?, revision);
        let (condition, value) = condition(expected);
        let put = build(
            Put::builder()
                .table_name(&self.sync_table)
                .set_item(Some(item))
                .condition_expression(condition)
                .set_expression_attribute_values(
                    value.map(|v| [(":rev".to_owned(), n(v))].into_iter().collect()),
                )
                .build(),
        )?;
        let registry = build(
            Put::builder()
                .table_name(&self.sync_table)
                .set_item(Some(keys::registry_entry(&config.band)))
                .build(),
        )?;
        let writes = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().put(registry).build(),
        ];
        match self.transact(writes).await {
            Ok(()) => Ok(WriteOutcome::Written { revision }),
            Err(e) if e.as_service_error().is_some_and(lost_race) => {
                Ok(WriteOutcome::GoneOrChanged)
            }
            Err(e) => Err(backend("TransactWriteItems")(e)),
        }
    }

    /// A Query of the registry partition. (One partition for every band: bands are few
    /// and their configurations rarely written.)
    #[instrument(skip(self), level = "debug")]
    async fn list_bands(&self) -> PortResult<Vec<BandId>> {
        self.sort_key_ids(
            &self.sync_table,
            keys::REGISTRY_PK.into(),
            keys::REGISTRY_PREFIX,
            BandId::parse,
        )
        .await
    }
}

#[async_trait]
impl SourceStore for DynamoStore {
    #[instrument(skip(self), level = "debug")]
    async fn get_source(&self, band: &BandId, source: &SourceId) -> PortResult<Option<Source>> {
        let item = self
            .get(&self.sync_table, keys::source(band, source), true)
            .await?;
        item.as_ref().map(revised_source).transpose()
    }

    #[instrument(skip(self), level = "debug")]
    async fn list_sources(&self, band: &BandId) -> PortResult<Vec<Source>> {
        self.query(
            &self.sync_table,
            keys::band_pk(band),
            keys::SOURCE_PREFIX,
            true,
            None,
        )
        .await?
        .iter()
        .map(revised_source)
        .collect()
    }

    #[instrument(skip_all, fields(band = %source.band, source = %source.id), level = "debug")]
    async fn put_source(&self, source: &Source) -> PortResult<()> {
        let item = with_body(keys::source(&source.band, &source.id), source)?;
        self.put(&self.sync_table, with_revision(item, new_revision()))
            .await
    }

    /// One conditional PutItem. The body is the whole record, but the condition makes it
    /// as narrow as an attribute-level update: it lands only on the very revision the
    /// writer read, whose other fields it therefore repeats unchanged.
    #[instrument(skip_all, fields(band = %source.band, source = %source.id), level = "debug")]
    async fn write_source(
        &self,
        source: &Source,
        expected: Option<u64>,
    ) -> PortResult<WriteOutcome> {
        let revision = new_revision();
        let item = with_body(keys::source(&source.band, &source.id), source)?;
        let (condition, value) = condition(expected);
        let result = self
            .client
            .put_item()
            .table_name(&self.sync_table)
            .set_item(Some(with_revision(item, revision)))
            .condition_expression(condition)
            .set_expression_attribute_values(
                value.map(|v| [(":rev".to_owned(), n(v))].into_iter().collect()),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(WriteOutcome::Written { revision }),
            Err(e) if e.as_service_error().is_some_and(is_condition_failure) => {
                Ok(WriteOutcome::GoneOrChanged)
            }
            Err(e) => Err(backend("PutItem")(e)),
        }
    }

    #[instrument(skip(self), level = "debug")]
    async fn delete_source(&self, band: &BandId, source: &SourceId) -> PortResult<()> {
        self.delete_all(&self.sync_table, vec![keys::source(band, source)])
            .await
    }

    #[instrument(skip_all, fields(band = %purge.band, source = %purge.source), level = "debug")]
    async fn put_purge(&self, purge: &SourcePurge) -> PortResult<()> {
        let item = with_body(keys::purge(&purge.band, &purge.source), purge)?;
        self.put(&self.sync_table, item).await
    }

    #[instrument(skip(self), level = "debug")]
    async fn purges(&self, band: &BandId) -> PortResult<Vec<SourcePurge>> {
        self.query_bodies(&self.sync_table, keys::band_pk(band), keys::PURGE_PREFIX)
            .await
    }

    #[instrument(skip(self), level = "debug")]
    async fn forget_purge(&self, band: &BandId, source: &SourceId) -> PortResult<()> {
        self.delete_all(&self.sync_table, vec![keys::purge(band, source)])
            .await
    }

    /// A strongly consistent read of the `BAND#b / GEN#s` counter item.
    #[instrument(skip(self), level = "debug")]
    async fn generation(&self, band: &BandId, source: &SourceId) -> PortResult<u64> {
        let item = self
            .get(&self.sync_table, keys::generation(band, source), true)
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
            .set_key(Some(keys::generation(band, source)))
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
