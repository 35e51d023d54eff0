//! The DynamoDB tables' definitions, in ONE place. The moto harness creates its tables
//! from these ([`crate::support::Moto::create_tables`]), and the template test checks
//! template.yaml's `SyncTable` and `ConnectionsTable` against the same constants, so the
//! tables the tests run on are the tables that deploy.
//!
//! Plain constants with no dependencies, so any test binary can take them with
//! `#[path = "../aws/schema.rs"] mod schema;`.

#![allow(dead_code)]

/// One element of a table's key schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyElement {
    pub attribute_name: &'static str,
    /// DynamoDB scalar type: `S`, `N` or `B`.
    pub attribute_type: &'static str,
    /// `HASH` (partition key) or `RANGE` (sort key).
    pub key_type: &'static str,
}

pub const PARTITION_KEY: &str = "pk";
pub const SORT_KEY: &str = "sk";

/// Both tables have this key schema (no secondary indexes: every access path is a
/// Query on a key, see shared/src/adapters/aws/dynamo/).
pub const KEY_SCHEMA: [KeyElement; 2] = [
    KeyElement {
        attribute_name: PARTITION_KEY,
        attribute_type: "S",
        key_type: "HASH",
    },
    KeyElement {
        attribute_name: SORT_KEY,
        attribute_type: "S",
        key_type: "RANGE",
    },
];

/// The TTL attribute (epoch seconds), enabled on both tables.
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// On-demand capacity.
pub const BILLING_MODE: &str = "PAY_PER_REQUEST";

/// Point-in-time recovery is on in the template (moto does not need it).
pub const POINT_IN_TIME_RECOVERY: bool = true;

/// The tables' logical ids in template.yaml, with the environment variable that carries
/// each one's name to the functions (`bandsync::adapters::aws::env`).
pub const TABLES: [(&str, &str); 2] = [
    ("SyncTable", "SYNC_TABLE"),
    ("ConnectionsTable", "CONNECTIONS_TABLE"),
];
