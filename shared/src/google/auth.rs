//! Access tokens for the Google API clients.
//!
//! The clients ask an [`AccessTokens`] for a bearer token before every attempt. Two
//! implementations:
//!
//! - [`super::oauth::OAuthTokens`]: real OAuth2 tokens from a band's Google credentials
//!   (a stored refresh token, `refresh_token` grant, or a service-account key, JWT
//!   bearer grant), cached until shortly before expiry and shared across warm Lambda
//!   invocations through [`super::oauth::TokenCache`]; the stored credentials are
//!   encrypted at rest ([`super::sealed`]);
//! - [`StaticToken`]: a fixed string, for tests and for the local stack against the
//!   fake Google APIs.

use super::GoogleError;
use async_trait::async_trait;

/// A source of OAuth2 access tokens for `Authorization: Bearer …`.
///
/// Called before each attempt (retries included), so an implementation that caches
/// can hand out a refreshed token after the old one expired mid-retry.
#[async_trait]
pub trait AccessTokens: Send + Sync {
    async fn token(&self) -> Result<String, GoogleError>;

    /// An API answered 401 to `token`: forget it if it is still the one handed out, so
    /// the next [`AccessTokens::token`] gets a fresh one (a token revoked or expired
    /// early). Sources that cannot refresh ignore it.
    async fn rejected(&self, _token: &str) {}
}

/// A fixed access token, for tests and the local stack against the fake Google APIs.
/// It never refreshes: against the real APIs it would stop working after about an hour.
#[derive(Clone)]
pub struct StaticToken(String);

impl StaticToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

/// Never prints the token.
impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

#[async_trait]
impl AccessTokens for StaticToken {
    async fn token(&self) -> Result<String, GoogleError> {
        Ok(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_token_hands_out_its_token_and_never_prints_it() {
        // GIVEN a static token
        let tokens = StaticToken::new("ya29.secret-value");
        // WHEN it is asked for a token, and debug-printed
        // THEN it gives the token, and the debug output does not contain it
        assert_eq!(tokens.token().await.unwrap(), "ya29.secret-value");
        let printed = format!("{tokens:?}");
        assert!(!printed.contains("secret"), "{printed}");
    }
}
