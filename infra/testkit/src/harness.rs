//! Every handler wired to one in-memory [`EmbeddedStore`], recording queues, a recording
//! pusher and a fixed clock, as the Lambda functions and the local stack wire them.
//! Built in one place ([`Harness::new`]); the handlers come from bandsync's
//! [`wiring`], as the Lambda mains' and the local stack's do.

use crate::fakes::{FixedClock, FlakyLog, RecordingPusher, RecordingQueue};
use bandsync::adapters::local::EmbeddedStore;
use bandsync::api::Api;
use bandsync::auth::TokenKey;
use bandsync::broadcast::Broadcaster;
use bandsync::model::CONNECTION_TTL;
use bandsync::model::*;
use bandsync::ports::{ChannelLog, Clock, ConfigStore, ConnectionStore, SourceStore};
use bandsync::publish::Publisher;
use bandsync::sync::SyncWorker;
use bandsync::webhook::WebhookIntake;
use bandsync::wire::events::{EventKind, SyncProgress};
use bandsync::wiring::{self, Ports};
use bandsync::ws_connect::WsConnect;
use bandsync::ws_disconnect::WsDisconnect;
use bandsync::ws_message::WsMessage;
use chrono::{DateTime, TimeDelta, Utc};

use std::sync::Arc;
use std::time::Duration;

pub fn band(id: &str) -> BandId {
    BandId::parse(id).expect("a valid band id")
}

pub fn source_id(id: &str) -> SourceId {
    SourceId::parse(id).expect("a valid source id")
}

pub fn conn_id(id: &str) -> ConnectionId {
    ConnectionId::parse(id).expect("a valid connection id")
}

pub fn channel(name: &str) -> ChannelName {
    ChannelName::parse(name).expect("a valid channel name")
}

/// Every handler wired to one in-memory store, recording queues, a recording pusher
/// and a fixed clock, as the Lambda functions and the local stack wire them.
pub struct Harness {
    pub store: Arc<EmbeddedStore>,
    pub sync_queue: Arc<RecordingQueue>,
    pub broadcast_queue: Arc<RecordingQueue>,
    pub pusher: Arc<RecordingPusher>,
    pub clock: Arc<FixedClock>,
    pub tokens: TokenKey,
    /// The store's channel log as the publisher sees it (can be told to fail).
    pub log: Arc<FlakyLog>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        let store = Arc::new(EmbeddedStore::in_memory().expect("an in-memory store"));
        Self {
            log: Arc::new(FlakyLog::new(store.clone())),
            store,
            sync_queue: Arc::new(RecordingQueue::new()),
            broadcast_queue: Arc::new(RecordingQueue::new()),
            pusher: Arc::new(RecordingPusher::new()),
            clock: Arc::new(FixedClock::default()),
            tokens: TokenKey::new("unit-test-secret"),
        }
    }

    /// The clock's now.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A token for `user` in `bands`, valid for an hour from the clock's now.
    pub fn token(&self, user: &str, bands: &[&str]) -> String {
        self.tokens
            .mint(user, bands, self.clock.now(), TimeDelta::hours(1))
    }

    /// `Authorization` header value for [`Self::token`].
    pub fn bearer(&self, user: &str, bands: &[&str]) -> String {
        format!("Bearer {}", self.token(user, bands))
    }

    /// A band with its configuration (every file type).
    pub async fn add_band(&self, id: &str) -> BandId {
        let b = band(id);
        self.store
            .put_config(&SyncConfiguration {
                band: b.clone(),
                name: id.to_owned(),
                file_types: vec![],
                google_credentials: None,
                entity_types: vec![],
                strict_entities: false,
                history_days: None,
            })
            .await
            .expect("put_config");
        b
    }

    /// A source of a band (a folder source at `location`).
    pub async fn add_source(&self, band: &BandId, id: &str, location: &str) -> Source {
        let s = Source::new(band.clone(), source_id(id), SourceKind::Folder, location);
        self.store.put_source(&s).await.expect("put_source");
        s
    }

    /// A connection registered as $connect would, for `user` in `bands`.
    pub async fn add_connection(&self, id: &str, user: &str, bands: &[&str]) -> ConnectionId {
        let now = self.clock.now();
        let conn = Connection {
            id: conn_id(id),
            user: UserId::parse(user).expect("a valid user id"),
            bands: bands.iter().map(|b| band(b)).collect(),
            connected_at: now,
            expires_at: now + CONNECTION_TTL,
            device: None,
        };
        self.store
            .put_connection(&conn)
            .await
            .expect("put_connection");
        conn.id
    }

    /// A job as the webhook or the API would queue it, requested now.
    pub fn sync_job(
        &self,
        id: &str,
        band: &BandId,
        source: &SourceId,
        trigger: Trigger,
    ) -> SyncJob {
        SyncJob {
            id: id.to_owned(),
            band: band.clone(),
            source: source.clone(),
            trigger,
            full: false,
            requested_by: None,
            requested_at: self.clock.now(),
        }
    }

    /// Append one `sync.progress` event per label to a channel's log: the label is its
    /// `operation`, its place is `done` of `total`, its id is `<label>#<place>`.
    pub async fn append(&self, channel: &ChannelName, labels: &[&str]) -> Vec<Event> {
        let events: Vec<NewEvent> = labels
            .iter()
            .enumerate()
            .map(|(i, label)| {
                let progress = SyncProgress {
                    operation: (*label).to_owned(),
                    done: i as u64,
                    total: labels.len() as u64,
                };
                let kind = EventKind::SyncProgress(progress);
                NewEvent::new(format!("{label}#{i}"), self.clock.now(), kind)
            })
            .collect();
        self.store.append(channel, &events).await.expect("append")
    }

    /// Everything in a channel's log, oldest first.
    pub async fn log(&self, channel: &ChannelName) -> Vec<Event> {
        self.store
            .read_after(channel, 0, 10_000)
            .await
            .expect("read_after")
    }

    pub fn publisher(&self) -> Publisher {
        Publisher::new(self.log.clone(), self.broadcast_queue.clone())
    }

    /// The harness's parts, for the same wiring as the Lambda mains and the local stack:
    /// the store, the recording queues and pusher, the fixed clock, the channel log the
    /// tests can make fail, the tokens. No notifier, no Google, no credentials key.
    pub fn ports(&self) -> Ports {
        Ports {
            log: self.log.clone(),
            pusher: Some(self.pusher.clone()),
            tokens: Some(self.tokens.clone()),
            ..Ports::new(
                self.store.clone(),
                self.sync_queue.clone(),
                self.broadcast_queue.clone(),
                self.clock.clone(),
            )
        }
    }

    pub fn sync_worker(&self) -> SyncWorker {
        wiring::sync_worker(&self.ports()).expect("the harness has every part")
    }

    /// A broadcaster that retries without waiting.
    pub fn broadcaster(&self) -> Broadcaster {
        let mut b = wiring::broadcaster(&self.ports()).expect("the harness has every part");
        b.backoff = Duration::ZERO;
        b
    }

    pub fn ws_connect(&self) -> WsConnect {
        wiring::ws_connect(&self.ports()).expect("the harness has every part")
    }

    pub fn ws_disconnect(&self) -> WsDisconnect {
        wiring::ws_disconnect(&self.ports()).expect("the harness has every part")
    }

    pub fn ws_message(&self) -> WsMessage {
        wiring::ws_message(&self.ports()).expect("the harness has every part")
    }

    pub fn webhook(&self) -> WebhookIntake {
        wiring::webhook(&self.ports()).expect("the harness has every part")
    }

    pub fn api(&self) -> Api {
        wiring::api(&self.ports()).expect("the harness has every part")
    }
}
