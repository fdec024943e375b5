//! Proving this process alive, and fencing it when it cannot.
//!
//! The heartbeat runs on its own task and its own connection, so neither busy handlers nor a
//! slow maintenance round can delay it. Its time is the database's (`heartbeat_at = now` in
//! the statement), and so is the leader's judgement of it, so a skewed wall clock never
//! makes a healthy replica look dead.
//!
//! **Self-fencing.** A process that could not renew its heartbeat for longer than half of
//! `dead_after` ([`Liveness::is_fenced`], measured on its own monotonic clock since its last
//! renewal) assumes it may soon be declared dead: its loops stop claiming, hand back what
//! they hold in memory unspent, and start nothing they claimed. Whatever a rescue took from
//! it meanwhile is refused to it by the owner checks of every later statement. As soon as a
//! heartbeat goes through again it rejoins by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Shared;

/// Whether this process may claim and start jobs, judged from its last heartbeat.
#[derive(Debug)]
pub struct Liveness {
    origin: Instant,
    /// Milliseconds from `origin` to the last heartbeat the database accepted.
    last_beat_ms: AtomicU64,
    fence_after: Duration,
    fenced: AtomicBool,
}

impl Liveness {
    /// Fences after `fence_after` without a renewed heartbeat; counts as renewed now.
    pub fn new(fence_after: Duration) -> Self {
        Self {
            origin: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            fence_after,
            fenced: AtomicBool::new(false),
        }
    }

    /// Records a heartbeat the database accepted.
    pub fn renewed(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_beat_ms.fetch_max(ms, Ordering::SeqCst);
    }

    /// How long since the last accepted heartbeat.
    pub fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_beat_ms.load(Ordering::SeqCst));
        self.origin.elapsed().saturating_sub(last)
    }

    /// Whether this process must not claim or start jobs now.
    pub fn is_fenced(&self) -> bool {
        self.silent_for() > self.fence_after
    }

    /// Notes a change between fenced and not; returns the new state when it changed.
    fn transition(&self) -> Option<bool> {
        let now = self.is_fenced();
        (self.fenced.swap(now, Ordering::SeqCst) != now).then_some(now)
    }
}

/// Registers this process as a worker.
///
/// # Errors
/// Fails when the database does.
pub async fn register(shared: &Shared, queues: &[String]) -> Result<(), sqlx::Error> {
    insert(shared, &queues.join(",")).await?;
    shared.liveness.renewed();
    Ok(())
}

async fn insert(shared: &Shared, queues: &str) -> Result<(), sqlx::Error> {
    let sql = shared.time.sql(
        "INSERT INTO keel_workers (id, host, pid, queues, started_at, heartbeat_at) \
         VALUES ($2, $3, $4, $5, NOW_MS, NOW_MS)",
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(shared.time.fixed())
        .bind(&shared.worker_id)
        .bind(hostname())
        .bind(i64::from(std::process::id()))
        .bind(queues)
        .execute(shared.beat.pool())
        .await?;
    Ok(())
}

/// Marks this process as stopped, so nobody waits `dead_after` to rescue its (already
/// handed back) jobs, and gives up the maintenance lease.
///
/// # Errors
/// Fails when the database does.
pub async fn deregister(shared: &Shared) -> Result<(), sqlx::Error> {
    let sql = shared
        .time
        .sql("UPDATE keel_workers SET stopped_at = NOW_MS WHERE id = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(shared.time.fixed())
        .bind(&shared.worker_id)
        .execute(shared.beat.pool())
        .await?;
    super::leader::resign(shared).await
}

/// Renews the heartbeat every `heartbeat_interval` until `shutdown`, and keeps the fence
/// state current.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let interval = shared.config.heartbeat_interval;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match tokio::time::timeout(interval.max(Duration::from_millis(500)), beat(&shared)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat failed"),
            Err(_) => tracing::warn!("heartbeat timed out"),
        }
        observe_fence(&shared);
    }
}

/// One heartbeat: prove liveness on the database's clock.
///
/// # Errors
/// Fails when the database does.
pub async fn beat(shared: &Shared) -> Result<(), sqlx::Error> {
    // A process declared silent (say, through a long database outage) that is alive after
    // all comes back: its rescued jobs are no longer its own, and its new claims must not be
    // rescued from under it.
    let sql = shared
        .time
        .sql("UPDATE keel_workers SET heartbeat_at = NOW_MS, stopped_at = NULL WHERE id = $2");
    let beat = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(shared.time.fixed())
        .bind(&shared.worker_id)
        .execute(shared.beat.pool())
        .await?
        .rows_affected();
    if beat == 0 {
        // Forgotten (pruned long after being declared dead): register again.
        insert(shared, "").await?;
    }
    shared.liveness.renewed();
    Ok(())
}

/// Logs, counts and acts on a change of the fence state.
pub fn observe_fence(shared: &Shared) {
    match shared.liveness.transition() {
        Some(true) => {
            metrics::gauge!("keel_worker_fenced").set(1.0);
            metrics::counter!("keel_worker_fenced_total").increment(1);
            tracing::warn!(
                worker_id = %shared.worker_id,
                silent_ms = shared.liveness.silent_for().as_millis() as u64,
                "heartbeat not renewed for over half of dead_after: fenced — not claiming or starting jobs, handing back what is held"
            );
            shared.wakers.wake_all();
        }
        Some(false) => {
            metrics::gauge!("keel_worker_fenced").set(0.0);
            tracing::info!(worker_id = %shared.worker_id, "heartbeat renewed: rejoined");
            shared.wakers.wake_all();
        }
        None => {}
    }
}

/// How long a process may go without a renewed heartbeat before it fences itself: half of
/// `dead_after`, so it stops starting work well before anyone may rescue it.
pub fn fence_after(dead_after: Duration) -> Duration {
    dead_after / 2
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
