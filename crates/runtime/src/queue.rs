//! The job queue port: enqueue inside the caller's transaction, dedupe unique jobs, and the
//! inbox guard that makes a handler's second run a no-op.

use std::sync::Arc;

use async_trait::async_trait;
use events::context::CorrelationId;
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

    /// The database's clock its statements read.
    pub(crate) fn time(&self) -> &DbTime {
        &self.time
    }

    /// Runs `work`, which commits what it enqueues here, and wakes local workers of those
    /// queues once it has returned (see [`Wakers::after_commit`]).
    pub async fn after_commit<F: std::future::Future>(&self, work: F) -> F::Output {
        self.wakers.clone().after_commit(work).await
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
        let mut ids = self.insert_many(conn, vec![job], trace).await?;
        Ok(ids.pop().flatten())
    }

    /// Enqueues `jobs` in multi-row `INSERT`s of up to [`ROWS_PER_INSERT`], one entry per
    /// job in order (`None` for a duplicate of a unique job).
    ///
    /// # Errors
    /// Fails on an unknown queue or when an insert fails.
    pub async fn insert_many(
        &self,
        conn: &mut DbConn,
        jobs: Vec<NewJob>,
        trace: &TraceContext,
    ) -> Result<Vec<Option<Uuid>>, sqlx::Error> {
        let jobs = jobs.into_iter().map(|job| (job, trace.causation_id));
        self.insert_caused(conn, jobs.collect(), &trace.correlation_id)
            .await
    }

    /// Enqueues `jobs` as [`SqlJobQueue::insert_many`] does, each with its own cause (the
    /// event a listener delivery or a fan-out job stems from) under one correlation id.
    ///
    /// # Errors
    /// Fails on an unknown queue or when an insert fails.
    pub async fn insert_caused(
        &self,
        conn: &mut DbConn,
        jobs: Vec<(NewJob, Option<Uuid>)>,
        correlation_id: &CorrelationId,
    ) -> Result<Vec<Option<Uuid>>, sqlx::Error> {
        if let Some((job, _)) = jobs
            .iter()
            .find(|(j, _)| !self.config.queues.contains_key(&j.queue))
        {
            return Err(sqlx::Error::Configuration(
                format!("queue `{}` is not configured", job.queue).into(),
            ));
        }
        let mut answer = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(ROWS_PER_INSERT) {
            answer.extend(self.insert_chunk(conn, chunk, correlation_id).await?);
        }
        Ok(answer)
    }

    async fn insert_chunk(
        &self,
        conn: &mut DbConn,
        jobs: &[(NewJob, Option<Uuid>)],
        correlation_id: &CorrelationId,
    ) -> Result<Vec<Option<Uuid>>, sqlx::Error> {
        const COLUMNS: usize = 12;
        let ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::now_v7()).collect();
        // "Now" is the database's: a job for now is available to every replica at once,
        // whatever this process's clock says; one for later waits on the database's clock.
        let values = (0..jobs.len())
            .map(|row| {
                let p = |c: usize| format!("${}", 2 + row * COLUMNS + c);
                format!(
                    "({id}, {queue}, {job_type}, {payload}, \
                     CASE WHEN {run_at} > NOW_MS THEN 'scheduled' ELSE 'available' END, \
                     {priority}, COALESCE({run_at}, NOW_MS), {max}, {unique}, {key}, {corr}, {cause}, NOW_MS, {tp})",
                    id = p(0),
                    queue = p(1),
                    job_type = p(2),
                    payload = p(3),
                    run_at = p(4),
                    priority = p(5),
                    max = p(6),
                    unique = p(7),
                    key = p(8),
                    corr = p(9),
                    cause = p(10),
                    tp = p(11),
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        // Replicas are woken after the commit (`wake::Notifier`), so the transaction tells
        // the insert trigger not to notify: a notifying commit takes a database-wide lock.
        // Set in `RETURNING`, which PostgreSQL evaluates before the statement's triggers.
        let defer = if self.wakers.notifies_after_commit() {
            ", set_config('keel.notify_after_commit', 'on', true) AS deferred_notify"
        } else {
            ""
        };
        let sql = self.time.sql(&format!(
            "INSERT INTO keel_jobs (id, queue, job_type, payload, state, priority, run_at, \
             max_attempts, unique_key, idempotency_key, correlation_id, causation_id, enqueued_at, \
             traceparent) \
             VALUES {values} \
             ON CONFLICT (job_type, unique_key) WHERE unique_key IS NOT NULL DO NOTHING \
             RETURNING id{defer}"
        ));
        let correlation = correlation_id.as_str();
        // The enqueuing span, so the job's attempts continue its trace (`None` unless the
        // app exports traces).
        let traceparent = events::propagation::current_traceparent();
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(self.time.fixed());
        for ((job, cause), id) in jobs.iter().zip(&ids) {
            let policy = self.config.policy_for(&job.queue, &job.job_type);
            let idempotency_key = match &job.unique_key {
                Some(key) => format!("{}:{key}", job.job_type),
                None => id.to_string(),
            };
            let max_attempts = job.max_attempts.unwrap_or(policy.max_attempts).max(1);
            query = query
                .bind(id.to_string())
                .bind(job.queue.clone())
                .bind(job.job_type.clone())
                .bind(job.payload.to_string())
                .bind(job.run_at.map(|t| t.timestamp_millis()))
                .bind(job.priority)
                .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX))
                .bind(job.unique_key.clone())
                .bind(idempotency_key)
                .bind(correlation.to_owned())
                .bind(cause.map(|c| c.to_string()))
                .bind(traceparent.clone());
        }
        let inserted: std::collections::HashSet<String> = query
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| sqlx::Row::try_get::<String, _>(row, "id"))
            .collect::<Result<_, _>>()?;
        let mut queues = std::collections::BTreeSet::new();
        let answer = jobs
            .iter()
            .zip(ids)
            .map(|((job, _), id)| {
                if !inserted.contains(&id.to_string()) {
                    return None;
                }
                // Counted at insert: a rolled-back transaction still counts (there is no
                // commit hook).
                metrics::counter!(
                    "keel_jobs_enqueued_total",
                    "queue" => job.queue.clone(),
                    "job_type" => job.job_type.clone()
                )
                .increment(1);
                queues.insert(job.queue.as_str());
                Some(id)
            })
            .collect();
        // Other processes learn of it from the NOTIFY the insert trigger sends at commit
        // (PostgreSQL, see `schema`); local workers when the caller's transaction has
        // committed, inside `Wakers::after_commit`, else now (a loop woken early finds
        // nothing yet, and the NOTIFY or its next wake picks the job up: none is missed).
        for queue in queues {
            self.wakers.wake_when_committed(queue);
        }
        Ok(answer)
    }
}

/// Jobs per multi-row `INSERT`. Measured with `keel-bench queue` (batched enqueue of 20 000
/// jobs, 500 per transaction): PostgreSQL takes 35–37 k jobs/s at 50, 100 or 500 rows a
/// statement, SQLite 37 k at 50 but 28 k at 100 and 10 k at 500 — statements that big cost
/// more to prepare and bind than they save.
pub const ROWS_PER_INSERT: usize = 50;

#[async_trait]
impl JobQueue for SqlJobQueue {
    async fn enqueue(&self, conn: &mut DbConn, job: NewJob) -> Result<Option<Uuid>, sqlx::Error> {
        let trace = TraceContext::current_or_new();
        self.insert(conn, job, &trace).await
    }

    async fn enqueue_many(
        &self,
        conn: &mut DbConn,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<Option<Uuid>>, sqlx::Error> {
        let trace = TraceContext::current_or_new();
        self.insert_many(conn, jobs, &trace).await
    }

    async fn enqueue_caused_by(
        &self,
        conn: &mut DbConn,
        jobs: Vec<(NewJob, Uuid)>,
    ) -> Result<Vec<Option<Uuid>>, sqlx::Error> {
        let trace = TraceContext::current_or_new();
        let jobs = jobs.into_iter().map(|(job, cause)| (job, Some(cause)));
        self.insert_caused(conn, jobs.collect(), &trace.correlation_id)
            .await
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
