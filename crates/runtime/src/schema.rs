//! The runtime's own tables (`keel_…`), in SQL both backends accept.
//!
//! Timestamps are unix milliseconds (`BIGINT`). Those that decide who owns a job or when
//! something is due are read from the database's clock inside each statement (see
//! [`crate::db_time`]), so replicas with skewed wall clocks agree.
//!
//! **Partial indexes and SQLite.** SQLite uses a partial index only when the query's `WHERE`
//! repeats the index's predicate term for term: `state = 'dead'` alone does not qualify for
//! `keel_jobs_finished` (`state IN ('completed', 'cancelled', 'dead')`). So queries over
//! finished or held jobs spell the index's predicate out before narrowing it (`state IN
//! ('completed', 'cancelled', 'dead') AND state = 'dead'`); PostgreSQL infers either.
//! Without it every prune batch and dead-letter count would scan the whole table.

use events::Migration;

/// The runtime's migrations, applied before any module's.
pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        2026112500,
        "runtime: events, jobs, attempts, inbox, workers, leases",
        r#"
CREATE TABLE keel_events (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    version        INTEGER NOT NULL,
    occurred_at    BIGINT NOT NULL,
    correlation_id TEXT NOT NULL,
    causation_id   TEXT,
    payload        TEXT NOT NULL
);
CREATE INDEX keel_events_correlation ON keel_events (correlation_id);
CREATE INDEX keel_events_occurred ON keel_events (occurred_at);

CREATE TABLE keel_jobs (
    id              TEXT PRIMARY KEY,
    queue           TEXT NOT NULL,
    job_type        TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL,
    priority        SMALLINT NOT NULL DEFAULT 0,
    run_at          BIGINT NOT NULL,
    attempt         INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    unique_key      TEXT,
    idempotency_key TEXT NOT NULL,
    correlation_id  TEXT NOT NULL,
    causation_id    TEXT,
    enqueued_at     BIGINT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT,
    locked_by       TEXT,
    last_error      TEXT,
    replays         INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX keel_jobs_unique ON keel_jobs (job_type, unique_key);
CREATE INDEX keel_jobs_claim ON keel_jobs (queue, priority, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retrying');
CREATE INDEX keel_jobs_running ON keel_jobs (locked_by) WHERE state = 'running';
CREATE INDEX keel_jobs_correlation ON keel_jobs (correlation_id);
CREATE INDEX keel_jobs_finished ON keel_jobs (state, finished_at);

CREATE TABLE keel_job_attempts (
    job_id      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    worker      TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    error       TEXT,
    detail      TEXT
);
CREATE INDEX keel_job_attempts_job ON keel_job_attempts (job_id, started_at);

CREATE TABLE keel_inbox (
    handler      TEXT NOT NULL,
    key          TEXT NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (handler, key)
);

CREATE TABLE keel_workers (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    queues       TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    stopped_at   BIGINT
);

CREATE TABLE keel_leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
"#,
    ),
    Migration::portable(
        2026112501,
        "runtime: inbound requests and idempotency keys",
        r#"
CREATE TABLE keel_requests (
    id             TEXT PRIMARY KEY,
    correlation_id TEXT NOT NULL,
    method         TEXT NOT NULL,
    path           TEXT NOT NULL,
    status         INTEGER NOT NULL,
    started_at     BIGINT NOT NULL,
    duration_ms    BIGINT NOT NULL
);
CREATE INDEX keel_requests_correlation ON keel_requests (correlation_id);
CREATE INDEX keel_requests_started ON keel_requests (started_at);

CREATE TABLE keel_idempotency (
    key          TEXT NOT NULL,
    method       TEXT NOT NULL,
    path         TEXT NOT NULL,
    body_hash    TEXT NOT NULL,
    status       INTEGER,
    content_type TEXT,
    response     TEXT,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (key, method, path)
);
"#,
    ),
    Migration {
        version: 2026112502,
        description: "runtime: claim only available jobs; stage due ones through their own index",
        sqlite: STAGED_CLAIMS,
        postgres: STAGED_CLAIMS_POSTGRES,
    },
    Migration {
        version: 2026112503,
        description: "runtime: NOTIFY new jobs from a statement trigger (PostgreSQL)",
        // SQLite serves one process: an enqueue wakes its workers in memory.
        sqlite: "SELECT 1;",
        postgres: NOTIFY_TRIGGER_POSTGRES,
    },
    Migration::portable(
        2026112504,
        "runtime: index jobs by cause (event pruning, traces)",
        "CREATE INDEX keel_jobs_causation ON keel_jobs (causation_id);",
    ),
    Migration::portable(
        2026112605,
        "runtime: index only finished jobs by finish time, and only unique jobs by key",
        PARTIAL_INDEXES,
    ),
    Migration::portable(
        2026120206,
        "runtime: reservations, crash counts, and indexes for bounded pruning and stats",
        RESERVATIONS,
    ),
    Migration::portable(
        2026120207,
        "runtime: count how often a dying worker held a job with no start recorded",
        "ALTER TABLE keel_jobs ADD COLUMN held_at_crash INTEGER NOT NULL DEFAULT 0;",
    ),
    Migration {
        version: 2026120320,
        description: "runtime: a position for every event, in the order the log stored them",
        sqlite: EVENT_POSITION_SQLITE,
        postgres: EVENT_POSITION_POSTGRES,
    },
    Migration::portable(
        2026120321,
        "runtime: replays and backfills of past events to one listener",
        REPLAYS,
    ),
    Migration::portable(
        2026120322,
        "runtime: index failed attempts by finish time (the dashboard's last hour)",
        "CREATE INDEX keel_job_attempts_failed ON keel_job_attempts (finished_at) \
         WHERE outcome IN ('failed', 'dead', 'lost');",
    ),
    Migration::portable(
        2026120330,
        "runtime: scheduled jobs' next and last tick",
        SCHEDULES,
    ),
    Migration::portable(
        2026120332,
        "runtime: the W3C trace context a job continues",
        "ALTER TABLE keel_jobs ADD COLUMN traceparent TEXT;",
    ),
    Migration {
        version: 2026120340,
        description: "runtime: the broker relay's outbox and the messages consumed from the broker",
        sqlite: BROKER_SQLITE,
        postgres: BROKER_POSTGRES,
    },
    Migration {
        version: 2026120750,
        description: "runtime: an enqueue that wakes replicas after its commit skips the in-transaction NOTIFY (PostgreSQL)",
        sqlite: "SELECT 1;",
        postgres: NOTIFY_AFTER_COMMIT_POSTGRES,
    },
];

/// SQLite has one writer, so a counter row bumped by a trigger in the inserting
/// transaction numbers events in commit order. The counter is kept apart from the events so
/// that pruning every event never lets a position be given out twice.
const EVENT_POSITION_SQLITE: &str = r#"
ALTER TABLE keel_events ADD COLUMN position BIGINT;
UPDATE keel_events SET position = (SELECT COUNT(*) FROM keel_events e WHERE e.id <= keel_events.id);
CREATE UNIQUE INDEX keel_events_position ON keel_events (position);
CREATE TABLE keel_event_positions (id INTEGER PRIMARY KEY CHECK (id = 1), last BIGINT NOT NULL);
INSERT INTO keel_event_positions (id, last) SELECT 1, COALESCE(MAX(position), 0) FROM keel_events;
CREATE TRIGGER keel_events_position AFTER INSERT ON keel_events WHEN NEW.position IS NULL
BEGIN
    UPDATE keel_event_positions SET last = last + 1 WHERE id = 1;
    UPDATE keel_events SET position = (SELECT last FROM keel_event_positions WHERE id = 1)
        WHERE rowid = NEW.rowid;
END;
"#;

/// A sequence: one `nextval` at insert, never rolled back, never reused. Existing events are
/// numbered in id order.
const EVENT_POSITION_POSTGRES: &str = r#"
ALTER TABLE keel_events ADD COLUMN position BIGINT;
CREATE SEQUENCE keel_events_position_seq;
UPDATE keel_events SET position = n.rn
    FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM keel_events) n
    WHERE keel_events.id = n.id;
SELECT setval('keel_events_position_seq', COALESCE((SELECT MAX(position) FROM keel_events), 0) + 1, false);
ALTER TABLE keel_events ALTER COLUMN position SET DEFAULT nextval('keel_events_position_seq');
ALTER TABLE keel_events ALTER COLUMN position SET NOT NULL;
ALTER SEQUENCE keel_events_position_seq OWNED BY keel_events.position;
CREATE UNIQUE INDEX keel_events_position ON keel_events (position);
"#;

/// A replay (`keel events replay`) or a backfill (`Listener::backfill_from`): a window of
/// the log (`after_position`, `to_position`] fed to one listener (on PostgreSQL not before
/// every transaction in flight when it began has ended: `horizon`), with the last position
/// fed as its checkpoint — a feeder that dies resumes from there, and pruning keeps every
/// event a feeding replay still needs. One backfill per listener and start point, whatever
/// the number of replicas.
const REPLAYS: &str = r#"
CREATE TABLE keel_replays (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    listener     TEXT NOT NULL,
    since_ms     BIGINT NOT NULL,
    until_ms     BIGINT,
    forced       INTEGER NOT NULL DEFAULT 0,
    rate         BIGINT NOT NULL,
    to_position  BIGINT NOT NULL,
    horizon      BIGINT,
    checkpoint   BIGINT NOT NULL,
    next_run_at  BIGINT NOT NULL,
    total        BIGINT NOT NULL,
    enqueued     BIGINT NOT NULL DEFAULT 0,
    delivered    BIGINT NOT NULL DEFAULT 0,
    skipped      BIGINT NOT NULL DEFAULT 0,
    failed       BIGINT NOT NULL DEFAULT 0,
    state        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT
);
CREATE UNIQUE INDEX keel_replays_backfill ON keel_replays (listener, since_ms) WHERE kind = 'backfill';
CREATE INDEX keel_replays_state ON keel_replays (state, finished_at);
"#;

/// One row per schedule (never more): the next tick on the database's clock, what it was
/// computed from, and the last tick a job was enqueued for.
const SCHEDULES: &str = r#"
CREATE TABLE keel_schedules (
    name        TEXT PRIMARY KEY,
    expression  TEXT NOT NULL,
    next_run_at BIGINT,
    last_run_at BIGINT,
    last_job_id TEXT
);
"#;

/// `keel_relay`: one row per event this deployment publishes to the broker, written in the
/// publishing transaction. The relay publishes rows in `(tx, position)` order: on SQLite (one
/// writer at a time) `position` is commit order and `tx` is 0; on PostgreSQL `tx` is the
/// writing transaction's id, and the relay reads only rows of transactions older than every
/// transaction still in flight (see `broker::relay`). `keel_broker_received`: what each local
/// listener took from the broker (stream and sequence), for traces and to absorb redeliveries.
/// `traceparent`: the publish span's W3C context (when traces are exported), sent with the
/// message so the consuming deployment's spans join the same trace.
const BROKER_SQLITE: &str = r#"
CREATE TABLE keel_relay (
    position     INTEGER PRIMARY KEY AUTOINCREMENT,
    tx           BIGINT NOT NULL DEFAULT 0,
    event_id     TEXT NOT NULL,
    subject      TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    published_at BIGINT,
    stream       TEXT,
    stream_seq   BIGINT,
    traceparent  TEXT
);
CREATE INDEX keel_relay_pending ON keel_relay (tx, position) WHERE published_at IS NULL;
CREATE INDEX keel_relay_published ON keel_relay (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX keel_relay_event ON keel_relay (event_id);
CREATE TABLE keel_broker_received (
    listener    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    stream      TEXT NOT NULL,
    stream_seq  BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (listener, event_id)
);
CREATE INDEX keel_broker_received_event ON keel_broker_received (event_id);
CREATE INDEX keel_broker_received_at ON keel_broker_received (received_at);
"#;

/// As [`BROKER_SQLITE`]; `tx` defaults to the writing transaction's id.
const BROKER_POSTGRES: &str = r#"
CREATE TABLE keel_relay (
    position     BIGSERIAL PRIMARY KEY,
    tx           BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    event_id     TEXT NOT NULL,
    subject      TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    published_at BIGINT,
    stream       TEXT,
    stream_seq   BIGINT,
    traceparent  TEXT
);
CREATE INDEX keel_relay_pending ON keel_relay (tx, position) WHERE published_at IS NULL;
CREATE INDEX keel_relay_published ON keel_relay (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX keel_relay_event ON keel_relay (event_id);
CREATE TABLE keel_broker_received (
    listener    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    stream      TEXT NOT NULL,
    stream_seq  BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (listener, event_id)
);
CREATE INDEX keel_broker_received_event ON keel_broker_received (event_id);
CREATE INDEX keel_broker_received_at ON keel_broker_received (received_at);
"#;

/// A job claimed ahead is `reserved` (no attempt spent) until a task starts it; only then
/// is it `running`. `crashes` counts the runs that took their worker down (poison after
/// `[workers] poison_after`). The held index serves rescue and the stats' reserved/running
/// counts without touching finished rows; the time indexes let every table be pruned in
/// bounded batches.
const RESERVATIONS: &str = r#"
ALTER TABLE keel_jobs ADD COLUMN reserved_at BIGINT;
ALTER TABLE keel_jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0;
DROP INDEX keel_jobs_running;
CREATE INDEX keel_jobs_held ON keel_jobs (queue, state, locked_by) WHERE state IN ('reserved', 'running');
CREATE INDEX keel_inbox_processed ON keel_inbox (processed_at);
CREATE INDEX keel_idempotency_created ON keel_idempotency (created_at);
"#;

/// Every claim and every completion writes a new version of the job row, and on PostgreSQL
/// each new version is added to every index whose predicate it matches. Indexing only the
/// rows a query can want — finished jobs for pruning, throughput and dead letters; jobs that
/// carry a unique key for deduplication — spares most jobs two index writes per state change.
const PARTIAL_INDEXES: &str = r#"
DROP INDEX keel_jobs_finished;
CREATE INDEX keel_jobs_finished ON keel_jobs (state, finished_at)
    WHERE state IN ('completed', 'cancelled', 'dead');
DROP INDEX keel_jobs_unique;
CREATE UNIQUE INDEX keel_jobs_unique ON keel_jobs (job_type, unique_key)
    WHERE unique_key IS NOT NULL;
"#;

/// Every INSERT into `keel_jobs` notifies `keel_jobs` once per queue it touched, from inside
/// the statement: no extra round trip per enqueue, and delivered at commit like any NOTIFY.
const NOTIFY_TRIGGER_POSTGRES: &str = r#"
CREATE FUNCTION keel_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keel_jobs', q.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'available') AS q;
    RETURN NULL;
END
$$;
CREATE TRIGGER keel_jobs_notify AFTER INSERT ON keel_jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION keel_jobs_notify();
"#;

/// A transaction that notified holds a database-wide lock from the start of its commit to
/// its end, so notifying commits run one at a time (`keel-bench notify`: one-row inserts
/// stop at ~10 k/s with the trigger, ~17–21 k without, from 4 clients up). An enqueue made
/// where the runtime wakes replicas itself once the transaction has committed
/// (`wake::Notifier`) sets `keel.notify_after_commit` for its transaction, and the trigger
/// leaves the `NOTIFY` to it; any other enqueue (a CLI command, a test) still notifies here.
const NOTIFY_AFTER_COMMIT_POSTGRES: &str = r#"
CREATE OR REPLACE FUNCTION keel_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('keel.notify_after_commit', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('keel_jobs', q.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'available') AS q;
    RETURN NULL;
END
$$;
"#;

/// The claim index holds only `available` jobs, so jobs scheduled far ahead (or waiting to
/// retry) never slow a claim down; a second index finds the ones coming due.
const STAGED_CLAIMS: &str = r#"
DROP INDEX keel_jobs_claim;
CREATE INDEX keel_jobs_claim ON keel_jobs (queue, priority, run_at, id) WHERE state = 'available';
CREATE INDEX keel_jobs_due ON keel_jobs (queue, run_at) WHERE state IN ('scheduled', 'retrying');
"#;

/// PostgreSQL also vacuums `keel_jobs` far more eagerly than the default: every claim and
/// completion leaves a dead index entry behind, and claims walk past them until a vacuum.
const STAGED_CLAIMS_POSTGRES: &str = r#"
DROP INDEX keel_jobs_claim;
CREATE INDEX keel_jobs_claim ON keel_jobs (queue, priority, run_at, id) WHERE state = 'available';
CREATE INDEX keel_jobs_due ON keel_jobs (queue, run_at) WHERE state IN ('scheduled', 'retrying');
ALTER TABLE keel_jobs SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0, fillfactor = 90);
ALTER TABLE keel_job_attempts SET (autovacuum_vacuum_scale_factor = 0.02);
"#;
