//! Stored answers to `Idempotency-Key` requests: a repeat with the same key and body gets
//! the first response and does nothing twice; the same key with another body is refused.

use events::Db;

use crate::db_time::DbTime;
use sqlx::Row;

/// What the store knows about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use: go ahead, then [`finish`] (or [`release`] on failure).
    Fresh,
    /// Used before with this body, and answered: replay this.
    Replay {
        /// The stored status.
        status: u16,
        /// The stored content type.
        content_type: Option<String>,
        /// The stored body.
        body: String,
    },
    /// Used before with this body, still being handled.
    InProgress,
    /// Used before with another body.
    Mismatch,
}

/// Claims `key` for a request to `method path` whose body hashes to `body_hash`.
///
/// # Errors
/// Fails when the database does.
pub async fn claim(
    db: &Db,
    time: &DbTime,
    key: &str,
    method: &str,
    path: &str,
    body_hash: &str,
) -> Result<Claim, sqlx::Error> {
    let sql = time.sql(
        "INSERT INTO keel_idempotency (key, method, path, body_hash, created_at) \
         VALUES ($2, $3, $4, $5, NOW_MS) ON CONFLICT (key, method, path) DO NOTHING",
    );
    let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(time.fixed())
        .bind(key)
        .bind(method)
        .bind(path)
        .bind(body_hash)
        .execute(db.pool())
        .await?
        .rows_affected();
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }
    let row = sqlx::query(
        "SELECT body_hash, status, content_type, response, created_at FROM keel_idempotency \
         WHERE key = $1 AND method = $2 AND path = $3",
    )
    .bind(key)
    .bind(method)
    .bind(path)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else {
        // Released between our insert and our read: treat as fresh on the next try.
        return Ok(Claim::InProgress);
    };
    let stored_hash: String = row.try_get("body_hash")?;
    if stored_hash != body_hash {
        return Ok(Claim::Mismatch);
    }
    let status: Option<i32> = row.try_get("status")?;
    match status {
        Some(status) => Ok(Claim::Replay {
            status: u16::try_from(status).unwrap_or(500),
            content_type: row.try_get("content_type")?,
            body: row
                .try_get::<Option<String>, _>("response")?
                .unwrap_or_default(),
        }),
        None => {
            // A claim nobody finished (the client hung up, the process died): after a while
            // — on the database's clock, which every replica shares — the key is free
            // again, or a retry would get 409 forever.
            let created_at: i64 = row.try_get("created_at")?;
            let sql = time.sql(
                "UPDATE keel_idempotency SET created_at = NOW_MS WHERE key = $2 AND method = $3 \
                 AND path = $4 AND status IS NULL AND created_at = $5 AND created_at < NOW_MS - $6",
            );
            let taken = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(time.fixed())
                .bind(key)
                .bind(method)
                .bind(path)
                .bind(created_at)
                .bind(ABANDONED_AFTER_MS)
                .execute(db.pool())
                .await?
                .rows_affected();
            Ok(if taken == 1 {
                Claim::Fresh
            } else {
                Claim::InProgress
            })
        }
    }
}

/// An unanswered claim older than this is taken to be abandoned.
const ABANDONED_AFTER_MS: i64 = 60_000;

/// Stores the answer to a claimed key.
///
/// # Errors
/// Fails when the database does.
#[allow(clippy::too_many_arguments)]
pub async fn finish(
    db: &Db,
    key: &str,
    method: &str,
    path: &str,
    status: u16,
    content_type: Option<&str>,
    body: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE keel_idempotency SET status = $1, content_type = $2, response = $3 \
         WHERE key = $4 AND method = $5 AND path = $6",
    )
    .bind(i32::from(status))
    .bind(content_type)
    .bind(body)
    .bind(key)
    .bind(method)
    .bind(path)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Forgets a claimed key whose request failed on our side, so the client may retry it.
///
/// # Errors
/// Fails when the database does.
pub async fn release(db: &Db, key: &str, method: &str, path: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM keel_idempotency WHERE key = $1 AND method = $2 AND path = $3")
        .bind(key)
        .bind(method)
        .bind(path)
        .execute(db.pool())
        .await?;
    Ok(())
}
