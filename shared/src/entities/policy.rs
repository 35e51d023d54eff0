//! Field policies: the [`FieldResolver`] trait and the built-in resolvers (`lww`,
//! `set`, `counter`, `text`, `reject`, `ask`, `owner`). The engine registers the
//! built-ins by name exactly as an embedding application registers its own, and knows
//! nothing of any policy's merge.
//!
//! For `lww`, `set`, `counter` and `text` a merge commutes: the same mutations, in any
//! order and delivered any number of times, give the same value (the property tests in
//! `merge.rs` check it).

use super::mutation::{FieldInput, MutationError, Op};
use super::records::HistoryEntry;
use super::state::{FieldEntry, FieldState, SetElement, Stamp};
use super::types::FieldSpec;
use crate::error::ErrorCode;
use crate::model::{DeviceId, UserId};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use yrs::updates::decoder::Decode;
use yrs::{GetString, ReadTxn, StateVector, Text, Transact, Update};

/// Decides one field of one mutation. Registered with the engine under [`name`]
/// (`Policy::Custom(name)` names it in a type); the built-in policies are resolvers too.
///
/// [`name`]: FieldResolver::name
pub trait FieldResolver: Send + Sync {
    /// The policy's name, as entity types spell it.
    fn name(&self) -> &str;
    /// Whether this field takes this input for this operation, before anything applies
    /// (a push is refused whole if one field is refused here).
    fn check(&self, field: &str, input: &FieldInput, op: Op) -> Result<(), MutationError>;
    /// The field's next state. An error refuses the whole mutation (its code and
    /// message are the client's).
    fn merge(
        &self,
        cx: &FieldContext<'_>,
        current: Option<&FieldEntry>,
        input: &FieldInput,
    ) -> Result<FieldMerge, MutationError>;
}

/// What a resolver knows of the mutation it decides.
#[derive(Debug, Clone)]
pub struct FieldContext<'a> {
    pub field: &'a str,
    pub spec: &'a FieldSpec,
    pub op: Op,
    /// The mutation's stamp (see [`super::hlc`]).
    pub stamp: &'a Stamp,
    /// The version the mutation was based on.
    pub base_version: u64,
    /// The field changed after the mutation's base (someone else's change the member
    /// did not see): a three-way merge decides.
    pub concurrent: bool,
    /// The entity's creator (the member pushing, for a new entity).
    pub owner: &'a UserId,
    /// The member pushing.
    pub member: &'a UserId,
}

/// How a field's change was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOutcome {
    /// Nothing concurrent: the change applies as it is.
    Applied,
    /// Concurrent, and this mutation's value won.
    Won,
    /// Concurrent, and the value the entity had won (the field keeps it).
    Lost,
    /// Concurrent, both changes merged.
    Merged,
    /// Concurrent and different on an `ask` field: a conflict opens, the field keeps its
    /// value.
    Conflict,
}

impl FieldOutcome {
    /// As history's decisions spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Won => "won",
            Self::Lost => "lost",
            Self::Merged => "merged",
            Self::Conflict => "conflict",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Applied,
            Self::Won,
            Self::Lost,
            Self::Merged,
            Self::Conflict,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// A resolver's answer: the field's next state, how it was decided, and the value that
/// lost (this mutation's, or the one it overwrote), if one did.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMerge {
    pub state: FieldState,
    pub outcome: FieldOutcome,
    pub loser: Option<Value>,
}

fn wrong_input(field: &str, policy: &str, takes: &str) -> MutationError {
    MutationError::new(
        ErrorCode::InvalidFieldOperation,
        format!("{field} is a {policy} field: it takes {takes}"),
    )
}

fn applied_or(cx: &FieldContext<'_>, concurrent: FieldOutcome) -> FieldOutcome {
    if cx.concurrent {
        concurrent
    } else {
        FieldOutcome::Applied
    }
}

/// The register a plain value writes.
fn register(cx: &FieldContext<'_>, value: &Value) -> FieldState {
    FieldState::Register {
        value: value.clone(),
        stamp: cx.stamp.clone(),
        by: Some(cx.member.clone()),
    }
}

fn plain<'i>(field: &str, policy: &str, input: &'i FieldInput) -> Result<&'i Value, MutationError> {
    match input {
        FieldInput::Set(v) => Ok(v),
        _ => Err(wrong_input(field, policy, "a plain value")),
    }
}

/// The register policies (`lww`, `owner`, `reject`, `ask`): a plain value and the stamp
/// that wrote it; last writer wins once the policy's guard let the write through.
pub struct Register {
    name: &'static str,
    /// Refuses the write, decides it itself, or (none) leaves it to last writer wins.
    guard: Guard,
}

type Guard =
    fn(&FieldContext<'_>, Option<&FieldEntry>, &Value) -> Result<Option<FieldMerge>, MutationError>;

impl Register {
    /// Last writer wins: the higher stamp keeps the field.
    pub const LWW: Self = Self {
        name: "lww",
        guard: |_, _, _| Ok(None),
    };

    /// Only the entity's creator writes it (an RSVP is the member's own); among the
    /// creator's devices, last writer wins.
    pub const OWNER: Self = Self {
        name: "owner",
        guard: |cx, _, _| {
            if cx.member == cx.owner {
                return Ok(None);
            }
            Err(MutationError::new(
                ErrorCode::NotOwner,
                format!(
                    "{} belongs to {}: only they may change it",
                    cx.field, cx.owner
                ),
            ))
        },
    };

    /// Optimistic concurrency: a change to a field that changed since the mutation's
    /// base refuses the whole mutation (`stale_base`); the client rebases on the current
    /// fields.
    pub const REJECT: Self = Self {
        name: "reject",
        guard: |cx, current, _| match current.filter(|_| cx.concurrent) {
            None => Ok(None),
            Some(c) => Err(MutationError::new(
                ErrorCode::StaleBase,
                format!(
                    "{} changed at version {} after base version {}: rebase on the current fields",
                    cx.field, c.changed_at, cx.base_version
                ),
            )),
        },
    };

    /// A concurrent different value opens a conflict: the field keeps its value, the
    /// engine keeps both candidates until a member (or the fallback, after the timeout)
    /// decides.
    pub const ASK: Self = Self {
        name: "ask",
        guard: |cx, current, value| match current {
            Some(FieldEntry {
                state: state @ FieldState::Register { value: kept, .. },
                ..
            }) if cx.concurrent => Ok(Some(FieldMerge {
                state: state.clone(),
                outcome: if kept == value {
                    FieldOutcome::Merged
                } else {
                    FieldOutcome::Conflict
                },
                loser: None,
            })),
            _ => Ok(None),
        },
    };

    /// Last writer wins between the field's register and `value`.
    pub fn last_writer_wins(
        cx: &FieldContext<'_>,
        current: Option<&FieldEntry>,
        value: &Value,
    ) -> FieldMerge {
        match current.map(|c| &c.state) {
            Some(
                state @ FieldState::Register {
                    value: kept, stamp, ..
                },
            ) if stamp >= cx.stamp => FieldMerge {
                state: state.clone(),
                outcome: if cx.concurrent || stamp > cx.stamp {
                    FieldOutcome::Lost
                } else {
                    FieldOutcome::Applied
                },
                loser: (kept != value).then(|| value.clone()),
            },
            Some(FieldState::Register { value: kept, .. }) => FieldMerge {
                state: register(cx, value),
                outcome: applied_or(cx, FieldOutcome::Won),
                loser: (cx.concurrent && kept != value).then(|| kept.clone()),
            },
            // No value yet (or one of another kind, the type having been redefined).
            _ => FieldMerge {
                state: register(cx, value),
                outcome: FieldOutcome::Applied,
                loser: None,
            },
        }
    }
}

impl FieldResolver for Register {
    fn name(&self) -> &str {
        self.name
    }
    fn check(&self, field: &str, input: &FieldInput, _: Op) -> Result<(), MutationError> {
        plain(field, self.name, input).map(drop)
    }
    fn merge(
        &self,
        cx: &FieldContext<'_>,
        current: Option<&FieldEntry>,
        input: &FieldInput,
    ) -> Result<FieldMerge, MutationError> {
        let value = plain(cx.field, self.name, input)?;
        Ok(match (self.guard)(cx, current, value)? {
            Some(decided) => decided,
            None => Self::last_writer_wins(cx, current, value),
        })
    }
}

/// The canonical JSON text of a value (object keys sorted): a set element's key, so the
/// same element is one element whatever order its keys came in.
pub fn canonical_json(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(o) => {
                let mut keys: Vec<_> = o.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&o[k])))
                        .collect::<Map<_, _>>(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// An observed-remove set by stamps (an LWW element set): each element keeps the stamps
/// of its latest add and latest remove, and is in the set while the add is the later.
/// `$add` and `$remove` take arrays of elements; a plain array adds its elements on a
/// create (a create does not clear what a concurrent create added) and replaces the set
/// on a patch (everything added before the patch's stamp goes).
pub struct Set;

impl FieldResolver for Set {
    fn name(&self) -> &str {
        "set"
    }
    fn check(&self, field: &str, input: &FieldInput, _: Op) -> Result<(), MutationError> {
        match input {
            FieldInput::Add(_) | FieldInput::Remove(_) | FieldInput::Set(Value::Array(_)) => Ok(()),
            _ => Err(wrong_input(field, self.name(), "$add, $remove or an array")),
        }
    }
    fn merge(
        &self,
        cx: &FieldContext<'_>,
        current: Option<&FieldEntry>,
        input: &FieldInput,
    ) -> Result<FieldMerge, MutationError> {
        let (mut elements, mut cleared) = match current.map(|c| &c.state) {
            Some(FieldState::Set { elements, cleared }) => (elements.clone(), cleared.clone()),
            _ => (BTreeMap::new(), None),
        };
        let stamp = cx.stamp;
        let mut touch = |v: &Value, add: bool| {
            let e = elements
                .entry(canonical_json(v))
                .or_insert_with(|| SetElement {
                    value: v.clone(),
                    added: None,
                    removed: None,
                });
            let slot = if add { &mut e.added } else { &mut e.removed };
            if slot.as_ref().is_none_or(|s| s < stamp) {
                *slot = Some(stamp.clone());
            }
        };
        match input {
            FieldInput::Add(vs) => vs.iter().for_each(|v| touch(v, true)),
            FieldInput::Remove(vs) => vs.iter().for_each(|v| touch(v, false)),
            FieldInput::Set(Value::Array(vs)) => {
                vs.iter().for_each(|v| touch(v, true));
                if cx.op != Op::Create && cleared.as_ref().is_none_or(|c| c < stamp) {
                    cleared = Some(stamp.clone());
                }
            }
            _ => {
                return Err(wrong_input(
                    cx.field,
                    self.name(),
                    "$add, $remove or an array",
                ));
            }
        }
        Ok(FieldMerge {
            state: FieldState::Set { elements, cleared },
            outcome: applied_or(cx, FieldOutcome::Merged),
            loser: None,
        })
    }
}

/// Increments that add up, kept per device with the device's last mid, so a mutation
/// delivered twice counts once. A plain integer on a create is the device's first
/// increment.
pub struct Counter;

impl FieldResolver for Counter {
    fn name(&self) -> &str {
        "counter"
    }
    fn check(&self, field: &str, input: &FieldInput, op: Op) -> Result<(), MutationError> {
        match input {
            FieldInput::Inc(_) => Ok(()),
            FieldInput::Set(v) if op == Op::Create && v.is_i64() => Ok(()),
            _ => Err(wrong_input(
                field,
                self.name(),
                "$inc (a plain integer on create only)",
            )),
        }
    }
    fn merge(
        &self,
        cx: &FieldContext<'_>,
        current: Option<&FieldEntry>,
        input: &FieldInput,
    ) -> Result<FieldMerge, MutationError> {
        let n = match input {
            FieldInput::Inc(n) => *n,
            FieldInput::Set(Value::Number(v)) if cx.op == Op::Create && v.is_i64() => {
                v.as_i64().unwrap_or_default()
            }
            _ => {
                return Err(wrong_input(
                    cx.field,
                    self.name(),
                    "$inc (a plain integer on create only)",
                ));
            }
        };
        let (mut by_device, mut last_mid) = match current.map(|c| &c.state) {
            Some(FieldState::Counter {
                by_device,
                last_mid,
            }) => (by_device.clone(), last_mid.clone()),
            _ => (BTreeMap::new(), BTreeMap::new()),
        };
        let device = &cx.stamp.device;
        if last_mid.get(device).is_none_or(|&m| m < cx.stamp.mid) {
            let total = by_device.entry(device.clone()).or_insert(0);
            *total = total.checked_add(n).ok_or_else(|| {
                MutationError::new(
                    ErrorCode::InvalidFieldOperation,
                    format!("{}: the counter would overflow", cx.field),
                )
            })?;
            last_mid.insert(device.clone(), cx.stamp.mid);
        }
        Ok(FieldMerge {
            state: FieldState::Counter {
                by_device,
                last_mid,
            },
            outcome: applied_or(cx, FieldOutcome::Merged),
            loser: None,
        })
    }
}

/// The root text every text field's Yjs document keeps its text in
/// (`doc.getText("text")` on a client).
pub const TEXT_ROOT: &str = "text";

/// The most an `entity.*` event carries in `text_updates` (base64 characters, all fields
/// together). With the changed fields' plain values beside them the event stays within
/// one WebSocket message (API Gateway's 128 KB); a field whose update does not fit is
/// named in `text_refetch`, and the client reads its `text_state` over HTTP. A field of
/// the default size (16 KB) always fits.
pub const TEXT_UPDATES_BUDGET: usize = 48 * 1024;

/// How much larger than the field's limit (`max_bytes`) its Yjs document may grow.
pub const TEXT_STATE_FACTOR: usize = 4;

/// A Yjs text: `$text` is a base64 Yjs v1 update, applied to the field's document (Yjs
/// updates commute and apply once). The state kept is the document as one base64 v1
/// update, and its text. A plain string is the initial text of a create, inserted with a
/// client id derived from (device, mid), so the same create inserts the same way.
pub struct TextPolicy;

impl TextPolicy {
    /// The client id the server writes a create's initial text with: 53 bits (what a
    /// JavaScript client can hold) of a hash of (device, mid).
    pub fn client_id(device: &DeviceId, mid: u64) -> u64 {
        let hash = Sha256::digest(format!("{device}/{mid}").as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&hash[..8]);
        u64::from_be_bytes(b) & ((1 << 53) - 1)
    }

    /// An update that inserts `text` into an empty document, written by `client_id`.
    pub fn initial_update(text: &str, client_id: u64) -> Vec<u8> {
        let doc = yrs::Doc::with_client_id(client_id);
        let root = doc.get_or_insert_text(TEXT_ROOT);
        let mut txn = doc.transact_mut();
        root.insert(&mut txn, 0, text);
        txn.encode_state_as_update_v1(&StateVector::default())
    }

    /// What an `entity.*` event tells a Yjs client of the text fields `history` wrote:
    /// per field, the update the server applied (the client's `$text` as pushed, or for
    /// a plain-string create the update the server inserted it with), within
    /// [`TEXT_UPDATES_BUDGET`]; and the fields whose update did not fit.
    pub fn event_updates(history: &HistoryEntry) -> (BTreeMap<String, String>, Vec<String>) {
        let mut updates = BTreeMap::new();
        let mut refetch = Vec::new();
        let mut spent = 0;
        for (field, input) in &history.input {
            let is_text = history
                .entity
                .state
                .fields
                .get(field)
                .is_some_and(|f| matches!(f.state, FieldState::Text { .. }));
            if !is_text {
                continue;
            }
            let update = match input {
                Value::Object(op) => match op.get("$text") {
                    Some(Value::String(b64)) => b64.clone(),
                    _ => continue,
                },
                Value::String(initial) => BASE64.encode(Self::initial_update(
                    initial,
                    Self::client_id(&history.stamp.device, history.stamp.mid),
                )),
                _ => continue,
            };
            if spent + update.len() > TEXT_UPDATES_BUDGET {
                refetch.push(field.clone());
            } else {
                spent += update.len();
                updates.insert(field.clone(), update);
            }
        }
        (updates, refetch)
    }

    /// A text field's document is bounded too (it keeps who wrote what, and what was
    /// deleted), at [`TEXT_STATE_FACTOR`] times the field's limit: the entity stays one
    /// store item (DynamoDB's are 400 KB at most) and its `text_state` one HTTP answer.
    pub fn check_state(state: &str, limit: usize) -> Result<(), MutationError> {
        let max = limit.saturating_mul(TEXT_STATE_FACTOR);
        if state.len() > max {
            return Err(MutationError::new(
                ErrorCode::FieldTooLarge,
                format!(
                    "the text's Yjs document would be {} bytes (base64), more than the {max} it may take ({TEXT_STATE_FACTOR} times the field's limit)",
                    state.len()
                ),
            ));
        }
        Ok(())
    }

    /// Decode a `$text` argument into a Yjs update.
    pub fn decode(field: &str, b64: &str) -> Result<Update, MutationError> {
        let bad = |what: String| {
            MutationError::new(
                ErrorCode::InvalidFieldOperation,
                format!("{field}: $text takes a base64 Yjs v1 update ({what})"),
            )
        };
        let bytes = BASE64
            .decode(b64)
            .map_err(|e| bad(format!("not base64: {e}")))?;
        yrs_guard(field, || {
            Update::decode_v1(&bytes).map_err(|e| bad(format!("it does not decode: {e}")))
        })
    }

    /// The field's document with `updates` applied: its state and text.
    fn fold(
        field: &str,
        state: Option<&str>,
        update: Update,
    ) -> Result<(String, String), MutationError> {
        yrs_guard(field, || Self::fold_unguarded(field, state, update))
    }

    fn fold_unguarded(
        field: &str,
        state: Option<&str>,
        update: Update,
    ) -> Result<(String, String), MutationError> {
        let doc = yrs::Doc::new();
        let root = doc.get_or_insert_text(TEXT_ROOT);
        let mut txn = doc.transact_mut();
        if let Some(state) = state {
            let stored = Self::decode(field, state).map_err(|e| {
                MutationError::new(
                    ErrorCode::InvalidMutation,
                    format!("the stored text of {field} does not decode: {}", e.message),
                )
            })?;
            Self::apply(field, &mut txn, stored)?;
        }
        Self::apply(field, &mut txn, update)?;
        let text = root.get_string(&txn);
        let state = BASE64.encode(txn.encode_state_as_update_v1(&StateVector::default()));
        Ok((state, text))
    }

    fn apply(
        field: &str,
        txn: &mut yrs::TransactionMut<'_>,
        update: Update,
    ) -> Result<(), MutationError> {
        txn.apply_update(update).map_err(|e| {
            MutationError::new(
                ErrorCode::InvalidFieldOperation,
                format!("{field}: the Yjs update does not apply: {e}"),
            )
        })
    }
}

/// Run yrs on a client's bytes, a panic inside refused like any malformed update: yrs has
/// open bugs that panic on some malformed updates, and one member's bad bytes must not
/// take down the handler (and the frame of everyone's mutations in it).
pub(crate) fn yrs_guard<T>(
    field: &str,
    f: impl FnOnce() -> Result<T, MutationError>,
) -> Result<T, MutationError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(MutationError::new(
            ErrorCode::InvalidFieldOperation,
            format!("{field}: $text takes a base64 Yjs v1 update (this one is malformed)"),
        ))
    })
}

impl FieldResolver for TextPolicy {
    fn name(&self) -> &str {
        "text"
    }
    fn check(&self, field: &str, input: &FieldInput, op: Op) -> Result<(), MutationError> {
        match input {
            FieldInput::Text(b64) => Self::decode(field, b64).map(drop),
            FieldInput::Set(Value::String(_)) if op == Op::Create => Ok(()),
            _ => Err(wrong_input(
                field,
                self.name(),
                "$text (a plain string on create only)",
            )),
        }
    }
    fn merge(
        &self,
        cx: &FieldContext<'_>,
        current: Option<&FieldEntry>,
        input: &FieldInput,
    ) -> Result<FieldMerge, MutationError> {
        let update = match input {
            FieldInput::Text(b64) => Self::decode(cx.field, b64)?,
            FieldInput::Set(Value::String(s)) if cx.op == Op::Create => {
                let bytes =
                    Self::initial_update(s, Self::client_id(&cx.stamp.device, cx.stamp.mid));
                Update::decode_v1(&bytes).map_err(|e| {
                    MutationError::new(ErrorCode::InvalidMutation, format!("{}: {e}", cx.field))
                })?
            }
            _ => {
                return Err(wrong_input(
                    cx.field,
                    self.name(),
                    "$text (a plain string on create only)",
                ));
            }
        };
        let stored = match current.map(|c| &c.state) {
            Some(FieldState::Text { state, .. }) => Some(state.as_str()),
            _ => None,
        };
        let (state, text) = Self::fold(cx.field, stored, update)?;
        Ok(FieldMerge {
            state: FieldState::Text { state, text },
            outcome: applied_or(cx, FieldOutcome::Merged),
            loser: None,
        })
    }
}
