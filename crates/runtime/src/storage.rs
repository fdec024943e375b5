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
    sqlx::any::install_default_drivers();
    let backend = backend_of(url)?;
    let (url, options) = match backend {
        Backend::Sqlite => {
            create_sqlite_folder(url)?;
            let url = with_create_mode(url);
            let options = AnyPoolOptions::new()
                .max_connections(max_connections.max(1))
                .min_connections(1)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                        Ok(())
                    })
                });
            (url, options)
        }
        Backend::Postgres => {
            let options = AnyPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .test_before_acquire(true);
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
