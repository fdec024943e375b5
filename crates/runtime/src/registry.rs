//! Which job types and listeners exist, filled once when the app wires its modules.
//!
//! The outbox asks it who subscribes to an event; workers ask it who runs a job type. A
//! listener is run as a job of type `listener:<name>` on the `events` queue, so every
//! listener gets its own delivery, attempts and dead letters.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use events::jobs::JobDetail;
use events::{Db, EventEnvelope, JobContext, JobError, JobHandler, JobQueue, Listener, Module};
use serde_json::json;

use crate::db_time::DbTime;
use crate::error::RuntimeError;
use crate::policy::RuntimeConfig;
use crate::replay::{self, Outcome};

/// The queue listener deliveries run on.
pub const EVENTS_QUEUE: &str = "events";

/// The job type of a listener's deliveries.
pub fn listener_job_type(listener: &str) -> String {
    format!("listener:{listener}")
}

/// The wired job handlers and listeners.
#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    handlers: HashMap<String, Arc<dyn JobHandler>>,
    /// Event name → the listeners that consume it.
    subscribers: HashMap<String, Vec<Arc<dyn Listener>>>,
    /// Listener name → the listener (replays and backfills name it).
    listeners: HashMap<String, Arc<dyn Listener>>,
    /// The modules' growing tables, pruned by the leader.
    retention: Vec<events::Retention>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.read();
        let mut types: Vec<_> = inner.handlers.keys().collect();
        types.sort();
        f.debug_struct("Registry")
            .field("job_types", &types)
            .finish()
    }
}

impl Registry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A poisoned lock only means a panic happened while registering; the maps are
        // still whole, so keep serving them.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers every module's job handlers and listeners.
    ///
    /// # Errors
    /// [`RuntimeError::Wiring`] when a job type or listener name is registered twice, or a
    /// handler names a queue that has no policy.
    pub fn install(
        &self,
        modules: &[&Module],
        db: &Db,
        time: &DbTime,
        jobs: Arc<dyn JobQueue>,
        config: &RuntimeConfig,
    ) -> Result<(), RuntimeError> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for module in modules {
            inner.retention.extend(module.retention.iter().cloned());
            for handler in &module.jobs {
                let job_type = handler.job_type().to_owned();
                if !config.queues.contains_key(handler.queue()) {
                    return Err(RuntimeError::Wiring(format!(
                        "job type `{job_type}` runs on queue `{}`, which is not configured",
                        handler.queue()
                    )));
                }
                if inner
                    .handlers
                    .insert(job_type.clone(), handler.clone())
                    .is_some()
                {
                    return Err(RuntimeError::Wiring(format!(
                        "job type `{job_type}` is registered twice"
                    )));
                }
            }
            for listener in &module.listeners {
                let job_type = listener_job_type(listener.name());
                let runner = Arc::new(ListenerRunner {
                    listener: listener.clone(),
                    db: db.clone(),
                    time: time.clone(),
                    jobs: jobs.clone(),
                });
                inner
                    .listeners
                    .insert(listener.name().to_owned(), listener.clone());
                if inner.handlers.insert(job_type, runner).is_some() {
                    return Err(RuntimeError::Wiring(format!(
                        "listener `{}` is registered twice",
                        listener.name()
                    )));
                }
                let mut names: Vec<&'static str> =
                    listener.consumes().iter().map(|k| k.name).collect();
                names.dedup();
                for name in names {
                    inner
                        .subscribers
                        .entry(name.to_owned())
                        .or_default()
                        .push(listener.clone());
                }
            }
        }
        Ok(())
    }

    /// The modules' tables the leader prunes beside the runtime's own.
    pub fn retention(&self) -> Vec<events::Retention> {
        self.read().retention.clone()
    }

    /// Registers one extra handler (the runtime's own jobs, or a test's).
    pub fn add_handler(&self, handler: Arc<dyn JobHandler>) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner
            .handlers
            .insert(handler.job_type().to_owned(), handler);
    }

    /// The handler of a job type.
    pub fn handler(&self, job_type: &str) -> Option<Arc<dyn JobHandler>> {
        self.read().handlers.get(job_type).cloned()
    }

    /// The listener with this name.
    pub fn listener(&self, name: &str) -> Option<Arc<dyn Listener>> {
        self.read().listeners.get(name).cloned()
    }

    /// Every listener's name, sorted.
    pub fn listener_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().listeners.keys().cloned().collect();
        names.sort();
        names
    }

    /// Every registered listener, once each, by name.
    pub fn listeners(&self) -> Vec<Arc<dyn Listener>> {
        let mut seen = std::collections::BTreeMap::new();
        for listener in self.read().subscribers.values().flatten() {
            seen.entry(listener.name())
                .or_insert_with(|| listener.clone());
        }
        seen.into_values().collect()
    }

    /// The listeners subscribed to an event name.
    pub fn subscribers(&self, event_name: &str) -> Vec<Arc<dyn Listener>> {
        self.read()
            .subscribers
            .get(event_name)
            .cloned()
            .unwrap_or_default()
    }
}

/// Runs one listener for one stored event, exactly once in effect.
struct ListenerRunner {
    listener: Arc<dyn Listener>,
    db: Db,
    time: DbTime,
    jobs: Arc<dyn JobQueue>,
}

#[async_trait]
impl JobHandler for ListenerRunner {
    fn job_type(&self) -> &'static str {
        // Listener deliveries are looked up by their registered key, never by this name.
        "listener"
    }

    fn queue(&self) -> &'static str {
        EVENTS_QUEUE
    }

    async fn run(&self, job: &JobContext) -> Result<JobDetail, JobError> {
        let event_id = job
            .payload
            .get("event_id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| JobError::poison("listener delivery has no `event_id`"))?
            .to_owned();
        let envelope = crate::outbox::load_event(&self.db, &event_id)
            .await?
            .ok_or_else(|| JobError::poison(format!("event {event_id} no longer exists")))?
            .map_err(|reason| {
                JobError::poison(format!("event {event_id} does not decode: {reason}"))
            })?;
        let replay = Replayed::of(job);
        self.deliver(&envelope, replay.as_ref()).await
    }

    async fn dead_lettered(&self, job: &JobContext) {
        let Some(replay) = Replayed::of(job) else {
            return;
        };
        let counted = async {
            let mut conn = self.db.pool().acquire().await?;
            replay::count_delivery(&mut conn, &self.time, &replay.id, Outcome::Failed).await
        };
        if let Err(e) = counted.await {
            tracing::warn!(replay = %replay.id, error = %e, "a dead replay delivery was not counted");
        }
    }
}

/// The replay or backfill a delivery belongs to (`crate::replay`), from its payload.
struct Replayed {
    id: String,
    force: bool,
}

impl Replayed {
    fn of(job: &JobContext) -> Option<Self> {
        let id = job.payload.get("replay")?.as_str()?.to_owned();
        let force = job
            .payload
            .get("force")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        Some(Self { id, force })
    }
}

impl ListenerRunner {
    /// Delivers `stored`, upcast step by step (`events::catalog::registry()`) to the version
    /// the listener consumes — the same path for a first delivery and a replayed dead letter.
    /// A replay's delivery counts itself in its replay's progress, in the same transaction;
    /// a forced one runs the listener even when the inbox says it processed the event.
    async fn deliver(
        &self,
        stored: &EventEnvelope,
        replay: Option<&Replayed>,
    ) -> Result<JobDetail, JobError> {
        let consumes = self.listener.consumes();
        let envelope = events::catalog::registry()
            .for_listener(stored, &consumes)
            .map_err(|e| JobError::poison(format!("listener {} {e}", self.listener.name())))?;
        let envelope = envelope.as_ref();
        let mut tx = self.db.begin().await?;
        let first = self
            .jobs
            .mark_processed(&mut tx, self.listener.name(), &envelope.id.to_string())
            .await?;
        // A replay's delivery also has its own inbox entry: run again after its commit (a
        // lost completion, a rescue), it neither runs a forced listener twice nor counts twice.
        let again = match replay {
            Some(r) => {
                let key = format!("{}:{}", envelope.id, r.id);
                !self
                    .jobs
                    .mark_processed(&mut tx, self.listener.name(), &key)
                    .await?
            }
            None => false,
        };
        let run = !again && (first || replay.is_some_and(|r| r.force));
        if run {
            self.listener.handle(&mut tx, envelope).await?;
        }
        if let Some(r) = replay.filter(|_| !again) {
            let outcome = if run {
                Outcome::Delivered
            } else {
                Outcome::Skipped
            };
            replay::count_delivery(&mut tx, &self.time, &r.id, outcome).await?;
        }
        tx.commit().await?;
        Ok(Some(json!({
            "listener": self.listener.name(),
            "event": format!("{}.v{}", envelope.name, envelope.version),
            "event_id": envelope.id,
            "stored_version": stored.version,
            "skipped": !run,
            "replay": replay.map(|r| r.id.as_str()),
        })))
    }
}
