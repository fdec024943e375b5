//! Applies the runtime's and the modules' migrations, in version order, under a lock.
//!
//! sqlx's migrator does the work (checksums, PostgreSQL advisory locking so several
//! replicas can start at once), but in Keel's own `keel_migrations` table: an application's
//! `_sqlx_migrations` is never touched.

use std::borrow::Cow;
use std::collections::BTreeMap;

use events::{Backend, Db, Migration};
use sqlx::AssertSqlSafe;
use sqlx::migrate::{Migration as SqlxMigration, MigrationType, Migrator};

use crate::error::RuntimeError;
use crate::schema;

/// The table that records applied migrations.
pub const TABLE: &str = "keel_migrations";

/// Applies every pending migration of the runtime and of `modules`.
///
/// # Errors
/// Fails when two migrations share a version, when an applied migration was edited
/// (checksum mismatch), or when the database refuses one.
pub async fn run(db: &Db, modules: &[&[Migration]]) -> Result<usize, RuntimeError> {
    let mut all: BTreeMap<i64, Migration> = BTreeMap::new();
    for migration in schema::MIGRATIONS
        .iter()
        .chain(modules.iter().flat_map(|m| m.iter()))
    {
        if let Some(previous) = all.insert(migration.version, *migration) {
            return Err(RuntimeError::Wiring(format!(
                "migration version {} is used twice: `{}` and `{}`",
                migration.version, previous.description, migration.description
            )));
        }
    }
    let migrations: Vec<SqlxMigration> = all
        .values()
        .map(|m| {
            let sql = match db.backend() {
                Backend::Sqlite => m.sqlite,
                Backend::Postgres => m.postgres,
            };
            SqlxMigration::new(
                m.version,
                Cow::Borrowed(m.description),
                MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(sql)),
                false,
            )
        })
        .collect();
    let count = migrations.len();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(TABLE);
    // A deployment running a subset of the modules (`--modules`) may share a database whose
    // other modules' migrations another deployment applied: those are not missing, only not
    // ours to run. (Checksums of the migrations we do know are still checked.)
    migrator.set_ignore_missing(true);
    migrator.run(db.pool()).await?;
    Ok(count)
}

/// The versions of the runtime's and `modules`' migrations not yet applied (all of them when
/// the database was never migrated) — so read-only tools can refuse to touch a schema they
/// do not match instead of migrating it behind the operator's back.
///
/// # Errors
/// Fails when the database cannot answer.
pub async fn pending(db: &Db, modules: &[&[Migration]]) -> Result<Vec<i64>, RuntimeError> {
    let known: Vec<i64> = schema::MIGRATIONS
        .iter()
        .chain(modules.iter().flat_map(|m| m.iter()))
        .map(|m| m.version)
        .collect();
    let applied: Vec<i64> = match sqlx::query_scalar::<_, i64>(
        "SELECT version FROM keel_migrations WHERE success = TRUE",
    )
    .fetch_all(db.pool())
    .await
    {
        Ok(v) => v,
        // No table yet: nothing was ever applied.
        Err(sqlx::Error::Database(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut pending: Vec<i64> = known.into_iter().filter(|v| !applied.contains(v)).collect();
    pending.sort_unstable();
    Ok(pending)
}
