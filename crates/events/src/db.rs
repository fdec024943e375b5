//! The database handle domains write through, on either backend.
//!
//! Domains use sqlx's `Any` driver with portable SQL (`$1` placeholders, `TEXT` ids,
//! `BIGINT` unix-millisecond timestamps), so one module's code runs unchanged on SQLite and
//! PostgreSQL, and its rows and its events commit in one transaction. Backend-specific SQL
//! lives only in the runtime crate — save the database's reading of now ([`Db::now`]), which
//! a module decides expiry on.

use chrono::{DateTime, Utc};
use sqlx::{Any, AnyPool, Transaction};

use crate::clock::Clock;

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

    /// The database's reading of now (or a test's stand-in, [`Clock::database_now`]): what a
    /// module decides expiry on ("failing for five days", "open for thirty days"), so that
    /// replicas whose wall clocks disagree still agree.
    ///
    /// # Errors
    /// Fails when the database cannot answer.
    pub async fn now(&self, clock: &dyn Clock) -> Result<DateTime<Utc>, sqlx::Error> {
        if let Some(now) = clock.database_now() {
            return Ok(now);
        }
        let sql = format!("SELECT {}", now_ms_sql(self.backend));
        let ms: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await?;
        DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| sqlx::Error::Decode(format!("database clock {ms} out of range").into()))
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

/// The SQL expression for the database's clock in unix milliseconds on `backend` (the
/// runtime's `NOW_MS` stands for it too).
pub fn now_ms_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "(EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT",
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}
