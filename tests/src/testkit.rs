//! The `testkit` module: job handlers and listeners that do what the test tells them, and
//! record what happened in `testkit_…` tables so tests can assert on it.
//!
//! A job's behaviour is its payload, a [`Plan`] — so it works the same in this process and
//! in a `test-worker` process. Every run is recorded in `testkit_runs` (job, attempt,
//! process id, trace ids, start and end); a run that starts while another run of the same
//! job is still going (in any live process) is recorded in `testkit_violations`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use events::jobs::{HandleJob, JobDetail, typed};
use events::outbox::OutboxExt;
use events::{
    Db, DbConn, Dispatch, Event, EventEnvelope, EventKey, Job, JobContext, JobError, JobQueue,
    Listener, Migration, Module, NewJob, Outbox,
};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// The queue testkit jobs run on.
pub const QUEUE: &str = "testkit";

/// The testkit's tables.
pub const MIGRATION: Migration = Migration::portable(
    2099010100,
    "testkit: runs, running, violations, effects, flags, seen",
    r#"
CREATE TABLE testkit_runs (
    job_id          TEXT NOT NULL,
    job_type        TEXT NOT NULL,
    key             TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    pid             BIGINT NOT NULL,
    correlation_id  TEXT NOT NULL,
    causation_id    TEXT,
    idempotency_key TEXT NOT NULL,
    started_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    outcome         TEXT
);
CREATE INDEX testkit_runs_job ON testkit_runs (job_id);
CREATE TABLE testkit_running (
    job_id  TEXT PRIMARY KEY,
    pid     BIGINT NOT NULL,
    attempt INTEGER NOT NULL
);
CREATE TABLE testkit_violations (
    job_id TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE testkit_effects (
    key     TEXT NOT NULL,
    job_id  TEXT NOT NULL,
    attempt INTEGER NOT NULL
);
CREATE TABLE testkit_flags (
    name TEXT PRIMARY KEY
);
CREATE TABLE testkit_seen (
    listener       TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    key            TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    causation_id   TEXT
);
"#,
);

/// What a testkit job does when it runs; every field is optional (`Plan::new(key)` succeeds).
///
/// The steps, in order: hang, panic, sleep, hold a connection, publish, guarded effect, fail,
/// cancel. Failing comes after the effects on purpose: it models a handler that did its work
/// and crashed before the runtime heard of it, which is what the inbox guard exists for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Plan {
    /// A label the test finds the job's runs and effects by.
    pub key: String,
    /// Dedupe key for the enqueue ([`Job::unique_key`]).
    pub unique: Option<String>,
    /// Attempts `1..=hang_attempts` never finish.
    pub hang_attempts: u32,
    /// Attempts `1..=panic_attempts` panic.
    pub panic_attempts: u32,
    /// Each attempt sleeps this long before its effects.
    pub sleep_ms: u64,
    /// Each attempt holds one connection of the handlers' pool this long (after its sleep).
    pub hold_connection_ms: u64,
    /// Publish `testkit.happened {key}` in a transaction of its own.
    pub publish: bool,
    /// Insert into `testkit_effects` behind the inbox guard (`mark_processed` with the job's
    /// idempotency key).
    pub guarded_effect: bool,
    /// Attempts `1..=fail_attempts` fail with `boom <attempt>`.
    pub fail_attempts: u32,
    /// Every attempt fails with `boom <attempt>` while the flag of this name is set.
    pub fail_while_flag: Option<String>,
    /// Stop the job without retrying.
    pub cancel: bool,
}

impl Plan {
    /// A plan that succeeds.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            ..Self::default()
        }
    }

    /// Fails the first `n` attempts with `boom <attempt>`.
    #[must_use]
    pub fn fail(mut self, n: u32) -> Self {
        self.fail_attempts = n;
        self
    }

    /// Fails while the flag `name` is set (see [`Kit::set_flag`]).
    #[must_use]
    pub fn fail_while(mut self, name: impl Into<String>) -> Self {
        self.fail_while_flag = Some(name.into());
        self
    }

    /// Hangs on the first `n` attempts.
    #[must_use]
    pub fn hang(mut self, n: u32) -> Self {
        self.hang_attempts = n;
        self
    }

    /// Panics on the first `n` attempts.
    #[must_use]
    pub fn panic(mut self, n: u32) -> Self {
        self.panic_attempts = n;
        self
    }

    /// Sleeps `ms` milliseconds in every attempt.
    #[must_use]
    pub fn sleep_ms(mut self, ms: u64) -> Self {
        self.sleep_ms = ms;
        self
    }

    /// Holds a connection of the handlers' pool for `ms` milliseconds in every attempt.
    #[must_use]
    pub fn hold_connection_ms(mut self, ms: u64) -> Self {
        self.hold_connection_ms = ms;
        self
    }

    /// Publishes `testkit.happened` when it runs.
    #[must_use]
    pub fn publish(mut self) -> Self {
        self.publish = true;
        self
    }

    /// Performs its effect behind the inbox guard.
    #[must_use]
    pub fn guarded_effect(mut self) -> Self {
        self.guarded_effect = true;
        self
    }

    /// Dedupes on `key`.
    #[must_use]
    pub fn unique(mut self, key: impl Into<String>) -> Self {
        self.unique = Some(key.into());
        self
    }

    /// Cancels itself.
    #[must_use]
    pub fn cancel(mut self) -> Self {
        self.cancel = true;
        self
    }
}

/// The testkit's ordinary job: `testkit.run` on the `testkit` queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Run(pub Plan);

impl Job for Run {
    const TYPE: &'static str = "testkit.run";
    const QUEUE: &'static str = QUEUE;

    fn unique_key(&self) -> Option<String> {
        self.0.unique.clone()
    }
}

/// The same behaviour under another type name, for per-job-type policy overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Limited(pub Plan);

impl Job for Limited {
    const TYPE: &'static str = "testkit.limited";
    const QUEUE: &'static str = QUEUE;

    fn unique_key(&self) -> Option<String> {
        self.0.unique.clone()
    }
}

/// The event testkit jobs publish and testkit listeners consume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Happened {
    /// The publishing plan's key.
    pub key: String,
    /// Makes [`FLAKY_LISTENER`] fail on this event.
    #[serde(default)]
    pub flaky: bool,
}

impl Event for Happened {
    const NAME: &'static str = "testkit.happened";
    const VERSION: u32 = 1;
}

/// An event no listener consumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ignored {
    /// A label.
    pub key: String,
}

impl Event for Ignored {
    const NAME: &'static str = "testkit.ignored";
    const VERSION: u32 = 1;
}

/// An event fanned out by [`INLINE_LISTENER`], which runs in the publisher's transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fanned {
    /// A label; the fanned-out job's plan key.
    pub key: String,
}

impl Event for Fanned {
    const NAME: &'static str = "testkit.fanned";
    const VERSION: u32 = 1;
}

/// The flag that makes [`INLINE_LISTENER`] fail.
pub const INLINE_DOWN: &str = "inline-listener-down";
/// The [`Dispatch::Inline`] listener: records each `testkit.fanned` and enqueues one
/// `testkit.run` job for it; fails while the flag [`INLINE_DOWN`] is set.
pub const INLINE_LISTENER: &str = "testkit.on_fanned_fan_out";

/// The listener that records every `testkit.happened` it handles.
pub const RECORDING_LISTENER: &str = "testkit.on_happened_record";
/// The listener that fails on events marked `flaky` and records the others.
pub const FLAKY_LISTENER: &str = "testkit.on_happened_flaky";

/// What the testkit's handlers need: the database and the ports.
#[derive(Debug)]
pub struct Kit {
    db: Db,
    outbox: Arc<dyn Outbox>,
    jobs: Arc<dyn JobQueue>,
}

impl Kit {
    /// A kit writing through `db` and the runtime's ports.
    pub fn new(db: Db, outbox: Arc<dyn Outbox>, jobs: Arc<dyn JobQueue>) -> Arc<Self> {
        Arc::new(Self { db, outbox, jobs })
    }

    /// The `testkit` module: its migration, its two job types and its two listeners.
    pub fn module(self: &Arc<Self>) -> Module {
        Module {
            name: "testkit",
            migrations: vec![MIGRATION],
            publishes: vec![Happened::key(), Ignored::key(), Fanned::key()],
            listeners: vec![
                Arc::new(Recorder {
                    name: RECORDING_LISTENER,
                    fail_on_flaky: false,
                }),
                Arc::new(Recorder {
                    name: FLAKY_LISTENER,
                    fail_on_flaky: true,
                }),
                Arc::new(FanOut { kit: self.clone() }),
            ],
            jobs: vec![
                typed::<Run, _>(Runner { kit: self.clone() }),
                typed::<Limited, _>(Runner { kit: self.clone() }),
            ],
            schedules: Vec::new(),
            routes: axum::Router::new(),
            retention: Vec::new(),
        }
    }

    /// Sets the flag `name` (see [`Plan::fail_while`]).
    pub async fn set_flag(&self, name: &str) {
        sqlx::query("INSERT INTO testkit_flags (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .execute(self.db.pool())
            .await
            .unwrap();
    }

    /// Clears the flag `name`.
    pub async fn clear_flag(&self, name: &str) {
        sqlx::query("DELETE FROM testkit_flags WHERE name = $1")
            .bind(name)
            .execute(self.db.pool())
            .await
            .unwrap();
    }

    async fn flag_is_set(&self, name: &str) -> Result<bool, sqlx::Error> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM testkit_flags WHERE name = $1")
            .bind(name)
            .fetch_one(self.db.pool())
            .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    async fn start_run(
        &self,
        job_type: &str,
        plan: &Plan,
        ctx: &JobContext,
    ) -> Result<RunGuard, sqlx::Error> {
        let job_id = ctx.id.to_string();
        let pid = i64::from(std::process::id());
        let attempt = i32::try_from(ctx.attempt).unwrap_or(i32::MAX);
        sqlx::query(
            "INSERT INTO testkit_runs (job_id, job_type, key, attempt, pid, correlation_id, \
             causation_id, idempotency_key, started_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&job_id)
        .bind(job_type)
        .bind(&plan.key)
        .bind(attempt)
        .bind(pid)
        .bind(ctx.trace.correlation_id.as_str())
        .bind(ctx.trace.causation_id.map(|c| c.to_string()))
        .bind(&ctx.idempotency_key)
        .bind(wall_ms())
        .execute(self.db.pool())
        .await?;
        let already_here = !local_running().insert(job_id.clone());
        // From here on, whatever fails, the guard's drop forgets this run again.
        let guard = RunGuard {
            db: self.db.clone(),
            job_id: job_id.clone(),
            pid,
            attempt,
            owns_local: !already_here,
        };
        if already_here {
            self.violation(
                &job_id,
                format!("attempt {attempt} started while this process was still running the job"),
            )
            .await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO testkit_running (job_id, pid, attempt) VALUES ($1, $2, $3) \
             ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(&job_id)
        .bind(pid)
        .bind(attempt)
        .execute(self.db.pool())
        .await?
        .rows_affected();
        if inserted == 0 {
            let row = sqlx::query("SELECT pid, attempt FROM testkit_running WHERE job_id = $1")
                .bind(&job_id)
                .fetch_one(self.db.pool())
                .await?;
            let holder: i64 = row.try_get("pid")?;
            let holder_attempt: i32 = row.try_get("attempt")?;
            // A row left by a run that was aborted here, or by a process that has died, is
            // stale; a row of a live other process means two runs at once.
            if holder != pid && process_alive(holder) {
                self.violation(
                    &job_id,
                    format!("attempt {attempt} in process {pid} started while attempt {holder_attempt} was running in process {holder}"),
                )
                .await?;
            }
            sqlx::query("UPDATE testkit_running SET pid = $1, attempt = $2 WHERE job_id = $3")
                .bind(pid)
                .bind(attempt)
                .bind(&job_id)
                .execute(self.db.pool())
                .await?;
        }
        Ok(guard)
    }

    async fn violation(&self, job_id: &str, detail: String) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO testkit_violations (job_id, detail) VALUES ($1, $2)")
            .bind(job_id)
            .bind(detail)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    async fn run(
        &self,
        job_type: &str,
        plan: &Plan,
        ctx: &JobContext,
    ) -> Result<JobDetail, JobError> {
        let guard = self.start_run(job_type, plan, ctx).await?;
        let result = self.steps(plan, ctx).await;
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("failed: {}", e.reason),
        };
        guard.finish(&outcome).await?;
        result
    }

    async fn steps(&self, plan: &Plan, ctx: &JobContext) -> Result<JobDetail, JobError> {
        if ctx.attempt <= plan.hang_attempts {
            std::future::pending::<()>().await;
        }
        if ctx.attempt <= plan.panic_attempts {
            panic!("kaboom {}", ctx.attempt);
        }
        if plan.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(plan.sleep_ms)).await;
        }
        if plan.hold_connection_ms > 0 {
            let mut conn = self.db.pool().acquire().await?;
            sqlx::query("SELECT 1").execute(&mut *conn).await?;
            tokio::time::sleep(Duration::from_millis(plan.hold_connection_ms)).await;
        }
        if plan.publish {
            let mut tx = self.db.begin().await?;
            self.outbox
                .publish(
                    &mut tx,
                    &Happened {
                        key: plan.key.clone(),
                        flaky: false,
                    },
                )
                .await
                .map_err(|e| JobError::retry(e.to_string()))?;
            tx.commit().await?;
        }
        if plan.guarded_effect {
            let mut tx = self.db.begin().await?;
            if self
                .jobs
                .mark_processed(&mut tx, "testkit.effect", &ctx.idempotency_key)
                .await?
            {
                sqlx::query(
                    "INSERT INTO testkit_effects (key, job_id, attempt) VALUES ($1, $2, $3)",
                )
                .bind(&plan.key)
                .bind(ctx.id.to_string())
                .bind(i32::try_from(ctx.attempt).unwrap_or(i32::MAX))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        let flagged = match &plan.fail_while_flag {
            Some(flag) => self.flag_is_set(flag).await?,
            None => false,
        };
        if ctx.attempt <= plan.fail_attempts || flagged {
            return Err(JobError::retry(format!("boom {}", ctx.attempt)));
        }
        if plan.cancel {
            return Err(JobError::cancel("cancelled by its plan"));
        }
        Ok(Some(serde_json::json!({ "key": plan.key })))
    }
}

/// Runs both testkit job types.
struct Runner {
    kit: Arc<Kit>,
}

#[async_trait]
impl HandleJob<Run> for Runner {
    async fn handle(&self, job: Run, ctx: &JobContext) -> Result<JobDetail, JobError> {
        self.kit.run(Run::TYPE, &job.0, ctx).await
    }

    async fn dead_lettered(&self, _job: Option<Run>, ctx: &JobContext) {
        told_dead_set().insert(ctx.id.to_string());
    }
}

/// Whether the handler was told (in this process) that job `id` was dead-lettered.
pub fn told_dead(id: &str) -> bool {
    told_dead_set().contains(id)
}

fn told_dead_set() -> std::sync::MutexGuard<'static, HashSet<String>> {
    static SET: std::sync::OnceLock<Mutex<HashSet<String>>> = std::sync::OnceLock::new();
    SET.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl HandleJob<Limited> for Runner {
    async fn handle(&self, job: Limited, ctx: &JobContext) -> Result<JobDetail, JobError> {
        self.kit.run(Limited::TYPE, &job.0, ctx).await
    }
}

/// Marks one run of a job as going; on drop (finished, failed or aborted) it is not.
struct RunGuard {
    db: Db,
    job_id: String,
    pid: i64,
    attempt: i32,
    owns_local: bool,
}

impl RunGuard {
    async fn finish(self, outcome: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE testkit_runs SET finished_at = $1, outcome = $2 \
             WHERE job_id = $3 AND attempt = $4 AND pid = $5 AND finished_at IS NULL",
        )
        .bind(wall_ms())
        .bind(outcome)
        .bind(&self.job_id)
        .bind(self.attempt)
        .bind(self.pid)
        .execute(self.db.pool())
        .await?;
        sqlx::query("DELETE FROM testkit_running WHERE job_id = $1 AND pid = $2 AND attempt = $3")
            .bind(&self.job_id)
            .bind(self.pid)
            .bind(self.attempt)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self.owns_local {
            local_running().remove(&self.job_id);
        }
    }
}

/// Jobs running in this process now.
fn local_running() -> std::sync::MutexGuard<'static, HashSet<String>> {
    static SET: std::sync::OnceLock<Mutex<HashSet<String>>> = std::sync::OnceLock::new();
    SET.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn process_alive(pid: i64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How often each listener ran for each event, in this process (runs that failed included).
pub fn listener_runs(listener: &str, event_id: &str) -> u32 {
    listener_counts()
        .get(&(listener.to_owned(), event_id.to_owned()))
        .copied()
        .unwrap_or(0)
}

fn listener_counts() -> std::sync::MutexGuard<'static, HashMap<(String, String), u32>> {
    static COUNTS: std::sync::OnceLock<Mutex<HashMap<(String, String), u32>>> =
        std::sync::OnceLock::new();
    COUNTS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The inline listener ([`INLINE_LISTENER`]).
#[derive(Debug)]
struct FanOut {
    kit: Arc<Kit>,
}

#[async_trait]
impl Listener for FanOut {
    fn name(&self) -> &'static str {
        INLINE_LISTENER
    }

    fn consumes(&self) -> Vec<EventKey> {
        vec![Fanned::key()]
    }

    fn dispatch(&self) -> Dispatch {
        Dispatch::Inline
    }

    async fn handle(&self, tx: &mut DbConn, event: &EventEnvelope) -> Result<(), JobError> {
        *listener_counts()
            .entry((INLINE_LISTENER.to_owned(), event.id.to_string()))
            .or_default() += 1;
        let fanned: Fanned = event
            .decode()
            .map_err(|e| JobError::poison(e.to_string()))?;
        sqlx::query(
            "INSERT INTO testkit_seen (listener, event_id, key, correlation_id, causation_id) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(INLINE_LISTENER)
        .bind(event.id.to_string())
        .bind(&fanned.key)
        .bind(event.correlation_id.as_str())
        .bind(event.causation_id.map(|c| c.to_string()))
        .execute(&mut *tx)
        .await?;
        let job =
            NewJob::of(&Run(Plan::new(fanned.key))).map_err(|e| JobError::poison(e.to_string()))?;
        self.kit.jobs.enqueue(&mut *tx, job).await?;
        // Fails after its writes, so a test sees them rolled back to the savepoint.
        let down: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM testkit_flags WHERE name = $1")
            .bind(INLINE_DOWN)
            .fetch_one(&mut *tx)
            .await?;
        if down > 0 {
            return Err(JobError::retry("the inline listener is down"));
        }
        Ok(())
    }
}

/// Records each `testkit.happened` in `testkit_seen`, inside the delivery's transaction;
/// the flaky one fails instead on events marked `flaky`.
struct Recorder {
    name: &'static str,
    fail_on_flaky: bool,
}

#[async_trait]
impl Listener for Recorder {
    fn name(&self) -> &'static str {
        self.name
    }

    fn consumes(&self) -> Vec<EventKey> {
        vec![Happened::key()]
    }

    async fn handle(&self, tx: &mut DbConn, event: &EventEnvelope) -> Result<(), JobError> {
        *listener_counts()
            .entry((self.name.to_owned(), event.id.to_string()))
            .or_default() += 1;
        let happened: Happened = event
            .decode()
            .map_err(|e| JobError::poison(e.to_string()))?;
        if self.fail_on_flaky && happened.flaky {
            return Err(JobError::retry("the flaky listener is down"));
        }
        sqlx::query(
            "INSERT INTO testkit_seen (listener, event_id, key, correlation_id, causation_id) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(self.name)
        .bind(event.id.to_string())
        .bind(&happened.key)
        .bind(event.correlation_id.as_str())
        .bind(event.causation_id.map(|c| c.to_string()))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}
