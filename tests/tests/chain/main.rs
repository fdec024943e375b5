//! The chain tests: the real application over its HTTP API, on a real database (a SQLite
//! file, and PostgreSQL — see `tests/src/db.rs`), delivering to a real HTTP
//! receiver and a real SMTP server in this process. Nothing in a chain is mocked.
//!
//! Every test starts its own app, database and receivers, so they run in parallel; every
//! asynchronous outcome is polled for with a deadline, never waited for by sleeping.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod correlation;
mod crash;
mod dead_letters;
mod emails;
mod errors;
mod health;
mod imports;
mod overdue;
mod ssrf;
mod trace;
mod webhook_endpoints;
mod webhooks;
