//! Liveness and housekeeping: every worker process heartbeats; one elected leader rescues
//! jobs held by silent processes and prunes old rows.
//!
//! Leadership is a lease row (`keel_leases`) renewed every heartbeat and taken over when it
//! expires. Unlike a session advisory lock it needs no dedicated connection, survives pool
//! reconnects, and works the same on SQLite and PostgreSQL.

use std::sync::Arc;

use chrono::TimeDelta;
use sqlx::Row;
use tokio::sync::watch;

use super::Shared;
use super::complete::record_attempt;
use crate::alerts::Alert;

/// The lease maintenance runs under.
const LEASE: &str = "maintenance";
/// Rows one prune batch deletes.
const PRUNE_BATCH: i64 = 500;
/// Batches per table per maintenance round.
const PRUNE_BATCHES_PER_ROUND: usize = 20;
/// How long an `Idempotency-Key`'s stored answer is kept.
const IDEMPOTENCY_KEY_TTL_MS: i64 = 24 * 3600 * 1000;

/// Registers this process as a worker.
///
/// # Errors
/// Fails when the database does.
pub async fn register(shared: &Shared, queues: &[String]) -> Result<(), sqlx::Error> {
    let now = shared.clock.now().timestamp_millis();
    sqlx::query(
        "INSERT INTO keel_workers (id, host, pid, queues, started_at, heartbeat_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(&shared.worker_id)
    .bind(hostname())
    .bind(i64::from(std::process::id()))
    .bind(queues.join(","))
    .bind(now)
    .execute(shared.control.pool())
    .await?;
    Ok(())
}

/// Marks this process as stopped, so nobody waits `dead_after` to rescue its (already
/// handed back) jobs.
///
/// # Errors
/// Fails when the database does.
pub async fn deregister(shared: &Shared) -> Result<(), sqlx::Error> {
    let now = shared.clock.now().timestamp_millis();
    sqlx::query("UPDATE keel_workers SET stopped_at = $1 WHERE id = $2")
        .bind(now)
        .bind(&shared.worker_id)
        .execute(shared.control.pool())
        .await?;
    sqlx::query("DELETE FROM keel_leases WHERE name = $1 AND holder = $2")
        .bind(LEASE)
        .bind(&shared.worker_id)
        .execute(shared.control.pool())
        .await?;
    Ok(())
}

/// Heartbeats and, when leader, maintains — until `shutdown`.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(shared.config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = once(&shared).await {
            tracing::warn!(error = %e, "worker maintenance failed; retrying next heartbeat");
        }
    }
}

/// One heartbeat: prove liveness, renew or take the lease, and maintain when leader.
///
/// # Errors
/// Fails when the database does.
pub async fn once(shared: &Shared) -> Result<(), sqlx::Error> {
    let now = shared.clock.now();
    let now_ms = now.timestamp_millis();
    // A process declared silent (say, through a long database outage) that is alive after
    // all comes back: its rescued jobs are no longer its own, and its new claims must not be
    // rescued from under it.
    let beat =
        sqlx::query("UPDATE keel_workers SET heartbeat_at = $1, stopped_at = NULL WHERE id = $2")
            .bind(now_ms)
            .bind(&shared.worker_id)
            .execute(shared.control.pool())
            .await?
            .rows_affected();
    if beat == 0 {
        sqlx::query(
            "INSERT INTO keel_workers (id, host, pid, queues, started_at, heartbeat_at) \
             VALUES ($1, $2, $3, '', $4, $4)",
        )
        .bind(&shared.worker_id)
        .bind(hostname())
        .bind(i64::from(std::process::id()))
        .bind(now_ms)
        .execute(shared.control.pool())
        .await?;
    }
    if !take_lease(shared, now_ms).await? {
        return Ok(());
    }
    rescue(shared, now_ms).await?;
    retire_silent_workers(shared, now_ms).await?;
    watch_queue_age(shared, now).await?;
    prune(shared, now_ms).await?;
    Ok(())
}

/// Marks processes that stopped heartbeating as stopped — their jobs were just rescued —
/// and raises one `worker_silent` alert for each.
async fn retire_silent_workers(shared: &Shared, now_ms: i64) -> Result<(), sqlx::Error> {
    let silent_since = now_ms - millis(shared.config.dead_after);
    let rows = sqlx::query(
        "SELECT id, host, pid, heartbeat_at FROM keel_workers          WHERE stopped_at IS NULL AND heartbeat_at < $1",
    )
    .bind(silent_since)
    .fetch_all(shared.control.pool())
    .await?;
    for row in rows {
        let id: String = row.try_get("id")?;
        let host: String = row.try_get("host")?;
        let pid: i64 = row.try_get("pid")?;
        let heartbeat: i64 = row.try_get("heartbeat_at")?;
        let retired = sqlx::query(
            "UPDATE keel_workers SET stopped_at = $1 WHERE id = $2 AND stopped_at IS NULL",
        )
        .bind(now_ms)
        .bind(&id)
        .execute(shared.control.pool())
        .await?
        .rows_affected();
        if retired == 1 {
            shared.alerts.raise(Alert {
                kind: "worker_silent",
                subject: id.clone(),
                message: format!(
                    "worker {id} (pid {pid} on {host}) stopped heartbeating {} s ago; its jobs were rescued",
                    (now_ms - heartbeat) / 1000
                ),
                detail: serde_json::json!({ "worker_id": id, "host": host, "pid": pid }),
            });
        }
    }
    Ok(())
}

/// Raises `queue_stale` for each queue whose oldest ready job has waited too long.
async fn watch_queue_age(
    shared: &Shared,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    let queues: Vec<String> = shared.config.queues.keys().cloned().collect();
    let threshold = shared.config.stale_queue_after.as_secs_f64();
    let stats = match crate::admin::queue_stats(&shared.control, &queues, now).await {
        Ok(s) => s,
        Err(crate::RuntimeError::Database(e)) => return Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "queue statistics failed");
            return Ok(());
        }
    };
    for s in stats {
        if let Some(age) = s.oldest_ready_age_seconds
            && age > threshold
        {
            shared.alerts.raise(Alert {
                kind: "queue_stale",
                subject: s.queue.clone(),
                message: format!(
                    "queue {} has a job ready for {age:.0} s (threshold {threshold:.0} s); {} ready",
                    s.queue, s.ready
                ),
                detail: serde_json::json!({ "queue": s.queue, "oldest_ready_age_seconds": age, "ready": s.ready }),
            });
        }
    }
    Ok(())
}

async fn take_lease(shared: &Shared, now_ms: i64) -> Result<bool, sqlx::Error> {
    let expires = now_ms + millis(shared.config.dead_after);
    let taken = sqlx::query(
        "INSERT INTO keel_leases (name, holder, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE keel_leases.holder = excluded.holder OR keel_leases.expires_at < $4",
    )
    .bind(LEASE)
    .bind(&shared.worker_id)
    .bind(expires)
    .bind(now_ms)
    .execute(shared.control.pool())
    .await?
    .rows_affected();
    Ok(taken == 1)
}

/// Puts back jobs held by processes that stopped heartbeating. The lost attempt counts: a
/// job that keeps killing its worker ends up dead instead of looping forever.
async fn rescue(shared: &Shared, now_ms: i64) -> Result<(), sqlx::Error> {
    let silent_since = now_ms - millis(shared.config.dead_after);
    let rows = sqlx::query(
        "SELECT j.id, j.queue, j.job_type, j.attempt, j.max_attempts, j.locked_by, j.started_at, \
         j.correlation_id, j.causation_id, j.payload, j.idempotency_key, j.enqueued_at, j.run_at \
         FROM keel_jobs j \
         WHERE j.state = 'running' AND NOT EXISTS (SELECT 1 FROM keel_workers w \
           WHERE w.id = j.locked_by AND w.stopped_at IS NULL AND w.heartbeat_at >= $1)",
    )
    .bind(silent_since)
    .fetch_all(shared.control.pool())
    .await?;
    let mut lost: Vec<(sqlx::any::AnyRow, String)> = rows
        .into_iter()
        .map(|row| {
            let holder: Option<String> = row.try_get("locked_by").unwrap_or_default();
            let why = format!(
                "worker {} stopped heartbeating while running this job",
                holder.unwrap_or_default()
            );
            (row, why)
        })
        .collect();
    // Orphans of a live worker: a claim whose answer was lost on the way back (connection
    // cut after commit) leaves jobs `running` that no task runs. Any attempt that outlived
    // its timeout by `dead_after` is one of those — the worker's own timeout would have
    // ended a real one.
    let orphans = sqlx::query(
        "SELECT j.id, j.queue, j.job_type, j.attempt, j.max_attempts, j.locked_by, j.started_at, \
         j.correlation_id, j.causation_id, j.payload, j.idempotency_key, j.enqueued_at, j.run_at \
         FROM keel_jobs j WHERE j.state = 'running' AND j.started_at < $1",
    )
    .bind(silent_since)
    .fetch_all(shared.control.pool())
    .await?;
    for row in orphans {
        let id: String = row.try_get("id")?;
        if lost
            .iter()
            .any(|(r, _)| r.try_get::<String, _>("id").ok().as_deref() == Some(&id))
        {
            continue;
        }
        let queue: String = row.try_get("queue")?;
        let job_type: String = row.try_get("job_type")?;
        let started_at: Option<i64> = row.try_get("started_at")?;
        let timeout = shared.config.policy_for(&queue, &job_type).timeout;
        if started_at.unwrap_or(now_ms) + millis(timeout) < silent_since {
            let why = format!(
                "attempt outlived its {} timeout: its worker lost track of it",
                super::execute::humanize(timeout)
            );
            lost.push((row, why));
        }
    }
    for (row, error) in lost {
        let id: String = row.try_get("id")?;
        let holder: Option<String> = row.try_get("locked_by")?;
        let holder = holder.unwrap_or_default();
        let attempt: i32 = row.try_get("attempt")?;
        let max_attempts: i32 = row.try_get("max_attempts")?;
        let started_at: Option<i64> = row.try_get("started_at")?;
        let dead = attempt >= max_attempts;
        let mut tx = shared.control.begin().await?;
        let updated = sqlx::query(
            "UPDATE keel_jobs SET state = $1, run_at = $2, last_error = $3, locked_by = NULL, \
             finished_at = CASE WHEN $1 = 'dead' THEN $2 ELSE finished_at END \
             WHERE id = $4 AND state = 'running' AND locked_by = $5 AND attempt = $6",
        )
        .bind(if dead { "dead" } else { "available" })
        .bind(now_ms)
        .bind(&error)
        .bind(&id)
        .bind(&holder)
        .bind(attempt)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 1 {
            record_attempt(
                &mut tx,
                &id,
                u32::try_from(attempt).unwrap_or(1),
                &holder,
                started_at.unwrap_or(now_ms),
                now_ms,
                if dead { "dead" } else { "lost" },
                Some(&error),
                None,
            )
            .await?;
        }
        tx.commit().await?;
        if updated == 1 {
            tracing::warn!(job_id = %id, worker = %holder, "rescued a job from a silent worker");
            if dead {
                let queue: String = row.try_get("queue")?;
                let job_type: String = row.try_get("job_type")?;
                let correlation: String = row.try_get("correlation_id")?;
                let job = super::claim::ClaimedJob {
                    id: id.clone(),
                    queue: queue.clone(),
                    job_type: job_type.clone(),
                    payload: row.try_get("payload")?,
                    attempt: u32::try_from(attempt).unwrap_or(1),
                    max_attempts: u32::try_from(max_attempts).unwrap_or(1),
                    idempotency_key: row.try_get("idempotency_key")?,
                    correlation_id: correlation.clone(),
                    causation_id: row.try_get("causation_id")?,
                    enqueued_at: row.try_get("enqueued_at")?,
                    run_at: row.try_get("run_at")?,
                    started_at: started_at.unwrap_or(now_ms),
                };
                super::execute::notify_dead(shared, &job).await;
                shared.alerts.raise(Alert {
                    kind: "job_dead",
                    subject: format!("{queue}/{job_type}"),
                    message: format!("job {id} ({job_type} on {queue}) is dead: {error}"),
                    detail: serde_json::json!({
                        "job_id": id, "queue": queue, "job_type": job_type,
                        "attempts": attempt, "error": error, "correlation_id": correlation,
                    }),
                });
            }
        }
    }
    shared.wakers.wake_all();
    Ok(())
}

/// Deletes finished jobs, their attempts, old events and inbox entries past retention, and
/// forgets workers long stopped. Dead jobs stay until replayed or purged.
async fn prune(shared: &Shared, now_ms: i64) -> Result<(), sqlx::Error> {
    let before = now_ms - millis(shared.config.retention);
    let pool = shared.control.pool();
    // In bounded batches, each its own short transaction: a day of finished jobs never
    // holds SQLite's write lock (or a maintenance round) for long. What is left over goes
    // in the next round.
    for _ in 0..PRUNE_BATCHES_PER_ROUND {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM keel_jobs WHERE state IN ('completed', 'cancelled') \
             AND finished_at < $1 LIMIT $2",
        )
        .bind(before)
        .bind(PRUNE_BATCH)
        .fetch_all(pool)
        .await?;
        if ids.is_empty() {
            break;
        }
        let list = (1..=ids.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut tx = shared.control.begin().await?;
        for table_and_column in ["keel_job_attempts WHERE job_id", "keel_jobs WHERE id"] {
            let sql = format!("DELETE FROM {table_and_column} IN ({list})");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in &ids {
                query = query.bind(id.as_str());
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        if i64::try_from(ids.len()).unwrap_or(0) < PRUNE_BATCH {
            break;
        }
        tokio::task::yield_now().await;
    }
    // An event goes once its window has passed and no job names it as cause any more (its
    // deliveries were pruned above; a dead delivery keeps it for replay).
    for _ in 0..PRUNE_BATCHES_PER_ROUND {
        let deleted = sqlx::query(
            "DELETE FROM keel_events WHERE id IN (SELECT e.id FROM keel_events e \
             WHERE e.occurred_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM keel_jobs j WHERE j.causation_id = e.id) LIMIT $2)",
        )
        .bind(before)
        .bind(PRUNE_BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        if deleted < u64::try_from(PRUNE_BATCH).unwrap_or(0) {
            break;
        }
        tokio::task::yield_now().await;
    }
    sqlx::query("DELETE FROM keel_requests WHERE started_at < $1")
        .bind(before)
        .execute(pool)
        .await?;
    // Stored answers hold response bodies (a new endpoint's secret, a record's owner
    // email): keep them one day, long enough for any client's retry.
    sqlx::query("DELETE FROM keel_idempotency WHERE created_at < $1")
        .bind(now_ms - IDEMPOTENCY_KEY_TTL_MS)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM keel_inbox WHERE processed_at < $1")
        .bind(before)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM keel_workers WHERE stopped_at IS NOT NULL AND stopped_at < $1")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(())
}

fn millis(d: std::time::Duration) -> i64 {
    TimeDelta::from_std(d).map_or(i64::MAX / 4, |t| t.num_milliseconds())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
