//! The runtime's behaviour, on real databases: the outbox, retries and dead letters, poison,
//! dedupe and the inbox guard, trace ids, graceful shutdown, rescue of jobs held by killed
//! processes, queue statistics, migrations and wake-ups, and liveness over time on several
//! replicas (clock skew, reservations, fencing, pruning under load, starved pools).
//!
//! Every test runs on SQLite and on PostgreSQL (`<test>::sqlite`, `<test>::postgres`),
//! except the few only PostgreSQL can do; `cargo xtask test` skips — and names — the
//! PostgreSQL variants when no server answers (see `tests/src/db.rs`).
#![allow(clippy::unwrap_used)]

mod alerts;
mod claim_ahead;
mod dead_letters;
mod liveness;
mod migrations;
mod outbox;
mod processes;
mod replay;
mod retention;
mod retries;
mod schedules;
mod shutdown;
mod stats;
mod trace_ids;
mod uniqueness;
mod wakeups;
