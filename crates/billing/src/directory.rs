//! The query port billing answers for other modules: what an invoice bills and where it
//! stands, read from `billing_invoices` at the time of asking.

use async_trait::async_trait;
use uuid::Uuid;

use events::Db;
use events::queries::{InvoiceDirectory, InvoiceSummary};

use crate::store;

/// [`InvoiceDirectory`] over `billing_invoices`.
#[derive(Debug, Clone)]
pub struct SqlInvoiceDirectory {
    db: Db,
}

impl SqlInvoiceDirectory {
    /// A directory reading through `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[async_trait]
impl InvoiceDirectory for SqlInvoiceDirectory {
    async fn find_invoice(&self, id: Uuid) -> Result<Option<InvoiceSummary>, sqlx::Error> {
        Ok(store::find_invoice(self.db.pool(), id)
            .await?
            .map(|invoice| InvoiceSummary {
                invoice_id: invoice.id,
                record_id: invoice.record_id,
                amount_cents: invoice.amount_cents,
                currency: invoice.currency,
                status: invoice.status.as_str().to_owned(),
            }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::tests::{open_invoice, test_db};

    #[tokio::test]
    async fn the_directory_answers_what_an_invoice_bills() {
        let db = test_db().await;
        let invoice = open_invoice(0);
        let mut tx = db.begin().await.unwrap();
        store::insert_invoice(&mut tx, &invoice).await.unwrap();
        tx.commit().await.unwrap();
        let directory = SqlInvoiceDirectory::new(db);
        let summary = directory.find_invoice(invoice.id).await.unwrap().unwrap();
        assert_eq!(
            summary,
            InvoiceSummary {
                invoice_id: invoice.id,
                record_id: invoice.record_id,
                amount_cents: 4200,
                currency: "EUR".to_owned(),
                status: "open".to_owned(),
            }
        );
        assert_eq!(directory.find_invoice(Uuid::now_v7()).await.unwrap(), None);
    }
}
