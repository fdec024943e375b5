//! The records module: records (a title, an owner's email, free-form attributes) and the
//! NDJSON imports that create them in bulk.
//!
//! It owns the `records_` tables, the `POST/GET /records` and `/imports` routes, the
//! `records.run_import` job on the `imports` queue, and publishes `record.created` and
//! `import.completed` — each in the same transaction as the rows it describes. Other modules
//! learn about records and imports only through the [`record_directory`] and
//! [`import_directory`] query ports.
//!
//! What it must never do: depend on another workspace crate than `events`, touch a table
//! without the `records_` prefix, put an owner's email in an event, a job, an error reason
//! or a log line, or hold a database transaction open while a client is still uploading.

mod directory;
mod http;
mod jobs;
mod migrations;
mod model;
mod store;
mod upload;

use std::sync::Arc;

use events::queries::{ImportDirectory, RecordDirectory};
use events::{Clock, Db, Event, ImportCompleted, JobQueue, Module, Outbox, RecordCreated};

pub use http::{ImportError, RecordError};
pub use jobs::{RunImport, RunImportHandler};
pub use model::{InvalidRecord, OwnerEmail, Title};

/// What the records module needs from the app.
#[derive(Debug, Clone)]
pub struct RecordsDeps {
    /// Its database.
    pub db: Db,
    /// Where it publishes `record.created` and `import.completed`.
    pub outbox: Arc<dyn Outbox>,
    /// Where `POST /imports` enqueues the import job.
    pub jobs: Arc<dyn JobQueue>,
    /// The time stamped on records and imports.
    pub clock: Arc<dyn Clock>,
}

/// The records module as the app wires it: routes, migrations, the import job.
pub fn module(deps: RecordsDeps) -> Module {
    let import_job = events::jobs::typed(RunImportHandler::new(
        deps.db.clone(),
        deps.outbox.clone(),
        deps.jobs.clone(),
        deps.clock.clone(),
    ));
    Module {
        name: "records",
        migrations: migrations::all(),
        publishes: vec![RecordCreated::key(), ImportCompleted::key()],
        listeners: Vec::new(),
        jobs: vec![import_job],
        schedules: Vec::new(),
        routes: http::routes(deps),
        retention: Vec::new(),
    }
}

/// The module's part of the API's OpenAPI document: `/records` and `/imports`, generated
/// from the handlers and the request and response types.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::ApiDoc as utoipa::OpenApi>::openapi()
}

/// Lets other modules look up a record's title and owner without importing this crate.
pub fn record_directory(db: Db) -> Arc<dyn RecordDirectory> {
    Arc::new(directory::SqlRecordDirectory::new(db))
}

/// Lets other modules follow an import's progress without importing this crate.
pub fn import_directory(db: Db) -> Arc<dyn ImportDirectory> {
    Arc::new(directory::SqlImportDirectory::new(db))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::jobs::tests::{RecordingOutbox, RecordingQueue, fixed_clock};

    #[tokio::test]
    async fn the_module_declares_its_contract() {
        let db = crate::store::tests::test_db().await;
        let module = module(RecordsDeps {
            db,
            outbox: Arc::new(RecordingOutbox::default()),
            jobs: Arc::new(RecordingQueue::default()),
            clock: fixed_clock(),
        });
        assert_eq!(module.name, "records");
        assert_eq!(
            module.publishes,
            vec![RecordCreated::key(), ImportCompleted::key()]
        );
        assert!(module.listeners.is_empty());
        assert_eq!(module.jobs.len(), 1);
        assert_eq!(module.jobs[0].job_type(), "records.run_import");
        assert_eq!(module.jobs[0].queue(), "imports");
        let versions: Vec<i64> = module.migrations.iter().map(|m| m.version).collect();
        assert_eq!(versions, vec![2026112601, 2026112602]);
        for migration in &module.migrations {
            assert!(migration.description.starts_with("records: "));
        }
    }

    #[test]
    fn every_source_file_opens_with_a_module_doc() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with("//!"),
                "{} lacks a //! doc",
                path.display()
            );
        }
    }
}
