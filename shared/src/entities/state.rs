//! An entity's fields as stored: each with what its policy needs to merge a concurrent
//! change deterministically, whatever order changes arrive in.

use crate::model::{DeviceId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A hybrid logical clock stamp: what `lww` compares. Ordered by client time (bounded by
/// the server's, so a phone with a wrong clock cannot win forever), then a counter that
/// keeps a change ahead of every change it was based on, then device and mid (no two
/// mutations share a stamp).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Stamp {
    /// Milliseconds since the Unix epoch.
    pub ms: i64,
    pub counter: u32,
    pub device: DeviceId,
    pub mid: u64,
}

/// One set element: its value and the stamps of its latest add and remove (present
/// while the add is the later of the two).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetElement {
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<Stamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Stamp>,
}

impl SetElement {
    /// Whether the element is in the set: its latest add is later than its latest
    /// remove and not earlier than the set's last replace (a replace's own elements carry
    /// its stamp).
    pub fn present(&self, cleared: Option<&Stamp>) -> bool {
        match &self.added {
            None => false,
            Some(a) => {
                self.removed.as_ref().is_none_or(|r| a > r) && cleared.is_none_or(|c| a >= c)
            }
        }
    }
}

/// A field's merge state, by the kind of policy that keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FieldState {
    /// `lww`, `owner`, `reject`, `ask` (and custom policies): one value and the stamp
    /// of the mutation that wrote it.
    Register {
        value: Value,
        stamp: Stamp,
        /// The member who wrote it (what an `ask` conflict names as the kept value's
        /// author).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<UserId>,
    },
    /// `set`: every element ever added, by its canonical JSON text.
    Set {
        elements: BTreeMap<String, SetElement>,
        /// The stamp of the latest plain value set on the field (a replace): an element
        /// added before it is gone. Kept as a stamp, not by removing elements, so a
        /// replace and a concurrent `$add` commute.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cleared: Option<Stamp>,
    },
    /// `counter`: per device, the sum of its increments.
    Counter {
        by_device: BTreeMap<DeviceId, i64>,
        /// Per device, the last mid whose increment was added: a mutation delivered
        /// twice adds once.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        last_mid: BTreeMap<DeviceId, u64>,
    },
    /// `text`: the Yjs document (base64 of its v1 state update) and its text.
    Text { state: String, text: String },
}

impl FieldState {
    /// The field's value as readers see it: a register's value, a set's present
    /// elements (in canonical order), a counter's total, a text's string.
    pub fn value(&self) -> Value {
        match self {
            Self::Register { value, .. } => value.clone(),
            Self::Set { elements, cleared } => Value::Array(
                elements
                    .values()
                    .filter(|e| e.present(cleared.as_ref()))
                    .map(|e| e.value.clone())
                    .collect(),
            ),
            Self::Counter { by_device, .. } => Value::from(by_device.values().sum::<i64>()),
            Self::Text { text, .. } => Value::String(text.clone()),
        }
    }
}

/// A field and the entity version that last changed it (what a three-way merge asks:
/// did this field change since the mutation's base?).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldEntry {
    pub state: FieldState,
    pub changed_at: u64,
    /// The stamp of the mutation that last changed it (its device and mid): a device's
    /// own later mutation is not concurrent with it, though both share a base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<Stamp>,
}

impl FieldEntry {
    /// Who last changed the field: its `changed_by`, or (an entry stored before it was
    /// kept) a register's own stamp.
    pub fn writer(&self) -> Option<&Stamp> {
        self.changed_by.as_ref().or(match &self.state {
            FieldState::Register { stamp, .. } => Some(stamp),
            _ => None,
        })
    }
}

/// Whether a stamp is an earlier mutation of `device` than `mid`: what a device's
/// queued mutations (which share a base) saw before them.
pub fn own_earlier(stamp: Option<&Stamp>, device: &DeviceId, mid: u64) -> bool {
    stamp.is_some_and(|s| &s.device == device && s.mid < mid)
}

/// Every field of an entity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntityState {
    pub fields: BTreeMap<String, FieldEntry>,
    /// The stamp of the delete, while the entity is deleted: the deleting device's later
    /// mutations saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_by: Option<Stamp>,
}

impl EntityState {
    /// The fields as readers see them.
    pub fn values(&self) -> Map<String, Value> {
        self.fields
            .iter()
            .map(|(name, f)| (name.clone(), f.state.value()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stamp(ms: i64, device: &str) -> Stamp {
        Stamp {
            ms,
            counter: 0,
            device: DeviceId::parse(device).unwrap(),
            mid: 1,
        }
    }

    #[test]
    fn stamps_order_by_time_then_counter_then_device() {
        assert!(stamp(1, "device-b") > stamp(0, "device-z"));
        assert!(stamp(1, "device-b") > stamp(1, "device-a"));
        let mut later = stamp(1, "device-a");
        later.counter = 1;
        assert!(later > stamp(1, "device-z"));
    }

    #[test]
    fn values_read_through_each_kind() {
        let set = FieldState::Set {
            cleared: None,
            elements: BTreeMap::from([
                (
                    "\"a\"".into(),
                    SetElement {
                        value: json!("a"),
                        added: Some(stamp(2, "device-a")),
                        removed: Some(stamp(1, "device-a")),
                    },
                ),
                (
                    "\"b\"".into(),
                    SetElement {
                        value: json!("b"),
                        added: Some(stamp(1, "device-a")),
                        removed: Some(stamp(2, "device-a")),
                    },
                ),
            ]),
        };
        assert_eq!(set.value(), json!(["a"]));
        let counter = FieldState::Counter {
            last_mid: BTreeMap::new(),
            by_device: BTreeMap::from([
                (DeviceId::parse("device-a").unwrap(), 3),
                (DeviceId::parse("device-b").unwrap(), -1),
            ]),
        };
        assert_eq!(counter.value(), json!(2));
    }
}
