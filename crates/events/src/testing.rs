//! In-memory stand-ins for the ports, for modules' unit tests (feature `testing`).
//!
//! They live here, beside the ports they imitate, so every module tests against the same
//! doubles instead of each writing its own. Chain tests never use them: those run the real
//! runtime against a real database.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::clock::Clock;
use crate::context::TraceContext;
use crate::db::{Backend, Db, DbConn};
use crate::envelope::{EventEnvelope, EventKey};
use crate::jobs::{JobQueue, NewJob};
use crate::migration::Migration;
use crate::outbox::{Outbox, PublishError};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh in-memory SQLite database (one connection) with `migrations` applied.
///
/// # Panics
/// When SQLite cannot be opened or a migration fails — a broken test set-up.
pub async fn memory_db(migrations: &[Migration]) -> Db {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .expect("in-memory SQLite opens");
    for migration in migrations {
        sqlx::raw_sql(sqlx::AssertSqlSafe(migration.sqlite))
            .execute(&pool)
            .await
            .expect("migration applies");
    }
    Db::new(pool, Backend::Sqlite)
}

/// An outbox that remembers what was published.
#[derive(Debug, Default)]
pub struct RecordingOutbox {
    published: Mutex<Vec<EventEnvelope>>,
}

impl RecordingOutbox {
    /// Everything published so far.
    pub fn published(&self) -> Vec<EventEnvelope> {
        lock(&self.published).clone()
    }

    /// The names of everything published so far, in order.
    pub fn names(&self) -> Vec<String> {
        lock(&self.published)
            .iter()
            .map(|e| e.name.clone())
            .collect()
    }
}

#[async_trait]
impl Outbox for RecordingOutbox {
    async fn publish_json(
        &self,
        _conn: &mut DbConn,
        key: EventKey,
        payload: serde_json::Value,
    ) -> Result<EventEnvelope, PublishError> {
        let trace = TraceContext::current_or_new();
        let envelope = EventEnvelope {
            id: Uuid::now_v7(),
            name: key.name.to_owned(),
            version: key.version,
            occurred_at: Utc::now(),
            correlation_id: trace.correlation_id,
            causation_id: trace.causation_id,
            payload,
        };
        lock(&self.published).push(envelope.clone());
        Ok(envelope)
    }
}

/// A job queue that remembers what was enqueued, deduplicating unique keys like the real one,
/// with a real inbox guard.
#[derive(Debug, Default)]
pub struct RecordingJobQueue {
    enqueued: Mutex<Vec<NewJob>>,
    processed: Mutex<HashSet<(String, String)>>,
}

impl RecordingJobQueue {
    /// Everything enqueued so far (duplicates excluded).
    pub fn enqueued(&self) -> Vec<NewJob> {
        lock(&self.enqueued).clone()
    }
}

#[async_trait]
impl JobQueue for RecordingJobQueue {
    async fn enqueue(&self, _conn: &mut DbConn, job: NewJob) -> Result<Option<Uuid>, sqlx::Error> {
        let mut enqueued = lock(&self.enqueued);
        let duplicate = job.unique_key.is_some()
            && enqueued
                .iter()
                .any(|j| j.job_type == job.job_type && j.unique_key == job.unique_key);
        if duplicate {
            return Ok(None);
        }
        enqueued.push(job);
        Ok(Some(Uuid::now_v7()))
    }

    async fn mark_processed(
        &self,
        _conn: &mut DbConn,
        handler: &str,
        key: &str,
    ) -> Result<bool, sqlx::Error> {
        Ok(lock(&self.processed).insert((handler.to_owned(), key.to_owned())))
    }
}

/// A clock that stands still at a given instant.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub DateTime<Utc>);

impl FixedClock {
    /// A clock stopped at `ms` unix milliseconds.
    pub fn at_millis(ms: i64) -> Arc<Self> {
        Arc::new(Self(
            DateTime::from_timestamp_millis(ms).unwrap_or_default(),
        ))
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }

    fn database_now(&self) -> Option<DateTime<Utc>> {
        Some(self.0)
    }
}
