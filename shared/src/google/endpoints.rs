//! Where the Google APIs and the OAuth token endpoint are: Google's by default, or any
//! Google-compatible emulator or proxy. The Lambdas read [`env`]'s variables; the local
//! stack has a flag for each, with the same variable.

use super::GoogleError;
use super::apis::{GoogleApis, GoogleUrls, StoredCredentials};
use super::oauth::{OAuthOptions, TokenCache};
use super::sealed::CredentialKey;
use crate::ports::ConfigStore;
use std::sync::Arc;

/// Environment variable names (unset or empty: Google's endpoint).
pub mod env {
    /// Drive v3 (and its `changes.watch`, `files.watch`, `channels.stop`).
    pub const DRIVE_URL: &str = "BANDSYNC_GOOGLE_DRIVE_URL";
    /// Sheets v4.
    pub const SHEETS_URL: &str = "BANDSYNC_GOOGLE_SHEETS_URL";
    /// Calendar v3.
    pub const CALENDAR_URL: &str = "BANDSYNC_GOOGLE_CALENDAR_URL";
    /// The OAuth2 token endpoint every token request goes to, whatever the `token_uri`
    /// of the band's credentials file.
    pub const TOKEN_URL: &str = "BANDSYNC_GOOGLE_TOKEN_URL";
    /// Older, for tests and emulators: every API (not the token endpoint) at this base
    /// URL; the variables above take precedence.
    pub const API_BASE_URL: &str = "GOOGLE_API_BASE_URL";
}

/// The endpoints a deployment's Google clients use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoogleEndpoints {
    pub urls: GoogleUrls,
    /// None: each credentials file's own `token_uri` (Google's by default).
    pub token_url: Option<String>,
}

impl GoogleEndpoints {
    /// From variables looked up by name; an empty value counts as unset.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, GoogleError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        Self::from_parts(
            get(env::API_BASE_URL).as_deref(),
            get(env::DRIVE_URL),
            get(env::SHEETS_URL),
            get(env::CALENDAR_URL),
            get(env::TOKEN_URL),
        )
    }

    /// Google's endpoints, or `base` for every API, each overridden where given. Every
    /// URL is checked here, so a typo fails at start rather than at the first sync.
    pub fn from_parts(
        base: Option<&str>,
        drive: Option<String>,
        sheets: Option<String>,
        calendar: Option<String>,
        token_url: Option<String>,
    ) -> Result<Self, GoogleError> {
        let mut urls = base.map_or_else(GoogleUrls::default, GoogleUrls::all_at);
        for (value, slot) in [
            (drive, &mut urls.drive),
            (sheets, &mut urls.sheets),
            (calendar, &mut urls.calendar),
        ] {
            if let Some(v) = value {
                *slot = v;
            }
        }
        for (what, url) in [
            ("Drive", &urls.drive),
            ("Sheets", &urls.sheets),
            ("Calendar", &urls.calendar),
        ] {
            check(what, url)?;
        }
        if let Some(url) = &token_url {
            check("token endpoint", url)?;
        }
        Ok(Self { urls, token_url })
    }
}

impl GoogleEndpoints {
    /// The clients of a deployment whose bands bring their own Google credentials
    /// (sealed in their configuration under `key`), at these endpoints.
    pub fn stored_credentials(
        &self,
        configs: Arc<dyn ConfigStore>,
        key: CredentialKey,
        deployment: crate::deployment::Deployment,
    ) -> Result<GoogleApis, GoogleError> {
        let http = super::https_client()?;
        let options = OAuthOptions {
            token_url: self.token_url.clone(),
            deployment,
            ..OAuthOptions::default()
        };
        let cache = Arc::new(TokenCache::new(http.clone(), options));
        let tokens = StoredCredentials::new(configs, key, cache);
        Ok(GoogleApis::new(http, self.urls.clone(), Arc::new(tokens)))
    }
}

fn check(what: &str, url: &str) -> Result<(), GoogleError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "https" | "http") && u.has_host() => Ok(()),
        Ok(_) => Err(GoogleError::Config(format!(
            "{what} URL {url:?} must be an http(s) URL"
        ))),
        Err(e) => Err(GoogleError::Config(format!("{what} URL {url:?}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<GoogleEndpoints, GoogleError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        GoogleEndpoints::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn unset_means_google() {
        let e = parse(&[(env::DRIVE_URL, "")]).unwrap();
        assert_eq!(e, GoogleEndpoints::default());
        assert_eq!(e.urls.drive, "https://www.googleapis.com");
        assert_eq!(e.urls.sheets, "https://sheets.googleapis.com");
        assert_eq!(e.token_url, None);
    }

    #[test]
    fn each_endpoint_is_configurable_over_the_common_base() {
        let e = parse(&[
            (env::API_BASE_URL, "http://127.0.0.1:9000"),
            (env::SHEETS_URL, "https://sheets.proxy.example"),
            (env::TOKEN_URL, "http://127.0.0.1:9001/token"),
        ])
        .unwrap();
        assert_eq!(e.urls.drive, "http://127.0.0.1:9000");
        assert_eq!(e.urls.calendar, "http://127.0.0.1:9000");
        assert_eq!(e.urls.sheets, "https://sheets.proxy.example");
        assert_eq!(e.token_url.as_deref(), Some("http://127.0.0.1:9001/token"));
        let e = parse(&[(env::CALENDAR_URL, "https://calendar.proxy.example/")]).unwrap();
        assert_eq!(e.urls.calendar, "https://calendar.proxy.example/");
        assert_eq!(e.urls.drive, "https://www.googleapis.com");
    }

    #[test]
    fn a_bad_url_fails_at_start_naming_the_endpoint() {
        for (var, what) in [
            (env::DRIVE_URL, "Drive"),
            (env::SHEETS_URL, "Sheets"),
            (env::CALENDAR_URL, "Calendar"),
            (env::TOKEN_URL, "token endpoint"),
        ] {
            for bad in ["not a url", "ftp://x/", "file:///tmp/x"] {
                let e = parse(&[(var, bad)]).unwrap_err().to_string();
                assert!(e.contains(what), "{var}={bad}: {e}");
            }
        }
    }
}
