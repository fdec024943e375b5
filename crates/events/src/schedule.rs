//! Periodic jobs a module declares: "enqueue this job at every tick of this cron expression,
//! in this time zone".
//!
//! The module only describes the schedule; the runtime evaluates it on the database's clock,
//! enqueues exactly one job per tick across every replica (a unique key per schedule and
//! tick), and decides what a tick missed during downtime becomes ([`Missed`]). An operator
//! can override the expression, pause it, or add schedules in `keel.toml`
//! (`[schedules.<name>]`).

use serde::{Deserialize, Serialize};

/// What happens to ticks that passed while nothing was running (after downtime).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Missed ticks are dropped; the schedule resumes at its next tick.
    #[default]
    Skip,
    /// The missed ticks, however many, are made up for by one job, enqueued at once.
    RunOnce,
}

impl Missed {
    /// The name used in configuration and listings (`skip`, `run_once`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::RunOnce => "run_once",
        }
    }
}

/// A periodic job: which job type to enqueue, with which payload, at which ticks.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Unique across modules, e.g. `billing.mark_overdue_invoices`; `[schedules.<name>]`
    /// in `keel.toml` overrides it by this name.
    pub name: String,
    /// A cron expression: five fields (minute hour day-of-month month day-of-week), or six
    /// with seconds first.
    pub cron: String,
    /// The IANA time zone the expression is read in, e.g. `Europe/Berlin` or `UTC`.
    pub zone: String,
    /// The job type to enqueue; a handler for it must be registered.
    pub job_type: String,
    /// The job's payload at every tick.
    pub payload: serde_json::Value,
    /// What ticks missed during downtime become.
    pub missed: Missed,
}

impl Schedule {
    /// A schedule of `job_type` (empty payload `{}`, zone `UTC`, missed ticks skipped).
    pub fn new(
        name: impl Into<String>,
        cron: impl Into<String>,
        job_type: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            cron: cron.into(),
            zone: "UTC".to_owned(),
            job_type: job_type.into(),
            payload: serde_json::json!({}),
            missed: Missed::Skip,
        }
    }

    /// The same schedule read in `zone`.
    #[must_use]
    pub fn in_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = zone.into();
        self
    }

    /// The same schedule with `missed` for ticks missed during downtime.
    #[must_use]
    pub fn when_missed(mut self, missed: Missed) -> Self {
        self.missed = missed;
        self
    }

    /// The same schedule enqueuing `payload`.
    #[must_use]
    pub fn with_payload(mut self, payload: serde_json::Value) -> Self {
        self.payload = payload;
        self
    }
}
