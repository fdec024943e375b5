//! Durable JetStream consumers, one per local listener (named after it), that turn each
//! message into the listener delivery a local publish would have created.
//!
//! For each message the consumer stores the event in `keel_events` (when it is not there
//! yet), records where it came from in `keel_broker_received`, and enqueues the listener's
//! delivery job (`listener:<name>`, unique per event) — all in one transaction — and only
//! then acknowledges the message. A redelivery (the process died between commit and ack)
//! finds the unique job already there and changes nothing. From there on the delivery is an
//! ordinary job: the listener runs in its transaction with the inbox row, upcasting applies,
//! failures follow the `events` queue's retry policy and end as a Keel dead letter, replayable
//! like any other — the broker never redelivers in a loop.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use events::{EventEnvelope, Listener, NewJob, TraceContext};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::watch;
use tracing::Instrument;

use super::{BrokerConfig, BrokerError};
use crate::db_time::DbTime;
use crate::queue::SqlJobQueue;
use crate::registry::{EVENTS_QUEUE, Registry, listener_job_type};

/// What the consumers need.
#[derive(Debug, Clone)]
pub struct Consumers {
    /// The database.
    pub db: events::Db,
    /// The database's clock.
    pub time: DbTime,
    /// `[broker]`.
    pub config: BrokerConfig,
    /// The local listeners.
    pub registry: Arc<Registry>,
    /// Where deliveries are enqueued.
    pub queue: Arc<SqlJobQueue>,
}

impl Consumers {
    /// One task per local listener, each consuming until `shutdown`.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
        self.registry
            .listeners()
            .into_iter()
            .map(|listener| {
                let this = self.clone();
                let stop = shutdown.clone();
                tokio::spawn(async move { this.run(listener, stop).await })
            })
            .collect()
    }

    async fn run(self, listener: Arc<dyn Listener>, mut shutdown: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let outcome = tokio::select! {
                r = self.consume(listener.as_ref()) => r,
                _ = shutdown.changed() => return,
            };
            if let Err(e) = outcome {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!(listener = listener.name(), error = %e, "broker consumer: retrying");
                }
            }
            let pause = Duration::from_millis(200 * u64::from(failures.clamp(1, 10)));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Binds the listener's durable consumer and handles messages until the stream ends.
    async fn consume(&self, listener: &dyn Listener) -> Result<(), BrokerError> {
        let js = super::connect(&self.config).await?;
        let stream = super::ensure_stream(&js, &self.config).await?;
        let name = super::consumer_name(listener.name());
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: format!("{}.>", self.config.subject_prefix),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: 1024,
                    ..Default::default()
                },
            )
            .await
            .map_err(super::nats_error)?;
        let mut messages = consumer.messages().await.map_err(super::nats_error)?;
        tracing::info!(listener = listener.name(), consumer = %name, "broker consumer: bound");
        let consumes: Vec<String> = listener
            .consumes()
            .into_iter()
            .map(|k| k.name.to_owned())
            .collect();
        while let Some(message) = messages.next().await {
            let message = message.map_err(super::nats_error)?;
            self.handle(listener, &consumes, &message).await?;
        }
        Ok(())
    }

    /// Turns one message into the listener's delivery job, then acknowledges it.
    async fn handle(
        &self,
        listener: &dyn Listener,
        consumes: &[String],
        message: &jetstream::Message,
    ) -> Result<(), BrokerError> {
        let (stream, sequence) = match message.info() {
            Ok(info) => (info.stream.to_owned(), info.stream_sequence),
            Err(e) => return Err(BrokerError::Nats(format!("message info: {e}"))),
        };
        let envelope: EventEnvelope = match serde_json::from_slice(&message.payload) {
            Ok(e) => e,
            Err(e) => {
                // Not an envelope: nothing a retry could fix. Terminated, never redelivered,
                // and said loudly (the subject and sequence find it on the broker).
                tracing::error!(listener = listener.name(), %stream, sequence, error = %e,
                    "broker consumer: message is not an event envelope; terminated");
                metrics::counter!("keel_broker_undecodable_total").increment(1);
                return message
                    .ack_with(AckKind::Term)
                    .await
                    .map_err(super::nats_error);
            }
        };
        if consumes.iter().any(|c| c == &envelope.name) {
            // The delivery job continues the publisher's trace (its stored traceparent is
            // this span's), when traces are exported.
            let span = if events::propagation::enabled() {
                let span = tracing::info_span!(
                    "consume",
                    otel.name = %format!("consume {}", envelope.name),
                    otel.kind = "consumer",
                    listener = listener.name(),
                    correlation_id = %envelope.correlation_id,
                );
                let traceparent = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("traceparent"))
                    .map(|v| v.as_str().to_owned());
                events::propagation::continue_trace(&span, traceparent.as_deref());
                span
            } else {
                tracing::Span::none()
            };
            let enqueue = self.enqueue(listener, &envelope, &stream, sequence);
            self.queue.after_commit(enqueue).instrument(span).await?;
        }
        message.ack().await.map_err(super::nats_error)
    }

    /// In one transaction: the event, where it came from, and the delivery job.
    async fn enqueue(
        &self,
        listener: &dyn Listener,
        envelope: &EventEnvelope,
        stream: &str,
        sequence: u64,
    ) -> Result<(), BrokerError> {
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO keel_events (id, name, version, occurred_at, correlation_id, causation_id, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(envelope.id.to_string())
        .bind(&envelope.name)
        .bind(i32::try_from(envelope.version).unwrap_or(i32::MAX))
        .bind(envelope.occurred_at.timestamp_millis())
        .bind(envelope.correlation_id.as_str())
        .bind(envelope.causation_id.map(|c| c.to_string()))
        .bind(envelope.payload.to_string())
        .execute(&mut *tx)
        .await?;
        let sql = self.time.sql(
            "INSERT INTO keel_broker_received (listener, event_id, stream, stream_seq, received_at) \
             VALUES ($2, $3, $4, $5, NOW_MS) ON CONFLICT (listener, event_id) DO NOTHING",
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(self.time.fixed())
            .bind(listener.name())
            .bind(envelope.id.to_string())
            .bind(stream)
            .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        let trace = TraceContext {
            correlation_id: envelope.correlation_id.clone(),
            causation_id: Some(envelope.id),
        };
        let job = NewJob {
            queue: EVENTS_QUEUE.to_owned(),
            job_type: listener_job_type(listener.name()),
            payload: json!({ "event_id": envelope.id }),
            unique_key: Some(envelope.id.to_string()),
            priority: 0,
            run_at: None,
            max_attempts: None,
        };
        self.queue.insert(&mut tx, job, &trace).await?;
        tx.commit().await?;
        Ok(())
    }
}
