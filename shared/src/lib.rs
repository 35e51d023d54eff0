//! bandsync: the one library every function links.
//!
//! - [`model`]: the domain records and identifiers;
//! - [`ports`]: the traits the jobs need (stores, queues, pusher, clock);
//! - one module per job: [`webhook`] intake, [`sync`] worker, [`ws_connect`],
//!   [`ws_disconnect`], [`ws_message`], [`broadcast`], and the HTTP [`api`];
//! - [`entities`]: two-way sync, members' own changes (mutations, verdicts, policies);
//! - [`error`]: the error codes clients see, and the refusals the edges render;
//! - [`deployment`]: what only the local stack may do (folder sources, loopback http);
//! - [`wiring`]: every handler built from a backend's ports, for the mains, the local
//!   stack and the tests;
//! - [`adapters`]: the backends behind cargo features (`local` is the embedded one);
//! - [`google`]: the Google API clients (Drive, Sheets, Calendar), their retry policy,
//!   OAuth2 and watch channels (their local fakes are the `bandsync-google-fake` crate);
//! - [`transport`]: the Lambda edge (entry points, SQS batches, HTTP responses, logs, metrics);
//! - [`wire`]: the client contract (frames, events, HTTP bodies) and, with the `schema`
//!   feature, the documents generated from it.

pub mod adapters;
pub mod api;
pub mod auth;
pub mod backoff;
pub mod broadcast;
pub mod deployment;
pub mod entities;
pub mod error;
pub mod google;
pub mod model;
pub mod ports;
pub mod presence;
pub mod publish;
pub mod resume;
pub mod scheduler;
pub mod sync;
pub mod transport;
pub mod watch_keeper;
pub mod webhook;
pub mod wire;
pub mod wiring;
pub mod ws_connect;
pub mod ws_disconnect;
pub mod ws_message;
