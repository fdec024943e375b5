//! Running one attempt: find the handler, decode, run under a timeout inside the job's trace
//! context and span, and turn whatever happens — success, failure, timeout, panic, poison —
//! into an [`Outcome`]. Nothing here can take the worker down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use events::context::CorrelationId;
use events::jobs::FailureKind;
use events::{JobContext, JobError, TraceContext};
use tracing::Instrument;
use uuid::Uuid;

use super::Shared;
use super::claim::ClaimedJob;

/// What became of an attempt, ready to be written.
#[derive(Debug)]
pub struct Outcome {
    /// The job.
    pub job: ClaimedJob,
    /// When the attempt ended (ms): its database start time plus how long it ran, measured
    /// on this process's monotonic clock — no wall clock involved (under a test's stand-in
    /// for the database's clock, that clock's reading).
    pub finished_at: i64,
    /// The new state and what to record.
    pub result: Verdict,
}

/// The job's next state.
#[derive(Debug)]
pub enum Verdict {
    /// Done.
    Completed {
        /// Facts about the attempt.
        detail: Option<serde_json::Value>,
    },
    /// Failed; runs again after `delay` (counted on the database's clock when written).
    Retry {
        /// The backoff before the next try.
        delay: Duration,
        /// Why it failed.
        error: String,
        /// Facts about the attempt.
        detail: Option<serde_json::Value>,
    },
    /// Failed for the last time, or can never succeed.
    Dead {
        /// Why.
        error: String,
        /// Facts about the attempt.
        detail: Option<serde_json::Value>,
    },
    /// Stopped at the handler's request.
    Cancelled {
        /// Why.
        error: String,
        /// Facts about the attempt.
        detail: Option<serde_json::Value>,
    },
    /// Could not really run (no database connection in time): the attempt is given back and
    /// the job waits `delay`.
    Deferred {
        /// How long it waits.
        delay: Duration,
        /// Why.
        error: String,
    },
    /// Not finished at shutdown: back to the queue without spending the attempt.
    HandBack,
}

/// How long a deferred job waits before it is tried again.
const DEFER_FOR: Duration = Duration::from_secs(1);

/// Runs one attempt of `job` and says what became of it.
pub async fn execute(shared: Arc<Shared>, job: ClaimedJob) -> Outcome {
    let policy = shared.config.policy_for(&job.queue, &job.job_type);
    let span = tracing::info_span!(
        "job",
        otel.name = tracing::field::Empty,
        job_id = %job.id,
        queue = %job.queue,
        job_type = %job.job_type,
        attempt = job.attempt,
        correlation_id = %job.correlation_id,
        causation_id = job.causation_id.as_deref().unwrap_or(""),
    );
    if events::propagation::enabled() {
        span.record("otel.name", job.job_type.as_str());
        events::propagation::continue_trace(&span, job.traceparent.as_deref());
    }
    let began = Instant::now();
    let result = run(&shared, &job, policy.timeout)
        .instrument(span.clone())
        .await;
    let ran_for = i64::try_from(began.elapsed().as_millis()).unwrap_or(i64::MAX / 4);
    let result = match result {
        Ok(detail) => Verdict::Completed { detail },
        Err(e) => {
            let JobError {
                kind,
                reason,
                detail,
                delay: asked,
            } = e;
            match kind {
                FailureKind::Retry if job.attempt < job.max_attempts => {
                    // A receiver's `Retry-After` is honoured up to the schedule's ceiling.
                    let delay = match asked {
                        Some(asked) => asked.min(policy.ceiling()),
                        None => policy.delay_after(job.attempt),
                    };
                    span.in_scope(|| {
                        tracing::warn!(error = %reason, retry_in_ms = delay.as_millis() as u64, "attempt failed");
                    });
                    Verdict::Retry {
                        delay,
                        error: reason,
                        detail,
                    }
                }
                FailureKind::Retry | FailureKind::Poison => {
                    span.in_scope(|| tracing::error!(error = %reason, "job dead-lettered"));
                    Verdict::Dead {
                        error: reason,
                        detail,
                    }
                }
                FailureKind::Cancel => {
                    span.in_scope(|| tracing::warn!(error = %reason, "job cancelled"));
                    Verdict::Cancelled {
                        error: reason,
                        detail,
                    }
                }
                FailureKind::Deferred => {
                    span.in_scope(
                        || tracing::warn!(error = %reason, "attempt deferred; not spent"),
                    );
                    Verdict::Deferred {
                        delay: asked.unwrap_or(DEFER_FOR),
                        error: reason,
                    }
                }
            }
        }
    };
    // A test standing in for the database's clock measures durations on it too.
    let finished_at = shared
        .time
        .fixed()
        .unwrap_or_else(|| job.started_at.saturating_add(ran_for));
    record_metrics(&job, finished_at, &result);
    Outcome {
        job,
        finished_at,
        result,
    }
}

/// Job figures for `/metrics`, labelled by queue and job type.
fn record_metrics(job: &ClaimedJob, finished_at: i64, result: &Verdict) {
    let labels = [
        ("queue", job.queue.clone()),
        ("job_type", job.job_type.clone()),
    ];
    let outcome = match result {
        Verdict::Completed { .. } => "keel_jobs_completed_total",
        Verdict::Retry { .. } => "keel_jobs_failed_total",
        Verdict::Dead { .. } => "keel_jobs_dead_total",
        Verdict::Cancelled { .. } => "keel_jobs_cancelled_total",
        Verdict::Deferred { .. } => "keel_jobs_deferred_total",
        Verdict::HandBack => return,
    };
    metrics::counter!(outcome, &labels).increment(1);
    if matches!(result, Verdict::Dead { .. }) {
        // A dead job also failed its last attempt.
        metrics::counter!("keel_jobs_failed_total", &labels).increment(1);
    }
    let seconds = |ms: i64| ms.max(0) as f64 / 1000.0;
    metrics::histogram!("keel_job_duration_seconds", &labels)
        .record(seconds(finished_at - job.started_at));
    metrics::histogram!("keel_job_wait_seconds", &labels)
        .record(seconds(job.started_at - job.run_at.max(job.enqueued_at)));
}

async fn run(
    shared: &Shared,
    job: &ClaimedJob,
    timeout: std::time::Duration,
) -> Result<Option<serde_json::Value>, JobError> {
    let handler = shared.registry.handler(&job.job_type).ok_or_else(|| {
        JobError::poison(format!(
            "no handler is registered for job type `{}`",
            job.job_type
        ))
    })?;
    let ctx = context_of(job, timeout)?;
    let trace = ctx.trace.clone();
    // Its own task, so a panic in the handler is caught as a JoinError, and a timeout can
    // abort it.
    // What it enqueues wakes local workers once it returns, after its commit.
    let task = tokio::spawn(
        shared
            .wakers
            .clone()
            .after_commit(trace.scope(async move { handler.run(&ctx).await }))
            .in_current_span(),
    );
    // Aborts the handler when this attempt is abandoned (timeout or shutdown).
    let _guard = AbortOnDrop(task.abort_handle());
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) if join.is_panic() => Err(JobError::retry(format!(
            "handler panicked: {}",
            panic_message(join.into_panic())
        ))),
        Ok(Err(_)) => Err(JobError::retry("handler was cancelled")),
        Err(_) => Err(JobError::retry(format!(
            "timed out after {}",
            humanize(timeout)
        ))),
    }
}

/// What a handler is told about the job: decoded payload, trace context (the job is the
/// cause of what it publishes), attempt and budget.
///
/// # Errors
/// Poison when the stored payload is not JSON or the id is not a UUID.
pub fn context_of(job: &ClaimedJob, timeout: std::time::Duration) -> Result<JobContext, JobError> {
    let payload: serde_json::Value = serde_json::from_str(&job.payload)
        .map_err(|e| JobError::poison(format!("stored payload is not JSON: {e}")))?;
    let id = Uuid::parse_str(&job.id).map_err(|e| JobError::poison(format!("job id: {e}")))?;
    Ok(JobContext {
        id,
        job_type: job.job_type.clone(),
        queue: job.queue.clone(),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        timeout,
        idempotency_key: job.idempotency_key.clone(),
        trace: TraceContext {
            correlation_id: CorrelationId::parse(&job.correlation_id).unwrap_or_default(),
            causation_id: Some(id),
        },
        enqueued_at: millis(job.enqueued_at),
        payload,
    })
}

/// Tells the job's handler it was dead-lettered (see [`events::JobHandler::dead_lettered`])
/// — after the dead letter is committed, on a task of its own and under the queue's timeout,
/// so module code never holds up the runtime's writers.
pub fn after_dead(shared: &Shared, job: &ClaimedJob) {
    let Some(handler) = shared.registry.handler(&job.job_type) else {
        return;
    };
    let timeout = shared.config.policy_for(&job.queue, &job.job_type).timeout;
    let Ok(ctx) = context_of(job, timeout) else {
        return;
    };
    let job_id = job.id.clone();
    tokio::spawn(async move {
        let trace = ctx.trace.clone();
        let hook = trace.scope(async move { handler.dead_lettered(&ctx).await });
        if tokio::time::timeout(timeout, hook).await.is_err() {
            tracing::warn!(%job_id, timeout_ms = timeout.as_millis() as u64, "dead_lettered hook timed out");
        }
    });
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

/// A duration as people write it in `keel.toml`: `30s`, `250ms`, `10m`.
pub fn humanize(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if !ms.is_multiple_of(60_000) || ms == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{}m", ms / 60_000)
    }
}

/// A stored millisecond timestamp as a time; out-of-range values clamp to the epoch.
pub fn millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
