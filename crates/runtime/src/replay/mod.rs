//! Replays and backfills: a window of past events fed again to one listener.
//!
//! `keel events replay` and a listener's declared start point (`Listener::backfill_from`,
//! `[listeners.<name>] backfill_from`) are the same thing underneath: a row in
//! `keel_replays` naming a listener and a window of the log — every event after
//! `checkpoint` up to `to_position` (the last position stored when the replay began) whose
//! name the listener consumes and whose `occurred_at` lies in `[since, until]`. A feeder
//! walks that window in log order and enqueues one delivery per event — an ordinary
//! `listener:<name>` job on the `events` queue, so it gets retries, dead letters and the
//! inbox like any delivery (an event the listener already processed is skipped unless the
//! replay is forced), and upcasting like any delivery.
//!
//! **Durable.** The deliveries of a batch and the checkpoint advance commit together, and
//! each delivery is unique per (event, replay): a feeder that dies resumes at the checkpoint
//! without losing or doubling a delivery, and two feeders of one replay cannot both advance
//! it (the checkpoint moves only from the value the feeder read).
//!
//! **Complete windows on PostgreSQL.** Positions come from a sequence at insert, so with
//! concurrent writers a transaction holding position 10 may commit after one holding 11. A
//! replay therefore records, after reading its window, the transaction horizon
//! (`pg_snapshot_xmax`), and feeds nothing until every transaction older than that has
//! ended (`pg_snapshot_xmin` past it): by then every event inside the window is committed
//! or never will be, so walking it by position misses none. SQLite has one writer; its
//! positions are commit order already.
//!
//! **Rate.** Deliveries are spaced `1/rate` apart by their `run_at`, on the database's
//! clock, so the cap holds however many workers run; a feeder enqueues only a few seconds
//! ahead ([`LOOKAHEAD`]), so a replay of millions of events never floods the queue.
//!
//! **Progress.** Each delivery counts itself in the row (`delivered`, `skipped`, `failed`)
//! in its own transaction; `finished_at` is set by whichever write completes the count.

use std::time::Duration;

use chrono::{DateTime, Utc};
use events::{Backend, Db};
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use crate::db_time::DbTime;
use crate::error::RuntimeError;
use crate::registry::Registry;

mod feed;
mod progress;

pub use feed::{Fed, feed, feed_backfills};
pub use progress::{Outcome, ReplayProgress, active, count_delivery, progress, with_replays};

/// A replay started by an operator (`keel events replay`).
pub const KIND_REPLAY: &str = "replay";
/// A listener's declared start point in the past, fed at start-up.
pub const KIND_BACKFILL: &str = "backfill";
/// How far ahead of the database's clock a feeder schedules deliveries.
pub const LOOKAHEAD: Duration = Duration::from_secs(5);
/// Deliveries one feeding transaction enqueues at most.
const BATCH: i64 = 200;

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// The listener's name (`notifications.on_event_deliver_webhooks`).
    pub listener: String,
    /// Events that occurred at or after.
    pub since: DateTime<Utc>,
    /// Events that occurred at or before; `None`: up to the newest when it began.
    pub until: Option<DateTime<Utc>>,
    /// Deliveries per second, at most.
    pub rate: u32,
    /// Run the listener even for events its inbox says it processed.
    pub force: bool,
}

/// Why a replay cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No wired listener has this name.
    #[error("no listener is named `{0}` (known: {1})")]
    UnknownListener(String, String),
    /// The rate is zero.
    #[error("the rate must be at least 1 delivery a second")]
    ZeroRate,
    /// `until` comes before `since`.
    #[error("--until comes before --since")]
    EmptyWindow,
    /// The database failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl From<sqlx::Error> for ReplayError {
    fn from(e: sqlx::Error) -> Self {
        Self::Runtime(RuntimeError::Database(e))
    }
}

/// What a replay would do, before it does it (`--dry-run`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayPlan {
    /// The listener.
    pub listener: String,
    /// Events in the window that the listener consumes.
    pub events: i64,
    /// Of those, the ones its inbox says it processed (skipped unless forced).
    pub already_processed: i64,
    /// The window in the log: after this position …
    pub after_position: i64,
    /// … up to this one.
    pub to_position: i64,
}

/// The event names a listener consumes, or why it cannot be replayed to.
pub(crate) fn consumed_names(
    registry: &Registry,
    listener: &str,
) -> Result<Vec<String>, ReplayError> {
    let Some(l) = registry.listener(listener) else {
        return Err(ReplayError::UnknownListener(
            listener.to_owned(),
            registry.listener_names().join(", "),
        ));
    };
    let mut names: Vec<String> = l.consumes().iter().map(|k| k.name.to_owned()).collect();
    names.sort();
    names.dedup();
    Ok(names)
}

fn check(request: &ReplayRequest) -> Result<(), ReplayError> {
    if request.rate == 0 {
        return Err(ReplayError::ZeroRate);
    }
    if request.until.is_some_and(|u| u < request.since) {
        return Err(ReplayError::EmptyWindow);
    }
    Ok(())
}

/// `name IN ($k, $k+1, …)` for `names`, numbering from `first`.
pub(crate) fn names_in(names: &[String], first: usize) -> String {
    let list = (0..names.len().max(1))
        .map(|i| format!("${}", first + i))
        .collect::<Vec<_>>()
        .join(", ");
    format!("name IN ({list})")
}

pub(crate) fn bind_names<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    names: &[String],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    if names.is_empty() {
        // Matches no event name: a listener that consumes nothing has nothing to replay.
        return query.bind(String::new());
    }
    for n in names {
        query = query.bind(n.clone());
    }
    query
}

/// Counts what a replay of `request` would deliver, without writing anything.
///
/// # Errors
/// An unknown listener, a bad window, or the database.
pub async fn plan(
    db: &Db,
    registry: &Registry,
    request: &ReplayRequest,
) -> Result<ReplayPlan, ReplayError> {
    check(request)?;
    let names = consumed_names(registry, &request.listener)?;
    let (after, to) = window(db, request).await?;
    let sql = format!(
        "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN EXISTS (SELECT 1 FROM keel_inbox i \
         WHERE i.handler = $1 AND i.key = e.id) THEN 1 ELSE 0 END), 0) AS processed \
         FROM keel_events e WHERE e.position > $2 AND e.position <= $3 AND e.occurred_at >= $4 \
         AND ($5 IS NULL OR e.occurred_at <= $5) AND e.{}",
        names_in(&names, 6)
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(request.listener.clone())
        .bind(after)
        .bind(to)
        .bind(request.since.timestamp_millis())
        .bind(request.until.map(|u| u.timestamp_millis()));
    let row = bind_names(query, &names).fetch_one(db.pool()).await?;
    Ok(ReplayPlan {
        listener: request.listener.clone(),
        events: count(&row, "n")?,
        already_processed: count(&row, "processed")?,
        after_position: after,
        to_position: to,
    })
}

/// The log positions of `request`'s window: after the last event before `since`, up to the
/// newest event at or before `until` (or the newest stored now).
async fn window(db: &Db, request: &ReplayRequest) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT (SELECT MIN(position) FROM keel_events WHERE occurred_at >= $1) AS first, \
         (SELECT MAX(position) FROM keel_events WHERE $2 IS NULL OR occurred_at <= $2) AS last",
    )
    .bind(request.since.timestamp_millis())
    .bind(request.until.map(|u| u.timestamp_millis()))
    .fetch_one(db.pool())
    .await?;
    let first: Option<i64> = row.try_get("first")?;
    let last: Option<i64> = row.try_get("last")?;
    Ok(match (first, last) {
        (Some(first), Some(last)) if last >= first => (first - 1, last),
        _ => (0, 0),
    })
}

/// Starts a replay of `request` — or resumes the one that began with the same listener,
/// window and force and is still feeding.
///
/// # Errors
/// An unknown listener, a bad window, or the database.
pub async fn start(
    db: &Db,
    time: &DbTime,
    registry: &Registry,
    request: &ReplayRequest,
) -> Result<ReplayProgress, ReplayError> {
    let plan = plan(db, registry, request).await?;
    let existing: Option<String> = sqlx::query_scalar(
        "SELECT id FROM keel_replays WHERE kind = $1 AND listener = $2 AND since_ms = $3 \
         AND (until_ms = $4 OR (until_ms IS NULL AND $4 IS NULL)) AND forced = $5 \
         AND state = 'feeding' ORDER BY created_at LIMIT 1",
    )
    .bind(KIND_REPLAY)
    .bind(request.listener.clone())
    .bind(request.since.timestamp_millis())
    .bind(request.until.map(|u| u.timestamp_millis()))
    .bind(i32::from(request.force))
    .fetch_optional(db.pool())
    .await?;
    if let Some(id) = existing {
        let mut progress = progress(db, &id).await?;
        progress.resumed = true;
        return Ok(progress);
    }
    let id = Uuid::now_v7().to_string();
    insert(db, time, &id, KIND_REPLAY, request, &plan).await?;
    Ok(progress(db, &id).await?)
}

async fn insert(
    db: &Db,
    time: &DbTime,
    id: &str,
    kind: &str,
    request: &ReplayRequest,
    plan: &ReplayPlan,
) -> Result<u64, sqlx::Error> {
    let state = if plan.events == 0 { "fed" } else { "feeding" };
    // Read after the window, in a statement of its own: see "Complete windows" above.
    let horizon: Option<i64> = match db.backend() {
        Backend::Postgres => Some(
            sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
                .fetch_one(db.pool())
                .await?,
        ),
        Backend::Sqlite => None,
    };
    let sql = time.sql(
        "INSERT INTO keel_replays (id, kind, listener, since_ms, until_ms, forced, rate, \
         to_position, checkpoint, next_run_at, total, state, created_at, finished_at, horizon) \
         VALUES ($2, $3, $4, $5, $6, $7, $8, $9, $10, NOW_MS, $11, $12, NOW_MS, \
         CASE WHEN $12 = 'fed' THEN NOW_MS END, $13) \
         ON CONFLICT (listener, since_ms) WHERE kind = 'backfill' DO NOTHING",
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(time.fixed())
        .bind(id.to_owned())
        .bind(kind.to_owned())
        .bind(request.listener.clone())
        .bind(request.since.timestamp_millis())
        .bind(request.until.map(|u| u.timestamp_millis()))
        .bind(i32::from(request.force))
        .bind(i64::from(request.rate))
        .bind(plan.to_position)
        .bind(plan.after_position)
        .bind(plan.events)
        .bind(state)
        .bind(horizon)
        .execute(db.pool())
        .await?
        .rows_affected())
}

/// Records a listener's declared start point once, whatever the number of replicas starting
/// at the same time (one backfill per listener and start point). Returns whether this call
/// created it.
///
/// # Errors
/// An unknown listener or the database.
pub async fn declare_backfill(
    db: &Db,
    time: &DbTime,
    registry: &Registry,
    listener: &str,
    since: DateTime<Utc>,
    rate: u32,
) -> Result<bool, ReplayError> {
    let request = ReplayRequest {
        listener: listener.to_owned(),
        since,
        until: None,
        rate,
        force: false,
    };
    let exists: Option<String> = sqlx::query_scalar(
        "SELECT id FROM keel_replays WHERE kind = 'backfill' AND listener = $1 AND since_ms = $2",
    )
    .bind(listener.to_owned())
    .bind(since.timestamp_millis())
    .fetch_optional(db.pool())
    .await?;
    if exists.is_some() {
        return Ok(false);
    }
    let plan = plan(db, registry, &request).await?;
    let id = Uuid::now_v7().to_string();
    Ok(insert(db, time, &id, KIND_BACKFILL, &request, &plan).await? == 1)
}

fn count(row: &sqlx::any::AnyRow, col: &str) -> Result<i64, sqlx::Error> {
    // SUM is NUMERIC on PostgreSQL and INTEGER on SQLite; COUNT is BIGINT on both.
    row.try_get::<i64, _>(col)
        .or_else(|_| row.try_get::<f64, _>(col).map(|v| v as i64))
        .or_else(|_| {
            row.try_get::<String, _>(col)
                .map(|v| v.parse::<f64>().unwrap_or(0.0) as i64)
        })
}
