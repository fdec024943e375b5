//! The outbox relay: publishes committed events from `keel_relay` to JetStream, in commit
//! order per subject, and marks each published only after the broker acknowledged it.
//!
//! **Commit order.** Event ids are UUIDv7 from each process's clock and PostgreSQL writers
//! commit concurrently, so neither the id nor an insert-time sequence is commit order: a
//! transaction that took position 5 may commit after the one that took 6, and a relay that
//! had moved past 6 would never see 5. The relay therefore reads on PostgreSQL only the rows
//! of transactions *older than every transaction still in flight*
//! (`tx < pg_snapshot_xmin(pg_current_snapshot())`, `tx` being the writer's transaction id),
//! ordered by `(tx, position)`: every row it can see is final, nothing can appear behind it
//! later, and a transaction that started after another committed always has the larger id —
//! so causally ordered events (a record, then its invoice) go out in that order. On SQLite
//! writers are serialised, and `position` (assigned on insert) is commit order. The price on
//! PostgreSQL: a long-running write transaction holds the relay back until it ends (the lag
//! shows in `keel queues` and raises `broker_stuck`).
//!
//! **At least once, without reordering.** A batch is published as a pipeline and its acks
//! are read in order; only the acknowledged prefix is marked. `Nats-Msg-Id` is the event id,
//! so whatever is published again after a crash or a takeover — acked but not yet marked —
//! is dropped by the stream's duplicate window and keeps its first position.
//!
//! **One relay.** The relay runs under a lease of its own (`keel_leases`, name
//! [`LEASE`]) on the database's clock; another replica takes over only after it expired, and
//! starts from the oldest unmarked row: no gap, no reordering.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use events::{Backend, Db, EventEnvelope};
use sqlx::Row;
use tokio::sync::watch;

use super::{BrokerConfig, BrokerError};
use crate::db_time::DbTime;
use crate::worker::leader::millis;

/// The lease the relay runs under.
pub const LEASE: &str = "broker_relay";

/// Rows published per round.
const BATCH: i64 = 256;

/// How often the relay, when idle, looks for new rows (a cheap read of a partial index).
const IDLE_POLL: Duration = Duration::from_millis(20);

/// How often a replica that does not hold the lease tries to take it, at most.
const STANDBY_POLL: Duration = Duration::from_secs(1);

/// What the relay needs.
#[derive(Debug, Clone)]
pub struct Relay {
    /// Its own connections.
    pub db: Db,
    /// The database's clock.
    pub time: DbTime,
    /// `[broker]`.
    pub config: BrokerConfig,
    /// Who holds the lease (the worker id).
    pub holder: String,
    /// How long the lease lasts unrenewed (`[workers] dead_after`).
    pub lease_ttl: Duration,
}

/// One row waiting to be published.
#[derive(Debug)]
struct Pending {
    position: i64,
    event_id: String,
    subject: String,
    body: String,
    /// The publish span's context, when traces were exported.
    traceparent: Option<String>,
}

impl Relay {
    /// Publishes until `shutdown`, then gives the lease up.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut js: Option<jetstream::Context> = None;
        let mut stream_ready = false;
        let mut failures: u32 = 0;
        let mut renewed: Option<Instant> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let pause = match self.round(&mut js, &mut stream_ready, &mut renewed).await {
                Ok(None) => {
                    failures = 0;
                    STANDBY_POLL.min(self.lease_ttl / 3)
                }
                Ok(Some(published)) if published >= BATCH as usize => {
                    failures = 0;
                    Duration::ZERO
                }
                Ok(Some(_)) => {
                    failures = 0;
                    IDLE_POLL
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 || failures.is_multiple_of(30) {
                        tracing::warn!(error = %e, failures, "broker relay: events wait in the database");
                    }
                    stream_ready = false;
                    // Never so long that the lease lapses while the broker is away.
                    Duration::from_millis(200 * u64::from(failures.min(10))).min(self.lease_ttl / 3)
                }
            };
            if pause > Duration::ZERO {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        let _ = sqlx::query("DELETE FROM keel_leases WHERE name = $1 AND holder = $2")
            .bind(LEASE)
            .bind(&self.holder)
            .execute(self.db.pool())
            .await;
    }

    /// Takes or renews the lease and, when held, publishes one batch. Returns how many rows
    /// were published, `None` when another replica holds the lease.
    async fn round(
        &self,
        js: &mut Option<jetstream::Context>,
        stream_ready: &mut bool,
        renewed: &mut Option<Instant>,
    ) -> Result<Option<usize>, BrokerError> {
        if !self.hold_lease(renewed).await? {
            return Ok(None);
        }
        let context = match js {
            Some(c) => c.clone(),
            None => {
                let c = super::connect(&self.config).await?;
                *js = Some(c.clone());
                c
            }
        };
        if !*stream_ready {
            super::ensure_stream(&context, &self.config).await?;
            *stream_ready = true;
            tracing::info!(stream = %self.config.stream, "broker relay: publishing");
        }
        let pending = self.pending().await.map_err(db_error)?;
        if pending.is_empty() {
            return Ok(Some(0));
        }
        // Connecting may have taken longer than the lease: renew it before publishing. (Two
        // relays publishing at once would still not reorder: each publishes from the oldest
        // unmarked row in order, and the broker keeps each event's first copy only.)
        if !self.hold_lease(renewed).await? {
            return Ok(None);
        }
        let (acked, failure) = publish(&context, &pending).await;
        let n = acked.len();
        self.mark(&acked).await.map_err(db_error)?;
        metrics::counter!("keel_broker_published_total").increment(n as u64);
        match failure {
            Some(e) => Err(e),
            None => Ok(Some(n)),
        }
    }

    /// Whether this process holds the lease: renewed on the database when the last renewal
    /// is older than a third of its term (an idle relay polls often; it need not write as
    /// often), taken when it is free or expired.
    async fn hold_lease(&self, renewed: &mut Option<Instant>) -> Result<bool, BrokerError> {
        if renewed.is_some_and(|at| at.elapsed() < self.lease_ttl / 3) {
            return Ok(true);
        }
        let asked = Instant::now();
        let held = self.take_lease().await.map_err(db_error)?;
        *renewed = held.then_some(asked);
        Ok(held)
    }

    /// Takes the relay lease, or renews it when this process holds it.
    async fn take_lease(&self) -> Result<bool, sqlx::Error> {
        let sql = self.time.sql(
            "INSERT INTO keel_leases (name, holder, expires_at) VALUES ($2, $3, NOW_MS + $4) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE keel_leases.holder = excluded.holder OR keel_leases.expires_at < NOW_MS",
        );
        let taken = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(self.time.fixed())
            .bind(LEASE)
            .bind(&self.holder)
            .bind(millis(self.lease_ttl))
            .execute(self.db.pool())
            .await?
            .rows_affected();
        Ok(taken == 1)
    }

    /// The next rows in commit order, only those no in-flight transaction can precede.
    async fn pending(&self) -> Result<Vec<Pending>, sqlx::Error> {
        let horizon = match self.db.backend() {
            Backend::Postgres => "AND tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "SELECT position, event_id, subject, body, traceparent FROM keel_relay \
             WHERE published_at IS NULL {horizon} ORDER BY tx, position LIMIT {BATCH}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Pending {
                    position: r.try_get("position")?,
                    event_id: r.try_get("event_id")?,
                    subject: r.try_get("subject")?,
                    body: r.try_get("body")?,
                    traceparent: r.try_get("traceparent")?,
                })
            })
            .collect()
    }

    /// Marks acknowledged rows published, with the stream sequence the broker gave them:
    /// one `UPDATE … FROM (VALUES …)` per chunk of rows.
    async fn mark(&self, acked: &[(i64, String, u64)]) -> Result<(), sqlx::Error> {
        const ROWS: usize = 64;
        if acked.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.pool().begin().await?;
        for chunk in acked.chunks(ROWS) {
            let values = (0..chunk.len())
                .map(|i| {
                    let p = 2 + i * 3;
                    match self.db.backend() {
                        Backend::Postgres => {
                            format!("(${p}::BIGINT, ${}::TEXT, ${}::BIGINT)", p + 1, p + 2)
                        }
                        Backend::Sqlite => format!("(${p}, ${}, ${})", p + 1, p + 2),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = self.time.sql(&format!(
                "UPDATE keel_relay SET published_at = NOW_MS, stream = v.stream, stream_seq = v.seq \
                 FROM (SELECT column1 AS position, column2 AS stream, column3 AS seq FROM (VALUES {values}) AS t) AS v \
                 WHERE keel_relay.position = v.position"
            ));
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(self.time.fixed());
            for (position, stream, seq) in chunk {
                query = query
                    .bind(*position)
                    .bind(stream.as_str())
                    .bind(i64::try_from(*seq).unwrap_or(i64::MAX));
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await
    }
}

/// Publishes `pending` as a pipeline and reads the acks in order: the acknowledged prefix
/// (position, stream, sequence), and the failure that ended it, if any.
async fn publish(
    js: &jetstream::Context,
    pending: &[Pending],
) -> (Vec<(i64, String, u64)>, Option<BrokerError>) {
    let mut futures = Vec::with_capacity(pending.len());
    let mut failure = None;
    for row in pending {
        let correlation = serde_json::from_str::<EventEnvelope>(&row.body)
            .map(|e| (e.correlation_id.as_str().to_owned(), e.id))
            .ok();
        let mut message = PublishMessage::build()
            .payload(row.body.clone().into_bytes().into())
            .message_id(row.event_id.as_str());
        if let Some((correlation_id, id)) = &correlation {
            let traceparent = row
                .traceparent
                .clone()
                .unwrap_or_else(|| super::traceparent(correlation_id, *id));
            message = message
                .header("x-correlation-id", correlation_id.as_str())
                .header("traceparent", traceparent.as_str());
        }
        match js.send_publish(row.subject.clone(), message).await {
            Ok(ack) => futures.push((row.position, ack)),
            Err(e) => {
                failure = Some(BrokerError::Nats(format!(
                    "publishing {}: {e}",
                    row.subject
                )));
                break;
            }
        }
    }
    let mut acked = Vec::with_capacity(futures.len());
    for (position, ack) in futures {
        match ack.await {
            Ok(ack) => acked.push((position, ack.stream, ack.sequence)),
            Err(e) => {
                failure = Some(BrokerError::Nats(format!("awaiting the broker's ack: {e}")));
                break;
            }
        }
    }
    (acked, failure)
}

fn db_error(e: sqlx::Error) -> BrokerError {
    BrokerError::Database(e)
}

/// Starts the relay on a task of its own.
pub fn spawn(relay: Relay, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(relay.run(shutdown))
}
