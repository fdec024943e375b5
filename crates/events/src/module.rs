//! The shape of a module as the app wires it: its routes, listeners, jobs and migrations.

use std::fmt;
use std::sync::Arc;

use crate::envelope::EventKey;
use crate::jobs::JobHandler;
use crate::listeners::Listener;
use crate::migration::Migration;
use crate::schedule::Schedule;

/// Everything one bounded context hands to the app.
pub struct Module {
    /// The module's name, e.g. `billing`; its tables start with `<name>_`.
    pub name: &'static str,
    /// Its schema.
    pub migrations: Vec<Migration>,
    /// The events it publishes (its side of the contract).
    pub publishes: Vec<EventKey>,
    /// How it reacts to events.
    pub listeners: Vec<Arc<dyn Listener>>,
    /// The background work it runs.
    pub jobs: Vec<Arc<dyn JobHandler>>,
    /// The periodic jobs it wants enqueued (a cron expression in a time zone, per tick).
    pub schedules: Vec<Schedule>,
    /// Its HTTP routes, state already applied.
    pub routes: axum::Router,
    /// Its tables that grow, pruned by the runtime's maintenance leader beside its own.
    pub retention: Vec<Retention>,
}

/// How one of a module's growing tables is pruned, so the module's rows are kept no longer
/// than it says and the leader's pruning (bounded batches, round-robin, on the database's
/// clock) covers them like the runtime's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// The table, named in metrics (`keel_pruned_rows_total{table}`).
    pub table: &'static str,
    /// How long its rows are kept.
    pub keep: std::time::Duration,
    /// One batched `DELETE` over the module's own table: `NOW_MS` stands for now on the
    /// database's clock (unix ms), `$2` is the age in ms and `$3` the batch size, e.g.
    /// `DELETE FROM m_log WHERE id IN (SELECT id FROM m_log WHERE at < NOW_MS - $2 LIMIT $3)`.
    pub delete: &'static str,
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.name)
            .field("migrations", &self.migrations.len())
            .field("publishes", &self.publishes)
            .field(
                "listeners",
                &self.listeners.iter().map(|l| l.name()).collect::<Vec<_>>(),
            )
            .field(
                "jobs",
                &self.jobs.iter().map(|j| j.job_type()).collect::<Vec<_>>(),
            )
            .field(
                "schedules",
                &self
                    .schedules
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}
