//! Injected time, so a two-hour backoff is testable in milliseconds.
//!
//! Two readings, on purpose. [`Clock::now`] is this process's clock: what a module stamps on
//! its own rows and shows people. Whether a worker is alive, a lease has expired or a job is
//! due is decided on the *database's* clock instead, so that replicas whose wall clocks
//! disagree still agree on who owns what; the runtime asks the database for it inside each
//! statement. [`Clock::database_now`] lets a test stand in for that clock.

use std::fmt::Debug;

use chrono::{DateTime, Utc};

/// A source of "now". Production uses [`SystemClock`]; tests use a clock they can move.
pub trait Clock: Send + Sync + Debug + 'static {
    /// This process's reading of the current instant (for stamps people read, never for
    /// deciding who owns a job or when something expires).
    fn now(&self) -> DateTime<Utc>;

    /// What the database's clock reads, when a test stands in for it; `None` (production)
    /// means the runtime asks the database itself.
    fn database_now(&self) -> Option<DateTime<Utc>> {
        None
    }
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
