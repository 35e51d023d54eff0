//! Access tokens from the credentials' `token_uri`: the two grants, the cache until
//! shortly before expiry, single-flight refresh, retries, and Google's answers decoded
//! without quoting a secret.

use super::*;

/// How [`OAuthTokens`] retries, tells time, and how early it refreshes.
#[derive(Clone)]
pub struct OAuthOptions {
    pub retrier: Retrier,
    pub clock: Arc<dyn Clock>,
    /// Refresh this long before `expires_in` runs out (at most half the lifetime).
    pub refresh_margin: Duration,
    /// Send every token request here instead of the credentials' `token_uri` (an
    /// emulator or a proxy; see [`crate::google::endpoints`]).
    pub token_url: Option<String>,
    /// Where the process runs: outside the local stack a stored credentials file whose
    /// `token_uri` is plain http is refused when it is opened (see
    /// [`crate::deployment`]).
    pub deployment: crate::deployment::Deployment,
}

impl Default for OAuthOptions {
    fn default() -> Self {
        Self {
            retrier: Retrier::default(),
            clock: Arc::new(SystemClock),
            refresh_margin: DEFAULT_REFRESH_MARGIN,
            token_url: None,
            deployment: crate::deployment::Deployment::default(),
        }
    }
}

impl std::fmt::Debug for OAuthOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthOptions")
            .field("retrier", &self.retrier)
            .field("refresh_margin", &self.refresh_margin)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

impl OAuthOptions {
    pub fn with_retrier(mut self, retrier: Retrier) -> Self {
        self.retrier = retrier;
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }
}

struct CachedToken {
    access_token: String,
    /// When to stop handing it out: expiry minus the margin.
    refresh_at: DateTime<Utc>,
}

/// OAuth2 access tokens from a band's [`GoogleCredentials`], cached and refreshed.
pub struct OAuthTokens {
    http: reqwest::Client,
    credentials: GoogleCredentials,
    options: OAuthOptions,
    band: Option<BandId>,
    /// Held across a refresh: concurrent callers wait for it instead of refreshing too.
    cached: tokio::sync::Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthTokens")
            .field("band", &self.band)
            .field("credentials", &self.credentials)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A token endpoint's success body. No `Debug`: it holds the token.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<i64>,
    token_type: Option<String>,
}

/// Google's lifetime when an answer leaves `expires_in` out (it never does).
const DEFAULT_EXPIRES_IN: i64 = 3600;

impl OAuthTokens {
    /// Tokens from `credentials`, through the shared HTTPS client `http`
    /// ([`crate::google::https_client`]).
    pub fn new(
        http: reqwest::Client,
        credentials: GoogleCredentials,
        options: OAuthOptions,
    ) -> Self {
        Self {
            http,
            credentials,
            options,
            band: None,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// Name the band in the logs.
    pub fn with_band(mut self, band: BandId) -> Self {
        self.band = Some(band);
        self
    }

    pub fn credentials(&self) -> &GoogleCredentials {
        &self.credentials
    }

    /// Forget the cached token: the next [`AccessTokens::token`] asks for a new one.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    /// Forget `rejected` if it is still the cached token (an API answered 401 to it).
    /// Many calls failing with the same token then cause one refresh, not one each.
    pub async fn reject(&self, rejected: &str) {
        let mut cached = self.cached.lock().await;
        let same = cached
            .as_ref()
            .is_some_and(|c| bool::from(c.access_token.as_bytes().ct_eq(rejected.as_bytes())));
        if same {
            *cached = None;
        }
    }

    /// Get a new token now, whatever is cached.
    pub async fn force_refresh(&self) -> Result<String, GoogleError> {
        let mut cached = self.cached.lock().await;
        *cached = None;
        self.refresh(&mut cached).await
    }

    async fn refresh(&self, cached: &mut Option<CachedToken>) -> Result<String, GoogleError> {
        let grant = self.credentials.grant_kind();
        let band = self.band.as_ref().map(BandId::as_str);
        let requested_at = self.options.clock.now();
        let result = async {
            let form = self.credentials.grant_form(requested_at)?;
            let form = &form;
            self.options
                .retrier
                .run(|_attempt| self.attempt(form))
                .await
        }
        .await;
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(band, grant, error = %error, "Google access token refresh failed");
                return Err(error);
            }
        };
        let expires_in = response.expires_in.unwrap_or(DEFAULT_EXPIRES_IN).max(0);
        let margin = i64::try_from(self.options.refresh_margin.as_secs())
            .unwrap_or(i64::MAX)
            .min(expires_in / 2);
        let refresh_at = requested_at + TimeDelta::seconds(expires_in - margin);
        tracing::info!(band, grant, expires_in, "Google access token refreshed");
        let token = response.access_token.clone();
        *cached = Some(CachedToken {
            access_token: response.access_token,
            refresh_at,
        });
        Ok(token)
    }

    async fn attempt(&self, form: &[(&'static str, String)]) -> Attempt<TokenResponse> {
        let request = self
            .http
            .post((self.options.token_url.as_deref()).unwrap_or(self.credentials.token_uri()))
            .header(ACCEPT, "application/json")
            .form(form);
        // A token request changes nothing on Google's side: transport failures are
        // retried like 429 and 5xx.
        let (status, retry_after, body) = match exchange(request).await {
            Ok(answer) => answer,
            Err(error) => {
                return Attempt::Retry {
                    error,
                    retry_after: None,
                };
            }
        };
        if status.is_success() {
            return match decode_token_response(&body) {
                Ok(response) => Attempt::Done(response),
                Err(error) => Attempt::Fail(error),
            };
        }
        let error = token_error(status, &body);
        if retry::is_retryable_status(status.as_u16()) {
            Attempt::Retry { error, retry_after }
        } else {
            Attempt::Fail(error)
        }
    }
}

/// Send `request` and read the whole answer: its status, its `Retry-After` (if any)
/// and its body. Failing to send or to read is a [`GoogleError::Transport`].
async fn exchange(
    request: reqwest::RequestBuilder,
) -> Result<(reqwest::StatusCode, Option<Duration>, Vec<u8>), GoogleError> {
    let response = request
        .send()
        .await
        .map_err(|e| GoogleError::Transport(error_chain(&e)))?;
    let status = response.status();
    let retry_after = retry::retry_after_header(response.headers());
    let body = response.bytes().await.map_err(|e| {
        GoogleError::Transport(format!("reading the token response: {}", error_chain(&e)))
    })?;
    Ok((status, retry_after, body.to_vec()))
}

/// A 2xx token answer, checked. The error never quotes the body (it has the token).
fn decode_token_response(body: &[u8]) -> Result<TokenResponse, GoogleError> {
    let response: TokenResponse = serde_json::from_slice(body).map_err(|e| {
        GoogleError::Decode(format!(
            "token response without a usable access_token / expires_in ({})",
            json_error(&e)
        ))
    })?;
    if response.access_token.is_empty() {
        return Err(GoogleError::Decode(
            "token response: empty access_token".into(),
        ));
    }
    match response.token_type.as_deref() {
        None => {}
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(other) => {
            return Err(GoogleError::Decode(format!(
                "token response: token_type {other:?}, expected Bearer"
            )));
        }
    }
    Ok(response)
}

/// An error answer of the token endpoint: OAuth's `{"error":"invalid_grant",
/// "error_description":…}`, else Google's API error shape, else the status.
fn token_error(status: reqwest::StatusCode, body: &[u8]) -> GoogleError {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
        error_description: Option<String>,
    }
    let (reason, message) = match serde_json::from_slice::<OAuthError>(body) {
        Ok(e) => (Some(e.error), e.error_description),
        Err(_) => {
            let parsed = ErrorBody::parse(body);
            (parsed.reason().map(str::to_owned), parsed.error.message)
        }
    };
    GoogleError::http(
        status,
        reason,
        message.unwrap_or_else(|| excerpt(body, 200)),
    )
}

#[async_trait]
impl AccessTokens for OAuthTokens {
    /// The cached token while it is fresh, else a new one (single-flight).
    async fn token(&self) -> Result<String, GoogleError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && self.options.clock.now() < c.refresh_at
        {
            return Ok(c.access_token.clone());
        }
        self.refresh(&mut cached).await
    }

    async fn rejected(&self, token: &str) {
        self.reject(token).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // -- answers -------------------------------------------------------------------------

    #[test]
    fn token_answers_are_checked_without_quoting_them() {
        // GIVEN a 200 without access_token, with an empty one, or a MAC token type
        let missing = decode_token_response(br#"{"expires_in":3599,"token_type":"Bearer"}"#);
        let empty = decode_token_response(br#"{"access_token":"","expires_in":3599}"#);
        let mac = decode_token_response(br#"{"access_token":"ya29.x","token_type":"mac"}"#);
        let garbage =
            decode_token_response(br#"{"access_token":"ya29.leaked","expires_in":"soon"}"#);
        // THEN each is a decode error, none of which shows the token
        for result in [missing, empty, mac, garbage] {
            let error = result.err().expect("an error");
            assert!(matches!(error, GoogleError::Decode(_)), "{error:?}");
            assert!(!error.to_string().contains("leaked"), "{error}");
        }
        // AND a normal answer decodes (token_type in any case, expires_in optional)
        let Ok(ok) = decode_token_response(br#"{"access_token":"ya29.ok","token_type":"bearer"}"#)
        else {
            panic!("a normal answer does not decode");
        };
        assert_eq!(ok.access_token, "ya29.ok");
        assert_eq!(ok.expires_in, None);
    }

    #[test]
    fn token_errors_take_oauth_then_google_then_the_status() {
        let status = |code| reqwest::StatusCode::from_u16(code).unwrap();
        // GIVEN OAuth's shape
        let error = token_error(status(400), br#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#);
        assert_eq!(
            error,
            GoogleError::Http {
                status: 400,
                reason: "invalid_grant".into(),
                message: "Token has been expired or revoked.".into()
            }
        );
        // GIVEN Google's API error shape
        let error = token_error(status(503), br#"{"error":{"code":503,"message":"The service is currently unavailable.","status":"UNAVAILABLE"}}"#);
        assert_eq!(
            error,
            GoogleError::Http {
                status: 503,
                reason: "UNAVAILABLE".into(),
                message: "The service is currently unavailable.".into()
            }
        );
        // GIVEN an HTML page from a proxy
        let error = token_error(status(502), b"<html>Bad Gateway</html>");
        assert_eq!(
            error,
            GoogleError::Http {
                status: 502,
                reason: "Bad Gateway".into(),
                message: "<html>Bad Gateway</html>".into()
            }
        );
    }
}
