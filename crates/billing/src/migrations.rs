//! The billing module's schema: its invoices.

use events::Migration;

/// Invoices: ids are UUIDv7 text, times unix milliseconds; `paid_at` is set with `paid`.
const CREATE_INVOICES: &str = "\
CREATE TABLE billing_invoices (
    id           TEXT PRIMARY KEY,
    record_id    TEXT NOT NULL,
    amount_cents BIGINT NOT NULL CHECK (amount_cents > 0),
    currency     TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('open', 'paid')),
    created_at   BIGINT NOT NULL,
    paid_at      BIGINT
);
CREATE INDEX billing_invoices_record_id ON billing_invoices (record_id)";

/// Every migration of the module, in version order.
pub fn all() -> Vec<Migration> {
    vec![Migration::portable(
        2026112611,
        "billing: create billing_invoices",
        CREATE_INVOICES,
    )]
}
