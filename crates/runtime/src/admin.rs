//! What operators ask of the queues: depth per state, dead letters, replay and purge.
//!
//! The CLI (`keel queues`, `keel dead …`) and the admin HTTP routes both call these, so the
//! two always agree.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use events::Db;
use serde::Serialize;
use sqlx::Row;

use crate::db_time::DbTime;
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
    /// Claimed ahead by a worker and held in its memory: no attempt spent yet.
    pub reserved: i64,
    /// Running an attempt on a worker.
    pub running: i64,
    /// Failed, waiting for their next try.
    pub retrying: i64,
    /// Dead letters.
    pub dead: i64,
    /// Age of the oldest ready job, in seconds (on the database's clock).
    pub oldest_ready_age_seconds: Option<f64>,
}

/// Per-queue depth for every queue in `queues` and every queue that has jobs.
///
/// Its cost follows the jobs still in play, never the finished ones kept for retention:
/// each part reads one partial index (`available`; `scheduled`/`retrying`; `reserved`/
/// `running`; `dead`), so a table holding ten million completed jobs answers as fast as
/// one holding ten thousand.
///
/// # Errors
/// Fails when the database does.
pub async fn queue_stats(
    db: &Db,
    time: &DbTime,
    queues: &[String],
) -> Result<Vec<QueueStats>, RuntimeError> {
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
    let sql = time.sql(
        "SELECT queue, 'available' AS part, COUNT(*) AS n, MIN(run_at) AS oldest, NOW_MS AS db_now \
           FROM keel_jobs WHERE state = 'available' GROUP BY queue \
         UNION ALL \
         SELECT queue, CASE WHEN run_at <= NOW_MS THEN 'due' ELSE state END AS part, COUNT(*) AS n, \
           MIN(run_at) AS oldest, NOW_MS AS db_now \
           FROM keel_jobs WHERE state IN ('scheduled', 'retrying') \
           GROUP BY queue, CASE WHEN run_at <= NOW_MS THEN 'due' ELSE state END \
         UNION ALL \
         SELECT queue, state AS part, COUNT(*) AS n, NULL AS oldest, NOW_MS AS db_now \
           FROM keel_jobs WHERE state IN ('reserved', 'running') GROUP BY queue, state \
         UNION ALL \
         SELECT queue, 'dead' AS part, COUNT(*) AS n, NULL AS oldest, NOW_MS AS db_now \
           FROM keel_jobs WHERE state IN ('completed', 'cancelled', 'dead') AND state = 'dead' \
           GROUP BY queue",
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(time.fixed())
        .fetch_all(db.pool())
        .await?;
    for row in rows {
        let queue: String = row.try_get("queue")?;
        let part: String = row.try_get("part")?;
        let n = sum(&row, "n")?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        let now: i64 = row.try_get("db_now")?;
        let entry = out.entry(queue.clone()).or_insert_with(|| QueueStats {
            queue,
            ..QueueStats::default()
        });
        match part.as_str() {
            "available" | "due" => {
                entry.ready += n;
                if let Some(o) = oldest {
                    let age = (now - o).max(0) as f64 / 1000.0;
                    entry.oldest_ready_age_seconds =
                        Some(entry.oldest_ready_age_seconds.map_or(age, |a| a.max(age)));
                }
            }
            "scheduled" => entry.scheduled += n,
            "retrying" => entry.retrying += n,
            "reserved" => entry.reserved += n,
            "running" => entry.running += n,
            "dead" => entry.dead += n,
            _ => {}
        }
    }
    let mut stats: Vec<QueueStats> = out.into_values().collect();
    stats.extend(broker_stats(db, time).await?);
    Ok(stats)
}

/// The row [`queue_stats`] shows for the broker relay: events committed but not yet
/// acknowledged by the broker (`ready`) and the age of the oldest (the relay's lag).
pub const BROKER_ROW: &str = "broker";

/// The broker relay's backlog, once this database has ever relayed an event.
async fn broker_stats(db: &Db, time: &DbTime) -> Result<Option<QueueStats>, RuntimeError> {
    let sql = time.sql(
        "SELECT COUNT(*) AS n, MIN(created_at) AS oldest, NOW_MS AS db_now, \
           (SELECT COUNT(*) FROM (SELECT 1 FROM keel_relay LIMIT 1) AS any_row) AS used \
         FROM keel_relay WHERE published_at IS NULL",
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(time.fixed())
        .fetch_one(db.pool())
        .await?;
    if sum(&row, "used")? == 0 {
        return Ok(None);
    }
    let now: i64 = row.try_get("db_now")?;
    let oldest: Option<i64> = row.try_get("oldest")?;
    Ok(Some(QueueStats {
        queue: BROKER_ROW.to_owned(),
        ready: sum(&row, "n")?,
        oldest_ready_age_seconds: oldest.map(|o| (now - o).max(0) as f64 / 1000.0),
        ..QueueStats::default()
    }))
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

/// Worker processes that heartbeat within `dead_after`.
///
/// # Errors
/// Fails when the database does.
pub async fn workers_alive(
    db: &Db,
    time: &DbTime,
    dead_after: std::time::Duration,
) -> Result<i64, RuntimeError> {
    let sql = time.sql(
        "SELECT COUNT(*) AS n FROM keel_workers WHERE stopped_at IS NULL AND heartbeat_at >= NOW_MS - $2",
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(time.fixed())
        .bind(i64::try_from(dead_after.as_millis()).unwrap_or(i64::MAX / 4))
        .fetch_one(db.pool())
        .await?;
    Ok(sum(&row, "n")?)
}

/// Jobs one queue completed recently.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Throughput {
    /// The queue.
    pub queue: String,
    /// Completed in the minute before `now`.
    pub last_minute: i64,
    /// Completed in the hour before `now`.
    pub last_hour: i64,
}

/// Completed jobs per queue in the last minute and hour (queues with none are absent).
///
/// # Errors
/// Fails when the database does.
pub async fn throughput(db: &Db, time: &DbTime) -> Result<Vec<Throughput>, RuntimeError> {
    let sql = time.sql(
        "SELECT queue, \
           SUM(CASE WHEN finished_at >= NOW_MS - 60000 THEN 1 ELSE 0 END) AS last_minute, \
           COUNT(*) AS last_hour \
         FROM keel_jobs WHERE state IN ('completed', 'cancelled', 'dead') AND state = 'completed' \
         AND finished_at >= NOW_MS - 3600000 \
         GROUP BY queue ORDER BY queue",
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(time.fixed())
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Throughput {
                queue: row.try_get("queue")?,
                last_minute: sum(row, "last_minute")?,
                last_hour: sum(row, "last_hour")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(RuntimeError::from)
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
        "SELECT {JOB_COLUMNS} FROM keel_jobs WHERE state IN ('completed', 'cancelled', 'dead') AND state = 'dead' \
         AND ($1 IS NULL OR queue = $1) \
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
        "SELECT job_id, attempt, worker, started_at, finished_at, outcome, error, detail \
         FROM keel_job_attempts WHERE job_id = $1 ORDER BY started_at, attempt",
    )
    .bind(job_id)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(decode_attempt).collect::<Result<_, _>>()?)
}

/// One `keel_job_attempts` row (selected with the columns [`attempts`] uses).
pub(crate) fn decode_attempt(row: &sqlx::any::AnyRow) -> Result<AttemptRecord, sqlx::Error> {
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
}

/// Replays dead jobs: each runs again now with a fresh attempt budget and the same
/// idempotency key. Returns the ids actually replayed (ids that are not dead are skipped).
///
/// # Errors
/// Fails when the database does.
pub async fn replay(db: &Db, ids: &[String], time: &DbTime) -> Result<Vec<String>, RuntimeError> {
    let mut replayed = Vec::new();
    let mut tx = db.begin().await?;
    let sql = time.sql(
        "UPDATE keel_jobs SET state = 'available', attempt = 0, crashes = 0, run_at = NOW_MS, \
         finished_at = NULL, locked_by = NULL, last_error = NULL, replays = replays + 1 \
         WHERE id = $2 AND state = 'dead'",
    );
    for id in ids {
        let n = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(time.fixed())
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
        "SELECT id FROM keel_jobs WHERE state IN ('completed', 'cancelled', 'dead') AND state = 'dead' \
         AND ($1 IS NULL OR queue = $1) ORDER BY id",
    )
    .bind(queue)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get::<String, _>("id"))
        .collect::<Result<_, _>>()?)
}

/// Dead letters that failed the same way: same queue, job type and error class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterGroup {
    /// Stable id of the group (a hash of queue, job type and error class).
    pub id: String,
    /// The queue.
    pub queue: String,
    /// The job type.
    pub job_type: String,
    /// The last error with ids and long numbers blanked out.
    pub error_class: String,
    /// How many dead jobs are in it.
    pub count: usize,
    /// One example error as recorded.
    pub example_error: String,
    /// The newest member's finish time.
    pub latest: Option<DateTime<Utc>>,
    /// Member job ids, oldest first.
    pub job_ids: Vec<String>,
}

/// The error with what differs between occurrences (UUIDs, hex ids, long numbers) blanked,
/// so "the same failure" groups together.
pub fn error_class(error: &str) -> String {
    let mut out = String::with_capacity(error.len());
    for token in error.split_inclusive(|c: char| c.is_whitespace() || "()[],;:'\"".contains(c)) {
        let trimmed =
            token.trim_end_matches(|c: char| c.is_whitespace() || "()[],;:'\"".contains(c));
        let tail = &token[trimmed.len()..];
        let digits = trimmed.chars().filter(char::is_ascii_digit).count();
        let hexish = trimmed.len() >= 8
            && trimmed.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            && digits > 0;
        if hexish || (digits >= 4 && digits * 2 >= trimmed.len()) {
            out.push_str("<id>");
        } else {
            out.push_str(trimmed);
        }
        out.push_str(tail);
    }
    out.chars().take(200).collect()
}

/// A short stable id for a group key (FNV-1a, hex).
fn group_id(queue: &str, job_type: &str, class: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in queue
        .bytes()
        .chain([0])
        .chain(job_type.bytes())
        .chain([0])
        .chain(class.bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Dead letters grouped by (queue, job type, error class), largest group first.
///
/// # Errors
/// Fails when the database does.
pub async fn dead_letter_groups(
    db: &Db,
    queue: Option<&str>,
) -> Result<Vec<DeadLetterGroup>, RuntimeError> {
    let rows = sqlx::query(
        "SELECT id, queue, job_type, last_error, finished_at FROM keel_jobs \
         WHERE state IN ('completed', 'cancelled', 'dead') AND state = 'dead' \
         AND ($1 IS NULL OR queue = $1) ORDER BY finished_at, id",
    )
    .bind(queue)
    .fetch_all(db.pool())
    .await?;
    let mut groups: BTreeMap<String, DeadLetterGroup> = BTreeMap::new();
    for row in rows {
        let id: String = row.try_get("id")?;
        let queue: String = row.try_get("queue")?;
        let job_type: String = row.try_get("job_type")?;
        let error: Option<String> = row.try_get("last_error")?;
        let error = error.unwrap_or_default();
        let finished: Option<i64> = row.try_get("finished_at")?;
        let class = error_class(&error);
        let gid = group_id(&queue, &job_type, &class);
        let group = groups
            .entry(gid.clone())
            .or_insert_with(|| DeadLetterGroup {
                id: gid,
                queue,
                job_type,
                error_class: class,
                count: 0,
                example_error: error,
                latest: None,
                job_ids: Vec::new(),
            });
        group.count += 1;
        group.latest = finished.map(millis).max(group.latest);
        group.job_ids.push(id);
    }
    let mut out: Vec<DeadLetterGroup> = groups.into_values().collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// The outcome of replaying a group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupReplay {
    /// The group.
    pub group_id: String,
    /// The job replayed first, alone.
    pub canary: Option<String>,
    /// The canary's state when we stopped waiting: `completed` lets the rest go.
    pub canary_state: Option<String>,
    /// Jobs replayed after the canary succeeded.
    pub replayed: Vec<String>,
    /// Jobs left dead (the canary failed or did not finish in time).
    pub left_dead: usize,
}

/// Replays a group carefully: first one job alone; only when it completes, the rest, at most
/// `per_second` a second. A group that fails again stays dead after one more attempt, instead
/// of sending its whole backlog at a receiver that is still broken.
///
/// # Errors
/// [`RuntimeError::NotFound`] for an unknown group; database failures.
pub async fn replay_group(
    db: &Db,
    time: &DbTime,
    group_id: &str,
    per_second: usize,
    canary_timeout: std::time::Duration,
    wake: &(dyn Fn() + Send + Sync),
) -> Result<GroupReplay, RuntimeError> {
    let group = dead_letter_groups(db, None)
        .await?
        .into_iter()
        .find(|g| g.id == group_id)
        .ok_or_else(|| RuntimeError::NotFound(format!("no dead-letter group has id {group_id}")))?;
    let mut ids = group.job_ids.into_iter();
    let Some(canary) = ids.next() else {
        return Ok(GroupReplay {
            group_id: group_id.to_owned(),
            canary: None,
            canary_state: None,
            replayed: Vec::new(),
            left_dead: 0,
        });
    };
    replay(db, std::slice::from_ref(&canary), time).await?;
    wake();
    let deadline = tokio::time::Instant::now() + canary_timeout;
    let mut state = String::from("available");
    while tokio::time::Instant::now() < deadline {
        state = job_state(db, &canary).await?;
        if matches!(
            state.as_str(),
            "completed" | "dead" | "cancelled" | "retrying"
        ) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let rest: Vec<String> = ids.collect();
    if state != "completed" {
        return Ok(GroupReplay {
            group_id: group_id.to_owned(),
            canary: Some(canary),
            canary_state: Some(state),
            replayed: Vec::new(),
            left_dead: rest.len(),
        });
    }
    let mut replayed = Vec::with_capacity(rest.len());
    for chunk in rest.chunks(per_second.max(1)) {
        replayed.extend(replay(db, chunk, time).await?);
        wake();
        if replayed.len() < rest.len() {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
    Ok(GroupReplay {
        group_id: group_id.to_owned(),
        canary: Some(canary),
        canary_state: Some(state),
        left_dead: rest.len() - replayed.len(),
        replayed,
    })
}

async fn job_state(db: &Db, id: &str) -> Result<String, RuntimeError> {
    let row = sqlx::query("SELECT state FROM keel_jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(db.pool())
        .await?
        .ok_or_else(|| RuntimeError::NotFound(format!("no job has id {id}")))?;
    Ok(row.try_get("state")?)
}

/// Deletes dead jobs (and their attempts) for good. Returns the ids deleted; ids that are
/// not dead are left alone.
///
/// # Errors
/// Fails when the database does.
pub async fn purge(db: &Db, ids: &[String]) -> Result<Vec<String>, RuntimeError> {
    let mut purged = Vec::new();
    let mut tx = db.begin().await?;
    for id in ids {
        let n = sqlx::query("DELETE FROM keel_jobs WHERE id = $1 AND state = 'dead'")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            sqlx::query("DELETE FROM keel_job_attempts WHERE job_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            purged.push(id.clone());
        }
    }
    tx.commit().await?;
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classes_ignore_ids_but_keep_statuses() {
        assert_eq!(
            error_class("receiver answered 500"),
            "receiver answered 500"
        );
        assert_eq!(
            error_class("event 01a21707-959d-74d9-968d-8d713d45a948 no longer exists"),
            "event <id> no longer exists"
        );
        assert_eq!(
            error_class("worker 26043-01a2170786077688bc1dc0bb91e328c7 stopped heartbeating"),
            "worker <id> stopped heartbeating"
        );
        assert_eq!(group_id("q", "t", "e"), group_id("q", "t", "e"));
        assert_ne!(group_id("q", "t", "e"), group_id("q", "t", "f"));
    }
}
