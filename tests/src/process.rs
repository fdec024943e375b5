//! Worker processes for multi-process tests: the `test-worker` binary, spawned with its
//! settings in the environment, killed with SIGKILL or stopped with SIGTERM.
//!
//! Integration tests pass `env!("CARGO_BIN_EXE_test-worker")` as the program: Cargo sets that
//! variable only when it compiles integration tests.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

/// The variable `test-worker` reads its database URL from.
pub const URL_VAR: &str = "KEEL_TEST_WORKER_URL";
/// Heartbeat interval in milliseconds.
pub const HEARTBEAT_MS_VAR: &str = "KEEL_TEST_WORKER_HEARTBEAT_MS";
/// `dead_after` in milliseconds.
pub const DEAD_AFTER_MS_VAR: &str = "KEEL_TEST_WORKER_DEAD_AFTER_MS";
/// Fallback poll interval in milliseconds.
pub const POLL_MS_VAR: &str = "KEEL_TEST_WORKER_POLL_MS";
/// Shutdown grace in milliseconds.
pub const GRACE_MS_VAR: &str = "KEEL_TEST_WORKER_GRACE_MS";

/// Timing a worker process runs with.
#[derive(Debug, Clone, Copy)]
pub struct WorkerTiming {
    /// How often it heartbeats.
    pub heartbeat: Duration,
    /// When its (and others') silent jobs are rescued.
    pub dead_after: Duration,
    /// Its fallback poll.
    pub poll: Duration,
    /// How long its jobs may run on after SIGTERM.
    pub grace: Duration,
}

impl Default for WorkerTiming {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(100),
            dead_after: Duration::from_millis(500),
            poll: Duration::from_millis(200),
            grace: Duration::from_secs(2),
        }
    }
}

/// A running `test-worker` process; killed when dropped.
#[derive(Debug)]
pub struct WorkerProcess {
    child: Child,
    pid: u32,
}

impl WorkerProcess {
    /// Starts `program` (the `test-worker` binary) on `url`.
    pub fn spawn(program: &str, url: &str, timing: WorkerTiming) -> Self {
        let ms = |d: Duration| d.as_millis().to_string();
        let child = Command::new(program)
            .env(URL_VAR, url)
            .env(HEARTBEAT_MS_VAR, ms(timing.heartbeat))
            .env(DEAD_AFTER_MS_VAR, ms(timing.dead_after))
            .env(POLL_MS_VAR, ms(timing.poll))
            .env(GRACE_MS_VAR, ms(timing.grace))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let pid = child.id().expect("a freshly spawned child has a pid");
        Self { child, pid }
    }

    /// Its process id (what the testkit records as `pid`).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills it with SIGKILL and reaps it: no shutdown, no hand-back, no last heartbeat.
    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// Sends SIGTERM and waits (up to `within`) for it to exit.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {} failed", self.pid);
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "worker {} did not exit within {within:?} of SIGTERM",
                    self.pid
                )
            })
            .unwrap()
    }
}
