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
use crate::wiring::backend::{Backend, Watch};
use anyhow::Context as _;
use aws_config::{BehaviorVersion, SdkConfig};
use std::sync::{Arc, OnceLock};

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

/// Everything a function may need, built once per cold start: the AWS [`Backend`]. Each
/// main hands it to its handler's constructor in [`crate::wiring`], which asks for the
/// parts it uses; a part whose environment variable is missing is an error only when it
/// is asked for. A part is built the first time it is asked for and then shared (clones
/// of the context share it too): one DynamoDB store, whose appends take turns, one SQS
/// client, one client per queue, and one set of Google clients per process.
#[derive(Clone)]
pub struct AwsContext {
    pub sdk: SdkConfig,
    pub clock: Arc<dyn Clock>,
    /// Where the parts' settings are read: the process environment, or a test's.
    vars: Arc<Vars>,
    parts: Arc<Parts>,
}

/// Looks a setting up by name.
type Vars = dyn Fn(&str) -> Option<String> + Send + Sync;

/// The parts built so far.
#[derive(Default)]
struct Parts {
    store: OnceLock<Arc<dynamo::DynamoStore>>,
    sqs: OnceLock<aws_sdk_sqs::Client>,
    sync_queue: OnceLock<Arc<sqs::SqsQueue>>,
    broadcast_queue: OnceLock<Arc<sqs::SqsQueue>>,
    pusher: OnceLock<Arc<apigw::ApiGatewayPusher>>,
    notifier: OnceLock<Arc<sns::SnsNotifier>>,
    google: OnceLock<Option<Arc<GoogleApis>>>,
    watch_google: OnceLock<Option<Arc<GoogleApis>>>,
}

/// The part in `cell`, built by `build` the first time it is asked for. A failure is not
/// kept: it fails the handler that asked, and a later ask tries again.
fn once<T: Clone>(
    cell: &OnceLock<T>,
    build: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if let Some(part) = cell.get() {
        return Ok(part.clone());
    }
    let part = build()?;
    Ok(cell.get_or_init(|| part).clone())
}

impl AwsContext {
    pub async fn from_env() -> Self {
        Self::new(sdk_config().await, Arc::new(SystemClock), |name| {
            std::env::var(name).ok()
        })
    }

    /// A context whose settings are read with `vars` (by [`env`]'s names).
    pub fn new(
        sdk: SdkConfig,
        clock: Arc<dyn Clock>,
        vars: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            sdk,
            clock,
            vars: Arc::new(vars),
            parts: Arc::default(),
        }
    }

    fn var(&self, name: &str) -> anyhow::Result<String> {
        (self.vars)(name).with_context(|| format!("environment variable {name} is not set"))
    }

    fn dynamo(&self) -> anyhow::Result<Arc<dynamo::DynamoStore>> {
        once(&self.parts.store, || {
            Ok(Arc::new(dynamo::DynamoStore::new(
                aws_sdk_dynamodb::Client::new(&self.sdk),
                self.var(env::SYNC_TABLE)?,
                self.var(env::CONNECTIONS_TABLE)?,
            )))
        })
    }

    fn queue(
        &self,
        cell: &OnceLock<Arc<sqs::SqsQueue>>,
        url_var: &str,
    ) -> anyhow::Result<Arc<sqs::SqsQueue>> {
        once(cell, || {
            let client = self
                .parts
                .sqs
                .get_or_init(|| aws_sdk_sqs::Client::new(&self.sdk));
            Ok(Arc::new(sqs::SqsQueue::new(
                client.clone(),
                self.var(url_var)?,
            )))
        })
    }

    fn sync_sqs(&self) -> anyhow::Result<Arc<sqs::SqsQueue>> {
        self.queue(&self.parts.sync_queue, env::SYNC_QUEUE_URL)
    }

    fn broadcast_sqs(&self) -> anyhow::Result<Arc<sqs::SqsQueue>> {
        self.queue(&self.parts.broadcast_queue, env::BROADCAST_QUEUE_URL)
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
        let endpoints =
            crate::google::endpoints::GoogleEndpoints::from_vars(|name| (self.vars)(name))?;
        let limits = ratelimit::BandRateLimits::new(GOOGLE_RATE_PER_SEC, GOOGLE_RATE_BURST)?;
        Ok(Some(Arc::new(
            endpoints
                .stored_credentials(self.dynamo()?, key, crate::deployment::Deployment::Aws)?
                .with_throttles(Arc::new(limits))
                .with_retrier(crate::google::retry::Retrier::new(policy)),
        )))
    }
}

impl Backend for AwsContext {
    /// The DynamoDB store on [`env::SYNC_TABLE`] and [`env::CONNECTIONS_TABLE`].
    fn store(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(self.dynamo()?)
    }

    fn sync_queue(&self) -> anyhow::Result<Arc<dyn Queue>> {
        Ok(self.sync_sqs()?)
    }

    fn broadcast_queue(&self) -> anyhow::Result<Arc<dyn Queue>> {
        Ok(self.broadcast_sqs()?)
    }

    fn pusher(&self) -> anyhow::Result<Arc<dyn Pusher>> {
        Ok(once(&self.parts.pusher, || {
            Ok(Arc::new(apigw::ApiGatewayPusher::new(
                &self.sdk,
                &self.var(env::WS_MANAGEMENT_ENDPOINT)?,
            )))
        })?)
    }

    /// The alert topic, [`env::ALERT_TOPIC_ARN`] (required: a deployed worker alerts).
    fn notifier(&self) -> anyhow::Result<Option<Arc<dyn Notifier>>> {
        let notifier = once(&self.parts.notifier, || {
            Ok(Arc::new(sns::SnsNotifier::new(
                aws_sdk_sns::Client::new(&self.sdk),
                self.var(env::ALERT_TOPIC_ARN)?,
            )))
        })?;
        Ok(Some(notifier))
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    fn deployment(&self) -> crate::deployment::Deployment {
        crate::deployment::Deployment::Aws
    }

    fn tokens(&self) -> anyhow::Result<crate::auth::TokenKey> {
        let secret = self.var(env::JWT_SECRET)?;
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
        Ok(crate::google::sealed::CredentialKey::from_setting(
            (self.vars)(env::CREDENTIALS_KEY).as_deref(),
        )?)
    }

    /// The store and both queues.
    fn health_checks(&self) -> anyhow::Result<Vec<(String, Arc<dyn HealthCheck>)>> {
        Ok(vec![
            ("store".into(), self.dynamo()?),
            ("sync_queue".into(), self.sync_sqs()?),
            ("broadcast_queue".into(), self.broadcast_sqs()?),
        ])
    }

    fn google(&self) -> anyhow::Result<Option<Arc<GoogleApis>>> {
        once(&self.parts.google, || {
            self.google_with(RetryPolicy::default())
        })
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
        let Some(api) = once(&self.parts.watch_google, || self.google_with(policy))? else {
            return Ok(None);
        };
        Ok(Some(Watch {
            api,
            address: self.var(env::WEBHOOK_URL)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wiring;
    use std::collections::HashMap;

    /// A context on these settings (no call leaves the process).
    fn context(vars: &[(&str, &str)]) -> AwsContext {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-west-1"))
            .build();
        AwsContext::new(sdk, Arc::new(SystemClock), move |name| {
            vars.get(name).cloned()
        })
    }

    /// The webhook's settings: the store and the sync queue.
    const WEBHOOK: &[(&str, &str)] = &[
        (env::SYNC_TABLE, "sync"),
        (env::CONNECTIONS_TABLE, "connections"),
        (env::SYNC_QUEUE_URL, "https://sqs.example/sync.fifo"),
    ];

    fn same<A: ?Sized, B: ?Sized>(a: &Arc<A>, b: &Arc<B>) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
    }

    #[test]
    fn each_part_is_built_once_and_shared() {
        // GIVEN the settings of the store and both queues
        let broadcast = (
            env::BROADCAST_QUEUE_URL,
            "https://sqs.example/broadcast.fifo",
        );
        let ctx = context(&[WEBHOOK, &[broadcast]].concat());
        // WHEN the store is asked for as a store, as the log and as a health check
        let store = ctx.store().unwrap();
        let checks = ctx.clone().health_checks().unwrap();
        // THEN it is one store (its appends take turns), also through a clone
        assert!(same(&store, &ctx.store().unwrap()));
        assert!(same(&store, &ctx.log().unwrap()));
        assert!(same(&store, &checks[0].1));
        // AND each queue is one client, whoever asks for it
        assert!(same(&ctx.sync_queue().unwrap(), &checks[1].1));
        assert!(same(&ctx.broadcast_queue().unwrap(), &checks[2].1));
        assert!(!same(&ctx.sync_queue().unwrap(), &checks[2].1));
    }

    #[test]
    fn a_missing_part_fails_only_the_handler_that_needs_it() {
        // GIVEN the webhook's settings only (no pusher, no broadcast queue)
        let ctx = context(WEBHOOK);
        // THEN the webhook builds, the broadcaster does not, naming what is missing
        assert!(wiring::webhook(&ctx).is_ok());
        let e = wiring::broadcaster(&ctx).err().expect("no pusher");
        assert!(e.to_string().contains(env::WS_MANAGEMENT_ENDPOINT), "{e}");
        // AND the webhook still builds after (a failed part is not remembered)
        assert!(wiring::webhook(&ctx).is_ok());
        // AND without a credentials key there is no Google
        assert!(ctx.google().unwrap().is_none());
        assert!(ctx.watch().unwrap().is_none());
    }
}
