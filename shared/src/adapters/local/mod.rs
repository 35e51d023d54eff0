//! The embedded backend: everything the pipeline needs from DynamoDB and SQS, in one
//! SQLite file (`<data_dir>/bandsync.db`), so the local stack runs with nothing installed
//! and keeps its state across restarts.
//!
//! [`EmbeddedStore`] implements every storage port; [`EmbeddedQueue`] gives the SQS FIFO
//! semantics the pipeline relies on (groups, visibility timeout, receive counts, dead-letter
//! queues, deduplication window). Both share one [`Db`] handle: open the store, then build
//! the queues from [`EmbeddedStore::db`].

mod db;
mod entities;
mod presence;
pub mod queue;
pub mod store;
pub mod watcher;

pub use db::Db;
pub use queue::{EmbeddedQueue, QueueConfig, QueueDepth, QueuedMessage, ReceivedMessage};
pub use store::EmbeddedStore;
