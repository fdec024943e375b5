//! `keel-peer-apalis`: apalis + apalis-postgres draining N no-op jobs, one of Keel's
//! benchmark peers (issue 7, scenario 6). `keel-bench peers` builds and runs it.
//!
//! ```text
//! keel-peer-apalis --database-url postgres://… --jobs N --concurrency C
//!                  [--fetch 10] [--batch 500] [--callers 4]
//! ```
//!
//! On a fresh database `keel_peer_<uuid>` (created through the server of the URL given, and
//! dropped `WITH (FORCE)` at the end) it runs apalis-postgres's migrations, pushes N no-op
//! jobs with `push_bulk` in chunks of `--batch` (timed), then drains them with one worker at
//! `.concurrency(C)` fetching `--fetch` jobs per query (apalis's `batch_size`, default 10), and
//! times until every job is `Done` in `apalis.jobs`. With `--callers K` > 0 it then measures
//! one job per transaction (`push`) from K concurrent callers, no worker running. Prints one
//! JSON line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use apalis::prelude::*;
use apalis_postgres::{Config, PostgresStorage};
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgPoolOptions};

/// The apalis queue (its `job_type` column) the measured jobs go to.
const QUEUE: &str = "keel_bench_noop";

/// Jobs the no-op handler has run.
static RAN: AtomicUsize = AtomicUsize::new(0);

/// What to run.
#[derive(Debug)]
struct Options {
    database_url: String,
    jobs: usize,
    concurrency: usize,
    fetch: usize,
    batch: usize,
    callers: usize,
}

fn parse() -> anyhow::Result<Options> {
    let mut opts = Options {
        database_url: String::new(),
        jobs: 0,
        concurrency: 0,
        fetch: 10,
        batch: 500,
        callers: 4,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .with_context(|| format!("`{name}` needs a value"))?,
        };
        let number = |v: &str| -> anyhow::Result<usize> {
            v.replace('_', "")
                .parse()
                .with_context(|| format!("`{name}`: not a count: {v}"))
        };
        match name.as_str() {
            "--database-url" => opts.database_url = value,
            "--jobs" => opts.jobs = number(&value)?,
            "--concurrency" => opts.concurrency = number(&value)?,
            "--fetch" => opts.fetch = number(&value)?,
            "--batch" => opts.batch = number(&value)?,
            "--callers" => opts.callers = number(&value)?,
            other => bail!("unexpected argument `{other}`"),
        }
    }
    if opts.database_url.is_empty() {
        bail!("`--database-url` is required");
    }
    if opts.jobs == 0 || opts.concurrency == 0 || opts.fetch == 0 || opts.batch == 0 {
        bail!("`--jobs`, `--concurrency`, `--fetch` and `--batch` must be at least 1");
    }
    Ok(opts)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = async {
        let opts = parse()?;
        let name = format!("keel_peer_{}", uuid::Uuid::new_v4().simple());
        let url = with_database(&opts.database_url, &name)?;
        let mut admin = PgConnection::connect(&opts.database_url)
            .await
            .with_context(|| format!("connecting to {}", opts.database_url))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
        let outcome = bench(&opts, &url).await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .with_context(|| format!("dropping database {name}"))?;
        admin.close().await?;
        outcome
    }
    .await;
    match result {
        Ok(line) => {
            println!("{line}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keel-peer-apalis: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The no-op job: counts its runs.
async fn noop(_i: u64) -> Result<(), BoxDynError> {
    RAN.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn bench(opts: &Options, url: &str) -> anyhow::Result<serde_json::Value> {
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    PostgresStorage::setup(&pool)
        .await
        .context("running apalis-postgres's migrations")?;
    let config = Config::default().queue(QUEUE).batch_size(opts.fetch);
    let mut storage = PostgresStorage::<u64>::new(&pool).with_config(config);

    // Bulk enqueue: `push_bulk` of `batch` jobs at a time (one INSERT … UNNEST per chunk).
    let t = Instant::now();
    let mut next = 0;
    while next < opts.jobs {
        let end = (next + opts.batch).min(opts.jobs);
        let chunk: Vec<u64> = (next as u64..end as u64).collect();
        storage
            .push_bulk(chunk)
            .await
            .map_err(|e| anyhow::anyhow!("push_bulk: {e}"))?;
        next = end;
    }
    let enqueue = opts.jobs as f64 / t.elapsed().as_secs_f64();
    eprintln!(
        "  apalis: enqueue, {} per push_bulk: {enqueue:.0} jobs/s",
        opts.batch
    );

    // Drain: from starting the worker until every job is `Done` in the table.
    let ctx = WorkerContext::new("keel-bench-apalis");
    let worker = WorkerBuilder::new(ctx.clone())
        .backend(storage.clone())
        .concurrency(opts.concurrency)
        .build(noop);
    let t = Instant::now();
    let running = tokio::spawn(async move { worker.run().await });
    let target = i64::try_from(opts.jobs)?;
    let mut last = (0, Instant::now());
    loop {
        let ran = RAN.load(Ordering::Relaxed);
        if ran >= opts.jobs {
            let done: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'",
            )
            .bind(QUEUE)
            .fetch_one(&pool)
            .await?;
            if done >= target {
                break;
            }
        }
        if ran != last.0 {
            last = (ran, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(60) {
            bail!("drain stalled at {ran}/{} jobs run", opts.jobs);
        }
        if running.is_finished() {
            bail!("the apalis worker stopped at {ran}/{} jobs run", opts.jobs);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let drain_seconds = t.elapsed().as_secs_f64();
    let drain = opts.jobs as f64 / drain_seconds;
    eprintln!(
        "  apalis: drain at concurrency {}, fetch {}: {drain:.0} jobs/s ({drain_seconds:.2} s)",
        opts.concurrency, opts.fetch
    );
    ctx.stop()
        .map_err(|e| anyhow::anyhow!("stopping the worker: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(30), running).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("  apalis: worker ended with: {e}"),
        Ok(Err(e)) => eprintln!("  apalis: worker task failed: {e}"),
        Err(_) => eprintln!("  apalis: worker did not stop within 30 s"),
    }

    // One job per transaction (`push`) from several callers, no worker running.
    let single = if opts.callers > 0 {
        let t = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..opts.callers {
            let share = opts.jobs / opts.callers + usize::from(c < opts.jobs % opts.callers);
            let mut storage = storage.clone();
            tasks.spawn(async move {
                for i in 0..share {
                    storage
                        .push(i as u64)
                        .await
                        .map_err(|e| anyhow::anyhow!("push: {e}"))?;
                }
                Ok::<(), anyhow::Error>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let rate = opts.jobs as f64 / t.elapsed().as_secs_f64();
        eprintln!(
            "  apalis: enqueue, 1 per tx from {} callers: {rate:.0} jobs/s",
            opts.callers
        );
        Some(rate)
    } else {
        None
    };
    pool.close().await;

    let round1 = |x: f64| (x * 10.0).round() / 10.0;
    Ok(serde_json::json!({
        "scenario": "peer",
        "peer": "apalis-postgres",
        "mode": format!("fetch-{}", opts.fetch),
        "version": APALIS_POSTGRES_VERSION,
        "apalis_version": APALIS_VERSION,
        "backend": "postgres",
        "n": opts.jobs,
        "concurrency": opts.concurrency,
        "batch": opts.batch,
        "enqueue_jobs_per_s": round1(enqueue),
        "drain_jobs_per_s": round1(drain),
        "drain_seconds": (drain_seconds * 1000.0).round() / 1000.0,
        "enqueue_single_jobs_per_s": single.map(round1),
        "enqueue_callers": opts.callers,
    }))
}

/// The versions resolved in `Cargo.lock` (read by `build.rs`).
const APALIS_VERSION: &str = env!("KEEL_PEER_APALIS_VERSION");
/// See [`APALIS_VERSION`].
const APALIS_POSTGRES_VERSION: &str = env!("KEEL_PEER_APALIS_POSTGRES_VERSION");

/// `url` with its database name replaced by `name` (query string kept).
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let Some(scheme_end) = url.find("://") else {
        bail!("not a PostgreSQL URL: {url}");
    };
    let after = scheme_end + 3;
    let (base, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let authority_end = base[after..].find('/').map_or(base.len(), |i| after + i);
    Ok(format!("{}/{name}{query}", &base[..authority_end]))
}
