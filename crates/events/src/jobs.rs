//! The job port: enqueue background work inside your transaction, and run it idempotently.
//!
//! Jobs are imperatives (`DeliverWebhook`, `SendEmail`, `RunImport`) on named queues
//! (`webhooks`, `emails`, `imports`, and `events` for listener deliveries). A job is retried
//! on its queue's backoff schedule until it succeeds, runs out of attempts (then it is dead
//! and can be replayed), or asks to stop.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::context::TraceContext;
use crate::db::DbConn;

/// A typed job: its payload shape, its type name and the queue it runs on.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Stable type name stored with the job, e.g. `notifications.deliver_webhook`.
    const TYPE: &'static str;
    /// The queue it runs on, e.g. `webhooks`.
    const QUEUE: &'static str;

    /// A dedupe key: enqueuing a second job of this type with the same key is a no-op.
    fn unique_key(&self) -> Option<String> {
        None
    }
}

/// A job to enqueue, before it has an id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The queue it runs on.
    pub queue: String,
    /// Its type name, which picks the handler.
    pub job_type: String,
    /// Its arguments: ids and small scalars.
    pub payload: serde_json::Value,
    /// Dedupe key, unique per job type among jobs not yet pruned.
    pub unique_key: Option<String>,
    /// Lower runs first within a queue.
    pub priority: i16,
    /// Not before this instant; `None` means now.
    pub run_at: Option<DateTime<Utc>>,
    /// Overrides the queue's `max_attempts` for this job.
    pub max_attempts: Option<u32>,
}

impl NewJob {
    /// A job built from a typed [`Job`].
    ///
    /// # Errors
    /// Fails when the payload does not serialize.
    pub fn of<J: Job>(job: &J) -> Result<Self, serde_json::Error> {
        Ok(Self {
            queue: J::QUEUE.to_owned(),
            job_type: J::TYPE.to_owned(),
            payload: serde_json::to_value(job)?,
            unique_key: job.unique_key(),
            priority: 0,
            run_at: None,
            max_attempts: None,
        })
    }
}

/// Enqueues jobs and guards handlers against running an effect twice.
#[async_trait]
pub trait JobQueue: Send + Sync + Debug {
    /// Enqueues `job` on `conn` (inside the caller's transaction), stamped with the current
    /// [`TraceContext`]. Returns `None` when a job of the same type and unique key already
    /// exists — a duplicate is a no-op, never an error.
    ///
    /// # Errors
    /// Fails when the insert fails; the caller's transaction should roll back.
    async fn enqueue(&self, conn: &mut DbConn, job: NewJob) -> Result<Option<Uuid>, sqlx::Error>;

    /// Enqueues every job of `jobs` on `conn`, as [`JobQueue::enqueue`] would one by one —
    /// an implementation may write them in a few multi-row statements. Answers one entry per
    /// job, in order (`None` for a duplicate).
    ///
    /// # Errors
    /// Fails when an insert fails; the caller's transaction should roll back.
    async fn enqueue_many(
        &self,
        conn: &mut DbConn,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<Option<Uuid>>, sqlx::Error> {
        let mut ids = Vec::with_capacity(jobs.len());
        for job in jobs {
            ids.push(self.enqueue(conn, job).await?);
        }
        Ok(ids)
    }

    /// Enqueues jobs each caused by its own event (`(job, event id)`), as a listener
    /// handling a batch of events does ([`Listener::handle_many`](crate::Listener::handle_many)):
    /// each job's trace names its event, under the current correlation id. Answers as
    /// [`JobQueue::enqueue_many`].
    ///
    /// # Errors
    /// Fails when an insert fails; the caller's transaction should roll back.
    async fn enqueue_caused_by(
        &self,
        conn: &mut DbConn,
        jobs: Vec<(NewJob, Uuid)>,
    ) -> Result<Vec<Option<Uuid>>, sqlx::Error> {
        let correlation_id = TraceContext::current_or_new().correlation_id;
        let mut ids = Vec::with_capacity(jobs.len());
        for (job, cause) in jobs {
            let trace = TraceContext {
                correlation_id: correlation_id.clone(),
                causation_id: Some(cause),
            };
            ids.push(trace.scope(self.enqueue(&mut *conn, job)).await?);
        }
        Ok(ids)
    }

    /// Records that `handler` has processed `key`, inside the caller's transaction. Returns
    /// `false` when it already had — the caller then skips its effect (the inbox guard).
    ///
    /// # Errors
    /// Fails when the insert fails.
    async fn mark_processed(
        &self,
        conn: &mut DbConn,
        handler: &str,
        key: &str,
    ) -> Result<bool, sqlx::Error>;
}

/// What a handler knows about the job it is running.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job's id (UUIDv7).
    pub id: Uuid,
    /// Its type name.
    pub job_type: String,
    /// The queue it runs on.
    pub queue: String,
    /// 1 on the first try.
    pub attempt: u32,
    /// The attempt budget.
    pub max_attempts: u32,
    /// How long this attempt may run before the runtime fails it: work that can checkpoint
    /// (an import) should hand over well before.
    pub timeout: std::time::Duration,
    /// Stable across retries and replays: send it to external APIs as a dedupe key.
    pub idempotency_key: String,
    /// The chain this job belongs to; its own id is the causation of what it publishes.
    pub trace: TraceContext,
    /// When the job was first enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// Its arguments.
    pub payload: serde_json::Value,
}

/// How an attempt ended, when it did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Try again on the queue's schedule (dead after the last attempt).
    Retry,
    /// Stop now without retrying: the job is cancelled (e.g. a webhook receiver answered 410).
    Cancel,
    /// The job can never succeed (its payload does not decode): dead-letter it now.
    Poison,
    /// The attempt could not really run: a database connection could not be had in time.
    /// It is tried again shortly without spending an attempt — waiting for a connection is
    /// the process's shortage, not the job's failure.
    Deferred,
}

/// A failed attempt: what to do next, why, and what to record about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct JobError {
    /// What the runtime does next.
    pub kind: FailureKind,
    /// The reason, recorded with the attempt and shown in dead letters. No secrets or PII.
    pub reason: String,
    /// Structured facts about the attempt (e.g. an HTTP status and duration) for traces.
    pub detail: Option<serde_json::Value>,
    /// How long the job should wait before its next try, when the handler knows better than
    /// the schedule (a receiver's `Retry-After`, an endpoint's turn); a retry's wait is
    /// capped at the queue's backoff ceiling.
    pub delay: Option<std::time::Duration>,
}

impl JobError {
    /// A failure worth retrying.
    pub fn retry(reason: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Retry,
            reason: reason.into(),
            detail: None,
            delay: None,
        }
    }

    /// A failure that ends the job now, without retries.
    pub fn cancel(reason: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Cancel,
            reason: reason.into(),
            detail: None,
            delay: None,
        }
    }

    /// Input that can never succeed: dead-letter at once.
    pub fn poison(reason: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Poison,
            reason: reason.into(),
            detail: None,
            delay: None,
        }
    }

    /// The attempt did not really run (e.g. it waited for its endpoint's turn): it is tried
    /// again after `delay` without spending an attempt.
    pub fn defer(reason: impl Into<String>, delay: std::time::Duration) -> Self {
        Self {
            kind: FailureKind::Deferred,
            reason: reason.into(),
            detail: None,
            delay: Some(delay),
        }
    }

    /// Asks for the next try after `delay` instead of the schedule's (capped at its ceiling).
    #[must_use]
    pub fn after(mut self, delay: std::time::Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Attaches structured facts about the attempt.
    #[must_use]
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

impl From<sqlx::Error> for JobError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut => Self {
                kind: FailureKind::Deferred,
                reason: "database: no connection could be had in time".to_owned(),
                detail: None,
                delay: None,
            },
            err => Self::retry(format!("database: {err}")),
        }
    }
}

/// What a successful attempt records for traces (e.g. `{"status": 200, "duration_ms": 12}`).
pub type JobDetail = Option<serde_json::Value>;

/// Runs one job type. The runtime calls it inside the job's trace context.
#[async_trait]
pub trait JobHandler: Send + Sync {
    /// The job type it runs.
    fn job_type(&self) -> &'static str;
    /// The queue that job type runs on.
    fn queue(&self) -> &'static str;
    /// Runs one attempt. Must be idempotent: retries are guaranteed, not a maybe.
    ///
    /// # Errors
    /// A [`JobError`] saying whether to retry, cancel or dead-letter.
    async fn run(&self, job: &JobContext) -> Result<JobDetail, JobError>;

    /// Called once when the job is dead-lettered — after its last attempt, as poison, or
    /// when a rescue finds its budget spent (the handler may not have run at all) — so the
    /// owning module can show it (e.g. mark an import `failed`). Must be idempotent; a
    /// failure is logged, not retried. Does nothing by default.
    async fn dead_lettered(&self, _job: &JobContext) {}
}

/// The typed side of a handler: receives its decoded [`Job`].
#[async_trait]
pub trait HandleJob<J: Job>: Send + Sync + 'static {
    /// Runs one attempt of `job`.
    ///
    /// # Errors
    /// As [`JobHandler::run`].
    async fn handle(&self, job: J, ctx: &JobContext) -> Result<JobDetail, JobError>;

    /// As [`JobHandler::dead_lettered`]; `job` is `None` when the payload does not decode.
    async fn dead_lettered(&self, _job: Option<J>, _ctx: &JobContext) {}
}

/// Adapts a [`HandleJob`] into a [`JobHandler`]; a payload that does not decode is poison.
pub fn typed<J: Job, H: HandleJob<J>>(handler: H) -> Arc<dyn JobHandler> {
    Arc::new(Typed {
        handler,
        _job: PhantomData::<fn() -> J>,
    })
}

struct Typed<J, H> {
    handler: H,
    _job: PhantomData<fn() -> J>,
}

#[async_trait]
impl<J: Job, H: HandleJob<J>> JobHandler for Typed<J, H> {
    fn job_type(&self) -> &'static str {
        J::TYPE
    }

    fn queue(&self) -> &'static str {
        J::QUEUE
    }

    async fn run(&self, ctx: &JobContext) -> Result<JobDetail, JobError> {
        let job: J = serde_json::from_value(ctx.payload.clone()).map_err(|e| {
            JobError::poison(format!("payload of {} does not decode: {e}", J::TYPE))
        })?;
        self.handler.handle(job, ctx).await
    }

    async fn dead_lettered(&self, ctx: &JobContext) {
        let job = serde_json::from_value(ctx.payload.clone()).ok();
        self.handler.dead_lettered(job, ctx).await;
    }
}
