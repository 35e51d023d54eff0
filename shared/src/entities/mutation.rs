//! What a client pushes ([`Mutation`]) and the verdict it gets ([`MutationResult`]).
//! The names here are the wire contract of the `push` / `push_result` frames.

use crate::error::ErrorCode;
use crate::model::{ConflictId, EntityId, EntityTypeName};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// What a mutation does to its entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Make the entity (`base_version` 0, or the version of the deleted entity it makes
    /// again). A create of an entity that exists is merged with it field by field, as
    /// concurrent with everything changed after its base.
    Create,
    /// Change some of its fields.
    Patch,
    /// Delete it (its history is kept).
    Delete,
}

/// One field of a mutation: a plain JSON value (set it) or an operation object.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldInput {
    /// A plain value: the field becomes it.
    Set(Value),
    /// `{"$add": [...]}`: add elements to a set field.
    Add(Vec<Value>),
    /// `{"$remove": [...]}`: remove elements from a set field.
    Remove(Vec<Value>),
    /// `{"$inc": n}`: add `n` (an integer, maybe negative) to a counter field.
    Inc(i64),
    /// `{"$text": "<base64 Yjs update>"}`: apply a Yjs update to a text field.
    Text(String),
}

impl FieldInput {
    /// The operation keys a field value may be, as clients spell them.
    pub const OPERATIONS: &[&str] = &["$add", "$remove", "$inc", "$text"];

    /// Read one field's value. An object whose only key starts with `$` is an operation;
    /// any other value (objects included) is set as it is.
    pub fn parse(value: &Value) -> Result<Self, MutationError> {
        let Some((key, arg)) = value
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.iter().next())
            .filter(|(k, _)| k.starts_with('$'))
        else {
            return Ok(Self::Set(value.clone()));
        };
        let bad = |what: &str| {
            MutationError::new(
                ErrorCode::InvalidFieldOperation,
                format!("{key} takes {what}"),
            )
        };
        match key.as_str() {
            "$add" => Ok(Self::Add(
                arg.as_array().ok_or_else(|| bad("an array"))?.clone(),
            )),
            "$remove" => Ok(Self::Remove(
                arg.as_array().ok_or_else(|| bad("an array"))?.clone(),
            )),
            "$inc" => Ok(Self::Inc(arg.as_i64().ok_or_else(|| bad("an integer"))?)),
            "$text" => Ok(Self::Text(
                arg.as_str()
                    .ok_or_else(|| bad("a base64 Yjs update"))?
                    .to_owned(),
            )),
            other => Err(MutationError::new(
                ErrorCode::InvalidFieldOperation,
                format!(
                    "unknown field operation {other} (known: {})",
                    Self::OPERATIONS.join(", ")
                ),
            )),
        }
    }

    /// The field as the client sent it.
    pub fn to_value(&self) -> Value {
        let op = |k: &str, v: Value| Value::Object(Map::from_iter([(k.to_owned(), v)]));
        match self {
            Self::Set(v) => v.clone(),
            Self::Add(v) => op("$add", Value::Array(v.clone())),
            Self::Remove(v) => op("$remove", Value::Array(v.clone())),
            Self::Inc(n) => op("$inc", Value::from(*n)),
            Self::Text(u) => op("$text", Value::String(u.clone())),
        }
    }
}

/// A refused mutation or push: the code and message the client gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct MutationError {
    pub code: ErrorCode,
    pub message: String,
}

impl MutationError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The same error, its message prefixed with where it was found (`mutations[3]`).
    pub fn at(self, place: &str) -> Self {
        Self {
            message: format!("{place}: {}", self.message),
            ..self
        }
    }
}

/// One change a device pushes. `(device, mid)` names it for good.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    /// Counts up by one per device, with no gaps.
    pub mid: u64,
    pub entity_type: EntityTypeName,
    pub id: EntityId,
    pub op: Op,
    /// 0 for a create; otherwise the version the client last saw.
    pub base_version: u64,
    pub fields: BTreeMap<String, FieldInput>,
    /// The client's clock when the member made the change.
    pub ts: DateTime<Utc>,
    /// The `ask` conflict this mutation settles (its fields are the chosen values).
    pub resolves: Option<ConflictId>,
}

/// A mutation as it comes on the wire, before its fields are read (public for the
/// documents, which describe a push's `mutations` by it).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct WireMutation {
    /// Counts up by one per device, with no gaps (the first is 1).
    mid: u64,
    #[serde(rename = "type")]
    entity_type: EntityTypeName,
    id: EntityId,
    op: Op,
    /// 0 for a create; otherwise the version the client last saw.
    base_version: u64,
    /// Per field a plain JSON value (set it) or one operation object: `{"$add": [...]}`
    /// / `{"$remove": [...]}` (set fields), `{"$inc": n}` (counters), `{"$text":
    /// "<base64 Yjs update>"}` (text fields).
    #[serde(default)]
    fields: Map<String, Value>,
    /// The client's clock when the member made the change (RFC 3339).
    ts: DateTime<Utc>,
    /// The `ask` conflict this mutation settles (its fields are the chosen values).
    #[serde(default)]
    resolves: Option<ConflictId>,
}

impl Mutation {
    /// Read one element of a push's `mutations`: every refusal names the field.
    pub fn parse(value: &Value) -> Result<Self, MutationError> {
        let wire: WireMutation = serde_json::from_value(value.clone())
            .map_err(|e| MutationError::new(ErrorCode::InvalidMutation, e.to_string()))?;
        if wire.mid == 0 {
            // 0 is the server's own (a settled conflict); a device's next_mid starts at 1.
            return Err(MutationError::new(
                ErrorCode::InvalidMutation,
                "mid 0 is not a device's: mids start at 1",
            ));
        }
        let fields = wire
            .fields
            .iter()
            .map(|(name, v)| {
                FieldInput::parse(v)
                    .map(|f| (name.clone(), f))
                    .map_err(|e| e.at(&format!("fields.{name}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            mid: wire.mid,
            entity_type: wire.entity_type,
            id: wire.id,
            op: wire.op,
            base_version: wire.base_version,
            fields,
            ts: wire.ts,
            resolves: wire.resolves,
        })
    }
}

/// The verdict on one mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum MutationStatus {
    /// Applied on the version it was based on (nothing concurrent).
    Applied,
    /// Applied over concurrent changes, the fields' policies deciding (`losers` says
    /// which values lost).
    Merged,
    /// Applied but for `ask` fields, which opened a conflict (`conflict`) for members
    /// to resolve.
    Conflict,
    /// Refused for good (`code`, `message`); the device's mid still advances and the
    /// mutation is kept (parked) for the member to see and retry under a new mid.
    Rejected,
    /// This (device, mid) was answered before: the original verdict again
    /// (`original_status`), nothing applied.
    Duplicate,
    /// A gap in the device's mids: send `expected_mid` first. Nothing applied.
    OutOfOrder,
}

/// A value that lost to a concurrent one, and the policy that decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Loser {
    pub field: String,
    /// The value that lost (this mutation's, or the one it overwrote).
    pub value: Value,
    /// The policy that decided (`lww`, `owner`, ... or a custom resolver's name).
    pub policy: String,
}

/// The verdict on one mutation, as `push_result` carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MutationResult {
    pub mid: u64,
    pub status: MutationStatus,
    /// The entity's version after it (applied, merged, conflict; rejected: the current one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The seq of its event on `band:<band>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The entity's fields after it (rejected: the current ones, to rebase on). Within
    /// one push's answer only the last verdict of each entity carries them, and at most
    /// 256 KB of them in all: left out, read the entity (or its events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub losers: Vec<Loser>,
    /// `conflict`: the conflict opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<ConflictId>,
    /// `rejected`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `out_of_order`: the mid the server waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_mid: Option<u64>,
    /// `duplicate`: the status of the original verdict (the rest is the original's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_status: Option<MutationStatus>,
}

impl MutationResult {
    /// A verdict with only its mid and status set.
    pub fn bare(mid: u64, status: MutationStatus) -> Self {
        Self {
            mid,
            status,
            version: None,
            seq: None,
            fields: None,
            losers: Vec::new(),
            conflict: None,
            code: None,
            message: None,
            expected_mid: None,
            original_status: None,
        }
    }

    /// The answer to a mid seen before: this verdict again, as a duplicate.
    pub fn as_duplicate(&self) -> Self {
        Self {
            status: MutationStatus::Duplicate,
            original_status: Some(self.original_status.unwrap_or(self.status)),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_values_are_plain_or_one_operation() {
        assert_eq!(
            FieldInput::parse(&json!({"a": 1})).unwrap(),
            FieldInput::Set(json!({"a": 1}))
        );
        assert_eq!(
            FieldInput::parse(&json!({"$inc": -2})).unwrap(),
            FieldInput::Inc(-2)
        );
        assert_eq!(
            FieldInput::parse(&json!({"$add": ["x"]}))
                .unwrap()
                .to_value(),
            json!({"$add": ["x"]})
        );
        let e = FieldInput::parse(&json!({"$mul": 2})).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidFieldOperation);
        assert!(e.message.contains("$mul"), "{e}");
        let e = FieldInput::parse(&json!({"$inc": 1.5})).unwrap_err();
        assert!(e.message.contains("an integer"), "{e}");
    }

    #[test]
    fn a_mutation_names_the_field_it_refuses() {
        let m = json!({"mid": 1, "type": "setlist_entry", "id": "e1", "op": "create",
            "base_version": 0, "fields": {"tags": {"$add": 3}}, "ts": "2026-12-01T20:00:00Z"});
        let e = Mutation::parse(&m).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidFieldOperation);
        assert!(e.message.starts_with("fields.tags:"), "{e}");
        let mid_zero = json!({"mid": 0, "type": "t", "id": "e1", "op": "create",
            "base_version": 0, "ts": "2026-12-01T20:00:00Z"});
        let e = Mutation::parse(&mid_zero).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidMutation);
        assert!(e.message.contains("start at 1"), "{e}");
        let unknown_op = json!({"mid": 1, "type": "t", "id": "e1", "op": "upsert",
            "base_version": 0, "ts": "2026-12-01T20:00:00Z"});
        assert_eq!(
            Mutation::parse(&unknown_op).unwrap_err().code,
            ErrorCode::InvalidMutation
        );
    }

    #[test]
    fn a_duplicate_carries_the_original_verdict() {
        let mut original = MutationResult::bare(7, MutationStatus::Applied);
        original.version = Some(3);
        let dup = original.as_duplicate();
        assert_eq!(dup.status, MutationStatus::Duplicate);
        assert_eq!(dup.original_status, Some(MutationStatus::Applied));
        assert_eq!(dup.version, Some(3));
        assert_eq!(
            dup.as_duplicate(),
            dup,
            "a duplicate of a duplicate is the same"
        );
    }
}
