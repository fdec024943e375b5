//! The queue scenario: enqueue N no-op jobs (one per transaction, and B per transaction),
//! drain them through Keel's real worker path (claim, run, record the attempt, complete),
//! and measure idle claim latency — each round on a fresh database.
//!
//! Everything goes through the public runtime API the app uses: `Runtime::migrate`,
//! `Runtime::install` with an `events::Module`, `JobQueue::enqueue` (and `enqueue_many` for the batched enqueue) inside `Db::begin`
//! transactions, and `Runtime::start_workers`. Only the optional backlog is written with one
//! bulk `INSERT … SELECT` (it is set-up, not measured).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use events::jobs::JobDetail;
use events::{Backend, JobContext, JobError, JobHandler, Module, NewJob, SystemClock};
use runtime::alerts::LogAlerts;
use runtime::{QueuePolicy, Runtime, RuntimeConfig};
use serde_json::json;
use tokio::sync::mpsc;

use crate::db::Fresh;
use crate::stats::{CpuSnapshot, median, percentile_ms};

/// The queue the measured jobs run on.
pub const QUEUE: &str = "bench";
/// Where `--backlog-kind other-queue` parks its jobs (configured, never worked).
pub const BACKLOG_QUEUE: &str = "bench_backlog";
/// The no-op job type.
pub const JOB_TYPE: &str = "bench.noop";

/// Where the backlog sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BacklogKind {
    /// Ready jobs on another queue: same table, same claim index, other key prefix.
    OtherQueue,
    /// Jobs on the measured queue scheduled a day ahead: in the claim index, not yet due.
    Scheduled,
    /// Ready jobs on the measured queue, ahead of the measured ones: the drain works
    /// through all of them (N + M jobs), as a queue that fell behind would.
    SameQueue,
}

impl BacklogKind {
    /// Parses `other-queue` or `scheduled`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "other-queue" => Some(Self::OtherQueue),
            "scheduled" => Some(Self::Scheduled),
            "same-queue" => Some(Self::SameQueue),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::OtherQueue => "other-queue",
            Self::Scheduled => "scheduled",
            Self::SameQueue => "same-queue",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server (PostgreSQL) or backend (SQLite) to run on.
    pub database_url: String,
    /// N: jobs enqueued and drained.
    pub jobs: usize,
    /// The queue's concurrency while draining.
    pub concurrency: usize,
    /// Jobs per transaction in the batched enqueue.
    pub batch: usize,
    /// Jobs already in the table before the measured ones.
    pub backlog: usize,
    /// Where those sit.
    pub backlog_kind: BacklogKind,
    /// Concurrent callers for the one-job-per-transaction enqueue.
    pub callers: usize,
    /// Idle claim-latency samples (0 skips the scenario).
    pub latency_samples: usize,
    /// Rounds (each on a fresh database); figures are medians.
    pub rounds: usize,
    /// Whether to measure the one-job-per-transaction enqueue.
    pub single: bool,
    /// Runtimes draining side by side (replicas), each with C slots.
    pub replicas: usize,
}

/// One round's figures.
#[derive(Debug, Clone, Default)]
struct Round {
    enqueue_single: Option<f64>,
    enqueue_batched: f64,
    drain: f64,
    drain_seconds: f64,
    attempts_recorded: i64,
    keel_cpu_per_1k: Option<f64>,
    postgres_cpu_per_1k: Option<f64>,
    latency: Vec<Duration>,
    /// Jobs/s over the last fifth of the drain (how the rate holds up deep into it).
    drain_tail: f64,
}

/// The no-op handler: counts runs and reports when each one started.
struct Noop {
    ran: Arc<AtomicUsize>,
    started: mpsc::UnboundedSender<Instant>,
}

#[async_trait]
impl JobHandler for Noop {
    fn job_type(&self) -> &'static str {
        JOB_TYPE
    }

    fn queue(&self) -> &'static str {
        QUEUE
    }

    async fn run(&self, _job: &JobContext) -> Result<JobDetail, JobError> {
        let _ = self.started.send(Instant::now());
        self.ran.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }
}

fn noop_job(i: usize) -> NewJob {
    NewJob {
        queue: QUEUE.to_owned(),
        job_type: JOB_TYPE.to_owned(),
        payload: json!({ "i": i }),
        unique_key: None,
        priority: 0,
        run_at: None,
        max_attempts: None,
    }
}

/// Runs every round and returns the summary as a JSON object.
///
/// # Errors
/// Fails when a database step fails or the drain stalls.
pub async fn run(opts: &Options) -> anyhow::Result<serde_json::Value> {
    if opts.jobs == 0 || opts.concurrency == 0 || opts.batch == 0 || opts.rounds == 0 {
        bail!("--jobs, --concurrency, --batch and --rounds must be at least 1");
    }
    let mut rounds = Vec::with_capacity(opts.rounds);
    let mut backend = Backend::Sqlite;
    for i in 0..opts.rounds {
        let fresh = Fresh::create(&opts.database_url).await?;
        backend = fresh.backend;
        eprintln!(
            "round {}/{} on a fresh {:?} database",
            i + 1,
            opts.rounds,
            backend
        );
        let result = round(opts, &fresh).await;
        fresh.remove().await?;
        rounds.push(result?);
    }
    Ok(summarize(opts, backend, &rounds))
}

async fn round(opts: &Options, fresh: &Fresh) -> anyhow::Result<Round> {
    let ran = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let module = Module {
        name: "bench",
        migrations: Vec::new(),
        publishes: Vec::new(),
        listeners: Vec::new(),
        jobs: vec![Arc::new(Noop {
            ran: ran.clone(),
            started: started_tx,
        })],
        schedules: Vec::new(),
        routes: axum::Router::new(),
        retention: Vec::new(),
    };
    let rt = replica(opts, fresh).await?;
    rt.migrate(&[&module]).await?;
    rt.install(&[&module])?;
    // The other replicas: runtimes of their own on the same database, as more `keel work`
    // processes would be.
    let mut others = Vec::new();
    for _ in 1..opts.replicas {
        let other = replica(opts, fresh).await?;
        other.install(&[&module])?;
        others.push(other);
    }

    if opts.backlog > 0 {
        let t = Instant::now();
        fill_backlog(&rt, opts.backlog, opts.backlog_kind).await?;
        eprintln!(
            "  backlog: {} {} jobs in {:.1} s",
            opts.backlog,
            opts.backlog_kind.name(),
            t.elapsed().as_secs_f64()
        );
    }

    let mut out = Round::default();

    // Batched enqueue: B jobs per transaction, one caller, through `enqueue_many`.
    let jobs = rt.jobs();
    let t = Instant::now();
    let mut next = 0;
    while next < opts.jobs {
        let end = (next + opts.batch).min(opts.jobs);
        let mut tx = rt.db().begin().await?;
        jobs.enqueue_many(&mut tx, (next..end).map(noop_job).collect())
            .await?;
        tx.commit().await?;
        next = end;
    }
    out.enqueue_batched = opts.jobs as f64 / t.elapsed().as_secs_f64();
    eprintln!(
        "  enqueue, {} per tx: {:.0} jobs/s",
        opts.batch, out.enqueue_batched
    );

    // Drain: from starting the workers until every completion is committed.
    let cpu_before = CpuSnapshot::take();
    let t = Instant::now();
    let workers = rt.start_workers(Some(vec![QUEUE.to_owned()])).await?;
    let mut other_workers = Vec::new();
    for other in &others {
        other_workers.push(other.start_workers(Some(vec![QUEUE.to_owned()])).await?);
    }
    // A same-queue backlog is drained too: it is ahead of the measured jobs.
    let total = match opts.backlog_kind {
        BacklogKind::SameQueue => opts.jobs + opts.backlog,
        _ => opts.jobs,
    };
    let tail_from = total - total / 5;
    wait_for(|| ran.load(Ordering::Relaxed) >= tail_from, &ran, total).await?;
    let tail_start = Instant::now();
    wait_for(|| ran.load(Ordering::Relaxed) >= total, &ran, total).await?;
    loop {
        if count(
            &rt,
            "SELECT COUNT(*) FROM keel_jobs WHERE queue = $1 AND state = 'completed'",
        )
        .await?
            >= i64::try_from(total)?
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = t.elapsed();
    let cpu_after = CpuSnapshot::take();
    out.drain_seconds = elapsed.as_secs_f64();
    out.drain = total as f64 / elapsed.as_secs_f64();
    out.drain_tail = (total - tail_from) as f64 / tail_start.elapsed().as_secs_f64();
    (out.keel_cpu_per_1k, out.postgres_cpu_per_1k) =
        cpu_after.per_thousand_since(&cpu_before, total);
    out.attempts_recorded = count(
        &rt,
        "SELECT COUNT(*) FROM keel_job_attempts WHERE outcome = 'completed' \
         AND job_id IN (SELECT id FROM keel_jobs WHERE queue = $1)",
    )
    .await?;
    eprintln!(
        "  drain at concurrency {} × {} replica(s): {:.0} jobs/s ({:.2} s; {} attempts recorded)",
        opts.concurrency, opts.replicas, out.drain, out.drain_seconds, out.attempts_recorded
    );
    for workers in other_workers {
        workers.shutdown().await;
    }
    for other in others {
        other.db().pool().close().await;
    }

    // Idle claim latency: one job at a time, commit → handler start.
    if opts.latency_samples > 0 {
        while started_rx.try_recv().is_ok() {}
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 0..opts.latency_samples {
            let mut tx = rt.db().begin().await?;
            jobs.enqueue(&mut tx, noop_job(opts.jobs + i)).await?;
            tx.commit().await?;
            let committed = Instant::now();
            let started = tokio::time::timeout(Duration::from_secs(10), started_rx.recv())
                .await
                .context("an idle job did not start within 10 s")?
                .context("handler channel closed")?;
            out.latency
                .push(started.saturating_duration_since(committed));
            // Let the outcome be written, so the next sample starts from idle.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "  idle claim latency: p50 {:.2} ms, p99 {:.2} ms",
            percentile_ms(&out.latency, 0.5).unwrap_or(f64::NAN),
            percentile_ms(&out.latency, 0.99).unwrap_or(f64::NAN)
        );
    }
    workers.shutdown().await;

    // One job per transaction from several callers (how an event-driven app enqueues),
    // workers stopped.
    if opts.single {
        let callers = opts.callers.max(1);
        let t = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..callers {
            let share = opts.jobs / callers + usize::from(c < opts.jobs % callers);
            let rt = rt.clone();
            tasks.spawn(async move {
                for i in 0..share {
                    // As a request handler enqueues: replicas are woken after the commit.
                    rt.after_commit(async {
                        let mut tx = rt.db().begin().await?;
                        rt.jobs().enqueue(&mut tx, noop_job(i)).await?;
                        tx.commit().await
                    })
                    .await?;
                }
                Ok::<(), sqlx::Error>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let rate = opts.jobs as f64 / t.elapsed().as_secs_f64();
        out.enqueue_single = Some(rate);
        eprintln!("  enqueue, 1 per tx from {callers} callers: {rate:.0} jobs/s");
    }

    rt.db().pool().close().await;
    Ok(out)
}

/// One runtime on `fresh`'s database with the bench's queues, on a pool of its own.
async fn replica(opts: &Options, fresh: &Fresh) -> anyhow::Result<Runtime> {
    let db = runtime::connect(&fresh.url, 10).await?;
    let config = RuntimeConfig {
        queues: BTreeMap::from([
            (
                QUEUE.to_owned(),
                QueuePolicy {
                    concurrency: opts.concurrency,
                    ..QueuePolicy::default()
                },
            ),
            (BACKLOG_QUEUE.to_owned(), QueuePolicy::default()),
        ]),
        ..RuntimeConfig::default()
    };
    Ok(Runtime::new(
        db,
        fresh.url.clone(),
        Arc::new(SystemClock),
        config,
        Arc::new(LogAlerts),
    ))
}

/// Waits until `done` holds, failing when the handler makes no progress for 60 s.
async fn wait_for(done: impl Fn() -> bool, ran: &AtomicUsize, target: usize) -> anyhow::Result<()> {
    let mut last = (0, Instant::now());
    while !done() {
        let now = ran.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(60) {
            bail!("drain stalled at {now}/{target} jobs");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

async fn count(rt: &Runtime, sql: &'static str) -> anyhow::Result<i64> {
    let n: i64 = sqlx::query_scalar(sql)
        .bind(QUEUE)
        .fetch_one(rt.db().pool())
        .await?;
    Ok(n)
}

/// Writes `m` jobs in one set-based statement: not measured, so not through `enqueue`.
async fn fill_backlog(rt: &Runtime, m: usize, kind: BacklogKind) -> anyhow::Result<()> {
    let now = rt.clock().now().timestamp_millis();
    let (queue, state, run_at) = match kind {
        BacklogKind::OtherQueue => (BACKLOG_QUEUE, "available", now),
        BacklogKind::Scheduled => (QUEUE, "scheduled", now + 24 * 3600 * 1000),
        // A millisecond earlier than anything enqueued next: ahead of the measured jobs.
        BacklogKind::SameQueue => (QUEUE, "available", now - 1),
    };
    let columns = "INSERT INTO keel_jobs (id, queue, job_type, payload, state, priority, run_at, \
                   max_attempts, idempotency_key, correlation_id, enqueued_at) ";
    let sql = match rt.db().backend() {
        Backend::Postgres => format!(
            "{columns} SELECT u, $1, $2, '{{}}', $3, 0, $4, 6, u, u, $5 \
             FROM (SELECT gen_random_uuid()::text AS u FROM generate_series(1, $6)) g"
        ),
        Backend::Sqlite => format!(
            "{columns} WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < $6) \
             SELECT lower(hex(randomblob(16))), $1, $2, '{{}}', $3, 0, $4, 6, \
             lower(hex(randomblob(16))), lower(hex(randomblob(16))), $5 FROM g"
        ),
    };
    let mut tx = rt.db().begin().await?;
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(queue)
        .bind(JOB_TYPE)
        .bind(state)
        .bind(run_at)
        .bind(now)
        .bind(i64::try_from(m)?)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    if rt.db().backend() == Backend::Postgres {
        // What autovacuum would do after a bulk load; without it the planner guesses.
        sqlx::query("ANALYZE keel_jobs")
            .execute(rt.db().pool())
            .await?;
    }
    Ok(())
}

fn summarize(opts: &Options, backend: Backend, rounds: &[Round]) -> serde_json::Value {
    let med = |f: &dyn Fn(&Round) -> Option<f64>| {
        median(&rounds.iter().filter_map(f).collect::<Vec<_>>())
    };
    let latency = |p: f64| med(&|r: &Round| percentile_ms(&r.latency, p));
    let round1 = |v: Option<f64>| v.map(|x| (x * 10.0).round() / 10.0);
    let round3 = |v: Option<f64>| v.map(|x| (x * 1000.0).round() / 1000.0);
    json!({
        "scenario": "queue",
        "enqueue_jobs_per_s": round1(med(&|r| r.enqueue_single)),
        "enqueue_batched_jobs_per_s": round1(med(&|r| Some(r.enqueue_batched))),
        "drain_jobs_per_s": round1(med(&|r| Some(r.drain))),
        "drain_tail_jobs_per_s": round1(med(&|r| Some(r.drain_tail))),
        "n": opts.jobs,
        "concurrency": opts.concurrency,
        "replicas": opts.replicas,
        "backend": match backend { Backend::Sqlite => "sqlite", Backend::Postgres => "postgres" },
        "batch": opts.batch,
        "enqueue_callers": opts.callers,
        "backlog": opts.backlog,
        "backlog_kind": opts.backlog_kind.name(),
        "rounds": rounds.len(),
        "drain_seconds": round3(med(&|r| Some(r.drain_seconds))),
        "drain_jobs_per_s_rounds": rounds.iter().map(|r| (r.drain * 10.0).round() / 10.0).collect::<Vec<_>>(),
        "attempts_recorded": rounds.iter().map(|r| r.attempts_recorded).min(),
        "keel_cpu_s_per_1k_jobs": round3(med(&|r| r.keel_cpu_per_1k)),
        "postgres_cpu_s_per_1k_jobs": if backend == Backend::Postgres { round3(med(&|r| r.postgres_cpu_per_1k)) } else { None },
        "idle_latency_samples": opts.latency_samples,
        "idle_latency_p50_ms": round3(latency(0.5)),
        "idle_latency_p90_ms": round3(latency(0.9)),
        "idle_latency_p99_ms": round3(latency(0.99)),
        "idle_latency_max_ms": round3(latency(1.0)),
    })
}
