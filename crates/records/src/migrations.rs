//! The records module's schema: its records, and the imports that create them in bulk.

use events::Migration;

/// Records: ids are UUIDv7 text, so ordering by id is ordering by creation.
const CREATE_RECORDS: &str = "\
CREATE TABLE records_records (
    id          TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    owner_email TEXT NOT NULL,
    attributes  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
)";

/// Imports, the raw lines awaiting their job (deleted on completion), and the lines that
/// failed. `checkpoint` is the last line number handled: the job resumes after it.
const CREATE_IMPORTS: &str = "\
CREATE TABLE records_imports (
    id          TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    total       BIGINT NOT NULL,
    processed   BIGINT NOT NULL DEFAULT 0,
    failed      BIGINT NOT NULL DEFAULT 0,
    checkpoint  BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE TABLE records_import_lines (
    import_id   TEXT NOT NULL,
    line_no     BIGINT NOT NULL,
    body        TEXT,
    error       TEXT,
    PRIMARY KEY (import_id, line_no)
);
CREATE TABLE records_import_failures (
    import_id   TEXT NOT NULL,
    line        BIGINT NOT NULL,
    error       TEXT NOT NULL,
    PRIMARY KEY (import_id, line)
)";

/// Every migration of the module, in version order.
pub fn all() -> Vec<Migration> {
    vec![
        Migration::portable(
            2026112601,
            "records: create records_records",
            CREATE_RECORDS,
        ),
        Migration::portable(
            2026112602,
            "records: create records_imports, records_import_lines, records_import_failures",
            CREATE_IMPORTS,
        ),
    ]
}
