//! Taking jobs back from processes that stopped, all on the database's clock.
//!
//! - A **reserved** job (claimed ahead, no start recorded) of a silent worker — or one
//!   reserved for longer than [`RESERVATION_TTL`], which a live worker would long have
//!   handed back — goes back to the queue at once, unspent: no attempt was used, and it need
//!   not wait for `dead_after`. One a silent worker held is marked (`held_at_crash`): it may
//!   have started in the moment before the crash with its start not yet written, so from
//!   then on it runs only once its start is committed, and if it was what crashed the
//!   worker, its next crashes are counted.
//! - A **running** job of a worker silent for `dead_after` spent its attempt, and is retried
//!   on its backoff schedule like any failure, so a job that crashes its worker does not hop
//!   from replica to replica. Its crash is counted; after `[workers] poison_after` crashes
//!   (or with no attempts left) it is dead-lettered as poison, saying so.
//! - A running attempt older than its timeout plus `dead_after` is an **orphan** of a live
//!   worker (a claim whose answer was lost after commit): retried likewise, without counting
//!   a crash.
//!
//! Every change re-checks the owner, the attempt and this leader's lease in its statement.

use std::time::Duration;

use sqlx::Row;

use super::Shared;
use super::claim::{self, ClaimedJob, JOB_COLUMNS};
use super::complete::{AttemptRow, record_attempt};
use super::leader::{holds_lease, millis};
use super::writer::raise_dead;
use crate::alerts::Alert;

/// A reservation older than this is released even when its worker is alive: a live worker
/// hands back what it cannot start within 2 s.
pub const RESERVATION_TTL: Duration = Duration::from_secs(10);

/// SQL for "the worker named by `column` heartbeat within `dead_after` (`$…` given)".
fn live_worker(column: &str, dead_after_param: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM keel_workers w WHERE w.id = {column} AND w.stopped_at IS NULL \
         AND w.heartbeat_at >= NOW_MS - {dead_after_param})"
    )
}

/// Releases stale reservations and rescues running jobs of silent workers and orphans.
///
/// # Errors
/// Fails when the database does.
pub async fn rescue(shared: &Shared) -> Result<(), sqlx::Error> {
    release_reservations(shared).await?;
    rescue_running(shared).await?;
    shared.wakers.wake_all();
    Ok(())
}

async fn release_reservations(shared: &Shared) -> Result<(), sqlx::Error> {
    // `RETURNING` reads a row as updated, with `locked_by` already NULL: find the holders
    // first, then release each one's reservations by name, so the attempt row and the log
    // say whose they were.
    let releasable = |ttl: &str, dead_after: &str| {
        format!(
            "state IN ('reserved', 'running') AND state = 'reserved' \
             AND (reserved_at < NOW_MS - {ttl} OR NOT {live})",
            live = live_worker("keel_jobs.locked_by", dead_after),
        )
    };
    let sql = shared.time.sql(&format!(
        "SELECT DISTINCT locked_by FROM keel_jobs WHERE {}",
        releasable("$2", "$3")
    ));
    let holders: Vec<Option<String>> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(shared.time.fixed())
        .bind(millis(RESERVATION_TTL))
        .bind(millis(shared.config.dead_after))
        .fetch_all(shared.control.pool())
        .await?;
    let sql = shared.time.sql(&format!(
        "UPDATE keel_jobs SET state = 'available', locked_by = NULL, reserved_at = NULL, \
           held_at_crash = held_at_crash + CASE WHEN {live} THEN 0 ELSE 1 END \
         WHERE locked_by = $5 AND {} AND {lease} \
         RETURNING id, queue, attempt, NOW_MS AS db_now",
        releasable("$3", "$4"),
        live = live_worker("keel_jobs.locked_by", "$4"),
        lease = holds_lease("$2"),
    ));
    for holder in holders.into_iter().flatten() {
        let mut tx = shared.control.begin().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(shared.time.fixed())
            .bind(&shared.worker_id)
            .bind(millis(RESERVATION_TTL))
            .bind(millis(shared.config.dead_after))
            .bind(&holder)
            .fetch_all(&mut *tx)
            .await?;
        for row in &rows {
            let id: String = row.try_get("id")?;
            let queue: String = row.try_get("queue")?;
            let attempt: i32 = row.try_get("attempt")?;
            let now: i64 = row.try_get("db_now")?;
            metrics::counter!("keel_reservations_released_total", "queue" => queue.clone())
                .increment(1);
            tracing::info!(job_id = %id, worker = %holder, "released a reservation; back in the queue unspent");
            let error = format!(
                "reserved by worker {holder}, which did not start it (stopped heartbeating, or held it too long); back in the queue, no attempt spent"
            );
            record_attempt(
                &mut tx,
                &AttemptRow {
                    job_id: &id,
                    attempt: u32::try_from(attempt).unwrap_or(0),
                    worker: &holder,
                    started_at: now,
                    finished_at: now,
                    outcome: "released",
                    error: Some(&error),
                    detail: None,
                },
            )
            .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Why a running job is taken back.
enum Lost {
    /// Its worker stopped heartbeating: the run may have taken it down.
    Crashed(String),
    /// Its live worker lost track of it.
    Orphaned(String),
}

async fn rescue_running(shared: &Shared) -> Result<(), sqlx::Error> {
    let sql = shared.time.sql(&format!(
        "SELECT {JOB_COLUMNS}, locked_by, NOW_MS AS db_now, \
           CASE WHEN {live} THEN 1 ELSE 0 END AS alive \
         FROM keel_jobs WHERE state IN ('reserved', 'running') AND state = 'running' AND (NOT {live} OR started_at < NOW_MS - $2)",
        live = live_worker("keel_jobs.locked_by", "$2"),
    ));
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(shared.time.fixed())
        .bind(millis(shared.config.dead_after))
        .fetch_all(shared.control.pool())
        .await?;
    for row in rows {
        let job = claim::decode(&row)?;
        let holder: Option<String> = row.try_get("locked_by")?;
        let holder = holder.unwrap_or_default();
        let now: i64 = row.try_get("db_now")?;
        let alive: i32 = row.try_get("alive")?;
        let policy = shared.config.policy_for(&job.queue, &job.job_type);
        let lost = if alive == 0 {
            Lost::Crashed(format!(
                "worker {holder} stopped heartbeating while running this job"
            ))
        } else if job.started_at + millis(policy.timeout) + millis(shared.config.dead_after) < now {
            // The worker's own timeout would have ended a real attempt long ago.
            Lost::Orphaned(format!(
                "attempt outlived its {} timeout: its worker lost track of it",
                super::execute::humanize(policy.timeout)
            ))
        } else {
            continue;
        };
        take_back(shared, job, &holder, lost, now).await?;
    }
    Ok(())
}

/// Retries (on the backoff schedule) or dead-letters one lost running job.
async fn take_back(
    shared: &Shared,
    job: ClaimedJob,
    holder: &str,
    lost: Lost,
    now: i64,
) -> Result<(), sqlx::Error> {
    let policy = shared.config.policy_for(&job.queue, &job.job_type);
    let (mut error, crashed) = match lost {
        Lost::Crashed(e) => (e, 1),
        Lost::Orphaned(e) => (e, 0),
    };
    let crashes = job.crashes + crashed;
    let poison = crashed == 1 && crashes >= shared.config.poison_after;
    let dead = poison || job.attempt >= job.max_attempts;
    if poison {
        error = format!(
            "poison: its runs took down their worker {crashes} times (workers.poison_after = {}); last: {error}",
            shared.config.poison_after
        );
    }
    let delay = if dead {
        0
    } else {
        millis(policy.delay_after(job.attempt))
    };
    let sql = shared.time.sql(&format!(
        "UPDATE keel_jobs SET state = $2, run_at = NOW_MS + $3, last_error = $4, locked_by = NULL, \
         crashes = crashes + $5, finished_at = CASE WHEN $2 = 'dead' THEN NOW_MS ELSE finished_at END \
         WHERE id = $6 AND state = 'running' AND locked_by = $7 AND attempt = $8 AND {lease}",
        lease = holds_lease("$9"),
    ));
    let mut tx = shared.control.begin().await?;
    let updated = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(shared.time.fixed())
        .bind(if dead { "dead" } else { "retrying" })
        .bind(delay)
        .bind(&error)
        .bind(i32::try_from(crashed).unwrap_or(0))
        .bind(&job.id)
        .bind(holder)
        .bind(i32::try_from(job.attempt).unwrap_or(i32::MAX))
        .bind(&shared.worker_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if updated == 1 {
        record_attempt(
            &mut tx,
            &AttemptRow {
                job_id: &job.id,
                attempt: job.attempt,
                worker: holder,
                started_at: job.started_at,
                finished_at: now,
                outcome: if dead { "dead" } else { "lost" },
                error: Some(&error),
                detail: Some(&serde_json::json!({
                    "rescued_by": shared.worker_id,
                    "crashes": crashes,
                    "retry_in_ms": delay,
                })),
            },
        )
        .await?;
    }
    tx.commit().await?;
    if updated == 1 {
        let reason = if crashed == 1 { "crashed" } else { "orphaned" };
        metrics::counter!("keel_jobs_rescued_total", "queue" => job.queue.clone(), "reason" => reason)
            .increment(1);
        tracing::warn!(job_id = %job.id, worker = %holder, reason, crashes, dead, "rescued a running job");
        if dead {
            raise_dead(shared, &job, &error);
            super::execute::after_dead(shared, &job);
        }
    }
    Ok(())
}

/// Marks processes that stopped heartbeating as stopped — their jobs were just rescued —
/// and raises one `worker_silent` alert for each.
///
/// # Errors
/// Fails when the database does.
pub async fn retire_silent_workers(shared: &Shared) -> Result<(), sqlx::Error> {
    let sql = shared.time.sql(&format!(
        "UPDATE keel_workers SET stopped_at = NOW_MS \
         WHERE stopped_at IS NULL AND heartbeat_at < NOW_MS - $3 AND {lease} \
         RETURNING id, host, pid, heartbeat_at, NOW_MS AS db_now",
        lease = holds_lease("$2"),
    ));
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(shared.time.fixed())
        .bind(&shared.worker_id)
        .bind(millis(shared.config.dead_after))
        .fetch_all(shared.control.pool())
        .await?;
    for row in rows {
        let id: String = row.try_get("id")?;
        let host: String = row.try_get("host")?;
        let pid: i64 = row.try_get("pid")?;
        let heartbeat: i64 = row.try_get("heartbeat_at")?;
        let now: i64 = row.try_get("db_now")?;
        shared.alerts.raise(Alert {
            kind: "worker_silent",
            subject: id.clone(),
            message: format!(
                "worker {id} (pid {pid} on {host}) stopped heartbeating {} s ago; its jobs were rescued",
                (now - heartbeat) / 1000
            ),
            detail: serde_json::json!({ "worker_id": id, "host": host, "pid": pid }),
        });
    }
    Ok(())
}
