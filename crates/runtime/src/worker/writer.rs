//! The writer: one task per process that writes the starts and outcomes of the jobs this
//! process ran, and the release of reservations it will not start, in batched transactions.
//!
//! A job's start and its outcome travel the same channel, so its start is written in the
//! same transaction as its outcome or an earlier one; when both are in one batch, the
//! outcome alone records both (one row version instead of two).
//!
//! Outcomes first, hooks after: a `dead_lettered` hook and the `job_dead` alert follow only a
//! dead letter that was actually applied, after its transaction committed, on a task of
//! their own. When the database is away a batch is kept and retried, never dropped. When the
//! database refuses a batch for what is in it (not for being away), the batch is written one
//! item at a time, and an outcome the database still refuses is dead-lettered with the
//! reason — one bad row never blocks the others.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::Shared;
use super::claim::ClaimedJob;
use super::complete;
use super::execute::{self, Outcome, Verdict};
use crate::alerts::Alert;

/// How many writes one transaction takes at most.
const BATCH: usize = 256;

/// What the writer is asked to write.
#[derive(Debug)]
pub enum Write {
    /// A reserved job a task started without waiting: record it `running`.
    Start(ClaimedJob),
    /// An attempt's outcome.
    Outcome(Outcome),
    /// Put a reserved job back, unspent.
    Release(ClaimedJob),
}

/// What one committed batch did.
#[derive(Debug, Default)]
struct Applied {
    /// Jobs dead-lettered, with why.
    dead: Vec<(ClaimedJob, String)>,
}

/// Writes from `rx` until every sender is gone.
///
/// During shutdown a batch that still cannot be written after `shutdown_grace` is given up
/// (logged): its running jobs are rescued after `dead_after` and its reserved ones released,
/// so the process can exit instead of hanging on a database that is gone. Returns whether
/// everything was written.
pub async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Write>,
    shutdown: watch::Receiver<bool>,
) -> bool {
    let mut batch = Vec::with_capacity(BATCH);
    let mut all_written = true;
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let applied = match write_batch(&shared, &batch, &shutdown).await {
            Some(applied) => applied,
            None => {
                all_written = false;
                Applied::default()
            }
        };
        let mut woken = std::collections::BTreeSet::new();
        for write in batch.drain(..) {
            if let Write::Release(job) = write {
                woken.insert(job.queue);
            }
        }
        for queue in woken {
            shared.wakers.wake(&queue);
        }
        for (job, error) in &applied.dead {
            raise_dead(&shared, job, error);
            execute::after_dead(&shared, job);
        }
    }
    all_written
}

/// Writes `batch` in one transaction, retrying while the database is away; falls back to
/// one item at a time when the database refuses the batch itself. `None`: given up at
/// shutdown.
async fn write_batch(
    shared: &Shared,
    batch: &[Write],
    shutdown: &watch::Receiver<bool>,
) -> Option<Applied> {
    let mut retry = Backoff::new();
    loop {
        match write(shared, batch).await {
            Ok(applied) => return Some(applied),
            Err(e) if !is_transient(&e) => {
                tracing::warn!(error = %e, writes = batch.len(), "the database refused a batch; writing it item by item");
                return write_isolated(shared, batch, shutdown).await;
            }
            Err(e) => {
                if retry.give_up(shared, shutdown) {
                    tracing::error!(error = %e, writes = batch.len(), "giving up writing job state at shutdown; the rescue takes over");
                    return None;
                }
                tracing::warn!(error = %e, writes = batch.len(), "writing job state failed; retrying");
                retry.pause().await;
            }
        }
    }
}

/// Writes each item in its own transaction; an outcome the database refuses is
/// dead-lettered with the reason instead.
async fn write_isolated(
    shared: &Shared,
    batch: &[Write],
    shutdown: &watch::Receiver<bool>,
) -> Option<Applied> {
    let mut applied = Applied::default();
    for item in batch {
        let mut retry = Backoff::new();
        loop {
            match write(shared, std::slice::from_ref(item)).await {
                Ok(one) => {
                    applied.dead.extend(one.dead);
                    break;
                }
                Err(e) if !is_transient(&e) => {
                    if let Write::Outcome(outcome) = item {
                        isolate(shared, outcome, &e, &mut applied).await;
                    }
                    break;
                }
                Err(e) => {
                    if retry.give_up(shared, shutdown) {
                        tracing::error!(error = %e, "giving up writing job state at shutdown");
                        return None;
                    }
                    retry.pause().await;
                }
            }
        }
    }
    Some(applied)
}

/// Dead-letters a job whose outcome the database refuses, saying why.
async fn isolate(shared: &Shared, outcome: &Outcome, refused: &sqlx::Error, applied: &mut Applied) {
    metrics::counter!("keel_outcomes_isolated_total", "queue" => outcome.job.queue.clone())
        .increment(1);
    // NUL is what PostgreSQL's text refuses most often; the reason must be writable itself.
    let reason = format!("its outcome could not be written: {refused}").replace('\0', "");
    let result = async {
        let mut tx = shared.work.begin().await?;
        let dead = complete::dead_letter_unwritable(
            &mut tx,
            &shared.time,
            &shared.worker_id,
            &outcome.job,
            &reason,
        )
        .await?;
        tx.commit().await?;
        Ok::<bool, sqlx::Error>(dead)
    }
    .await;
    match result {
        Ok(true) => {
            tracing::error!(job_id = %outcome.job.id, error = %refused, "outcome refused by the database; job dead-lettered");
            applied.dead.push((outcome.job.clone(), reason));
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(job_id = %outcome.job.id, error = %e, "could not dead-letter a job whose outcome was refused; the rescue takes over");
        }
    }
}

async fn write(shared: &Shared, batch: &[Write]) -> Result<Applied, sqlx::Error> {
    let mut applied = Applied::default();
    let mut tx = shared.work.begin().await?;
    let (time, worker) = (&shared.time, shared.worker_id.as_str());
    let per_statement = complete::chunk_size(shared.work.backend());
    let mut completed = Vec::new();
    let mut others = Vec::new();
    let mut releases = Vec::new();
    let mut starts = Vec::new();
    for item in batch {
        match item {
            Write::Start(job) => starts.push(job),
            Write::Outcome(o) if matches!(o.result, Verdict::Completed { .. }) => completed.push(o),
            Write::Outcome(o) => others.push(o),
            Write::Release(job) => releases.push(job),
        }
    }
    // A start whose outcome is in this batch is recorded by the outcome itself.
    let finished: std::collections::HashSet<&str> = completed
        .iter()
        .chain(&others)
        .map(|o| o.job.id.as_str())
        .collect();
    starts.retain(|job| !finished.contains(job.id.as_str()));
    for chunk in starts.chunks(per_statement) {
        complete::record_starts(&mut tx, worker, chunk).await?;
    }
    // The common case in two statements per chunk, however many jobs finished.
    for chunk in completed.chunks(per_statement) {
        complete::complete_chunk(&mut tx, time, worker, chunk).await?;
    }
    for outcome in others {
        if complete::apply(&mut tx, time, worker, outcome).await?
            && let Verdict::Dead { error, .. } = &outcome.result
        {
            applied.dead.push((outcome.job.clone(), error.clone()));
        }
    }
    for chunk in releases.chunks(per_statement) {
        complete::release(&mut tx, worker, chunk).await?;
    }
    tx.commit().await?;
    Ok(applied)
}

/// Whether `e` says the database is away or busy (worth retrying as is), rather than that it
/// refuses what was sent.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            if code.len() == 5 {
                // PostgreSQL's SQLSTATE: connection (08), operator intervention (57),
                // insufficient resources (53), serialization and deadlock (40).
                ["08", "57", "53", "40"].iter().any(|c| code.starts_with(c))
            } else {
                // SQLite's (extended) result code: BUSY (5) or LOCKED (6).
                code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
            }
        }
        sqlx::Error::Configuration(_)
        | sqlx::Error::InvalidArgument(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::RowNotFound => false,
        _ => true,
    }
}

/// Retry pacing for one batch: 50 ms doubling to 2 s; gives up only at shutdown.
struct Backoff {
    delay: Duration,
    since: tokio::time::Instant,
}

impl Backoff {
    fn new() -> Self {
        Self {
            delay: Duration::from_millis(50),
            since: tokio::time::Instant::now(),
        }
    }

    fn give_up(&self, shared: &Shared, shutdown: &watch::Receiver<bool>) -> bool {
        *shutdown.borrow() && self.since.elapsed() >= shared.config.shutdown_grace
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(2));
    }
}

/// Announces a dead letter.
pub fn raise_dead(shared: &Shared, job: &ClaimedJob, error: &str) {
    shared.alerts.raise(Alert {
        kind: "job_dead",
        subject: format!("{}/{}", job.queue, job.job_type),
        message: format!(
            "job {} ({} on {}) is dead after {} attempt(s): {error}",
            job.id, job.job_type, job.queue, job.attempt
        ),
        detail: serde_json::json!({
            "job_id": job.id,
            "queue": job.queue,
            "job_type": job.job_type,
            "attempts": job.attempt,
            "error": error,
            "correlation_id": job.correlation_id,
        }),
    });
}
