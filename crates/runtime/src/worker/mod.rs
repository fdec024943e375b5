//! Worker processes: one loop per queue claims jobs up to the queue's concurrency, runs
//! them, and hands their state changes to a batching writer.
//!
//! A loop sleeps until it is woken (an enqueue in this process, a PostgreSQL `NOTIFY`, a
//! finished job freeing a slot) or its fallback poll comes due — so an idle worker costs
//! next to nothing, and a new job starts within milliseconds.
//!
//! Who owns a job when: `available` in the queue → `reserved` by a process that claimed it
//! ahead (held in its memory, no attempt spent) → `running` once a task starts it (the
//! attempt is spent, on the database's clock) → an outcome. See ARCHITECTURE.md,
//! "Liveness".
//!
//! On shutdown a loop stops claiming, lets in-flight jobs finish within the grace period,
//! and hands the rest back without spending their attempt.

pub mod claim;
pub mod complete;
pub mod execute;
pub mod heartbeat;
pub mod leader;
pub mod prune;
pub mod rescue;
pub mod scheduler;
pub mod starter;
pub mod writer;

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use events::{Clock, Db};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use self::claim::ClaimedJob;
use self::execute::{Outcome, Verdict};
use self::heartbeat::Liveness;
use self::starter::StartRequest;
use self::writer::Write;
use crate::alerts::AlertSink;
use crate::db_time::DbTime;
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
/// a busy replica never sits on work another could run.
const AHEAD_MAX_WAIT: Duration = Duration::from_secs(2);
/// How long a queue loop claims onward from where its last full claim ended before it looks
/// from the head of the queue again (see `claim::ClaimCursor`).
const CURSOR_MAX_AGE: Duration = Duration::from_secs(1);
/// How long a queue claims only for free slots after a job claimed ahead went back unused.
const AHEAD_PAUSE: Duration = Duration::from_secs(30);

/// What every worker task shares.
#[derive(Debug)]
pub struct Shared {
    /// The database handlers and the HTTP edge use.
    pub db: Db,
    /// The runtime's own connections for claims and the writer, so handlers holding every
    /// connection of `db` never hold up a claim or an outcome.
    pub work: Db,
    /// The starter's own connection: a slot waiting for its next job never waits for a
    /// claim or a batch of outcomes to give a connection back.
    pub start: Db,
    /// The maintenance leader's connections (lease, rescue, statistics, pruning).
    pub control: Db,
    /// The heartbeat's own connection: nothing else can delay it.
    pub beat: Db,
    /// The database's clock.
    pub time: DbTime,
    /// Injected time (this process's clock).
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
    /// Whether this process may claim and start jobs (self-fencing).
    pub liveness: Liveness,
    /// The job queue (the scheduler enqueues through it).
    pub queue: Arc<crate::queue::SqlJobQueue>,
    /// The schedules in force.
    pub schedules: crate::schedule::Schedules,
}

/// A running set of queue loops; [`WorkerPool::shutdown`] stops them gracefully.
#[derive(Debug)]
pub struct WorkerPool {
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    writer: tokio::task::JoinHandle<bool>,
    stop_liveness: watch::Sender<bool>,
    heartbeat: tokio::task::JoinHandle<()>,
    leader: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
}

impl WorkerPool {
    /// Registers this process and starts one loop per queue in `queues`, plus the
    /// heartbeat, the maintenance leader and the writer.
    ///
    /// # Errors
    /// Fails when the worker cannot register (the database is down at start).
    pub async fn start(shared: Arc<Shared>, queues: Vec<String>) -> Result<Self, sqlx::Error> {
        heartbeat::register(&shared, &queues).await?;
        let (shutdown, rx) = watch::channel(false);
        let (writes, write_rx) = mpsc::channel(4096);
        let (starts, start_rx) = mpsc::channel(4096);
        let mut tasks = JoinSet::new();
        for queue in queues {
            let lanes = Lanes {
                writes: writes.clone(),
                starts: starts.clone(),
            };
            tasks.spawn(queue_loop(shared.clone(), queue, rx.clone(), lanes));
        }
        drop((writes, starts));
        let writer = tokio::spawn(writer::run(shared.clone(), write_rx, rx));
        // Ends with its last sender, when the queue loops and their tasks are gone.
        tokio::spawn(starter::run(shared.clone(), start_rx));
        // Heartbeats go on until the queue loops have finished or handed back their jobs,
        // so nothing still running during the grace period looks abandoned.
        let (stop_liveness, liveness_rx) = watch::channel(false);
        let heartbeat = tokio::spawn(heartbeat::run(shared.clone(), liveness_rx.clone()));
        let leader = tokio::spawn(leader::run(shared.clone(), liveness_rx));
        tracing::info!(worker_id = %shared.worker_id, "workers started");
        Ok(Self {
            shutdown,
            tasks,
            writer,
            stop_liveness,
            heartbeat,
            leader,
            shared,
        })
    }

    /// Stops claiming, waits for in-flight jobs (up to the grace period), hands back the
    /// rest, writes every outcome, and deregisters.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        // The queue loops are done, so every write sender is gone and the writer ends.
        let all_written = self.writer.await.unwrap_or(false);
        let _ = self.stop_liveness.send(true);
        let _ = self.heartbeat.await;
        let _ = self.leader.await;
        if !all_written {
            // Some jobs are still `running` under this worker: leave it registered (silent
            // soon) so the leader rescues them after `dead_after`.
            tracing::warn!(worker_id = %self.shared.worker_id, "stopped with unwritten outcomes");
            return;
        }
        if let Err(e) = heartbeat::deregister(&self.shared).await {
            tracing::warn!(error = %e, "could not mark this worker stopped");
        }
        tracing::info!(worker_id = %self.shared.worker_id, "workers stopped");
    }

    /// This process's worker id.
    pub fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }

    /// Whether this process has fenced itself (see [`heartbeat::Liveness::is_fenced`]).
    pub fn is_fenced(&self) -> bool {
        self.shared.liveness.is_fenced()
    }

    /// Runs one heartbeat and one maintenance round now (tests drive rescue with it).
    ///
    /// # Errors
    /// The heartbeat's failure, or the first maintenance step that failed.
    pub async fn maintain_now(&self) -> Result<(), sqlx::Error> {
        heartbeat::beat(&self.shared).await?;
        leader::round(&self.shared).await
    }
}

async fn queue_loop(
    shared: Arc<Shared>,
    queue: String,
    mut shutdown: watch::Receiver<bool>,
    lanes: Lanes,
) {
    let writes = &lanes.writes;
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
    // Where the last full claim ended, and since when the loop has not looked from the head.
    let mut cursor: Option<(claim::ClaimCursor, Instant)> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        while running.try_join_next().is_some() {}
        if shared.liveness.is_fenced() {
            // Fenced: claim nothing, start nothing, and give back what is held unspent;
            // the heartbeat wakes this loop when it rejoins.
            release(writes, local.take_ahead()).await;
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(shared.config.heartbeat_interval) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let stale = local.take_stale();
        if !stale.is_empty() {
            ahead_paused_until = Some(Instant::now() + AHEAD_PAUSE);
            release(writes, stale).await;
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
            let Some(job) = local.pop(&shared.liveness) else {
                break;
            };
            running.spawn(run_jobs(
                shared.clone(),
                local.clone(),
                lanes.clone(),
                Slot::Reserved(job),
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
        let limit = (free + ahead_now)
            .saturating_sub(buffered)
            .clamp(1, CLAIM_BATCH);
        // Start where the last full claim ended, unless it is time to look from the head
        // again (see `claim::ClaimCursor`).
        if cursor.as_ref().is_some_and(|(_, since)| {
            since.elapsed() >= CURSOR_MAX_AGE.min(shared.config.poll_interval)
        }) {
            cursor = None;
        }
        let claimed = claim::claim(
            &shared.work,
            &shared.time,
            &queue,
            &shared.worker_id,
            limit,
            free.min(limit),
            cursor.as_ref().map(|(at, _)| at),
        )
        .await;
        match claimed {
            Ok(claimed) => {
                failures = 0;
                let claim_full = claimed.running.len() + claimed.reserved.len() == limit;
                cursor = match (claim_full, claimed.last.clone(), cursor.take()) {
                    (true, Some(last), Some((_, since))) => Some((last, since)),
                    (true, Some(last), None) => Some((last, Instant::now())),
                    _ => None,
                };
                let claimed_any = !claimed.running.is_empty() || !claimed.reserved.is_empty();
                // Jobs claimed as running spent their attempt already: start them now.
                for job in claimed.running {
                    let Ok(permit) = slots.clone().acquire_owned().await else {
                        break;
                    };
                    local.track(&job);
                    running.spawn(run_jobs(
                        shared.clone(),
                        local.clone(),
                        lanes.clone(),
                        Slot::Started(job),
                        permit,
                    ));
                }
                local.push(claimed.reserved);
                // Stage when the queue may have run dry, and at least once a poll interval,
                // so retries coming due are not starved by a long backlog. After the claim:
                // a fresh job never waits for this round trip.
                let mut staged = 0;
                if !claim_full || last_stage.elapsed() >= shared.config.poll_interval {
                    last_stage = tokio::time::Instant::now();
                    match claim::stage(&shared.work, &shared.time, &queue).await {
                        Ok(n) => {
                            staged = n;
                            if n > 0 {
                                // Staged jobs may sort before where the last claim ended.
                                cursor = None;
                            }
                        }
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
    // period; the rest go back — reserved ones released, running ones handed back unspent.
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
    release(writes, local.take_ahead()).await;
    for job in local.take_running() {
        tracing::debug!(job_id = %job.id, "handing back an unfinished job");
        // A task aborted while its start was being written may hold a job that is still
        // reserved or already running: each write applies only in the state it expects.
        let _ = writes
            .send(Write::Outcome(Outcome {
                job: job.clone(),
                finished_at: 0,
                result: Verdict::HandBack,
            }))
            .await;
        let _ = writes.send(Write::Release(job)).await;
    }
}

/// Where a queue loop's tasks send what they need written.
#[derive(Clone)]
struct Lanes {
    /// Outcomes and releases, to the writer.
    writes: mpsc::Sender<Write>,
    /// Starts of reserved jobs, to the starter.
    starts: mpsc::Sender<StartRequest>,
}

/// How a slot's first job arrives.
enum Slot {
    /// Claimed as running: its attempt is spent.
    Started(ClaimedJob),
    /// Reserved: start it (spend its attempt) before running it.
    Reserved(ClaimedJob),
}

/// A queue loop's jobs in this process: claimed ahead and waiting, or running.
struct Local {
    /// Reserved, not started yet, oldest first, with when they were claimed.
    ahead: Mutex<VecDeque<(Instant, ClaimedJob)>>,
    /// Taken by a task (starting or running) and not finished, for the hand-back at
    /// shutdown.
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

    /// Notes a job a task is about to run.
    fn track(&self, job: &ClaimedJob) {
        lock(&self.running).insert(job.id.clone(), job.clone());
    }

    /// The next reserved job to start (now tracked as taken), unless shutting down or
    /// fenced; wakes the loop when running low.
    fn pop(&self, liveness: &Liveness) -> Option<ClaimedJob> {
        if self.stopping.load(Ordering::SeqCst) || liveness.is_fenced() {
            return None;
        }
        let mut ahead = lock(&self.ahead);
        let (_, next) = ahead.pop_front()?;
        self.track(&next);
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

    /// Every reserved job held in memory.
    fn take_ahead(&self) -> Vec<ClaimedJob> {
        lock(&self.ahead).drain(..).map(|(_, job)| job).collect()
    }

    fn finished(&self, id: &str) {
        lock(&self.running).remove(id);
    }

    /// Every job a task took and did not finish.
    fn take_running(&self) -> Vec<ClaimedJob> {
        lock(&self.running).drain().map(|(_, job)| job).collect()
    }
}

/// Runs the slot's first job, then whatever is waiting in memory, on one slot.
async fn run_jobs(
    shared: Arc<Shared>,
    local: Arc<Local>,
    lanes: Lanes,
    first: Slot,
    permit: OwnedSemaphorePermit,
) {
    let mut next = match first {
        Slot::Started(job) => Some(job),
        Slot::Reserved(job) => start(&lanes, &local, job).await,
    };
    loop {
        if let Some(job) = next.take() {
            let id = job.id.clone();
            let outcome = execute::execute(shared.clone(), job).await;
            // Send before leaving `running`: a task aborted at shutdown between the two is
            // then handed back (a no-op once its outcome is written) rather than left
            // `running` for a rescue.
            let _ = lanes.writes.send(Write::Outcome(outcome)).await;
            local.finished(&id);
        }
        match local.pop(&shared.liveness) {
            Some(job) => next = start(&lanes, &local, job).await,
            None => break,
        }
    }
    drop(permit);
}

/// Starts a reserved job: at once, its start handed to the writer (written with its
/// outcome at the latest), or — for a job that has been near a crash — only once the
/// starter has committed it. `None` when it is no longer this process's to start (released
/// by a rescue meanwhile).
async fn start(lanes: &Lanes, local: &Local, mut job: ClaimedJob) -> Option<ClaimedJob> {
    if !job.needs_committed_start() {
        job.started_at = job.database_now();
        local.track(&job);
        if lanes.writes.send(Write::Start(job.clone())).await.is_err() {
            local.finished(&job.id);
            return None;
        }
        return Some(job);
    }
    let id = job.id.clone();
    let (reply, answer) = oneshot::channel();
    let started = match lanes.starts.send((job, reply)).await {
        Ok(()) => answer.await.ok().flatten(),
        Err(_) => None,
    };
    match &started {
        Some(job) => local.track(job),
        None => {
            tracing::debug!(job_id = %id, "a reserved job was not started: no longer held");
            local.finished(&id);
        }
    }
    started
}

/// Puts reserved jobs this loop will not start back in the queue, unspent.
async fn release(writes: &mpsc::Sender<Write>, jobs: Vec<ClaimedJob>) {
    for job in jobs {
        let _ = writes.send(Write::Release(job)).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
