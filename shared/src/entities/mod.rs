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
//!   history, receipts, devices, conflicts) and the one atomic [`records::Commit`].

pub mod mutation;
pub mod records;
pub mod state;
