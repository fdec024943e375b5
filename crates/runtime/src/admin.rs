//! What operators ask of the queues: depth per state, dead letters, replay and purge.
//!
//! The CLI (`keel queues`, `keel dead …`) and the admin HTTP routes both call these, so the
//! two always agree.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use events::Db;
use serde::Serialize;
use sqlx::Row;

use crate::error::RuntimeError;
use crate::worker::execute::millis;

/// Depth of one queue, by state.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// Ready to run now.
    pub ready: i64,
    /// Waiting for their first run at a later time.
    pub scheduled: i64,
    /// Held by a worker.
    pub running: i64,
    /// Failed, waiting for their next try.
    pub retrying: i64,
    /// Dead letters.
    pub dead: i64,
    /// Age of the oldest ready job, in seconds.
    pub oldest_ready_age_seconds: Option<f64>,
}

/// Per-queue depth for every queue in `queues` and every queue that has jobs.
///
/// # Errors
/// Fails when the database does.
pub async fn queue_stats(
    db: &Db,
    queues: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<QueueStats>, RuntimeError> {
    let now_ms = now.timestamp_millis();
    let mut out: BTreeMap<String, QueueStats> = queues
        .iter()
        .map(|q| {
            (
                q.clone(),
                QueueStats {
                    queue: q.clone(),
                    ..QueueStats::default()
                },
            )
        })
        .collect();
    let rows = sqlx::query(
        "SELECT queue, \
           SUM(CASE WHEN state IN ('available', 'scheduled', 'retrying') AND run_at <= $1 THEN 1 ELSE 0 END) AS ready, \
           SUM(CASE WHEN state IN ('available', 'scheduled') AND run_at > $1 THEN 1 ELSE 0 END) AS scheduled, \
           SUM(CASE WHEN state = 'running' THEN 1 ELSE 0 END) AS running, \
           SUM(CASE WHEN state = 'retrying' AND run_at > $1 THEN 1 ELSE 0 END) AS retrying, \
           SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END) AS dead, \
           MIN(CASE WHEN state IN ('available', 'scheduled', 'retrying') AND run_at <= $1 THEN run_at END) AS oldest \
         FROM keel_jobs WHERE state NOT IN ('completed', 'cancelled') GROUP BY queue",
    )
    .bind(now_ms)
    .fetch_all(db.pool())
    .await?;
    for row in rows {
        let queue: String = row.try_get("queue")?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        let entry = out.entry(queue.clone()).or_insert_with(|| QueueStats {
            queue,
            ..QueueStats::default()
        });
        entry.ready = sum(&row, "ready")?;
        entry.scheduled = sum(&row, "scheduled")?;
        entry.running = sum(&row, "running")?;
        entry.retrying = sum(&row, "retrying")?;
        entry.dead = sum(&row, "dead")?;
        entry.oldest_ready_age_seconds = oldest.map(|o| (now_ms - o).max(0) as f64 / 1000.0);
    }
    Ok(out.into_values().collect())
}

/// `SUM` comes back as an integer on SQLite and a numeric on PostgreSQL: read either.
fn sum(row: &sqlx::any::AnyRow, col: &str) -> Result<i64, sqlx::Error> {
    match row.try_get::<Option<i64>, _>(col) {
        Ok(v) => Ok(v.unwrap_or(0)),
        Err(_) => {
            let v: Option<f64> = row.try_get(col)?;
            Ok(v.unwrap_or(0.0) as i64)
        }
    }
}

/// One attempt of a job, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    /// 1-based (counting restarts after a replay).
    pub attempt: i32,
    /// The worker that ran it.
    pub worker: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// How long it ran, in milliseconds.
    pub duration_ms: i64,
    /// `completed`, `failed`, `dead`, `cancelled` or `lost`.
    pub outcome: String,
    /// Its own error, when it failed.
    pub error: Option<String>,
    /// Facts the handler recorded (HTTP status, SMTP reply, …).
    pub detail: Option<serde_json::Value>,
}

/// A job as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    /// Its id.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its type.
    pub job_type: String,
    /// Its state.
    pub state: String,
    /// Attempts made in the current run.
    pub attempt: i32,
    /// Its attempt budget.
    pub max_attempts: i32,
    /// The last error.
    pub last_error: Option<String>,
    /// Stable across retries and replays.
    pub idempotency_key: String,
    /// The chain.
    pub correlation_id: String,
    /// What caused it.
    pub causation_id: Option<String>,
    /// When it was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When it finished (completed, dead or cancelled).
    pub finished_at: Option<DateTime<Utc>>,
    /// How often it was replayed.
    pub replays: i32,
    /// Its arguments (ids and small scalars, by payload discipline).
    pub payload: serde_json::Value,
    /// Every attempt, oldest first (filled by [`show_job`]).
    pub attempts: Vec<AttemptRecord>,
}

const JOB_COLUMNS: &str = "id, queue, job_type, state, attempt, max_attempts, last_error, \
    idempotency_key, correlation_id, causation_id, enqueued_at, finished_at, replays, payload";

fn decode_job(row: &sqlx::any::AnyRow) -> Result<JobRecord, sqlx::Error> {
    let payload: String = row.try_get("payload")?;
    let finished: Option<i64> = row.try_get("finished_at")?;
    Ok(JobRecord {
        id: row.try_get("id")?,
        queue: row.try_get("queue")?,
        job_type: row.try_get("job_type")?,
        state: row.try_get("state")?,
        attempt: row.try_get("attempt")?,
        max_attempts: row.try_get("max_attempts")?,
        last_error: row.try_get("last_error")?,
        idempotency_key: row.try_get("idempotency_key")?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        enqueued_at: millis(row.try_get("enqueued_at")?),
        finished_at: finished.map(millis),
        replays: row.try_get("replays")?,
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        attempts: Vec::new(),
    })
}

/// Dead letters, newest first, optionally of one queue.
///
/// # Errors
/// Fails when the database does.
pub async fn dead_letters(db: &Db, queue: Option<&str>) -> Result<Vec<JobRecord>, RuntimeError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM keel_jobs WHERE state = 'dead' AND ($1 IS NULL OR queue = $1) \
         ORDER BY finished_at DESC, id DESC LIMIT 1000"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(queue)
        .fetch_all(db.pool())
        .await?;
    Ok(rows.iter().map(decode_job).collect::<Result<_, _>>()?)
}

/// One job with all its attempts.
///
/// # Errors
/// [`RuntimeError::NotFound`] when no job has this id.
pub async fn show_job(db: &Db, id: &str) -> Result<JobRecord, RuntimeError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM keel_jobs WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db.pool())
        .await?
        .ok_or_else(|| RuntimeError::NotFound(format!("no job has id {id}")))?;
    let mut job = decode_job(&row)?;
    job.attempts = attempts(db, id).await?;
    Ok(job)
}

/// Every attempt of one job, oldest first.
///
/// # Errors
/// Fails when the database does.
pub async fn attempts(db: &Db, job_id: &str) -> Result<Vec<AttemptRecord>, RuntimeError> {
    let rows = sqlx::query(
        "SELECT attempt, worker, started_at, finished_at, outcome, error, detail \
         FROM keel_job_attempts WHERE job_id = $1 ORDER BY started_at, attempt",
    )
    .bind(job_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let started: i64 = row.try_get("started_at")?;
            let finished: i64 = row.try_get("finished_at")?;
            let detail: Option<String> = row.try_get("detail")?;
            Ok(AttemptRecord {
                attempt: row.try_get("attempt")?,
                worker: row.try_get("worker")?,
                started_at: millis(started),
                finished_at: millis(finished),
                duration_ms: finished - started,
                outcome: row.try_get("outcome")?,
                error: row.try_get("error")?,
                detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(RuntimeError::from)
}

/// Replays dead jobs: each runs again now with a fresh attempt budget and the same
/// idempotency key. Returns the ids actually replayed (ids that are not dead are skipped).
///
/// # Errors
/// Fails when the database does.
pub async fn replay(
    db: &Db,
    ids: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<String>, RuntimeError> {
    let mut replayed = Vec::new();
    let mut tx = db.begin().await?;
    for id in ids {
        let n = sqlx::query(
            "UPDATE keel_jobs SET state = 'available', attempt = 0, run_at = $1, finished_at = NULL, \
             locked_by = NULL, replays = replays + 1 WHERE id = $2 AND state = 'dead'",
        )
        .bind(now.timestamp_millis())
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            replayed.push(id.clone());
        }
    }
    let queues: Vec<String> = if replayed.is_empty() {
        Vec::new()
    } else {
        let rows = sqlx::query(
            "SELECT DISTINCT queue FROM keel_jobs WHERE state = 'available' AND replays > 0",
        )
        .fetch_all(&mut *tx)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("queue"))
            .collect::<Result<_, _>>()?
    };
    if db.backend() == events::Backend::Postgres {
        for q in &queues {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(crate::wake::CHANNEL)
                .bind(q)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(replayed)
}

/// The ids of every dead job, optionally of one queue (for `replay --all`).
///
/// # Errors
/// Fails when the database does.
pub async fn dead_ids(db: &Db, queue: Option<&str>) -> Result<Vec<String>, RuntimeError> {
    let rows = sqlx::query(
        "SELECT id FROM keel_jobs WHERE state = 'dead' AND ($1 IS NULL OR queue = $1) ORDER BY id",
    )
    .bind(queue)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get::<String, _>("id"))
        .collect::<Result<_, _>>()?)
}
