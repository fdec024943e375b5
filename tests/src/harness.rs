//! [`TestRuntime`]: the real runtime, wired with the testkit module, over a [`TestDb`] —
//! with injected time, a recording alert sink and the queries tests ask most.

use std::sync::Arc;
use std::time::Duration;

use events::outbox::OutboxExt;
use events::{Clock, Db, Event, EventEnvelope, Job, NewJob, SystemClock};
use runtime::admin::{self, JobRecord};
use runtime::policy::QueuePolicy;
use runtime::{Runtime, RuntimeConfig, Workers};
use sqlx::Row;
use uuid::Uuid;

use crate::alerts::RecordingAlerts;
use crate::clock::ManualClock;
use crate::db::TestDb;
use crate::poll::eventually;
use crate::testkit::{self, Kit, Plan, Run};

/// How long a test waits for an outcome before it fails.
pub const WAIT: Duration = Duration::from_secs(15);

/// The configuration tests start from: the default queues plus `testkit`, no jitter (so
/// schedules are exact), fast heartbeats, a short shutdown grace, and a 60 s fallback poll so
/// that nothing passes merely because a poll came by — jobs must start through wake-ups.
pub fn test_config() -> RuntimeConfig {
    let mut config = RuntimeConfig::default();
    config
        .queues
        .insert(testkit::QUEUE.to_owned(), QueuePolicy::default());
    for policy in config.queues.values_mut() {
        policy.jitter = 0.0;
        policy.concurrency = 4;
        policy.timeout = Duration::from_secs(20);
    }
    config.heartbeat_interval = Duration::from_millis(100);
    config.dead_after = Duration::from_secs(2);
    config.poll_interval = Duration::from_secs(60);
    config.shutdown_grace = Duration::from_millis(500);
    config
}

/// A runtime wired with the testkit over one test database.
#[derive(Debug)]
pub struct TestRuntime {
    /// The database, through the runtime's own pool.
    pub db: Db,
    /// The runtime under test.
    pub runtime: Runtime,
    /// The testkit's handlers' handle (flags).
    pub kit: Arc<Kit>,
    /// Every alert the runtime raised.
    pub alerts: Arc<RecordingAlerts>,
    manual: Option<Arc<ManualClock>>,
    url: String,
}

/// A runtime's clock, and the manual time behind it when there is one.
type InjectedClock = (Arc<dyn Clock>, Option<Arc<ManualClock>>);

/// Options for [`TestRuntime::build`].
#[derive(Debug)]
pub struct Builder<'a> {
    db: &'a TestDb,
    config: RuntimeConfig,
    system_clock: bool,
    clock: Option<InjectedClock>,
    handler_pool: Option<(u32, Duration)>,
    migrate: bool,
}

impl Builder<'_> {
    /// Changes the configuration.
    #[must_use]
    pub fn config(mut self, change: impl FnOnce(&mut RuntimeConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// Uses the wall clock instead of a [`ManualClock`] (needed when another process, on its
    /// own clock, shares the database).
    #[must_use]
    pub fn system_clock(mut self) -> Self {
        self.system_clock = true;
        self
    }

    /// Runs on `clock` (e.g. a [`crate::clock::SkewedClock`]); `manual`, when given, is the
    /// manual time behind it — the one [`TestRuntime::advance`] moves, shared with other
    /// runtimes on the same database.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>, manual: Option<Arc<ManualClock>>) -> Self {
        self.clock = Some((clock, manual));
        self
    }

    /// Gives handlers (and the runtime's `db`) a pool of their own with `max_connections`
    /// connections and this acquire timeout, e.g. to starve them on purpose. The test's own
    /// queries ([`TestRuntime::db`]) keep a pool of their own.
    #[must_use]
    pub fn handler_pool(mut self, max_connections: u32, acquire_timeout: Duration) -> Self {
        self.handler_pool = Some((max_connections, acquire_timeout));
        self
    }

    /// Skips applying migrations (for tests of migrations themselves).
    #[must_use]
    pub fn without_migrations(mut self) -> Self {
        self.migrate = false;
        self
    }

    /// Connects, wires the testkit, and applies migrations.
    pub async fn build(self) -> TestRuntime {
        let db = self.db.connect().await;
        let (clock, manual): (Arc<dyn Clock>, _) = match self.clock {
            Some((clock, manual)) => (clock, manual),
            None if self.system_clock => (Arc::new(SystemClock), None),
            None => {
                let manual = Arc::new(ManualClock::new());
                (manual.clone(), Some(manual))
            }
        };
        let handlers = match self.handler_pool {
            Some((max, acquire_timeout)) => connect_pool(self.db.url(), max, acquire_timeout).await,
            None => db.clone(),
        };
        let alerts = Arc::new(RecordingAlerts::default());
        let runtime = Runtime::new(
            handlers.clone(),
            self.db.url(),
            clock,
            self.config,
            alerts.clone(),
        );
        let kit = Kit::new(handlers, runtime.outbox(), runtime.jobs());
        let module = kit.module();
        runtime.install(&[&module]).unwrap();
        if self.migrate {
            runtime.migrate(&[&module]).await.unwrap();
        }
        TestRuntime {
            db,
            runtime,
            kit,
            alerts,
            manual,
            url: self.db.url().to_owned(),
        }
    }
}

/// Workers on a tokio runtime of their own (see [`TestRuntime::start_crashable_workers`]).
#[derive(Debug)]
pub struct CrashableWorkers {
    tokio: Option<tokio::runtime::Runtime>,
    worker_id: String,
}

impl CrashableWorkers {
    /// Their worker id (`locked_by` of the jobs they hold).
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Ends every task and connection of these workers at once, as `kill -9` would.
    pub fn crash(mut self) {
        if let Some(tokio) = self.tokio.take() {
            tokio.shutdown_background();
        }
    }
}

impl Drop for CrashableWorkers {
    fn drop(&mut self) {
        if let Some(tokio) = self.tokio.take() {
            tokio.shutdown_background();
        }
    }
}

/// A pool on `url` like [`runtime::connect`]'s, with its own size and acquire timeout.
async fn connect_pool(url: &str, max_connections: u32, acquire_timeout: Duration) -> Db {
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let options = sqlx::any::AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout);
    let (backend, url) = if url.starts_with("sqlite:") {
        (events::Backend::Sqlite, format!("{url}?mode=rwc"))
    } else {
        (events::Backend::Postgres, url.to_owned())
    };
    let options = options.after_connect(move |conn, _| {
        Box::pin(async move {
            if backend == events::Backend::Sqlite {
                conn.execute("PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;")
                    .await?;
            }
            Ok(())
        })
    });
    let pool = options
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    Db::new(pool, backend)
}

impl TestRuntime {
    /// A runtime with [`test_config`] and a [`ManualClock`], migrated.
    pub async fn new(db: &TestDb) -> Self {
        Self::builder(db).build().await
    }

    /// Options for a runtime over `db`.
    pub fn builder(db: &TestDb) -> Builder<'_> {
        Builder {
            db,
            config: test_config(),
            system_clock: false,
            clock: None,
            handler_pool: None,
            migrate: true,
        }
    }

    /// The database URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The testkit module, for migrating it again.
    pub fn module(&self) -> events::Module {
        self.kit.module()
    }

    /// The manual clock.
    ///
    /// # Panics
    /// When the runtime was built with [`Builder::system_clock`].
    pub fn clock(&self) -> &ManualClock {
        self.manual
            .as_deref()
            .expect("this runtime runs on the wall clock")
    }

    /// The manual clock, to share with another runtime on the same database (see
    /// [`Builder::clock`]).
    ///
    /// # Panics
    /// When the runtime runs on the wall clock.
    pub fn shared_clock(&self) -> Arc<ManualClock> {
        self.manual
            .clone()
            .expect("this runtime runs on the wall clock")
    }

    /// The runtime's reading of now, in unix ms.
    pub fn now_ms(&self) -> i64 {
        self.runtime.clock().now().timestamp_millis()
    }

    /// Moves the manual clock forward and wakes the workers, as a poll would.
    pub fn advance(&self, by: Duration) {
        self.clock().advance(by);
        self.runtime.wake_all();
    }

    /// Starts workers on every configured queue.
    pub async fn start_workers(&self) -> Workers {
        self.runtime.start_workers(None).await.unwrap()
    }

    /// Starts workers on every queue on a tokio runtime of their own, which
    /// [`CrashableWorkers::crash`] ends as abruptly as `kill -9` ends a process: no hand-back,
    /// no last heartbeat, no outcome written — their rows stay as they were, for another
    /// runtime's maintenance to find. (Keep asking the database through another runtime
    /// afterwards: connections this one's handlers opened go down with them.)
    pub async fn start_crashable_workers(&self) -> CrashableWorkers {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let runtime = self.runtime.clone();
        let (started, is_started) = tokio::sync::oneshot::channel();
        tokio.spawn(async move {
            let workers = runtime.start_workers(None).await.unwrap();
            let _ = started.send(workers.worker_id().to_owned());
            // Held until the tokio runtime goes.
            std::future::pending::<()>().await;
            drop(workers);
        });
        let worker_id = is_started.await.expect("crashable workers to start");
        CrashableWorkers {
            tokio: Some(tokio),
            worker_id,
        }
    }

    /// Enqueues a `testkit.run` job with `plan` in a committed transaction.
    pub async fn enqueue(&self, plan: Plan) -> Uuid {
        self.enqueue_job(NewJob::of(&Run(plan)).unwrap())
            .await
            .expect("a job that is not a duplicate")
    }

    /// Enqueues any job in a committed transaction; `None` when it was a duplicate.
    pub async fn enqueue_job(&self, job: NewJob) -> Option<Uuid> {
        let mut tx = self.db.begin().await.unwrap();
        let id = self.runtime.jobs().enqueue(&mut tx, job).await.unwrap();
        tx.commit().await.unwrap();
        id
    }

    /// Enqueues a typed job in a committed transaction.
    pub async fn enqueue_typed<J: Job>(&self, job: &J) -> Option<Uuid> {
        self.enqueue_job(NewJob::of(job).unwrap()).await
    }

    /// Publishes `event` in a committed transaction.
    pub async fn publish<E: Event>(&self, event: &E) -> EventEnvelope {
        let mut tx = self.db.begin().await.unwrap();
        let envelope = self.runtime.outbox().publish(&mut tx, event).await.unwrap();
        tx.commit().await.unwrap();
        envelope
    }

    /// The job as operators see it, with its attempts.
    pub async fn job(&self, id: Uuid) -> JobRecord {
        admin::show_job(&self.db, &id.to_string()).await.unwrap()
    }

    /// Waits until job `id` is in `state`, and returns it.
    pub async fn wait_for_state(&self, id: Uuid, state: &str) -> JobRecord {
        let what = format!("job {id} to be {state}");
        eventually(WAIT, &what, || async {
            let job = self.job(id).await;
            (job.state == state).then_some(job)
        })
        .await
    }

    /// Waits until job `id` is in `state` after `attempt` attempts.
    pub async fn wait_for_attempt(&self, id: Uuid, state: &str, attempt: i32) -> JobRecord {
        let what = format!("job {id} to be {state} after attempt {attempt}");
        eventually(WAIT, &what, || async {
            let job = self.job(id).await;
            (job.state == state && job.attempt == attempt).then_some(job)
        })
        .await
    }

    /// Waits until attempt `attempt` of job `id` has started running a testkit handler.
    pub async fn wait_until_running(&self, id: Uuid, attempt: i32) {
        let what = format!("attempt {attempt} of job {id} to start");
        eventually(WAIT, &what, || async {
            let runs = self.runs(id).await;
            runs.iter().any(|(a, _, _)| *a == attempt).then_some(())
        })
        .await;
    }

    /// The testkit runs of a job, oldest first: `(attempt, pid, outcome)`.
    pub async fn runs(&self, id: Uuid) -> Vec<(i32, i64, Option<String>)> {
        sqlx::query(
            "SELECT attempt, pid, outcome FROM testkit_runs WHERE job_id = $1 \
             ORDER BY started_at, attempt",
        )
        .bind(id.to_string())
        .fetch_all(self.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.try_get("attempt").unwrap(),
                r.try_get("pid").unwrap(),
                r.try_get("outcome").unwrap(),
            )
        })
        .collect()
    }

    /// Concurrent runs of one job the testkit detected (should be none).
    pub async fn violations(&self) -> Vec<String> {
        sqlx::query("SELECT job_id, detail FROM testkit_violations")
            .fetch_all(self.db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{}: {}",
                    r.try_get::<String, _>("job_id").unwrap(),
                    r.try_get::<String, _>("detail").unwrap()
                )
            })
            .collect()
    }

    /// `SELECT COUNT(*) …` with text arguments (`$1`, `$2`, …).
    pub async fn count(&self, sql: &str, args: &[&str]) -> i64 {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
        for arg in args {
            query = query.bind((*arg).to_owned());
        }
        let row = query.fetch_one(self.db.pool()).await.unwrap();
        row.try_get::<i64, _>(0).unwrap()
    }

    /// Runs one statement (e.g. corrupting a row on purpose).
    pub async fn execute(&self, sql: &str, args: &[&str]) -> u64 {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
        for arg in args {
            query = query.bind((*arg).to_owned());
        }
        query.execute(self.db.pool()).await.unwrap().rows_affected()
    }
}
