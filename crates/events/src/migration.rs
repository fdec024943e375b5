//! Schema migrations a module declares; the runtime applies them in version order, under a
//! lock, in its own `keel_migrations` table so they coexist with an application's own.

/// One schema change, in each backend's dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Unique across all modules: `YYYYMMDDNN`.
    pub version: i64,
    /// What it does, e.g. `records: create records_records`.
    pub description: &'static str,
    /// SQL for SQLite.
    pub sqlite: &'static str,
    /// SQL for PostgreSQL.
    pub postgres: &'static str,
}

impl Migration {
    /// A migration whose SQL is the same on both backends.
    pub const fn portable(version: i64, description: &'static str, sql: &'static str) -> Self {
        Self {
            version,
            description,
            sqlite: sql,
            postgres: sql,
        }
    }
}
