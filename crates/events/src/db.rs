//! The database handle domains write through, on either backend.
//!
//! Domains use sqlx's `Any` driver with portable SQL (`$1` placeholders, `TEXT` ids,
//! `BIGINT` unix-millisecond timestamps), so one module's code runs unchanged on SQLite and
//! PostgreSQL, and its rows and its events commit in one transaction. Backend-specific SQL
//! lives only in the runtime crate.

use sqlx::{Any, AnyPool, Transaction};

/// A connection or transaction on either backend; what ports take to join the caller's
/// transaction.
pub type DbConn = sqlx::AnyConnection;

/// Which database engine is behind a [`Db`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: one process, one file.
    Sqlite,
    /// Shared by several `keel` processes.
    Postgres,
}

/// A pool on either backend that knows how to begin a write transaction safely there.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Wraps a pool the runtime has connected and configured.
    pub fn new(pool: AnyPool, backend: Backend) -> Self {
        Self { pool, backend }
    }

    /// The pool, for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a transaction that will write.
    ///
    /// On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`), so a transaction never
    /// fails half-way with `database is locked`; it waits its turn (busy timeout) instead.
    ///
    /// # Errors
    /// Fails when no connection can be had (the database is down or the pool is exhausted
    /// past its acquire timeout).
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }
}
