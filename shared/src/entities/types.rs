//! Entity types: per field, the policy that decides concurrent changes. A band's types
//! are configuration (the operator API); the built-ins ([`builtin_types`]) are there for
//! every band.

use super::mutation::MutationError;
use crate::error::ErrorCode;
use crate::model::EntityTypeName;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// How a field's concurrent changes are decided. Serialized by name (`lww`, `set`, ...;
/// a custom policy as its resolver's name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(from = "String", into = "String")]
pub enum Policy {
    /// Last writer wins by hybrid logical clock (client time bounded by the server's,
    /// then device).
    Lww,
    /// A set: `$add` / `$remove` elements, concurrent changes merge.
    Set,
    /// A counter: `$inc`s add up, each (device, mid) once.
    Counter,
    /// A CRDT text (Yjs): `$text` updates merge.
    Text,
    /// Optimistic concurrency: a change made on a stale base is refused (`stale_base`).
    Reject,
    /// A concurrent different value opens a conflict members resolve; `fallback`
    /// decides after the timeout.
    Ask,
    /// Only the entity's creator may write it; otherwise `lww`.
    Owner,
    /// A resolver an embedding application registered under this name.
    Custom(String),
}

impl Policy {
    /// The built-in policies, as they are spelled.
    pub const BUILTIN: &[&str] = &["lww", "set", "counter", "text", "reject", "ask", "owner"];

    pub fn name(&self) -> &str {
        match self {
            Self::Lww => "lww",
            Self::Set => "set",
            Self::Counter => "counter",
            Self::Text => "text",
            Self::Reject => "reject",
            Self::Ask => "ask",
            Self::Owner => "owner",
            Self::Custom(name) => name,
        }
    }
}

impl From<String> for Policy {
    fn from(s: String) -> Self {
        match s.as_str() {
            "lww" => Self::Lww,
            "set" => Self::Set,
            "counter" => Self::Counter,
            "text" => Self::Text,
            "reject" => Self::Reject,
            "ask" => Self::Ask,
            "owner" => Self::Owner,
            _ => Self::Custom(s),
        }
    }
}

impl From<Policy> for String {
    fn from(p: Policy) -> String {
        p.name().to_owned()
    }
}

/// One field of an entity type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub policy: Policy,
    /// `ask` only: the policy that settles a conflict nobody resolved in time (`lww`
    /// when none is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Policy>,
    /// `ask` only: how long members have to resolve a conflict
    /// ([`FieldSpec::DEFAULT_ASK_TIMEOUT_SECS`] when none is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask_timeout_secs: Option<u64>,
    /// The largest value (its JSON; a text's update and its text) this field takes;
    /// the type's `max_field_bytes` when none is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<usize>,
}

impl FieldSpec {
    /// A day: a band that rehearses weekly still sees the conflict.
    pub const DEFAULT_ASK_TIMEOUT_SECS: u64 = 24 * 3600;

    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            fallback: None,
            ask_timeout_secs: None,
            max_bytes: None,
        }
    }

    /// An `ask` field settled by `fallback` after `timeout_secs`.
    pub fn ask(fallback: Policy, timeout_secs: u64) -> Self {
        Self {
            fallback: Some(fallback),
            ask_timeout_secs: Some(timeout_secs),
            ..Self::new(Policy::Ask)
        }
    }

    /// The policy that settles an `ask` conflict past its deadline.
    pub fn fallback_policy(&self) -> Policy {
        self.fallback.clone().unwrap_or(Policy::Lww)
    }

    pub fn ask_timeout_secs(&self) -> u64 {
        self.ask_timeout_secs
            .unwrap_or(Self::DEFAULT_ASK_TIMEOUT_SECS)
    }
}

/// What a delete racing an update does (a delete based before a field's change, or a
/// change based before the delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeleteRule {
    /// The delete applies (`merged`, the concurrent update's values listed as losers);
    /// an update based before the delete is rejected (`not_found`).
    #[default]
    DeleteWins,
    /// The delete is rejected (`stale_base`, with the fields that changed); an update
    /// based before the delete brings the entity back (`merged`).
    UpdateWins,
}

impl DeleteRule {
    pub fn name(self) -> &'static str {
        match self {
            Self::DeleteWins => "delete_wins",
            Self::UpdateWins => "update_wins",
        }
    }
}

/// A kind of entity: its fields and their policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EntityType {
    pub name: EntityTypeName,
    pub fields: BTreeMap<String, FieldSpec>,
    #[serde(default)]
    pub on_delete: DeleteRule,
    /// The largest field value (its JSON) of a field without its own `max_bytes`.
    #[serde(default = "EntityType::default_max_field_bytes")]
    pub max_field_bytes: usize,
    /// The spec of a field the type does not declare; none: such a field is refused
    /// (`unknown_field`). A non-strict band's undeclared types take every field as `lww`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undeclared: Option<FieldSpec>,
}

/// Field names: what a client may key `fields` with.
const MAX_FIELD_NAME: usize = 64;

impl EntityType {
    pub const DEFAULT_MAX_FIELD_BYTES: usize = 16 * 1024;

    fn default_max_field_bytes() -> usize {
        Self::DEFAULT_MAX_FIELD_BYTES
    }

    /// A type with these fields, deletes winning, the default size limit.
    pub fn new(
        name: EntityTypeName,
        fields: impl IntoIterator<Item = (&'static str, FieldSpec)>,
    ) -> Self {
        Self {
            name,
            fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            on_delete: DeleteRule::default(),
            max_field_bytes: Self::DEFAULT_MAX_FIELD_BYTES,
            undeclared: None,
        }
    }

    /// A type nobody declared (non-strict bands): every field `lww`.
    pub fn open(name: EntityTypeName) -> Self {
        Self {
            undeclared: Some(FieldSpec::new(Policy::Lww)),
            ..Self::new(name, [])
        }
    }

    /// The spec of a field, declared or not.
    pub fn spec(&self, field: &str) -> Option<&FieldSpec> {
        self.fields.get(field).or(self.undeclared.as_ref())
    }

    /// The largest value a field takes.
    pub fn max_bytes(&self, spec: &FieldSpec) -> usize {
        spec.max_bytes.unwrap_or(self.max_field_bytes)
    }

    /// A sane definition: field names a client can send, limits above zero, `fallback`
    /// and `ask_timeout_secs` on `ask` fields only, and a fallback that can pick one of
    /// two values (`lww` or a custom policy; not `ask` itself).
    pub fn validate(&self) -> Result<(), MutationError> {
        let bad = |msg: String| {
            Err(MutationError::new(
                ErrorCode::InvalidRequest,
                format!("entity type {}: {msg}", self.name),
            ))
        };
        if self.max_field_bytes == 0 {
            return bad("max_field_bytes must be above 0".into());
        }
        let specs = self
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .chain(self.undeclared.iter().map(|v| ("(undeclared)", v)));
        for (name, spec) in specs {
            if name != "(undeclared)" && !valid_field_name(name) {
                return bad(format!(
                    "field name {name:?}: 1-{MAX_FIELD_NAME} letters, digits or _, not starting with $"
                ));
            }
            if spec.max_bytes == Some(0) {
                return bad(format!("field {name}: max_bytes must be above 0"));
            }
            if matches!(&spec.policy, Policy::Custom(p) if p.is_empty()) {
                return bad(format!("field {name}: a custom policy needs a name"));
            }
            if spec.policy != Policy::Ask {
                if spec.fallback.is_some() || spec.ask_timeout_secs.is_some() {
                    return bad(format!(
                        "field {name}: fallback and ask_timeout_secs are for ask fields only"
                    ));
                }
                continue;
            }
            match spec.fallback_policy() {
                Policy::Lww | Policy::Custom(_) => {}
                other => {
                    return bad(format!(
                        "field {name}: an ask field falls back to lww or a custom policy, not {}",
                        other.name()
                    ));
                }
            }
            if spec.ask_timeout_secs == Some(0) {
                return bad(format!("field {name}: ask_timeout_secs must be above 0"));
            }
        }
        Ok(())
    }
}

fn valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FIELD_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The types every band has: `setlist_entry`, `song_status`, `attendance`, `annotation`.
pub fn builtin_types() -> Vec<EntityType> {
    let f = FieldSpec::new;
    vec![
        // Tonight's setlist, one entity per entry: `position` is a fractional index
        // ([`fractional_index_between`]), so moving an entry writes that entry only and
        // two members' reorders never touch the same field of a third entry.
        EntityType::new(
            crate::const_id!(EntityTypeName, "setlist_entry"),
            [
                ("title", f(Policy::Lww)),
                ("key", f(Policy::Lww)),
                ("position", f(Policy::Lww)),
                ("tags", f(Policy::Set)),
                ("plays", f(Policy::Counter)),
                ("notes", f(Policy::Text)),
            ],
        ),
        // A song's readiness: an update racing a delete keeps the song (a member who
        // marks it ready meant it to be there).
        EntityType {
            on_delete: DeleteRule::UpdateWins,
            ..EntityType::new(
                crate::const_id!(EntityTypeName, "song_status"),
                [
                    ("status", f(Policy::Lww)),
                    ("ready", f(Policy::Lww)),
                    ("notes", f(Policy::Text)),
                ],
            )
        },
        // A member's RSVP to a rehearsal (one entity per member and rehearsal): only the
        // member who made it may change it.
        EntityType::new(
            crate::const_id!(EntityTypeName, "attendance"),
            [("rsvp", f(Policy::Owner)), ("note", f(Policy::Owner))],
        ),
        // A note on a chart file.
        EntityType::new(
            crate::const_id!(EntityTypeName, "annotation"),
            [
                ("file_id", f(Policy::Lww)),
                ("page", f(Policy::Lww)),
                ("text", f(Policy::Text)),
                ("tags", f(Policy::Set)),
            ],
        ),
    ]
}

/// What a band may push: the built-ins plus the band's own types (a band's type of a
/// built-in's name replaces it). Strict: only these; otherwise an undeclared type is
/// taken with every field `lww`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandTypes {
    pub types: Vec<EntityType>,
    pub strict: bool,
}

impl BandTypes {
    pub fn new(band_types: Vec<EntityType>, strict: bool) -> Self {
        let mut types: Vec<EntityType> = builtin_types()
            .into_iter()
            .filter(|b| band_types.iter().all(|t| t.name != b.name))
            .collect();
        types.extend(band_types);
        Self { types, strict }
    }

    /// Whether the band declares `name` (or it is built in): what may name a metric's
    /// dimension, so members cannot grow the metrics with type names of their own.
    pub fn declares(&self, name: &str) -> bool {
        self.types.iter().any(|t| t.name.as_str() == name)
    }

    pub fn get(&self, name: &EntityTypeName) -> Result<Cow<'_, EntityType>, MutationError> {
        if let Some(t) = self.types.iter().find(|t| &t.name == name) {
            return Ok(Cow::Borrowed(t));
        }
        if self.strict {
            return Err(MutationError::new(
                ErrorCode::UnknownEntityType,
                format!(
                    "entity type {name} is not declared for this band (declared: {})",
                    self.types
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(Cow::Owned(EntityType::open(name.clone())))
    }
}

/// The digits of a fractional index, in ASCII order (so keys compare as strings).
const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn digit(c: u8) -> Option<usize> {
    DIGITS.iter().position(|&d| d == c)
}

fn valid_index(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|c| digit(c).is_some()) && !key.ends_with('0')
}

/// A position strictly between `a` and `b` (none: the start / the end), as a string
/// that sorts between them. Keys this function makes never end in `0`, so there is
/// always room between two of them: moving an entry writes that entry's `position`
/// only. Two members moving entries into the same gap get the same key; readers order
/// equal positions by entity id. Keys it did not make (or `a` not below `b`) are not
/// refused: the answer is then after `a` (and `b` is ignored).
pub fn fractional_index_between(a: Option<&str>, b: Option<&str>) -> String {
    let a_ok = a.is_none_or(valid_index);
    let b_ok = b.is_none_or(valid_index);
    match (a, b) {
        (Some(a), _) if !a_ok => format!("{a}V"),
        (Some(a), Some(b)) if !b_ok || a >= b => midpoint(a.as_bytes(), None),
        (None, Some(_)) if !b_ok => midpoint(b"", None),
        _ => midpoint(a.unwrap_or("").as_bytes(), b.map(str::as_bytes)),
    }
}

/// Greenspan's midpoint over base-62 digits: `a < b`, neither ending in `0`; `a` may be
/// empty (the start), `b` none (the end).
fn midpoint(a: &[u8], b: Option<&[u8]>) -> String {
    if let Some(b) = b {
        // The common prefix (`a` padded with zeros) stays.
        let n = b
            .iter()
            .enumerate()
            .take_while(|(i, c)| a.get(*i).copied().unwrap_or(b'0') == **c)
            .count();
        if n > 0 {
            let prefix = String::from_utf8_lossy(&b[..n]).into_owned();
            return prefix + &midpoint(a.get(n..).unwrap_or(b""), Some(&b[n..]));
        }
    }
    let da = a.first().and_then(|&c| digit(c)).unwrap_or(0);
    let db = b
        .and_then(|b| b.first())
        .and_then(|&c| digit(c))
        .unwrap_or(DIGITS.len());
    if db.saturating_sub(da) > 1 {
        return char::from(DIGITS[(da + db) / 2]).to_string();
    }
    match b {
        // b's first digit alone is between a and b.
        Some(b) if b.len() > 1 => char::from(b[0]).to_string(),
        _ => char::from(DIGITS[da]).to_string() + &midpoint(a.get(1..).unwrap_or(b""), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policies_serialize_by_name() {
        assert_eq!(serde_json::to_value(Policy::Lww).unwrap(), json!("lww"));
        assert_eq!(
            serde_json::to_value(Policy::Custom("majority".into())).unwrap(),
            json!("majority")
        );
        let spec: FieldSpec =
            serde_json::from_value(json!({"policy": "ask", "fallback": "lww"})).unwrap();
        assert_eq!(spec.policy, Policy::Ask);
        assert_eq!(spec.fallback_policy(), Policy::Lww);
        assert_eq!(
            serde_json::from_value::<Policy>(json!("owner")).unwrap(),
            Policy::Owner
        );
        let t: EntityType = serde_json::from_value(json!({"name": "gig", "fields": {
            "venue": {"policy": "lww"}}, "on_delete": "update_wins"}))
        .unwrap();
        assert_eq!(t.on_delete, DeleteRule::UpdateWins);
        assert_eq!(t.max_field_bytes, 16 * 1024);
    }

    #[test]
    fn the_builtins_are_sane() {
        let names: Vec<_> = builtin_types().iter().map(|t| t.name.to_string()).collect();
        assert_eq!(
            names,
            ["setlist_entry", "song_status", "attendance", "annotation"]
        );
        for t in builtin_types() {
            t.validate().unwrap();
        }
    }

    #[test]
    fn insane_types_are_refused() {
        let name = crate::const_id!(EntityTypeName, "gig");
        let cases: Vec<(&str, EntityType)> = vec![
            (
                "for ask fields only",
                EntityType::new(
                    name.clone(),
                    [(
                        "venue",
                        FieldSpec {
                            fallback: Some(Policy::Lww),
                            ..FieldSpec::new(Policy::Lww)
                        },
                    )],
                ),
            ),
            (
                "not ask",
                EntityType::new(name.clone(), [("venue", FieldSpec::ask(Policy::Ask, 60))]),
            ),
            (
                "not set",
                EntityType::new(name.clone(), [("venue", FieldSpec::ask(Policy::Set, 60))]),
            ),
            (
                "ask_timeout_secs must be above 0",
                EntityType::new(name.clone(), [("venue", FieldSpec::ask(Policy::Lww, 0))]),
            ),
            (
                "field name",
                EntityType::new(name.clone(), [("$venue", FieldSpec::new(Policy::Lww))]),
            ),
            (
                "max_field_bytes",
                EntityType {
                    max_field_bytes: 0,
                    ..EntityType::new(name.clone(), [])
                },
            ),
        ];
        for (want, t) in cases {
            let e = t.validate().unwrap_err();
            assert!(e.message.contains(want), "{want}: {e}");
        }
        EntityType::new(name, [("venue", FieldSpec::ask(Policy::Lww, 60))])
            .validate()
            .unwrap();
    }

    #[test]
    fn band_types_are_strict_or_open() {
        let gig = EntityType::new(
            crate::const_id!(EntityTypeName, "gig"),
            [("venue", FieldSpec::new(Policy::Lww))],
        );
        let strict = BandTypes::new(vec![gig.clone()], true);
        assert_eq!(
            strict
                .get(&crate::const_id!(EntityTypeName, "gig"))
                .unwrap()
                .as_ref(),
            &gig
        );
        assert!(
            strict
                .get(&crate::const_id!(EntityTypeName, "attendance"))
                .is_ok()
        );
        let e = strict
            .get(&crate::const_id!(EntityTypeName, "poll"))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownEntityType);
        assert!(e.message.contains("gig"), "{e}");
        let open = BandTypes::new(vec![], false);
        let poll = open.get(&crate::const_id!(EntityTypeName, "poll")).unwrap();
        assert_eq!(poll.spec("anything").unwrap().policy, Policy::Lww);
        // A band's own type of a built-in's name replaces it.
        let mine = EntityType::new(
            crate::const_id!(EntityTypeName, "attendance"),
            [("rsvp", FieldSpec::new(Policy::Lww))],
        );
        let band = BandTypes::new(vec![mine.clone()], true);
        assert_eq!(
            band.get(&crate::const_id!(EntityTypeName, "attendance"))
                .unwrap()
                .as_ref(),
            &mine
        );
        assert_eq!(band.types.len(), 4);
    }

    #[test]
    fn fractional_indexes_sort_between_their_neighbours() {
        let first = fractional_index_between(None, None);
        let mut keys = vec![first];
        // Insert repeatedly at the front, at the back, and into the same gap.
        for i in 0..200 {
            let key = match i % 3 {
                0 => fractional_index_between(None, Some(&keys[0])),
                1 => fractional_index_between(Some(&keys[keys.len() - 1]), None),
                _ => fractional_index_between(Some(&keys[0]), Some(&keys[1])),
            };
            keys.push(key);
            keys.sort();
        }
        for w in keys.windows(2) {
            assert!(w[0] < w[1], "{} < {}", w[0], w[1]);
        }
        assert!(keys.iter().all(|k| valid_index(k)), "{keys:?}");
        assert!(
            keys.iter().all(|k| k.len() < 40),
            "keys stay short: {keys:?}"
        );
        assert_eq!(fractional_index_between(Some("V"), Some("W")), "VV");
        assert_eq!(fractional_index_between(None, Some("1")), "0V");
    }

    fn key() -> impl proptest::strategy::Strategy<Value = String> {
        // Valid keys: base-62 digits, not ending in 0.
        "[0-9A-Za-z]{0,6}[1-9A-Za-z]"
    }

    proptest::proptest! {
        #[test]
        fn a_key_between_two_keys_sorts_strictly_between(a in key(), b in key()) {
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            let mid = fractional_index_between(Some(&lo), Some(&hi));
            if lo != hi {
                proptest::prop_assert!(lo < mid && mid < hi, "{lo} < {mid} < {hi}");
            }
            proptest::prop_assert!(valid_index(&mid), "{mid}");
            let before = fractional_index_between(None, Some(&lo));
            proptest::prop_assert!(before < lo && valid_index(&before), "{before} < {lo}");
            let after = fractional_index_between(Some(&hi), None);
            proptest::prop_assert!(after > hi && valid_index(&after), "{after} > {hi}");
        }
    }

    #[test]
    fn foreign_keys_still_give_a_later_key() {
        for (a, b) in [
            ("x y", None),
            ("b", Some("a")),
            ("a", Some("a")),
            ("a0", Some("b")),
        ] {
            let k = fractional_index_between(Some(a), b);
            assert!(k.as_str() > a, "{a:?} {b:?} -> {k:?}");
        }
        let k = fractional_index_between(None, Some("!"));
        assert!(!k.is_empty());
    }
}
