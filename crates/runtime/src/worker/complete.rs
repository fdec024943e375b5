//! The SQL of a job's state changes after its claim: starting a reserved job, writing an
//! attempt's outcome, releasing what this process will not run.
//!
//! Every statement changes a job only while this process still owns it — `locked_by`, the
//! state it expects and the attempt — so a job rescued or released in the meantime is left
//! to its new owner, and a late outcome never lands on a newer attempt. A job that started
//! at once is still `reserved` in the database until the writer records its start, so an
//! outcome applies to a job `running` at its attempt, or `reserved` one attempt below it
//! (start and outcome then land together). Times that decide anything (`run_at`,
//! `finished_at`) come from the database's clock.

use std::collections::HashMap;

use events::{Backend, DbConn};
use sqlx::Row;

use super::claim::ClaimedJob;
use super::execute::{Outcome, Verdict};
use crate::db_time::DbTime;
use crate::placeholders::value_rows;

/// Jobs per statement when the writer completes, starts or releases a batch.
///
/// Measured with `keel-bench queue` (N = 20 000): SQLite drains ~19 k jobs/s at 25 or 50
/// jobs a statement and ~12.4 k at 200 — sqlx looks each bound value of a SQLite statement
/// up by name, which grows with the statement — while PostgreSQL does best with the big
/// statements (17–19 k jobs/s at 200, ~14 k at 25).
pub fn chunk_size(backend: Backend) -> usize {
    match backend {
        Backend::Postgres => 200,
        Backend::Sqlite => 32,
    }
}

/// "Worker `{worker}` holds the job at attempt `{attempt}`" (SQL; columns prefixed with
/// `{table}`): running it, or reserved with its start not written yet.
///
/// Spelled as a `CASE`, which no index can serve: these statements find their rows by
/// primary key, and given `state = 'running'` PostgreSQL's planner would rather walk
/// `keel_jobs_held`, whose entries for every job claimed since the last vacuum — most of
/// them dead — make each statement milliseconds slower (measured with `auto_explain`).
fn held_at(table: &str, worker: &str, attempt: &str) -> String {
    format!(
        "{table}locked_by = {worker} AND CASE {table}state \
           WHEN 'running' THEN {table}attempt = {attempt} \
           WHEN 'reserved' THEN {table}attempt = {attempt} - 1 ELSE FALSE END"
    )
}

/// "Worker `{worker}` holds the job reserved, to run as attempt `{attempt}`" — as
/// [`held_at`], for the statements that apply to a reserved job only.
fn reserved_for(table: &str, worker: &str, attempt: &str) -> String {
    format!(
        "{table}locked_by = {worker} AND CASE {table}state \
           WHEN 'reserved' THEN {table}attempt = {attempt} - 1 ELSE FALSE END"
    )
}

/// Starts reserved jobs: each becomes `running` and spends its attempt — unless it is no
/// longer reserved by `worker` (released by a rescue meanwhile). Returns the started ones,
/// with their attempt and start time as the database recorded them.
///
/// # Errors
/// Fails when the database does.
pub async fn start(
    conn: &mut DbConn,
    time: &DbTime,
    worker: &str,
    jobs: &[&ClaimedJob],
) -> Result<HashMap<String, (u32, i64)>, sqlx::Error> {
    if jobs.is_empty() {
        return Ok(HashMap::new());
    }
    // Found by primary key; the `CASE` keeps the planner off `keel_jobs_held` (see
    // [`held_at`]).
    let sql = time.sql(&format!(
        "WITH starting(id, attempt) AS (VALUES {rows}) \
         UPDATE keel_jobs SET state = 'running', attempt = starting.attempt, started_at = NOW_MS \
         FROM starting WHERE keel_jobs.id = starting.id AND {reserved} \
         RETURNING keel_jobs.id, keel_jobs.attempt, keel_jobs.started_at",
        rows = value_rows(3, jobs.len(), 2),
        reserved = reserved_for("keel_jobs.", "$2", "starting.attempt"),
    ));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(time.fixed())
        .bind(worker);
    for job in jobs {
        query = query
            .bind(job.id.as_str())
            .bind(i32::try_from(job.attempt).unwrap_or(i32::MAX));
    }
    query
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| {
            let attempt: i32 = row.try_get("attempt")?;
            Ok((
                row.try_get("id")?,
                (
                    u32::try_from(attempt).unwrap_or(1),
                    row.try_get("started_at")?,
                ),
            ))
        })
        .collect()
}

/// Records the starts of reserved jobs that began running without waiting for them: each
/// becomes `running` at the attempt and start time the task gave it. Returns how many were
/// still reserved by `worker` (the others were released meanwhile; their outcome will not
/// apply either).
///
/// # Errors
/// Fails when the database does.
pub async fn record_starts(
    conn: &mut DbConn,
    worker: &str,
    jobs: &[&ClaimedJob],
) -> Result<u64, sqlx::Error> {
    if jobs.is_empty() {
        return Ok(0);
    }
    // Found by primary key; the `CASE` keeps the planner off `keel_jobs_held` (see
    // [`held_at`]).
    let sql = format!(
        "WITH started(id, attempt, at) AS (VALUES {rows}) \
         UPDATE keel_jobs SET state = 'running', attempt = started.attempt, started_at = started.at \
         FROM started WHERE keel_jobs.id = started.id AND {reserved}",
        rows = value_rows(2, jobs.len(), 3),
        reserved = reserved_for("keel_jobs.", "$1", "started.attempt"),
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(worker);
    for job in jobs {
        query = query
            .bind(job.id.as_str())
            .bind(i32::try_from(job.attempt).unwrap_or(i32::MAX))
            .bind(job.started_at);
    }
    Ok(query.execute(&mut *conn).await?.rows_affected())
}

/// Puts reserved jobs back in the queue, unspent. Returns how many were still reserved.
///
/// # Errors
/// Fails when the database does.
pub async fn release(
    conn: &mut DbConn,
    worker: &str,
    jobs: &[&ClaimedJob],
) -> Result<u64, sqlx::Error> {
    if jobs.is_empty() {
        return Ok(0);
    }
    // Found by primary key; the `CASE` keeps the planner off `keel_jobs_held` (see
    // [`held_at`]).
    let sql = format!(
        "WITH releasing(id, attempt) AS (VALUES {rows}) \
         UPDATE keel_jobs SET state = 'available', locked_by = NULL, reserved_at = NULL \
         FROM releasing WHERE keel_jobs.id = releasing.id AND {reserved}",
        rows = value_rows(2, jobs.len(), 2),
        reserved = reserved_for("keel_jobs.", "$1", "releasing.attempt"),
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(worker);
    for job in jobs {
        query = query
            .bind(job.id.as_str())
            .bind(i32::try_from(job.attempt).unwrap_or(i32::MAX));
    }
    Ok(query.execute(&mut *conn).await?.rows_affected())
}

/// Marks a chunk of jobs completed (those this worker still holds at that attempt) and
/// records their attempts, in one `UPDATE … RETURNING` and one multi-row `INSERT`. Returns
/// how many were applied.
///
/// # Errors
/// Fails when the database does.
pub async fn complete_chunk(
    conn: &mut DbConn,
    time: &DbTime,
    worker: &str,
    chunk: &[&Outcome],
) -> Result<usize, sqlx::Error> {
    // (id, attempt, start): a late outcome must never land on a newer attempt of the same
    // job (rescued meanwhile and claimed again by this very worker).
    let values = value_rows(3, chunk.len(), 3);
    // A join on the primary key, spelled out: given `(id, attempt) IN (…)` PostgreSQL's
    // planner may walk a partial index instead, whose stale entries make every batch
    // slower until a vacuum.
    let sql = time.sql(&format!(
        "WITH done(id, attempt, started) AS (VALUES {values}) \
         UPDATE keel_jobs SET state = 'completed', finished_at = NOW_MS, locked_by = NULL, \
           attempt = done.attempt, started_at = COALESCE(keel_jobs.started_at, done.started) \
         FROM done WHERE keel_jobs.id = done.id AND {held} \
         RETURNING keel_jobs.id, keel_jobs.started_at",
        held = held_at("keel_jobs.", "$2", "done.attempt"),
    ));
    let mut update = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(time.fixed())
        .bind(worker);
    for outcome in chunk {
        update = update
            .bind(outcome.job.id.as_str())
            .bind(i32::try_from(outcome.job.attempt).unwrap_or(i32::MAX))
            .bind(outcome.job.started_at);
    }
    let held: HashMap<String, i64> = update
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| Ok((row.try_get::<String, _>("id")?, row.try_get("started_at")?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let rows: Vec<(&&Outcome, i64)> = chunk
        .iter()
        .filter_map(|o| held.get(&o.job.id).map(|&started| (o, started)))
        .collect();
    if rows.len() < chunk.len() {
        tracing::warn!(
            lost = chunk.len() - rows.len(),
            "jobs were taken from this worker before their outcome was written"
        );
    }
    if rows.is_empty() {
        return Ok(0);
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
    for (outcome, started_at) in &rows {
        let detail = match &outcome.result {
            Verdict::Completed { detail } => detail.as_ref().map(ToString::to_string),
            _ => None,
        };
        insert = insert
            .bind(outcome.job.id.as_str())
            .bind(i32::try_from(outcome.job.attempt).unwrap_or(i32::MAX))
            .bind(worker)
            .bind(*started_at)
            .bind(outcome.finished_at)
            .bind(detail);
    }
    insert.execute(&mut *conn).await?;
    Ok(rows.len())
}

/// Applies one outcome on `conn`. Returns whether it was applied (false: the job was taken
/// from this worker meanwhile, and the outcome is dropped).
///
/// # Errors
/// Fails when the database does.
pub async fn apply(
    conn: &mut DbConn,
    time: &DbTime,
    worker: &str,
    outcome: &Outcome,
) -> Result<bool, sqlx::Error> {
    let job = &outcome.job;
    // A spent attempt is the job's attempt from now on; one not run after all is given back.
    const SPENT: &str = "attempt = $7, started_at = COALESCE(started_at, $6)";
    const UNSPENT: &str = "attempt = $7 - 1";
    let (set, delay, error, detail, label) = match &outcome.result {
        Verdict::Completed { detail } => (
            "state = 'completed', finished_at = NOW_MS",
            None,
            None,
            detail.as_ref(),
            "completed",
        ),
        Verdict::Retry {
            delay,
            error,
            detail,
        } => (
            "state = 'retrying', run_at = NOW_MS + $2, last_error = $5",
            Some(*delay),
            Some(error.as_str()),
            detail.as_ref(),
            "failed",
        ),
        Verdict::Dead { error, detail } => (
            "state = 'dead', finished_at = NOW_MS, last_error = $5",
            None,
            Some(error.as_str()),
            detail.as_ref(),
            "dead",
        ),
        Verdict::Cancelled { error, detail } => (
            "state = 'cancelled', finished_at = NOW_MS, last_error = $5",
            None,
            Some(error.as_str()),
            detail.as_ref(),
            "cancelled",
        ),
        // Not run after all: the attempt is given back, and the job waits a moment.
        Verdict::Deferred { delay, error } => (
            "state = 'retrying', run_at = NOW_MS + $2, last_error = $5",
            Some(*delay),
            Some(error.as_str()),
            None,
            "deferred",
        ),
        Verdict::HandBack => (
            "state = 'available', reserved_at = NULL",
            None,
            None,
            None,
            "",
        ),
    };
    let spent = match outcome.result {
        Verdict::Deferred { .. } | Verdict::HandBack => UNSPENT,
        _ => SPENT,
    };
    let sql = time.sql(&format!(
        "UPDATE keel_jobs SET {set}, {spent}, locked_by = NULL WHERE id = $3 AND {held} \
         RETURNING started_at",
        held = held_at("", "$4", "$7"),
    ));
    let delay_ms = delay.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4));
    let applied: Option<Option<i64>> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(time.fixed())
        .bind(delay_ms)
        .bind(&job.id)
        .bind(worker)
        .bind(error)
        .bind(job.started_at)
        .bind(i32::try_from(job.attempt).unwrap_or(i32::MAX))
        .fetch_optional(&mut *conn)
        .await?;
    let Some(started_at) = applied else {
        if !label.is_empty() {
            tracing::warn!(job_id = %job.id, "job was taken from this worker before its outcome was written");
        }
        return Ok(false);
    };
    if label.is_empty() {
        return Ok(true);
    }
    record_attempt(
        conn,
        &AttemptRow {
            job_id: &job.id,
            attempt: job.attempt,
            worker,
            started_at: started_at.unwrap_or(job.started_at),
            finished_at: outcome.finished_at,
            outcome: label,
            error,
            detail,
        },
    )
    .await?;
    Ok(true)
}

/// Dead-letters a running job whose outcome could not be written (a row the database
/// refuses), with the reason, so it neither blocks other outcomes nor vanishes.
///
/// # Errors
/// Fails when the database does.
pub async fn dead_letter_unwritable(
    conn: &mut DbConn,
    time: &DbTime,
    worker: &str,
    job: &ClaimedJob,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let sql = time.sql(&format!(
        "UPDATE keel_jobs SET state = 'dead', finished_at = NOW_MS, last_error = $4, \
         attempt = $3, started_at = COALESCE(started_at, $6), locked_by = NULL \
         WHERE id = $5 AND {held}",
        held = held_at("", "$2", "$3"),
    ));
    let updated = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(time.fixed())
        .bind(worker)
        .bind(i32::try_from(job.attempt).unwrap_or(i32::MAX))
        .bind(reason)
        .bind(&job.id)
        .bind(job.started_at)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(updated == 1)
}

/// One row of `keel_job_attempts`.
#[derive(Debug)]
pub struct AttemptRow<'a> {
    /// The job.
    pub job_id: &'a str,
    /// Which attempt.
    pub attempt: u32,
    /// Who ran it.
    pub worker: &'a str,
    /// When it started (ms).
    pub started_at: i64,
    /// When it ended (ms).
    pub finished_at: i64,
    /// `completed`, `failed`, `dead`, `cancelled`, `deferred`, `lost`, …
    pub outcome: &'a str,
    /// Its own error.
    pub error: Option<&'a str>,
    /// Facts about it.
    pub detail: Option<&'a serde_json::Value>,
}

/// Records one attempt of a job.
///
/// # Errors
/// Fails when the database does.
pub async fn record_attempt(conn: &mut DbConn, row: &AttemptRow<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO keel_job_attempts (job_id, attempt, worker, started_at, finished_at, outcome, error, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(row.job_id)
    .bind(i32::try_from(row.attempt).unwrap_or(i32::MAX))
    .bind(row.worker)
    .bind(row.started_at)
    .bind(row.finished_at)
    .bind(row.outcome)
    .bind(row.error)
    .bind(row.detail.map(ToString::to_string))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
