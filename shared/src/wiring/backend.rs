//! Where the handlers' ports come from: the [`Backend`] a deployment gives the wiring.
//! It names ports only (no handler), so an adapter can implement it without depending
//! on the jobs it feeds.

use crate::auth::TokenKey;
use crate::deployment::Deployment;
use crate::google::apis::{GoogleApis, WatchApi};
use crate::google::sealed::CredentialKey;
use crate::ports::{ChannelLog, Clock, HealthCheck, Notifier, Pusher, Queue, Store};
use anyhow::Context as _;
use std::sync::Arc;
use std::time::Duration;

/// Where the handlers' ports come from. A part is built when a constructor asks for it,
/// so a part the deployment lacks fails only the handler that needs it.
pub trait Backend {
    /// Every storage port.
    fn store(&self) -> anyhow::Result<Arc<dyn Store>>;
    /// The channel log events are appended to and read from (the store's own, unless a
    /// test makes it fail).
    fn log(&self) -> anyhow::Result<Arc<dyn ChannelLog>> {
        Ok(self.store()?)
    }
    fn sync_queue(&self) -> anyhow::Result<Arc<dyn Queue>>;
    fn broadcast_queue(&self) -> anyhow::Result<Arc<dyn Queue>>;
    fn pusher(&self) -> anyhow::Result<Arc<dyn Pusher>>;
    /// Where a failed sync alerts the operators; None: it is logged only.
    fn notifier(&self) -> anyhow::Result<Option<Arc<dyn Notifier>>>;
    fn clock(&self) -> Arc<dyn Clock>;
    /// What member tokens are signed with.
    fn tokens(&self) -> anyhow::Result<TokenKey>;
    /// What bands' Google credentials are sealed under; None: they cannot be stored.
    fn credentials_key(&self) -> anyhow::Result<Option<CredentialKey>>;
    /// The named dependencies `GET /sync/health` reports.
    fn health_checks(&self) -> anyhow::Result<Vec<(String, Arc<dyn HealthCheck>)>>;
    /// Google's clients for the sync worker; None: no Google sources.
    fn google(&self) -> anyhow::Result<Option<Arc<GoogleApis>>>;
    /// What the scheduler keeps Google's watch channels with; None without Google.
    fn watch(&self) -> anyhow::Result<Option<Watch>>;
    /// How long a member whose last device went stays online, waiting for it to come back.
    fn presence_debounce(&self) -> Duration {
        crate::presence::DEFAULT_DEBOUNCE
    }
    /// Where the handlers run (what operators may point them at).
    fn deployment(&self) -> Deployment;
}

/// Google's watch calls and the address the channels notify (`/webhooks/google`).
#[derive(Clone)]
pub struct Watch {
    pub api: Arc<dyn WatchApi>,
    pub address: String,
}

/// A backend whose parts are built already: the local stack's embedded store and the
/// test harnesses. A part left out fails the constructor that asks for it.
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn Store>,
    pub log: Arc<dyn ChannelLog>,
    pub sync_queue: Arc<dyn Queue>,
    pub broadcast_queue: Arc<dyn Queue>,
    pub pusher: Option<Arc<dyn Pusher>>,
    pub notifier: Option<Arc<dyn Notifier>>,
    pub clock: Arc<dyn Clock>,
    pub tokens: Option<TokenKey>,
    pub credentials_key: Option<CredentialKey>,
    pub health_checks: Vec<(String, Arc<dyn HealthCheck>)>,
    pub google: Option<Arc<GoogleApis>>,
    pub watch: Option<Watch>,
    pub presence_debounce: Duration,
    /// [`Deployment::Local`] unless a test plays AWS.
    pub deployment: Deployment,
}

impl Ports {
    /// The store (its own channel log, its health the only check), the queues and the
    /// clock; no pusher, notifier, tokens, credentials key nor Google.
    pub fn new(
        store: Arc<dyn Store>,
        sync_queue: Arc<dyn Queue>,
        broadcast_queue: Arc<dyn Queue>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            log: store.clone(),
            health_checks: vec![("store".to_owned(), store.clone())],
            store,
            sync_queue,
            broadcast_queue,
            pusher: None,
            notifier: None,
            clock,
            tokens: None,
            credentials_key: None,
            google: None,
            watch: None,
            presence_debounce: crate::presence::DEFAULT_DEBOUNCE,
            deployment: Deployment::Local,
        }
    }
}

impl Backend for Ports {
    fn store(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(self.store.clone())
    }
    fn log(&self) -> anyhow::Result<Arc<dyn ChannelLog>> {
        Ok(self.log.clone())
    }
    fn sync_queue(&self) -> anyhow::Result<Arc<dyn Queue>> {
        Ok(self.sync_queue.clone())
    }
    fn broadcast_queue(&self) -> anyhow::Result<Arc<dyn Queue>> {
        Ok(self.broadcast_queue.clone())
    }
    fn pusher(&self) -> anyhow::Result<Arc<dyn Pusher>> {
        self.pusher
            .clone()
            .context("this backend has no pusher to reach connections")
    }
    fn notifier(&self) -> anyhow::Result<Option<Arc<dyn Notifier>>> {
        Ok(self.notifier.clone())
    }
    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }
    fn tokens(&self) -> anyhow::Result<TokenKey> {
        self.tokens
            .clone()
            .context("this backend has no key for member tokens")
    }
    fn credentials_key(&self) -> anyhow::Result<Option<CredentialKey>> {
        Ok(self.credentials_key.clone())
    }
    fn health_checks(&self) -> anyhow::Result<Vec<(String, Arc<dyn HealthCheck>)>> {
        Ok(self.health_checks.clone())
    }
    fn google(&self) -> anyhow::Result<Option<Arc<GoogleApis>>> {
        Ok(self.google.clone())
    }
    fn watch(&self) -> anyhow::Result<Option<Watch>> {
        Ok(self.watch.clone())
    }
    fn presence_debounce(&self) -> Duration {
        self.presence_debounce
    }
    fn deployment(&self) -> Deployment {
        self.deployment
    }
}
