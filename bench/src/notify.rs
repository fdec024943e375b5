//! The cost of waking replicas with `NOTIFY`, measured on PostgreSQL itself: how many
//! one-row `INSERT`s per second K pgbench clients commit into a table with Keel's wake-up
//! trigger (a statement-level `AFTER INSERT` that calls `pg_notify`, as `keel_jobs` has) and
//! with the trigger disabled, rounds interleaved, while one connection `LISTEN`s. A
//! transaction that notified takes one database-wide lock from its commit's start to its end,
//! so notifying commits run one at a time; the gap between the two rates is what that costs.
//!
//! Beside it, what one round trip costs when the machine was idle just before: pgbench's
//! latency of `SELECT 1` back to back and after a 10 ms pause. Keel's idle-chain figures are
//! sums of such round trips.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::postgres::PgListener;

use crate::db::Fresh;
use crate::write::{parse_tps, pgbench_binary};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The PostgreSQL server (a fresh database is made on it).
    pub database_url: String,
    /// Client counts, each measured with and without the trigger.
    pub clients: Vec<usize>,
    /// How long each pgbench run lasts.
    pub seconds: u64,
}

const SCHEMA: &str = r"
CREATE TABLE notify_probe (id bigserial PRIMARY KEY, queue text NOT NULL);
CREATE FUNCTION notify_probe() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('notify_probe', 'default');
    RETURN NULL;
END $$;
CREATE TRIGGER notify_probe AFTER INSERT ON notify_probe
    FOR EACH STATEMENT EXECUTE FUNCTION notify_probe();
";

const INSERT: &str = "INSERT INTO notify_probe (queue) VALUES ('default');\n";
const ROUND_TRIP: &str = "SELECT 1;\n";
const ROUND_TRIP_AFTER_IDLE: &str = "SELECT 1;\n\\sleep 10 ms\n";

/// Runs the scenario; one JSON object.
///
/// # Errors
/// Fails on SQLite, or when pgbench cannot run.
pub async fn run(opts: &Options) -> anyhow::Result<Value> {
    let fresh = Fresh::create(&opts.database_url).await?;
    if fresh.backend != events::Backend::Postgres {
        fresh.remove().await?;
        bail!("the notify scenario measures PostgreSQL: give a postgres:// URL");
    }
    let result = measure(&fresh.url, opts).await;
    fresh.remove().await?;
    result
}

async fn measure(url: &str, opts: &Options) -> anyhow::Result<Value> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::raw_sql(SCHEMA).execute(&mut conn).await?;
    let mut listener = PgListener::connect(url).await?;
    listener.listen("notify_probe").await?;
    // Drained as they come, as a replica's `LISTEN` connection is.
    let drain = tokio::spawn(async move { while listener.recv().await.is_ok() {} });

    let dir = tempfile::tempdir()?;
    let script = |name: &str, text: &str| -> anyhow::Result<std::path::PathBuf> {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    };
    let insert = script("insert.sql", INSERT)?;
    let mut rows = Vec::new();
    for &k in &opts.clients {
        let mut rates = [0.0_f64; 2];
        for (i, mode) in ["ENABLE", "DISABLE"].iter().enumerate() {
            let toggle = format!("ALTER TABLE notify_probe {mode} TRIGGER notify_probe");
            sqlx::query(sqlx::AssertSqlSafe(toggle))
                .execute(&mut conn)
                .await?;
            let out = pgbench(url, &insert, k, opts.seconds, false).await?;
            rates[i] = parse_tps(&out).with_context(|| format!("no TPS in:\n{out}"))?;
        }
        eprintln!(
            "  {k} client(s): {:.0} inserts/s notifying, {:.0} without",
            rates[0], rates[1]
        );
        rows.push(json!({
            "clients": k,
            "notifying_inserts_per_s": rates[0].round(),
            "plain_inserts_per_s": rates[1].round(),
            "ratio": (rates[0] / rates[1] * 1000.0).round() / 1000.0,
        }));
    }
    drain.abort();

    let back_to_back =
        statement_ms(&pgbench(url, &script("rt.sql", ROUND_TRIP)?, 1, opts.seconds, true).await?)?;
    let after_idle = statement_ms(
        &pgbench(
            url,
            &script("idle.sql", ROUND_TRIP_AFTER_IDLE)?,
            1,
            opts.seconds,
            true,
        )
        .await?,
    )?;
    eprintln!("  SELECT 1: {back_to_back:.3} ms back to back, {after_idle:.3} ms after 10 ms idle");
    Ok(json!({
        "scenario": "notify",
        "backend": "postgres",
        "seconds": opts.seconds,
        "rows": rows,
        "select1_back_to_back_ms": back_to_back,
        "select1_after_10ms_idle_ms": after_idle,
    }))
}

/// pgbench's output for `script` from `k` clients (with per-statement latencies when
/// `report` is set).
async fn pgbench(
    url: &str,
    script: &std::path::Path,
    k: usize,
    seconds: u64,
    report: bool,
) -> anyhow::Result<String> {
    let mut command = tokio::process::Command::new(pgbench_binary());
    command
        .args(["-n", "-M", "prepared", "-c", &k.to_string()])
        .args(["-j", &k.min(2).to_string(), "-T", &seconds.to_string()]);
    if report {
        command.arg("-r");
    }
    let output = command
        .arg("-f")
        .arg(script)
        .arg(url)
        .output()
        .await
        .context("running pgbench")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "pgbench failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// The latency of the `SELECT 1` line in pgbench's `-r` report (ms).
fn statement_ms(output: &str) -> anyhow::Result<f64> {
    output
        .lines()
        .find(|l| l.trim_end().ends_with("SELECT 1;"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|ms| ms.parse().ok())
        .with_context(|| format!("no SELECT 1 latency in pgbench's report:\n{output}"))
}

#[cfg(test)]
mod tests {
    use super::statement_ms;

    #[test]
    fn the_statement_latency_is_read_from_the_report() {
        let report = "statement latencies in milliseconds and failures:\n         0.300           0  SELECT 1;\n        10.097           0  \\sleep 10 ms\n";
        assert!((statement_ms(report).unwrap_or_default() - 0.300).abs() < 1e-9);
        assert!(statement_ms("nothing").is_err());
    }
}
