//! Presence: `presence.joined` when a member's first device connects to a band,
//! `presence.left` when its last one went and none came back within the debounce, and
//! who is online now.
//!
//! $connect and $disconnect keep, per (band, member), the set of its live connections
//! ([`PresenceStore`]); a last disconnect only marks the member leaving. A reconnect
//! within the debounce clears the mark and publishes nothing (the others never saw it
//! go); [`Presence::sweep`] publishes `presence.left` for marks older than the debounce.
//! Event ids are deterministic (`p:<band>:<member>:joined:<since ms>`,
//! `p:<band>:<member>:left:<leaving ms>`), so a redelivered connect, disconnect or sweep
//! publishes nothing twice.

use crate::model::{BandId, ChannelName, Connection, NewEvent, UserId};
use crate::ports::{Arrival, Clock, Departure, PortResult, PresenceRecord, PresenceStore};
use crate::publish::Publisher;
use crate::wire::events::{EventKind, PresenceChanged};
use crate::wire::frames::PresentMember;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// How long a member whose last device went stays online, waiting for it to come back
/// (a phone switching from Wi-Fi to cellular reconnects within a few seconds).
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_secs(10);
/// Leaving marks settled per read of the index.
const SWEEP_BATCH: usize = 100;
/// Reads of the index per sweep: a sweep stays short, the next one takes the rest.
const SWEEP_ROUNDS: usize = 10;

#[derive(Clone)]
pub struct Presence {
    store: Arc<dyn PresenceStore>,
    publisher: Publisher,
    clock: Arc<dyn Clock>,
    debounce: Duration,
}

/// The event id of a presence change.
fn event_id(band: &BandId, member: &UserId, what: &str, at: DateTime<Utc>) -> String {
    format!("p:{band}:{member}:{what}:{}", at.timestamp_millis())
}

impl Presence {
    pub fn new(store: Arc<dyn PresenceStore>, publisher: Publisher, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            publisher,
            clock,
            debounce: DEFAULT_DEBOUNCE,
        }
    }

    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// A connection of `conn.user` opened: count it in each of its bands, and publish
    /// `presence.joined` where it is the member's first device.
    pub async fn connected(&self, conn: &Connection) -> PortResult<()> {
        let now = self.clock.now();
        for band in &conn.bands {
            let arrival = self.store.arrive(band, &conn.user, &conn.id, now).await?;
            tracing::debug!(%band, ?arrival, "presence arrival");
            let since = match arrival {
                Arrival::Joined { since } => since,
                // A redelivered connect publishes its joined again: the log has the id
                // already if the first delivery got that far, and keeps one copy.
                Arrival::Repeat { since } => since,
                Arrival::Back { .. } | Arrival::Another { .. } => continue,
            };
            let change = PresenceChanged {
                member: conn.user.clone(),
                devices: 1,
                since,
                at: since,
            };
            let id = event_id(band, &conn.user, "joined", since);
            self.publish(
                band,
                NewEvent::new(id, since, EventKind::PresenceJoined(change)),
            )
            .await?;
        }
        Ok(())
    }

    /// A connection closed (or was found gone): uncount it. A member's last device
    /// only marks it leaving; [`Self::sweep`] decides later.
    pub async fn disconnected(&self, conn: &Connection) -> PortResult<()> {
        uncount(self.store.as_ref(), conn, self.clock.now()).await
    }

    /// Publish `presence.left` for every member whose last device went longer ago than
    /// the debounce and did not come back. Returns how many left.
    pub async fn sweep(&self) -> PortResult<u64> {
        let due = self.clock.now() - chrono::Duration::from_std(self.debounce).unwrap_or_default();
        let mut left = 0;
        for _ in 0..SWEEP_ROUNDS {
            let marks = self.store.leaving(due, SWEEP_BATCH).await?;
            for mark in &marks {
                left += u64::from(self.settle(mark).await?);
            }
            if marks.len() < SWEEP_BATCH {
                break;
            }
        }
        Ok(left)
    }

    /// Settle one mark: publish before forgetting it, so a sweep that fails in between
    /// publishes on the next round (the same id: one copy).
    async fn settle(&self, mark: &PresenceRecord) -> PortResult<bool> {
        let Some(at) = mark.leaving_since else {
            return Ok(false);
        };
        let (band, member) = (&mark.band, &mark.member);
        let gone = self.store.settle(band, member, at).await?;
        if gone {
            let change = PresenceChanged {
                member: member.clone(),
                devices: 0,
                since: mark.since,
                at,
            };
            let id = event_id(band, member, "left", at);
            let now = self.clock.now();
            self.publish(
                band,
                NewEvent::new(id, now, EventKind::PresenceLeft(change)),
            )
            .await?;
        }
        self.store.forget_mark(band, member, at).await?;
        Ok(gone)
    }

    /// Sweep, logging a failure: for handlers whose own work is done (a $connect, a
    /// $disconnect), so presence-left latency does not wait for the next scheduler tick.
    pub async fn sweep_quietly(&self) {
        if let Err(e) = self.sweep().await {
            tracing::warn!(error = %e, "presence sweep failed");
        }
    }

    async fn publish(&self, band: &BandId, event: NewEvent) -> PortResult<()> {
        self.publisher
            .publish(&ChannelName::Band(band.clone()), &[event])
            .await
            .map(drop)
    }
}

/// The band's members online now, by member id (the `presence` action and
/// `GET /sync/presence`; the caller checks membership).
pub async fn online(store: &dyn PresenceStore, band: &BandId) -> PortResult<Vec<PresentMember>> {
    let present = store.present(band).await?;
    Ok(present
        .into_iter()
        .map(|p| PresentMember {
            member: p.member,
            devices: p.devices,
            since: p.since,
        })
        .collect())
}

/// Uncount a connection from its member's bands (a member's last device marks it
/// leaving): what $disconnect does through [`Presence::disconnected`], and the
/// broadcaster for a connection it found gone (whose $disconnect may never come).
pub async fn uncount(
    store: &dyn PresenceStore,
    conn: &Connection,
    at: DateTime<Utc>,
) -> PortResult<()> {
    for band in &conn.bands {
        let departure = store.depart(band, &conn.user, &conn.id, at).await?;
        if let Departure::Leaving { .. } = departure {
            tracing::debug!(%band, member = %conn.user, "last device gone; leaving");
        }
    }
    Ok(())
}
