//! Two-way sync: members' own changes to a band's entities (a setlist entry, a song's
//! status, an RSVP, a note on a chart).
//!
//! An entity belongs to a band, has a version, and changes only through `push`
//! mutations, each named by (device, mid). Every mutation gets one durable verdict
//! ([`mutation::MutationResult`]) that is answered again, unchanged, when the same mid
//! comes back. Per entity type and field a policy decides concurrent changes.
//!
//! - [`mutation`]: what a client pushes and the verdict it gets (the wire contract);
//! - [`state`]: an entity's fields as stored, with what each policy needs to merge
//!   (stamps, set elements, per-device counts, text CRDT state);
//! - [`records`]: what the [`crate::ports::EntityStore`] keeps (entities, their
//!   history, receipts, devices, conflicts) and the one atomic [`records::Commit`];
//! - [`types`]: entity types, their fields' policies, the built-in types, what a band
//!   may push ([`types::BandTypes`]) and fractional indexes for ordered lists;
//! - [`hlc`]: the hybrid logical clock that stamps every mutation;
//! - [`policy`]: the [`policy::FieldResolver`] trait and the built-in policies;
//! - [`merge`]: the engine, which decides one mutation against the stored entity
//!   (three-way merge, deletes, `ask` conflicts) with no I/O;
//! - [`replay`]: an entity rebuilt from its history and checked against it;
//! - [`rebuild`]: the operator's check of a band's stored entities against their rebuild;
//! - [`stats`]: conflict analytics, the verdicts counted per type and policy;
//! - [`categories`]: selective sync, which events a device's categories cover;
//! - [`devices`]: `register_device`, a device bound to the first member who registers it;
//! - [`push`]: the push service, one `push` frame checked whole, then each mutation
//!   decided and committed in mid order, its events queued for broadcast;
//! - [`settle`]: the `ask` fallback, open conflicts past their deadline settled by the
//!   service (the scheduler's tick).

pub mod categories;
pub mod devices;
pub mod hlc;
pub mod merge;
pub mod mutation;
pub mod policy;
pub mod push;
pub mod rebuild;
pub mod records;
pub mod replay;
pub mod settle;
pub mod state;
pub mod stats;
pub mod types;
