//! The one wiring: every handler built from a [`Backend`], the same way for the Lambda
//! mains ([`AwsContext`](crate::adapters::aws::AwsContext)), the local stack (the
//! embedded store) and the tests (the harness). A handler gets only the ports it uses.
//!
//! Each constructor asks the backend for its parts directly (no constructor calls
//! another): a Lambda's environment has only the variables of the parts its handler
//! asks for, and the template test reads these bodies to check that.

pub mod backend;

pub use backend::{Backend, Ports, Watch};

use crate::api::{Api, ApiStores};
use crate::broadcast::Broadcaster;
use crate::entities::push::PushService;
use crate::entities::settle::Settler;
use crate::presence::Presence;
use crate::publish::Publisher;
use crate::scheduler::Scheduler;
use crate::sync::purge::Purger;
use crate::sync::{SyncStores, SyncWorker};
use crate::watch_keeper::WatchKeeper;
use crate::webhook::WebhookIntake;
use crate::ws_connect::WsConnect;
use crate::ws_disconnect::WsDisconnect;
use crate::ws_message::WsMessage;

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
        watch_channels: store.clone(),
        log: b.log()?,
        entities: store.clone(),
    };
    Ok(Api::new(
        stores,
        b.sync_queue()?,
        b.tokens()?,
        b.clock(),
        b.health_checks()?,
    )
    .with_credentials_key(b.credentials_key()?)
    .with_presence(store)
    .with_deployment(b.deployment()))
}

/// The sync worker: it publishes to the broadcast queue, alerts through the notifier
/// (if any), and syncs Google sources when there is Google.
pub fn sync_worker(b: &dyn Backend) -> anyhow::Result<SyncWorker> {
    // A source's sync is bulk: it waits for the broadcaster so members' edits do not.
    let publisher = Publisher::new(b.log()?, b.broadcast_queue()?)
        .with_backpressure(crate::publish::Backpressure::default());
    let store = b.store()?;
    let stores = SyncStores {
        configs: store.clone(),
        sources: store.clone(),
        catalog: store.clone(),
        operations: store,
    };
    let mut worker = SyncWorker::new(stores, publisher, b.clock()).with_deployment(b.deployment());
    if let Some(google) = b.google()? {
        worker = worker.with_google(google);
    }
    if let Some(notifier) = b.notifier()? {
        worker = worker.with_notifier(notifier);
    }
    Ok(worker)
}

pub fn broadcaster(b: &dyn Backend) -> anyhow::Result<Broadcaster> {
    Ok(Broadcaster::new(b.store()?, b.log()?, b.pusher()?, b.clock()).with_presence(b.store()?))
}

/// The scheduler of the registered bands, keeping their watch channels when there is
/// Google, and sweeping presence's due `presence.left`s.
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
    let presence = Presence::new(
        store.clone(),
        Publisher::new(b.log()?, b.broadcast_queue()?),
        b.clock(),
    )
    .with_debounce(b.presence_debounce());
    Ok(Scheduler::new(
        store.clone(),
        store.clone(),
        b.log()?,
        b.sync_queue()?,
        b.clock(),
    )
    .with_settler(Settler::new(
        store.clone(),
        store.clone(),
        Some(Publisher::new(b.log()?, b.broadcast_queue()?)),
    ))
    .with_entities(store.clone())
    .with_purger(Purger::new(
        store.clone(),
        store.clone(),
        store.clone(),
        Publisher::new(b.log()?, b.broadcast_queue()?),
        b.clock(),
    ))
    .with_registry(store)
    .with_watch_keeper(keeper)
    .with_presence(presence))
}

/// $connect, counting the member's devices for presence (whose events it publishes).
pub fn ws_connect(b: &dyn Backend) -> anyhow::Result<WsConnect> {
    let presence = Presence::new(
        b.store()?,
        Publisher::new(b.log()?, b.broadcast_queue()?),
        b.clock(),
    )
    .with_debounce(b.presence_debounce());
    Ok(WsConnect::new(b.store()?, b.tokens()?, b.clock()).with_presence(presence))
}

/// $disconnect, uncounting the member's devices (and sweeping due `presence.left`s).
pub fn ws_disconnect(b: &dyn Backend) -> anyhow::Result<WsDisconnect> {
    let presence = Presence::new(
        b.store()?,
        Publisher::new(b.log()?, b.broadcast_queue()?),
        b.clock(),
    )
    .with_debounce(b.presence_debounce());
    Ok(WsDisconnect::new(b.store()?).with_presence(presence))
}

/// The client protocol, with the push service: its commits append to the store's own
/// log (in the same write as the entity), and their events go to the broadcast queue.
pub fn ws_message(b: &dyn Backend) -> anyhow::Result<WsMessage> {
    let store = b.store()?;
    let push = PushService::new(
        store.clone(),
        store.clone(),
        Publisher::new(b.log()?, b.broadcast_queue()?),
        b.clock(),
    );
    Ok(WsMessage::new(
        store.clone(),
        b.log()?,
        store.clone(),
        b.sync_queue()?,
        b.pusher()?,
        b.clock(),
        push,
    )
    .with_presence(store))
}

/// Presence's sweep and its query (the scheduler's tick and the local stack's timer,
/// `GET /sync/presence`, the `presence` action).
pub fn presence(b: &dyn Backend) -> anyhow::Result<Presence> {
    Ok(Presence::new(
        b.store()?,
        Publisher::new(b.log()?, b.broadcast_queue()?),
        b.clock(),
    )
    .with_debounce(b.presence_debounce()))
}
