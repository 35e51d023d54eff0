//! The `ask` fallback: open conflicts past their deadline are settled by the field's
//! fallback policy ([`Engine::settle`]) and committed by the service itself (a
//! settlement commit, mid 0, see [`Commit::is_settlement`]) with their
//! `entity.updated` and `conflict.resolved` events. Run from the scheduler's tick.
//!
//! No Scan: a band's open conflicts are one Query of its open listing (at most
//! [`OPEN_PAGE`] a tick, newest first; they are few, since members settle most and the
//! rest are settled here within a tick of their deadline). Idempotent: a settlement
//! that raced a member's change (or another tick) reads the conflict again, and one
//! that was settled meanwhile is left alone.

use super::merge::{ApplyContext, Engine, Verdict};
use super::push::{change_event, conflict_change};
use super::records::{Commit, CommitError, ConflictRecord, Receipt};
use super::types::BandTypes;
use crate::model::{BandId, ChannelName, DeviceId, UserId};
use crate::ports::{ConfigStore, EntityStore, PortError};
use crate::publish::Publisher;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// Open conflicts read per band and tick.
pub const OPEN_PAGE: usize = 1000;
/// Tries of one settlement whose entity another writer moved meanwhile.
const ATTEMPTS: usize = 4;
/// Who a settlement is by, in its history entry and event.
pub const SETTLER_DEVICE: &str = "bandsync-settler";
pub const SETTLER_MEMBER: &str = "bandsync";

/// What one sweep of a band did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettleReport {
    /// Conflicts settled by their fallback (or by a member while this tick raced it).
    pub settled: usize,
    /// Due conflicts the fallback could not settle (their entity is gone or deleted,
    /// its type no longer has the field): left open, logged.
    pub unsettled: usize,
}

impl SettleReport {
    pub fn add(&mut self, other: &Self) {
        self.settled += other.settled;
        self.unsettled += other.unsettled;
    }
}

pub struct Settler {
    entities: Arc<dyn EntityStore>,
    configs: Arc<dyn ConfigStore>,
    /// Where the settlements' events are queued for broadcast (they are in the log
    /// whatever happens: the commit appends them).
    publisher: Option<Publisher>,
    engine: Engine,
    device: DeviceId,
    member: UserId,
}

impl Settler {
    pub fn new(
        entities: Arc<dyn EntityStore>,
        configs: Arc<dyn ConfigStore>,
        publisher: Option<Publisher>,
    ) -> Self {
        Self {
            entities,
            configs,
            publisher,
            engine: Engine::new(),
            device: crate::const_id!(DeviceId, SETTLER_DEVICE),
            member: crate::const_id!(UserId, SETTLER_MEMBER),
        }
    }

    /// Settle every open conflict of `band` whose deadline is at or before `now`.
    #[tracing::instrument(skip(self))]
    pub async fn settle_band(
        &self,
        band: &BandId,
        now: DateTime<Utc>,
    ) -> Result<SettleReport, PortError> {
        let mut report = SettleReport::default();
        let due: Vec<ConflictRecord> = self
            .entities
            .list_conflicts(band, true, OPEN_PAGE)
            .await?
            .into_iter()
            .filter(|c| c.resolution.is_none() && c.deadline <= now)
            .collect();
        if due.is_empty() {
            return Ok(report);
        }
        let types = match self.configs.get_config(band).await? {
            Some(c) => BandTypes::new(c.entity_types, c.strict_entities),
            None => BandTypes::new(Vec::new(), false),
        };
        for conflict in due {
            if self.settle_one(band, &types, conflict, now).await? {
                report.settled += 1;
            } else {
                report.unsettled += 1;
            }
        }
        Ok(report)
    }

    /// One conflict: true when it is settled now (or was meanwhile).
    async fn settle_one(
        &self,
        band: &BandId,
        types: &BandTypes,
        mut conflict: ConflictRecord,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        for _ in 0..ATTEMPTS {
            let ty = match types.get(&conflict.entity_type) {
                Ok(ty) => ty.into_owned(),
                Err(e) => {
                    tracing::warn!(conflict = %conflict.id, error = %e.message, "a due conflict of a type the band lost");
                    return Ok(false);
                }
            };
            let Some(current) = self
                .entities
                .get_entity(band, &conflict.entity_type, &conflict.entity_id)
                .await?
            else {
                tracing::warn!(conflict = %conflict.id, "a due conflict without its entity");
                return Ok(false);
            };
            let cx = ApplyContext {
                band,
                ty: &ty,
                member: &self.member,
                device: &self.device,
                now,
                resolving: None,
            };
            let Verdict::Changed {
                entity,
                history,
                result,
                conflicts,
            } = self.engine.settle(&cx, &current, &conflict)
            else {
                tracing::warn!(conflict = %conflict.id, "the fallback could not settle a due conflict");
                return Ok(false);
            };
            // The settling device has no mids: the event is named by the conflict, so
            // every settlement has its own (and a repeated one finds its first copy).
            let mut event = change_event(&history);
            event.id = format!("s:{}", conflict.id);
            let commit = Commit {
                device: self.device.clone(),
                mid: 0,
                receipt: Receipt {
                    device: self.device.clone(),
                    mid: 0,
                    band: band.clone(),
                    member: self.member.clone(),
                    at: now,
                    result,
                    parked: None,
                },
                entity: Some(entity),
                expected_version: current.version,
                history: Some(history),
                more_events: conflicts.iter().filter_map(conflict_change).collect(),
                conflicts,
                event: Some((ChannelName::Band(band.clone()), event)),
            };
            match self.entities.commit_events(&commit).await {
                Ok(events) => {
                    if let Some(p) = &self.publisher {
                        let channel = ChannelName::Band(band.clone());
                        if let Err(e) = p.enqueue(&channel, &events).await {
                            tracing::warn!(%band, error = ?e, "a settlement's events could not be queued");
                        }
                    }
                    return Ok(true);
                }
                Err(CommitError::Raced(why)) => {
                    tracing::debug!(conflict = %conflict.id, %why, "settlement raced; reading again");
                    match self.entities.get_conflict(band, &conflict.id).await? {
                        Some(c) if c.resolution.is_none() => conflict = c,
                        Some(_) => return Ok(true),
                        None => return Ok(false),
                    }
                }
                Err(CommitError::Port(e)) => return Err(e),
            }
        }
        Ok(false)
    }
}
