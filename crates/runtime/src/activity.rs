//! What each queue did over the last hour, minute by minute: jobs completed and attempts
//! that failed — the dashboard's small charts. Read from the database (finished jobs through
//! their partial index; failed attempts through one that holds failures only), so every
//! replica's dashboard shows the same numbers, on the database's clock.

use std::collections::BTreeMap;

use events::Db;
use serde::Serialize;
use sqlx::Row;

use crate::db_time::DbTime;
use crate::error::RuntimeError;

/// Minutes in the window.
pub const MINUTES: usize = 60;

/// One queue's last hour, oldest minute first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueActivity {
    /// The queue.
    pub queue: String,
    /// Jobs completed in each minute.
    pub completed: Vec<i64>,
    /// Attempts that failed (`failed`, `dead`, `lost`) in each minute.
    pub failed: Vec<i64>,
}

impl QueueActivity {
    fn empty(queue: String) -> Self {
        Self {
            queue,
            completed: vec![0; MINUTES],
            failed: vec![0; MINUTES],
        }
    }
}

/// Per queue (every one of `queues`, and any other with activity), the last hour by minute.
///
/// # Errors
/// Fails when the database does.
pub async fn last_hour(
    db: &Db,
    time: &DbTime,
    queues: &[String],
) -> Result<Vec<QueueActivity>, RuntimeError> {
    let mut out: BTreeMap<String, QueueActivity> = queues
        .iter()
        .map(|q| (q.clone(), QueueActivity::empty(q.clone())))
        .collect();
    // Each part spells out its partial index's predicate (see `schema`, SQLite).
    let sql = time.sql(
        "SELECT queue, part, bucket, COUNT(*) AS n FROM ( \
           SELECT queue, 'completed' AS part, (finished_at - (NOW_MS - 3600000)) / 60000 AS bucket \
             FROM keel_jobs WHERE state IN ('completed', 'cancelled', 'dead') \
             AND state = 'completed' AND finished_at > NOW_MS - 3600000 \
           UNION ALL \
           SELECT j.queue, 'failed' AS part, (a.finished_at - (NOW_MS - 3600000)) / 60000 AS bucket \
             FROM keel_job_attempts a JOIN keel_jobs j ON j.id = a.job_id \
             WHERE a.outcome IN ('failed', 'dead', 'lost') AND a.finished_at > NOW_MS - 3600000 \
         ) t GROUP BY queue, part, bucket",
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(time.fixed())
        .fetch_all(db.pool())
        .await?;
    for row in rows {
        let queue: String = row.try_get("queue")?;
        let part: String = row.try_get("part")?;
        let bucket: i64 = row.try_get("bucket")?;
        let n: i64 = row.try_get("n")?;
        let Ok(minute) = usize::try_from(bucket) else {
            continue;
        };
        let minute = minute.min(MINUTES - 1);
        let entry = out
            .entry(queue.clone())
            .or_insert_with(|| QueueActivity::empty(queue));
        match part.as_str() {
            "completed" => entry.completed[minute] += n,
            _ => entry.failed[minute] += n,
        }
    }
    Ok(out.into_values().collect())
}
