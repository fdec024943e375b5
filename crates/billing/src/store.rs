//! The billing module's SQL: portable statements over `billing_invoices` only.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, AssertSqlSafe, Row};
use uuid::Uuid;

use events::DbConn;

use crate::model::{Invoice, InvoiceStatus};

const COLUMNS: &str = "id, record_id, amount_cents, currency, status, created_at, paid_at";

fn corrupt(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("billing: stored {what} does not decode").into())
}

fn uuid_column(row: &AnyRow, column: &str) -> Result<Uuid, sqlx::Error> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|_| corrupt(column))
}

fn time(ms: i64, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(column))
}

fn invoice_from_row(row: &AnyRow) -> Result<Invoice, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let paid_at: Option<i64> = row.try_get("paid_at")?;
    Ok(Invoice {
        id: uuid_column(row, "id")?,
        record_id: uuid_column(row, "record_id")?,
        amount_cents: row.try_get("amount_cents")?,
        currency: row.try_get("currency")?,
        status: InvoiceStatus::from_stored(&status).ok_or_else(|| corrupt("status"))?,
        created_at: time(row.try_get("created_at")?, "created_at")?,
        paid_at: paid_at.map(|ms| time(ms, "paid_at")).transpose()?,
    })
}

/// Inserts a new invoice.
pub async fn insert_invoice(conn: &mut DbConn, invoice: &Invoice) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO billing_invoices \
         (id, record_id, amount_cents, currency, status, created_at, paid_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(invoice.id.to_string())
    .bind(invoice.record_id.to_string())
    .bind(invoice.amount_cents)
    .bind(invoice.currency.as_str())
    .bind(invoice.status.as_str())
    .bind(invoice.created_at.timestamp_millis())
    .bind(invoice.paid_at.map(|at| at.timestamp_millis()))
    .execute(conn)
    .await?;
    Ok(())
}

/// The invoice with this id, if any.
pub async fn find_invoice(pool: &AnyPool, id: Uuid) -> Result<Option<Invoice>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM billing_invoices WHERE id = $1");
    sqlx::query(AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(invoice_from_row)
        .transpose()
}

/// The invoice with this id, read inside the caller's transaction.
pub async fn find_invoice_in(conn: &mut DbConn, id: Uuid) -> Result<Option<Invoice>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM billing_invoices WHERE id = $1");
    sqlx::query(AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(invoice_from_row)
        .transpose()
}

/// Marks an open (or overdue) invoice paid and returns it; `None` when it is neither
/// (already paid, or no such invoice). The condition on `status` makes two concurrent payments race to one
/// winner: the loser's update matches no row.
pub async fn mark_paid(
    conn: &mut DbConn,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<Invoice>, sqlx::Error> {
    let sql = format!(
        "UPDATE billing_invoices SET status = $2, paid_at = $3 \
         WHERE id = $1 AND status IN ($4, $5) RETURNING {COLUMNS}"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(id.to_string())
        .bind(InvoiceStatus::Paid.as_str())
        .bind(at.timestamp_millis())
        .bind(InvoiceStatus::Open.as_str())
        .bind(InvoiceStatus::Overdue.as_str())
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(invoice_from_row)
        .transpose()
}

/// Marks up to `limit` invoices still open and created before `created_before` overdue,
/// oldest first, and returns their `(invoice_id, record_id)`. The repeated condition on
/// `status` keeps two concurrent runs from marking (and announcing) one invoice twice.
pub async fn mark_overdue(
    conn: &mut DbConn,
    created_before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    let rows = sqlx::query(
        "UPDATE billing_invoices SET status = $1 \
         WHERE status = $2 AND id IN (SELECT id FROM billing_invoices \
             WHERE status = $2 AND created_at < $3 ORDER BY created_at LIMIT $4) \
         RETURNING id, record_id",
    )
    .bind(InvoiceStatus::Overdue.as_str())
    .bind(InvoiceStatus::Open.as_str())
    .bind(created_before.timestamp_millis())
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| Ok((uuid_column(row, "id")?, uuid_column(row, "record_id")?)))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use events::Db;

    /// A fresh in-memory SQLite database with the module's schema.
    pub(crate) async fn test_db() -> Db {
        events::testing::memory_db(&crate::migrations::all()).await
    }

    pub(crate) fn open_invoice(created_ms: i64) -> Invoice {
        Invoice {
            id: Uuid::now_v7(),
            record_id: Uuid::now_v7(),
            amount_cents: 4200,
            currency: "EUR".to_owned(),
            status: InvoiceStatus::Open,
            created_at: DateTime::from_timestamp_millis(created_ms).unwrap(),
            paid_at: None,
        }
    }

    #[tokio::test]
    async fn an_invoice_round_trips() {
        let db = test_db().await;
        let invoice = open_invoice(1_000);
        let mut tx = db.begin().await.unwrap();
        insert_invoice(&mut tx, &invoice).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            find_invoice(db.pool(), invoice.id).await.unwrap(),
            Some(invoice)
        );
        assert_eq!(find_invoice(db.pool(), Uuid::now_v7()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_invoice_is_paid_once() {
        let db = test_db().await;
        let invoice = open_invoice(1_000);
        let paid_at = DateTime::from_timestamp_millis(2_000).unwrap();
        let mut tx = db.begin().await.unwrap();
        insert_invoice(&mut tx, &invoice).await.unwrap();
        let paid = mark_paid(&mut tx, invoice.id, paid_at)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (paid.status, paid.paid_at),
            (InvoiceStatus::Paid, Some(paid_at))
        );
        assert_eq!(mark_paid(&mut tx, invoice.id, paid_at).await.unwrap(), None);
        assert_eq!(
            mark_paid(&mut tx, Uuid::now_v7(), paid_at).await.unwrap(),
            None
        );
        tx.commit().await.unwrap();
        let stored = find_invoice(db.pool(), invoice.id).await.unwrap().unwrap();
        assert_eq!(stored, paid);
    }

    #[tokio::test]
    async fn only_invoices_open_past_the_cutoff_become_overdue_once_and_can_still_be_paid() {
        let db = test_db().await;
        let old = open_invoice(1_000);
        let recent = open_invoice(5_000);
        let mut paid = open_invoice(500);
        paid.status = InvoiceStatus::Paid;
        let mut tx = db.begin().await.unwrap();
        for invoice in [&old, &recent, &paid] {
            insert_invoice(&mut tx, invoice).await.unwrap();
        }
        let cutoff = DateTime::from_timestamp_millis(2_000).unwrap();
        let marked = mark_overdue(&mut tx, cutoff, 100).await.unwrap();
        assert_eq!(marked, vec![(old.id, old.record_id)]);
        assert!(mark_overdue(&mut tx, cutoff, 100).await.unwrap().is_empty());
        let at = DateTime::from_timestamp_millis(3_000).unwrap();
        let now_paid = mark_paid(&mut tx, old.id, at).await.unwrap().unwrap();
        assert_eq!(now_paid.status, InvoiceStatus::Paid);
        tx.commit().await.unwrap();
        let recent = find_invoice(db.pool(), recent.id).await.unwrap().unwrap();
        assert_eq!(recent.status, InvoiceStatus::Open);
    }

    #[tokio::test]
    async fn the_schema_refuses_non_positive_amounts() {
        let db = test_db().await;
        let mut invoice = open_invoice(1_000);
        invoice.amount_cents = 0;
        let mut tx = db.begin().await.unwrap();
        assert!(insert_invoice(&mut tx, &invoice).await.is_err());
    }
}
