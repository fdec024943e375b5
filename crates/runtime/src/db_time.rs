//! "Now", as the database's clock reads it.
//!
//! Replicas' wall clocks disagree; the database's clock is the one they share. So every
//! comparison that decides who owns a job or when something is due — heartbeats, the
//! maintenance lease, reservations, rescue, `run_at`, retention — is computed *inside the
//! statement* from the database's clock (`statement_timestamp()` on PostgreSQL; on SQLite,
//! which serves one process, that process's clock). A replica whose wall clock is minutes off
//! therefore behaves exactly like one that is not.
//!
//! Tests stand in for the database's clock through [`events::Clock::database_now`]: each
//! statement binds it as `$1` and reads `COALESCE($1, <database clock>)`, so production
//! (`NULL`) and tests run the same SQL.

use std::sync::Arc;

use events::{Backend, Clock, Db};

/// The token runtime SQL writes where it means "now, in unix milliseconds, on the
/// database's clock"; [`DbTime::sql`] replaces it.
pub const NOW: &str = "NOW_MS";

/// Turns runtime SQL into statements that read the database's clock.
#[derive(Debug, Clone)]
pub struct DbTime {
    backend: Backend,
    clock: Arc<dyn Clock>,
}

impl DbTime {
    /// Time on `backend`'s clock, or on the test's stand-in that `clock` provides.
    pub fn new(backend: Backend, clock: Arc<dyn Clock>) -> Self {
        Self { backend, clock }
    }

    /// `sql` with every [`NOW`] replaced by the database's reading of now; bind
    /// [`DbTime::fixed`] as `$1`.
    pub fn sql(&self, sql: &str) -> String {
        let clock = events::db::now_ms_sql(self.backend);
        sql.replace(NOW, &format!("COALESCE($1, {clock})"))
    }

    /// The value for `$1`: the test's stand-in, or `NULL` to ask the database.
    pub fn fixed(&self) -> Option<i64> {
        self.clock.database_now().map(|t| t.timestamp_millis())
    }

    /// Asks the database for its clock's reading now (unix ms).
    ///
    /// # Errors
    /// Fails when the database does.
    pub async fn read(&self, db: &Db) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(self.sql("SELECT NOW_MS")))
            .bind(self.fixed())
            .fetch_one(db.pool())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_becomes_the_bound_stand_in_or_the_database_clock() {
        let t = DbTime::new(Backend::Postgres, Arc::new(events::SystemClock));
        let sql = t.sql("SELECT NOW_MS, NOW_MS - $2");
        assert_eq!(sql.matches("COALESCE($1, ").count(), 2, "{sql}");
        assert!(sql.contains("statement_timestamp()"), "{sql}");
        assert_eq!(t.fixed(), None);
    }
}
