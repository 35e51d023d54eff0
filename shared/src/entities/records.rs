//! What the [`crate::ports::EntityStore`] keeps, and the one atomic [`Commit`] a
//! mutation's verdict is written with. The stores keep these as JSON beside their keys,
//! as they do every other record: they know nothing of merging.

use super::mutation::{MutationResult, Op};
use super::state::{EntityState, Stamp};
use crate::model::{
    BandId, ChannelName, ConflictId, DeviceId, EntityId, EntityTypeName, NewEvent, UserId,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An entity's current state: the projection of its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityRecord {
    pub band: BandId,
    pub entity_type: EntityTypeName,
    pub id: EntityId,
    /// 1 after its create; one more with every applied or merged mutation.
    pub version: u64,
    /// A deleted entity keeps its record (and history) with this set.
    #[serde(default)]
    pub deleted: bool,
    /// The member who created it (who `owner` fields belong to).
    pub created_by: UserId,
    pub updated_at: DateTime<Utc>,
    /// The largest stamp of any mutation applied to it.
    pub hlc: Stamp,
    pub state: EntityState,
}

/// How one field's concurrent change was decided, for history and analytics.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub field: String,
    pub policy: String,
    /// `applied` (nothing concurrent), `won`, `lost`, `merged`, `conflict`.
    pub outcome: String,
    /// The value that lost, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loser: Option<Value>,
}

/// A field's value before and after one version.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDiff {
    pub field: String,
    pub before: Value,
    pub after: Value,
}

/// One version of an entity: who made it, with which mutation, and what changed. The
/// entity at version `v` is the fold of its entries 1..=v ([`HistoryEntry::entity`] is
/// the state after, so a rebuild can be checked against the stored record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub band: BandId,
    pub entity_type: EntityTypeName,
    pub id: EntityId,
    pub version: u64,
    /// Server time of the commit.
    pub at: DateTime<Utc>,
    pub member: UserId,
    pub device: DeviceId,
    pub mid: u64,
    pub op: Op,
    /// The mutation's stamp (its client time `ts` bounded by the server's).
    pub stamp: Stamp,
    /// The fields as the client sent them.
    pub input: serde_json::Map<String, Value>,
    pub diff: Vec<FieldDiff>,
    pub decisions: Vec<Decision>,
    /// The entity right after this version.
    pub entity: EntityRecord,
}

/// A device's verdict on one mid, kept so the same mid is answered the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub device: DeviceId,
    pub mid: u64,
    pub band: BandId,
    pub member: UserId,
    pub at: DateTime<Utc>,
    pub result: MutationResult,
    /// A rejected mutation as it was pushed (parked for the member to see and retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<Value>,
}

/// What kind of device a member registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Ios,
    Android,
    Web,
    Desktop,
    Other,
}

/// A member's device: who it belongs to, what it wants sent, and the next mid it may push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub device: DeviceId,
    /// The first member who registered it; nobody else may use it.
    pub member: UserId,
    pub platform: Platform,
    pub name: String,
    /// What it is sent (see `entities::categories`); empty: everything.
    #[serde(default)]
    pub categories: Vec<String>,
    /// The mid its next mutation must have (1 for a new device).
    pub next_mid: u64,
    pub registered_at: DateTime<Utc>,
}

/// A conflict an `ask` field opened: both values kept until members (or the fallback
/// policy, after the timeout) settle it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictRecord {
    pub band: BandId,
    pub id: ConflictId,
    pub entity_type: EntityTypeName,
    pub entity_id: EntityId,
    pub field: String,
    pub opened_at: DateTime<Utc>,
    /// When the fallback policy decides if no member has.
    pub deadline: DateTime<Utc>,
    /// The values in contention: the one the entity kept first, then the challenger.
    pub candidates: Vec<Candidate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
}

/// One value in an `ask` conflict, and who wrote it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub value: Value,
    pub member: UserId,
    pub device: DeviceId,
    pub mid: u64,
    /// The stamp it was written with (what the `lww` fallback compares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<Stamp>,
}

/// How a conflict was settled.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    pub value: Value,
    pub at: DateTime<Utc>,
    /// The member who resolved it, or none when the fallback policy did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<UserId>,
    /// `member`, the fallback policy's name, or `gone` (the entity was deleted before
    /// anyone settled it).
    pub how: String,
    /// Why it was settled so, when the service did it without a choice (`gone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a store writes for one verdict, all or nothing.
///
/// A commit of mid 0 is a settlement ([`Commit::is_settlement`]): the service itself
/// writes a version (the `ask` fallback past a conflict's deadline), with no device
/// behind it. Its `device` names the settling service; the device's mid and the receipt
/// are not written (mids start at 1, so no device's receipt is ever of mid 0), and the
/// entity's `expected_version` alone guards it: a settlement that raced a member's
/// change is [`CommitError::Raced`] like any commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    /// The device's mid moves from `mutation.mid` to `mutation.mid + 1`; the commit
    /// fails with [`CommitError::Raced`] if the device's `next_mid` is not `mid` any more.
    pub device: DeviceId,
    pub mid: u64,
    /// The verdict, kept under (device, mid).
    pub receipt: Receipt,
    /// The entity's new state (none for a refused mutation), written only if the stored
    /// version is still `expected_version` (0: there is none yet).
    pub entity: Option<EntityRecord>,
    pub expected_version: u64,
    /// The entity's new history entry (with `entity`).
    pub history: Option<HistoryEntry>,
    /// Conflicts opened or settled.
    pub conflicts: Vec<ConflictRecord>,
    /// The event of the change, appended to this channel's log in the same commit
    /// (its seq is given there), so an applied change is never without its event.
    pub event: Option<(ChannelName, NewEvent)>,
    /// More events of the same verdict (`conflict.opened` / `conflict.resolved`),
    /// appended right after `event` on its channel in the same write, so a conflict's
    /// events are never without the change that opened or settled it. Needs `event`.
    pub more_events: Vec<NewEvent>,
}

impl Commit {
    /// Written by the service itself (mid 0): no device mid, no receipt.
    pub fn is_settlement(&self) -> bool {
        self.mid == 0
    }

    /// Every event of the commit, in the order they are appended: `event`, then
    /// `more_events`, on `event`'s channel.
    pub fn events(&self) -> Option<(&ChannelName, Vec<NewEvent>)> {
        let (channel, first) = self.event.as_ref()?;
        let mut events = Vec::with_capacity(1 + self.more_events.len());
        events.push(first.clone());
        events.extend(self.more_events.iter().cloned());
        Some((channel, events))
    }

    /// What every store checks before writing anything: the receipt is the one of
    /// (device, mid), the entity is one version past `expected_version`, and the history
    /// entry (which needs an entity) is of that entity at that version. An inconsistent
    /// commit is a bug of its caller, refused with what is wrong.
    pub fn check(&self) -> Result<(), InconsistentCommit> {
        match self.inconsistency() {
            Some(why) => Err(InconsistentCommit(why)),
            None => Ok(()),
        }
    }

    /// What is wrong with the commit, if anything.
    fn inconsistency(&self) -> Option<String> {
        if (&self.receipt.device, self.receipt.mid) != (&self.device, self.mid) {
            return Some(format!(
                "the receipt is of {}#{}, the commit of {}#{}",
                self.receipt.device, self.receipt.mid, self.device, self.mid
            ));
        }
        if self.mid == u64::MAX {
            return Some("a device's mids end at u64::MAX - 1".into());
        }
        if self.event.is_none() && !self.more_events.is_empty() {
            return Some("more events without the commit's event (their channel)".into());
        }
        if let Some((_, events)) = self.events() {
            let mut ids = std::collections::HashSet::new();
            if let Some(e) = events.iter().find(|e| !ids.insert(e.id.as_str())) {
                return Some(format!("the event id {} twice in one commit", e.id));
            }
        }
        let Some(entity) = &self.entity else {
            // A settlement without an entity settles the conflicts of one that is gone:
            // it writes conflicts and their events, nothing else.
            if self.is_settlement()
                && (self.conflicts.is_empty()
                    || self.conflicts.iter().any(|c| c.resolution.is_none()))
            {
                return Some(
                    "a settlement (mid 0) without the entity it settles must settle conflicts"
                        .into(),
                );
            }
            return self
                .history
                .as_ref()
                .map(|_| "a history entry without its entity".into());
        };
        if entity.band != self.receipt.band {
            return Some(format!(
                "the entity is of band {}, the receipt of {}",
                entity.band, self.receipt.band
            ));
        }
        if Some(entity.version) != self.expected_version.checked_add(1) {
            return Some(format!(
                "the entity's version {} is not expected_version {} + 1",
                entity.version, self.expected_version
            ));
        }
        match &self.history {
            Some(h)
                if (&h.band, &h.entity_type, &h.id, h.version)
                    != (
                        &entity.band,
                        &entity.entity_type,
                        &entity.id,
                        entity.version,
                    ) =>
            {
                Some(format!(
                    "the history entry is of {}/{} v{}, the entity {}/{} v{}",
                    h.entity_type, h.id, h.version, entity.entity_type, entity.id, entity.version
                ))
            }
            _ => None,
        }
    }
}

/// Why a commit wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The entity's version or the device's mid moved since they were read (another
    /// writer): read again and decide again.
    #[error("raced: {0}")]
    Raced(String),
    #[error(transparent)]
    Port(#[from] crate::ports::PortError),
}

/// A commit that does not hold together, refused by every store before it writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing an inconsistent commit: {0}")]
pub struct InconsistentCommit(pub String);

impl From<InconsistentCommit> for CommitError {
    /// A backend failure to the caller: retrying the same commit cannot help, and the
    /// push path answers it as the server's error, not as a verdict.
    fn from(e: InconsistentCommit) -> Self {
        CommitError::Port(crate::ports::PortError::Backend(anyhow::Error::new(e)))
    }
}

/// A page of a band's current entities, in (type, id) order.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityPage {
    pub entities: Vec<EntityRecord>,
    /// Where the next page starts (`after`), or none when this is the last.
    pub next: Option<(EntityTypeName, EntityId)>,
}

impl EntityPage {
    /// The page of `limit` entities out of a read of up to `limit + 1` (the one more
    /// says whether a next page exists).
    pub fn of(mut entities: Vec<EntityRecord>, limit: usize) -> Self {
        let next = if entities.len() > limit {
            entities.truncate(limit);
            entities
                .last()
                .map(|e| (e.entity_type.clone(), e.id.clone()))
        } else {
            None
        };
        Self { entities, next }
    }
}
