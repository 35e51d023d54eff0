//! The sync engine: decides one mutation against the entity as stored, with no I/O.
//! The push service reads the entity (and the stamp of the mutation's base from its
//! history), asks [`Engine::apply`], and commits the [`Verdict`] it gets.
//!
//! - An entity's version is 1 after its create and one more with every `applied`,
//!   `merged` or `conflict` verdict; its `hlc` is the largest stamp applied.
//! - Three-way merge: a field is concurrent when it changed after the mutation's base
//!   (`changed_at > base_version`); its policy's [`FieldResolver`] decides. The verdict
//!   is `applied` when no field was concurrent, `merged` when some were, `conflict`
//!   when an `ask` field opened a conflict, `rejected` when a check or a policy
//!   refused (nothing applies then; the client gets the current fields to rebase on).
//! - A create of an entity that exists merges field by field as concurrent with
//!   everything it has (two members creating the same song's status); a patch or delete
//!   of one that does not exist is `not_found`.
//! - A delete racing an update (the delete based before a field changed, or a change
//!   based before the delete) follows the type's [`DeleteRule`]: `delete_wins` deletes
//!   (`merged`, the updated values listed as losers) and refuses an update based before
//!   the delete (`not_found`); `update_wins` refuses the delete (`stale_base`) and lets
//!   an update based before the delete bring the entity back (`merged`). A deleted
//!   entity keeps its record (and fields) with `deleted` set.

pub use super::policy::{FieldContext, FieldMerge, FieldOutcome, FieldResolver};

use super::hlc;
use super::mutation::{
    FieldInput, Loser, Mutation, MutationError, MutationResult, MutationStatus, Op,
};
use super::policy;
use super::records::{
    Candidate, ConflictRecord, Decision, EntityRecord, FieldDiff, HistoryEntry, Resolution,
};
use super::state::{EntityState, FieldEntry, FieldState, Stamp, own_earlier};
use super::types::{DeleteRule, EntityType, Policy};
use crate::error::ErrorCode;
use crate::model::{BandId, ConflictId, DeviceId, EntityTypeName, UserId};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Checks a type's mutations beyond their fields' policies (the "middleware" of an
/// embedding application: a setlist entry's title must not be empty, only the band's
/// leader deletes a song). An error refuses the mutation.
pub trait TypeValidator: Send + Sync {
    fn validate(
        &self,
        current: Option<&EntityRecord>,
        m: &Mutation,
        member: &UserId,
    ) -> Result<(), MutationError>;
}

/// The field of a decision about the entity itself (its delete), which no field is
/// named (field names cannot start with `$`).
pub const ENTITY_FIELD: &str = "$entity";

/// How history records a resolved or settled `ask` field.
pub(crate) const RESOLVED: &str = "resolved";
pub(crate) const SETTLED: &str = "settled";

/// The resolvers by policy name (the built-ins and the application's) and the type
/// validators.
#[derive(Clone)]
pub struct Engine {
    resolvers: BTreeMap<String, Arc<dyn FieldResolver>>,
    validators: BTreeMap<EntityTypeName, Vec<Arc<dyn TypeValidator>>>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("resolvers", &self.resolvers.keys().collect::<Vec<_>>())
            .field("validators", &self.validators.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

/// Who pushes what where, read by the caller.
#[derive(Debug, Clone, Copy)]
pub struct ApplyContext<'a> {
    pub band: &'a BandId,
    pub ty: &'a EntityType,
    pub member: &'a UserId,
    pub device: &'a DeviceId,
    pub now: DateTime<Utc>,
    /// The open conflict `m.resolves` names, read by the caller.
    pub resolving: Option<&'a ConflictRecord>,
}

/// The engine's decision on one mutation. (One per mutation, moved into its commit: the
/// size of `Changed` costs nothing worth a box in every caller's pattern.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// applied | merged | conflict: the entity's next state (version + 1), its history
    /// entry, the verdict (seq none: the store gives it), conflicts opened or settled.
    Changed {
        entity: EntityRecord,
        history: HistoryEntry,
        result: MutationResult,
        conflicts: Vec<ConflictRecord>,
    },
    /// rejected (code + message; version and fields: the current ones, to rebase on).
    Refused { result: MutationResult },
}

impl Verdict {
    pub fn result(&self) -> &MutationResult {
        match self {
            Self::Changed { result, .. } | Self::Refused { result } => result,
        }
    }
}

/// How a field of one write is decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    /// By its policy; concurrent or not.
    Policy { concurrent: bool },
    /// Written as it is: a member's resolution or the fallback's settlement of an
    /// `ask` conflict (the label history records).
    Force(&'static str),
}

/// One write folded into an entity: a pushed mutation, a settlement, or a history
/// entry replayed.
pub(crate) struct Write<'a> {
    pub op: Op,
    pub fields: &'a BTreeMap<String, FieldInput>,
    pub stamp: &'a Stamp,
    pub base_version: u64,
    pub member: &'a UserId,
}

/// What folding a write's fields gave.
#[derive(Default)]
pub(crate) struct Folded {
    pub state: EntityState,
    pub decisions: Vec<Decision>,
    pub losers: Vec<Loser>,
    pub diff: Vec<FieldDiff>,
    /// `ask` fields that opened a conflict, with the challenging value.
    pub opened: Vec<(String, Value)>,
    /// Some field was concurrent.
    pub concurrent: bool,
}

impl Folded {
    /// Record that `value` of `field` lost (`outcome`: how the field's decision reads).
    fn lost(&mut self, field: &str, value: Value, policy: &str, outcome: FieldOutcome) {
        self.decisions.push(Decision {
            field: field.to_owned(),
            policy: policy.to_owned(),
            outcome: outcome.as_str().to_owned(),
            loser: Some(value.clone()),
        });
        self.losers.push(Loser {
            field: field.to_owned(),
            value,
            policy: policy.to_owned(),
        });
    }
}

impl Engine {
    /// An engine with the built-in policies.
    pub fn new() -> Self {
        let builtins: [Arc<dyn FieldResolver>; 7] = [
            Arc::new(policy::Register::LWW),
            Arc::new(policy::Set),
            Arc::new(policy::Counter),
            Arc::new(policy::TextPolicy),
            Arc::new(policy::Register::REJECT),
            Arc::new(policy::Register::ASK),
            Arc::new(policy::Register::OWNER),
        ];
        let engine = Self {
            resolvers: BTreeMap::new(),
            validators: BTreeMap::new(),
        };
        builtins.into_iter().fold(engine, Self::with_resolver)
    }

    /// Register a resolver under its name (`Policy::Custom(name)` in a type). One under a
    /// built-in's name replaces the built-in.
    pub fn with_resolver(mut self, r: Arc<dyn FieldResolver>) -> Self {
        self.resolvers.insert(r.name().to_owned(), r);
        self
    }

    /// Add a validator of a type's mutations (a type may have several; all must pass).
    pub fn with_validator(mut self, ty: EntityTypeName, v: Arc<dyn TypeValidator>) -> Self {
        self.validators.entry(ty).or_default().push(v);
        self
    }

    fn resolver(&self, p: &Policy) -> Result<&Arc<dyn FieldResolver>, MutationError> {
        self.resolvers.get(p.name()).ok_or_else(|| {
            MutationError::new(
                ErrorCode::InvalidMutation,
                format!("no resolver is registered for policy {}", p.name()),
            )
        })
    }

    /// A type this engine can run: sane ([`EntityType::validate`]) and every policy and
    /// fallback it names registered. For the operator API, before a type is kept.
    pub fn validate_type(&self, ty: &EntityType) -> Result<(), MutationError> {
        ty.validate()?;
        for (name, spec) in ty
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .chain(ty.undeclared.iter().map(|v| ("(undeclared)", v)))
        {
            self.resolver(&spec.policy)
                .map_err(|e| e.at(&format!("{}.{name}", ty.name)))?;
            if spec.policy == Policy::Ask {
                self.resolver(&spec.fallback_policy())
                    .map_err(|e| e.at(&format!("{}.{name}", ty.name)))?;
            }
        }
        Ok(())
    }

    /// Static checks before anything applies (a push is refused whole if one fails):
    /// the mutation's type, a delete with fields, a patch without, `resolves` on a
    /// patch only, an unknown field, an operation the field's policy does not take, an
    /// oversize value, a Yjs update that does not decode.
    pub fn check(&self, ty: &EntityType, m: &Mutation) -> Result<(), MutationError> {
        let invalid = |msg: String| Err(MutationError::new(ErrorCode::InvalidMutation, msg));
        if m.entity_type != ty.name {
            return invalid(format!(
                "a mutation of {} checked as {}",
                m.entity_type, ty.name
            ));
        }
        match m.op {
            Op::Delete if !m.fields.is_empty() => {
                return invalid("a delete takes no fields".into());
            }
            Op::Patch if m.fields.is_empty() => {
                return invalid("a patch changes at least one field".into());
            }
            _ => {}
        }
        if m.resolves.is_some() && m.op != Op::Patch {
            return invalid("a mutation that resolves a conflict is a patch".into());
        }
        for (name, input) in &m.fields {
            let place = format!("fields.{name}");
            let spec = ty.spec(name).ok_or_else(|| {
                MutationError::new(
                    ErrorCode::UnknownField,
                    format!(
                        "{} has no field {name} (fields: {})",
                        ty.name,
                        ty.fields.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
                .at(&place)
            })?;
            let limit = ty.max_bytes(spec);
            let size = input_bytes(input);
            if size > limit {
                return Err(MutationError::new(
                    ErrorCode::FieldTooLarge,
                    format!("{size} bytes, more than the {limit} this field takes"),
                )
                .at(&place));
            }
            self.resolver(&spec.policy)
                .and_then(|r| r.check(name, input, m.op))
                .map_err(|e| e.at(&place))?;
        }
        Ok(())
    }

    /// Decide one mutation against the entity as stored (none: it does not exist).
    /// `base` is the entity's `hlc` at `m.base_version` (from its history) when the base
    /// is older than `current`, else none; without it a stale mutation's stamp is kept
    /// above nothing but its own clock bound.
    pub fn apply(
        &self,
        cx: &ApplyContext<'_>,
        current: Option<&EntityRecord>,
        base: Option<&Stamp>,
        m: &Mutation,
    ) -> Verdict {
        self.decide(cx, current, base, m)
            .unwrap_or_else(|e| refused(m.mid, current, e))
    }

    fn decide(
        &self,
        cx: &ApplyContext<'_>,
        current: Option<&EntityRecord>,
        base: Option<&Stamp>,
        m: &Mutation,
    ) -> Result<Verdict, MutationError> {
        self.check(cx.ty, m)?;
        for v in self.validators.get(&cx.ty.name).into_iter().flatten() {
            v.validate(current, m, cx.member)?;
        }
        let resolving = match &m.resolves {
            None => None,
            Some(id) => Some(open_conflict(cx, m, id)?),
        };
        let Some(cur) = current else {
            if m.op != Op::Create || m.base_version != 0 {
                return Err(MutationError::new(
                    ErrorCode::NotFound,
                    format!("{} {} does not exist", m.entity_type, m.id),
                ));
            }
            let stamp = hlc::stamp(m.ts, cx.now, None, cx.device, m.mid);
            let folded = self.fold(
                cx.ty,
                &EntityState::default(),
                cx.member,
                1,
                &write(m, &stamp, cx.member),
                &|_, _| Mode::Policy { concurrent: false },
            )?;
            return Ok(self.changed(cx, None, m, stamp, folded, false, Vec::new()));
        };
        if m.base_version > cur.version {
            return Err(MutationError::new(
                ErrorCode::BaseVersionFromFuture,
                format!(
                    "base_version {} is ahead of {} {}'s version {}",
                    m.base_version, m.entity_type, m.id, cur.version
                ),
            ));
        }
        let floor = if m.base_version == cur.version {
            Some(&cur.hlc)
        } else if m.base_version == 0 {
            None
        } else {
            base
        };
        let stamp = hlc::stamp(m.ts, cx.now, floor, cx.device, m.mid);
        let version = cur.version + 1;
        let w = write(m, &stamp, cx.member);
        let by_policy = |_: &str, e: Option<&FieldEntry>| Mode::Policy {
            concurrent: e.is_some_and(|e| raced_with(e, cx.device, m)),
        };
        let forced = |name: &str, e: Option<&FieldEntry>| match resolving {
            Some(c) if c.field == name => Mode::Force(RESOLVED),
            _ => by_policy(name, e),
        };
        if m.op == Op::Delete && cx.member != &cur.created_by && has_owner_fields(cx.ty) {
            return Err(MutationError::new(
                ErrorCode::NotOwner,
                format!(
                    "{} {} belongs to {}: only they may delete it",
                    m.entity_type, m.id, cur.created_by
                ),
            ));
        }
        if cur.deleted {
            let gone = |why: String| {
                Err(MutationError::new(
                    ErrorCode::NotFound,
                    format!(
                        "{} {} was deleted at version {}{why}",
                        m.entity_type, m.id, cur.version
                    ),
                ))
            };
            // Whether the change was made knowing of the delete: based on it, or a later
            // mutation of the deleting device.
            let saw_delete = m.base_version >= cur.version
                || own_earlier(cur.state.deleted_by.as_ref(), cx.device, m.mid);
            if m.op == Op::Create && saw_delete {
                // Made again by a member who saw the delete: a new entity under the same
                // id, its version continuing (so every reader sees it as a change).
                let reborn = EntityRecord {
                    created_by: cx.member.clone(),
                    state: EntityState::default(),
                    ..cur.clone()
                };
                let folded = self.fold(cx.ty, &reborn.state, cx.member, version, &w, &|_, _| {
                    Mode::Policy { concurrent: false }
                })?;
                return Ok(self.changed(cx, Some(&reborn), m, stamp, folded, false, Vec::new()));
            }
            // Deleted again, or changed by a member who saw the delete.
            if m.op == Op::Delete || saw_delete {
                return gone(String::new());
            }
            // A change based before the delete (or a create): they raced.
            if cx.ty.on_delete == DeleteRule::DeleteWins {
                return gone(format!(
                    ", concurrently with this change ({})",
                    DeleteRule::DeleteWins.name()
                ));
            }
            // update_wins: the change brings the entity back (below).
        }
        if m.op == Op::Delete {
            let raced: Vec<(&String, &FieldEntry)> = cur
                .state
                .fields
                .iter()
                .filter(|(_, e)| raced_with(e, cx.device, m))
                .collect();
            let mut folded = Folded {
                state: EntityState {
                    deleted_by: Some(stamp.clone()),
                    ..cur.state.clone()
                },
                concurrent: !raced.is_empty(),
                ..Folded::default()
            };
            let rule = cx.ty.on_delete.name();
            if !raced.is_empty() && cx.ty.on_delete == DeleteRule::UpdateWins {
                return Err(MutationError::new(
                    ErrorCode::StaleBase,
                    format!(
                        "{} changed after base version {} ({rule}): the delete is refused",
                        raced
                            .iter()
                            .map(|(k, _)| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        m.base_version
                    ),
                ));
            }
            for (field, e) in raced {
                folded.lost(field, e.state.value(), rule, FieldOutcome::Lost);
            }
            return Ok(self.changed(cx, Some(cur), m, stamp, folded, true, Vec::new()));
        }
        let mut folded = self.fold(cx.ty, &cur.state, &cur.created_by, version, &w, &forced)?;
        if cur.deleted {
            folded.state.deleted_by = None;
            folded.concurrent = true;
            let deleted = json!({"deleted": true});
            folded.lost(
                ENTITY_FIELD,
                deleted,
                DeleteRule::UpdateWins.name(),
                FieldOutcome::Won,
            );
        }
        let resolved = resolving.into_iter().collect();
        Ok(self.changed(cx, Some(cur), m, stamp, folded, false, resolved))
    }

    /// Fold one write's fields into `before`, at entity version `version`.
    pub(crate) fn fold(
        &self,
        ty: &EntityType,
        before: &EntityState,
        owner: &UserId,
        version: u64,
        w: &Write<'_>,
        mode: &dyn Fn(&str, Option<&FieldEntry>) -> Mode,
    ) -> Result<Folded, MutationError> {
        let mut out = Folded {
            state: before.clone(),
            ..Folded::default()
        };
        for (name, input) in w.fields {
            let place = format!("fields.{name}");
            let spec = ty.spec(name).ok_or_else(|| {
                MutationError::new(
                    ErrorCode::UnknownField,
                    format!("{} has no field {name}", ty.name),
                )
                .at(&place)
            })?;
            let prev = before.fields.get(name);
            let (merge, policy_name) = match mode(name, prev) {
                Mode::Force(label) => {
                    let FieldInput::Set(value) = input else {
                        return Err(MutationError::new(
                            ErrorCode::InvalidFieldOperation,
                            "a conflict is resolved with a plain value",
                        )
                        .at(&place));
                    };
                    let merge = FieldMerge {
                        state: FieldState::Register {
                            value: value.clone(),
                            stamp: w.stamp.clone(),
                            by: Some(w.member.clone()),
                        },
                        outcome: FieldOutcome::Won,
                        loser: None,
                    };
                    (merge, Some(label))
                }
                Mode::Policy { concurrent } => {
                    out.concurrent |= concurrent;
                    let resolver = self.resolver(&spec.policy).map_err(|e| e.at(&place))?;
                    let fcx = FieldContext {
                        field: name,
                        spec,
                        op: w.op,
                        stamp: w.stamp,
                        base_version: w.base_version,
                        concurrent,
                        owner,
                        member: w.member,
                    };
                    (resolver.merge(&fcx, prev, input)?, None)
                }
            };
            let after = merge.state.value();
            let limit = ty.max_bytes(spec);
            let size = after.to_string().len();
            if size > limit {
                return Err(MutationError::new(
                    ErrorCode::FieldTooLarge,
                    format!("the field would be {size} bytes, more than the {limit} it takes"),
                )
                .at(&place));
            }
            if let FieldState::Text { state, .. } = &merge.state {
                super::policy::TextPolicy::check_state(state, limit).map_err(|e| e.at(&place))?;
            }
            let before_value = prev.map_or(Value::Null, |p| p.state.value());
            if before_value != after {
                out.diff.push(FieldDiff {
                    field: name.clone(),
                    before: before_value,
                    after,
                });
            }
            let policy = spec.policy.name().to_owned();
            if let (FieldOutcome::Conflict, FieldInput::Set(v)) = (merge.outcome, input) {
                out.opened.push((name.clone(), v.clone()));
            }
            if let Some(value) = &merge.loser {
                out.losers.push(Loser {
                    field: name.clone(),
                    value: value.clone(),
                    policy: policy.clone(),
                });
            }
            out.decisions.push(Decision {
                field: name.clone(),
                policy,
                outcome: policy_name.unwrap_or(merge.outcome.as_str()).to_owned(),
                loser: merge.loser,
            });
            let (changed_at, changed_by) = match prev {
                Some(p) if p.state == merge.state => (p.changed_at, p.changed_by.clone()),
                _ => (version, Some(w.stamp.clone())),
            };
            out.state.fields.insert(
                name.clone(),
                FieldEntry {
                    state: merge.state,
                    changed_at,
                    changed_by,
                },
            );
        }
        Ok(out)
    }

    /// The verdict of a write that changed the entity.
    #[allow(clippy::too_many_arguments)]
    fn changed(
        &self,
        cx: &ApplyContext<'_>,
        cur: Option<&EntityRecord>,
        m: &Mutation,
        stamp: Stamp,
        folded: Folded,
        deleted: bool,
        resolved: Vec<&ConflictRecord>,
    ) -> Verdict {
        let version = cur.map_or(1, |c| c.version + 1);
        let entity = EntityRecord {
            band: cx.band.clone(),
            entity_type: cx.ty.name.clone(),
            id: m.id.clone(),
            version,
            deleted,
            created_by: cur.map_or_else(|| cx.member.clone(), |c| c.created_by.clone()),
            updated_at: cx.now,
            hlc: cur.map_or(stamp.clone(), |c| c.hlc.clone().max(stamp.clone())),
            state: folded.state,
        };
        let mut conflicts: Vec<ConflictRecord> = folded
            .opened
            .iter()
            .map(|(field, challenger)| {
                let kept = cur
                    .and_then(|c| c.state.fields.get(field).map(|e| (c, e)))
                    .map(|(c, e)| candidate(&e.state, &c.created_by));
                let spec_timeout = cx
                    .ty
                    .spec(field)
                    .map_or(super::types::FieldSpec::DEFAULT_ASK_TIMEOUT_SECS, |s| {
                        s.ask_timeout_secs()
                    });
                ConflictRecord {
                    band: cx.band.clone(),
                    id: conflict_id(cx.band, &cx.ty.name, &m.id, field, version),
                    entity_type: cx.ty.name.clone(),
                    entity_id: m.id.clone(),
                    field: field.clone(),
                    opened_at: cx.now,
                    deadline: i64::try_from(spec_timeout)
                        .ok()
                        .and_then(TimeDelta::try_seconds)
                        .and_then(|d| cx.now.checked_add_signed(d))
                        .unwrap_or(DateTime::<Utc>::MAX_UTC),
                    candidates: kept
                        .into_iter()
                        .chain([Candidate {
                            value: challenger.clone(),
                            member: cx.member.clone(),
                            device: cx.device.clone(),
                            mid: m.mid,
                            stamp: Some(stamp.clone()),
                        }])
                        .collect(),
                    resolution: None,
                }
            })
            .collect();
        let opened = conflicts.first().map(|c| c.id.clone());
        for c in resolved {
            let value = m
                .fields
                .get(&c.field)
                .map_or(Value::Null, FieldInput::to_value);
            conflicts.push(ConflictRecord {
                resolution: Some(Resolution {
                    value,
                    at: cx.now,
                    by: Some(cx.member.clone()),
                    how: "member".into(),
                    reason: None,
                }),
                ..c.clone()
            });
        }
        let status = if opened.is_some() {
            MutationStatus::Conflict
        } else if folded.concurrent {
            MutationStatus::Merged
        } else {
            MutationStatus::Applied
        };
        let result = MutationResult {
            version: Some(version),
            fields: Some(entity.state.values()),
            losers: folded.losers,
            conflict: opened,
            ..MutationResult::bare(m.mid, status)
        };
        let history = HistoryEntry {
            band: cx.band.clone(),
            entity_type: cx.ty.name.clone(),
            id: m.id.clone(),
            version,
            at: cx.now,
            member: cx.member.clone(),
            device: cx.device.clone(),
            mid: m.mid,
            op: m.op,
            stamp,
            input: m
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.to_value()))
                .collect(),
            diff: folded.diff,
            decisions: folded.decisions,
            entity: entity.clone(),
        };
        Verdict::Changed {
            entity,
            history,
            result,
            conflicts,
        }
    }

    /// An open `ask` conflict past its deadline, settled by the field's fallback policy
    /// (default `lww`): the fallback decides between the field's current value and the
    /// challenger, and the winner is written as a new version (mid 0, by `cx.member` on
    /// `cx.device`, the settling service's identity) so every member sees it as a change.
    pub fn settle(
        &self,
        cx: &ApplyContext<'_>,
        current: &EntityRecord,
        conflict: &ConflictRecord,
    ) -> Verdict {
        self.settle_inner(cx, current, conflict)
            .unwrap_or_else(|e| refused(0, Some(current), e))
    }

    fn settle_inner(
        &self,
        cx: &ApplyContext<'_>,
        current: &EntityRecord,
        conflict: &ConflictRecord,
    ) -> Result<Verdict, MutationError> {
        if conflict.resolution.is_some() {
            return Err(MutationError::new(
                ErrorCode::ConflictNotOpen,
                format!("conflict {} is already settled", conflict.id),
            ));
        }
        if current.deleted {
            return Err(MutationError::new(
                ErrorCode::NotFound,
                format!("{} {} was deleted", current.entity_type, current.id),
            ));
        }
        let field = &conflict.field;
        let spec = cx.ty.spec(field).ok_or_else(|| {
            MutationError::new(
                ErrorCode::UnknownField,
                format!("{} has no field {field}", cx.ty.name),
            )
        })?;
        let fallback = spec.fallback_policy();
        let resolver = self.resolver(&fallback)?;
        let Some(challenger) = conflict.candidates.last() else {
            return Err(MutationError::new(
                ErrorCode::ConflictNotOpen,
                format!("conflict {} has no candidates", conflict.id),
            ));
        };
        let challenger_stamp = challenger.stamp.clone().unwrap_or(Stamp {
            ms: i64::MIN,
            counter: 0,
            device: challenger.device.clone(),
            mid: challenger.mid,
        });
        let fcx = FieldContext {
            field,
            spec,
            op: Op::Patch,
            stamp: &challenger_stamp,
            base_version: 0,
            concurrent: true,
            owner: &current.created_by,
            member: &challenger.member,
        };
        let prev = current.state.fields.get(field);
        let decided = resolver.merge(&fcx, prev, &FieldInput::Set(challenger.value.clone()))?;
        let winner = decided.state.value();
        let loser = conflict
            .candidates
            .iter()
            .map(|c| &c.value)
            .chain(prev.map(|p| p.state.value()).as_ref())
            .find(|v| **v != winner)
            .cloned();
        let stamp = hlc::stamp(cx.now, cx.now, Some(&current.hlc), cx.device, 0);
        let fields = BTreeMap::from([(field.clone(), FieldInput::Set(winner.clone()))]);
        let m = Mutation {
            mid: 0,
            entity_type: current.entity_type.clone(),
            id: current.id.clone(),
            op: Op::Patch,
            base_version: current.version,
            fields,
            ts: cx.now,
            resolves: Some(conflict.id.clone()),
        };
        let mut folded = self.fold(
            cx.ty,
            &current.state,
            &current.created_by,
            current.version + 1,
            &write(&m, &stamp, cx.member),
            &|_, _| Mode::Force(SETTLED),
        )?;
        if let Some(d) = folded.decisions.first_mut() {
            d.policy = fallback.name().to_owned();
            d.loser = loser.clone();
        }
        folded.concurrent = true;
        folded.losers = loser
            .into_iter()
            .map(|value| Loser {
                field: field.clone(),
                value,
                policy: fallback.name().to_owned(),
            })
            .collect();
        let settled = ConflictRecord {
            resolution: Some(Resolution {
                value: winner,
                at: cx.now,
                by: None,
                how: fallback.name().to_owned(),
                reason: None,
            }),
            ..conflict.clone()
        };
        let mut verdict = self.changed(cx, Some(current), &m, stamp, folded, false, Vec::new());
        if let Verdict::Changed { conflicts, .. } = &mut verdict {
            conflicts.push(settled);
        }
        Ok(verdict)
    }
}

/// The open conflict a resolving mutation names, as the caller read it.
fn open_conflict<'a>(
    cx: &ApplyContext<'a>,
    m: &Mutation,
    id: &ConflictId,
) -> Result<&'a ConflictRecord, MutationError> {
    let c = cx
        .resolving
        .filter(|c| {
            &c.id == id
                && c.resolution.is_none()
                && c.entity_id == m.id
                && c.entity_type == m.entity_type
        })
        .ok_or_else(|| {
            MutationError::new(
                ErrorCode::ConflictNotOpen,
                format!("conflict {id} is not open on {} {}", m.entity_type, m.id),
            )
        })?;
    if !m.fields.contains_key(&c.field) {
        return Err(MutationError::new(
            ErrorCode::InvalidMutation,
            format!("resolving conflict {id} sets its field {}", c.field),
        ));
    }
    Ok(c)
}

/// Whether a field's last change raced `m`: it came after `m`'s base, and not from an
/// earlier mutation of `m`'s own device (a device's queued mutations share a base, yet
/// each was made on top of the ones before it).
fn raced_with(e: &FieldEntry, device: &DeviceId, m: &Mutation) -> bool {
    e.changed_at > m.base_version && !own_earlier(e.writer(), device, m.mid)
}

/// Whether the type has `owner` fields: its entities are their creator's, so only the
/// creator deletes one.
fn has_owner_fields(ty: &EntityType) -> bool {
    ty.fields
        .values()
        .chain(ty.undeclared.as_ref())
        .any(|f| f.policy == Policy::Owner)
}

fn write<'a>(m: &'a Mutation, stamp: &'a Stamp, member: &'a UserId) -> Write<'a> {
    Write {
        op: m.op,
        fields: &m.fields,
        stamp,
        base_version: m.base_version,
        member,
    }
}

/// The value an `ask` field keeps, as a conflict's first candidate.
fn candidate(state: &FieldState, created_by: &UserId) -> Candidate {
    match state {
        FieldState::Register { value, stamp, by } => Candidate {
            value: value.clone(),
            member: by.clone().unwrap_or_else(|| created_by.clone()),
            device: stamp.device.clone(),
            mid: stamp.mid,
            stamp: Some(stamp.clone()),
        },
        // An ask field holds a register; anything else was written under another type
        // definition and is named as the creator's.
        other => Candidate {
            value: other.value(),
            member: created_by.clone(),
            device: crate::const_id!(DeviceId, "unknown-device"),
            mid: 0,
            stamp: None,
        },
    }
}

/// A conflict's id: the same conflict (band, type, id, field, the version it opened at)
/// gets the same id however often its verdict is computed.
pub fn conflict_id(
    band: &BandId,
    ty: &EntityTypeName,
    id: &crate::model::EntityId,
    field: &str,
    version: u64,
) -> ConflictId {
    let hash = Sha256::digest(format!("{band}/{ty}/{id}/{field}/{version}").as_bytes());
    ConflictId::of_digest(&hash[..16])
}

/// How large a field's input is, as its limit counts: its JSON, or a `$text`'s
/// update (decoded from base64).
fn input_bytes(input: &FieldInput) -> usize {
    match input {
        FieldInput::Text(b64) => b64.len() / 4 * 3,
        other => other.to_value().to_string().len(),
    }
}

/// The verdict on a refused mutation: the current version and fields, to rebase on.
fn refused(mid: u64, current: Option<&EntityRecord>, e: MutationError) -> Verdict {
    Verdict::Refused {
        result: MutationResult {
            version: current.map(|c| c.version),
            fields: current.map(|c| c.state.values()),
            code: Some(e.code),
            message: Some(e.message),
            ..MutationResult::bare(mid, MutationStatus::Rejected)
        },
    }
}

#[cfg(test)]
mod tests;
