//! Polling with a deadline: tests wait for conditions, never for a fixed time.

use std::time::{Duration, Instant};

/// How often a condition is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls a condition on in-process state (e.g. an upstream's counters) until it holds; panics
/// naming `what` after `deadline`.
pub async fn until(what: &str, deadline: Duration, condition: impl Fn() -> bool) {
    let give_up = Instant::now() + deadline;
    while !condition() {
        assert!(
            Instant::now() < give_up,
            "timed out after {deadline:?} waiting until {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
