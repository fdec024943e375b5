//! A fresh database per test, on SQLite or PostgreSQL, and the macros that run one test body
//! on both.
//!
//! SQLite is always available: each [`TestDb`] is a file in its own temporary folder.
//! PostgreSQL is the server `KEEL_TEST_POSTGRES_URL` names or, when it is unset, the local
//! default [`LOCAL_POSTGRES_URL`] (`KEEL_TEST_POSTGRES_DEFAULT_URL` replaces it): each
//! [`TestDb`] is a new database `keel_t_<uuid>` created through that URL and dropped (with
//! its connections) when the `TestDb` goes.
//!
//! A PostgreSQL test never passes without PostgreSQL: when no server answers, it fails.
//! Leaving the variants out is `cargo xtask test`'s job (the README's command): it probes the
//! same URLs, skips every test whose path contains `::postgres` when none answers (never
//! under CI), and says so in its last line — so name no other test or module `postgres…`.

use std::time::Duration;

use events::{Backend, Db};
use sqlx::{Connection, Executor, PgConnection};
use tempfile::TempDir;

/// The variable that names the PostgreSQL server tests may create databases on.
pub const POSTGRES_URL_VAR: &str = "KEEL_TEST_POSTGRES_URL";

/// The variable that replaces [`LOCAL_POSTGRES_URL`] when [`POSTGRES_URL_VAR`] is unset.
pub const POSTGRES_DEFAULT_VAR: &str = "KEEL_TEST_POSTGRES_DEFAULT_URL";

/// The server used when [`POSTGRES_URL_VAR`] is unset (`xtask/src/suite/plan.rs` has the
/// same): the local server, through its always-present `postgres` database.
pub const LOCAL_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// One test's own database.
#[derive(Debug)]
pub struct TestDb {
    url: String,
    backend: Backend,
    _dir: Option<TempDir>,
    _postgres: Option<Dropper>,
}

impl TestDb {
    /// A new SQLite database in a temporary folder (`sqlite:/tmp/…/keel.db`).
    pub fn sqlite() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keel-test-")
            .tempdir()
            .expect("a temporary folder for the SQLite test database");
        let url = format!("sqlite:{}", dir.path().join("keel.db").display());
        Self {
            url,
            backend: Backend::Sqlite,
            _dir: Some(dir),
            _postgres: None,
        }
    }

    /// A new PostgreSQL database on the server `KEEL_TEST_POSTGRES_URL` names, or on the
    /// local default when it is unset.
    ///
    /// # Panics
    /// When the server cannot be reached or refuses to create the database.
    pub async fn postgres() -> Self {
        let (admin_url, source) = match std::env::var(POSTGRES_URL_VAR) {
            Ok(url) if !url.is_empty() => (url, format!("{POSTGRES_URL_VAR} names it")),
            _ => match std::env::var(POSTGRES_DEFAULT_VAR) {
                Ok(url) if !url.is_empty() => (
                    url,
                    format!("{POSTGRES_URL_VAR} is unset; {POSTGRES_DEFAULT_VAR} names it"),
                ),
                _ => (
                    LOCAL_POSTGRES_URL.to_owned(),
                    format!("{POSTGRES_URL_VAR} is unset, so the local default is tried"),
                ),
            },
        };
        let unavailable = |why: String| -> ! {
            panic!(
                "the PostgreSQL variant cannot run: {admin_url} ({source}): {why}. Start \
                 PostgreSQL there or set {POSTGRES_URL_VAR}; or run `cargo xtask test`, which \
                 skips the PostgreSQL variants when no server answers and says so"
            )
        };
        let name = format!("keel_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin =
            tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(&admin_url))
                .await
                .unwrap_or_else(|_| unavailable("no answer within 10 s".to_owned()))
                .unwrap_or_else(|e| unavailable(format!("cannot connect: {e}")));
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = admin.close().await;
        Self {
            url: with_database(&admin_url, &name),
            backend: Backend::Postgres,
            _dir: None,
            _postgres: Some(Dropper { admin_url, name }),
        }
    }

    /// The database URL, as `keel` would be given it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A new pool on this database, through the runtime's own `connect`.
    pub async fn connect(&self) -> Db {
        runtime::connect(&self.url, 4)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url))
    }
}

/// Drops a PostgreSQL test database, connections and all.
#[derive(Debug)]
struct Dropper {
    admin_url: String,
    name: String,
}

impl Drop for Dropper {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop is synchronous and may run inside the test's runtime: clean up on a thread of
        // its own. Best effort — a leftover database is harmless, a hung test is not.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let work = async {
                    let mut admin = PgConnection::connect(&admin_url).await?;
                    admin.execute(sqlx::AssertSqlSafe(sql)).await?;
                    admin.close().await
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), work).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// `url` with its database name replaced by `name` (query string kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Runs an `async fn name(db: TestDb)` as two tests, `name::sqlite` and `name::postgres`.
///
/// The PostgreSQL variant fails when no server answers; `cargo xtask test` leaves it out
/// instead (by its `::postgres` suffix), and says so.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::TestDb::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::TestDb::postgres().await).await;
            }
        }
    )+};
}

/// Runs an `async fn name(db: TestDb)` as one test, `name::postgres`, for behaviour only
/// PostgreSQL has (several processes on one database, `LISTEN`/`NOTIFY`).
#[macro_export]
macro_rules! postgres_only {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::TestDb::postgres().await).await;
            }
        }
    )+};
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_replaced_and_queries_kept() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
