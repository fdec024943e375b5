//! The envelope every stored event travels in, and the trait that names an event type.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::context::CorrelationId;

/// A domain fact: `<aggregate>.<past tense>`, with an integer version.
///
/// Implementors carry ids and small scalars only (payload discipline): listeners fetch what
/// they need through query ports, so no snapshot of personal data lands in the outbox, a
/// dead letter or a log.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The event's name, e.g. `record.created`.
    const NAME: &'static str;
    /// The payload's schema version; a breaking change adds a version, never edits one.
    const VERSION: u32;
    /// `Some(reason)` marks the type as event-carried state transfer: it deliberately
    /// carries state (names, text, nested values) and says why. Without it, the
    /// payload-discipline lint (`cargo xtask check-contracts`) allows only ids, enums,
    /// timestamps, amounts and small scalars.
    const STATE_TRANSFER: Option<&'static str> = None;

    /// The `(name, version)` pair that identifies this payload shape.
    fn key() -> EventKey {
        EventKey {
            name: Self::NAME,
            version: Self::VERSION,
        }
    }
}

/// Identifies one payload shape: an event name at one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey {
    /// The event's name, e.g. `invoice.paid`.
    pub name: &'static str,
    /// The payload's schema version.
    pub version: u32,
}

/// A stored event: the payload plus the metadata that makes a chain traceable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// UUIDv7, so ids sort by time.
    pub id: Uuid,
    /// The event's name, e.g. `record.created`.
    pub name: String,
    /// The payload's schema version.
    pub version: u32,
    /// When the fact happened (the publishing transaction's clock reading).
    pub occurred_at: DateTime<Utc>,
    /// The chain this event belongs to, from the HTTP request or workflow that started it.
    pub correlation_id: CorrelationId,
    /// The id of the request, event or job that directly caused this event.
    pub causation_id: Option<Uuid>,
    /// The event's fields as JSON.
    pub payload: serde_json::Value,
}

impl EventEnvelope {
    /// Decodes the payload as `E`.
    ///
    /// # Errors
    /// Fails when the envelope names another event or version, or the payload does not
    /// match `E`'s shape — callers dead-letter such an event with the returned reason.
    pub fn decode<E: Event>(&self) -> Result<E, DecodeError> {
        if self.name != E::NAME || self.version != E::VERSION {
            return Err(DecodeError::WrongType {
                expected: format!("{}.v{}", E::NAME, E::VERSION),
                found: format!("{}.v{}", self.name, self.version),
            });
        }
        serde_json::from_value(self.payload.clone()).map_err(|e| DecodeError::Payload {
            event: format!("{}.v{}", self.name, self.version),
            reason: e.to_string(),
        })
    }
}

/// Why an envelope could not be decoded into a typed event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The envelope carries another event or version than the one asked for.
    #[error("expected event {expected}, found {found}")]
    WrongType {
        /// The `name.vN` asked for.
        expected: String,
        /// The `name.vN` stored.
        found: String,
    },
    /// The payload does not match the event's shape.
    #[error("payload of {event} does not decode: {reason}")]
    Payload {
        /// The `name.vN` stored.
        event: String,
        /// serde's explanation.
        reason: String,
    },
}
