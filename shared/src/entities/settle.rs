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
use super::mutation::{MutationResult, MutationStatus};
use super::push::{change_event, conflict_change};
use super::records::{Commit, CommitError, ConflictRecord, Receipt, Resolution};
use super::types::BandTypes;
use crate::model::{BandId, ChannelName, DeviceId, UserId};
use crate::ports::{ConfigStore, EntityStore, PortError};
use crate::publish::Publisher;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::Arc;

/// Open conflicts read per band and tick.
pub const OPEN_PAGE: usize = 1000;
/// Tries of one settlement whose entity another writer moved meanwhile.
const ATTEMPTS: usize = 4;
/// Who a settlement is by, in its history entry and event.
pub const SETTLER_DEVICE: &str = "bandsync-settler";
pub const SETTLER_MEMBER: &str = "bandsync";
/// How a conflict whose entity was deleted before it was settled is resolved.
pub const GONE: &str = "gone";

/// What one sweep of a band did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettleReport {
    /// Conflicts settled by their fallback (or by a member while this tick raced it).
    pub settled: usize,
    /// Due conflicts the fallback could not settle (their type is gone or no longer has
    /// the field): left open, logged. One whose entity was deleted is settled (`gone`).
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
            let current = self
                .entities
                .get_entity(band, &conflict.entity_type, &conflict.entity_id)
                .await?;
            let Some(current) = current.filter(|e| !e.deleted) else {
                return self.settle_gone(band, conflict, now).await;
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
                receipt: self.receipt(band, now, result),
                entity: Some(entity),
                expected_version: current.version,
                history: Some(history),
                more_events: conflicts.iter().filter_map(conflict_change).collect(),
                conflicts,
                event: Some((ChannelName::Band(band.clone()), event)),
            };
            match self.entities.commit_events(&commit).await {
                Ok(events) => {
                    self.publish(band, &events).await;
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

    /// A due conflict whose entity was deleted (or is gone): nothing is left to choose
    /// for, so it is settled as `gone` with a reason, and its `conflict.resolved` is
    /// published, rather than kept open forever. The entity is not written (a deleted
    /// entity gets no new version for it): the commit holds the conflict and its event
    /// alone. Idempotent: the event's id is the conflict's, so a repeated settlement
    /// keeps the event it appended first.
    async fn settle_gone(
        &self,
        band: &BandId,
        mut conflict: ConflictRecord,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        let reason = format!(
            "{} {} was deleted before the conflict on {} was settled",
            conflict.entity_type, conflict.entity_id, conflict.field
        );
        tracing::info!(conflict = %conflict.id, "settling a due conflict whose entity is gone");
        conflict.resolution = Some(Resolution {
            value: Value::Null,
            at: now,
            by: None,
            how: GONE.into(),
            reason: Some(reason),
        });
        let Some(event) = conflict_change(&conflict) else {
            return Ok(false);
        };
        let commit = Commit {
            device: self.device.clone(),
            mid: 0,
            receipt: self.receipt(band, now, MutationResult::bare(0, MutationStatus::Applied)),
            entity: None,
            expected_version: 0,
            history: None,
            conflicts: vec![conflict],
            event: Some((ChannelName::Band(band.clone()), event)),
            more_events: Vec::new(),
        };
        match self.entities.commit_events(&commit).await {
            Ok(events) => {
                self.publish(band, &events).await;
                Ok(true)
            }
            Err(CommitError::Raced(why)) => {
                tracing::debug!(%why, "settling a gone entity's conflict raced");
                Ok(false)
            }
            Err(CommitError::Port(e)) => Err(e),
        }
    }

    /// A settlement's receipt (the stores do not keep it: mid 0 has none).
    fn receipt(&self, band: &BandId, at: DateTime<Utc>, result: MutationResult) -> Receipt {
        Receipt {
            device: self.device.clone(),
            mid: 0,
            band: band.clone(),
            member: self.member.clone(),
            at,
            result,
            parked: None,
        }
    }

    async fn publish(&self, band: &BandId, events: &[crate::model::Event]) {
        if let Some(p) = &self.publisher {
            let channel = ChannelName::Band(band.clone());
            if let Err(e) = p.enqueue(&channel, events).await {
                tracing::warn!(%band, error = ?e, "a settlement's events could not be queued");
            }
        }
    }
}
