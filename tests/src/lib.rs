//! The shared test harness: real databases on both backends, injected time, and a test
//! module whose jobs and listeners do what a test tells them.
//!
//! - [`db`]: [`TestDb`], a fresh database per test (a SQLite file, or a new PostgreSQL
//!   database on `KEEL_TEST_POSTGRES_URL` or the local default), and the [`both_backends!`]
//!   and [`postgres_only!`] macros that run one test body on each backend;
//! - [`clock`]: [`ManualClock`], time that moves only when a test says so;
//! - [`poll`]: [`eventually`], waiting for an observable outcome with a deadline instead of
//!   sleeping;
//! - [`alerts`]: [`RecordingAlerts`], an alert sink a test can read back;
//! - [`testkit`]: the `testkit` module — job handlers driven by a [`Plan`] in their payload
//!   (succeed, fail N times, hang, panic, publish, guard an effect) that record every run,
//!   and listeners that record what they saw;
//! - [`harness`]: [`TestRuntime`], a runtime wired with the testkit over a [`TestDb`];
//! - [`process`]: spawning and signalling the `test-worker` binary for multi-process tests.
//! - [`app`]: [`spawn_app`], the real application on a random port against a [`TestDb`]
//!   with fast schedules, and [`app::KeelProcess`], the real `keel` binary as a child process;
//! - [`nats`]: a real `nats-server` with JetStream on a free port, stoppable and restartable;
//! - [`receivers`]: a real HTTP receiver and a real SMTP server that record what they get;
//! - [`webhook_verify`]: Standard Webhooks signature checks written from the specification.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod alerts;
pub mod app;
pub mod clock;
pub mod db;
pub mod harness;
pub mod nats;
pub mod poll;
pub mod process;
pub mod receivers;
pub mod testkit;
pub mod webhook_verify;

pub use crate::app::{AppOptions, TestApp, spawn_app};
pub use alerts::RecordingAlerts;
pub use clock::ManualClock;
pub use db::TestDb;
pub use harness::TestRuntime;
pub use poll::eventually;
pub use testkit::{Kit, Plan};
