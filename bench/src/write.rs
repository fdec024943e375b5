//! The write-path scenario: sustained `POST /records` per second from K concurrent clients
//! (each request one transaction: the record, its event and the listener deliveries), with no
//! webhook endpoint; on PostgreSQL also `pgbench` with a one-row INSERT script at the same
//! client count on the same server, for the ratio.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use events::Backend;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::db::Fresh;
use crate::served::ServedApp;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server (PostgreSQL) or backend (SQLite) to run on.
    pub database_url: String,
    /// Client counts, each measured in turn.
    pub clients: Vec<usize>,
    /// How long each measurement lasts.
    pub seconds: u64,
}

/// The one-row INSERT pgbench runs.
const PGBENCH_SCRIPT: &str = "INSERT INTO bench_rows (title) VALUES ('bench record');\n";

/// Runs the scenario; one JSON object with one entry per client count.
///
/// # Errors
/// Fails when the app does not start, or pgbench cannot run.
pub async fn run(opts: &Options) -> anyhow::Result<Value> {
    let mut rows = Vec::new();
    let mut backend = Backend::Sqlite;
    for &k in &opts.clients {
        let fresh = Fresh::create(&opts.database_url).await?;
        backend = fresh.backend;
        let result = app_rate(&fresh.url, k, opts.seconds).await;
        fresh.remove().await?;
        let (ok, errors, rate) = result?;
        eprintln!("  keel, {k} client(s): {rate:.0} POST /records per s ({errors} errors)");
        let mut row = json!({
            "clients": k,
            "records_created": ok,
            "request_errors": errors,
            "keel_requests_per_s": (rate * 10.0).round() / 10.0,
        });
        if backend == Backend::Postgres {
            let tps = pgbench(&opts.database_url, k, opts.seconds).await?;
            eprintln!("  pgbench, {k} client(s): {tps:.0} TPS");
            row["pgbench_tps"] = json!((tps * 10.0).round() / 10.0);
            row["ratio"] = json!((rate / tps * 1000.0).round() / 1000.0);
        }
        rows.push(row);
    }
    Ok(json!({
        "scenario": "write",
        "backend": crate::backend_name(backend),
        "seconds": opts.seconds,
        "runs": rows,
    }))
}

/// `POST /records` from `k` clients for `seconds`, each waiting for its answer before the
/// next; returns (created, errors, created per second).
async fn app_rate(url: &str, k: usize, seconds: u64) -> anyhow::Result<(usize, usize, f64)> {
    let app = ServedApp::start(url).await?;
    let ok = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..k {
        let (api, ok, errors) = (app.api.clone(), Arc::clone(&ok), Arc::clone(&errors));
        tasks.spawn(async move {
            let mut i = c * 1_000_000;
            while Instant::now() < end {
                match api.create_record(i).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    app.shutdown().await?;
    let ok = ok.load(Ordering::Relaxed);
    Ok((ok, errors.load(Ordering::Relaxed), ok as f64 / elapsed))
}

/// `pgbench -c k -j k -T seconds -n -f script` on a scratch database of the same server;
/// its TPS (without initial connection time).
async fn pgbench(server_url: &str, k: usize, seconds: u64) -> anyhow::Result<f64> {
    let fresh = Fresh::create(server_url).await?;
    let result = async {
        let mut conn = sqlx::PgConnection::connect(&fresh.url).await?;
        sqlx::query("CREATE TABLE bench_rows (id bigserial PRIMARY KEY, title text NOT NULL)")
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let dir = tempfile::tempdir()?;
        let script = dir.path().join("insert.sql");
        std::fs::write(&script, PGBENCH_SCRIPT)?;
        let output = tokio::process::Command::new(pgbench_binary())
            .args(["-n", "-c", &k.to_string(), "-j", &k.to_string()])
            .args(["-T", &seconds.to_string(), "-f"])
            .arg(&script)
            .arg(&fresh.url)
            .output()
            .await
            .context("running pgbench")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "pgbench failed: {}{}",
                stdout,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        parse_tps(&stdout).with_context(|| format!("no TPS in pgbench's output:\n{stdout}"))
    }
    .await;
    fresh.remove().await?;
    result
}

/// pgbench: Debian's PostgreSQL 15 build when it is there, else the one on `PATH`.
pub(crate) fn pgbench_binary() -> &'static str {
    const DEBIAN: &str = "/usr/lib/postgresql/15/bin/pgbench";
    if std::path::Path::new(DEBIAN).exists() {
        DEBIAN
    } else {
        "pgbench"
    }
}

/// The figure of pgbench's `tps = 1234.5 (without initial connection time)` line.
pub(crate) fn parse_tps(output: &str) -> Option<f64> {
    output
        .lines()
        .find(|l| l.starts_with("tps = ") && l.contains("without initial connection time"))?
        .trim_start_matches("tps = ")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::parse_tps;

    #[test]
    fn pgbench_tps_line_parses() {
        let out = "latency average = 0.262 ms\n\
                   initial connection time = 2.171 ms\n\
                   tps = 3819.443301 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(3819.443301));
    }
}
