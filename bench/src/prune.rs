//! The prune scenario: how fast the maintenance leader deletes what retention lets go —
//! its capacity, not the rate a steady load happens to offer it.
//!
//! It seeds N finished jobs past retention, each with one attempt, an event that caused it
//! and an inbox entry (set-based, not measured), then runs the leader's real rounds
//! (`Workers::maintain_now`, the lease, rescue, statistics and the time-budgeted prune)
//! back to back until every seeded row is gone. The figure to hold beside it is the best
//! drain rate: the pruner must be able to delete finished jobs at least twice as fast as
//! workers finish them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use events::{Backend, Module, SystemClock};
use runtime::alerts::LogAlerts;
use runtime::{Runtime, RuntimeConfig};
use serde_json::{Value, json};

use crate::db::Fresh;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server (PostgreSQL) or backend (SQLite) to run on.
    pub database_url: String,
    /// N: finished jobs (with one attempt, one event and one inbox entry each) to prune.
    pub jobs: usize,
}

/// Seeds, prunes to empty, and reports rows per second.
///
/// # Errors
/// Fails when the database does.
pub async fn run(opts: &Options) -> anyhow::Result<Value> {
    let fresh = Fresh::create(&opts.database_url).await?;
    let result = round(opts, &fresh).await;
    fresh.remove().await?;
    result
}

async fn round(opts: &Options, fresh: &Fresh) -> anyhow::Result<Value> {
    let db = runtime::connect(&fresh.url, 4).await?;
    let config = RuntimeConfig {
        retention: Duration::from_secs(3600),
        // Long rounds, as a leader has while it is behind: 80 % of the interval prunes.
        heartbeat_interval: Duration::from_secs(5),
        dead_after: Duration::from_secs(60),
        ..RuntimeConfig::default()
    };
    let rt = Runtime::new(
        db.clone(),
        fresh.url.clone(),
        Arc::new(SystemClock),
        config,
        Arc::new(LogAlerts),
    );
    let module = Module {
        name: "bench",
        migrations: Vec::new(),
        publishes: Vec::new(),
        listeners: Vec::new(),
        jobs: Vec::new(),
        schedules: Vec::new(),
        routes: axum::Router::new(),
        retention: Vec::new(),
    };
    rt.migrate(&[&module]).await?;
    rt.install(&[&module])?;
    let t = Instant::now();
    seed(&rt, opts.jobs).await?;
    eprintln!(
        "  seeded {} finished jobs in {:.1} s",
        opts.jobs,
        t.elapsed().as_secs_f64()
    );
    let workers = rt.start_workers(Some(Vec::new())).await?;
    let t = Instant::now();
    let mut rounds = 0;
    loop {
        workers.maintain_now().await?;
        rounds += 1;
        let left: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM keel_jobs) + (SELECT COUNT(*) FROM keel_events) \
             + (SELECT COUNT(*) FROM keel_inbox)",
        )
        .fetch_one(db.pool())
        .await?;
        if left == 0 {
            break;
        }
    }
    let seconds = t.elapsed().as_secs_f64();
    let left = |table: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM {table}"
            )))
            .fetch_one(db.pool())
            .await
        }
    };
    let (attempts, events, inbox) = (
        left("keel_job_attempts").await?,
        left("keel_events").await?,
        left("keel_inbox").await?,
    );
    workers.shutdown().await;
    let jobs_per_s = opts.jobs as f64 / seconds;
    Ok(json!({
        "scenario": "prune",
        "backend": crate::backend_name(fresh.backend),
        "n": opts.jobs,
        "rounds": rounds,
        "prune_seconds": (seconds * 1000.0).round() / 1000.0,
        "prune_jobs_per_s": jobs_per_s.round(),
        // Each job takes its attempt, its event and its inbox entry with it.
        "prune_rows_per_s": (jobs_per_s * 4.0).round(),
        "left_attempts": attempts,
        "left_events": events,
        "left_inbox": inbox,
    }))
}

/// Writes `n` finished jobs two hours old, each with an attempt, the event that caused it
/// and an inbox entry, in set-based statements.
async fn seed(rt: &Runtime, n: usize) -> anyhow::Result<()> {
    let old = rt.clock().now().timestamp_millis() - 2 * 3600 * 1000;
    let series = match rt.db().backend() {
        Backend::Postgres => "SELECT gen_random_uuid()::text AS u FROM generate_series(1, $2) g",
        Backend::Sqlite => {
            "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < $2) \
             SELECT lower(hex(randomblob(16))) AS u FROM g"
        }
    };
    let mut tx = rt.db().begin().await?;
    sqlx::query("CREATE TEMPORARY TABLE bench_ids (u TEXT PRIMARY KEY)")
        .execute(&mut *tx)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO bench_ids (u) SELECT u FROM ({series}) s WHERE $1 = $1"
    )))
    .bind(old)
    .bind(i64::try_from(n)?)
    .execute(&mut *tx)
    .await?;
    for sql in [
        "INSERT INTO keel_events (id, name, version, occurred_at, correlation_id, payload) \
         SELECT 'e' || u, 'bench.happened', 1, $1, u, '{}' FROM bench_ids",
        "INSERT INTO keel_jobs (id, queue, job_type, payload, state, priority, run_at, attempt, \
         max_attempts, idempotency_key, correlation_id, causation_id, enqueued_at, started_at, \
         finished_at) SELECT u, 'events', 'bench.noop', '{}', 'completed', 0, $1, 1, 6, u, u, \
         'e' || u, $1, $1, $1 FROM bench_ids",
        "INSERT INTO keel_job_attempts (job_id, attempt, worker, started_at, finished_at, outcome) \
         SELECT u, 1, 'bench', $1, $1, 'completed' FROM bench_ids",
        "INSERT INTO keel_inbox (handler, key, processed_at) SELECT 'bench', u, $1 FROM bench_ids",
        "DROP TABLE bench_ids",
    ] {
        sqlx::query(sql).bind(old).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    if rt.db().backend() == Backend::Postgres {
        sqlx::query("ANALYZE").execute(rt.db().pool()).await?;
    }
    Ok(())
}
