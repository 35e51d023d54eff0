//! An entity rebuilt from its history: state is a projection of the log. Each entry is
//! folded again from what it recorded (the fields as sent, the mutation's stamp, and per
//! field whether it was concurrent, from its decision), never from the stored state, and
//! the result is compared with the entity the entry says it produced. A mismatch names
//! the first version that differs: the log or the projection was changed by something
//! other than the engine.

use super::merge::{ENTITY_FIELD, Engine, Mode, RESOLVED, SETTLED, Write};
use super::mutation::{FieldInput, Op};
use super::policy::FieldOutcome;
use super::records::{EntityRecord, HistoryEntry};
use super::state::EntityState;
use super::types::EntityType;
use std::collections::BTreeMap;

/// Where a rebuild and the history part ways.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("version {version}: {reason}")]
pub struct ReplayMismatch {
    pub version: u64,
    pub reason: String,
}

/// Re-derive an entity from its history (versions 1, 2, ... in order), checking every
/// entry's `entity` against the rebuild. `Ok(None)`: no history.
pub fn replay(
    engine: &Engine,
    ty: &EntityType,
    history: &[HistoryEntry],
) -> Result<Option<EntityRecord>, ReplayMismatch> {
    replay_after(engine, ty, None, history)
}

/// [`replay`] from `start` (the entity at the version before `history`'s first entry;
/// `None`: from nothing, so `history` starts at version 1). A history whose oldest
/// entries the retention pruned is replayed from the oldest entry kept, taking the
/// entity it recorded as the start: the versions after it are checked, the ones
/// before it cannot be.
pub fn replay_after(
    engine: &Engine,
    ty: &EntityType,
    start: Option<EntityRecord>,
    history: &[HistoryEntry],
) -> Result<Option<EntityRecord>, ReplayMismatch> {
    let mut entity = start;
    for entry in history {
        let next = step(engine, ty, entity.as_ref(), entry)?;
        if next != entry.entity {
            return Err(ReplayMismatch {
                version: entry.version,
                reason: format!(
                    "the recorded entity differs from the rebuild in {}",
                    differences(&entry.entity, &next).join(", ")
                ),
            });
        }
        entity = Some(next);
    }
    Ok(entity)
}

fn step(
    engine: &Engine,
    ty: &EntityType,
    prev: Option<&EntityRecord>,
    entry: &HistoryEntry,
) -> Result<EntityRecord, ReplayMismatch> {
    let mismatch = |reason: String| ReplayMismatch {
        version: entry.version,
        reason,
    };
    let expected = prev.map_or(1, |p| p.version + 1);
    if entry.version != expected {
        return Err(mismatch(format!("expected version {expected}")));
    }
    if entry.entity_type != ty.name {
        return Err(mismatch(format!(
            "an entry of {} replayed as {}",
            entry.entity_type, ty.name
        )));
    }
    let fields: BTreeMap<String, FieldInput> = entry
        .input
        .iter()
        .map(|(k, v)| FieldInput::parse(v).map(|f| (k.clone(), f)))
        .collect::<Result<_, _>>()
        .map_err(|e| mismatch(format!("its input does not parse: {e}")))?;
    let modes: BTreeMap<&str, Mode> = entry
        .decisions
        .iter()
        .map(|d| {
            let mode = match d.outcome.as_str() {
                RESOLVED => Mode::Force(RESOLVED),
                SETTLED => Mode::Force(SETTLED),
                other => Mode::Policy {
                    concurrent: FieldOutcome::parse(other) != Some(FieldOutcome::Applied),
                },
            };
            (d.field.as_str(), mode)
        })
        .collect();
    // A create of a deleted entity that did not race its delete (no decision about the
    // entity itself) made it anew: the creator's, from no fields.
    let reborn = prev.is_some_and(|p| p.deleted)
        && entry.op == Op::Create
        && !entry.decisions.iter().any(|d| d.field == ENTITY_FIELD);
    let owner = match prev {
        Some(p) if !reborn => &p.created_by,
        _ => &entry.member,
    };
    let before = match prev {
        Some(p) if !reborn => p.state.clone(),
        _ => EntityState::default(),
    };
    let state = if entry.op == Op::Delete {
        EntityState {
            deleted_by: Some(entry.stamp.clone()),
            ..before
        }
    } else {
        let write = Write {
            op: entry.op,
            fields: &fields,
            stamp: &entry.stamp,
            base_version: 0,
            member: &entry.member,
        };
        let mode = |name: &str, _: Option<&_>| {
            modes
                .get(name)
                .copied()
                .unwrap_or(Mode::Policy { concurrent: false })
        };
        let folded = engine
            .fold(ty, &before, owner, entry.version, &write, &mode)
            .map_err(|e| mismatch(format!("it does not apply again: {e}")))?
            .state;
        EntityState {
            deleted_by: None,
            ..folded
        }
    };
    Ok(EntityRecord {
        band: entry.band.clone(),
        entity_type: entry.entity_type.clone(),
        id: entry.id.clone(),
        version: entry.version,
        deleted: entry.op == Op::Delete,
        created_by: owner.clone(),
        updated_at: entry.at,
        hlc: prev.map_or(entry.stamp.clone(), |p| {
            p.hlc.clone().max(entry.stamp.clone())
        }),
        state,
    })
}

/// What differs between two records, for the mismatch's message.
pub fn differences(recorded: &EntityRecord, rebuilt: &EntityRecord) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |what: &str, same: bool| {
        if !same {
            out.push(what.to_owned());
        }
    };
    check(
        "band, type or id",
        recorded.band == rebuilt.band
            && recorded.entity_type == rebuilt.entity_type
            && recorded.id == rebuilt.id,
    );
    check("deleted", recorded.deleted == rebuilt.deleted);
    check("created_by", recorded.created_by == rebuilt.created_by);
    check("updated_at", recorded.updated_at == rebuilt.updated_at);
    check("hlc", recorded.hlc == rebuilt.hlc);
    let names: std::collections::BTreeSet<&String> = recorded
        .state
        .fields
        .keys()
        .chain(rebuilt.state.fields.keys())
        .collect();
    for name in names {
        check(
            &format!("field {name}"),
            recorded.state.fields.get(name) == rebuilt.state.fields.get(name),
        );
    }
    out
}
