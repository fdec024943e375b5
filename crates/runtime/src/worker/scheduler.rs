//! Fires scheduled jobs: a step of the maintenance leader's round.
//!
//! For each schedule not paused, on the database's clock: when its stored next tick has
//! passed, enqueue one job for the latest tick and store the next one — in one transaction,
//! with a unique key per schedule and tick (`schedule:<name>:<tick ms>`) and a compare-and-set
//! on the stored tick, so any number of replicas (or a leader that lost its lease halfway)
//! enqueue exactly one job per tick.
//!
//! A tick is *on time* when it passed less than the grace ago ([`grace`]: a minute, or twice
//! `dead_after` so a leader failover never drops one). Ticks missed for longer (the process
//! was down, or the schedule paused) never arrive as a burst: `skip` drops them and waits
//! for the next tick; `run_once` enqueues one job for the latest of them.

use std::time::Duration;

use events::{Missed, NewJob, TraceContext};
use sqlx::Row;

use events::Db;

use super::Shared;
use super::leader::millis;
use crate::db_time::DbTime;
use crate::queue::SqlJobQueue;
use crate::schedule::{ActiveSchedule, Schedules};
use crate::wake::Wakers;

/// What a scheduler pass needs: the leader's, or a test's, connections and the runtime's
/// queue.
#[derive(Debug, Clone, Copy)]
pub struct Pass<'a> {
    /// Where the pass reads and writes.
    pub db: &'a Db,
    /// The database's clock.
    pub time: &'a DbTime,
    /// Where jobs are enqueued.
    pub queue: &'a SqlJobQueue,
    /// Local wake-ups for the queue a job lands on.
    pub wakers: &'a Wakers,
    /// The schedules in force.
    pub schedules: &'a Schedules,
    /// How late a tick may be and still count as on time.
    pub grace: Duration,
}

/// How late a tick may be found and still count as on time.
pub fn grace(config: &crate::RuntimeConfig) -> Duration {
    (config.dead_after * 2).max(Duration::from_secs(60))
}

/// Fires every schedule that is due (the leader's step).
///
/// # Errors
/// The first database error (the schedules before it were fired).
pub async fn fire_due(shared: &Shared) -> Result<(), sqlx::Error> {
    run(Pass {
        db: &shared.control,
        time: &shared.time,
        queue: &shared.queue,
        wakers: &shared.wakers,
        schedules: &shared.schedules,
        grace: grace(&shared.config),
    })
    .await
}

/// One pass over every schedule not paused.
///
/// # Errors
/// The first database error (the schedules before it were fired).
pub async fn run(pass: Pass<'_>) -> Result<(), sqlx::Error> {
    let schedules = pass.schedules.current();
    if schedules.iter().all(|s| s.paused) {
        return Ok(());
    }
    let now = pass.time.read(pass.db).await?;
    for schedule in schedules.iter().filter(|s| !s.paused) {
        fire(&pass, schedule, now).await?;
    }
    Ok(())
}

async fn fire(pass: &Pass<'_>, s: &ActiveSchedule, now: i64) -> Result<(), sqlx::Error> {
    let grace = millis(pass.grace);
    let expression = s.expression();
    let stored = sqlx::query("SELECT expression, next_run_at FROM keel_schedules WHERE name = $1")
        .bind(&s.name)
        .fetch_optional(pass.db.pool())
        .await?;
    let stored = match stored {
        Some(row) => Some((
            row.try_get::<String, _>("expression")?,
            row.try_get::<Option<i64>, _>("next_run_at")?,
        )),
        None => None,
    };
    let due = match stored {
        // New, or its expression changed: the first tick is the next one from now.
        None => {
            sqlx::query(
                "INSERT INTO keel_schedules (name, expression, next_run_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(&s.name)
            .bind(&expression)
            .bind(s.cadence.next_after(now))
            .execute(pass.db.pool())
            .await?;
            return Ok(());
        }
        Some((stored, _)) if stored != expression => {
            sqlx::query(
                "UPDATE keel_schedules SET expression = $2, next_run_at = $3 WHERE name = $1",
            )
            .bind(&s.name)
            .bind(&expression)
            .bind(s.cadence.next_after(now))
            .execute(pass.db.pool())
            .await?;
            return Ok(());
        }
        Some((_, Some(next))) if next <= now => next,
        Some(_) => return Ok(()),
    };
    let latest = s.cadence.latest_at_or_before(now).unwrap_or(due).max(due);
    let on_time = now - latest <= grace;
    let run = on_time || s.missed == Missed::RunOnce;
    let next = s.cadence.next_after(now);
    let mut tx = pass.db.begin().await?;
    let job_id = if run {
        let job = NewJob {
            queue: s.queue.clone(),
            job_type: s.job_type.clone(),
            payload: s.payload.clone(),
            unique_key: Some(format!("schedule:{}:{latest}", s.name)),
            priority: 0,
            run_at: None,
            max_attempts: None,
        };
        pass.queue
            .insert(&mut tx, job, &TraceContext::new_chain())
            .await?
    } else {
        None
    };
    let moved = sqlx::query(
        "UPDATE keel_schedules SET next_run_at = $3, \
         last_run_at = CASE WHEN $4 THEN $5 ELSE last_run_at END, \
         last_job_id = CASE WHEN $4 THEN $6 ELSE last_job_id END \
         WHERE name = $1 AND next_run_at = $2",
    )
    .bind(&s.name)
    .bind(due)
    .bind(next)
    .bind(job_id.is_some())
    .bind(latest)
    .bind(job_id.map(|id| id.to_string()))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved == 0 {
        // Another replica fired this tick first; its job is the one.
        tx.rollback().await?;
        return Ok(());
    }
    tx.commit().await?;
    if let Some(id) = job_id {
        metrics::counter!("keel_schedule_runs_total", "schedule" => s.name.clone()).increment(1);
        pass.wakers.wake(&s.queue);
        tracing::info!(schedule = %s.name, job_id = %id, tick = latest, late = !on_time, "scheduled job enqueued");
    } else if !run {
        metrics::counter!("keel_schedule_skipped_total", "schedule" => s.name.clone()).increment(1);
        tracing::info!(schedule = %s.name, missed_since = due, "missed ticks skipped");
    }
    Ok(())
}
