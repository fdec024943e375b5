//! The billing module: invoices for records, from issued (`open`) to `paid` — or `overdue`
//! in between, when open for longer than `[billing] overdue_after`.
//!
//! It owns the `billing_invoices` table and the `/invoices` routes, and publishes
//! `invoice.issued`, `invoice.paid` and `invoice.overdue` in the same transaction as the
//! change they describe. A daily schedule (`billing.mark_overdue_invoices`) marks overdue
//! invoices.
//! Other modules learn about invoices only through the [`invoice_directory`] query port.
//!
//! What it must never do: import the records crate or read `records_` tables (it asks the
//! `RecordDirectory` port whether a record exists), depend on any workspace crate but
//! `events`, or let an invoice be paid twice.

mod currencies;
mod directory;
mod http;
mod jobs;
mod migrations;
mod model;
mod store;

use std::sync::Arc;

use events::jobs::typed;
use events::queries::{InvoiceDirectory, RecordDirectory};
use events::{
    Clock, Db, Event, InvoiceIssued, InvoiceOverdue, InvoicePaid, Job, Missed, Module, Outbox,
    Schedule,
};

pub use http::InvoiceError;
pub use jobs::MarkOverdueInvoices;
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
    /// How long an invoice stays open before it is overdue (`[billing] overdue_after`).
    pub overdue_after: std::time::Duration,
}

/// `[billing] overdue_after`'s default: 30 days.
pub const DEFAULT_OVERDUE_AFTER: std::time::Duration =
    std::time::Duration::from_secs(30 * 24 * 3600);

/// The schedule that marks overdue invoices: daily at 03:00 UTC; after downtime, once.
pub const OVERDUE_SCHEDULE: &str = "billing.mark_overdue_invoices";

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

/// The billing module as the app wires it: routes, migrations, and the daily job that marks
/// overdue invoices; no listeners.
pub fn module(deps: BillingDeps) -> Module {
    let marker = jobs::OverdueMarker {
        db: deps.db.clone(),
        outbox: deps.outbox.clone(),
        clock: deps.clock.clone(),
        overdue_after: deps.overdue_after,
    };
    Module {
        name: "billing",
        migrations: migrations::all(),
        publishes: vec![
            InvoiceIssued::key(),
            InvoicePaid::key(),
            InvoiceOverdue::key(),
        ],
        listeners: Vec::new(),
        jobs: vec![typed::<MarkOverdueInvoices, _>(marker)],
        schedules: vec![
            Schedule::new(OVERDUE_SCHEDULE, "0 3 * * *", MarkOverdueInvoices::TYPE)
                .when_missed(Missed::RunOnce),
        ],
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
            overdue_after: DEFAULT_OVERDUE_AFTER,
        });
        assert_eq!(module.name, "billing");
        assert_eq!(
            module.publishes,
            vec![
                InvoiceIssued::key(),
                InvoicePaid::key(),
                InvoiceOverdue::key()
            ]
        );
        assert!(module.listeners.is_empty());
        let jobs: Vec<&str> = module.jobs.iter().map(|j| j.job_type()).collect();
        assert_eq!(jobs, vec![MarkOverdueInvoices::TYPE]);
        assert_eq!(module.schedules.len(), 1);
        assert_eq!(module.schedules[0].job_type, MarkOverdueInvoices::TYPE);
        assert_eq!(module.schedules[0].missed, Missed::RunOnce);
        let versions: Vec<i64> = module.migrations.iter().map(|m| m.version).collect();
        assert_eq!(versions, vec![2026112611, 2026120331]);
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
