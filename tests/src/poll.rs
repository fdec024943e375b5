//! Waiting for asynchronous work by polling its observable outcome with a deadline — never
//! by sleeping a guessed amount.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] asks again.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// Asks `check` until it answers `Some`, and returns that; panics naming `what` when
/// `within` passes first.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}
