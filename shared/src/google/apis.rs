//! The Google API clients of a band: one place that knows the base URLs, the shared
//! HTTPS client, where a band's access tokens come from and its rate limit, and hands
//! out per-band clients to the sync worker and the scheduler.

use super::GoogleError;
use super::auth::AccessTokens;
use super::calendar::CalendarClient;
use super::client::{ApiClient, GoogleClient, Throttle};
use super::drive::{DRIVE_BASE_URL, DriveClient};
use super::oauth::TokenCache;
use super::ratelimit::BandRateLimits;
use super::retry::Retrier;
use super::sealed::CredentialKey;
use super::sheets::{SHEETS_BASE_URL, SheetsClient};
use super::watch::{Channel, WatchRequest};
use crate::model::{BandId, Source, SourceKind};
use crate::ports::ConfigStore;
use async_trait::async_trait;
use std::sync::Arc;

/// Where each API lives: Google, or a local fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleUrls {
    pub drive: String,
    pub calendar: String,
    pub sheets: String,
}

impl Default for GoogleUrls {
    fn default() -> Self {
        Self {
            drive: DRIVE_BASE_URL.into(),
            calendar: DRIVE_BASE_URL.into(),
            sheets: SHEETS_BASE_URL.into(),
        }
    }
}

impl GoogleUrls {
    /// Every API at one base URL (a local fake serving them all).
    pub fn all_at(base: &str) -> Self {
        Self {
            drive: base.into(),
            calendar: base.into(),
            sheets: base.into(),
        }
    }
}

/// Where a band's access tokens come from.
#[async_trait]
pub trait BandTokens: Send + Sync {
    async fn for_band(&self, band: &BandId) -> Result<Arc<dyn AccessTokens>, GoogleError>;
}

/// The same tokens for every band (one Google identity for the deployment, or the fake).
pub struct SharedTokens(pub Arc<dyn AccessTokens>);

#[async_trait]
impl BandTokens for SharedTokens {
    async fn for_band(&self, _band: &BandId) -> Result<Arc<dyn AccessTokens>, GoogleError> {
        Ok(self.0.clone())
    }
}

/// A band's tokens from the Google credentials stored (sealed) in its configuration,
/// through the process-wide [`TokenCache`] so warm invocations reuse access tokens.
pub struct StoredCredentials {
    configs: Arc<dyn ConfigStore>,
    key: CredentialKey,
    cache: Arc<TokenCache>,
}

impl StoredCredentials {
    pub fn new(configs: Arc<dyn ConfigStore>, key: CredentialKey, cache: Arc<TokenCache>) -> Self {
        Self {
            configs,
            key,
            cache,
        }
    }
}

#[async_trait]
impl BandTokens for StoredCredentials {
    async fn for_band(&self, band: &BandId) -> Result<Arc<dyn AccessTokens>, GoogleError> {
        let config = self.configs.get_config(band).await.map_err(|e| {
            GoogleError::Transport(format!("reading band {band}'s configuration: {e}"))
        })?;
        let Some(sealed) = config.and_then(|c| c.google_credentials) else {
            self.cache.remove(band);
            return Err(GoogleError::Config(format!(
                "band {band} has no Google credentials configured"
            )));
        };
        Ok(self.cache.tokens_from_sealed(band, &sealed, &self.key)?)
    }
}

/// A band's throttle (its rate limit), if any.
pub trait BandThrottles: Send + Sync {
    fn for_band(&self, band: &BandId) -> Arc<dyn Throttle>;
}

impl BandThrottles for BandRateLimits {
    fn for_band(&self, band: &BandId) -> Arc<dyn Throttle> {
        BandRateLimits::for_band(self, band)
    }
}

/// Builds the clients of a band. Cheap to share (`Arc`), built once per process.
pub struct GoogleApis {
    http: reqwest::Client,
    urls: GoogleUrls,
    tokens: Arc<dyn BandTokens>,
    throttles: Option<Arc<dyn BandThrottles>>,
    retrier: Retrier,
}

impl std::fmt::Debug for GoogleApis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleApis")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl GoogleApis {
    pub fn new(http: reqwest::Client, urls: GoogleUrls, tokens: Arc<dyn BandTokens>) -> Self {
        Self {
            http,
            urls,
            tokens,
            throttles: None,
            retrier: Retrier::default(),
        }
    }

    /// Clients with one fixed token for every band (the fakes), at `urls`.
    pub fn with_static_token(urls: GoogleUrls, token: &str) -> Result<Self, GoogleError> {
        Ok(Self::new(
            super::https_client()?,
            urls,
            Arc::new(SharedTokens(Arc::new(super::auth::StaticToken::new(token)))),
        ))
    }

    pub fn with_throttles(mut self, throttles: Arc<dyn BandThrottles>) -> Self {
        self.throttles = Some(throttles);
        self
    }

    pub fn with_retrier(mut self, retrier: Retrier) -> Self {
        self.retrier = retrier;
        self
    }

    pub fn urls(&self) -> &GoogleUrls {
        &self.urls
    }

    /// The plumbing of a band's client of the API at `base`: its tokens, the
    /// retrier, its throttle.
    async fn api(&self, band: &BandId, base: &str, what: &str) -> Result<ApiClient, GoogleError> {
        let tokens = self.tokens.for_band(band).await?;
        let mut api = ApiClient::new(self.http.clone(), base, tokens, what)?
            .with_retrier(self.retrier.clone());
        if let Some(t) = &self.throttles {
            api = api.with_throttle(t.for_band(band));
        }
        Ok(api)
    }

    async fn client<C: GoogleClient>(&self, band: &BandId, base: &str) -> Result<C, GoogleError> {
        self.api(band, base, C::API).await.map(C::from_api)
    }

    /// The band's Drive client.
    pub async fn drive(&self, band: &BandId) -> Result<DriveClient, GoogleError> {
        self.client(band, &self.urls.drive).await
    }

    /// The band's Sheets client.
    pub async fn sheets(&self, band: &BandId) -> Result<SheetsClient, GoogleError> {
        self.client(band, &self.urls.sheets).await
    }

    /// The band's Calendar client.
    pub async fn calendar(&self, band: &BandId) -> Result<CalendarClient, GoogleError> {
        self.client(band, &self.urls.calendar).await
    }
}

/// Opens and stops the watch channels of sources (what the scheduler's channel
/// lifecycle needs of Google).
#[async_trait]
pub trait WatchApi: Send + Sync {
    /// Open a channel on the source's resource: the change log of a Drive source, the
    /// spreadsheet of a setlist, the events of a calendar.
    async fn watch(&self, source: &Source, request: &WatchRequest) -> Result<Channel, GoogleError>;
    /// Stop a channel opened for a source of `kind` (an already stopped one is fine).
    async fn stop(
        &self,
        band: &BandId,
        kind: SourceKind,
        id: &str,
        resource_id: &str,
    ) -> Result<(), GoogleError>;
}

#[async_trait]
impl WatchApi for GoogleApis {
    async fn watch(&self, source: &Source, request: &WatchRequest) -> Result<Channel, GoogleError> {
        let band = &source.band;
        match source.kind {
            SourceKind::Drive => {
                let drive = self.drive(band).await?;
                let drive_id = source.drive_id.as_deref();
                let token = drive.get_start_page_token(drive_id).await?;
                drive.watch_changes(&token, drive_id, request).await
            }
            SourceKind::Sheet => {
                // A spreadsheet's edits are changes of its Drive file.
                let file = source.location.split('#').next().unwrap_or_default();
                self.drive(band).await?.watch_file(file, request).await
            }
            SourceKind::Calendar => {
                let calendar = self.calendar(band).await?;
                calendar.watch_events(&source.location, request).await
            }
            other => Err(no_channel(other)),
        }
    }

    async fn stop(
        &self,
        band: &BandId,
        kind: SourceKind,
        id: &str,
        resource_id: &str,
    ) -> Result<(), GoogleError> {
        match kind {
            SourceKind::Drive | SourceKind::Sheet => {
                self.drive(band).await?.stop_channel(id, resource_id).await
            }
            SourceKind::Calendar => {
                let calendar = self.calendar(band).await?;
                calendar.stop_channel(id, resource_id).await
            }
            other => Err(no_channel(other)),
        }
    }
}

fn no_channel(kind: SourceKind) -> GoogleError {
    GoogleError::Config(format!("sources of kind {kind:?} have no watch channel"))
}
