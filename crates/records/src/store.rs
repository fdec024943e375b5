//! The records module's SQL: portable statements over its own `records_` tables only.
//!
//! Writes take a [`DbConn`] so they join the caller's transaction (and its outbox publish);
//! reads take the pool. Ids are stored as UUID text, times as unix milliseconds.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, AssertSqlSafe, Row};
use uuid::Uuid;

use events::DbConn;

use crate::model::{
    Attributes, FailedRow, Import, ImportLine, ImportStatus, LineContent, OwnerEmail, Record, Title,
};

/// Rows per multi-row `INSERT` of import lines (4 parameters each: far below every
/// backend's parameter limit).
pub const LINES_PER_INSERT: usize = 1000;

const RECORD_COLUMNS: &str = "id, title, owner_email, attributes, created_at";
const IMPORT_COLUMNS: &str = "id, status, total, processed, failed, checkpoint";

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn corrupt(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("records: stored {what} does not decode").into())
}

fn uuid_column(row: &AnyRow, column: &str) -> Result<Uuid, sqlx::Error> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|_| corrupt(column))
}

fn record_from_row(row: &AnyRow) -> Result<Record, sqlx::Error> {
    let attributes: String = row.try_get("attributes")?;
    let created_at: i64 = row.try_get("created_at")?;
    Ok(Record {
        id: uuid_column(row, "id")?,
        title: Title::from_stored(row.try_get("title")?),
        owner_email: OwnerEmail::from_stored(row.try_get("owner_email")?),
        attributes: Attributes::from_stored(&attributes).map_err(|_| corrupt("attributes"))?,
        created_at: DateTime::from_timestamp_millis(created_at)
            .ok_or_else(|| corrupt("created_at"))?,
    })
}

fn import_from_row(row: &AnyRow) -> Result<Import, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(Import {
        id: uuid_column(row, "id")?,
        status: ImportStatus::from_stored(&status).ok_or_else(|| corrupt("import status"))?,
        total: row.try_get("total")?,
        processed: row.try_get("processed")?,
        failed: row.try_get("failed")?,
        checkpoint: row.try_get("checkpoint")?,
    })
}

/// Inserts one record.
pub async fn insert_record(conn: &mut DbConn, record: &Record) -> Result<(), sqlx::Error> {
    insert_records(conn, std::slice::from_ref(record)).await
}

/// Records per multi-row `INSERT` of [`insert_records`] (SQLite binds by name: bigger
/// statements cost more to prepare than they save).
const RECORDS_PER_INSERT: usize = 50;

/// Inserts records in multi-row `INSERT`s — an import batch's in a few statements.
pub async fn insert_records(conn: &mut DbConn, records: &[Record]) -> Result<(), sqlx::Error> {
    for chunk in records.chunks(RECORDS_PER_INSERT) {
        let values = (0..chunk.len())
            .map(|i| {
                let p = i * 5;
                format!(
                    "(${}, ${}, ${}, ${}, ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("INSERT INTO records_records ({RECORD_COLUMNS}) VALUES {values}");
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for record in chunk {
            query = query
                .bind(record.id.to_string())
                .bind(record.title.as_str().to_owned())
                .bind(record.owner_email.as_str().to_owned())
                .bind(record.attributes.to_json_text())
                .bind(millis(record.created_at));
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The record with this id, if any.
pub async fn find_record(pool: &AnyPool, id: Uuid) -> Result<Option<Record>, sqlx::Error> {
    let sql = format!("SELECT {RECORD_COLUMNS} FROM records_records WHERE id = $1");
    sqlx::query(AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(record_from_row)
        .transpose()
}

/// Up to `limit` records in id (creation) order, after `after` when given.
pub async fn list_records(
    pool: &AnyPool,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Record>, sqlx::Error> {
    let rows = match after {
        Some(after) => {
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM records_records WHERE id > $1 ORDER BY id LIMIT $2"
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(after.to_string())
                .bind(limit)
                .fetch_all(pool)
                .await?
        }
        None => {
            let sql = format!("SELECT {RECORD_COLUMNS} FROM records_records ORDER BY id LIMIT $1");
            sqlx::query(AssertSqlSafe(sql))
                .bind(limit)
                .fetch_all(pool)
                .await?
        }
    };
    rows.iter().map(record_from_row).collect()
}

/// Creates an import row in status `queued`.
pub async fn insert_import(
    conn: &mut DbConn,
    id: Uuid,
    total: i64,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO records_imports \
         (id, status, total, processed, failed, checkpoint, created_at, updated_at) \
         VALUES ($1, $2, $3, 0, 0, 0, $4, $4)",
    )
    .bind(id.to_string())
    .bind(ImportStatus::Queued.as_str())
    .bind(total)
    .bind(millis(now))
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores uploaded lines in one multi-row `INSERT` (callers chunk by [`LINES_PER_INSERT`]).
pub async fn insert_lines(
    conn: &mut DbConn,
    import_id: Uuid,
    lines: &[ImportLine],
) -> Result<(), sqlx::Error> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut sql =
        String::from("INSERT INTO records_import_lines (import_id, line_no, body, error) VALUES ");
    for i in 0..lines.len() {
        let p = i * 4;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("(${}, ${}, ${}, ${})", p + 1, p + 2, p + 3, p + 4));
    }
    let id = import_id.to_string();
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for line in lines {
        let (body, error) = match &line.content {
            LineContent::Text(text) => (Some(text.as_str()), None),
            LineContent::Rejected(reason) => (None, Some(reason.as_str())),
        };
        query = query
            .bind(id.as_str())
            .bind(line.line_no)
            .bind(body)
            .bind(error);
    }
    query.execute(conn).await?;
    Ok(())
}

/// The import with this id, if any (read on the pool).
pub async fn find_import(pool: &AnyPool, id: Uuid) -> Result<Option<Import>, sqlx::Error> {
    let sql = format!("SELECT {IMPORT_COLUMNS} FROM records_imports WHERE id = $1");
    sqlx::query(AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(import_from_row)
        .transpose()
}

/// The import with this id, read inside the caller's transaction.
pub async fn find_import_in(conn: &mut DbConn, id: Uuid) -> Result<Option<Import>, sqlx::Error> {
    let sql = format!("SELECT {IMPORT_COLUMNS} FROM records_imports WHERE id = $1");
    sqlx::query(AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(import_from_row)
        .transpose()
}

/// The first `limit` failed rows of an import, by line.
pub async fn failed_rows(
    pool: &AnyPool,
    import_id: Uuid,
    limit: i64,
) -> Result<Vec<FailedRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT line, error FROM records_import_failures WHERE import_id = $1 \
         ORDER BY line LIMIT $2",
    )
    .bind(import_id.to_string())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(FailedRow {
                line: row.try_get("line")?,
                error: row.try_get("error")?,
            })
        })
        .collect()
}

/// The next `limit` stored lines after line `after`, in line order.
pub async fn next_lines(
    conn: &mut DbConn,
    import_id: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<ImportLine>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT line_no, body, error FROM records_import_lines \
         WHERE import_id = $1 AND line_no > $2 ORDER BY line_no LIMIT $3",
    )
    .bind(import_id.to_string())
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let body: Option<String> = row.try_get("body")?;
            let error: Option<String> = row.try_get("error")?;
            let content = match (body, error) {
                (Some(text), None) => LineContent::Text(text),
                (_, Some(reason)) => LineContent::Rejected(reason),
                (None, None) => return Err(corrupt("import line")),
            };
            Ok(ImportLine {
                line_no: row.try_get("line_no")?,
                content,
            })
        })
        .collect()
}

/// Records one batch's progress, but only if the checkpoint is still `from`: the claim that
/// keeps two runs of the same import from both handling a batch. Returns whether it held.
pub async fn advance(
    conn: &mut DbConn,
    import_id: Uuid,
    from: i64,
    to: i64,
    processed: i64,
    failed: i64,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE records_imports SET checkpoint = $3, processed = processed + $4, \
         failed = failed + $5, updated_at = $6 WHERE id = $1 AND checkpoint = $2",
    )
    .bind(import_id.to_string())
    .bind(from)
    .bind(to)
    .bind(processed)
    .bind(failed)
    .bind(millis(now))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stores failed lines.
pub async fn insert_failures(
    conn: &mut DbConn,
    import_id: Uuid,
    failures: &[FailedRow],
) -> Result<(), sqlx::Error> {
    let id = import_id.to_string();
    for failure in failures {
        sqlx::query(
            "INSERT INTO records_import_failures (import_id, line, error) VALUES ($1, $2, $3) \
             ON CONFLICT (import_id, line) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(failure.line)
        .bind(failure.error.as_str())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Moves an import to `to` when it is in one of `from`. Returns whether it moved.
pub async fn transition(
    conn: &mut DbConn,
    import_id: Uuid,
    from: &[ImportStatus],
    to: ImportStatus,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let placeholders: Vec<String> = (0..from.len()).map(|i| format!("${}", i + 4)).collect();
    let sql = format!(
        "UPDATE records_imports SET status = $2, updated_at = $3 WHERE id = $1 AND status IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(AssertSqlSafe(sql))
        .bind(import_id.to_string())
        .bind(to.as_str())
        .bind(millis(now));
    for status in from {
        query = query.bind(status.as_str());
    }
    Ok(query.execute(conn).await?.rows_affected() == 1)
}

/// Drops an import's raw lines once they are all handled.
pub async fn delete_lines(conn: &mut DbConn, import_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM records_import_lines WHERE import_id = $1")
        .bind(import_id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::model::NewRecord;
    use events::Db;

    /// A fresh in-memory SQLite database with the module's schema.
    pub(crate) async fn test_db() -> Db {
        events::testing::memory_db(&crate::migrations::all()).await
    }

    fn record(title: &str, at_ms: i64) -> Record {
        let new = NewRecord::parse_line(&format!(
            r#"{{"title":"{title}","owner_email":"o@example.com","attributes":{{"n":1}}}}"#
        ))
        .unwrap();
        Record {
            id: Uuid::now_v7(),
            title: new.title,
            owner_email: new.owner_email,
            attributes: new.attributes,
            created_at: DateTime::from_timestamp_millis(at_ms).unwrap(),
        }
    }

    #[tokio::test]
    async fn a_record_round_trips() {
        let db = test_db().await;
        let r = record("One", 1_700_000_000_123);
        let mut tx = db.begin().await.unwrap();
        insert_record(&mut tx, &r).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(find_record(db.pool(), r.id).await.unwrap(), Some(r));
        assert_eq!(find_record(db.pool(), Uuid::now_v7()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn records_page_in_id_order() {
        let db = test_db().await;
        let mut tx = db.begin().await.unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            let r = record(&format!("R{i}"), 1_000 + i);
            ids.push(r.id);
            insert_record(&mut tx, &r).await.unwrap();
        }
        tx.commit().await.unwrap();
        let first: Vec<Uuid> = list_records(db.pool(), None, 2)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(first, ids[..2]);
        let rest: Vec<Uuid> = list_records(db.pool(), Some(ids[1]), 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(rest, ids[2..]);
    }

    #[tokio::test]
    async fn lines_are_stored_and_read_back_after_a_checkpoint() {
        let db = test_db().await;
        let id = Uuid::now_v7();
        let now = DateTime::from_timestamp_millis(5).unwrap();
        let lines: Vec<ImportLine> = (1..=2500)
            .map(|n| ImportLine {
                line_no: n,
                content: if n % 2 == 0 {
                    LineContent::Text(format!("line {n}"))
                } else {
                    LineContent::Rejected("too long".to_owned())
                },
            })
            .collect();
        let mut tx = db.begin().await.unwrap();
        insert_import(&mut tx, id, 2500, now).await.unwrap();
        for chunk in lines.chunks(LINES_PER_INSERT) {
            insert_lines(&mut tx, id, chunk).await.unwrap();
        }
        let next = next_lines(&mut tx, id, 1200, 3).await.unwrap();
        assert_eq!(next, lines[1200..1203]);
        assert!(advance(&mut tx, id, 0, 3, 3, 1, now).await.unwrap());
        assert!(!advance(&mut tx, id, 0, 6, 3, 1, now).await.unwrap());
        tx.commit().await.unwrap();
        let import = find_import(db.pool(), id).await.unwrap().unwrap();
        assert_eq!(
            (
                import.status,
                import.total,
                import.processed,
                import.failed,
                import.checkpoint
            ),
            (ImportStatus::Queued, 2500, 3, 1, 3)
        );
    }

    #[tokio::test]
    async fn transitions_only_apply_from_the_named_states() {
        let db = test_db().await;
        let id = Uuid::now_v7();
        let now = DateTime::from_timestamp_millis(5).unwrap();
        let mut tx = db.begin().await.unwrap();
        insert_import(&mut tx, id, 1, now).await.unwrap();
        let ran = [ImportStatus::Queued, ImportStatus::Failed];
        assert!(
            transition(&mut tx, id, &ran, ImportStatus::Running, now)
                .await
                .unwrap()
        );
        assert!(
            !transition(&mut tx, id, &ran, ImportStatus::Running, now)
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
        let status = find_import(db.pool(), id).await.unwrap().unwrap().status;
        assert_eq!(status, ImportStatus::Running);
    }
}
