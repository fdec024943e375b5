//! Retention: every table the runtime writes is pruned in bounded batches, each its own
//! short transaction, judged on the database's clock.
//!
//! | table | kept for |
//! |---|---|
//! | finished jobs (`completed`, `cancelled`) and their attempts | `[workers] retention` |
//! | dead letters and their attempts | `[workers] dead_letter_retention` |
//! | events no job names as cause any more and no feeding replay still needs | `[events] retention` (default: `[workers] retention`) |
//! | inbox entries | the longer of `[workers] retention` and `[events] retention` |
//! | recorded requests | `[workers] retention` |
//! | finished replays and backfills | `[workers] retention` |
//! | idempotency keys (stored answers) | one day |
//! | workers stopped long ago | `[workers] retention` |
//! | each module's growing tables (`Module::retention`) | what the module says |
//! | relayed events (`keel_relay`, once published), broker receipts | `[workers] retention` |
//!
//! A round deletes batch after batch, round-robin over the tables — every table gets at
//! least one batch a round, so a slow one never starves the others — until every table is
//! caught up or its time budget is spent; a round that had to stop early leaves the rest
//! for the next, which follows at once. On SQLite each batch holds the single writer lock
//! for a few milliseconds only, and the pruner steps aside between batches so API writes
//! are never kept waiting behind it.

use std::time::{Duration, Instant};

use events::Backend;

use super::Shared;
use super::leader::millis;

/// How long an `Idempotency-Key`'s stored answer is kept.
const IDEMPOTENCY_KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Rows one batch deletes on PostgreSQL.
const BATCH_POSTGRES: i64 = 5000;
/// Rows one batch deletes on SQLite: small, so the write lock is held only briefly.
const BATCH_SQLITE: i64 = 1000;
/// The pause between batches on SQLite, so queued writers get the lock in between.
const SQLITE_STEP_ASIDE: Duration = Duration::from_millis(2);

/// One kind of row to prune.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    FinishedJobs,
    DeadLetters,
    Events,
    Inbox,
    Requests,
    IdempotencyKeys,
    Workers,
    Replays,
    Relayed,
    Received,
    /// A module's table: its index in the registry's retention list.
    Module(usize),
}

impl Target {
    const ALL: [Target; 10] = [
        Target::FinishedJobs,
        Target::DeadLetters,
        Target::Events,
        Target::Inbox,
        Target::Requests,
        Target::IdempotencyKeys,
        Target::Workers,
        Target::Replays,
        Target::Relayed,
        Target::Received,
    ];

    fn label(self, modules: &[events::Retention]) -> &'static str {
        match self {
            Target::Module(i) => modules.get(i).map_or("module", |r| r.table),
            Target::FinishedJobs => "jobs",
            Target::DeadLetters => "dead_letters",
            Target::Events => "events",
            Target::Inbox => "inbox",
            Target::Requests => "requests",
            Target::IdempotencyKeys => "idempotency_keys",
            Target::Workers => "workers",
            Target::Replays => "replays",
            Target::Relayed => "relay",
            Target::Received => "broker_received",
        }
    }
}

/// Prunes for at most `budget`. Returns the rows deleted.
///
/// # Errors
/// Fails when the database does; what was deleted until then stays deleted.
pub async fn prune(shared: &Shared, budget: Duration) -> Result<u64, sqlx::Error> {
    let began = Instant::now();
    let batch = match shared.control.backend() {
        Backend::Postgres => BATCH_POSTGRES,
        Backend::Sqlite => BATCH_SQLITE,
    };
    let modules = shared.registry.retention();
    let mut pending: Vec<Target> = Target::ALL.to_vec();
    pending.extend((0..modules.len()).map(Target::Module));
    let mut total = 0;
    while !pending.is_empty() && began.elapsed() < budget {
        let mut still = Vec::with_capacity(pending.len());
        for target in pending {
            let deleted = prune_batch(shared, target, batch, &modules).await?;
            total += deleted;
            if deleted > 0 {
                metrics::counter!("keel_pruned_rows_total", "table" => target.label(&modules))
                    .increment(deleted);
            }
            if i64::try_from(deleted).unwrap_or(i64::MAX) >= batch {
                still.push(target);
            }
            if shared.control.backend() == Backend::Sqlite {
                tokio::time::sleep(SQLITE_STEP_ASIDE).await;
            }
        }
        pending = still;
    }
    if total > 0 {
        tracing::debug!(
            rows = total,
            ms = began.elapsed().as_millis() as u64,
            "pruned"
        );
    }
    Ok(total)
}

/// Deletes one batch of `target`; returns how many rows went.
async fn prune_batch(
    shared: &Shared,
    target: Target,
    batch: i64,
    modules: &[events::Retention],
) -> Result<u64, sqlx::Error> {
    let retention = millis(shared.config.retention);
    match target {
        Target::Module(i) => match modules.get(i) {
            Some(table) => delete(shared, table.delete, millis(table.keep), batch).await,
            None => Ok(0),
        },
        Target::FinishedJobs => prune_jobs(
            shared,
            "state IN ('completed', 'cancelled', 'dead') AND state IN ('completed', 'cancelled')",
            retention,
            batch,
        )
        .await,
        Target::DeadLetters => {
            let keep = millis(shared.config.dead_letter_retention);
            prune_jobs(
                shared,
                "state IN ('completed', 'cancelled', 'dead') AND state = 'dead'",
                keep,
                batch,
            )
            .await
        }
        // An event goes once its window has passed, no job names it as cause any more (its
        // deliveries were pruned; a dead delivery keeps it for replay), and no replay or
        // backfill still feeding has it ahead of its checkpoint.
        Target::Events => {
            delete(
                shared,
                "DELETE FROM keel_events WHERE id IN (SELECT e.id FROM keel_events e \
                 WHERE e.occurred_at < NOW_MS - $2 AND NOT EXISTS \
                 (SELECT 1 FROM keel_jobs j WHERE j.causation_id = e.id) AND NOT EXISTS \
                 (SELECT 1 FROM keel_replays r WHERE r.state = 'feeding' \
                 AND e.position > r.checkpoint AND e.position <= r.to_position) LIMIT $3)",
                millis(shared.config.event_retention()),
                batch,
            )
            .await
        }
        // Kept as long as the events they name, so a replay still skips what was processed.
        Target::Inbox => {
            delete(
                shared,
                "DELETE FROM keel_inbox WHERE (handler, key) IN (SELECT handler, key \
                 FROM keel_inbox WHERE processed_at < NOW_MS - $2 LIMIT $3)",
                retention.max(millis(shared.config.event_retention())),
                batch,
            )
            .await
        }
        Target::Replays => {
            delete(
                shared,
                "DELETE FROM keel_replays WHERE id IN (SELECT id FROM keel_replays \
                 WHERE state IN ('feeding', 'fed', 'cancelled') AND finished_at IS NOT NULL \
                 AND finished_at < NOW_MS - $2 LIMIT $3)",
                retention,
                batch,
            )
            .await
        }
        Target::Requests => {
            delete(
                shared,
                "DELETE FROM keel_requests WHERE id IN (SELECT id FROM keel_requests \
                 WHERE started_at < NOW_MS - $2 LIMIT $3)",
                retention,
                batch,
            )
            .await
        }
        // Stored answers hold response bodies (a new endpoint's secret, a record's owner
        // email): kept one day, long enough for any client's retry.
        Target::IdempotencyKeys => delete(
            shared,
            "DELETE FROM keel_idempotency WHERE (key, method, path) IN (SELECT key, method, path \
                 FROM keel_idempotency WHERE created_at < NOW_MS - $2 LIMIT $3)",
            millis(IDEMPOTENCY_KEY_TTL),
            batch,
        )
        .await,
        Target::Workers => {
            delete(
                shared,
                "DELETE FROM keel_workers WHERE id IN (SELECT id FROM keel_workers \
                 WHERE stopped_at IS NOT NULL AND stopped_at < NOW_MS - $2 LIMIT $3)",
                retention,
                batch,
            )
            .await
        }
        // Only published rows go: an event the broker has not acknowledged stays however old.
        Target::Relayed => {
            delete(
                shared,
                "DELETE FROM keel_relay WHERE position IN (SELECT position FROM keel_relay \
                 WHERE published_at IS NOT NULL AND published_at < NOW_MS - $2 LIMIT $3)",
                retention,
                batch,
            )
            .await
        }
        Target::Received => {
            delete(
                shared,
                "DELETE FROM keel_broker_received WHERE (listener, event_id) IN (SELECT listener, event_id \
                 FROM keel_broker_received WHERE received_at < NOW_MS - $2 LIMIT $3)",
                retention,
                batch,
            )
            .await
        }
    }
}

/// One batched `DELETE` whose `$2` is an age in ms and `$3` the batch size.
async fn delete(shared: &Shared, sql: &str, age: i64, batch: i64) -> Result<u64, sqlx::Error> {
    let sql = shared.time.sql(sql);
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(shared.time.fixed())
        .bind(age)
        .bind(batch)
        .execute(shared.control.pool())
        .await?
        .rows_affected())
}

/// Deletes one batch of jobs in `states` finished before their retention, with their
/// attempts, in one transaction (one statement on PostgreSQL; on SQLite, where a round trip
/// costs nothing, the batch's ids are picked first).
async fn prune_jobs(
    shared: &Shared,
    states: &str,
    age: i64,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    if shared.control.backend() == Backend::Postgres {
        // One round trip: the batch, its attempts and the jobs in one statement.
        let sql = format!(
            "WITH batch AS (SELECT id FROM keel_jobs WHERE {states} AND finished_at < NOW_MS - $2 LIMIT $3), \
             attempts AS (DELETE FROM keel_job_attempts WHERE job_id IN (SELECT id FROM batch)), \
             jobs AS (DELETE FROM keel_jobs WHERE id IN (SELECT id FROM batch) RETURNING 1) \
             SELECT COUNT(*) FROM jobs"
        );
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(shared.time.sql(&sql)))
            .bind(shared.time.fixed())
            .bind(age)
            .bind(batch)
            .fetch_one(shared.control.pool())
            .await?;
        return Ok(u64::try_from(n).unwrap_or(0));
    }
    let pick =
        format!("SELECT id FROM keel_jobs WHERE {states} AND finished_at < NOW_MS - $2 LIMIT $3");
    let mut tx = shared.control.begin().await?;
    let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(shared.time.sql(&pick)))
        .bind(shared.time.fixed())
        .bind(age)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    // Bound in chunks: a batch may be larger than a backend's parameter limit allows.
    for chunk in ids.chunks(1000) {
        let list = (1..=chunk.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        for table_and_column in ["keel_job_attempts WHERE job_id", "keel_jobs WHERE id"] {
            let sql = format!("DELETE FROM {table_and_column} IN ({list})");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id.as_str());
            }
            query.execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    Ok(u64::try_from(ids.len()).unwrap_or(0))
}
