//! Throw-away databases: every round runs on a fresh schema.
//!
//! SQLite gets a new file in a temporary folder (deleted with it); PostgreSQL gets a new
//! database `keel_bench_<uuid>` created through the server of the URL given, and dropped
//! (`WITH (FORCE)`) when the round ends.

use anyhow::{Context, bail};
use events::Backend;
use sqlx::Connection;

/// A database that exists for one round.
#[derive(Debug)]
pub struct Fresh {
    /// Where Keel connects.
    pub url: String,
    /// Which engine.
    pub backend: Backend,
    /// PostgreSQL: the server URL it was created through, and its name.
    postgres: Option<(String, String)>,
    /// SQLite: the folder holding the file (removed on drop).
    _dir: Option<tempfile::TempDir>,
}

impl Fresh {
    /// Creates a fresh database next to `base_url`.
    ///
    /// # Errors
    /// Fails on an unsupported URL, or when the server refuses `CREATE DATABASE`.
    pub async fn create(base_url: &str) -> anyhow::Result<Self> {
        match runtime::storage::backend_of(base_url)? {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("keel-bench-")
                    .tempdir()
                    .context("creating a temporary folder")?;
                Ok(Self {
                    url: format!("sqlite:{}/bench.db", dir.path().display()),
                    backend: Backend::Sqlite,
                    postgres: None,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let name = format!("keel_bench_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(base_url)
                    .await
                    .with_context(|| format!("connecting to {base_url}"))?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .with_context(|| format!("creating database {name}"))?;
                conn.close().await?;
                Ok(Self {
                    url: with_database(base_url, &name)?,
                    backend: Backend::Postgres,
                    postgres: Some((base_url.to_owned(), name)),
                    _dir: None,
                })
            }
        }
    }

    /// Drops the database (PostgreSQL) or its folder (SQLite). Close every pool first.
    ///
    /// # Errors
    /// Fails when the server refuses `DROP DATABASE`.
    pub async fn remove(self) -> anyhow::Result<()> {
        if let Some((base_url, name)) = &self.postgres {
            let mut conn = sqlx::PgConnection::connect(base_url).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .with_context(|| format!("dropping database {name}"))?;
            conn.close().await?;
        }
        Ok(())
    }
}

/// `url` with its database name replaced by `name` (query string kept).
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let Some(scheme_end) = url.find("://") else {
        bail!("not a PostgreSQL URL: {url}");
    };
    let after = scheme_end + 3;
    let (base, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let authority_end = base[after..].find('/').map_or(base.len(), |i| after + i);
    Ok(format!("{}/{name}{query}", &base[..authority_end]))
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_is_replaced() {
        let cases = [
            ("postgres://u@h:5432/test", "postgres://u@h:5432/x"),
            ("postgres://u@h", "postgres://u@h/x"),
            (
                "postgresql://u:p@h/db?sslmode=disable",
                "postgresql://u:p@h/x?sslmode=disable",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(with_database(input, "x").ok().as_deref(), Some(expected));
        }
    }
}
