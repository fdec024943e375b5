//! Injected time, so a two-hour backoff is testable in milliseconds.

use std::fmt::Debug;

use chrono::{DateTime, Utc};

/// A source of "now". Production uses [`SystemClock`]; tests use a clock they can move.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
