//! The job queue port: enqueue inside the caller's transaction, dedupe unique jobs, and the
//! inbox guard that makes a handler's second run a no-op.

use std::sync::Arc;

use async_trait::async_trait;
use events::{DbConn, JobQueue, NewJob, TraceContext};
use uuid::Uuid;

use crate::db_time::DbTime;
use crate::policy::RuntimeConfig;
use crate::wake::Wakers;

/// Jobs stored in `keel_jobs`.
#[derive(Debug)]
pub struct SqlJobQueue {
    time: DbTime,
    config: Arc<RuntimeConfig>,
    wakers: Arc<Wakers>,
}

impl SqlJobQueue {
    /// A queue waking local workers through `wakers`.
    pub fn new(time: DbTime, config: Arc<RuntimeConfig>, wakers: Arc<Wakers>) -> Self {
        Self {
            time,
            config,
            wakers,
        }
    }

    /// Enqueues with an explicit trace context (the outbox uses it so a listener delivery
    /// names its event as cause).
    ///
    /// # Errors
    /// Fails on an unknown queue or when the insert fails.
    pub async fn insert(
        &self,
        conn: &mut DbConn,
        job: NewJob,
        trace: &TraceContext,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        if !self.config.queues.contains_key(&job.queue) {
            return Err(sqlx::Error::Configuration(
                format!("queue `{}` is not configured", job.queue).into(),
            ));
        }
        let policy = self.config.policy_for(&job.queue, &job.job_type);
        let id = Uuid::now_v7();
        let idempotency_key = match &job.unique_key {
            Some(key) => format!("{}:{key}", job.job_type),
            None => id.to_string(),
        };
        let max_attempts = job.max_attempts.unwrap_or(policy.max_attempts).max(1);
        // "Now" is the database's: a job for now is available to every replica at once,
        // whatever this process's clock says; one for later waits on the database's clock.
        let sql = self.time.sql(
            "INSERT INTO keel_jobs (id, queue, job_type, payload, state, priority, run_at, \
             max_attempts, unique_key, idempotency_key, correlation_id, causation_id, enqueued_at) \
             VALUES ($2, $3, $4, $5, CASE WHEN $6 > NOW_MS THEN 'scheduled' ELSE 'available' END, \
             $7, COALESCE($6, NOW_MS), $8, $9, $10, $11, $12, NOW_MS) \
             ON CONFLICT (job_type, unique_key) WHERE unique_key IS NOT NULL DO NOTHING",
        );
        let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(self.time.fixed())
            .bind(id.to_string())
            .bind(&job.queue)
            .bind(&job.job_type)
            .bind(job.payload.to_string())
            .bind(job.run_at.map(|t| t.timestamp_millis()))
            .bind(job.priority)
            .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX))
            .bind(job.unique_key.as_deref())
            .bind(idempotency_key)
            .bind(trace.correlation_id.as_str())
            .bind(trace.causation_id.map(|c| c.to_string()))
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if inserted == 0 {
            return Ok(None);
        }
        // Counted at insert: a rolled-back transaction still counts (there is no commit hook).
        metrics::counter!(
            "keel_jobs_enqueued_total",
            "queue" => job.queue.clone(),
            "job_type" => job.job_type.clone()
        )
        .increment(1);
        // Other processes learn of it from the NOTIFY the insert trigger sends at commit
        // (PostgreSQL, see `schema`). Local workers are woken now, before commit: one that
        // wakes early queues behind this transaction's write lock (SQLite) or finds nothing
        // and waits for that NOTIFY (PostgreSQL); either way nothing is missed.
        self.wakers.wake(&job.queue);
        Ok(Some(id))
    }
}

#[async_trait]
impl JobQueue for SqlJobQueue {
    async fn enqueue(&self, conn: &mut DbConn, job: NewJob) -> Result<Option<Uuid>, sqlx::Error> {
        let trace = TraceContext::current_or_new();
        self.insert(conn, job, &trace).await
    }

    async fn mark_processed(
        &self,
        conn: &mut DbConn,
        handler: &str,
        key: &str,
    ) -> Result<bool, sqlx::Error> {
        let sql = self.time.sql(
            "INSERT INTO keel_inbox (handler, key, processed_at) VALUES ($2, $3, NOW_MS) \
             ON CONFLICT (handler, key) DO NOTHING",
        );
        let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(self.time.fixed())
            .bind(handler)
            .bind(key)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        Ok(inserted == 1)
    }
}
