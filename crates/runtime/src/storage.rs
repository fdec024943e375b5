//! Connecting to SQLite or PostgreSQL through sqlx's `Any` driver.
//!
//! SQLite is the embedded default: one `keel` process, one file, WAL mode, a busy timeout
//! and `BEGIN IMMEDIATE` writers (see [`events::Db::begin`]), so a caller waits its turn
//! instead of seeing `database is locked`. PostgreSQL is for several replicas sharing one
//! database.

use std::path::Path;
use std::time::Duration;

use events::{Backend, Db};
use sqlx::Executor;
use sqlx::any::AnyPoolOptions;

use crate::error::RuntimeError;

/// How long a request waits for a pooled connection before answering 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a SQLite statement waits for the write lock before failing with `database is
/// locked`.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Which backend a URL selects.
///
/// # Errors
/// [`RuntimeError::UnsupportedUrl`] for anything but `sqlite:` and `postgres(ql)://`.
pub fn backend_of(url: &str) -> Result<Backend, RuntimeError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(RuntimeError::UnsupportedUrl(url.to_owned()))
    }
}

/// Connects a pool to `url`, creating a SQLite file (and its folder) when missing.
///
/// # Errors
/// Fails on an unsupported URL, an unwritable folder, or a database that does not answer.
pub async fn connect(url: &str, max_connections: u32) -> Result<Db, RuntimeError> {
    connect_with(url, max_connections, None).await
}

/// Connects a pool whose statements give up after `statement_timeout`: PostgreSQL cancels
/// one that runs longer (`statement_timeout`, waiting for locks included), and SQLite waits
/// no longer than that for the write lock (`busy_timeout`).
///
/// For callers that stop waiting for a statement after that long (the maintenance leader's
/// steps): without it, a statement abandoned by its caller keeps its connection busy —
/// blocked on a lock, say — and the caller's next statement waits behind it for a
/// connection of the same pool, so one stuck step would stall every later one.
///
/// # Errors
/// As [`connect`].
pub async fn connect_bounded(
    url: &str,
    max_connections: u32,
    statement_timeout: Duration,
) -> Result<Db, RuntimeError> {
    connect_with(url, max_connections, Some(statement_timeout)).await
}

async fn connect_with(
    url: &str,
    max_connections: u32,
    statement_timeout: Option<Duration>,
) -> Result<Db, RuntimeError> {
    sqlx::any::install_default_drivers();
    let backend = backend_of(url)?;
    let timeout_ms = statement_timeout.map(|t| t.as_millis().max(1));
    let (url, options) = match backend {
        Backend::Sqlite => {
            create_sqlite_folder(url)?;
            let url = with_create_mode(url);
            let busy_ms = timeout_ms.unwrap_or(SQLITE_BUSY_TIMEOUT.as_millis());
            let options = AnyPoolOptions::new()
                .max_connections(max_connections.max(1))
                .min_connections(1)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        let pragmas = format!(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = {busy_ms}; PRAGMA foreign_keys = ON;"
                        );
                        conn.execute(sqlx::AssertSqlSafe(pragmas)).await?;
                        Ok(())
                    })
                });
            (url, options)
        }
        Backend::Postgres => {
            let options = AnyPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(ACQUIRE_TIMEOUT)
                // Every check-out pings (a round trip): a connection killed a moment ago
                // (`pg_terminate_backend`, a failover) is replaced here instead of failing a
                // request or a job's attempt. Checking only connections idle for 500 ms was
                // measured and dropped (BENCHMARKS.md, 2026-12-07): no gain beyond the noise,
                // and jobs started right after a mass kill lost an attempt.
                .test_before_acquire(true)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if let Some(ms) = timeout_ms {
                            let set = format!("SET statement_timeout = {ms}");
                            conn.execute(sqlx::AssertSqlSafe(set)).await?;
                        }
                        Ok(())
                    })
                });
            (url.to_owned(), options)
        }
    };
    let pool = options.connect(&url).await?;
    Ok(Db::new(pool, backend))
}

fn create_sqlite_folder(url: &str) -> Result<(), RuntimeError> {
    let path = sqlite_path(url);
    if path.is_empty() || path.starts_with(":memory:") {
        return Ok(());
    }
    if let Some(parent) = Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|source| RuntimeError::CreateDir {
            path: parent.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// The file path of a `sqlite:` URL, without its query string.
pub fn sqlite_path(url: &str) -> &str {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    rest.split('?').next().unwrap_or(rest)
}

fn with_create_mode(url: &str) -> String {
    if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_select_backends() {
        assert!(matches!(
            backend_of("sqlite:./var/keel.db"),
            Ok(Backend::Sqlite)
        ));
        assert!(matches!(
            backend_of("postgres://u@h/db"),
            Ok(Backend::Postgres)
        ));
        assert!(backend_of("mysql://h/db").is_err());
    }

    #[test]
    fn sqlite_paths_drop_scheme_and_query() {
        assert_eq!(
            sqlite_path("sqlite:./var/keel.db?mode=rwc"),
            "./var/keel.db"
        );
        assert_eq!(sqlite_path("sqlite:///tmp/x.db"), "/tmp/x.db");
        assert_eq!(with_create_mode("sqlite:a.db"), "sqlite:a.db?mode=rwc");
    }
}
