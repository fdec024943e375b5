//! The memory scenario: this process's resident memory while it drains N no-op jobs through
//! the real worker path with M ready jobs already queued (the queue scenario's round, with
//! its `other-queue` backlog fill). Run it once per M, each in its own process, so the peak
//! (`VmHWM`) belongs to that M alone.
//!
//! The process holds the whole runtime (pool, claim loops, outcome writer, handler); on
//! SQLite it also holds the database engine and its page cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::queue::{self, BacklogKind};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server (PostgreSQL) or backend (SQLite) to run on.
    pub database_url: String,
    /// M: ready jobs queued before the measured ones.
    pub backlog: usize,
    /// N: jobs enqueued and drained.
    pub jobs: usize,
    /// The queue's concurrency while draining.
    pub concurrency: usize,
}

/// Runs one round and reports resident memory: at the start, the highest sampled (every
/// 5 ms), and the kernel's high-water mark.
///
/// # Errors
/// As the queue scenario.
pub async fn run(opts: &Options) -> anyhow::Result<Value> {
    let start_kib = status_kib("VmRSS");
    let peak = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, running) = (Arc::clone(&peak), Arc::clone(&running));
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                if let Some(kib) = status_kib("VmRSS") {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let summary = queue::run(&queue::Options {
        database_url: opts.database_url.clone(),
        jobs: opts.jobs,
        concurrency: opts.concurrency,
        batch: 500,
        backlog: opts.backlog,
        backlog_kind: BacklogKind::OtherQueue,
        callers: 1,
        latency_samples: 0,
        rounds: 1,
        single: false,
        replicas: 1,
    })
    .await;
    running.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    let summary = summary?;
    Ok(json!({
        "scenario": "memory",
        "backend": summary["backend"],
        "backlog": opts.backlog,
        "n": opts.jobs,
        "concurrency": opts.concurrency,
        "drain_jobs_per_s": summary["drain_jobs_per_s"],
        "rss_start_kib": start_kib,
        "rss_peak_sampled_kib": peak.load(Ordering::Relaxed),
        "vm_hwm_kib": status_kib("VmHWM"),
    }))
}

/// A `kB` field of `/proc/self/status` (`None` where there is no `/proc`).
pub fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib(&status, field)
}

fn parse_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::parse_kib;

    #[test]
    fn status_fields_parse() {
        let status = "VmPeak:\t  812345 kB\nVmHWM:\t   45678 kB\nVmRSS:\t   40000 kB\n";
        assert_eq!(parse_kib(status, "VmHWM"), Some(45678));
        assert_eq!(parse_kib(status, "VmRSS"), Some(40000));
        assert_eq!(parse_kib(status, "VmSwap"), None);
    }
}
