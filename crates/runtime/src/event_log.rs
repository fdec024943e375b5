//! The event log as operators read it: `keel events list|show` and `/admin/events`.
//!
//! Every stored event carries a `position`, assigned when it is inserted and increasing
//! with every insert (a sequence on PostgreSQL, a counter row bumped by a trigger under
//! SQLite's single writer). Lists page by it, newest first; replays and backfills
//! ([`crate::replay`]) walk it forwards. Why a position and not the UUIDv7 id: ids are
//! stamped by each process's clock before the insert, so two replicas (or one with its
//! clock stepped back) can store them out of order; a position is the log's own order.

use chrono::{DateTime, Utc};
use events::Db;
use serde::Serialize;
use sqlx::Row;

use crate::error::RuntimeError;

/// The most events one page may hold.
pub const MAX_PAGE: i64 = 500;
/// A page's size when none is asked for.
pub const DEFAULT_PAGE: i64 = 50;

/// One stored event, as operators see it (the payload holds ids only, by contract).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    /// Where it stands in the log.
    pub position: i64,
    /// The event's id (UUIDv7).
    pub id: String,
    /// `record.created`, …
    pub name: String,
    /// The stored payload's version (before any upcasting).
    pub version: i64,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The chain it belongs to.
    pub correlation_id: String,
    /// What caused it.
    pub causation_id: Option<String>,
    /// The stored payload.
    pub payload: serde_json::Value,
}

/// Which events a list wants; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this event name.
    pub name: Option<String>,
    /// Only this chain.
    pub correlation_id: Option<String>,
    /// Occurred at or after.
    pub since: Option<DateTime<Utc>>,
    /// Occurred at or before.
    pub until: Option<DateTime<Utc>>,
    /// Only events older in the log than this position (the previous page's `next_cursor`).
    pub before: Option<i64>,
    /// Page size (at most [`MAX_PAGE`]).
    pub limit: Option<i64>,
}

/// One page of the log, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventPage {
    /// The events.
    pub items: Vec<EventRecord>,
    /// Pass as `cursor` for the next (older) page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Reads a page cursor (a position in the log); `None` when it is not one.
pub fn parse_cursor(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().filter(|p| *p > 0)
}

const COLUMNS: &str =
    "position, id, name, version, occurred_at, correlation_id, causation_id, payload";

/// A page of events matching `filter`, newest first.
///
/// # Errors
/// Fails when the database does, or a row no longer reads.
pub async fn list(db: &Db, filter: &EventFilter) -> Result<EventPage, RuntimeError> {
    let limit = filter.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let mut conditions = Vec::new();
    let mut n = 0;
    let mut param = || {
        n += 1;
        format!("${n}")
    };
    if filter.name.is_some() {
        conditions.push(format!("name = {}", param()));
    }
    if filter.correlation_id.is_some() {
        conditions.push(format!("correlation_id = {}", param()));
    }
    if filter.since.is_some() {
        conditions.push(format!("occurred_at >= {}", param()));
    }
    if filter.until.is_some() {
        conditions.push(format!("occurred_at <= {}", param()));
    }
    if filter.before.is_some() {
        conditions.push(format!("position < {}", param()));
    }
    let limit_param = param();
    let filter_sql = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM keel_events {filter_sql} ORDER BY position DESC LIMIT {limit_param}"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    if let Some(name) = &filter.name {
        query = query.bind(name.clone());
    }
    if let Some(c) = &filter.correlation_id {
        query = query.bind(c.clone());
    }
    if let Some(t) = filter.since {
        query = query.bind(t.timestamp_millis());
    }
    if let Some(t) = filter.until {
        query = query.bind(t.timestamp_millis());
    }
    if let Some(p) = filter.before {
        query = query.bind(p);
    }
    let rows = query.bind(limit + 1).fetch_all(db.pool()).await?;
    let mut items = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
    let more = i64::try_from(items.len()).unwrap_or(i64::MAX) > limit;
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = more
        .then(|| items.last().map(|e| e.position.to_string()))
        .flatten();
    Ok(EventPage { items, next_cursor })
}

/// One event by id.
///
/// # Errors
/// [`RuntimeError::NotFound`] when no stored event has this id.
pub async fn show(db: &Db, id: &str) -> Result<EventRecord, RuntimeError> {
    let sql = format!("SELECT {COLUMNS} FROM keel_events WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db.pool())
        .await?
        .ok_or_else(|| RuntimeError::NotFound(format!("no event has id {id}")))?;
    record(&row)
}

fn record(row: &sqlx::any::AnyRow) -> Result<EventRecord, RuntimeError> {
    let corrupt = |reason: String| RuntimeError::Corrupt {
        table: "keel_events",
        reason,
    };
    let occurred: i64 = row.try_get("occurred_at")?;
    let version: i32 = row.try_get("version")?;
    let payload: String = row.try_get("payload")?;
    Ok(EventRecord {
        position: row.try_get("position")?,
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        version: i64::from(version),
        occurred_at: DateTime::from_timestamp_millis(occurred)
            .ok_or_else(|| corrupt(format!("occurred_at {occurred} out of range")))?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        payload: serde_json::from_str(&payload)
            .map_err(|e| corrupt(format!("payload does not parse: {e}")))?,
    })
}
