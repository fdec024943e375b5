//! The v1 event catalog: the facts Keel's modules publish.
//!
//! Payloads carry ids only; a listener that needs the record's title or the owner's email
//! asks a query port at the time it runs.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::Event;

/// A record was created (by `POST /records` or by an import).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordCreated {
    /// The new record's id.
    pub record_id: Uuid,
}

impl Event for RecordCreated {
    const NAME: &'static str = "record.created";
    const VERSION: u32 = 1;
}

/// An invoice was issued for a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoiceIssued {
    /// The invoice's id.
    pub invoice_id: Uuid,
    /// The record the invoice bills.
    pub record_id: Uuid,
}

impl Event for InvoiceIssued {
    const NAME: &'static str = "invoice.issued";
    const VERSION: u32 = 1;
}

/// An invoice was paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoicePaid {
    /// The invoice's id.
    pub invoice_id: Uuid,
    /// The record the invoice bills.
    pub record_id: Uuid,
}

impl Event for InvoicePaid {
    const NAME: &'static str = "invoice.paid";
    const VERSION: u32 = 1;
}

/// An import finished: every line was handled, successfully or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportCompleted {
    /// The import's id.
    pub import_id: Uuid,
}

impl Event for ImportCompleted {
    const NAME: &'static str = "import.completed";
    const VERSION: u32 = 1;
}
