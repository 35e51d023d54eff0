//! What the sync engines need of Google: one trait per API, with only the calls an
//! engine makes, so an engine depends on its port rather than on the HTTP client, and
//! can be tested against an in-memory double. The HTTP clients implement them; the
//! watch channels have their own port ([`super::apis::WatchApi`]).

use super::GoogleError;
use super::apis::GoogleApis;
use super::calendar::{CalendarClient, EventsPage, EventsQuery};
use super::drive::{ChangesPage, DriveClient, FilesPage};
use super::sheets::{SheetsClient, ValueRange};
use crate::model::BandId;
use async_trait::async_trait;
use std::sync::Arc;

/// The Drive calls of a Drive source.
#[async_trait]
pub trait DriveApi: Send + Sync {
    /// The page token from which later changes will be listed (of the shared drive
    /// `drive_id`, or of the user's view).
    async fn get_start_page_token(&self, drive_id: Option<&str>) -> Result<String, GoogleError>;
    /// One page of changes from `page_token`.
    async fn list_changes(
        &self,
        page_token: &str,
        drive_id: Option<&str>,
    ) -> Result<ChangesPage, GoogleError>;
    /// One page of a folder's children that are not in the trash.
    async fn list_folder(
        &self,
        folder_id: &str,
        page_token: Option<&str>,
    ) -> Result<FilesPage, GoogleError>;
}

/// The Sheets call of a setlist source.
#[async_trait]
pub trait SheetsApi: Send + Sync {
    /// The formatted values of `range` of a spreadsheet.
    async fn get_values(
        &self,
        spreadsheet_id: &str,
        range: &str,
    ) -> Result<ValueRange, GoogleError>;
}

/// The Calendar call of a calendar source.
#[async_trait]
pub trait CalendarApi: Send + Sync {
    /// One page of a calendar's events, in full or from a sync token.
    async fn list_events(
        &self,
        calendar_id: &str,
        query: &EventsQuery,
    ) -> Result<EventsPage, GoogleError>;
}

/// A band's clients of the APIs its sources read.
#[async_trait]
pub trait SourceApis: Send + Sync {
    async fn drive_api(&self, band: &BandId) -> Result<Arc<dyn DriveApi>, GoogleError>;
    async fn sheets_api(&self, band: &BandId) -> Result<Arc<dyn SheetsApi>, GoogleError>;
    async fn calendar_api(&self, band: &BandId) -> Result<Arc<dyn CalendarApi>, GoogleError>;
}

#[async_trait]
impl DriveApi for DriveClient {
    async fn get_start_page_token(&self, drive_id: Option<&str>) -> Result<String, GoogleError> {
        DriveClient::get_start_page_token(self, drive_id).await
    }

    async fn list_changes(
        &self,
        page_token: &str,
        drive_id: Option<&str>,
    ) -> Result<ChangesPage, GoogleError> {
        DriveClient::list_changes(self, page_token, drive_id).await
    }

    async fn list_folder(
        &self,
        folder_id: &str,
        page_token: Option<&str>,
    ) -> Result<FilesPage, GoogleError> {
        DriveClient::list_folder(self, folder_id, page_token).await
    }
}

#[async_trait]
impl SheetsApi for SheetsClient {
    async fn get_values(
        &self,
        spreadsheet_id: &str,
        range: &str,
    ) -> Result<ValueRange, GoogleError> {
        SheetsClient::get_values(self, spreadsheet_id, range).await
    }
}

#[async_trait]
impl CalendarApi for CalendarClient {
    async fn list_events(
        &self,
        calendar_id: &str,
        query: &EventsQuery,
    ) -> Result<EventsPage, GoogleError> {
        CalendarClient::list_events(self, calendar_id, query).await
    }
}

#[async_trait]
impl SourceApis for GoogleApis {
    async fn drive_api(&self, band: &BandId) -> Result<Arc<dyn DriveApi>, GoogleError> {
        Ok(Arc::new(self.drive(band).await?))
    }

    async fn sheets_api(&self, band: &BandId) -> Result<Arc<dyn SheetsApi>, GoogleError> {
        Ok(Arc::new(self.sheets(band).await?))
    }

    async fn calendar_api(&self, band: &BandId) -> Result<Arc<dyn CalendarApi>, GoogleError> {
        Ok(Arc::new(self.calendar(band).await?))
    }
}
