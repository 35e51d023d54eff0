//! The sync worker: take a [`SyncJob`] off the sync queue, compute the delta of its source
//! against the catalog, record an operation with its items, and publish `sync.*` and
//! `file.*` events on the band's channel.
//!
//! Redelivery-safe: the operation id is the job id, event ids and new file ids are
//! derived from it, events are published before the catalog moves on, so a job that
//! dies half-way and comes back resumes the same operation without duplicates.
//!
//! - [`request`](request_sync): a sync asked for becomes jobs on the queue;
//! - [`SyncWorker`] (`worker.rs`): a job's entry point, which hands it to its source's
//!   engine;
//! - `operation.rs`: the operation's lifecycle every engine goes through (begin, record
//!   items, publish, apply, complete, fail, republish);
//! - one file per source kind, with its engine and the Google API it reads:
//!   [`folder`], [`drive`], [`setlist`] (Sheets), [`calendar`]; [`delta`]: what changed;
//! - [`purge`]: what a deleted source leaves in the catalog, and old calendar
//!   tombstones, cleared by the scheduler.

pub mod calendar;
pub mod delta;
pub mod drive;
pub mod folder;
mod operation;
pub mod purge;
mod request;
pub mod setlist;
mod worker;

use crate::google::GoogleError;
use crate::ports::PortError;
use sha2::{Digest, Sha256};

pub use operation::{CHUNK, EventOfChange, SOURCE_GONE_OR_CHANGED, SyncStores, file_event};
pub use request::{RequestSyncError, SyncRequest, enqueue, request_sync, sync_group};
pub use worker::SyncWorker;

/// Why a job must be retried (a permanent problem becomes a failed operation instead).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("store or queue failure: {0}")]
    Port(#[from] PortError),
    #[error("scan task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A Google API call (Drive, Sheets or Calendar) failed after its own retries; the
    /// job is retried and resumes from the source's last stored cursor (a permanent
    /// refusal fails the operation instead).
    #[error("Google API: {0}")]
    Google(#[from] GoogleError),
    /// The source was deleted or changed (moved, re-put) after this pass read it, so its
    /// cursor was not written: the pass stops cleanly (see `Operations::abandon`). Never
    /// retried: a retry would only find the same.
    #[error("the source was deleted or changed while it synced")]
    SourceGoneOrChanged,
}

/// 24 hex characters of SHA-256 over `parts` (each ended by a NUL).
pub fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..12])
}
