//! The publishing port: events are written inside the caller's own transaction.
//!
//! The domain row, the event row and one pending delivery per subscribed listener commit
//! together or not at all — a rollback publishes nothing and a crash after commit loses
//! nothing.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::context::TraceContext;
use crate::db::DbConn;
use crate::envelope::{Event, EventEnvelope, EventKey};

/// Writes events into the transactional outbox.
#[async_trait]
pub trait Outbox: Send + Sync + Debug {
    /// Stores one event (and its listener deliveries) on `conn`, which should be inside the
    /// caller's transaction. Correlation and causation come from the current
    /// [`TraceContext`].
    ///
    /// # Errors
    /// [`PublishError::Database`] when the insert fails — the caller's transaction must then
    /// roll back; [`PublishError::Encode`] when the payload does not serialize.
    async fn publish_json(
        &self,
        conn: &mut DbConn,
        key: EventKey,
        payload: serde_json::Value,
    ) -> Result<EventEnvelope, PublishError>;

    /// Stores several events on `conn`, in order, as [`Outbox::publish_json`] would one by
    /// one — an implementation may write them, and their deliveries, in a few multi-row
    /// statements (a batch of an import publishes hundreds). All share the current
    /// [`TraceContext`].
    ///
    /// # Errors
    /// As [`Outbox::publish_json`]; nothing of the batch may be kept after an error.
    async fn publish_json_many(
        &self,
        conn: &mut DbConn,
        events: Vec<(EventKey, serde_json::Value)>,
    ) -> Result<Vec<EventEnvelope>, PublishError> {
        let mut published = Vec::with_capacity(events.len());
        for (key, payload) in events {
            published.push(self.publish_json(conn, key, payload).await?);
        }
        Ok(published)
    }
}

/// Typed publishing on top of [`Outbox`].
#[async_trait]
pub trait OutboxExt: Outbox {
    /// Publishes a typed event inside the caller's transaction.
    ///
    /// # Errors
    /// As [`Outbox::publish_json`].
    async fn publish<E: Event>(
        &self,
        conn: &mut DbConn,
        event: &E,
    ) -> Result<EventEnvelope, PublishError> {
        let payload = serde_json::to_value(event).map_err(PublishError::Encode)?;
        self.publish_json(conn, E::key(), payload).await
    }

    /// Publishes typed events of one kind inside the caller's transaction, as a batch.
    ///
    /// # Errors
    /// As [`Outbox::publish_json_many`].
    async fn publish_many<E: Event>(
        &self,
        conn: &mut DbConn,
        events: &[E],
    ) -> Result<Vec<EventEnvelope>, PublishError> {
        let batch = events
            .iter()
            .map(|event| Ok((E::key(), serde_json::to_value(event)?)))
            .collect::<Result<Vec<_>, serde_json::Error>>()
            .map_err(PublishError::Encode)?;
        self.publish_json_many(conn, batch).await
    }
}

impl<T: Outbox + ?Sized> OutboxExt for T {}

/// Why an event could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The payload did not serialize.
    #[error("event payload does not serialize: {0}")]
    Encode(#[source] serde_json::Error),
    /// Writing to the outbox failed; roll back.
    #[error("writing to the outbox failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// Useful in tests and tools: the trace context a publish at this point would record.
pub fn publishing_context() -> TraceContext {
    TraceContext::current_or_new()
}
