//! The per-process registry of every band's [`OAuthTokens`].

use super::*;

struct CacheEntry {
    fingerprint: [u8; 32],
    tokens: Arc<OAuthTokens>,
}

/// Every band's [`OAuthTokens`], kept for the life of the process so warm Lambda
/// invocations reuse their cached tokens. A band's entry is replaced when its
/// credentials change.
pub struct TokenCache {
    http: reqwest::Client,
    options: OAuthOptions,
    entries: Mutex<HashMap<BandId, CacheEntry>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("bands", &self.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    pub fn new(http: reqwest::Client, options: OAuthOptions) -> Self {
        Self {
            http,
            options,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The process's cache (built on first use with [`crate::google::https_client`] and the
    /// default options), for code that has nowhere else to keep one.
    pub fn process_wide() -> Result<&'static TokenCache, GoogleError> {
        static CACHE: OnceLock<TokenCache> = OnceLock::new();
        if let Some(cache) = CACHE.get() {
            return Ok(cache);
        }
        let http = crate::google::https_client()?;
        Ok(CACHE.get_or_init(|| TokenCache::new(http, OAuthOptions::default())))
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<BandId, CacheEntry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The band's tokens: the cached ones if its credentials are unchanged, else new
    /// ones for `credentials` (replacing the old entry).
    pub fn tokens(&self, band: &BandId, credentials: GoogleCredentials) -> Arc<OAuthTokens> {
        let fingerprint = credentials.fingerprint();
        let mut entries = self.entries();
        if let Some(entry) = entries.get(band)
            && entry.fingerprint == fingerprint
        {
            return entry.tokens.clone();
        }
        let tokens = Arc::new(
            OAuthTokens::new(self.http.clone(), credentials, self.options.clone())
                .with_band(band.clone()),
        );
        if entries.contains_key(band) {
            tracing::info!(
                band = band.as_str(),
                "Google credentials changed, new token source"
            );
        }
        entries.insert(
            band.clone(),
            CacheEntry {
                fingerprint,
                tokens: tokens.clone(),
            },
        );
        tokens
    }

    /// The band's tokens from its stored credentials, sealed under `key` with
    /// [`sealed::credentials_context`]: opened, parsed, then as [`TokenCache::tokens`].
    pub fn tokens_from_sealed(
        &self,
        band: &BandId,
        credentials: &SealedSecret,
        key: &CredentialKey,
    ) -> Result<Arc<OAuthTokens>, GoogleError> {
        let plain = sealed::open(key, credentials, &sealed::credentials_context(band))
            .map_err(|e| GoogleError::Config(format!("band {band}'s Google credentials: {e}")))?;
        let parsed = GoogleCredentials::from_json(plain.as_bytes())?;
        if !self.options.deployment.allows_plain_http_to_loopback() {
            parsed.refuse_plain_http()?;
        }
        Ok(self.tokens(band, parsed))
    }

    /// Drop the band's entry (its credentials were removed).
    pub fn remove(&self, band: &BandId) {
        self.entries().remove(band);
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
