//! Claiming jobs: one statement moves a batch out of `available`.
//!
//! A claim takes up to `limit` jobs in queue order. The first `start_now` of them — as many
//! as the loop has free slots — become `running` at once, spending their attempt, because a
//! task starts them right away; the rest become `reserved`: held in this process's memory
//! so a finishing task can start the next without a claim round trip, but with **no
//! attempt spent**. A reserved job spends its attempt only when a task starts it (see
//! [`ClaimedJob::needs_committed_start`]); if this process dies first it goes back to the
//! queue at no cost.
//!
//! On PostgreSQL, `FOR UPDATE SKIP LOCKED` lets several processes claim from one queue
//! without waiting on each other or taking the same job. On SQLite the statement is atomic
//! under the one-writer lock. Both walk the partial index `keel_jobs_claim`, which holds only
//! `available` jobs: jobs scheduled for later or waiting to retry are *staged* (made
//! available) by [`stage`] when they come due on the database's clock.

use events::{Backend, Db};
use std::time::Instant;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db_time::DbTime;

/// A job this process holds: reserved, or running its current attempt.
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
    /// The attempt it runs as (1-based); for a reserved job, the attempt it will run as.
    pub attempt: u32,
    /// The attempt budget.
    pub max_attempts: u32,
    /// Stable across retries and replays.
    pub idempotency_key: String,
    /// The chain.
    pub correlation_id: String,
    /// What caused it.
    pub causation_id: Option<String>,
    /// When it was enqueued (ms, database clock).
    pub enqueued_at: i64,
    /// When it became due (ms): its wait is `started_at - run_at`.
    pub run_at: i64,
    /// When this attempt started (ms, database clock); 0 while only reserved.
    pub started_at: i64,
    /// The W3C trace context of the span that enqueued it (when traces are exported).
    pub traceparent: Option<String>,
    /// Runs of this job that took their worker down so far.
    pub crashes: u32,
    /// Times a worker that stopped heartbeating held this job with no start recorded.
    pub held_at_crash: u32,
    /// The database's clock (ms) when this process read the job, and this process's
    /// monotonic clock at that moment: durations since are measured here, times on the
    /// database's clock.
    pub seen: (i64, Instant),
}

impl ClaimedJob {
    /// Whether this job may run only once its start is committed.
    ///
    /// A job starts at once, its start written by the writer beside the outcomes (in the
    /// same transaction as its outcome at the latest), unless it has been near a crash: a
    /// job whose run took a worker down, or that a dying worker held while the database
    /// had no start for it — the one that may have crashed it before its start was written.
    /// Such a job waits for its start to commit, so a job that keeps crashing its worker is
    /// counted every time and ends as poison.
    pub fn needs_committed_start(&self) -> bool {
        self.crashes > 0 || self.held_at_crash > 0
    }

    /// Now on the database's clock, as read at claim time plus the time elapsed since.
    pub fn database_now(&self) -> i64 {
        let elapsed = i64::try_from(self.seen.1.elapsed().as_millis()).unwrap_or(i64::MAX / 4);
        self.seen.0.saturating_add(elapsed)
    }
}

/// What one claim brought back.
#[derive(Debug, Default)]
pub struct Claimed {
    /// Started: their attempt is spent; run them now.
    pub running: Vec<ClaimedJob>,
    /// Reserved: held unspent until a task starts them.
    pub reserved: Vec<ClaimedJob>,
    /// Where the claimed jobs end in queue order.
    pub last: Option<ClaimCursor>,
}

/// A position in a queue's order (`priority, run_at, id`): the next claim may start after
/// it.
///
/// On PostgreSQL every claimed job leaves a dead entry at the head of the claim index until
/// a vacuum removes it, and a claim that starts at the head walks all of them: with a
/// million jobs on one queue, 5 800 buffers and 17 ms a claim once 450 000 were done
/// (`EXPLAIN (ANALYZE, BUFFERS)`, against 600 buffers and 3 ms at the start). A loop that
/// keeps claiming full batches starts each claim where the last one ended instead. A job
/// that sorts before that point — a higher priority, a retry come due, a job handed back —
/// is found when the loop next starts from the head: after a claim that was not full,
/// after staging made jobs available, and at least once a second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimCursor {
    priority: i32,
    run_at: i64,
    id: String,
}

/// The columns a claim and a rescue read back.
pub const JOB_COLUMNS: &str = "id, queue, job_type, payload, attempt, max_attempts, \
     idempotency_key, correlation_id, causation_id, enqueued_at, run_at, started_at, crashes, \
     held_at_crash, traceparent";

/// Claims up to `limit` ready jobs of `queue` for `worker`, in queue order after `after`
/// (PostgreSQL; SQLite keeps no dead index entries, so it always starts at the head); the
/// first `start_now` of them start (running), the rest are reserved.
///
/// # Errors
/// Fails when the database cannot answer; nothing is claimed then.
pub async fn claim(
    db: &Db,
    time: &DbTime,
    queue: &str,
    worker: &str,
    limit: usize,
    start_now: usize,
    after: Option<&ClaimCursor>,
) -> Result<Claimed, sqlx::Error> {
    let (lock, after) = match db.backend() {
        Backend::Postgres => ("FOR UPDATE SKIP LOCKED", after),
        Backend::Sqlite => ("", None),
    };
    let from = if after.is_some() {
        "AND (priority, run_at, id) > ($6, $7, $8)"
    } else {
        ""
    };
    let sql = time.sql(&format!(
        "WITH picked AS (SELECT id, priority, run_at FROM keel_jobs \
           WHERE queue = $3 AND state = 'available' {from} \
           ORDER BY priority, run_at, id LIMIT $4 {lock}), \
         ranked AS (SELECT id, row_number() OVER (ORDER BY priority, run_at, id) AS n FROM picked) \
         UPDATE keel_jobs SET \
           state = CASE WHEN ranked.n <= $5 THEN 'running' ELSE 'reserved' END, \
           attempt = attempt + CASE WHEN ranked.n <= $5 THEN 1 ELSE 0 END, \
           started_at = CASE WHEN ranked.n <= $5 THEN NOW_MS ELSE NULL END, \
           reserved_at = NOW_MS, locked_by = $2 \
         FROM ranked WHERE keel_jobs.id = ranked.id \
         RETURNING {returning}, keel_jobs.priority, keel_jobs.state, NOW_MS AS db_now",
        returning = JOB_COLUMNS
            .split(", ")
            .map(|c| format!("keel_jobs.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(time.fixed())
        .bind(worker)
        .bind(queue)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(i64::try_from(start_now).unwrap_or(i64::MAX));
    if let Some(after) = after {
        query = query
            .bind(i16::try_from(after.priority).unwrap_or(i16::MAX))
            .bind(after.run_at)
            .bind(after.id.as_str());
    }
    let rows = query.fetch_all(db.pool()).await?;
    // `RETURNING` gives no order; the loop starts jobs in the order it holds them.
    let mut jobs = rows
        .iter()
        .map(|row| {
            let state: String = row.try_get("state")?;
            Ok((row.try_get::<i32, _>("priority")?, state, decode(row)?))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    jobs.sort_by(|(pa, _, a), (pb, _, b)| (pa, a.run_at, &a.id).cmp(&(pb, b.run_at, &b.id)));
    let mut claimed = Claimed {
        last: jobs.last().map(|(priority, _, job)| ClaimCursor {
            priority: *priority,
            run_at: job.run_at,
            id: job.id.clone(),
        }),
        ..Claimed::default()
    };
    for (_, state, mut job) in jobs {
        if state == "running" {
            claimed.running.push(job);
        } else {
            // It will run as the next attempt when started.
            job.attempt += 1;
            claimed.reserved.push(job);
        }
    }
    Ok(claimed)
}

/// Makes the jobs of `queue` that are due on the database's clock (scheduled or retrying,
/// `run_at` passed) available. Returns how many.
///
/// # Errors
/// Fails when the database cannot answer.
pub async fn stage(db: &Db, time: &DbTime, queue: &str) -> Result<u64, sqlx::Error> {
    let sql = time.sql(
        "UPDATE keel_jobs SET state = 'available' \
         WHERE queue = $2 AND state IN ('scheduled', 'retrying') AND run_at <= NOW_MS",
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(time.fixed())
        .bind(queue)
        .execute(db.pool())
        .await?
        .rows_affected())
}

/// Reads a job row selected with [`JOB_COLUMNS`] and `NOW_MS AS db_now`.
///
/// # Errors
/// Fails when a column is missing or of another type.
pub fn decode(row: &AnyRow) -> Result<ClaimedJob, sqlx::Error> {
    let attempt: i32 = row.try_get("attempt")?;
    let max_attempts: i32 = row.try_get("max_attempts")?;
    let crashes: i32 = row.try_get("crashes")?;
    let held_at_crash: i32 = row.try_get("held_at_crash")?;
    let started_at: Option<i64> = row.try_get("started_at")?;
    Ok(ClaimedJob {
        id: row.try_get("id")?,
        queue: row.try_get("queue")?,
        job_type: row.try_get("job_type")?,
        payload: row.try_get("payload")?,
        attempt: u32::try_from(attempt).unwrap_or(0),
        max_attempts: u32::try_from(max_attempts).unwrap_or(1),
        idempotency_key: row.try_get("idempotency_key")?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        traceparent: row.try_get("traceparent")?,
        enqueued_at: row.try_get("enqueued_at")?,
        run_at: row.try_get("run_at")?,
        started_at: started_at.unwrap_or_default(),
        crashes: u32::try_from(crashes).unwrap_or(0),
        held_at_crash: u32::try_from(held_at_crash).unwrap_or(0),
        seen: (row.try_get("db_now")?, Instant::now()),
    })
}
