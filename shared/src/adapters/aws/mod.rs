//! The AWS adapters: [`dynamo::DynamoStore`] (every store port, on the two tables of
//! template.yaml), [`sqs::SqsQueue`] (FIFO sends), [`apigw::ApiGatewayPusher`]
//! (PostToConnection), [`sns::SnsNotifier`] (alerts). [`AwsContext`] builds them once per
//! cold start from the environment the template sets, so warm invocations reuse the
//! clients and their connections.

pub mod apigw;
pub mod dynamo;
pub mod sns;
pub mod sqs;

use crate::google::apis::GoogleApis;
use crate::google::retry::RetryPolicy;
use crate::ports::{Clock, HealthCheck, Notifier, Pusher, Queue, Store, SystemClock};
use crate::wiring::{Backend, Watch};
use anyhow::Context as _;
use aws_config::{BehaviorVersion, SdkConfig};
use std::sync::Arc;

/// Environment variable names, as template.yaml sets them.
pub mod env {
    pub const SYNC_TABLE: &str = "SYNC_TABLE";
    pub const CONNECTIONS_TABLE: &str = "CONNECTIONS_TABLE";
    pub const SYNC_QUEUE_URL: &str = "SYNC_QUEUE_URL";
    pub const BROADCAST_QUEUE_URL: &str = "BROADCAST_QUEUE_URL";
    /// `https://{api}.execute-api.{region}.amazonaws.com/{stage}`
    pub const WS_MANAGEMENT_ENDPOINT: &str = "WS_MANAGEMENT_ENDPOINT";
    pub const ALERT_TOPIC_ARN: &str = "ALERT_TOPIC_ARN";
    pub const JWT_SECRET: &str = "JWT_SECRET";
    /// Only for tests and emulators: every client talks to this endpoint.
    pub const AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
    /// Base64 of the 32-byte key bands' Google credentials are sealed under; empty or
    /// unset: no Google sources in this deployment.
    pub const CREDENTIALS_KEY: &str = crate::google::sealed::CREDENTIALS_KEY_ENV;
    /// The public HTTPS URL of `POST /webhooks/google` (watch channels' address).
    pub const WEBHOOK_URL: &str = "WEBHOOK_URL";
    /// Only for tests and emulators: every Google API at this base URL (each API's own
    /// `BANDSYNC_GOOGLE_*_URL` and the token endpoint's are in
    /// [`crate::google::endpoints::env`]).
    pub const GOOGLE_API_BASE_URL: &str = crate::google::endpoints::env::API_BASE_URL;
}

/// Each band's Google API budget per function instance: requests per second, and burst.
pub const GOOGLE_RATE_PER_SEC: f64 = 10.0;
pub const GOOGLE_RATE_BURST: u32 = 20;

/// The HTTPS client every SDK client shares: rustls with ring (one TLS stack for the
/// whole workspace).
pub fn http_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Load the SDK configuration (region, credentials) from the Lambda environment, with our
/// HTTP client; `AWS_ENDPOINT_URL` (emulators) is honoured by the SDK itself.
pub async fn sdk_config() -> SdkConfig {
    // Bounded waits: a call that hangs must fail (and be retried) well inside the Lambda
    // timeout, not hold a batch until the function is killed.
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(2))
        .operation_attempt_timeout(std::time::Duration::from_secs(5))
        .build();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .timeout_config(timeouts)
        .load()
        .await
}

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("environment variable {name} is not set"))
}

/// Everything a function may need, built once per cold start: the AWS [`Backend`]. Each
/// main hands it to its handler's constructor in [`crate::wiring`], which asks for the
/// parts it uses; a part whose environment variable is missing is an error only when it
/// is asked for.
#[derive(Clone)]
pub struct AwsContext {
    pub sdk: SdkConfig,
    pub clock: Arc<dyn Clock>,
}

impl AwsContext {
    pub async fn from_env() -> Self {
        Self {
            sdk: sdk_config().await,
            clock: Arc::new(SystemClock),
        }
    }

    fn queue(&self, url_var: &str) -> anyhow::Result<Arc<sqs::SqsQueue>> {
        Ok(Arc::new(sqs::SqsQueue::new(
            aws_sdk_sqs::Client::new(&self.sdk),
            var(url_var)?,
        )))
    }

    /// The Google API clients with a retry policy: each band's tokens from its sealed
    /// credentials (opened under [`env::CREDENTIALS_KEY`], cached for the life of the
    /// instance), each band's rate limit, at the configured endpoints
    /// ([`crate::google::endpoints`]). None when no key is configured.
    fn google_with(&self, policy: RetryPolicy) -> anyhow::Result<Option<Arc<GoogleApis>>> {
        use crate::google::ratelimit;
        let Some(key) = self.credentials_key()? else {
            return Ok(None);
        };
        let endpoints = crate::google::endpoints::GoogleEndpoints::from_env()?;
        let limits = ratelimit::BandRateLimits::new(GOOGLE_RATE_PER_SEC, GOOGLE_RATE_BURST)?;
        Ok(Some(Arc::new(
            endpoints
                .stored_credentials(self.store()?, key)?
                .with_throttles(Arc::new(limits))
                .with_retrier(crate::google::retry::Retrier::new(policy)),
        )))
    }
}

impl Backend for AwsContext {
    /// The DynamoDB store on [`env::SYNC_TABLE`] and [`env::CONNECTIONS_TABLE`].
    fn store(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(Arc::new(dynamo::DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            var(env::SYNC_TABLE)?,
            var(env::CONNECTIONS_TABLE)?,
        )))
    }

    fn sync_queue(&self) -> anyhow::Result<Arc<dyn Queue>> {
        Ok(self.queue(env::SYNC_QUEUE_URL)?)
    }

    fn broadcast_queue(&self) -> anyhow::Result<Arc<dyn Queue>> {
        Ok(self.queue(env::BROADCAST_QUEUE_URL)?)
    }

    fn pusher(&self) -> anyhow::Result<Arc<dyn Pusher>> {
        Ok(Arc::new(apigw::ApiGatewayPusher::new(
            &self.sdk,
            &var(env::WS_MANAGEMENT_ENDPOINT)?,
        )))
    }

    /// The alert topic, [`env::ALERT_TOPIC_ARN`] (required: a deployed worker alerts).
    fn notifier(&self) -> anyhow::Result<Option<Arc<dyn Notifier>>> {
        Ok(Some(Arc::new(sns::SnsNotifier::new(
            aws_sdk_sns::Client::new(&self.sdk),
            var(env::ALERT_TOPIC_ARN)?,
        ))))
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    fn tokens(&self) -> anyhow::Result<crate::auth::TokenKey> {
        let secret = var(env::JWT_SECRET)?;
        anyhow::ensure!(
            secret.len() >= 32,
            "{} must be at least 32 bytes",
            env::JWT_SECRET
        );
        Ok(crate::auth::TokenKey::new(secret))
    }

    /// The key bands' Google credentials are sealed under, from
    /// [`env::CREDENTIALS_KEY`]; None when it is unset or empty (no Google sources).
    fn credentials_key(&self) -> anyhow::Result<Option<crate::google::sealed::CredentialKey>> {
        Ok(crate::google::sealed::CredentialKey::from_env_if_set()?)
    }

    /// The store and both queues.
    fn health_checks(&self) -> anyhow::Result<Vec<(String, Arc<dyn HealthCheck>)>> {
        Ok(vec![
            ("store".into(), self.store()?),
            ("sync_queue".into(), self.queue(env::SYNC_QUEUE_URL)?),
            (
                "broadcast_queue".into(),
                self.queue(env::BROADCAST_QUEUE_URL)?,
            ),
        ])
    }

    fn google(&self) -> anyhow::Result<Option<Arc<GoogleApis>>> {
        self.google_with(RetryPolicy::default())
    }

    /// Google's clients with short retries, channels addressed to [`env::WEBHOOK_URL`].
    fn watch(&self) -> anyhow::Result<Option<Watch>> {
        // Short retries: the scheduler has 60 s for every band, and the next run (5
        // minutes on) tries again anyway.
        let policy = RetryPolicy {
            max_attempts: 3,
            max_retry_after: std::time::Duration::from_secs(5),
            max_elapsed: std::time::Duration::from_secs(10),
            ..Default::default()
        };
        let Some(api) = self.google_with(policy)? else {
            return Ok(None);
        };
        Ok(Some(Watch {
            api,
            address: var(env::WEBHOOK_URL)?,
        }))
    }
}
