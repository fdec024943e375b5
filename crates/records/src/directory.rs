//! The query ports records answers for other modules: what a record is called and who owns
//! it, and how far an import got — read from the module's own tables at the time of asking.

use async_trait::async_trait;
use uuid::Uuid;

use events::Db;
use events::queries::{ImportDirectory, ImportSummary, RecordDirectory, RecordSummary};

use crate::store;

/// [`RecordDirectory`] over `records_records`.
#[derive(Debug, Clone)]
pub struct SqlRecordDirectory {
    db: Db,
}

impl SqlRecordDirectory {
    /// A directory reading through `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[async_trait]
impl RecordDirectory for SqlRecordDirectory {
    async fn find_record(&self, id: Uuid) -> Result<Option<RecordSummary>, sqlx::Error> {
        Ok(store::find_record(self.db.pool(), id)
            .await?
            .map(|record| RecordSummary {
                record_id: record.id,
                title: record.title.as_str().to_owned(),
                owner_email: record.owner_email.as_str().to_owned(),
            }))
    }
}

/// [`ImportDirectory`] over `records_imports`.
#[derive(Debug, Clone)]
pub struct SqlImportDirectory {
    db: Db,
}

impl SqlImportDirectory {
    /// A directory reading through `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[async_trait]
impl ImportDirectory for SqlImportDirectory {
    async fn find_import(&self, id: Uuid) -> Result<Option<ImportSummary>, sqlx::Error> {
        Ok(store::find_import(self.db.pool(), id)
            .await?
            .map(|import| ImportSummary {
                import_id: import.id,
                status: import.status.as_str().to_owned(),
                total: import.total,
                processed: import.processed,
                failed: import.failed,
            }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{NewRecord, Record};
    use crate::store::tests::test_db;
    use chrono::DateTime;

    #[tokio::test]
    async fn the_record_directory_answers_title_and_owner() {
        let db = test_db().await;
        let new = NewRecord::parse_line(r#"{"title":"T","owner_email":"o@example.com"}"#).unwrap();
        let record = Record {
            id: Uuid::now_v7(),
            title: new.title,
            owner_email: new.owner_email,
            attributes: new.attributes,
            created_at: DateTime::from_timestamp_millis(0).unwrap(),
        };
        let mut tx = db.begin().await.unwrap();
        store::insert_record(&mut tx, &record).await.unwrap();
        tx.commit().await.unwrap();
        let directory = SqlRecordDirectory::new(db);
        let summary = directory.find_record(record.id).await.unwrap().unwrap();
        assert_eq!(
            (summary.title.as_str(), summary.owner_email.as_str()),
            ("T", "o@example.com")
        );
        assert_eq!(directory.find_record(Uuid::now_v7()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_import_directory_answers_progress() {
        let db = test_db().await;
        let id = Uuid::now_v7();
        let mut tx = db.begin().await.unwrap();
        store::insert_import(&mut tx, id, 4, DateTime::from_timestamp_millis(0).unwrap())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let directory = SqlImportDirectory::new(db);
        let summary = directory.find_import(id).await.unwrap().unwrap();
        assert_eq!(
            (
                summary.status.as_str(),
                summary.total,
                summary.processed,
                summary.failed
            ),
            ("queued", 4, 0, 0)
        );
        assert_eq!(directory.find_import(Uuid::now_v7()).await.unwrap(), None);
    }
}
