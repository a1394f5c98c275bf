//! Waiting for a condition instead of sleeping a fixed time.

use std::future::Future;
use std::time::Duration;

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(20);

/// Polls `condition` until it holds; panics naming `what` once `timeout` has passed. Works under
/// tokio's paused clock too (the polls then advance it).
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within {timeout:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}
