//! Waiting in tests without fixed sleeps: [`eventually`] looks again until what the test
//! waits for is there, and fails naming it after [`WAIT`].

use std::future::Future;
use std::time::Duration;

/// How long a test waits for what the code under test should do (a sync, a frame, a
/// queue drained, a notification delivered).
pub const WAIT: Duration = Duration::from_secs(15);
/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(20);

/// Look again every 20 ms until `probe` gives a value, and return it; panic naming
/// `what` after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {WAIT:?}: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}
