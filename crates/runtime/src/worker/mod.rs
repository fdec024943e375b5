//! Worker processes: one loop per queue claims jobs up to the queue's concurrency, runs
//! them, and hands their outcomes to a batching writer.
//!
//! A loop sleeps until it is woken (an enqueue in this process, a PostgreSQL `NOTIFY`, a
//! finished job freeing a slot) or its fallback poll comes due — so an idle worker costs
//! next to nothing, and a new job starts within milliseconds.
//!
//! On shutdown a loop stops claiming, lets in-flight jobs finish within the grace period,
//! and hands the rest back without spending their attempt.

pub mod claim;
pub mod complete;
pub mod execute;
pub mod maintenance;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use events::{Clock, Db};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use self::claim::ClaimedJob;
use self::execute::{Outcome, Verdict};
use crate::alerts::AlertSink;
use crate::policy::RuntimeConfig;
use crate::registry::Registry;
use crate::wake::Wakers;

/// How many jobs one claim takes at most.
const CLAIM_BATCH: usize = 64;
/// How long a busy loop waits for more slots to free before it claims.
const COALESCE_WINDOW: Duration = Duration::from_millis(2);

/// What every worker task shares.
#[derive(Debug)]
pub struct Shared {
    /// The database.
    pub db: Db,
    /// A small pool of its own for heartbeats, the lease and rescue, so busy job handlers
    /// holding every connection of `db` never make a live worker look dead.
    pub control: Db,
    /// Injected time.
    pub clock: Arc<dyn Clock>,
    /// Queues and timing.
    pub config: Arc<RuntimeConfig>,
    /// Who runs what.
    pub registry: Arc<Registry>,
    /// Wake-up signals.
    pub wakers: Arc<Wakers>,
    /// Where dead letters are announced.
    pub alerts: Arc<dyn AlertSink>,
    /// This process's worker id (stored in `locked_by` and `keel_workers`).
    pub worker_id: String,
}

/// A running set of queue loops; [`WorkerPool::shutdown`] stops them gracefully.
#[derive(Debug)]
pub struct WorkerPool {
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    writer: tokio::task::JoinHandle<bool>,
    stop_heartbeat: watch::Sender<bool>,
    heartbeat: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
}

impl WorkerPool {
    /// Registers this process and starts one loop per queue in `queues`, plus the
    /// heartbeat/maintenance task and the outcome writer.
    ///
    /// # Errors
    /// Fails when the worker cannot register (the database is down at start).
    pub async fn start(shared: Arc<Shared>, queues: Vec<String>) -> Result<Self, sqlx::Error> {
        maintenance::register(&shared, &queues).await?;
        let (shutdown, rx) = watch::channel(false);
        let (outcomes, outcome_rx) = mpsc::channel(4096);
        let mut tasks = JoinSet::new();
        for queue in queues {
            tasks.spawn(queue_loop(
                shared.clone(),
                queue,
                rx.clone(),
                outcomes.clone(),
            ));
        }
        drop(outcomes);
        let writer = tokio::spawn(complete::run(shared.clone(), outcome_rx, rx));
        // Heartbeats go on until the queue loops have finished or handed back their jobs,
        // so nothing still running during the grace period looks abandoned.
        let (stop_heartbeat, heartbeat_rx) = watch::channel(false);
        let heartbeat = tokio::spawn(maintenance::run(shared.clone(), heartbeat_rx));
        tracing::info!(worker_id = %shared.worker_id, "workers started");
        Ok(Self {
            shutdown,
            tasks,
            writer,
            stop_heartbeat,
            heartbeat,
            shared,
        })
    }

    /// Stops claiming, waits for in-flight jobs (up to the grace period), hands back the
    /// rest, writes every outcome, and deregisters.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        // The queue loops are done, so every outcome sender is gone and the writer ends.
        let all_written = self.writer.await.unwrap_or(false);
        let _ = self.stop_heartbeat.send(true);
        let _ = self.heartbeat.await;
        if !all_written {
            // Some jobs are still `running` under this worker: leave it registered (silent
            // soon) so the leader rescues them after `dead_after`.
            tracing::warn!(worker_id = %self.shared.worker_id, "stopped with unwritten outcomes");
            return;
        }
        if let Err(e) = maintenance::deregister(&self.shared).await {
            tracing::warn!(error = %e, "could not mark this worker stopped");
        }
        tracing::info!(worker_id = %self.shared.worker_id, "workers stopped");
    }

    /// Runs one heartbeat/maintenance round now (tests drive rescue with it).
    ///
    /// # Errors
    /// Fails when the database does.
    pub async fn maintain_now(&self) -> Result<(), sqlx::Error> {
        maintenance::once(&self.shared).await
    }
}

async fn queue_loop(
    shared: Arc<Shared>,
    queue: String,
    mut shutdown: watch::Receiver<bool>,
    outcomes: mpsc::Sender<Outcome>,
) {
    let Some(wake) = shared.wakers.get(&queue) else {
        tracing::error!(%queue, "no wake-up signal for queue; not starting it");
        return;
    };
    let concurrency = shared
        .config
        .queues
        .get(&queue)
        .map_or(1, |p| p.concurrency.max(1));
    let slots = Arc::new(Semaphore::new(concurrency));
    let in_flight: Arc<Mutex<HashMap<String, ClaimedJob>>> = Arc::default();
    let mut running: JoinSet<()> = JoinSet::new();
    let mut failures: u32 = 0;
    let mut last_stage = tokio::time::Instant::now();
    loop {
        if *shutdown.borrow() {
            break;
        }
        while running.try_join_next().is_some() {}
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = running.join_next() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        // Busy: let a few more running jobs finish so one claim refills several slots,
        // instead of one round trip per finished job.
        let target = (concurrency / 2).clamp(1, CLAIM_BATCH);
        let mut free = free;
        if free < target && !running.is_empty() {
            let window = tokio::time::sleep(COALESCE_WINDOW);
            tokio::pin!(window);
            while free < target {
                tokio::select! {
                    next = running.join_next() => if next.is_none() { break },
                    () = &mut window => break,
                }
                free = slots.available_permits();
            }
        }
        let now = shared.clock.now();
        let limit = free.min(CLAIM_BATCH);
        match claim::claim(&shared.db, &queue, &shared.worker_id, now, limit).await {
            Ok(jobs) => {
                failures = 0;
                let claim_full = jobs.len() == limit;
                let claimed_any = !jobs.is_empty();
                for job in jobs {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        // Cannot happen (we claimed at most `free`); hand it back rather than lose it.
                        let _ = outcomes
                            .send(Outcome {
                                job,
                                finished_at: 0,
                                result: Verdict::HandBack,
                            })
                            .await;
                        continue;
                    };
                    lock(&in_flight).insert(job.id.clone(), job.clone());
                    let shared = shared.clone();
                    let outcomes = outcomes.clone();
                    let in_flight = in_flight.clone();
                    running.spawn(async move {
                        let id = job.id.clone();
                        let outcome = execute::execute(shared, job).await;
                        // Send before leaving `in_flight`: a task aborted at shutdown between
                        // the two is then handed back (a no-op once its outcome is written)
                        // rather than left `running` for a rescue that spends an attempt.
                        let _ = outcomes.send(outcome).await;
                        lock(&in_flight).remove(&id);
                        drop(permit);
                    });
                }
                // Stage when the queue may have run dry, and at least once a poll interval,
                // so retries coming due are not starved by a long backlog. After the claim,
                // with its jobs already started: a fresh job never waits for this round trip.
                let mut staged = 0;
                if !claim_full || last_stage.elapsed() >= shared.config.poll_interval {
                    last_stage = tokio::time::Instant::now();
                    match claim::stage(&shared.db, &queue, now).await {
                        Ok(n) => staged = n,
                        Err(e) => tracing::warn!(%queue, error = %e, "staging due jobs failed"),
                    }
                }
                if claimed_any || staged > 0 {
                    continue;
                }
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(shared.config.poll_interval) => {}
                    _ = running.join_next(), if !running.is_empty() => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let pause = Duration::from_millis(100)
                    .saturating_mul(2u32.saturating_pow(failures.min(6)))
                    .min(Duration::from_secs(5));
                tracing::warn!(%queue, error = %e, pause_ms = pause.as_millis() as u64, "claiming failed; pausing");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
    // Shutdown: let in-flight jobs finish within the grace period, hand back the rest.
    let grace = tokio::time::sleep(shared.config.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = running.join_next() => if next.is_none() { break },
            () = &mut grace => break,
        }
    }
    running.abort_all();
    while running.join_next().await.is_some() {}
    let unfinished: Vec<ClaimedJob> = lock(&in_flight).drain().map(|(_, job)| job).collect();
    for job in unfinished {
        tracing::info!(job_id = %job.id, "handing back an unfinished job");
        let _ = outcomes
            .send(Outcome {
                job,
                finished_at: 0,
                result: Verdict::HandBack,
            })
            .await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
