//! The transactional outbox: the event row and one delivery per subscribed listener, written
//! on the caller's connection so they commit (or roll back) with the domain's rows.
//!
//! A delivery is a job on the `events` queue, except for listeners that ask for
//! [`Dispatch::Inline`]: those run right here, on the caller's connection under a savepoint,
//! and fall back to a queued job when they fail.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::DateTime;
use events::context::CorrelationId;
use events::{
    Clock, Db, DbConn, Dispatch, EventEnvelope, EventKey, Listener, NewJob, Outbox, PublishError,
    TraceContext,
};
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

use crate::broker::BrokerConfig;
use crate::queue::SqlJobQueue;
use crate::registry::{EVENTS_QUEUE, Registry, listener_job_type};

/// Publishes into `keel_events` and fans out to listeners as jobs on the `events` queue.
#[derive(Debug)]
pub struct SqlOutbox {
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    queue: Arc<SqlJobQueue>,
    broker: Option<BrokerConfig>,
}

impl SqlOutbox {
    /// An outbox that looks subscribers up in `registry` and enqueues through `queue`.
    /// With `broker` set, events it publishes are also written for the relay.
    pub fn new(
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
        queue: Arc<SqlJobQueue>,
        broker: Option<BrokerConfig>,
    ) -> Self {
        Self {
            registry,
            clock,
            queue,
            broker,
        }
    }
}

#[async_trait]
impl Outbox for SqlOutbox {
    async fn publish_json(
        &self,
        conn: &mut DbConn,
        key: EventKey,
        payload: serde_json::Value,
    ) -> Result<EventEnvelope, PublishError> {
        let trace = TraceContext::current_or_new();
        let envelope = EventEnvelope {
            id: Uuid::now_v7(),
            name: key.name.to_owned(),
            version: key.version,
            occurred_at: self.clock.now(),
            correlation_id: trace.correlation_id.clone(),
            causation_id: trace.causation_id,
            payload,
        };
        sqlx::query(
            "INSERT INTO keel_events (id, name, version, occurred_at, correlation_id, causation_id, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(envelope.id.to_string())
        .bind(&envelope.name)
        .bind(i32::try_from(envelope.version).unwrap_or(i32::MAX))
        .bind(envelope.occurred_at.timestamp_millis())
        .bind(envelope.correlation_id.as_str())
        .bind(envelope.causation_id.map(|c| c.to_string()))
        .bind(envelope.payload.to_string())
        .execute(&mut *conn)
        .await?;
        if let Some(broker) = self.broker.as_ref().filter(|b| b.publishes(&envelope.name)) {
            let body = crate::broker::wire_body(&envelope).map_err(PublishError::Encode)?;
            // `tx` takes its default: the transaction's id on PostgreSQL, 0 on SQLite.
            sqlx::query(
                "INSERT INTO keel_relay (event_id, subject, body, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(envelope.id.to_string())
            .bind(broker.subject_for(&envelope.name))
            .bind(String::from_utf8_lossy(&body).into_owned())
            .bind(envelope.occurred_at.timestamp_millis())
            .execute(&mut *conn)
            .await?;
        }
        let delivery_trace = TraceContext {
            correlation_id: envelope.correlation_id.clone(),
            causation_id: Some(envelope.id),
        };
        for listener in self.registry.subscribers(&envelope.name) {
            if listener.dispatch() == Dispatch::Inline
                && run_inline(conn, listener.as_ref(), &envelope, &delivery_trace).await?
            {
                continue;
            }
            let job = NewJob {
                queue: EVENTS_QUEUE.to_owned(),
                job_type: listener_job_type(listener.name()),
                payload: json!({ "event_id": envelope.id }),
                unique_key: Some(envelope.id.to_string()),
                priority: 0,
                run_at: None,
                max_attempts: None,
            };
            self.queue.insert(conn, job, &delivery_trace).await?;
        }
        tracing::debug!(event = %envelope.name, event_id = %envelope.id, "event published");
        Ok(envelope)
    }
}

/// Runs an inline listener on the publisher's connection under a savepoint, with the event
/// as the cause of what it enqueues. `Ok(false)` when it did not run to the end: its writes
/// are rolled back and the caller queues the delivery instead.
///
/// # Errors
/// Only when the savepoint cannot be released or rolled back: the transaction is then unusable.
async fn run_inline(
    conn: &mut DbConn,
    listener: &dyn Listener,
    envelope: &EventEnvelope,
    trace: &TraceContext,
) -> Result<bool, PublishError> {
    let upcast = match events::catalog::registry().for_listener(envelope, &listener.consumes()) {
        Ok(upcast) => upcast,
        Err(e) => {
            tracing::warn!(listener = listener.name(), error = %e, "inline listener cannot take this event; queued instead");
            return Ok(false);
        }
    };
    // Outside a transaction (PostgreSQL refuses a savepoint there) the listener is queued.
    if sqlx::query("SAVEPOINT keel_inline_listener")
        .execute(&mut *conn)
        .await
        .is_err()
    {
        return Ok(false);
    }
    let outcome = trace
        .clone()
        .scope(listener.handle(&mut *conn, upcast.as_ref()))
        .await;
    match outcome {
        Ok(()) => {
            sqlx::query("RELEASE SAVEPOINT keel_inline_listener")
                .execute(&mut *conn)
                .await?;
            Ok(true)
        }
        Err(e) => {
            tracing::warn!(
                listener = listener.name(),
                event_id = %envelope.id,
                error = %e,
                "inline listener failed; its delivery is queued instead"
            );
            for statement in [
                "ROLLBACK TO SAVEPOINT keel_inline_listener",
                "RELEASE SAVEPOINT keel_inline_listener",
            ] {
                sqlx::query(statement).execute(&mut *conn).await?;
            }
            Ok(false)
        }
    }
}

/// Reads one stored event: `None` when it does not exist, `Some(Err(reason))` when its row
/// no longer decodes.
///
/// # Errors
/// Fails when the database cannot answer.
pub async fn load_event(
    db: &Db,
    id: &str,
) -> Result<Option<Result<EventEnvelope, String>>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, name, version, occurred_at, correlation_id, causation_id, payload \
         FROM keel_events WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(|row| decode_event(&row)))
}

/// Turns a `keel_events` row into an envelope, or says why it cannot.
pub fn decode_event(row: &sqlx::any::AnyRow) -> Result<EventEnvelope, String> {
    let text = |col: &str| row.try_get::<String, _>(col).map_err(|e| e.to_string());
    let id = Uuid::parse_str(&text("id")?).map_err(|e| format!("id: {e}"))?;
    let version: i32 = row.try_get("version").map_err(|e| e.to_string())?;
    let occurred_ms: i64 = row.try_get("occurred_at").map_err(|e| e.to_string())?;
    let causation: Option<String> = row.try_get("causation_id").map_err(|e| e.to_string())?;
    let correlation = text("correlation_id")?;
    Ok(EventEnvelope {
        id,
        name: text("name")?,
        version: u32::try_from(version).map_err(|e| format!("version: {e}"))?,
        occurred_at: DateTime::from_timestamp_millis(occurred_ms)
            .ok_or_else(|| format!("occurred_at {occurred_ms} out of range"))?,
        correlation_id: CorrelationId::parse(&correlation)
            .ok_or_else(|| "correlation_id is not valid".to_owned())?,
        causation_id: causation
            .map(|c| Uuid::parse_str(&c).map_err(|e| format!("causation_id: {e}")))
            .transpose()?,
        payload: serde_json::from_str(&text("payload")?).map_err(|e| format!("payload: {e}"))?,
    })
}
