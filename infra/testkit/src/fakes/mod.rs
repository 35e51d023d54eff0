//! Test doubles for the ports that are not storage.
//!
//! - [`RecordingQueue`]: keeps every message it accepted; can be told to fail the Nth send.
//! - [`RecordingPusher`]: keeps every frame it delivered; per connection it can deliver,
//!   answer Gone, or fail the first K attempts.
//! - [`RecordingNotifier`]: keeps every alert.
//! - [`FixedClock`]: a clock that only moves when told to.
//! - [`FlakyLog`]: a channel log whose Nth append fails (a store outage mid-job).
//! - [`RecordingSleeper`]: a backoff sleeper that records the delays and does not wait
//!   (and [`recording_retrier`], a Google retrier on it).

mod clock;
mod log;
mod notifier;
mod pusher;
mod queue;
mod sleeper;

pub use clock::{FixedClock, t0};
pub use log::FlakyLog;
pub use notifier::RecordingNotifier;
pub use pusher::{PushBehaviour, RecordingPusher};
pub use queue::RecordingQueue;
pub use sleeper::{RecordingSleeper, recording_retrier};

use std::sync::{Mutex, MutexGuard, PoisonError};

/// A fake's state, even after a panicking test thread poisoned it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
