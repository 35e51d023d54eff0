//! The one wiring: every handler built from a [`Backend`], the same way for the Lambda
//! mains ([`AwsContext`](crate::adapters::aws::AwsContext)), the local stack (the
//! embedded store) and the tests (the harness). A handler gets only the ports it uses.
//!
//! Each constructor asks the backend for its parts directly (no constructor calls
//! another): a Lambda's environment has only the variables of the parts its handler
//! asks for, and the template test reads these bodies to check that.

use crate::api::{Api, ApiStores};
use crate::auth::TokenKey;
use crate::broadcast::Broadcaster;
use crate::google::apis::{GoogleApis, WatchApi};
use crate::google::sealed::CredentialKey;
use crate::ports::{ChannelLog, Clock, HealthCheck, Notifier, Pusher, Queue, Store};
use crate::publish::Publisher;
use crate::scheduler::Scheduler;
use crate::sync::{SyncStores, SyncWorker};
use crate::watch_keeper::WatchKeeper;
use crate::webhook::WebhookIntake;
use crate::ws_connect::WsConnect;
use crate::ws_disconnect::WsDisconnect;
use crate::ws_message::WsMessage;
use anyhow::Context as _;
use std::sync::Arc;

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
}

pub fn webhook(b: &dyn Backend) -> anyhow::Result<WebhookIntake> {
    let store = b.store()?;
    Ok(WebhookIntake::new(
        store.clone(),
        store.clone(),
        store,
        b.sync_queue()?,
        b.clock(),
    ))
}

pub fn api(b: &dyn Backend) -> anyhow::Result<Api> {
    let store = b.store()?;
    let stores = ApiStores {
        configs: store.clone(),
        sources: store.clone(),
        operations: store.clone(),
        watch_channels: store,
        log: b.log()?,
    };
    Ok(Api::new(
        stores,
        b.sync_queue()?,
        b.tokens()?,
        b.clock(),
        b.health_checks()?,
    )
    .with_credentials_key(b.credentials_key()?))
}

/// The sync worker: it publishes to the broadcast queue, alerts through the notifier
/// (if any), and syncs Google sources when there is Google.
pub fn sync_worker(b: &dyn Backend) -> anyhow::Result<SyncWorker> {
    let publisher = Publisher::new(b.log()?, b.broadcast_queue()?);
    let store = b.store()?;
    let stores = SyncStores {
        configs: store.clone(),
        sources: store.clone(),
        catalog: store.clone(),
        operations: store,
    };
    let mut worker = SyncWorker::new(stores, publisher, b.clock());
    if let Some(google) = b.google()? {
        worker = worker.with_google(google);
    }
    if let Some(notifier) = b.notifier()? {
        worker = worker.with_notifier(notifier);
    }
    Ok(worker)
}

pub fn broadcaster(b: &dyn Backend) -> anyhow::Result<Broadcaster> {
    Ok(Broadcaster::new(
        b.store()?,
        b.log()?,
        b.pusher()?,
        b.clock(),
    ))
}

/// The scheduler of the registered bands, keeping their watch channels when there is
/// Google.
pub fn scheduler(b: &dyn Backend) -> anyhow::Result<Scheduler> {
    let store = b.store()?;
    let keeper = b.watch()?.map(|watch| {
        WatchKeeper::new(
            store.clone(),
            store.clone(),
            watch.api,
            b.clock(),
            watch.address,
        )
    });
    Ok(
        Scheduler::new(store.clone(), b.log()?, b.sync_queue()?, b.clock())
            .with_registry(store)
            .with_watch_keeper(keeper),
    )
}

pub fn ws_connect(b: &dyn Backend) -> anyhow::Result<WsConnect> {
    Ok(WsConnect::new(b.store()?, b.tokens()?, b.clock()))
}

pub fn ws_disconnect(b: &dyn Backend) -> anyhow::Result<WsDisconnect> {
    Ok(WsDisconnect::new(b.store()?))
}

pub fn ws_message(b: &dyn Backend) -> anyhow::Result<WsMessage> {
    let store = b.store()?;
    Ok(WsMessage::new(
        store.clone(),
        b.log()?,
        store,
        b.sync_queue()?,
        b.pusher()?,
        b.clock(),
    ))
}
