//! Claiming jobs: one statement that moves a batch from `available` to `running`.
//!
//! On PostgreSQL, `FOR UPDATE SKIP LOCKED` lets several processes claim from one queue
//! without waiting on each other or taking the same job. On SQLite the single `UPDATE` is
//! atomic under the one-writer lock. Both walk the partial index `keel_jobs_claim`, which
//! holds only `available` jobs: jobs scheduled for later or waiting to retry are *staged*
//! (made available) by [`stage`] when they come due, through their own index — so the cost
//! of a claim grows neither with the backlog nor with the jobs waiting for later.

use chrono::{DateTime, Utc};
use events::{Backend, Db};
use sqlx::Row;
use sqlx::any::AnyRow;

/// A job this process now holds.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    /// The job's id.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its type.
    pub job_type: String,
    /// Its stored payload text (decoded by the executor, so bad JSON is poison, not a crash).
    pub payload: String,
    /// This attempt's number (1-based).
    pub attempt: u32,
    /// The attempt budget.
    pub max_attempts: u32,
    /// Stable across retries and replays.
    pub idempotency_key: String,
    /// The chain.
    pub correlation_id: String,
    /// What caused it.
    pub causation_id: Option<String>,
    /// When it was enqueued (ms).
    pub enqueued_at: i64,
    /// When it became due (ms): its wait is `started_at - run_at`.
    pub run_at: i64,
    /// When this attempt started (ms).
    pub started_at: i64,
}

const RETURNING: &str = "RETURNING id, queue, job_type, payload, attempt, max_attempts, \
     idempotency_key, correlation_id, causation_id, enqueued_at, run_at, priority";

/// Claims up to `limit` ready jobs of `queue` for `worker`.
///
/// # Errors
/// Fails when the database cannot answer; nothing is claimed then.
pub async fn claim(
    db: &Db,
    queue: &str,
    worker: &str,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<ClaimedJob>, sqlx::Error> {
    let lock = match db.backend() {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "UPDATE keel_jobs SET state = 'running', attempt = attempt + 1, locked_by = $1, \
         started_at = $2 \
         WHERE id IN (SELECT id FROM keel_jobs \
           WHERE queue = $3 AND state = 'available' \
           ORDER BY priority, run_at, id LIMIT $4 {lock}) \
         {RETURNING}"
    );
    let now_ms = now.timestamp_millis();
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(worker)
        .bind(now_ms)
        .bind(queue)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(db.pool())
        .await?;
    // `RETURNING` gives no order; the loop starts jobs in the order it holds them.
    let mut claimed = rows
        .iter()
        .map(|row| Ok((row.try_get::<i32, _>("priority")?, decode(row, now_ms)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    claimed.sort_by(|(pa, a), (pb, b)| (pa, a.run_at, &a.id).cmp(&(pb, b.run_at, &b.id)));
    Ok(claimed.into_iter().map(|(_, job)| job).collect())
}

/// Makes the jobs of `queue` that are due (scheduled or retrying, `run_at` passed)
/// available. Returns how many.
///
/// # Errors
/// Fails when the database cannot answer.
pub async fn stage(db: &Db, queue: &str, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE keel_jobs SET state = 'available' \
         WHERE queue = $1 AND state IN ('scheduled', 'retrying') AND run_at <= $2",
    )
    .bind(queue)
    .bind(now.timestamp_millis())
    .execute(db.pool())
    .await?
    .rows_affected())
}

fn decode(row: &AnyRow, started_at: i64) -> Result<ClaimedJob, sqlx::Error> {
    let attempt: i32 = row.try_get("attempt")?;
    let max_attempts: i32 = row.try_get("max_attempts")?;
    Ok(ClaimedJob {
        id: row.try_get("id")?,
        queue: row.try_get("queue")?,
        job_type: row.try_get("job_type")?,
        payload: row.try_get("payload")?,
        attempt: u32::try_from(attempt).unwrap_or(1),
        max_attempts: u32::try_from(max_attempts).unwrap_or(1),
        idempotency_key: row.try_get("idempotency_key")?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        enqueued_at: row.try_get("enqueued_at")?,
        run_at: row.try_get("run_at")?,
        started_at,
    })
}
