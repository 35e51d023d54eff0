//! Bands' configurations (with the registry of bands) and their sources.

use super::DynamoStore;
use super::client::backend;
use super::item::{get_u64, n, with_body};
use super::keys;
use crate::model::{BandId, Source, SourceId, SyncConfiguration};
use crate::ports::{ConfigStore, PortResult, SourceStore};
use async_trait::async_trait;
use tracing::instrument;

#[async_trait]
impl ConfigStore for DynamoStore {
    #[instrument(skip(self), level = "debug")]
    async fn get_config(&self, band: &BandId) -> PortResult<Option<SyncConfiguration>> {
        self.get_body(&self.sync_table, keys::config(band)).await
    }

    #[instrument(skip_all, fields(band = %config.band), level = "debug")]
    /// With the band's entry in the registry partition (`BANDS`), in one transaction.
    async fn put_config(&self, config: &SyncConfiguration) -> PortResult<()> {
        let item = with_body(keys::config(&config.band), config)?;
        let registry = keys::registry_entry(&config.band);
        self.put_together(&self.sync_table, vec![item, registry])
            .await
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
        self.get_body(&self.sync_table, keys::source(band, source))
            .await
    }

    #[instrument(skip(self), level = "debug")]
    async fn list_sources(&self, band: &BandId) -> PortResult<Vec<Source>> {
        self.query_bodies(&self.sync_table, keys::band_pk(band), keys::SOURCE_PREFIX)
            .await
    }

    #[instrument(skip_all, fields(band = %source.band, source = %source.id), level = "debug")]
    async fn put_source(&self, source: &Source) -> PortResult<()> {
        let item = with_body(keys::source(&source.band, &source.id), source)?;
        self.put(&self.sync_table, item).await
    }

    #[instrument(skip(self), level = "debug")]
    async fn delete_source(&self, band: &BandId, source: &SourceId) -> PortResult<()> {
        self.delete_all(&self.sync_table, vec![keys::source(band, source)])
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
