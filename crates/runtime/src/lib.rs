//! Keel's infrastructure: storage, the transactional outbox, named queues and the workers
//! that drain them.
//!
//! The runtime implements the ports of the `events` crate ([`events::Outbox`],
//! [`events::JobQueue`]) and knows no domain module: modules hand it their listeners, job
//! handlers and migrations as an [`events::Module`], and it runs them.
//!
//! How an event travels: a domain publishes inside its own transaction → [`outbox`] writes
//! the event row and one job per subscribed listener on the `events` queue → a [`worker`]
//! claims the job, runs the listener in a transaction that also records it in the inbox →
//! the listener enqueues its own jobs (`webhooks`, `emails`, …) → workers run those with
//! retries on the queue's [`policy`], dead-lettering after the last attempt.

pub mod activity;
pub mod admin;
pub mod alerts;
pub mod broker;
pub mod db_time;
pub mod error;
pub mod event_log;
pub mod idempotency;
pub mod migrate;
pub mod outbox;
mod placeholders;
pub mod policy;
pub mod queue;
pub mod registry;
pub mod replay;
pub mod request_log;
pub mod schedule;
pub mod schema;
pub mod storage;
pub mod trace;
pub mod wake;
pub mod worker;

pub use error::RuntimeError;
pub use policy::{QueuePolicy, RuntimeConfig};
pub use registry::Registry;
pub use storage::connect;

use std::sync::Arc;

use events::{Backend, Clock, Db, JobQueue, Module, Outbox};
use tokio::sync::watch;

use crate::alerts::AlertSink;
use crate::db_time::DbTime;
use crate::outbox::SqlOutbox;
use crate::queue::SqlJobQueue;
use crate::wake::Wakers;
use crate::worker::{Shared, WorkerPool};

/// The runtime as the app wires it: storage, outbox, queue, registry and workers.
///
/// Cheap to clone (one reference count): the HTTP layers take it as their state, and axum
/// clones a layer's state for every request.
#[derive(Debug, Clone)]
pub struct Runtime(Arc<Parts>);

/// What a [`Runtime`] shares between its clones.
#[derive(Debug)]
struct Parts {
    db: Db,
    database_url: String,
    clock: Arc<dyn Clock>,
    time: DbTime,
    config: Arc<RuntimeConfig>,
    registry: Arc<Registry>,
    wakers: Arc<Wakers>,
    queue: Arc<SqlJobQueue>,
    outbox: Arc<SqlOutbox>,
    alerts: Arc<dyn AlertSink>,
    schedules: schedule::Schedules,
}

impl Runtime {
    /// A runtime over a connected database (see [`connect`]).
    pub fn new(
        db: Db,
        database_url: impl Into<String>,
        clock: Arc<dyn Clock>,
        config: RuntimeConfig,
        alerts: Arc<dyn AlertSink>,
    ) -> Self {
        let config = Arc::new(config);
        let time = DbTime::new(db.backend(), clock.clone());
        let registry = Arc::new(Registry::default());
        let wakers = Arc::new(Wakers::new(config.queues.keys()).with_notifier(&db));
        let queue = Arc::new(SqlJobQueue::new(
            time.clone(),
            config.clone(),
            wakers.clone(),
        ));
        let outbox = Arc::new(SqlOutbox::new(
            registry.clone(),
            clock.clone(),
            queue.clone(),
            config.broker.clone(),
        ));
        Self(Arc::new(Parts {
            db,
            database_url: database_url.into(),
            clock,
            time,
            config,
            registry,
            wakers,
            queue,
            outbox,
            alerts,
            schedules: schedule::Schedules::default(),
        }))
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.0.db
    }

    /// The injected clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.0.clock
    }

    /// The database's clock, as runtime SQL reads it.
    pub fn time(&self) -> &DbTime {
        &self.0.time
    }

    /// The queue and timing configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.0.config
    }

    /// The publishing port to hand to modules.
    pub fn outbox(&self) -> Arc<dyn Outbox> {
        self.0.outbox.clone()
    }

    /// The job port to hand to modules.
    pub fn jobs(&self) -> Arc<dyn JobQueue> {
        self.0.queue.clone()
    }

    /// Runs `work` — an HTTP request's handler, which commits before it answers — and
    /// wakes this process's workers for the jobs it enqueued once it has returned: a worker
    /// woken before the commit would find nothing to claim yet.
    pub async fn after_commit<F: std::future::Future>(&self, work: F) -> F::Output {
        self.0.queue.after_commit(work).await
    }

    /// The registry of job types and listeners.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.0.registry
    }

    /// Registers the modules' listeners and job handlers.
    ///
    /// # Errors
    /// [`RuntimeError::Wiring`] on duplicates or unconfigured queues.
    pub fn install(&self, modules: &[&Module]) -> Result<(), RuntimeError> {
        self.0.registry.install(
            modules,
            &self.0.db,
            &self.0.time,
            self.jobs(),
            &self.0.config,
        )?;
        self.configure_schedules(modules, &std::collections::BTreeMap::new())
    }

    /// Resolves the modules' schedules with `keel.toml`'s `[schedules.<name>]` overrides
    /// and puts them in force (after [`Runtime::install`], which puts the modules' own in
    /// force).
    ///
    /// # Errors
    /// [`RuntimeError::Wiring`] naming the key, as [`schedule::resolve`].
    pub fn configure_schedules(
        &self,
        modules: &[&Module],
        overrides: &std::collections::BTreeMap<String, schedule::ScheduleOverride>,
    ) -> Result<(), RuntimeError> {
        self.0
            .schedules
            .set(schedule::resolve(modules, overrides, &self.0.registry)?);
        Ok(())
    }

    /// The schedules in force.
    pub fn schedules(&self) -> std::sync::Arc<Vec<schedule::ActiveSchedule>> {
        self.0.schedules.current()
    }

    /// Runs one scheduler pass now on the runtime's pool, as the maintenance leader does each
    /// round (tests drive ticks with it, and run it from several runtimes at once).
    ///
    /// # Errors
    /// Fails when the database does.
    pub async fn fire_schedules_now(&self) -> Result<(), sqlx::Error> {
        worker::scheduler::run(worker::scheduler::Pass {
            db: &self.0.db,
            time: &self.0.time,
            queue: &self.0.queue,
            wakers: &self.0.wakers,
            schedules: &self.0.schedules,
            grace: worker::scheduler::grace(&self.0.config),
        })
        .await
    }

    /// Every schedule's next and last run, read on the database's clock.
    ///
    /// # Errors
    /// Fails when the database does.
    pub async fn schedule_statuses(&self) -> Result<Vec<schedule::ScheduleStatus>, RuntimeError> {
        Ok(schedule::statuses(&self.0.db, &self.0.time, &self.0.schedules.current()).await?)
    }

    /// Applies the runtime's and the modules' migrations.
    ///
    /// # Errors
    /// See [`migrate::run`].
    pub async fn migrate(&self, modules: &[&Module]) -> Result<usize, RuntimeError> {
        let sets: Vec<&[events::Migration]> =
            modules.iter().map(|m| m.migrations.as_slice()).collect();
        migrate::run(&self.0.db, &sets).await
    }

    /// Starts workers for `queues` (all configured queues when `None`).
    ///
    /// # Errors
    /// [`RuntimeError::Wiring`] for an unknown queue; a database error when the worker
    /// cannot register.
    pub async fn start_workers(
        &self,
        queues: Option<Vec<String>>,
    ) -> Result<Workers, RuntimeError> {
        let queues = match queues {
            Some(qs) => {
                if let Some(unknown) = qs.iter().find(|q| !self.0.config.queues.contains_key(*q)) {
                    return Err(RuntimeError::Wiring(format!(
                        "queue `{unknown}` is not configured (known: {})",
                        self.0
                            .config
                            .queues
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                qs
            }
            None => self.0.config.queues.keys().cloned().collect(),
        };
        // The runtime's own connections: claims and the writer, the maintenance leader, and
        // the heartbeat each have theirs, so none waits behind handlers or behind another.
        // An in-memory SQLite database exists once per connection pool: share it then.
        // The leader's statements give up when its step does (see
        // `storage::connect_bounded`), so one stuck step cannot stall the next.
        let own_pool = |size: u32, bounded: Option<std::time::Duration>| async move {
            if self.0.database_url.contains(":memory:") {
                Ok(self.0.db.clone())
            } else if let Some(timeout) = bounded {
                storage::connect_bounded(&self.0.database_url, size, timeout).await
            } else {
                storage::connect(&self.0.database_url, size).await
            }
        };
        let work = own_pool(2, None).await?;
        let start = own_pool(1, None).await?;
        let control = own_pool(2, Some(worker::leader::step_timeout(&self.0.config))).await?;
        let beat = own_pool(1, None).await?;
        let fence_after = worker::heartbeat::fence_after(self.0.config.dead_after);
        let shared = Arc::new(Shared {
            db: self.0.db.clone(),
            work,
            start,
            control,
            beat,
            time: self.0.time.clone(),
            liveness: worker::heartbeat::Liveness::new(fence_after),
            clock: self.0.clock.clone(),
            config: self.0.config.clone(),
            registry: self.0.registry.clone(),
            wakers: self.0.wakers.clone(),
            alerts: self.0.alerts.clone(),
            worker_id: format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple()),
            queue: self.0.queue.clone(),
            schedules: self.0.schedules.clone(),
        });
        let (listen_stop, listen_rx) = watch::channel(false);
        let broker_stop = listen_rx.clone();
        let listener = (self.0.db.backend() == Backend::Postgres).then(|| {
            tokio::spawn(wake::listen_postgres(
                self.0.database_url.clone(),
                self.0.wakers.clone(),
                listen_rx,
            ))
        });
        self.declare_backfills().await?;
        let broker = match &self.0.config.broker {
            Some(config) => {
                let relay = broker::relay::Relay {
                    db: own_pool(2, None).await?,
                    time: self.0.time.clone(),
                    config: config.clone(),
                    holder: shared.worker_id.clone(),
                    lease_ttl: self.0.config.dead_after,
                };
                let mut tasks = vec![broker::relay::spawn(relay, broker_stop.clone())];
                if config.consume {
                    let consumers = broker::consume::Consumers {
                        db: self.0.db.clone(),
                        time: self.0.time.clone(),
                        config: config.clone(),
                        registry: self.0.registry.clone(),
                        queue: self.0.queue.clone(),
                    };
                    tasks.extend(consumers.spawn(broker_stop.clone()));
                }
                tasks
            }
            None => Vec::new(),
        };
        let pool = WorkerPool::start(shared, queues).await?;
        Ok(Workers {
            pool,
            listen_stop,
            listener,
            broker,
        })
    }

    /// Enqueues the next batch of a replay's deliveries (see [`replay::feed`]).
    ///
    /// # Errors
    /// Fails when the database does; nothing of the batch is then written.
    pub async fn feed_replay(&self, id: &str) -> Result<replay::Fed, replay::ReplayError> {
        replay::feed(
            &self.0.db,
            &self.0.time,
            &self.0.queue,
            &self.0.registry,
            id,
        )
        .await
    }

    /// Records every listener's start point in the past (configuration first, then
    /// `Listener::backfill_from`) as a backfill, once across replicas; the maintenance leader
    /// feeds them (`replay::feed_backfills`).
    ///
    /// # Errors
    /// [`RuntimeError::Wiring`] when configuration names a listener that does not exist; a
    /// database error.
    pub async fn declare_backfills(&self) -> Result<(), RuntimeError> {
        let known = self.0.registry.listener_names();
        if let Some(unknown) = self.0.config.backfills.keys().find(|n| !known.contains(n)) {
            return Err(RuntimeError::Wiring(format!(
                "[listeners.\"{unknown}\"] names no listener (known: {})",
                known.join(", ")
            )));
        }
        for name in known {
            let from = self.0.config.backfills.get(&name).copied().or_else(|| {
                self.0
                    .registry
                    .listener(&name)
                    .and_then(|l| l.backfill_from())
            });
            let Some(from) = from else { continue };
            match replay::declare_backfill(
                &self.0.db,
                &self.0.time,
                &self.0.registry,
                &name,
                from,
                self.0.config.backfill_rate,
            )
            .await
            {
                Ok(true) => tracing::info!(listener = %name, since = %from, "backfill declared"),
                Ok(false) => {}
                Err(replay::ReplayError::Runtime(e)) => return Err(e),
                Err(e) => return Err(RuntimeError::Wiring(e.to_string())),
            }
        }
        Ok(())
    }

    /// Wakes every queue's loop in this process (after a replay, or when a test moved the
    /// clock).
    pub fn wake_all(&self) {
        self.0.wakers.wake_all();
    }
}

/// Running workers; call [`Workers::shutdown`] to stop them gracefully.
#[derive(Debug)]
pub struct Workers {
    pool: WorkerPool,
    listen_stop: watch::Sender<bool>,
    listener: Option<tokio::task::JoinHandle<()>>,
    /// The broker relay and consumers, stopped with the listener.
    broker: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    /// Stops claiming, finishes or hands back in-flight jobs, and stops listening.
    pub async fn shutdown(self) {
        self.pool.shutdown().await;
        let _ = self.listen_stop.send(true);
        if let Some(l) = self.listener {
            let _ = l.await;
        }
        for task in self.broker {
            let _ = task.await;
        }
    }

    /// Runs one heartbeat/maintenance round now.
    ///
    /// # Errors
    /// Fails when the database does.
    pub async fn maintain_now(&self) -> Result<(), sqlx::Error> {
        self.pool.maintain_now().await
    }

    /// This process's worker id (`locked_by` of the jobs it holds, `keel_workers.id`).
    pub fn worker_id(&self) -> &str {
        self.pool.worker_id()
    }

    /// Whether these workers have fenced themselves (no heartbeat renewed for over half of
    /// `dead_after`): claiming and starting nothing until a heartbeat goes through again.
    pub fn is_fenced(&self) -> bool {
        self.pool.is_fenced()
    }
}
