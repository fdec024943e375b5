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
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use events::{Clock, Db};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use self::claim::ClaimedJob;
use self::execute::{Outcome, Verdict};
use crate::alerts::AlertSink;
use crate::policy::RuntimeConfig;
use crate::registry::Registry;
use crate::wake::Wakers;

/// How many jobs one claim takes at most.
const CLAIM_BATCH: usize = 128;
/// Jobs claimed ahead per slot of concurrency (at most [`CLAIM_BATCH`]): a finishing job
/// takes the next one from memory instead of waiting for a claim round trip, and claims
/// come in batches big enough to amortize their statement.
const AHEAD_PER_SLOT: usize = 8;
/// A job claimed ahead and not started within this long goes back to the queue unspent, so
/// a busy replica never sits on work another could run, and no job waits in memory for
/// anything close to its timeout (which the rescue of lost attempts counts from its claim).
const AHEAD_MAX_WAIT: Duration = Duration::from_secs(2);
/// How long a queue claims only for free slots after a job claimed ahead went back unused.
const AHEAD_PAUSE: Duration = Duration::from_secs(30);

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
    let local = Arc::new(Local::new(concurrency));
    let ahead_cap = concurrency.saturating_mul(AHEAD_PER_SLOT).min(CLAIM_BATCH);
    // A queue of long jobs cannot use jobs claimed ahead: after one of them went back unused,
    // claim only for free slots for a while.
    let mut ahead_paused_until: Option<Instant> = None;
    let mut running: JoinSet<()> = JoinSet::new();
    let mut failures: u32 = 0;
    let mut last_stage = tokio::time::Instant::now();
    loop {
        if *shutdown.borrow() {
            break;
        }
        while running.try_join_next().is_some() {}
        for stale in local.take_stale() {
            ahead_paused_until = Some(Instant::now() + AHEAD_PAUSE);
            hand_back(&outcomes, stale).await;
        }
        let ahead_now = match ahead_paused_until {
            Some(until) if Instant::now() < until => 0,
            _ => ahead_cap,
        };
        // Free slots take jobs from memory first; each task then keeps pulling from it.
        while local.has_ahead() {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                break;
            };
            let Some(job) = local.pop() else { break };
            running.spawn(run_jobs(
                shared.clone(),
                local.clone(),
                outcomes.clone(),
                job,
                permit,
            ));
        }
        let free = slots.available_permits();
        let buffered = local.ahead_len();
        if buffered >= local.low_water || (free == 0 && buffered >= ahead_now) {
            // Enough in memory: wait until the tasks eat into it, or a stale job is due back.
            tokio::select! {
                () = local.refill.notified() => {}
                _ = running.join_next(), if !running.is_empty() => {}
                () = tokio::time::sleep(AHEAD_MAX_WAIT) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let now = shared.clock.now();
        let limit = (free + ahead_now)
            .saturating_sub(buffered)
            .clamp(1, CLAIM_BATCH);
        match claim::claim(&shared.db, &queue, &shared.worker_id, now, limit).await {
            Ok(jobs) => {
                failures = 0;
                let claim_full = jobs.len() == limit;
                let claimed_any = !jobs.is_empty();
                local.push(jobs);
                // Stage when the queue may have run dry, and at least once a poll interval,
                // so retries coming due are not starved by a long backlog. After the claim:
                // a fresh job never waits for this round trip (the loop starts it first
                // when nothing is running yet).
                if claimed_any && running.is_empty() {
                    continue;
                }
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
    // Shutdown: nothing more is taken from memory; in-flight jobs finish within the grace
    // period; the rest — still running, or claimed ahead and never started — go back.
    local.stopping.store(true, Ordering::SeqCst);
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
    for job in local.drain_unfinished() {
        tracing::debug!(job_id = %job.id, "handing back an unfinished job");
        hand_back(&outcomes, job).await;
    }
}

/// A queue loop's jobs in this process: claimed ahead and waiting, or running.
struct Local {
    /// Claimed, not started yet, oldest first, with when they were claimed.
    ahead: Mutex<VecDeque<(Instant, ClaimedJob)>>,
    /// Started and not finished, for the hand-back at shutdown.
    running: Mutex<HashMap<String, ClaimedJob>>,
    /// Told when the jobs ahead fall below `low_water`.
    refill: Notify,
    /// Below this many jobs ahead, the loop claims more.
    low_water: usize,
    /// Set at shutdown: tasks stop taking jobs from memory.
    stopping: AtomicBool,
}

impl Local {
    fn new(concurrency: usize) -> Self {
        Self {
            ahead: Mutex::default(),
            running: Mutex::default(),
            refill: Notify::new(),
            low_water: concurrency,
            stopping: AtomicBool::new(false),
        }
    }

    fn push(&self, jobs: Vec<ClaimedJob>) {
        let now = Instant::now();
        lock(&self.ahead).extend(jobs.into_iter().map(|job| (now, job)));
    }

    fn has_ahead(&self) -> bool {
        !lock(&self.ahead).is_empty()
    }

    fn ahead_len(&self) -> usize {
        lock(&self.ahead).len()
    }

    /// The next job to start (now counted as running), unless shutting down; wakes the
    /// loop when running low.
    fn pop(&self) -> Option<ClaimedJob> {
        if self.stopping.load(Ordering::SeqCst) {
            return None;
        }
        let mut ahead = lock(&self.ahead);
        let (_, next) = ahead.pop_front()?;
        lock(&self.running).insert(next.id.clone(), next.clone());
        if ahead.len() < self.low_water {
            self.refill.notify_one();
        }
        Some(next)
    }

    /// Jobs claimed longer than [`AHEAD_MAX_WAIT`] ago and still not started.
    fn take_stale(&self) -> Vec<ClaimedJob> {
        let mut ahead = lock(&self.ahead);
        let mut stale = Vec::new();
        while ahead
            .front()
            .is_some_and(|(claimed, _)| claimed.elapsed() >= AHEAD_MAX_WAIT)
        {
            if let Some((_, job)) = ahead.pop_front() {
                stale.push(job);
            }
        }
        stale
    }

    fn finished(&self, id: &str) {
        lock(&self.running).remove(id);
    }

    /// Every job claimed and not finished: waiting in memory, or started.
    fn drain_unfinished(&self) -> Vec<ClaimedJob> {
        let mut jobs: Vec<ClaimedJob> = lock(&self.ahead).drain(..).map(|(_, job)| job).collect();
        jobs.extend(lock(&self.running).drain().map(|(_, job)| job));
        jobs
    }
}

/// Runs `job`, then whatever is waiting in memory, on one slot.
async fn run_jobs(
    shared: Arc<Shared>,
    local: Arc<Local>,
    outcomes: mpsc::Sender<Outcome>,
    mut job: ClaimedJob,
    permit: OwnedSemaphorePermit,
) {
    loop {
        // The attempt starts now, not when it was claimed ahead.
        job.started_at = shared.clock.now().timestamp_millis();
        let id = job.id.clone();
        let outcome = execute::execute(shared.clone(), job).await;
        // Send before leaving `running`: a task aborted at shutdown between the two is
        // then handed back (a no-op once its outcome is written) rather than left `running`
        // for a rescue that spends an attempt.
        let _ = outcomes.send(outcome).await;
        local.finished(&id);
        match local.pop() {
            Some(next) => job = next,
            None => break,
        }
    }
    drop(permit);
}

/// Returns a job this loop will not finish to the queue, without spending its attempt.
async fn hand_back(outcomes: &mpsc::Sender<Outcome>, job: ClaimedJob) {
    let _ = outcomes
        .send(Outcome {
            job,
            finished_at: 0,
            result: Verdict::HandBack,
        })
        .await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
