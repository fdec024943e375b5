//! Writing outcomes: one transaction per batch of finished attempts.
//!
//! Each outcome updates its job only while this process still holds it (`locked_by` and
//! state `running`) — a job rescued in the meantime is left to its new owner — and records
//! the attempt with its own error, so a dead letter shows why every attempt failed. When the
//! database is away, the batch is kept and retried: an outcome is never dropped.

use std::sync::Arc;
use std::time::Duration;

use events::DbConn;
use tokio::sync::{mpsc, watch};

use super::Shared;
use super::execute::{Outcome, Verdict};
use crate::alerts::Alert;

/// How many outcomes one transaction writes at most.
const BATCH: usize = 256;

/// Writes outcomes from `rx` until every sender is gone.
///
/// During shutdown a batch that still cannot be written after `shutdown_grace` is given up
/// (logged): its jobs stay `running` and are rescued after `dead_after`, so the process can
/// exit instead of hanging on a database that is gone. Returns whether every outcome was
/// written.
pub async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Outcome>,
    shutdown: watch::Receiver<bool>,
) -> bool {
    let mut batch = Vec::with_capacity(BATCH);
    let mut all_written = true;
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut delay = Duration::from_millis(50);
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            match write(&shared, &batch).await {
                Ok(()) => break,
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                    if *shutdown.borrow() && since.elapsed() >= shared.config.shutdown_grace {
                        tracing::error!(error = %e, outcomes = batch.len(), "giving up writing job outcomes at shutdown; their jobs will be rescued");
                        all_written = false;
                        break;
                    }
                    tracing::warn!(error = %e, outcomes = batch.len(), "writing job outcomes failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
        for outcome in &batch {
            if let Verdict::Dead { error, .. } = &outcome.result {
                raise_dead(&shared, &outcome.job, error);
                super::execute::notify_dead(&shared, &outcome.job).await;
            }
        }
        batch.clear();
    }
    all_written
}

fn raise_dead(shared: &Shared, job: &super::claim::ClaimedJob, error: &str) {
    shared.alerts.raise(Alert {
        kind: "job_dead",
        subject: format!("{}/{}", job.queue, job.job_type),
        message: format!(
            "job {} ({} on {}) is dead after {} attempt(s): {error}",
            job.id, job.job_type, job.queue, job.attempt
        ),
        detail: serde_json::json!({
            "job_id": job.id,
            "queue": job.queue,
            "job_type": job.job_type,
            "attempts": job.attempt,
            "error": error,
            "correlation_id": job.correlation_id,
        }),
    });
}

async fn write(shared: &Shared, batch: &[Outcome]) -> Result<(), sqlx::Error> {
    let mut tx = shared.db.begin().await?;
    let (completed, others): (Vec<&Outcome>, Vec<&Outcome>) = batch
        .iter()
        .partition(|o| matches!(o.result, Verdict::Completed { .. }));
    // The common case in two statements per chunk, however many jobs finished.
    for chunk in completed.chunks(COMPLETE_CHUNK) {
        complete_chunk(&mut tx, &shared.worker_id, chunk).await?;
    }
    for outcome in others {
        apply(&mut tx, &shared.worker_id, outcome).await?;
    }
    tx.commit().await
}

/// Completed jobs per statement (8 bound values per attempt row stay far below the
/// backends' parameter limits).
const COMPLETE_CHUNK: usize = 200;

/// Marks a chunk of jobs completed (those this worker still holds) and records their
/// attempts, in one `UPDATE … RETURNING` and one multi-row `INSERT`.
async fn complete_chunk(
    conn: &mut DbConn,
    worker: &str,
    chunk: &[&Outcome],
) -> Result<(), sqlx::Error> {
    let finished_at = chunk
        .iter()
        .map(|o| o.finished_at)
        .max()
        .unwrap_or_default();
    // (id, attempt): a late outcome must never land on a newer attempt of the same job
    // (rescued meanwhile and claimed again by this very worker).
    let pairs = (0..chunk.len())
        .map(|i| format!("(${}, ${})", 2 * i + 3, 2 * i + 4))
        .collect::<Vec<_>>()
        .join(", ");
    // A join on the primary key, spelled out: given `(id, attempt) IN (…)` PostgreSQL's
    // planner may walk `keel_jobs_running` instead, whose stale entries make every batch
    // slower until a vacuum.
    let sql = format!(
        "WITH done(id, attempt) AS (VALUES {pairs}) \
         UPDATE keel_jobs SET state = 'completed', finished_at = $1, locked_by = NULL \
         FROM done WHERE keel_jobs.id = done.id AND keel_jobs.attempt = done.attempt \
         AND keel_jobs.locked_by = $2 AND keel_jobs.state = 'running' \
         RETURNING keel_jobs.id"
    );
    let mut update = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(finished_at)
        .bind(worker);
    for outcome in chunk {
        update = update
            .bind(outcome.job.id.as_str())
            .bind(i32::try_from(outcome.job.attempt).unwrap_or(i32::MAX));
    }
    let held: std::collections::HashSet<String> = update
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| sqlx::Row::try_get::<String, _>(row, "id"))
        .collect::<Result<_, _>>()?;
    let rows: Vec<&&Outcome> = chunk.iter().filter(|o| held.contains(&o.job.id)).collect();
    if rows.len() < chunk.len() {
        tracing::warn!(
            lost = chunk.len() - rows.len(),
            "jobs were taken from this worker before their outcome was written"
        );
    }
    if rows.is_empty() {
        return Ok(());
    }
    let values = (0..rows.len())
        .map(|i| {
            let b = i * 6;
            format!(
                "(${}, ${}, ${}, ${}, ${}, 'completed', NULL, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO keel_job_attempts (job_id, attempt, worker, started_at, finished_at, outcome, error, detail) \
         VALUES {values}"
    );
    let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
    for outcome in rows {
        let detail = match &outcome.result {
            Verdict::Completed { detail } => detail.as_ref().map(ToString::to_string),
            _ => None,
        };
        insert = insert
            .bind(outcome.job.id.as_str())
            .bind(i32::try_from(outcome.job.attempt).unwrap_or(i32::MAX))
            .bind(worker)
            .bind(outcome.job.started_at)
            .bind(outcome.finished_at)
            .bind(detail);
    }
    insert.execute(&mut *conn).await?;
    Ok(())
}

/// Applies one outcome on `conn`.
///
/// # Errors
/// Fails when the database does.
pub async fn apply(conn: &mut DbConn, worker: &str, outcome: &Outcome) -> Result<(), sqlx::Error> {
    let job = &outcome.job;
    let (sql, run_at, error, detail, label) = match &outcome.result {
        Verdict::Completed { detail } => (
            "UPDATE keel_jobs SET state = 'completed', finished_at = $1, locked_by = NULL \
             WHERE id = $3 AND locked_by = $4 AND state = 'running' AND attempt = $6",
            None,
            None,
            detail.as_ref(),
            "completed",
        ),
        Verdict::Retry {
            run_at,
            error,
            detail,
        } => (
            "UPDATE keel_jobs SET state = 'retrying', run_at = $2, last_error = $5, locked_by = NULL \
             WHERE id = $3 AND locked_by = $4 AND state = 'running' AND attempt = $6",
            Some(*run_at),
            Some(error.as_str()),
            detail.as_ref(),
            "failed",
        ),
        Verdict::Dead { error, detail } => (
            "UPDATE keel_jobs SET state = 'dead', finished_at = $1, last_error = $5, locked_by = NULL \
             WHERE id = $3 AND locked_by = $4 AND state = 'running' AND attempt = $6",
            None,
            Some(error.as_str()),
            detail.as_ref(),
            "dead",
        ),
        Verdict::Cancelled { error, detail } => (
            "UPDATE keel_jobs SET state = 'cancelled', finished_at = $1, last_error = $5, locked_by = NULL \
             WHERE id = $3 AND locked_by = $4 AND state = 'running' AND attempt = $6",
            None,
            Some(error.as_str()),
            detail.as_ref(),
            "cancelled",
        ),
        Verdict::HandBack => {
            sqlx::query(
                "UPDATE keel_jobs SET state = 'available', attempt = attempt - 1, locked_by = NULL \
                 WHERE id = $1 AND locked_by = $2 AND state = 'running' AND attempt = $3",
            )
            .bind(&job.id)
            .bind(worker)
            .bind(i32::try_from(job.attempt).unwrap_or(i32::MAX))
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
    };
    let updated = sqlx::query(sql)
        .bind(outcome.finished_at)
        .bind(run_at.unwrap_or(outcome.finished_at))
        .bind(&job.id)
        .bind(worker)
        .bind(error)
        .bind(i32::try_from(job.attempt).unwrap_or(i32::MAX))
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if updated == 0 {
        tracing::warn!(job_id = %job.id, "job was taken from this worker before its outcome was written");
        return Ok(());
    }
    record_attempt(
        conn,
        &job.id,
        job.attempt,
        worker,
        job.started_at,
        outcome.finished_at,
        label,
        error,
        detail,
    )
    .await
}

/// Records one attempt of a job.
///
/// # Errors
/// Fails when the database does.
#[allow(clippy::too_many_arguments)]
pub async fn record_attempt(
    conn: &mut DbConn,
    job_id: &str,
    attempt: u32,
    worker: &str,
    started_at: i64,
    finished_at: i64,
    outcome: &str,
    error: Option<&str>,
    detail: Option<&serde_json::Value>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO keel_job_attempts (job_id, attempt, worker, started_at, finished_at, outcome, error, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(job_id)
    .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
    .bind(worker)
    .bind(started_at)
    .bind(finished_at)
    .bind(outcome)
    .bind(error)
    .bind(detail.map(ToString::to_string))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
