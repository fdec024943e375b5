//! A worker process for multi-process tests: connects to `KEEL_TEST_WORKER_URL`, installs
//! the testkit module, runs workers on every queue, and on SIGTERM shuts down gracefully and
//! exits 0. Timing comes from the `KEEL_TEST_WORKER_*_MS` variables (see
//! `tests::process`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use events::SystemClock;
use runtime::Runtime;
use runtime::alerts::LogAlerts;
use tests::harness::test_config;
use tests::process::{DEAD_AFTER_MS_VAR, GRACE_MS_VAR, HEARTBEAT_MS_VAR, POLL_MS_VAR, URL_VAR};
use tests::testkit::Kit;
use tokio::signal::unix::{SignalKind, signal};

fn millis(var: &str, default: u64) -> Result<Duration, String> {
    match std::env::var(var) {
        Ok(v) => v
            .parse()
            .map(Duration::from_millis)
            .map_err(|e| format!("{var}={v}: {e}")),
        Err(_) => Ok(Duration::from_millis(default)),
    }
}

async fn run() -> Result<(), String> {
    let url = std::env::var(URL_VAR).map_err(|_| format!("{URL_VAR} is not set"))?;
    let mut config = test_config();
    config.heartbeat_interval = millis(HEARTBEAT_MS_VAR, 100)?;
    config.dead_after = millis(DEAD_AFTER_MS_VAR, 500)?;
    config.poll_interval = millis(POLL_MS_VAR, 200)?;
    config.shutdown_grace = millis(GRACE_MS_VAR, 2000)?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let db = runtime::connect(&url, 8).await.map_err(|e| e.to_string())?;
    let runtime = Runtime::new(
        db.clone(),
        url,
        Arc::new(SystemClock),
        config,
        Arc::new(LogAlerts),
    );
    let kit = Kit::new(db, runtime.outbox(), runtime.jobs());
    let module = kit.module();
    runtime.install(&[&module]).map_err(|e| e.to_string())?;
    runtime
        .migrate(&[&module])
        .await
        .map_err(|e| e.to_string())?;
    let workers = runtime
        .start_workers(None)
        .await
        .map_err(|e| e.to_string())?;
    term.recv().await;
    workers.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("test-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
