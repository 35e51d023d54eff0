//! Local fakes of the Google APIs bandsync calls, for tests and the local stack's
//! `--google-fake`. A crate of its own so that no Lambda binary can link them.
//!
//! - [`server`]: what every fake shares: the gate a request passes first (one bearer
//!   token, queued [`Fault`]s, a record of requests), the server on its own task, and
//!   Google's error bodies; [`fields`]: the `fields` partial-response mask;
//! - [`drive`]: the Drive v3 endpoints, with a mutable file tree, paging and the `q`
//!   parser of `files.list`;
//! - [`calendar`]: `events.list`, with mutable events, sync tokens that can go stale and
//!   paging;
//! - [`sheets`]: the Sheets values endpoint, with mutable rows and A1 ranges;
//! - [`oauth`]: Google's OAuth2 token endpoint, which really verifies service-account
//!   assertions;
//! - [`push`]: the watch channels of the fakes and the notifications they POST.
//!
//! The sleeper that records a retrier's waits is generic: it is the test kit's.

pub mod calendar;
pub mod drive;
pub mod fields;
pub mod oauth;
pub mod push;
pub mod server;
pub mod sheets;

pub use calendar::FakeCalendar;
pub use drive::FakeDrive;
pub use server::{Fault, RecordedRequest};
pub use sheets::FakeSheets;
