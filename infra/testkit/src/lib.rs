//! bandsync's test kit, for tests only: no Lambda function depends on it (see
//! `cargo tree -p <function> -e normal`), so none of it ships.
//!
//! - [`fakes`]: test doubles for the ports that are not storage (queues, pusher,
//!   notifier, clock, a channel log that fails when told, a sleeper that only records);
//! - [`wait`]: [`eventually`], instead of poll loops and fixed sleeps;
//! - [`events`]: API Gateway and SQS events built from JSON shaped like what AWS sends;
//! - [`harness`]: every handler wired to an in-memory embedded store and the fakes;
//! - [`contract`]: the port contract suites, run unchanged against every backend;
//! - [`members`]: a push service over any store, a member's connection, a forged state;
//! - [`stack`] (feature `stack`): the local stack in-process for end-to-end tests and
//!   benches.

pub mod contract;
pub mod events;
pub mod fakes;
pub mod harness;
pub mod members;
#[cfg(feature = "stack")]
pub mod stack;
pub mod wait;

pub use events::*;
pub use fakes::*;
pub use harness::*;
pub use wait::{WAIT, eventually};
