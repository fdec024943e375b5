//! How far a replay got: the counts each delivery writes in its own transaction, and what
//! `keel queues` and the CLI read back.

use chrono::{DateTime, Utc};
use events::{Db, DbConn};
use serde::Serialize;
use sqlx::Row;

use crate::db_time::DbTime;
use crate::error::RuntimeError;
use crate::registry::EVENTS_QUEUE;

/// One replay or backfill and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayProgress {
    /// Its id.
    pub id: String,
    /// `replay` or `backfill`.
    pub kind: String,
    /// The listener fed.
    pub listener: String,
    /// The window's start.
    pub since: Option<DateTime<Utc>>,
    /// The window's end, when one was given.
    pub until: Option<DateTime<Utc>>,
    /// Whether already processed events run again.
    pub forced: bool,
    /// Deliveries per second, at most.
    pub rate: i64,
    /// `feeding` (deliveries still to enqueue), `fed`, or `cancelled`.
    pub state: String,
    /// The last position fed.
    pub checkpoint: i64,
    /// The last position of the window.
    pub to_position: i64,
    /// Events in the window the listener consumes (counted when it began).
    pub total: i64,
    /// Deliveries enqueued so far.
    pub enqueued: i64,
    /// Deliveries that ran the listener.
    pub delivered: i64,
    /// Deliveries skipped: the listener had processed the event already.
    pub skipped: i64,
    /// Deliveries dead-lettered.
    pub failed: i64,
    /// Whether every delivery has ended.
    pub finished: bool,
    /// Whether this call picked up a replay that had begun before (same listener, window
    /// and force) instead of starting one.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
}

/// Counts one delivery of a replay in the delivery's own transaction.
///
/// # Errors
/// Fails when the database does (the delivery is then retried).
pub async fn count_delivery(
    conn: &mut DbConn,
    time: &DbTime,
    id: &str,
    outcome: Outcome,
) -> Result<(), sqlx::Error> {
    let column = match outcome {
        Outcome::Delivered => "delivered",
        Outcome::Skipped => "skipped",
        Outcome::Failed => "failed",
    };
    let sql = time.sql(&format!(
        "UPDATE keel_replays SET {column} = {column} + 1, finished_at = CASE \
         WHEN state = 'fed' AND delivered + skipped + failed + 1 >= enqueued THEN NOW_MS \
         ELSE finished_at END WHERE id = $2"
    ));
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(time.fixed())
        .bind(id.to_owned())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// How one delivery of a replay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The listener ran.
    Delivered,
    /// The inbox said it had processed the event already.
    Skipped,
    /// Dead-lettered.
    Failed,
}

const PROGRESS_COLUMNS: &str = "id, kind, listener, since_ms, until_ms, forced, rate, state, \
     checkpoint, to_position, total, enqueued, delivered, skipped, failed, finished_at";

/// One replay's progress.
///
/// # Errors
/// [`RuntimeError::NotFound`] for an unknown id.
pub async fn progress(db: &Db, id: &str) -> Result<ReplayProgress, RuntimeError> {
    let sql = format!("SELECT {PROGRESS_COLUMNS} FROM keel_replays WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_owned())
        .fetch_optional(db.pool())
        .await?
        .ok_or_else(|| RuntimeError::NotFound(format!("no replay has id {id}")))?;
    read(&row)
}

/// Replays and backfills still feeding or with deliveries still running, oldest first —
/// what `keel queues` shows.
///
/// # Errors
/// Fails when the database does.
pub async fn active(db: &Db) -> Result<Vec<ReplayProgress>, RuntimeError> {
    let sql = format!(
        "SELECT {PROGRESS_COLUMNS} FROM keel_replays WHERE finished_at IS NULL \
         AND state IN ('feeding', 'fed') ORDER BY created_at, id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(read).collect()
}

/// Queue statistics as JSON, with the unfinished replays and backfills under the `events`
/// queue (whose deliveries they are) as `replays` — what `keel queues --json` and
/// `/admin/queues` show.
///
/// # Errors
/// Only if a statistic does not serialize.
pub fn with_replays(
    stats: &[crate::admin::QueueStats],
    replays: &[ReplayProgress],
) -> Result<serde_json::Value, serde_json::Error> {
    let mut value = serde_json::to_value(stats)?;
    if let Some(queues) = value.as_array_mut() {
        for q in queues {
            if q.get("queue").and_then(serde_json::Value::as_str) == Some(EVENTS_QUEUE)
                && let Some(obj) = q.as_object_mut()
            {
                obj.insert("replays".to_owned(), serde_json::to_value(replays)?);
            }
        }
    }
    Ok(value)
}

fn read(row: &sqlx::any::AnyRow) -> Result<ReplayProgress, RuntimeError> {
    let at = |ms: Option<i64>| ms.and_then(DateTime::from_timestamp_millis);
    let forced: i32 = row.try_get("forced")?;
    let enqueued: i64 = row.try_get("enqueued")?;
    let delivered: i64 = row.try_get("delivered")?;
    let skipped: i64 = row.try_get("skipped")?;
    let failed: i64 = row.try_get("failed")?;
    let state: String = row.try_get("state")?;
    let finished_at: Option<i64> = row.try_get("finished_at")?;
    Ok(ReplayProgress {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        listener: row.try_get("listener")?,
        since: at(row.try_get("since_ms")?),
        until: at(row.try_get("until_ms")?),
        forced: forced != 0,
        rate: row.try_get("rate")?,
        finished: finished_at.is_some()
            || (state == "fed" && delivered + skipped + failed >= enqueued),
        state,
        checkpoint: row.try_get("checkpoint")?,
        to_position: row.try_get("to_position")?,
        total: row.try_get("total")?,
        enqueued,
        delivered,
        skipped,
        failed,
        resumed: false,
    })
}
