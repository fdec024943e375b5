//! The event catalog: the facts Keel's modules publish, every version of each, and the
//! [`registry`] that lists them with their schemas, examples and upcasters.
//!
//! Payloads carry ids only; a listener that needs the record's title or the owner's email
//! asks a query port at the time it runs.
//!
//! Adding a version (a breaking change): copy the type to `RecordCreatedV1` (same `NAME`,
//! `VERSION = 1`), implement [`Upcast`](crate::schema::Upcast) for it (v1 → the new type), give the new type
//! `VERSION = 2`, list both in [`registry`] (`superseded::<RecordCreatedV1>()`,
//! `current::<RecordCreated>()`), run `cargo xtask check-contracts --bless` (it writes the v2
//! schema and golden file; v1's stay as they are), and move the listeners to v2.

use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::Event;
use crate::schema::{Catalog, CatalogEvent, EventSchema};

/// Every version of every event Keel publishes: the one list the runtime upcasts with and
/// the contract checks read.
pub fn registry() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        Catalog::new(vec![
            EventSchema::current::<RecordCreated>(),
            EventSchema::current::<InvoiceIssued>(),
            EventSchema::current::<InvoicePaid>(),
            EventSchema::current::<ImportCompleted>(),
            EventSchema::current::<InvoiceOverdue>(),
            EventSchema::current::<EndpointDisabled>(),
        ])
    })
}

// Fixed ids for the examples, so the docs and the golden corpus are stable.
const EXAMPLE_RECORD: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0a01);
const EXAMPLE_INVOICE: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0b01);
const EXAMPLE_IMPORT: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0c01);
const EXAMPLE_ENDPOINT: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0d01);

/// A record was created (by `POST /records` or by an import).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordCreated {
    /// The new record's id.
    pub record_id: Uuid,
}

impl Event for RecordCreated {
    const NAME: &'static str = "record.created";
    const VERSION: u32 = 1;
}

impl CatalogEvent for RecordCreated {
    fn example() -> Self {
        Self {
            record_id: EXAMPLE_RECORD,
        }
    }
}

/// An invoice was issued for a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

impl CatalogEvent for InvoiceIssued {
    fn example() -> Self {
        Self {
            invoice_id: EXAMPLE_INVOICE,
            record_id: EXAMPLE_RECORD,
        }
    }
}

/// An invoice was paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

impl CatalogEvent for InvoicePaid {
    fn example() -> Self {
        Self {
            invoice_id: EXAMPLE_INVOICE,
            record_id: EXAMPLE_RECORD,
        }
    }
}

/// An import finished: every line was handled, successfully or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportCompleted {
    /// The import's id.
    pub import_id: Uuid,
}

impl Event for ImportCompleted {
    const NAME: &'static str = "import.completed";
    const VERSION: u32 = 1;
}

impl CatalogEvent for ImportCompleted {
    fn example() -> Self {
        Self {
            import_id: EXAMPLE_IMPORT,
        }
    }
}

/// An open invoice passed its due date unpaid (billing's daily schedule marks it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceOverdue {
    /// The invoice's id.
    pub invoice_id: Uuid,
    /// The record the invoice bills.
    pub record_id: Uuid,
}

impl Event for InvoiceOverdue {
    const NAME: &'static str = "invoice.overdue";
    const VERSION: u32 = 1;
}

impl CatalogEvent for InvoiceOverdue {
    fn example() -> Self {
        Self {
            invoice_id: EXAMPLE_INVOICE,
            record_id: EXAMPLE_RECORD,
        }
    }
}

/// Why a webhook endpoint stopped receiving deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointDisabledReason {
    /// The receiver answered 410 Gone: it asked never to be called again.
    Gone,
    /// Every delivery failed for longer than `[webhooks] disable_after`.
    Failing,
}

/// A webhook endpoint was disabled: it gets no new deliveries until someone re-enables it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointDisabled {
    /// The endpoint's id.
    pub endpoint_id: Uuid,
    /// Why it was disabled.
    pub reason: EndpointDisabledReason,
}

impl Event for EndpointDisabled {
    const NAME: &'static str = "endpoint.disabled";
    const VERSION: u32 = 1;
}

impl CatalogEvent for EndpointDisabled {
    fn example() -> Self {
        Self {
            endpoint_id: EXAMPLE_ENDPOINT,
            reason: EndpointDisabledReason::Failing,
        }
    }
}
