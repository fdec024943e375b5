//! Feeding a replay: the next batch of deliveries enqueued, spaced by the rate, with the
//! checkpoint advanced in the same transaction (see the module above for why).

use std::sync::Arc;

use chrono::DateTime;
use events::{Db, NewJob, TraceContext};
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

use super::{BATCH, LOOKAHEAD, ReplayError, bind_names, consumed_names, names_in, progress};
use crate::db_time::DbTime;
use crate::queue::SqlJobQueue;
use crate::registry::{EVENTS_QUEUE, Registry, listener_job_type};

/// What one feeding step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// Enqueued this many deliveries; more remain.
    More(u64),
    /// Deliveries are scheduled [`LOOKAHEAD`] ahead already: come back later.
    Ahead,
    /// Transactions that were in flight when the replay began have not all ended yet
    /// (PostgreSQL): an event inside the window may still commit. Come back later.
    Settling,
    /// Every delivery is enqueued (or the replay is no longer feeding).
    Done,
}

/// Enqueues the next batch of `id`'s deliveries, spaced by its rate, and advances its
/// checkpoint in the same transaction.
///
/// # Errors
/// Fails when the database does; nothing of the batch is then written.
pub async fn feed(
    db: &Db,
    time: &DbTime,
    queue: &SqlJobQueue,
    registry: &Registry,
    id: &str,
) -> Result<Fed, ReplayError> {
    let p = progress(db, id).await?;
    if p.state != "feeding" {
        return Ok(Fed::Done);
    }
    let now = time.read(db).await?;
    let row = sqlx::query("SELECT next_run_at, horizon FROM keel_replays WHERE id = $1")
        .bind(id.to_owned())
        .fetch_one(db.pool())
        .await?;
    let next_run_at: i64 = row.try_get("next_run_at")?;
    let horizon: Option<i64> = row.try_get("horizon")?;
    if let Some(horizon) = horizon {
        let oldest_in_flight: i64 =
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                .fetch_one(db.pool())
                .await?;
        if oldest_in_flight < horizon {
            return Ok(Fed::Settling);
        }
    }
    let lookahead = i64::try_from(LOOKAHEAD.as_millis()).unwrap_or(i64::MAX);
    if next_run_at > now + lookahead {
        return Ok(Fed::Ahead);
    }
    let names = consumed_names(registry, &p.listener)?;
    let rate = p.rate.max(1);
    // As many as fit in the lookahead at this rate, at least one.
    let room = ((now + lookahead - next_run_at.max(now)) * rate / 1000).clamp(1, BATCH);
    // `$1`–`$5` are the window and the batch size; the names follow from `$6`.
    let sql = format!(
        "SELECT id, position, correlation_id FROM keel_events WHERE position > $1 \
         AND position <= $2 AND occurred_at >= $3 AND ($4 IS NULL OR occurred_at <= $4) \
         AND {} ORDER BY position LIMIT $5",
        names_in(&names, 6)
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(p.checkpoint)
        .bind(p.to_position)
        .bind(p.since.map_or(0, |s| s.timestamp_millis()))
        .bind(p.until.map(|u| u.timestamp_millis()))
        .bind(room);
    let rows = bind_names(query, &names).fetch_all(db.pool()).await?;
    let last_of_window = i64::try_from(rows.len()).unwrap_or(i64::MAX) < room;
    let mut tx = db.begin().await?;
    let mut run_at = next_run_at.max(now);
    let step = (1000 / rate).max(0);
    let mut checkpoint = p.checkpoint;
    let mut enqueued = 0u64;
    for row in &rows {
        let event_id: String = row.try_get("id")?;
        let position: i64 = row.try_get("position")?;
        let correlation: String = row.try_get("correlation_id")?;
        let trace = TraceContext {
            correlation_id: events::context::CorrelationId::parse(&correlation).unwrap_or_default(),
            causation_id: Uuid::parse_str(&event_id).ok(),
        };
        let job = NewJob {
            queue: EVENTS_QUEUE.to_owned(),
            job_type: listener_job_type(&p.listener),
            payload: json!({ "event_id": event_id, "replay": id, "force": p.forced }),
            unique_key: Some(format!("{event_id}:{id}")),
            priority: 0,
            run_at: DateTime::from_timestamp_millis(run_at),
            max_attempts: None,
        };
        if queue.insert(&mut tx, job, &trace).await?.is_some() {
            enqueued += 1;
        }
        checkpoint = position;
        run_at += step;
    }
    if last_of_window {
        checkpoint = p.to_position;
    }
    let sql = time.sql(
        "UPDATE keel_replays SET checkpoint = $2, next_run_at = $3, enqueued = enqueued + $4, \
         state = CASE WHEN $2 >= to_position THEN 'fed' ELSE state END, \
         finished_at = CASE WHEN $2 >= to_position AND delivered + skipped + failed >= enqueued + $4 \
         THEN NOW_MS ELSE finished_at END \
         WHERE id = $5 AND checkpoint = $6 AND state = 'feeding'",
    );
    let moved = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(time.fixed())
        .bind(checkpoint)
        .bind(run_at)
        .bind(i64::try_from(enqueued).unwrap_or(i64::MAX))
        .bind(id.to_owned())
        .bind(p.checkpoint)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if moved == 0 {
        // Another feeder advanced it first: this batch was theirs.
        tx.rollback().await?;
        return Ok(Fed::More(0));
    }
    tx.commit().await?;
    Ok(if checkpoint >= p.to_position {
        Fed::Done
    } else {
        Fed::More(enqueued)
    })
}

/// Feeds every backfill still feeding, each until it is [`LOOKAHEAD`] ahead — the leader's
/// step, so exactly one process feeds them. Returns the deliveries enqueued.
///
/// # Errors
/// The first failure; the other backfills were still fed.
pub async fn feed_backfills(
    db: &Db,
    time: &DbTime,
    queue: &SqlJobQueue,
    registry: &Arc<Registry>,
) -> Result<u64, ReplayError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM keel_replays WHERE state = 'feeding' AND kind = 'backfill' ORDER BY id",
    )
    .fetch_all(db.pool())
    .await?;
    let mut total = 0;
    let mut first_error = None;
    for id in ids {
        loop {
            match feed(db, time, queue, registry, &id).await {
                Ok(Fed::More(n)) => total += n,
                Ok(Fed::Ahead | Fed::Settling | Fed::Done) => break,
                Err(e) => {
                    tracing::warn!(backfill = %id, error = %e, "feeding a backfill failed");
                    first_error.get_or_insert(e);
                    break;
                }
            }
        }
    }
    first_error.map_or(Ok(total), Err)
}
