//! Events on NATS JetStream: the outbox relay that publishes committed events to a stream,
//! and the durable consumers that hand events published elsewhere to local listeners.
//!
//! The database stays the source of truth. A publishing transaction writes, besides the
//! event, one row in `keel_relay` (see [`crate::outbox`]); the [`relay`] publishes those rows
//! in commit order and marks each published only after JetStream acknowledged it. A
//! [`consume`]r turns each message into the same durable listener delivery (a job on the
//! `events` queue) that a local publish creates, and acknowledges the message only once that
//! job is committed — so retries, dead letters, replay and upcasting work as for local events.

pub mod consume;
pub mod relay;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use async_nats::jetstream;
use events::EventEnvelope;

/// `[broker]` as the runtime uses it.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `nats://host:port` (a comma-separated list names a cluster's seeds).
    pub url: String,
    /// The stream events go to; created at start-up when missing.
    pub stream: String,
    /// An event goes out on `<subject_prefix>.<name>`.
    pub subject_prefix: String,
    /// Event names this deployment publishes to the broker; `*` means all.
    pub publish: Vec<String>,
    /// Whether local listeners take events published elsewhere from the broker.
    pub consume: bool,
    /// The stream's limits.
    pub limits: StreamLimits,
    /// The oldest unpublished event older than this raises a `broker_stuck` alert.
    pub stuck_after: Duration,
}

/// The limits a stream is created with (`[broker] max_age`, `max_bytes`, …).
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// Messages older than this are discarded by the broker.
    pub max_age: Duration,
    /// Total size at which the oldest messages are discarded (`-1`: unlimited).
    pub max_bytes: i64,
    /// How long the broker remembers a `Nats-Msg-Id` to drop a re-publish.
    pub duplicate_window: Duration,
    /// Copies of the stream in a cluster (1 on a single server).
    pub replicas: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: -1,
            duplicate_window: Duration::from_secs(2 * 3600),
            replicas: 1,
        }
    }
}

impl BrokerConfig {
    /// The subject an event goes out on.
    pub fn subject_for(&self, event_name: &str) -> String {
        format!("{}.{event_name}", self.subject_prefix)
    }

    /// Whether this deployment publishes `event_name` to the broker.
    pub fn publishes(&self, event_name: &str) -> bool {
        self.publish.iter().any(|p| p == "*" || p == event_name)
    }
}

/// Why the broker could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The server could not be reached or refused us.
    #[error("broker: {0}")]
    Nats(String),
    /// The database could not answer.
    #[error("broker relay: database: {0}")]
    Database(#[from] sqlx::Error),
    /// The stream exists but does not take our subjects.
    #[error(
        "broker: stream `{stream}` does not take subject `{subject}` (its subjects: {subjects})"
    )]
    StreamMismatch {
        /// The stream.
        stream: String,
        /// The subject we publish on.
        subject: String,
        /// What it takes.
        subjects: String,
    },
}

fn nats_error(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Nats(e.to_string())
}

/// Connects in the background (a broker that is down at start-up is retried, never fatal).
///
/// # Errors
/// Only for a malformed URL.
pub async fn connect(config: &BrokerConfig) -> Result<jetstream::Context, BrokerError> {
    let client = async_nats::ConnectOptions::new()
        .name("keel")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(3))
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(config.url.as_str())
        .await
        .map_err(nats_error)?;
    Ok(jetstream::new(client))
}

/// Creates the stream when missing, or checks that it takes our subjects.
///
/// # Errors
/// When the broker cannot answer, or the stream takes other subjects.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &BrokerConfig,
) -> Result<jetstream::stream::Stream, BrokerError> {
    let wildcard = format!("{}.>", config.subject_prefix);
    let stream_config = jetstream::stream::Config {
        name: config.stream.clone(),
        subjects: vec![wildcard.clone()],
        max_age: config.limits.max_age,
        max_bytes: config.limits.max_bytes,
        duplicate_window: config.limits.duplicate_window,
        num_replicas: config.limits.replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let mut stream = js
        .get_or_create_stream(stream_config)
        .await
        .map_err(nats_error)?;
    let info = stream.info().await.map_err(nats_error)?;
    let subjects = &info.config.subjects;
    if !subjects
        .iter()
        .any(|s| s == &wildcard || s == ">" || subject_covers(s, &wildcard))
    {
        return Err(BrokerError::StreamMismatch {
            stream: config.stream.clone(),
            subject: wildcard,
            subjects: subjects.join(", "),
        });
    }
    Ok(stream)
}

/// Whether a stream subject filter such as `keel.>` covers `keel.events.>`.
fn subject_covers(filter: &str, subject: &str) -> bool {
    filter
        .strip_suffix('>')
        .is_some_and(|prefix| subject.starts_with(prefix))
}

/// The envelope as it goes on the wire: `{"id", "name", "version", "occurred_at",
/// "correlation_id", "causation_id", "payload"}`.
pub fn wire_body(envelope: &EventEnvelope) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(envelope)
}

/// `00-<trace id>-<span id>-01` for a correlation id: its UUID when it is one, else a hash,
/// so the receiving side's `traceparent` joins the same trace.
pub fn traceparent(correlation_id: &str, event_id: uuid::Uuid) -> String {
    let trace_id: [u8; 16] = match uuid::Uuid::parse_str(correlation_id) {
        Ok(uuid) if !uuid.is_nil() => *uuid.as_bytes(),
        _ => {
            let mut id = [0u8; 16];
            for (half, seed) in [(0usize, 0u8), (8, 1)] {
                let mut h = DefaultHasher::new();
                (seed, correlation_id).hash(&mut h);
                id[half..half + 8].copy_from_slice(&h.finish().to_be_bytes());
            }
            id
        }
    };
    let span = u64::from_be_bytes(
        event_id.as_bytes()[8..16]
            .try_into()
            .unwrap_or([0, 0, 0, 0, 0, 0, 0, 1]),
    )
    .max(1);
    let hex: String = trace_id.iter().map(|b| format!("{b:02x}")).collect();
    format!("00-{hex}-{span:016x}-01")
}

/// A consumer's name for a listener: NATS names allow no `.`, `*`, `>` or spaces.
pub fn consumer_name(listener: &str) -> String {
    listener
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_are_named_after_their_listener() {
        assert_eq!(
            consumer_name("notifications.on_event_deliver_webhooks"),
            "notifications_on_event_deliver_webhooks"
        );
    }

    #[test]
    fn traceparent_reuses_a_uuid_correlation_id() {
        let corr = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        let tp = traceparent(corr, uuid::Uuid::now_v7());
        assert!(
            tp.starts_with("00-0193a1b2c3d47e5f8a9b0c1d2e3f4a5b-"),
            "{tp}"
        );
        assert_eq!(tp.len(), 55);
    }

    #[test]
    fn a_wildcard_stream_covers_our_subjects() {
        assert!(subject_covers("keel.>", "keel.events.>"));
        assert!(!subject_covers("other.>", "keel.events.>"));
    }
}
