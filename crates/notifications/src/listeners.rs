//! How the module reacts to events: by enqueuing deliveries, never by sending from here.
//!
//! Both listeners are [`Dispatch::Inline`]: their whole work is a read of the module's own
//! endpoints and an insert per job, so they run in the publisher's transaction and the jobs
//! exist exactly when the event does — one queue hop fewer between a request and its webhook.
//! When one fails there, the runtime queues its delivery instead (same transaction as the
//! event), which runs it again with retries; unique keys make a re-run enqueue nothing twice.

use std::sync::Arc;

use async_trait::async_trait;
use events::{
    Clock, DbConn, Dispatch, Event, EventEnvelope, EventKey, ImportCompleted, InvoiceIssued,
    InvoiceOverdue, InvoicePaid, JobError, JobQueue, Listener, NewJob, RecordCreated,
};

use crate::delivery_log::{self, DeliveryStatus};
use crate::jobs::{DeliverWebhook, SendInvoiceEmail, Subject};
use crate::store;

/// Enqueues one signed delivery per enabled endpoint subscribed to the event (by name or
/// `*`); a disabled one gets the message logged as `skipped`, for a later `recover`.
#[derive(Debug, Clone)]
pub(crate) struct DeliverWebhooks {
    jobs: Arc<dyn JobQueue>,
    clock: Arc<dyn Clock>,
}

impl DeliverWebhooks {
    pub(crate) fn new(jobs: Arc<dyn JobQueue>, clock: Arc<dyn Clock>) -> Self {
        Self { jobs, clock }
    }
}

#[async_trait]
impl Listener for DeliverWebhooks {
    fn name(&self) -> &'static str {
        "notifications.on_event_deliver_webhooks"
    }

    fn consumes(&self) -> Vec<EventKey> {
        vec![
            RecordCreated::key(),
            InvoiceIssued::key(),
            InvoicePaid::key(),
            ImportCompleted::key(),
            InvoiceOverdue::key(),
        ]
    }

    fn dispatch(&self) -> Dispatch {
        Dispatch::Inline
    }

    async fn handle(&self, tx: &mut DbConn, event: &EventEnvelope) -> Result<(), JobError> {
        self.handle_many(tx, std::slice::from_ref(event)).await
    }

    /// Reads the subscribers once per event name of the batch and enqueues every delivery
    /// in a few multi-row statements, each caused by its own event.
    async fn handle_many(&self, tx: &mut DbConn, events: &[EventEnvelope]) -> Result<(), JobError> {
        let mut subscribers: Vec<(&str, Vec<(uuid::Uuid, bool)>)> = Vec::new();
        let mut jobs = Vec::new();
        for event in events {
            let subject = Subject::decode(&event.name, event.version, &event.payload)
                .map_err(JobError::poison)?;
            let known = subscribers.iter().position(|(name, _)| *name == event.name);
            let index = match known {
                Some(index) => index,
                None => {
                    let endpoints = store::subscribed_endpoints(tx, &event.name).await?;
                    subscribers.push((&event.name, endpoints));
                    subscribers.len() - 1
                }
            };
            let ids = subject.ids();
            for &(endpoint_id, enabled) in &subscribers[index].1 {
                let job = DeliverWebhook {
                    endpoint_id,
                    event_id: event.id,
                    event: event.name.clone(),
                    event_version: event.version,
                    occurred_at: event.occurred_at,
                    ids: ids.clone(),
                    recovery: None,
                };
                if !enabled {
                    let now = self.clock.now();
                    delivery_log::upsert(tx, &job, DeliveryStatus::Skipped, false, now).await?;
                    continue;
                }
                jobs.push((new_job(&job)?, event.id));
            }
        }
        let planned = jobs.len();
        let enqueued = self.jobs.enqueue_caused_by(tx, jobs).await?;
        tracing::debug!(
            events = events.len(),
            planned,
            enqueued = enqueued.iter().flatten().count(),
            "webhook deliveries enqueued"
        );
        Ok(())
    }
}

/// Enqueues the email telling a record's owner that its invoice was issued, paid or is
/// overdue.
#[derive(Debug, Clone)]
pub(crate) struct EmailInvoiceOwner {
    jobs: Arc<dyn JobQueue>,
}

impl EmailInvoiceOwner {
    pub(crate) fn new(jobs: Arc<dyn JobQueue>) -> Self {
        Self { jobs }
    }
}

#[async_trait]
impl Listener for EmailInvoiceOwner {
    fn name(&self) -> &'static str {
        "notifications.on_invoice_event_email_owner"
    }

    fn consumes(&self) -> Vec<EventKey> {
        vec![
            InvoiceIssued::key(),
            InvoicePaid::key(),
            InvoiceOverdue::key(),
        ]
    }

    fn dispatch(&self) -> Dispatch {
        Dispatch::Inline
    }

    async fn handle(&self, tx: &mut DbConn, event: &EventEnvelope) -> Result<(), JobError> {
        let (invoice_id, record_id) =
            match Subject::decode(&event.name, event.version, &event.payload)
                .map_err(JobError::poison)?
            {
                Subject::InvoiceIssued(e) => (e.invoice_id, e.record_id),
                Subject::InvoicePaid(e) => (e.invoice_id, e.record_id),
                Subject::InvoiceOverdue(e) => (e.invoice_id, e.record_id),
                Subject::Record(_) | Subject::Import(_) => {
                    return Err(JobError::poison(format!(
                        "{} is not an invoice event",
                        event.name
                    )));
                }
            };
        let job = SendInvoiceEmail {
            event_id: event.id,
            event: event.name.clone(),
            invoice_id,
            record_id,
        };
        self.jobs.enqueue(tx, new_job(&job)?).await?;
        Ok(())
    }
}

fn new_job<J: events::Job>(job: &J) -> Result<NewJob, JobError> {
    NewJob::of(job).map_err(|e| JobError::poison(format!("{} does not serialize: {e}", J::TYPE)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {

    use chrono::DateTime;
    use events::CorrelationId;
    use events::jobs::FailureKind;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::store::tests::{add_endpoint, test_db};

    pub(crate) use events::testing::RecordingJobQueue as RecordingQueue;

    fn envelope<E: Event>(event: &E) -> EventEnvelope {
        EventEnvelope {
            id: Uuid::now_v7(),
            name: E::NAME.to_owned(),
            version: E::VERSION,
            occurred_at: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            correlation_id: CorrelationId::new(),
            causation_id: None,
            payload: serde_json::to_value(event).unwrap(),
        }
    }

    #[tokio::test]
    async fn one_delivery_is_enqueued_per_subscribed_endpoint_and_never_twice() {
        let db = test_db().await;
        let direct = add_endpoint(&db, "https://a.example/", &["record.created"], 1).await;
        let star = add_endpoint(&db, "https://b.example/", &["*"], 2).await;
        add_endpoint(&db, "https://c.example/", &["invoice.paid"], 3).await;
        let queue = Arc::new(RecordingQueue::default());
        let listener =
            DeliverWebhooks::new(queue.clone(), events::testing::FixedClock::at_millis(1_000));
        let record_id = Uuid::now_v7();
        let event = envelope(&RecordCreated { record_id });

        let mut conn = db.pool().acquire().await.unwrap();
        listener.handle(&mut conn, &event).await.unwrap();
        listener.handle(&mut conn, &event).await.unwrap();

        let jobs = queue.enqueued();
        assert_eq!(jobs.len(), 2);
        let mut targets: Vec<Uuid> = jobs
            .iter()
            .map(|j| {
                assert_eq!(j.queue, "webhooks");
                assert_eq!(j.job_type, "notifications.deliver_webhook");
                let job: DeliverWebhook = serde_json::from_value(j.payload.clone()).unwrap();
                assert_eq!(
                    j.unique_key,
                    Some(format!("{}:{}", event.id, job.endpoint_id))
                );
                assert_eq!(job.event_id, event.id);
                assert_eq!(job.event, "record.created");
                assert_eq!(job.occurred_at, event.occurred_at);
                assert_eq!(job.ids["record_id"], record_id);
                job.endpoint_id
            })
            .collect();
        targets.sort();
        let mut expected = vec![direct, star];
        expected.sort();
        assert_eq!(targets, expected);
    }

    #[tokio::test]
    async fn an_event_nobody_subscribes_to_enqueues_nothing() {
        let db = test_db().await;
        add_endpoint(&db, "https://a.example/", &["record.created"], 1).await;
        let queue = Arc::new(RecordingQueue::default());
        let listener =
            DeliverWebhooks::new(queue.clone(), events::testing::FixedClock::at_millis(1_000));
        let mut conn = db.pool().acquire().await.unwrap();
        let event = envelope(&ImportCompleted {
            import_id: Uuid::now_v7(),
        });
        listener.handle(&mut conn, &event).await.unwrap();
        assert!(queue.enqueued().is_empty());
    }

    #[tokio::test]
    async fn a_payload_that_does_not_decode_is_poison() {
        let db = test_db().await;
        let queue = Arc::new(RecordingQueue::default());
        let mut conn = db.pool().acquire().await.unwrap();
        let mut event = envelope(&RecordCreated {
            record_id: Uuid::now_v7(),
        });
        event.payload = json!({"record_id": "not-a-uuid"});
        let err =
            DeliverWebhooks::new(queue.clone(), events::testing::FixedClock::at_millis(1_000))
                .handle(&mut conn, &event)
                .await
                .unwrap_err();
        assert_eq!(err.kind, FailureKind::Poison);
        let err = EmailInvoiceOwner::new(queue)
            .handle(&mut conn, &event)
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Poison);
    }

    #[tokio::test]
    async fn invoice_events_enqueue_one_owner_email_keyed_by_event() {
        let db = test_db().await;
        let queue = Arc::new(RecordingQueue::default());
        let listener = EmailInvoiceOwner::new(queue.clone());
        let invoice_id = Uuid::now_v7();
        let record_id = Uuid::now_v7();
        let issued = envelope(&InvoiceIssued {
            invoice_id,
            record_id,
        });
        let paid = envelope(&InvoicePaid {
            invoice_id,
            record_id,
        });
        let mut conn = db.pool().acquire().await.unwrap();
        for event in [&issued, &paid, &paid] {
            listener.handle(&mut conn, event).await.unwrap();
        }

        let jobs = queue.enqueued();
        assert_eq!(jobs.len(), 2);
        for (job, event) in jobs.iter().zip([&issued, &paid]) {
            assert_eq!(job.queue, "emails");
            assert_eq!(job.job_type, "notifications.send_invoice_email");
            assert_eq!(job.unique_key, Some(event.id.to_string()));
            let payload: SendInvoiceEmail = serde_json::from_value(job.payload.clone()).unwrap();
            assert_eq!(payload.event, event.name);
            assert_eq!(payload.invoice_id, invoice_id);
            assert_eq!(payload.record_id, record_id);
        }
    }
}
