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

/// An invoice may become `overdue`: SQLite cannot change a CHECK constraint, so the table
/// is rebuilt (on both backends, one portable statement list); the index serves the daily
/// scan for open invoices past their due date.
const ALLOW_OVERDUE: &str = "\
CREATE TABLE billing_invoices_next (
    id           TEXT PRIMARY KEY,
    record_id    TEXT NOT NULL,
    amount_cents BIGINT NOT NULL CHECK (amount_cents > 0),
    currency     TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('open', 'paid', 'overdue')),
    created_at   BIGINT NOT NULL,
    paid_at      BIGINT
);
INSERT INTO billing_invoices_next (id, record_id, amount_cents, currency, status, created_at, paid_at)
    SELECT id, record_id, amount_cents, currency, status, created_at, paid_at FROM billing_invoices;
DROP TABLE billing_invoices;
ALTER TABLE billing_invoices_next RENAME TO billing_invoices;
CREATE INDEX billing_invoices_record_id ON billing_invoices (record_id);
CREATE INDEX billing_invoices_status_created ON billing_invoices (status, created_at)";

/// Every migration of the module, in version order.
pub fn all() -> Vec<Migration> {
    vec![
        Migration::portable(
            2026112611,
            "billing: create billing_invoices",
            CREATE_INVOICES,
        ),
        Migration::portable(
            2026120331,
            "billing: invoices can become overdue",
            ALLOW_OVERDUE,
        ),
    ]
}
