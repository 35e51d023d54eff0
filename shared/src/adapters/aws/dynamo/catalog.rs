//! Sources' catalogs: the files a sync has seen.

use super::DynamoStore;
use super::item::{Item, bodies, with_body};
use super::keys;
use crate::model::{BandId, FileEntry, SourceId};
use crate::ports::{CatalogStore, PortResult};
use async_trait::async_trait;
use std::collections::HashMap;
use tracing::instrument;

fn file_item(file: &FileEntry) -> PortResult<Item> {
    let k = keys::file(&file.band, &file.source, &file.file_id);
    Ok(with_body(k, file)?)
}

#[async_trait]
impl CatalogStore for DynamoStore {
    #[instrument(skip(self), level = "debug")]
    async fn list_files(&self, band: &BandId, source: &SourceId) -> PortResult<Vec<FileEntry>> {
        self.query_bodies(
            &self.sync_table,
            keys::files_pk(band, source),
            keys::FILE_PREFIX,
        )
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
        self.delete_all(&self.sync_table, vec![keys::file(band, source, file_id)])
            .await
    }

    /// One Query of the catalog's partition, with a limit.
    #[instrument(skip(self), level = "debug")]
    async fn first_files(
        &self,
        band: &BandId,
        source: &SourceId,
        limit: usize,
    ) -> PortResult<Vec<FileEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        bodies(
            &self
                .query(
                    &self.sync_table,
                    keys::files_pk(band, source),
                    keys::FILE_PREFIX,
                    true,
                    Some(limit),
                )
                .await?,
        )
    }

    /// BatchWriteItem, in requests of up to 24 keys.
    #[instrument(skip(self, file_ids), fields(n = file_ids.len()), level = "debug")]
    async fn delete_files(
        &self,
        band: &BandId,
        source: &SourceId,
        file_ids: &[String],
    ) -> PortResult<()> {
        let unique: std::collections::BTreeSet<&String> = file_ids.iter().collect();
        let keys = unique
            .into_iter()
            .map(|id| keys::file(band, source, id))
            .collect();
        self.delete_all(&self.sync_table, keys).await
    }
}
