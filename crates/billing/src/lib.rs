//! The billing module: invoices for records, from issued (`open`) to `paid`.
//!
//! It owns the `billing_invoices` table and the `/invoices` routes, and publishes
//! `invoice.issued` and `invoice.paid` in the same transaction as the change they describe.
//! Other modules learn about invoices only through the [`invoice_directory`] query port.
//!
//! What it must never do: import the records crate or read `records_` tables (it asks the
//! `RecordDirectory` port whether a record exists), depend on any workspace crate but
//! `events`, or let an invoice be paid twice.

mod currencies;
mod directory;
mod http;
mod migrations;
mod model;
mod store;

use std::sync::Arc;

use events::queries::{InvoiceDirectory, RecordDirectory};
use events::{Clock, Db, Event, InvoiceIssued, InvoicePaid, Module, Outbox};

pub use http::InvoiceError;
pub use model::{AmountCents, Currency, InvalidInvoice};

/// What the billing module needs from the app.
#[derive(Clone)]
pub struct BillingDeps {
    /// Its database.
    pub db: Db,
    /// Where it publishes `invoice.issued` and `invoice.paid`.
    pub outbox: Arc<dyn Outbox>,
    /// The time stamped on invoices and payments.
    pub clock: Arc<dyn Clock>,
    /// How it checks that an invoice's record exists, without importing `records`.
    pub records: Arc<dyn RecordDirectory>,
}

impl std::fmt::Debug for BillingDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingDeps")
            .field("db", &self.db)
            .field("outbox", &self.outbox)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// The module's part of the API's OpenAPI document: `/invoices`, generated from the
/// handlers and the request and response types.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::ApiDoc as utoipa::OpenApi>::openapi()
}

/// The billing module as the app wires it: routes and migrations; no listeners or jobs.
pub fn module(deps: BillingDeps) -> Module {
    Module {
        name: "billing",
        migrations: migrations::all(),
        publishes: vec![InvoiceIssued::key(), InvoicePaid::key()],
        listeners: Vec::new(),
        jobs: Vec::new(),
        routes: http::routes(deps),
        retention: Vec::new(),
    }
}

/// Lets other modules look up an invoice without importing this crate.
pub fn invoice_directory(db: Db) -> Arc<dyn InvoiceDirectory> {
    Arc::new(directory::SqlInvoiceDirectory::new(db))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use async_trait::async_trait;
    use chrono::Utc;
    use events::queries::RecordSummary;

    use uuid::Uuid;

    pub(crate) use events::testing::{FixedClock, RecordingOutbox};

    /// A record directory that knows a fixed set of record ids.
    pub(crate) struct KnownRecords(pub(crate) Vec<Uuid>);

    #[async_trait]
    impl RecordDirectory for KnownRecords {
        async fn find_record(&self, id: Uuid) -> Result<Option<RecordSummary>, sqlx::Error> {
            Ok(self.0.contains(&id).then(|| RecordSummary {
                record_id: id,
                title: "T".to_owned(),
                owner_email: "o@example.com".to_owned(),
            }))
        }
    }

    #[tokio::test]
    async fn the_module_declares_its_contract() {
        let module = module(BillingDeps {
            db: crate::store::tests::test_db().await,
            outbox: Arc::new(RecordingOutbox::default()),
            clock: Arc::new(FixedClock(Utc::now())),
            records: Arc::new(KnownRecords(Vec::new())),
        });
        assert_eq!(module.name, "billing");
        assert_eq!(
            module.publishes,
            vec![InvoiceIssued::key(), InvoicePaid::key()]
        );
        assert!(module.listeners.is_empty() && module.jobs.is_empty());
        let versions: Vec<i64> = module.migrations.iter().map(|m| m.version).collect();
        assert_eq!(versions, vec![2026112611]);
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
