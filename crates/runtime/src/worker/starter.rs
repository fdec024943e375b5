//! The starter: commits the start of a reserved job that has been near a crash, before it
//! runs.
//!
//! Most reserved jobs start at once, their start written by the writer (see
//! [`super::claim::ClaimedJob::needs_committed_start`]). One whose run took a worker down,
//! or that a dying worker held with no start written, may run only once its start is
//! committed — `reserved → running`, the attempt spent, on the database's clock — so its
//! next crash is counted, and a reservation the leader released meanwhile is never run.
//! Tasks asking at about the same time have their starts written together: one task per
//! process gathers the waiting starts into one `UPDATE … RETURNING` on a connection of its
//! own, never behind a batch of outcomes.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::claim::ClaimedJob;
use super::complete;
use super::writer::is_transient;

/// Starts one statement takes at most.
const BATCH: usize = 128;

/// A reserved job to start, and where to answer: the started job, or `None` when it is no
/// longer this process's to start.
pub type StartRequest = (ClaimedJob, oneshot::Sender<Option<ClaimedJob>>);

/// Starts what `rx` asks for until every sender is gone.
pub async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<StartRequest>) {
    let mut batch: Vec<StartRequest> = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let started = loop {
            let jobs: Vec<&ClaimedJob> = batch.iter().map(|(job, _)| job).collect();
            let result = async {
                let mut conn = shared.start.pool().acquire().await?;
                complete::start(&mut conn, &shared.time, &shared.worker_id, &jobs).await
            }
            .await;
            match result {
                Ok(started) => break started,
                // Away: nothing starts meanwhile; fenced, the tasks stop asking.
                Err(e) if is_transient(&e) && !shared.liveness.is_fenced() => {
                    tracing::warn!(error = %e, starts = batch.len(), "starting reserved jobs failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, starts = batch.len(), "could not start reserved jobs; they go back to the queue");
                    break Default::default();
                }
            }
        };
        for (mut job, reply) in batch.drain(..) {
            let answer = started.get(&job.id).map(|&(attempt, at)| {
                job.attempt = attempt;
                job.started_at = at;
                job
            });
            let _ = reply.send(answer);
        }
    }
}
