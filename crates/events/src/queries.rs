//! Query ports: how one module asks another for what it needs without importing it.
//!
//! The owning module implements the trait over its own tables; the app hands the
//! implementation to the modules that ask. Answers are read at the time of asking, which is
//! why events carry ids and not snapshots.

use async_trait::async_trait;
use uuid::Uuid;

/// What other modules may know about a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSummary {
    /// The record's id.
    pub record_id: Uuid,
    /// Its title.
    pub title: String,
    /// Where notifications about it go. Personal data: never log it or put it in an event.
    pub owner_email: String,
}

/// Answers questions about records; implemented by `records`.
#[async_trait]
pub trait RecordDirectory: Send + Sync {
    /// The record, or `None` when no record has this id.
    ///
    /// # Errors
    /// Fails only when the database cannot answer.
    async fn find_record(&self, id: Uuid) -> Result<Option<RecordSummary>, sqlx::Error>;
}

/// What other modules may know about an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceSummary {
    /// The invoice's id.
    pub invoice_id: Uuid,
    /// The record it bills.
    pub record_id: Uuid,
    /// The amount in the currency's minor unit.
    pub amount_cents: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// `open` or `paid`.
    pub status: String,
}

/// Answers questions about invoices; implemented by `billing`.
#[async_trait]
pub trait InvoiceDirectory: Send + Sync {
    /// The invoice, or `None` when no invoice has this id.
    ///
    /// # Errors
    /// Fails only when the database cannot answer.
    async fn find_invoice(&self, id: Uuid) -> Result<Option<InvoiceSummary>, sqlx::Error>;
}

/// What other modules may know about an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    /// The import's id.
    pub import_id: Uuid,
    /// `queued`, `running`, `completed` or `failed`.
    pub status: String,
    /// Non-empty lines in the file.
    pub total: i64,
    /// Lines handled so far, failed ones included.
    pub processed: i64,
    /// Lines that failed.
    pub failed: i64,
}

/// Answers questions about imports; implemented by `records`.
#[async_trait]
pub trait ImportDirectory: Send + Sync {
    /// The import, or `None` when no import has this id.
    ///
    /// # Errors
    /// Fails only when the database cannot answer.
    async fn find_import(&self, id: Uuid) -> Result<Option<ImportSummary>, sqlx::Error>;
}
