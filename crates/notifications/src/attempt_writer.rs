//! Delivery attempts logged by group commit: the attempts of deliveries that finish at about
//! the same time go into the delivery log in one transaction.
//!
//! Each delivery used to log its attempt in a transaction of its own — on SQLite one more
//! turn of the single writer per delivery, on PostgreSQL four round trips — which held
//! deliveries well below the rate the queue drains at. A delivery still waits until its
//! attempt is committed before it reports its outcome, so the log never trails the job;
//! while one batch commits, the next one gathers.

use std::sync::{Arc, OnceLock};

use events::Db;
use tokio::sync::{mpsc, oneshot};

use crate::delivery_log::{self, AttemptRecord, DeliveryStatus};
use crate::jobs::DeliverWebhook;

/// Attempts per transaction, at most.
const MAX_BATCH: usize = 64;

/// Attempts waiting for the writer, at most; a delivery that finds it full waits.
const QUEUE: usize = 1024;

/// Hands attempts to the one task that writes them, and waits for their commit.
#[derive(Debug, Clone)]
pub(crate) struct AttemptWriter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    /// Started on first use, on the runtime that delivers.
    sender: OnceLock<mpsc::Sender<Entry>>,
}

/// One attempt to log, and who waits for it.
struct Entry {
    job: DeliverWebhook,
    status: DeliveryStatus,
    attempt: AttemptRecord,
    done: oneshot::Sender<Result<(), String>>,
}

impl AttemptWriter {
    /// A writer into `db`'s delivery log.
    pub(crate) fn new(db: Db) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                sender: OnceLock::new(),
            }),
        }
    }

    /// Logs one attempt and where its message now stands; returns once it is committed.
    ///
    /// # Errors
    /// Why it could not be written (the database's error, or the writer has stopped).
    pub(crate) async fn record(
        &self,
        job: &DeliverWebhook,
        status: DeliveryStatus,
        attempt: &AttemptRecord,
    ) -> Result<(), String> {
        let sender = self.inner.sender.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            tokio::spawn(write_batches(self.inner.db.clone(), receiver));
            sender
        });
        let (done, committed) = oneshot::channel();
        let entry = Entry {
            job: job.clone(),
            status,
            attempt: attempt.clone(),
            done,
        };
        sender
            .send(entry)
            .await
            .map_err(|_| "the delivery log's writer has stopped".to_owned())?;
        committed
            .await
            .map_err(|_| "the delivery log's writer has stopped".to_owned())?
    }
}

/// Writes what arrives, as many attempts per transaction as have gathered; ends when every
/// [`AttemptWriter`] is gone.
async fn write_batches(db: Db, mut entries: mpsc::Receiver<Entry>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while entries.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcome = write(&db, &batch).await;
        if outcome.is_err() && batch.len() > 1 {
            // One attempt the database refuses must not take the others with it.
            for entry in batch.drain(..) {
                let alone = write(&db, std::slice::from_ref(&entry)).await;
                let _ = entry.done.send(alone.map_err(|e| e.to_string()));
            }
        } else {
            let outcome = outcome.map_err(|e| e.to_string());
            for entry in batch.drain(..) {
                let _ = entry.done.send(outcome.clone());
            }
        }
    }
}

/// `entries` in one transaction.
async fn write(db: &Db, entries: &[Entry]) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    for entry in entries {
        delivery_log::write_attempt(&mut tx, &entry.job, entry.status, &entry.attempt).await?;
    }
    tx.commit().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::DateTime;
    use uuid::Uuid;

    use super::*;
    use crate::store::tests::{add_endpoint, test_db};

    fn delivery(endpoint_id: Uuid) -> DeliverWebhook {
        DeliverWebhook {
            endpoint_id,
            event_id: Uuid::now_v7(),
            event: "record.created".to_owned(),
            event_version: 1,
            occurred_at: DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
            ids: BTreeMap::from([("record_id".to_owned(), Uuid::now_v7())]),
            recovery: None,
        }
    }

    fn attempt(status_code: u16) -> AttemptRecord {
        AttemptRecord {
            attempted_at: DateTime::from_timestamp_millis(1_700_000_000_500).unwrap(),
            status_code: Some(status_code),
            duration_ms: 3,
            response: String::new(),
            error: None,
        }
    }

    async fn count(db: &Db, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(db.pool())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn attempts_recorded_at_once_are_all_committed_when_each_call_returns() {
        let db = test_db().await;
        let endpoint = add_endpoint(&db, "https://a.example/", &["*"], 1).await;
        let writer = AttemptWriter::new(db.clone());
        let twice = delivery(endpoint);
        let mut deliveries: Vec<DeliverWebhook> = (0..40).map(|_| delivery(endpoint)).collect();
        // The same message twice in one batch: one log entry with two attempts.
        deliveries.push(twice.clone());
        deliveries.push(twice);
        let mut calls = tokio::task::JoinSet::new();
        for job in deliveries {
            let writer = writer.clone();
            calls.spawn(async move {
                writer
                    .record(&job, DeliveryStatus::Succeeded, &attempt(200))
                    .await
            });
        }
        while let Some(outcome) = calls.join_next().await {
            outcome.unwrap().unwrap();
        }
        let attempts = "SELECT COUNT(*) FROM notifications_webhook_attempts";
        assert_eq!(count(&db, attempts).await, 42);
        let messages = "SELECT COUNT(*) FROM notifications_webhook_deliveries";
        assert_eq!(count(&db, messages).await, 41);
        let tried_twice =
            "SELECT COUNT(*) FROM notifications_webhook_deliveries WHERE attempts = 2";
        assert_eq!(count(&db, tried_twice).await, 1);
    }
}
