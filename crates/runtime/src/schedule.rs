//! Scheduled jobs: the schedules the modules declare and `keel.toml` overrides, resolved
//! into one list the maintenance leader fires (see `worker/scheduler.rs`), and their state
//! as `keel schedules`, the dashboard and the metrics show it.
//!
//! A schedule's state is one row in `keel_schedules` (its next tick on the database's
//! clock, its last tick and the job enqueued for it), so the table never grows past the
//! number of schedules. Whether the last job succeeded is read from that job while it is
//! kept (retention).

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use events::{Db, Missed, Module, Schedule};
use serde::Serialize;
use sqlx::Row;

use crate::db_time::DbTime;
use crate::error::RuntimeError;
use crate::registry::Registry;

/// What `[schedules.<name>]` in `keel.toml` may set: every key optional; a name no module
/// declares adds a schedule (then `cron` and `job_type` are required).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleOverride {
    /// Replaces the cron expression.
    pub cron: Option<String>,
    /// Replaces the IANA time zone.
    pub zone: Option<String>,
    /// The job type (only for a schedule the configuration adds).
    pub job_type: Option<String>,
    /// Replaces the payload.
    pub payload: Option<serde_json::Value>,
    /// `true` stops enqueuing until set back.
    pub paused: Option<bool>,
    /// Replaces what missed ticks become.
    pub missed: Option<Missed>,
}

/// A cron expression read in a time zone: the ticks of one schedule.
#[derive(Debug, Clone)]
pub struct Cadence {
    cron: croner::Cron,
    zone: Tz,
}

impl Cadence {
    /// Parses `cron` (five fields, or six with seconds first) in the IANA zone `zone`.
    ///
    /// # Errors
    /// What is wrong with the expression or the zone, for a message naming the key.
    pub fn parse(cron: &str, zone: &str) -> Result<Self, String> {
        Ok(Self {
            cron: parse_cron(cron)?,
            zone: parse_zone(zone)?,
        })
    }

    /// The first tick strictly after `ms` (unix milliseconds), if the expression has one.
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let at = self.zone.timestamp_millis_opt(ms).single()?;
        self.cron
            .find_next_occurrence(&at, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// The last tick at or before `ms`, if there is one.
    pub fn latest_at_or_before(&self, ms: i64) -> Option<i64> {
        let at = self.zone.timestamp_millis_opt(ms).single()?;
        self.cron
            .find_previous_occurrence(&at, true)
            .ok()
            .map(|t| t.timestamp_millis())
    }
}

/// Checks a cron expression.
///
/// # Errors
/// Why it does not parse.
pub fn parse_cron(cron: &str) -> Result<croner::Cron, String> {
    croner::Cron::from_str(cron).map_err(|e| format!("`{cron}` is not a cron expression: {e}"))
}

/// Checks an IANA time zone name.
///
/// # Errors
/// When the name is not in the IANA database.
pub fn parse_zone(zone: &str) -> Result<Tz, String> {
    zone.parse::<Tz>()
        .map_err(|_| format!("`{zone}` is not an IANA time zone (e.g. `UTC`, `Europe/Berlin`)"))
}

/// One schedule as the runtime fires it: declared, overridden and checked.
#[derive(Debug, Clone)]
pub struct ActiveSchedule {
    /// Its name (unique).
    pub name: String,
    /// The cron expression in force.
    pub cron: String,
    /// The time zone in force.
    pub zone: String,
    /// Its ticks.
    pub cadence: Cadence,
    /// The job type enqueued at each tick.
    pub job_type: String,
    /// The queue that job type runs on.
    pub queue: String,
    /// The payload of each job.
    pub payload: serde_json::Value,
    /// What missed ticks become.
    pub missed: Missed,
    /// Paused in `keel.toml`: nothing is enqueued.
    pub paused: bool,
    /// Who declared it: a module's name, or `keel.toml`.
    pub source: String,
}

impl ActiveSchedule {
    /// What the stored state was computed from: a change (in `keel.toml`) recomputes the
    /// next tick instead of firing one computed for the old expression.
    pub fn expression(&self) -> String {
        format!("{} @ {}", self.cron, self.zone)
    }
}

/// The schedules in force, shared by the runtime, its leader and the admin views.
#[derive(Debug, Clone, Default)]
pub struct Schedules(Arc<RwLock<Arc<Vec<ActiveSchedule>>>>);

impl Schedules {
    /// The list in force now.
    pub fn current(&self) -> Arc<Vec<ActiveSchedule>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the list (at wiring).
    pub fn set(&self, list: Vec<ActiveSchedule>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(list);
    }
}

/// Resolves the modules' schedules with the overrides of `keel.toml`.
///
/// # Errors
/// [`RuntimeError::Wiring`] naming the schedule (and the `keel.toml` key) when a name is
/// declared twice, an expression or zone does not parse, a job type has no handler, or a
/// schedule the configuration adds lacks `cron` or `job_type`.
pub fn resolve(
    modules: &[&Module],
    overrides: &BTreeMap<String, ScheduleOverride>,
    registry: &Registry,
) -> Result<Vec<ActiveSchedule>, RuntimeError> {
    let wiring = |m: String| RuntimeError::Wiring(m);
    let mut declared: BTreeMap<String, (Schedule, String)> = BTreeMap::new();
    for module in modules {
        for s in &module.schedules {
            if declared
                .insert(s.name.clone(), (s.clone(), module.name.to_owned()))
                .is_some()
            {
                return Err(wiring(format!("schedule `{}` is declared twice", s.name)));
            }
        }
    }
    for (name, o) in overrides {
        let key = format!("schedules.{name}");
        match declared.get_mut(name) {
            Some((s, _)) => {
                if o.job_type.as_ref().is_some_and(|t| *t != s.job_type) {
                    return Err(wiring(format!(
                        "{key}.job_type: schedule `{name}` is declared by a module with job type `{}`; \
                         add a schedule under another name to run another job type",
                        s.job_type
                    )));
                }
                apply(s, o);
            }
            None => {
                let (Some(cron), Some(job_type)) = (&o.cron, &o.job_type) else {
                    return Err(wiring(format!(
                        "{key}: no module declares schedule `{name}`; a new schedule needs `cron` and `job_type`"
                    )));
                };
                let mut s = Schedule::new(name.clone(), cron.clone(), job_type.clone());
                apply(&mut s, o);
                declared.insert(name.clone(), (s, "keel.toml".to_owned()));
            }
        }
    }
    let paused: BTreeSet<&String> = overrides
        .iter()
        .filter(|(_, o)| o.paused == Some(true))
        .map(|(n, _)| n)
        .collect();
    let mut list = Vec::with_capacity(declared.len());
    for (name, (s, source)) in &declared {
        let key = format!("schedules.{name}");
        let cadence =
            Cadence::parse(&s.cron, &s.zone).map_err(|e| wiring(format!("{key}: {e}")))?;
        let Some(handler) = registry.handler(&s.job_type) else {
            return Err(wiring(format!(
                "{key}.job_type: no job type `{}` is registered",
                s.job_type
            )));
        };
        list.push(ActiveSchedule {
            name: name.clone(),
            cron: s.cron.clone(),
            zone: s.zone.clone(),
            cadence,
            job_type: s.job_type.clone(),
            queue: handler.queue().to_owned(),
            payload: s.payload.clone(),
            missed: s.missed,
            paused: paused.contains(name),
            source: source.clone(),
        });
    }
    Ok(list)
}

fn apply(s: &mut Schedule, o: &ScheduleOverride) {
    if let Some(cron) = &o.cron {
        s.cron.clone_from(cron);
    }
    if let Some(zone) = &o.zone {
        s.zone.clone_from(zone);
    }
    if let Some(payload) = &o.payload {
        s.payload = payload.clone();
    }
    if let Some(missed) = o.missed {
        s.missed = missed;
    }
}

/// One schedule as `keel schedules` and `GET /admin/schedules` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleStatus {
    /// Its name.
    pub name: String,
    /// The cron expression in force.
    pub cron: String,
    /// Its time zone.
    pub zone: String,
    /// The job type it enqueues.
    pub job_type: String,
    /// The queue that job runs on.
    pub queue: String,
    /// `skip` or `run_once`.
    pub missed: &'static str,
    /// Paused in `keel.toml`.
    pub paused: bool,
    /// A module's name, or `keel.toml`.
    pub source: String,
    /// The next tick (none while paused).
    pub next_run_at: Option<DateTime<Utc>>,
    /// The tick of the last job enqueued.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The last job enqueued.
    pub last_job_id: Option<String>,
    /// That job's state (`completed`, `dead`, `running`, `retrying`, …) while it is kept.
    pub last_outcome: Option<String>,
}

/// The state of every schedule in force, read on the database's clock.
///
/// # Errors
/// Fails when the database does.
pub async fn statuses(
    db: &Db,
    time: &DbTime,
    schedules: &[ActiveSchedule],
) -> Result<Vec<ScheduleStatus>, sqlx::Error> {
    let now = time.read(db).await?;
    let rows = sqlx::query(
        "SELECT s.name, s.expression, s.next_run_at, s.last_run_at, s.last_job_id, j.state \
         FROM keel_schedules s LEFT JOIN keel_jobs j ON j.id = s.last_job_id",
    )
    .fetch_all(db.pool())
    .await?;
    let mut stored = BTreeMap::new();
    for row in rows {
        let name: String = row.try_get("name")?;
        stored.insert(
            name,
            (
                row.try_get::<String, _>("expression")?,
                row.try_get::<Option<i64>, _>("next_run_at")?,
                row.try_get::<Option<i64>, _>("last_run_at")?,
                row.try_get::<Option<String>, _>("last_job_id")?,
                row.try_get::<Option<String>, _>("state")?,
            ),
        );
    }
    let at = |ms: Option<i64>| ms.and_then(DateTime::from_timestamp_millis);
    Ok(schedules
        .iter()
        .map(|s| {
            let row = stored.get(&s.name);
            // Not fired yet, or its expression changed since: the next tick from now.
            let next = match row {
                Some((expression, next, ..)) if *expression == s.expression() => *next,
                _ => s.cadence.next_after(now),
            };
            ScheduleStatus {
                name: s.name.clone(),
                cron: s.cron.clone(),
                zone: s.zone.clone(),
                job_type: s.job_type.clone(),
                queue: s.queue.clone(),
                missed: s.missed.as_str(),
                paused: s.paused,
                source: s.source.clone(),
                next_run_at: if s.paused { None } else { at(next) },
                last_run_at: at(row.and_then(|r| r.2)),
                last_job_id: row.and_then(|r| r.3.clone()),
                last_outcome: row.and_then(|r| r.4.clone()),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .map(|t| t.timestamp_millis())
            .unwrap_or_default()
    }

    #[test]
    fn ticks_are_read_in_the_schedules_time_zone() {
        let daily = Cadence::parse("0 3 * * *", "Europe/Berlin").map_err(|e| e.to_string());
        let daily = daily.as_ref().map_err(String::as_str);
        let Ok(daily) = daily else {
            panic!("a valid expression: {daily:?}")
        };
        // 03:00 in Berlin in winter is 02:00 UTC.
        assert_eq!(
            daily.next_after(ms("2030-01-01T00:00:00Z")),
            Some(ms("2030-01-01T02:00:00Z"))
        );
        assert_eq!(
            daily.latest_at_or_before(ms("2030-01-03T01:00:00Z")),
            Some(ms("2030-01-02T02:00:00Z"))
        );
        // A tick exactly now counts as the latest, not as the next.
        let tick = ms("2030-01-01T02:00:00Z");
        assert_eq!(daily.latest_at_or_before(tick), Some(tick));
        assert_eq!(daily.next_after(tick), Some(ms("2030-01-02T02:00:00Z")));
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_saying_what_is_wrong() {
        let cron = Cadence::parse("61 * * * *", "UTC")
            .err()
            .unwrap_or_default();
        assert!(
            cron.contains("`61 * * * *` is not a cron expression"),
            "{cron}"
        );
        let zone = Cadence::parse("* * * * *", "Mars/Olympus")
            .err()
            .unwrap_or_default();
        assert!(
            zone.contains("`Mars/Olympus` is not an IANA time zone"),
            "{zone}"
        );
    }
}
