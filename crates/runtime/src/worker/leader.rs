//! The maintenance leader: one process at a time rescues jobs of silent workers, retires
//! them, watches queue age, fires scheduled jobs, feeds listeners' backfills and prunes — on
//! a task of its own, so none of it can delay a heartbeat.
//!
//! Leadership is a lease row (`keel_leases`) taken and renewed at the start of every round,
//! expiring `dead_after` later on the database's clock. Every state change the leader makes
//! to a job re-checks, in the same statement, that it still holds an unexpired lease: a
//! leader slowed down past its lease can finish its round, but it cannot rescue a job
//! another leader is already looking after. Each step runs under a timeout and fails alone —
//! a failing or slow statistics query never stops rescue or pruning.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Shared, prune, rescue, scheduler};
use crate::alerts::Alert;

/// The lease maintenance runs under.
pub const LEASE: &str = "maintenance";

/// SQL that holds while this process (`$2` in the statement, as `holder`) holds the lease.
pub fn holds_lease(holder_param: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM keel_leases WHERE name = '{LEASE}' AND holder = {holder_param} \
         AND expires_at > NOW_MS)"
    )
}

/// Runs a round every `heartbeat_interval` until `shutdown`, while this process is not
/// fenced.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(shared.config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if shared.liveness.is_fenced() {
            continue;
        }
        if let Err(e) = round(&shared).await {
            tracing::warn!(error = %e, "maintenance round failed; retrying next round");
        }
    }
}

/// One round: take or renew the lease and, when leader, run every step.
///
/// # Errors
/// The first step that failed (the others still ran).
pub async fn round(shared: &Shared) -> Result<(), sqlx::Error> {
    let timeout = step_timeout(&shared.config);
    if !step("lease", timeout, take_lease(shared)).await? {
        return Ok(());
    }
    let results = [
        step("rescue", timeout, rescue::rescue(shared)).await,
        step("retire", timeout, rescue::retire_silent_workers(shared)).await,
        step("queue_age", timeout, watch_queue_age(shared)).await,
        step("schedules", timeout, scheduler::fire_due(shared)).await,
        step("backfill", timeout, feed_backfills(shared))
            .await
            .map(drop),
        step(
            "prune",
            timeout + prune_budget(shared),
            prune::prune(shared, prune_budget(shared)),
        )
        .await
        .map(drop),
    ];
    results
        .into_iter()
        .find_map(Result::err)
        .map_or(Ok(()), Err)
}

/// How long one step may take: a quarter of `dead_after` (at least 2 s, for a busy machine), so a round
/// normally fits in its lease. The leader's connections give up on a statement after as long, so a
/// step that timed out leaves no connection busy behind it.
pub fn step_timeout(config: &crate::RuntimeConfig) -> Duration {
    (config.dead_after / 4).max(Duration::from_secs(2))
}

/// How long one round may spend pruning: most of the time until the next round, so pruning
/// runs nearly back to back while it is behind.
fn prune_budget(shared: &Shared) -> Duration {
    shared.config.heartbeat_interval.mul_f64(0.8)
}

/// Runs one step under `timeout`, timing it and counting its failures.
async fn step<T>(
    name: &'static str,
    timeout: Duration,
    work: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    let began = Instant::now();
    let result = match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::Protocol(format!(
            "maintenance step `{name}` timed out after {} ms",
            timeout.as_millis()
        ))),
    };
    metrics::histogram!("keel_maintenance_step_seconds", "step" => name)
        .record(began.elapsed().as_secs_f64());
    if let Err(e) = &result {
        metrics::counter!("keel_maintenance_step_failures_total", "step" => name).increment(1);
        tracing::warn!(step = name, error = %e, "maintenance step failed");
    }
    result
}

/// Takes the lease when it is free or expired, or renews it; returns whether this process
/// holds it now.
async fn take_lease(shared: &Shared) -> Result<bool, sqlx::Error> {
    let sql = shared.time.sql(
        "INSERT INTO keel_leases (name, holder, expires_at) VALUES ($2, $3, NOW_MS + $4) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE keel_leases.holder = excluded.holder OR keel_leases.expires_at < NOW_MS",
    );
    let taken = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(shared.time.fixed())
        .bind(LEASE)
        .bind(&shared.worker_id)
        .bind(millis(shared.config.dead_after))
        .execute(shared.control.pool())
        .await?
        .rows_affected();
    Ok(taken == 1)
}

/// Gives the lease up (at shutdown), so the next leader need not wait for it to expire.
///
/// # Errors
/// Fails when the database does.
pub async fn resign(shared: &Shared) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM keel_leases WHERE name = $1 AND holder = $2")
        .bind(LEASE)
        .bind(&shared.worker_id)
        .execute(shared.beat.pool())
        .await?;
    Ok(())
}

/// Feeds the listeners' backfills (`crate::replay`): only the leader does, so each is fed by
/// one process at a time.
async fn feed_backfills(shared: &Shared) -> Result<u64, sqlx::Error> {
    let queue = crate::queue::SqlJobQueue::new(
        shared.time.clone(),
        shared.config.clone(),
        shared.wakers.clone(),
    );
    crate::replay::feed_backfills(&shared.control, &shared.time, &queue, &shared.registry)
        .await
        .map_err(|e| match e {
            crate::replay::ReplayError::Runtime(crate::RuntimeError::Database(e)) => e,
            other => sqlx::Error::Protocol(other.to_string()),
        })
}

/// Raises `queue_stale` for each queue whose oldest ready job has waited too long.
async fn watch_queue_age(shared: &Shared) -> Result<(), sqlx::Error> {
    let queues: Vec<String> = shared.config.queues.keys().cloned().collect();
    let threshold = shared.config.stale_queue_after.as_secs_f64();
    let stats = match crate::admin::queue_stats(&shared.control, &shared.time, &queues).await {
        Ok(s) => s,
        Err(crate::RuntimeError::Database(e)) => return Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "queue statistics failed");
            return Ok(());
        }
    };
    for s in stats {
        if s.queue == crate::admin::BROKER_ROW {
            watch_broker(shared, &s);
            continue;
        }
        if let Some(age) = s.oldest_ready_age_seconds
            && age > threshold
        {
            shared.alerts.raise(Alert {
                kind: "queue_stale",
                subject: s.queue.clone(),
                message: format!(
                    "queue {} has a job ready for {age:.0} s (threshold {threshold:.0} s); {} ready",
                    s.queue, s.ready
                ),
                detail: serde_json::json!({ "queue": s.queue, "oldest_ready_age_seconds": age, "ready": s.ready }),
            });
        }
    }
    Ok(())
}

/// Raises `broker_stuck` when the oldest event not yet acknowledged by the broker waited
/// longer than `[broker] stuck_after` (the broker is down, or the relay cannot publish).
fn watch_broker(shared: &Shared, s: &crate::admin::QueueStats) {
    let Some(broker) = &shared.config.broker else {
        return;
    };
    let threshold = broker.stuck_after.as_secs_f64();
    if let Some(age) = s.oldest_ready_age_seconds
        && age > threshold
    {
        shared.alerts.raise(Alert {
            kind: "broker_stuck",
            subject: broker.stream.clone(),
            message: format!(
                "{} events wait for the broker; the oldest for {age:.0} s (threshold {threshold:.0} s)",
                s.ready
            ),
            detail: serde_json::json!({ "stream": broker.stream, "backlog": s.ready, "lag_seconds": age }),
        });
    }
}

/// A duration in milliseconds, as the runtime's SQL takes it.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}
