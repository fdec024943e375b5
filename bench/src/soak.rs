//! The soak scenario: sustained load for minutes with a short retention, to see whether the
//! runtime's housekeeping keeps up — the row counts of its tables and this process's resident
//! memory stay flat while jobs drain, or they grow.
//!
//! On a fresh database (see [`crate::db`]) one runtime works two queues: `bench` (a no-op
//! job) and `events` (the deliveries of `bench.soak_tick`, an event with one queued listener
//! that does nothing; running a delivery records it in `keel_inbox`). `--producers` tasks
//! enqueue *as fast as the drain allows*, not at a fixed rate: transactions of `--batch`
//! jobs — one in `--event-every` the delivery of an event published through the outbox (the
//! event row and its delivery job), the others no-op jobs — as long as fewer than `--ahead`
//! jobs are enqueued and not yet run. So the drain runs flat out, with pruning beside it on
//! the same cores; every job writes `keel_jobs` and `keel_job_attempts`, every delivery
//! `keel_events` and `keel_inbox`. The other tables (`keel_requests`, `keel_idempotency`) are
//! not written here.
//!
//! Every `--sample-every` the sampler counts the rows of each table (on a connection of its
//! own), reads `VmRSS`, the jobs run so far (the handlers count them) and the rows the
//! runtime pruned: its own counter `keel_pruned_rows_total{table}` (read in-process through
//! [`crate::counters`]) for jobs, events and inbox, and for attempts — which are deleted with
//! their job and not counted apart — the balance `attempts before + runs − attempts after`.
//!
//! Nothing can be pruned before `--retention` has passed; the summary's rates and the flatness
//! check use the samples after a warm-up of the retention plus two heartbeat intervals (the
//! leader prunes once per interval). Row counts are *flat* when, for every table, the largest
//! count in the second half of that window is at most 1.2 × the largest in the first half.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use events::jobs::JobDetail;
use events::{
    DbConn, EventEnvelope, EventKey, JobContext, JobError, JobHandler, Listener, Module, NewJob,
    SystemClock,
};
use runtime::alerts::LogAlerts;
use runtime::{QueuePolicy, Runtime, RuntimeConfig};
use serde_json::{Value, json};

use crate::counters::Counters;
use crate::db::Fresh;
use crate::memory::status_kib;

/// The queue of the no-op jobs.
const QUEUE: &str = "bench";
/// The queue listener deliveries run on (the runtime's).
const EVENTS_QUEUE: &str = "events";
/// The no-op job type.
const JOB_TYPE: &str = "bench.soak_noop";
/// The event published, and consumed by one queued listener.
const TICK: EventKey = EventKey {
    name: "bench.soak_tick",
    version: 1,
};
/// The tables sampled, in the order of [`Sample::rows`].
pub const TABLES: [&str; 4] = [
    "keel_jobs",
    "keel_job_attempts",
    "keel_events",
    "keel_inbox",
];
/// The largest growth of a table's row count, second half over first, still called flat.
const FLAT_FACTOR: f64 = 1.2;
/// A drain that runs no job for this long has stalled: the scenario fails.
const STALL: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server (PostgreSQL) or backend (SQLite) to run on.
    pub database_url: String,
    /// How long the load lasts.
    pub seconds: u64,
    /// `[workers] retention`: finished jobs, their events and inbox rows older than this go.
    pub retention: Duration,
    /// How often to sample.
    pub sample_every: Duration,
    /// Concurrency of each of the two queues.
    pub concurrency: usize,
    /// Jobs per enqueue transaction.
    pub batch: usize,
    /// One job in this many is an event's delivery, the others no-op jobs.
    pub event_every: usize,
    /// Tasks enqueueing at once.
    pub producers: usize,
    /// At most this many jobs enqueued and not yet run.
    pub ahead: usize,
}

/// Counts the runs of both kinds of job.
#[derive(Debug, Default)]
struct Tally {
    enqueued: AtomicU64,
    events: AtomicU64,
    ran: AtomicU64,
}

/// The no-op job.
struct Noop(Arc<Tally>);

#[async_trait]
impl JobHandler for Noop {
    fn job_type(&self) -> &'static str {
        JOB_TYPE
    }

    fn queue(&self) -> &'static str {
        QUEUE
    }

    async fn run(&self, _job: &JobContext) -> Result<JobDetail, JobError> {
        self.0.ran.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }
}

/// The listener of `bench.soak_tick`: queued, does nothing (the runtime records the delivery
/// in `keel_inbox` in the same transaction).
struct OnTick(Arc<Tally>);

#[async_trait]
impl Listener for OnTick {
    fn name(&self) -> &'static str {
        "bench.on_soak_tick"
    }

    fn consumes(&self) -> Vec<EventKey> {
        vec![TICK]
    }

    async fn handle(&self, _tx: &mut DbConn, _event: &EventEnvelope) -> Result<(), JobError> {
        self.0.ran.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// One sample, taken `t` seconds after the workers started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the workers started.
    pub t: f64,
    /// Row counts of [`TABLES`].
    pub rows: [i64; 4],
    /// This process's `VmRSS`.
    pub rss_kib: Option<u64>,
    /// Jobs enqueued so far.
    pub enqueued: u64,
    /// Events published so far.
    pub published: u64,
    /// Jobs run so far.
    pub ran: u64,
    /// `keel_pruned_rows_total` so far, by table label.
    pub pruned: BTreeMap<String, u64>,
}

impl Sample {
    fn pruned(&self, table: &str) -> u64 {
        self.pruned.get(table).copied().unwrap_or(0)
    }

    fn pruned_all(&self) -> u64 {
        self.pruned.values().sum()
    }
}

/// Runs the scenario on a fresh database and returns its JSON line.
///
/// # Errors
/// Fails when a database step fails or the drain stalls.
pub async fn run(opts: &Options) -> anyhow::Result<Value> {
    if [
        opts.seconds as usize,
        opts.concurrency,
        opts.batch,
        opts.event_every,
        opts.producers,
        opts.ahead,
    ]
    .contains(&0)
    {
        bail!(
            "--seconds, --concurrency, --batch, --event-every, --producers and --ahead must be \
             at least 1"
        );
    }
    if opts.sample_every.is_zero() {
        bail!("--sample-every must be more than 0");
    }
    let counters = Counters::install()?;
    let rss_start = status_kib("VmRSS");
    let fresh = Fresh::create(&opts.database_url).await?;
    let backend = crate::backend_name(fresh.backend);
    let result = soak(opts, &fresh, &counters).await;
    fresh.remove().await?;
    let (samples, config) = result?;
    Ok(summarize(opts, backend, &config, rss_start, &samples))
}

/// Drives the load and samples until `--seconds` have passed.
async fn soak(
    opts: &Options,
    fresh: &Fresh,
    counters: &Counters,
) -> anyhow::Result<(Vec<Sample>, RuntimeConfig)> {
    let pool_size = u32::try_from(opts.concurrency.min(16) + 4).unwrap_or(20);
    let db = runtime::connect(&fresh.url, pool_size).await?;
    let mut config = RuntimeConfig {
        retention: opts.retention,
        ..RuntimeConfig::default()
    };
    for queue in [QUEUE, EVENTS_QUEUE] {
        config.queues.insert(
            queue.to_owned(),
            QueuePolicy {
                concurrency: opts.concurrency,
                ..QueuePolicy::default()
            },
        );
    }
    let rt = Runtime::new(
        db,
        fresh.url.clone(),
        Arc::new(SystemClock),
        config.clone(),
        Arc::new(LogAlerts),
    );
    let tally = Arc::new(Tally::default());
    let module = Module {
        name: "bench",
        migrations: Vec::new(),
        publishes: vec![TICK],
        listeners: vec![Arc::new(OnTick(Arc::clone(&tally)))],
        jobs: vec![Arc::new(Noop(Arc::clone(&tally)))],
        schedules: Vec::new(),
        routes: axum::Router::new(),
        retention: Vec::new(),
    };
    rt.migrate(&[&module]).await?;
    rt.install(&[&module])?;
    // The sampler's own connection: its counts never wait for a worker's.
    let probe = runtime::connect(&fresh.url, 1).await?;

    let workers = rt
        .start_workers(Some(vec![QUEUE.to_owned(), EVENTS_QUEUE.to_owned()]))
        .await?;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::with_capacity(opts.producers);
    for p in 0..opts.producers {
        let handles = Handles {
            db: rt.db().clone(),
            outbox: rt.outbox(),
            jobs: rt.jobs(),
        };
        producers.push(tokio::spawn(enqueue(
            handles,
            Arc::clone(&tally),
            Arc::clone(&stop),
            opts.clone(),
            p,
        )));
    }

    let mut samples = Vec::new();
    let mut outcome = Ok(());
    let mut last_progress = (0, Instant::now());
    for k in 0.. {
        let due = started + opts.sample_every * k;
        if due > started + Duration::from_secs(opts.seconds) {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        if producers.iter().any(tokio::task::JoinHandle::is_finished) {
            break;
        }
        let sample = match take_sample(&probe, &tally, counters, started).await {
            Ok(s) => s,
            Err(e) => {
                outcome = Err(e);
                break;
            }
        };
        progress(&sample, samples.last());
        if sample.ran != last_progress.0 {
            last_progress = (sample.ran, Instant::now());
        } else if last_progress.1.elapsed() > STALL {
            outcome = Err(anyhow::anyhow!(
                "the drain stalled: no job ran for {} s",
                STALL.as_secs()
            ));
        }
        samples.push(sample);
        if outcome.is_err() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut enqueued = Ok(());
    for p in producers {
        let done = p.await.context("a producer panicked")?;
        if enqueued.is_ok() {
            enqueued = done;
        }
    }
    workers.shutdown().await;
    probe.pool().close().await;
    rt.db().pool().close().await;
    outcome?;
    enqueued?;
    Ok((samples, config))
}

/// What the enqueuer needs of the runtime.
struct Handles {
    db: events::Db,
    outbox: Arc<dyn events::Outbox>,
    jobs: Arc<dyn events::JobQueue>,
}

/// Producer `p`: enqueues transactions of `--batch` jobs while fewer than `--ahead` jobs
/// wait to run.
async fn enqueue(
    h: Handles,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    opts: Options,
    p: usize,
) -> anyhow::Result<()> {
    let events = (opts.batch / opts.event_every) as u64;
    let per_batch = opts.batch as u64;
    let ahead = opts.ahead as u64;
    let mut i = p as u64 * 1_000_000_000;
    while !stop.load(Ordering::Relaxed) {
        let waiting = tally
            .enqueued
            .load(Ordering::Relaxed)
            .saturating_sub(tally.ran.load(Ordering::Relaxed));
        if waiting + per_batch > ahead {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let mut tx = h.db.begin().await?;
        for k in 0..per_batch {
            if k < events {
                h.outbox
                    .publish_json(&mut tx, TICK, json!({ "i": i }))
                    .await?;
            } else {
                h.jobs
                    .enqueue(
                        &mut tx,
                        NewJob {
                            queue: QUEUE.to_owned(),
                            job_type: JOB_TYPE.to_owned(),
                            payload: json!({ "i": i }),
                            unique_key: None,
                            priority: 0,
                            run_at: None,
                            max_attempts: None,
                        },
                    )
                    .await?;
            }
            i += 1;
        }
        tx.commit().await?;
        tally.enqueued.fetch_add(per_batch, Ordering::Relaxed);
        tally.events.fetch_add(events, Ordering::Relaxed);
    }
    Ok(())
}

async fn take_sample(
    probe: &events::Db,
    tally: &Tally,
    counters: &Counters,
    started: Instant,
) -> anyhow::Result<Sample> {
    let mut rows = [0i64; 4];
    for (n, table) in rows.iter_mut().zip(TABLES) {
        *n = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(probe.pool())
            .await
            .with_context(|| format!("counting {table}"))?;
    }
    Ok(Sample {
        t: started.elapsed().as_secs_f64(),
        rows,
        rss_kib: status_kib("VmRSS"),
        enqueued: tally.enqueued.load(Ordering::Relaxed),
        published: tally.events.load(Ordering::Relaxed),
        ran: tally.ran.load(Ordering::Relaxed),
        pruned: counters.by_label("keel_pruned_rows_total", "table"),
    })
}

fn progress(s: &Sample, previous: Option<&Sample>) {
    let rate = previous.map_or(0.0, |p| Interval::between(p, s).drained_per_s);
    eprintln!(
        "  t={:>5.0} s  jobs {:>8}  attempts {:>8}  events {:>8}  inbox {:>8}  RSS {:>6.1} MiB  \
         drained {:>7.0}/s  pruned {:>9} rows",
        s.t,
        s.rows[0],
        s.rows[1],
        s.rows[2],
        s.rows[3],
        s.rss_kib.unwrap_or(0) as f64 / 1024.0,
        rate,
        s.pruned_all(),
    );
}

/// What happened between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Interval {
    seconds: f64,
    drained: f64,
    drained_per_s: f64,
    pruned_jobs: f64,
    pruned_attempts: f64,
    pruned_events: f64,
    pruned_inbox: f64,
    pruned_other: f64,
}

impl Interval {
    fn between(a: &Sample, b: &Sample) -> Self {
        let seconds = (b.t - a.t).max(f64::EPSILON);
        let delta = |table: &str| b.pruned(table).saturating_sub(a.pruned(table)) as f64;
        let drained = b.ran.saturating_sub(a.ran) as f64;
        let named = ["jobs", "events", "inbox"];
        let other = (b.pruned_all().saturating_sub(a.pruned_all())) as f64
            - named.iter().map(|t| delta(t)).sum::<f64>();
        Self {
            seconds,
            drained,
            drained_per_s: drained / seconds,
            pruned_jobs: delta("jobs"),
            // Deleted with their jobs, not counted apart: one attempt row per run written,
            // so whatever the count lost beyond the runs was pruned.
            pruned_attempts: ((a.rows[1] - b.rows[1]) as f64 + drained).max(0.0),
            pruned_events: delta("events"),
            pruned_inbox: delta("inbox"),
            pruned_other: other.max(0.0),
        }
    }

    fn pruned_rows(&self) -> f64 {
        self.pruned_jobs
            + self.pruned_attempts
            + self.pruned_events
            + self.pruned_inbox
            + self.pruned_other
    }
}

/// Per-table verdict: the largest count of each half of the steady window.
fn flatness(steady: &[Sample], value: impl Fn(&Sample) -> f64) -> Option<(f64, f64, bool)> {
    if steady.len() < 4 {
        return None;
    }
    let (first, last) = (steady[0].t, steady[steady.len() - 1].t);
    let middle = (first + last) / 2.0;
    let max_of = |keep: &dyn Fn(f64) -> bool| {
        steady
            .iter()
            .filter(|s| keep(s.t))
            .map(&value)
            .fold(0.0, f64::max)
    };
    let early = max_of(&|t| t <= middle);
    let late = max_of(&|t| t > middle);
    Some((early, late, late <= FLAT_FACTOR * early.max(1.0)))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn rows_object(s: &Sample) -> Value {
    TABLES
        .iter()
        .zip(s.rows)
        .map(|(t, n)| ((*t).to_owned(), json!(n)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The JSON line: settings, rates over the steady window, start/end/max row counts, RSS,
/// the flatness verdicts and every sample.
fn summarize(
    opts: &Options,
    backend: &str,
    config: &RuntimeConfig,
    rss_start: Option<u64>,
    samples: &[Sample],
) -> Value {
    let warmup = opts.retention + 2 * config.heartbeat_interval;
    let steady: Vec<Sample> = samples
        .iter()
        .filter(|s| s.t >= warmup.as_secs_f64())
        .cloned()
        .collect();
    let intervals: Vec<(f64, Interval)> = samples
        .windows(2)
        .map(|w| (w[1].t, Interval::between(&w[0], &w[1])))
        .collect();
    let window: Vec<&Interval> = intervals
        .iter()
        .filter(|(t, _)| steady.first().is_some_and(|s| *t > s.t))
        .map(|(_, i)| i)
        .collect();
    let seconds: f64 = window.iter().map(|i| i.seconds).sum();
    let per_s = |f: &dyn Fn(&Interval) -> f64| {
        (seconds > 0.0).then(|| round1(window.iter().map(|i| f(i)).sum::<f64>() / seconds))
    };
    let drain = per_s(&|i| i.drained);
    let pruned_jobs = per_s(&|i| i.pruned_jobs);
    let pruned_rows = per_s(&|i| i.pruned_rows());
    let ratio = match (pruned_jobs, drain) {
        (Some(p), Some(d)) if d > 0.0 => Some(round3(p / d)),
        _ => None,
    };
    let mut flat = serde_json::Map::new();
    let mut all_flat = Some(true);
    for (i, table) in TABLES.iter().enumerate() {
        let verdict = flatness(&steady, |s| s.rows[i] as f64);
        all_flat = match (all_flat, verdict) {
            (Some(a), Some((_, _, f))) => Some(a && f),
            _ => None,
        };
        flat.insert(
            (*table).to_owned(),
            verdict.map_or(Value::Null, |(early, late, f)| {
                json!({ "first_half_max": early, "second_half_max": late, "flat": f })
            }),
        );
    }
    let rss = flatness(&steady, |s| s.rss_kib.unwrap_or(0) as f64);
    let elapsed = samples.last().map_or(0.0, |s| s.t);
    let last = samples.last();
    let ran = last.map_or(0, |s| s.ran);
    let settings = json!({
        "scenario": "soak",
        "backend": backend,
        "seconds": opts.seconds,
        "retention_s": opts.retention.as_secs_f64(),
        "heartbeat_interval_s": config.heartbeat_interval.as_secs_f64(),
        "sample_every_s": opts.sample_every.as_secs_f64(),
        "concurrency": opts.concurrency,
        "batch": opts.batch,
        "event_every": opts.event_every,
        "producers": opts.producers,
        "ahead": opts.ahead,
        "load": "as fast as the drain allows: `producers` tasks commit transactions of `batch` \
                 jobs (one in `event_every` the queued listener delivery of a published \
                 event, the others no-op jobs) while fewer than `ahead` jobs wait to run",
        "warmup_s": warmup.as_secs_f64(),
        "steady_s": round1(seconds),
    });
    let rates = json!({
        "enqueued_jobs": last.map_or(0, |s| s.enqueued),
        "events_published": last.map_or(0, |s| s.published),
        "drained_jobs": ran,
        "drain_jobs_per_s_overall": (elapsed > 0.0).then(|| round1(ran as f64 / elapsed)),
        "drain_jobs_per_s": drain,
        "pruned_jobs_per_s": pruned_jobs,
        "pruned_rows_per_s": pruned_rows,
        "pruned_rows_per_s_by_table": {
            "keel_jobs": pruned_jobs,
            "keel_job_attempts": per_s(&|i| i.pruned_attempts),
            "keel_events": per_s(&|i| i.pruned_events),
            "keel_inbox": per_s(&|i| i.pruned_inbox),
            "other": per_s(&|i| i.pruned_other),
        },
        "prune_to_drain_ratio": ratio,
        "pruned_jobs_per_s_peak": window
            .iter()
            .map(|i| i.pruned_jobs / i.seconds)
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
            .map(round1),
        "pruned_rows_total": last.map_or(0, Sample::pruned_all),
    });
    let rows_max: serde_json::Map<String, Value> = TABLES
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                (*t).to_owned(),
                json!(samples.iter().map(|s| s.rows[i]).max()),
            )
        })
        .collect();
    let rows = json!({
        "rows_at_warmup": steady.first().map(rows_object),
        "rows_end": last.map(rows_object),
        "rows_max": rows_max,
        "rows_flat": all_flat,
        "flat_rule": format!(
            "after the warm-up, the largest count of the second half ≤ {FLAT_FACTOR} × the \
             largest of the first half, every table"
        ),
        "flat": flat,
        "rss_start_kib": rss_start,
        "rss_at_warmup_kib": steady.first().and_then(|s| s.rss_kib),
        "rss_end_kib": last.and_then(|s| s.rss_kib),
        "rss_peak_sampled_kib": samples.iter().filter_map(|s| s.rss_kib).max(),
        "vm_hwm_kib": status_kib("VmHWM"),
        "rss_flat": rss.map(|(_, _, f)| f),
    });
    let series: Vec<Value> = samples
        .iter()
        .zip(std::iter::once(None).chain(intervals.iter().map(|(_, i)| Some(*i))))
        .map(|(s, i)| sample_json(s, i))
        .collect();
    let mut line = serde_json::Map::new();
    for part in [settings, rates, rows] {
        if let Value::Object(fields) = part {
            line.extend(fields);
        }
    }
    line.insert("samples".to_owned(), Value::Array(series));
    Value::Object(line)
}

/// One sample as the JSON line carries it, with the rates of the interval that ended there.
fn sample_json(s: &Sample, i: Option<Interval>) -> Value {
    json!({
        "t_s": round1(s.t),
        "keel_jobs": s.rows[0],
        "keel_job_attempts": s.rows[1],
        "keel_events": s.rows[2],
        "keel_inbox": s.rows[3],
        "rss_kib": s.rss_kib,
        "waiting_jobs": s.enqueued.saturating_sub(s.ran),
        "drained_per_s": i.map(|i| round1(i.drained_per_s)),
        "pruned_jobs_per_s": i.map(|i| round1(i.pruned_jobs / i.seconds)),
        "pruned_rows_per_s": i.map(|i| round1(i.pruned_rows() / i.seconds)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, jobs: i64, attempts: i64, ran: u64, pruned_jobs: u64) -> Sample {
        Sample {
            t,
            rows: [jobs, attempts, jobs / 2, jobs / 2],
            rss_kib: Some(50_000),
            enqueued: ran + 100,
            published: (ran + 100) / 5,
            ran,
            pruned: BTreeMap::from([
                ("jobs".to_owned(), pruned_jobs),
                ("events".to_owned(), pruned_jobs / 2),
                ("inbox".to_owned(), pruned_jobs / 2),
            ]),
        }
    }

    #[test]
    fn attempts_pruned_come_from_the_balance() {
        let a = sample(10.0, 1000, 1000, 1000, 0);
        // 500 more runs; 700 jobs and their attempts pruned.
        let b = sample(15.0, 800, 800, 1500, 700);
        let i = Interval::between(&a, &b);
        assert_eq!(i.drained_per_s, 100.0);
        assert_eq!(i.pruned_jobs, 700.0);
        assert_eq!(i.pruned_attempts, 700.0);
        assert_eq!(i.pruned_events, 350.0);
        assert_eq!(i.pruned_rows(), 700.0 + 700.0 + 350.0 + 350.0);
    }

    #[test]
    fn flat_means_the_second_half_grew_at_most_a_fifth() {
        let flat: Vec<Sample> = (0..8)
            .map(|k| sample(40.0 + 5.0 * f64::from(k), 1000 + 10 * i64::from(k), 0, 0, 0))
            .collect();
        let (early, late, ok) = flatness(&flat, |s| s.rows[0] as f64).expect("enough samples");
        assert_eq!((early, late, ok), (1030.0, 1070.0, true));
        let growing: Vec<Sample> = (0..8)
            .map(|k| {
                sample(
                    40.0 + 5.0 * f64::from(k),
                    1000 * (i64::from(k) + 1),
                    0,
                    0,
                    0,
                )
            })
            .collect();
        assert_eq!(
            flatness(&growing, |s| s.rows[0] as f64).map(|v| v.2),
            Some(false)
        );
        assert!(flatness(&flat[..3], |s| s.rows[0] as f64).is_none());
    }

    #[test]
    fn the_summary_rates_use_the_steady_window() {
        let opts = Options {
            database_url: "sqlite:".into(),
            seconds: 60,
            retention: Duration::from_secs(10),
            sample_every: Duration::from_secs(5),
            concurrency: 8,
            batch: 10,
            event_every: 5,
            producers: 1,
            ahead: 100,
        };
        let config = RuntimeConfig::default();
        // Warm-up 10 + 2 × 5 = 20 s; from then on 1 000 jobs run and 1 000 are pruned per
        // 5 s, and the tables stay at 2 000 rows.
        let mut samples = vec![
            sample(0.0, 0, 0, 0, 0),
            sample(5.0, 1000, 1000, 1000, 0),
            sample(10.0, 2000, 2000, 2000, 0),
            sample(15.0, 3000, 3000, 3000, 0),
        ];
        for k in 0..9u64 {
            samples.push(sample(
                20.0 + 5.0 * k as f64,
                2000,
                2000,
                4000 + 1000 * k,
                1000 * (k + 1),
            ));
        }
        let v = summarize(&opts, "sqlite", &config, Some(40_000), &samples);
        assert_eq!(v["warmup_s"], 20.0);
        assert_eq!(v["drain_jobs_per_s"], 200.0);
        assert_eq!(v["pruned_jobs_per_s"], 200.0);
        assert_eq!(v["prune_to_drain_ratio"], 1.0);
        assert_eq!(v["pruned_rows_per_s"], 600.0);
        assert_eq!(v["rows_flat"], true);
        assert_eq!(v["rows_end"]["keel_jobs"], 2000);
        assert_eq!(v["rows_max"]["keel_jobs"], 3000);
        assert_eq!(v["samples"].as_array().map(Vec::len), Some(13));
        assert_eq!(v["samples"][0]["drained_per_s"], Value::Null);
    }
}
