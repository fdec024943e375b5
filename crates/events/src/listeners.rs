//! The listener port: how a module reacts to another module's events.
//!
//! Each listener gets its own delivery of each event it consumes (a job on the `events`
//! queue) with its own retries, so one failing listener never blocks or repeats another. The
//! handler runs inside a transaction that also records the delivery as processed, so what it
//! writes (typically: jobs it enqueues) happens exactly once.

use async_trait::async_trait;

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
}

/// Why a listener could not be registered or run.
pub type ListenerError = JobError;

/// Convenience for listeners: does the envelope carry this key?
pub fn is(event: &EventEnvelope, key: EventKey) -> bool {
    event.name == key.name && event.version == key.version
}
