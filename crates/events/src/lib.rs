//! The contract every Keel module programs against.
//!
//! This crate is a leaf: it depends on no workspace crate, and every line in it couples every
//! module, so it stays small on purpose. It holds
//!
//! - the event [`envelope`] and the event types of the [`catalog`] — domain facts in the
//!   past tense, carrying ids, never snapshots — with their versioned [`schema`]s, examples
//!   and upcasters;
//! - the [`context`] (correlation and causation ids) that follows a chain without being
//!   threaded by hand, and the W3C trace context's [`propagation`] across stored jobs;
//! - the ports: [`outbox`] (publish inside your own transaction), [`jobs`] (enqueue and run
//!   background work), [`listeners`] (react to events), [`queries`] (ask another module for
//!   what you need without importing it), [`clock`] (injected time), [`schedule`]s (periodic jobs a module declares);
//! - the shape of a [`module`] as the app wires it, its [`migration`]s, the database handle
//!   ([`db`]) and the HTTP error contract ([`http`]).
//!
//! What it must never hold: business rules, SQL against a module's tables, or anything from
//! the runtime crate.
#![warn(missing_docs)]

pub mod catalog;
pub mod clock;
pub mod context;
pub mod db;
pub mod envelope;
pub mod http;
pub mod jobs;
pub mod listeners;
pub mod migration;
pub mod module;
pub mod outbox;
pub mod propagation;
pub mod queries;
pub mod schedule;
pub mod schema;
#[cfg(feature = "testing")]
pub mod testing;

pub use catalog::{
    EndpointDisabled, EndpointDisabledReason, ImportCompleted, InvoiceIssued, InvoiceOverdue,
    InvoicePaid, RecordCreated,
};
pub use clock::{Clock, SystemClock};
pub use context::{CorrelationId, TraceContext};
pub use db::{Backend, Db, DbConn};
pub use envelope::{Event, EventEnvelope, EventKey};
pub use jobs::{Job, JobContext, JobError, JobHandler, JobQueue, NewJob};
pub use listeners::{Dispatch, Listener, ListenerError};
pub use migration::Migration;
pub use module::{Module, Retention};
pub use outbox::{Outbox, PublishError};
pub use schedule::{Missed, Schedule};
pub use schema::{Catalog, CatalogEvent, EventSchema, Upcast, UpcastError};
