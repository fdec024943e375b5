//! The runtime's error type.

/// What can go wrong in the runtime itself (not in a job: job failures are recorded, not
/// returned).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The database refused or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database URL is neither `sqlite:` nor `postgres://`.
    #[error("unsupported database URL `{0}`: use `sqlite:PATH` or `postgres://…`")]
    UnsupportedUrl(String),
    /// Creating the SQLite file's folder failed.
    #[error("cannot create `{path}`: {source}")]
    CreateDir {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Two modules registered the same job type, listener name or migration version, or a
    /// handler runs on a queue that has no policy.
    #[error("invalid wiring: {0}")]
    Wiring(String),
    /// A stored row could not be read back.
    #[error("corrupt row in {table}: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The id names no job in the state the operation needs.
    #[error("{0}")]
    NotFound(String),
}
