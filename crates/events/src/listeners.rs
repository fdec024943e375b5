//! The listener port: how a module reacts to another module's events.
//!
//! Each listener gets its own delivery of each event it consumes (a job on the `events`
//! queue) with its own retries, so one failing listener never blocks or repeats another. The
//! handler runs inside a transaction that also records the delivery as processed, so what it
//! writes (typically: jobs it enqueues) happens exactly once.
//!
//! A listener whose whole work is a few writes of its own module's rows — typically a fan-out
//! that enqueues one job per subscriber — may ask to run [`Dispatch::Inline`]: inside the
//! publisher's transaction, under a savepoint. That saves a queue hop (a claim, a load of the
//! event and a completion per event and listener) without coupling the publisher to it: when
//! the inline run fails, the savepoint is rolled back and the delivery falls back to a queued
//! job with the usual retries and dead letters.

use async_trait::async_trait;

use crate::context::TraceContext;
use crate::db::DbConn;
use crate::envelope::{EventEnvelope, EventKey};
use crate::jobs::JobError;

/// Reacts to events. Names say what it reacts to and why: `on_invoice_paid_send_receipt`.
#[async_trait]
pub trait Listener: Send + Sync {
    /// Stable, unique name: `<module>.<what it does>`. Stored with each delivery.
    fn name(&self) -> &'static str;

    /// The events and versions it consumes. Older stored versions are upcast to these.
    fn consumes(&self) -> Vec<EventKey>;

    /// Handles one event inside `tx`, which commits together with the delivery's completion.
    ///
    /// # Errors
    /// A [`JobError`]: retried on the `events` queue's schedule, or dead-lettered.
    async fn handle(&self, tx: &mut DbConn, event: &EventEnvelope) -> Result<(), JobError>;

    /// Handles several events at once inside `tx` — what an inline listener is given when
    /// the publisher writes a batch (an import's 500 records): a fan-out can then read its
    /// subscribers once and enqueue every job in a few multi-row statements instead of a few
    /// round trips per event. Each job it enqueues must name its own event as cause
    /// ([`JobQueue::enqueue_caused_by`](crate::JobQueue::enqueue_caused_by)). The default
    /// handles them one by one, each under its event's trace context; `Err` leaves the whole
    /// batch to the caller (an inline batch then falls back to queued deliveries).
    ///
    /// # Errors
    /// As [`Listener::handle`].
    async fn handle_many(&self, tx: &mut DbConn, events: &[EventEnvelope]) -> Result<(), JobError> {
        for event in events {
            let trace = TraceContext {
                correlation_id: event.correlation_id.clone(),
                causation_id: Some(event.id),
            };
            trace.scope(self.handle(&mut *tx, event)).await?;
        }
        Ok(())
    }

    /// Where its deliveries run; [`Dispatch::Queued`] unless the listener says otherwise.
    fn dispatch(&self) -> Dispatch {
        Dispatch::Queued
    }

    /// A start point in the past, for a listener added after the events it needs: at
    /// start-up the runtime feeds it, once across all replicas and at a capped rate, every
    /// stored event it consumes that occurred since then, while new events keep flowing.
    /// Events it already processed are skipped (the inbox). `None` (the default): only
    /// events published from now on. `[listeners.<name>] backfill_from` overrides it.
    fn backfill_from(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        None
    }
}

/// Where a listener's deliveries of an event run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dispatch {
    /// As its own job on the `events` queue, with its own attempts, retries and dead letters.
    #[default]
    Queued,
    /// Inside the publisher's transaction, under a savepoint, for listeners that only write
    /// their module's own rows or enqueue jobs — never a call outside the database, and
    /// nothing slow. A failure rolls back to the savepoint and falls back to [`Dispatch::Queued`],
    /// so the publisher never fails because of the listener.
    Inline,
}

/// Why a listener could not be registered or run.
pub type ListenerError = JobError;

/// Convenience for listeners: does the envelope carry this key?
pub fn is(event: &EventEnvelope, key: EventKey) -> bool {
    event.name == key.name && event.version == key.version
}
