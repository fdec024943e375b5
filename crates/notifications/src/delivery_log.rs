//! The delivery log: one row per message and endpoint (its status, how many attempts, and
//! what a re-send needs) and one per attempt (time, status code, duration, the first KiB of
//! the answer, the error) — what `GET /webhook-endpoints/{id}/deliveries`, the dashboard and
//! `recover` read. Pruned by the runtime's leader after `[webhooks] delivery_log_retention`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use events::{DbConn, Retention};
use sqlx::{AnyPool, Row};
use uuid::Uuid;

use crate::jobs::DeliverWebhook;
use crate::store::{millis, parse_id};

/// How much of a receiver's answer the log keeps.
pub(crate) const LOGGED_RESPONSE_BYTES: usize = 1024;

/// Where a message stands with one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeliveryStatus {
    /// Waiting for its first try, or re-sent by `recover`.
    Pending,
    /// A 2xx came back.
    Succeeded,
    /// The last attempt failed; retries remain.
    Failing,
    /// Given up: out of attempts, cancelled (410) or undeliverable.
    Failed,
    /// Not sent because the endpoint was disabled.
    Skipped,
}

impl DeliveryStatus {
    /// Every status, as filters name them.
    pub(crate) const ALL: [DeliveryStatus; 5] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Succeeded,
        DeliveryStatus::Failing,
        DeliveryStatus::Failed,
        DeliveryStatus::Skipped,
    ];

    /// As stored and shown.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failing => "failing",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
        }
    }

    /// From a filter or a stored value.
    pub(crate) fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// One attempt as it is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttemptRecord {
    /// When it started.
    pub attempted_at: DateTime<Utc>,
    /// The receiver's status code; `None` when no answer came.
    pub status_code: Option<u16>,
    /// How long it took.
    pub duration_ms: u64,
    /// The first KiB of the answer.
    pub response: String,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// One message's delivery to one endpoint, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeliverySummary {
    /// The log entry's id (UUIDv7, so newest sorts last).
    pub id: Uuid,
    /// The endpoint.
    pub endpoint_id: Uuid,
    /// The event delivered (`webhook-id` is `msg_<event_id>`).
    pub event_id: Uuid,
    /// Its name.
    pub event: String,
    /// Where it stands.
    pub status: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// When the event happened.
    pub occurred_at: DateTime<Utc>,
    /// When the log first saw it.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// One logged attempt, as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoggedAttempt {
    /// When it started.
    pub attempted_at: DateTime<Utc>,
    /// The receiver's status code, when it answered.
    pub status_code: Option<i64>,
    /// How long it took.
    pub duration_ms: i64,
    /// The first KiB of the answer.
    pub response: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Whether a 2xx came back.
    pub succeeded: bool,
}

/// What the deliveries list is narrowed to.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeliveryFilter {
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// Only messages that happened at or after.
    pub since: Option<DateTime<Utc>>,
    /// Only messages that happened before.
    pub until: Option<DateTime<Utc>>,
    /// Only entries older than this one (the previous page's last).
    pub before: Option<Uuid>,
}

/// The pruning the module asks the runtime's leader for.
pub(crate) fn retention(keep: Duration) -> Vec<Retention> {
    vec![
        Retention {
            table: "notifications_webhook_attempts",
            keep,
            delete: "DELETE FROM notifications_webhook_attempts WHERE id IN (SELECT id FROM \
                     notifications_webhook_attempts WHERE attempted_at < NOW_MS - $2 LIMIT $3)",
        },
        Retention {
            table: "notifications_webhook_deliveries",
            keep,
            delete: "DELETE FROM notifications_webhook_deliveries WHERE id IN (SELECT id FROM \
                     notifications_webhook_deliveries WHERE updated_at < NOW_MS - $2 LIMIT $3)",
        },
    ]
}

/// Sets where `job`'s message stands with its endpoint, creating its log entry when it has
/// none; `attempted` counts one attempt more. Returns the entry's id.
pub(crate) async fn upsert(
    conn: &mut DbConn,
    job: &DeliverWebhook,
    status: DeliveryStatus,
    attempted: bool,
    now: DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    let ids = serde_json::to_string(&job.ids).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let id: String = sqlx::query_scalar(
        "INSERT INTO notifications_webhook_deliveries (id, endpoint_id, event_id, event, \
         event_version, occurred_at, ids, status, attempts, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
         ON CONFLICT (endpoint_id, event_id) DO UPDATE SET status = CASE \
           WHEN excluded.status = 'skipped' AND notifications_webhook_deliveries.status = 'succeeded' \
           THEN 'succeeded' ELSE excluded.status END, \
         attempts = notifications_webhook_deliveries.attempts + excluded.attempts, \
         updated_at = excluded.updated_at RETURNING id",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(job.endpoint_id.to_string())
    .bind(job.event_id.to_string())
    .bind(&job.event)
    .bind(i64::from(job.event_version))
    .bind(job.occurred_at.timestamp_millis())
    .bind(ids)
    .bind(status.as_str())
    .bind(i64::from(attempted))
    .bind(now.timestamp_millis())
    .fetch_one(&mut *conn)
    .await?;
    parse_id(&id)
}

/// Logs one attempt and where its message now stands, on the caller's transaction (the
/// [`AttemptWriter`](crate::attempt_writer::AttemptWriter) groups them).
pub(crate) async fn write_attempt(
    tx: &mut DbConn,
    job: &DeliverWebhook,
    status: DeliveryStatus,
    attempt: &AttemptRecord,
) -> Result<(), sqlx::Error> {
    let delivery = upsert(&mut *tx, job, status, true, attempt.attempted_at).await?;
    sqlx::query(
        "INSERT INTO notifications_webhook_attempts (id, delivery_id, endpoint_id, attempted_at, \
         status_code, duration_ms, response, error, succeeded) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(delivery.to_string())
    .bind(job.endpoint_id.to_string())
    .bind(attempt.attempted_at.timestamp_millis())
    .bind(attempt.status_code.map(i64::from))
    .bind(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX))
    .bind(&attempt.response)
    .bind(attempt.error.as_deref())
    .bind(i64::from(status == DeliveryStatus::Succeeded))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

const SUMMARY_COLUMNS: &str =
    "id, endpoint_id, event_id, event, status, attempts, occurred_at, created_at, updated_at";

fn summary(row: &sqlx::any::AnyRow) -> Result<DeliverySummary, sqlx::Error> {
    Ok(DeliverySummary {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        endpoint_id: parse_id(&row.try_get::<String, _>("endpoint_id")?)?,
        event_id: parse_id(&row.try_get::<String, _>("event_id")?)?,
        event: row.try_get("event")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        occurred_at: millis(row.try_get("occurred_at")?)?,
        created_at: millis(row.try_get("created_at")?)?,
        updated_at: millis(row.try_get("updated_at")?)?,
    })
}

/// An endpoint's deliveries, newest first, at most `limit`.
pub(crate) async fn list(
    pool: &AnyPool,
    endpoint: Uuid,
    filter: &DeliveryFilter,
    limit: i64,
) -> Result<Vec<DeliverySummary>, sqlx::Error> {
    // Absent filters bind values that match everything, so the statement stays one text.
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM notifications_webhook_deliveries \
         WHERE endpoint_id = $1 AND ($2 = '' OR status = $2) AND occurred_at >= $3 \
         AND occurred_at < $4 AND ($5 = '' OR id < $5) ORDER BY id DESC LIMIT $6"
    )))
    .bind(endpoint.to_string())
    .bind(filter.status.map_or("", DeliveryStatus::as_str))
    .bind(filter.since.map_or(i64::MIN, |t| t.timestamp_millis()))
    .bind(filter.until.map_or(i64::MAX, |t| t.timestamp_millis()))
    .bind(filter.before.map(|id| id.to_string()).unwrap_or_default())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(summary).collect()
}

/// One delivery with every attempt, oldest first; `None` when the log has no such entry.
pub(crate) async fn find(
    pool: &AnyPool,
    id: Uuid,
) -> Result<Option<(DeliverySummary, Vec<LoggedAttempt>)>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM notifications_webhook_deliveries WHERE id = $1"
    )))
    .bind(id.to_string())
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let attempts = sqlx::query(
        "SELECT attempted_at, status_code, duration_ms, response, error, succeeded \
         FROM notifications_webhook_attempts WHERE delivery_id = $1 ORDER BY attempted_at, id",
    )
    .bind(id.to_string())
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| {
        Ok(LoggedAttempt {
            attempted_at: millis(row.try_get("attempted_at")?)?,
            status_code: row.try_get("status_code")?,
            duration_ms: row.try_get("duration_ms")?,
            response: row.try_get("response")?,
            error: row.try_get("error")?,
            succeeded: row.try_get::<i64, _>("succeeded")? != 0,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Some((summary(&row)?, attempts)))
}

/// Succeeded and all attempts to `endpoint` since `since`: its success rate.
pub(crate) async fn success_counts(
    pool: &AnyPool,
    endpoint: Uuid,
    since: DateTime<Utc>,
) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(succeeded), 0) AS BIGINT) AS ok, COUNT(*) AS total \
         FROM notifications_webhook_attempts WHERE endpoint_id = $1 AND attempted_at >= $2",
    )
    .bind(endpoint.to_string())
    .bind(since.timestamp_millis())
    .fetch_one(pool)
    .await?;
    Ok((row.try_get("ok")?, row.try_get("total")?))
}

/// The messages to `endpoint` that failed or were skipped since `since`, oldest first, as
/// the deliveries that re-send them (same event, so the same `webhook-id`), marked pending.
pub(crate) async fn take_for_recovery(
    conn: &mut DbConn,
    endpoint: Uuid,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<DeliverWebhook>, sqlx::Error> {
    // One statement takes them: a row whose delivery fails meanwhile is either taken here or
    // left `failed` for the next recovery, never marked pending without its job.
    let mut rows = sqlx::query(
        "UPDATE notifications_webhook_deliveries SET status = 'pending', updated_at = $1 \
         WHERE endpoint_id = $2 AND status IN ('failed', 'skipped') AND occurred_at >= $3 \
         RETURNING id, event_id, event, event_version, occurred_at, ids",
    )
    .bind(now.timestamp_millis())
    .bind(endpoint.to_string())
    .bind(since.timestamp_millis())
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|row| {
        let ids: BTreeMap<String, Uuid> = serde_json::from_str(&row.try_get::<String, _>("ids")?)
            .map_err(|e| {
            sqlx::Error::Decode(format!("stored delivery ids do not decode: {e}").into())
        })?;
        let job = DeliverWebhook {
            endpoint_id: endpoint,
            event_id: parse_id(&row.try_get::<String, _>("event_id")?)?,
            event: row.try_get("event")?,
            event_version: u32::try_from(row.try_get::<i64, _>("event_version")?).unwrap_or(1),
            occurred_at: millis(row.try_get("occurred_at")?)?,
            ids,
            recovery: Some(now.timestamp_millis()),
        };
        Ok((row.try_get::<String, _>("id")?, job))
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    // Oldest first (`RETURNING` keeps no order).
    rows.sort_by(|(a_id, a), (b_id, b)| (a.occurred_at, a_id).cmp(&(b.occurred_at, b_id)));
    let jobs = rows.into_iter().map(|(_, job)| job).collect();
    Ok(jobs)
}
