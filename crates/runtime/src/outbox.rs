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
use tracing::Instrument;
use uuid::Uuid;

use crate::broker::BrokerConfig;
use crate::db_time::DbTime;
use crate::placeholders::value_rows;
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

/// Event rows per multi-row `INSERT`: as the job queue's
/// [`ROWS_PER_INSERT`](crate::queue::ROWS_PER_INSERT), since SQLite binds by name and big
/// statements cost more to prepare than they save.
const EVENTS_PER_INSERT: usize = 50;

#[async_trait]
impl Outbox for SqlOutbox {
    async fn publish_json(
        &self,
        conn: &mut DbConn,
        key: EventKey,
        payload: serde_json::Value,
    ) -> Result<EventEnvelope, PublishError> {
        let mut published = self.publish_json_many(conn, vec![(key, payload)]).await?;
        published
            .pop()
            .ok_or_else(|| PublishError::Database(sqlx::Error::RowNotFound))
    }

    /// The events in multi-row `INSERT`s; then each subscribed listener once for the whole
    /// batch — inline ones under one savepoint with [`Listener::handle_many`], queued ones
    /// as one multi-row insert of their deliveries.
    async fn publish_json_many(
        &self,
        conn: &mut DbConn,
        events: Vec<(EventKey, serde_json::Value)>,
    ) -> Result<Vec<EventEnvelope>, PublishError> {
        let trace = TraceContext::current_or_new();
        // The span the events' queued deliveries continue (their stored traceparent); only
        // when traces are exported.
        let span = match events.first() {
            Some((key, _)) if events::propagation::enabled() => tracing::info_span!(
                "publish",
                otel.name = %format!("publish {}", key.name),
                event = key.name,
                events = events.len(),
                correlation_id = %trace.correlation_id,
            ),
            _ => tracing::Span::none(),
        };
        self.publish_batch(conn, events, trace)
            .instrument(span)
            .await
    }
}

impl SqlOutbox {
    /// [`Outbox::publish_json_many`] inside its span.
    async fn publish_batch(
        &self,
        conn: &mut DbConn,
        events: Vec<(EventKey, serde_json::Value)>,
        trace: TraceContext,
    ) -> Result<Vec<EventEnvelope>, PublishError> {
        let occurred_at = self.clock.now();
        let envelopes: Vec<EventEnvelope> = events
            .into_iter()
            .map(|(key, payload)| EventEnvelope {
                id: Uuid::now_v7(),
                name: key.name.to_owned(),
                version: key.version,
                occurred_at,
                correlation_id: trace.correlation_id.clone(),
                causation_id: trace.causation_id,
                payload,
            })
            .collect();
        for chunk in envelopes.chunks(EVENTS_PER_INSERT) {
            insert_events(conn, chunk).await?;
        }
        if let Some(broker) = &self.broker {
            let relayed: Vec<&EventEnvelope> = envelopes
                .iter()
                .filter(|e| broker.publishes(&e.name))
                .collect();
            for chunk in relayed.chunks(EVENTS_PER_INSERT) {
                insert_relayed(conn, self.queue.time(), broker, chunk).await?;
            }
        }
        let mut queued = Vec::new();
        for (listener, batch) in self.subscribers_of(&envelopes) {
            if listener.dispatch() == Dispatch::Inline {
                let left = run_inline(conn, listener.as_ref(), &batch, &trace).await?;
                queued.extend(left.into_iter().map(|e| delivery(listener.as_ref(), e)));
            } else {
                queued.extend(batch.into_iter().map(|e| delivery(listener.as_ref(), e)));
            }
        }
        if !queued.is_empty() {
            self.queue
                .insert_caused(conn, queued, &trace.correlation_id)
                .await?;
        }
        for envelope in &envelopes {
            tracing::debug!(event = %envelope.name, event_id = %envelope.id, "event published");
        }
        Ok(envelopes)
    }
}

impl SqlOutbox {
    /// Each listener subscribed to any of `envelopes`, with the ones it takes, in order.
    fn subscribers_of<'e>(
        &self,
        envelopes: &'e [EventEnvelope],
    ) -> Vec<(Arc<dyn Listener>, Vec<&'e EventEnvelope>)> {
        let mut by_listener: Vec<(Arc<dyn Listener>, Vec<&EventEnvelope>)> = Vec::new();
        for envelope in envelopes {
            for listener in self.registry.subscribers(&envelope.name) {
                match by_listener
                    .iter_mut()
                    .find(|(l, _)| l.name() == listener.name())
                {
                    Some((_, batch)) => batch.push(envelope),
                    None => by_listener.push((listener, vec![envelope])),
                }
            }
        }
        by_listener
    }
}

/// The events' rows, in one statement.
async fn insert_events(conn: &mut DbConn, envelopes: &[EventEnvelope]) -> Result<(), sqlx::Error> {
    const COLUMNS: usize = 7;
    let sql = format!(
        "INSERT INTO keel_events (id, name, version, occurred_at, correlation_id, causation_id, payload) \
         VALUES {}",
        value_rows(1, envelopes.len(), COLUMNS)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for envelope in envelopes {
        query = query
            .bind(envelope.id.to_string())
            .bind(envelope.name.clone())
            .bind(i32::try_from(envelope.version).unwrap_or(i32::MAX))
            .bind(envelope.occurred_at.timestamp_millis())
            .bind(envelope.correlation_id.as_str().to_owned())
            .bind(envelope.causation_id.map(|c| c.to_string()))
            .bind(envelope.payload.to_string());
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// The relay's rows for `envelopes` (those the broker publishes), in one statement. `tx`
/// takes its default: the writing transaction's id on PostgreSQL, 0 on SQLite; `position`
/// numbers them in the order given. `created_at` is the database's now, since the relay's
/// lag and its `broker_stuck` alert are judged on the database's clock.
async fn insert_relayed(
    conn: &mut DbConn,
    time: &DbTime,
    broker: &BrokerConfig,
    envelopes: &[&EventEnvelope],
) -> Result<(), PublishError> {
    let rows = (0..envelopes.len())
        .map(|row| {
            let p = |c: usize| 2 + row * 4 + c;
            let now = crate::db_time::NOW;
            format!("(${}, ${}, ${}, ${}, {now})", p(0), p(1), p(2), p(3))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = time.sql(&format!(
        "INSERT INTO keel_relay (event_id, subject, body, traceparent, created_at) VALUES {rows}"
    ));
    // The publish span (when traces are exported), which the consumer's spans continue.
    let traceparent = events::propagation::current_traceparent();
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(time.fixed());
    for envelope in envelopes {
        let body = crate::broker::wire_body(envelope).map_err(PublishError::Encode)?;
        query = query
            .bind(envelope.id.to_string())
            .bind(broker.subject_for(&envelope.name))
            .bind(String::from_utf8_lossy(&body).into_owned())
            .bind(traceparent.clone());
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// `listener`'s queued delivery of `envelope`: a job on the `events` queue, caused by it.
fn delivery(listener: &dyn Listener, envelope: &EventEnvelope) -> (NewJob, Option<Uuid>) {
    let job = NewJob {
        queue: EVENTS_QUEUE.to_owned(),
        job_type: listener_job_type(listener.name()),
        payload: json!({ "event_id": envelope.id }),
        unique_key: Some(envelope.id.to_string()),
        priority: 0,
        run_at: None,
        max_attempts: None,
    };
    (job, Some(envelope.id))
}

/// Runs an inline listener on the publisher's connection under a savepoint, for all of
/// `batch` at once, each event the cause of what it enqueues. Answers the events it did not
/// take to the end — none, those it cannot take at its version, or (when it failed, its
/// writes rolled back) all of them — for the caller to queue instead.
///
/// # Errors
/// Only when the savepoint cannot be released or rolled back: the transaction is then unusable.
async fn run_inline<'e>(
    conn: &mut DbConn,
    listener: &dyn Listener,
    batch: &[&'e EventEnvelope],
    trace: &TraceContext,
) -> Result<Vec<&'e EventEnvelope>, PublishError> {
    let mut left = Vec::new();
    let mut upcast = Vec::with_capacity(batch.len());
    let consumes = listener.consumes();
    for &envelope in batch {
        match events::catalog::registry().for_listener(envelope, &consumes) {
            Ok(event) => upcast.push(event.into_owned()),
            Err(e) => {
                tracing::warn!(listener = listener.name(), event_id = %envelope.id, error = %e, "inline listener cannot take this event; queued instead");
                left.push(envelope);
            }
        }
    }
    if upcast.is_empty() {
        return Ok(left);
    }
    // Outside a transaction (PostgreSQL refuses a savepoint there) the listener is queued.
    if sqlx::query("SAVEPOINT keel_inline_listener")
        .execute(&mut *conn)
        .await
        .is_err()
    {
        return Ok(batch.to_vec());
    }
    let span = if events::propagation::enabled() {
        tracing::info_span!(
            "listener",
            otel.name = %listener.name(),
            events = upcast.len(),
            correlation_id = %trace.correlation_id,
        )
    } else {
        tracing::Span::none()
    };
    let outcome = if let [only] = upcast.as_slice() {
        // One event: under its own trace context, as a queued delivery would run it.
        let single = TraceContext {
            correlation_id: trace.correlation_id.clone(),
            causation_id: Some(only.id),
        };
        single
            .scope(listener.handle(&mut *conn, only))
            .instrument(span)
            .await
    } else {
        let batch_trace = trace.clone();
        batch_trace
            .scope(listener.handle_many(&mut *conn, &upcast))
            .instrument(span)
            .await
    };
    match outcome {
        Ok(()) => {
            // On PostgreSQL the savepoint is left for the commit to fold in: releasing it
            // would be one more round trip on every write, and changes nothing at commit.
            // On SQLite (no round trip) it is released, since a savepoint taken outside a
            // transaction there *is* the transaction and must not be left open.
            if conn.backend_name() != "PostgreSQL" {
                sqlx::query("RELEASE SAVEPOINT keel_inline_listener")
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(left)
        }
        Err(e) => {
            tracing::warn!(
                listener = listener.name(),
                events = upcast.len(),
                error = %e,
                "inline listener failed; its deliveries are queued instead"
            );
            for statement in [
                "ROLLBACK TO SAVEPOINT keel_inline_listener",
                "RELEASE SAVEPOINT keel_inline_listener",
            ] {
                sqlx::query(statement).execute(&mut *conn).await?;
            }
            Ok(batch.to_vec())
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
