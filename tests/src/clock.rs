//! Time that moves only when a test says so, so a two-hour backoff is tested in milliseconds.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use events::Clock;

/// A [`Clock`] that starts at a fixed instant and moves only on [`ManualClock::advance`].
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// The instant every manual clock starts at: 2030-01-01T00:00:00Z.
    pub fn start() -> DateTime<Utc> {
        DateTime::from_timestamp(1_893_456_000, 0).expect("a valid fixed instant")
    }

    /// A clock standing at [`ManualClock::start`].
    pub fn new() -> Self {
        Self::at(Self::start())
    }

    /// A clock standing at `now`.
    pub fn at(now: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(now),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += TimeDelta::from_std(by).expect("a test advances by a sane duration");
    }

    /// The current reading in unix milliseconds, as the runtime stores it.
    pub fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A manual clock also stands in for the database's clock: time moves for everyone.
    fn database_now(&self) -> Option<DateTime<Utc>> {
        Some(self.now())
    }
}

/// A process whose wall clock is off by `skew`: it reads the shared time plus the skew as
/// its own `now`, while the database's clock — the one liveness is judged on — is the shared
/// time (a [`ManualClock`], or the real database's when `shared` is `None`).
#[derive(Debug)]
pub struct SkewedClock {
    shared: Option<std::sync::Arc<ManualClock>>,
    skew: TimeDelta,
}

impl SkewedClock {
    /// A clock `skew` ahead (negative: behind) of the `shared` manual time.
    pub fn manual(shared: std::sync::Arc<ManualClock>, skew: TimeDelta) -> Self {
        Self {
            shared: Some(shared),
            skew,
        }
    }

    /// A wall clock `skew` ahead (negative: behind) of the real one; the database's clock
    /// is the real database's.
    pub fn wall(skew: TimeDelta) -> Self {
        Self { shared: None, skew }
    }
}

impl Clock for SkewedClock {
    fn now(&self) -> DateTime<Utc> {
        let base = self.shared.as_ref().map_or_else(Utc::now, |m| m.now());
        base + self.skew
    }

    fn database_now(&self) -> Option<DateTime<Utc>> {
        self.shared.as_ref().map(|m| m.now())
    }
}
