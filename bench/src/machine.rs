//! What the figures were measured on: the machine (cores, CPU model, memory, load), the tool
//! versions (rustc, node, the commit measured) and the database servers (PostgreSQL's
//! `server_version` and commit settings, SQLite's library version), as one JSON object.
//!
//! Everything is best effort: a fact that cannot be read is `null` (or an `…_error` text),
//! never a failure of the suite.

use std::process::Command;

use serde_json::{Value, json};
use sqlx::Connection;

/// Reads every fact now; `pg_url` is the PostgreSQL server the suite runs on (`None` when
/// PostgreSQL is skipped).
pub async fn describe(pg_url: Option<&str>) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mut facts = json!({
        "scenario": "machine",
        "nproc": std::thread::available_parallelism().map(usize::from).ok(),
        "cpu_model": cpu_model(&cpuinfo),
        "mem_total_kib": mem_total_kib(&meminfo),
        "kernel": read_trimmed("/proc/sys/kernel/osrelease"),
        "loadavg": loadavg(),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "rustc": command_output("rustc", &["--version"]),
        "node": command_output("node", &["--version"]),
        "git_commit": command_output("git", &["rev-parse", "--short=12", "HEAD"]),
        "git_dirty": command_output("git", &["status", "--porcelain", "--untracked-files=no"])
            .map(|s| !s.is_empty()),
        "sqlite_version": sqlite_version().await,
    });
    if let Some(url) = pg_url {
        match postgres_settings(url).await {
            Ok(settings) => facts["postgres"] = settings,
            Err(e) => facts["postgres_error"] = json!(format!("{e:#}")),
        }
    }
    facts
}

/// The 1-, 5- and 15-minute load averages of `/proc/loadavg` (`None` without `/proc`).
pub fn loadavg() -> Option<[f64; 3]> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    Some([it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?])
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The first line a program prints (`None` when it cannot run or fails).
fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn sqlite_version() -> Option<String> {
    let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
        .await
        .ok()?;
    let version: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&mut conn)
        .await
        .ok()?;
    let _ = conn.close().await;
    Some(version)
}

/// `SHOW` of the settings that decide commit cost, on the server the suite uses.
async fn postgres_settings(url: &str) -> anyhow::Result<Value> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let mut settings = serde_json::Map::new();
    for name in [
        "server_version",
        "synchronous_commit",
        "shared_buffers",
        "fsync",
        "max_connections",
    ] {
        let value: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(&mut conn)
            .await?;
        settings.insert(name.to_owned(), json!(value));
    }
    conn.close().await?;
    Ok(Value::Object(settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor : 0\n"), None);
        let meminfo = "MemTotal:       24634720 kB\nMemFree:        1 kB\n";
        assert_eq!(mem_total_kib(meminfo), Some(24_634_720));
        assert_eq!(
            parse_loadavg("0.52 1.10 2.00 1/234 5678\n"),
            Some([0.52, 1.10, 2.00])
        );
        assert_eq!(parse_loadavg(""), None);
    }
}
