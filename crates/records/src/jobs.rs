//! The import job: turns an upload's stored lines into records, batch by batch.
//!
//! Each batch commits in one transaction: its records (each publishing `record.created`),
//! its failed rows, and the import's progress and checkpoint. The checkpoint update is
//! conditional on the checkpoint the batch started from, so a crash, a retry, a rescued job
//! running beside a stale one, or a replay never creates a line's record twice. The last
//! transaction marks the import `completed`, publishes `import.completed` and drops the lines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use events::jobs::{HandleJob, JobDetail};
use events::outbox::OutboxExt;
use events::{
    Clock, Db, ImportCompleted, Job, JobContext, JobError, JobQueue, NewJob, Outbox, PublishError,
    RecordCreated,
};

use crate::model::{FailedRow, ImportStatus, LineContent, NewRecord, Record};
use crate::store;

/// Lines handled per transaction.
pub const BATCH_LINES: i64 = 500;
/// The longest one attempt works before it hands the rest to a continuation job (less when
/// the queue's timeout is short: half of it), so a large import never runs into the timeout.
pub const TIME_BUDGET: Duration = Duration::from_secs(20);

/// Create the records of an uploaded import. Enqueued by `POST /imports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunImport {
    /// The import to run.
    pub import_id: Uuid,
}

impl Job for RunImport {
    const TYPE: &'static str = "records.run_import";
    const QUEUE: &'static str = "imports";

    fn unique_key(&self) -> Option<String> {
        Some(self.import_id.to_string())
    }
}

/// Runs [`RunImport`] jobs.
#[derive(Debug, Clone)]
pub struct RunImportHandler {
    db: Db,
    outbox: Arc<dyn Outbox>,
    jobs: Arc<dyn JobQueue>,
    clock: Arc<dyn Clock>,
    batch_lines: i64,
    time_budget: Duration,
}

impl RunImportHandler {
    /// A handler with the default batch size and time budget.
    pub fn new(
        db: Db,
        outbox: Arc<dyn Outbox>,
        jobs: Arc<dyn JobQueue>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            db,
            outbox,
            jobs,
            clock,
            batch_lines: BATCH_LINES,
            time_budget: TIME_BUDGET,
        }
    }

    #[cfg(test)]
    fn with_limits(mut self, batch_lines: i64, time_budget: Duration) -> Self {
        self.batch_lines = batch_lines;
        self.time_budget = time_budget;
        self
    }

    async fn run(
        &self,
        import_id: Uuid,
        time_budget: Duration,
    ) -> Result<serde_json::Value, JobError> {
        let started = Instant::now();
        let Some(import) = store::find_import(self.db.pool(), import_id).await? else {
            return Err(JobError::poison(format!(
                "import {import_id} does not exist"
            )));
        };
        if import.status == ImportStatus::Completed {
            return Ok(json!({ "import_id": import_id, "outcome": "already_completed" }));
        }
        if import.status != ImportStatus::Running {
            let mut tx = self.db.begin().await?;
            let from = [ImportStatus::Queued, ImportStatus::Failed];
            store::transition(
                &mut tx,
                import_id,
                &from,
                ImportStatus::Running,
                self.clock.now(),
            )
            .await?;
            tx.commit().await?;
        }

        let mut progress = Progress {
            resumed_from: import.checkpoint,
            ..Progress::default()
        };
        loop {
            let mut tx = self.db.begin().await?;
            let Some(current) = store::find_import_in(&mut tx, import_id).await? else {
                return Err(JobError::poison(format!(
                    "import {import_id} does not exist"
                )));
            };
            if current.status == ImportStatus::Completed {
                return Ok(progress.detail(import_id, "already_completed"));
            }
            let lines =
                store::next_lines(&mut tx, import_id, current.checkpoint, self.batch_lines).await?;
            let Some(last) = lines.last().map(|l| l.line_no) else {
                self.complete(&mut tx, import_id).await?;
                tx.commit().await?;
                tracing::info!(%import_id, "import completed");
                return Ok(progress.detail(import_id, "completed"));
            };

            let now = self.clock.now();
            let mut records = Vec::new();
            let mut failures = Vec::new();
            for line in &lines {
                let parsed = match &line.content {
                    LineContent::Text(text) => NewRecord::parse_line(text),
                    LineContent::Rejected(reason) => Err(reason.clone()),
                };
                match parsed {
                    Ok(new) => records.push(Record {
                        id: Uuid::now_v7(),
                        title: new.title,
                        owner_email: new.owner_email,
                        attributes: new.attributes,
                        created_at: now,
                    }),
                    Err(error) => failures.push(FailedRow {
                        line: line.line_no,
                        error,
                    }),
                }
            }
            let handled = count(lines.len());
            let failed = count(failures.len());
            let claimed = store::advance(
                &mut tx,
                import_id,
                current.checkpoint,
                last,
                handled,
                failed,
                now,
            )
            .await?;
            if !claimed {
                // Another run of this import handled the batch first; look again.
                tx.rollback().await?;
                continue;
            }
            // The batch's records, then their events (and the listeners' deliveries), each
            // in a few multi-row statements rather than a few round trips per line.
            store::insert_records(&mut tx, &records).await?;
            let created: Vec<RecordCreated> = records
                .iter()
                .map(|record| RecordCreated {
                    record_id: record.id,
                })
                .collect();
            self.outbox
                .publish_many(&mut tx, &created)
                .await
                .map_err(publish_failed)?;
            store::insert_failures(&mut tx, import_id, &failures).await?;
            progress.batches += 1;
            progress.created += count(records.len());
            progress.failed += failed;
            progress.checkpoint = last;

            if started.elapsed() >= time_budget {
                let mut next = NewJob::of(&RunImport { import_id })
                    .map_err(|e| JobError::retry(format!("continuation does not encode: {e}")))?;
                next.unique_key = Some(format!("{import_id}@{last}"));
                self.jobs.enqueue(&mut tx, next).await?;
                tx.commit().await?;
                return Ok(progress.detail(import_id, "continued"));
            }
            tx.commit().await?;
        }
    }

    async fn complete(&self, tx: &mut events::DbConn, import_id: Uuid) -> Result<(), JobError> {
        let from = [
            ImportStatus::Queued,
            ImportStatus::Running,
            ImportStatus::Failed,
        ];
        if store::transition(
            tx,
            import_id,
            &from,
            ImportStatus::Completed,
            self.clock.now(),
        )
        .await?
        {
            self.outbox
                .publish(tx, &ImportCompleted { import_id })
                .await
                .map_err(publish_failed)?;
            store::delete_lines(tx, import_id).await?;
        }
        Ok(())
    }

    /// After the last attempt failed, shows the import as `failed` (a replay resumes it).
    async fn mark_failed(&self, import_id: Uuid) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let from = [ImportStatus::Queued, ImportStatus::Running];
        store::transition(
            &mut tx,
            import_id,
            &from,
            ImportStatus::Failed,
            self.clock.now(),
        )
        .await?;
        tx.commit().await
    }
}

#[async_trait]
impl HandleJob<RunImport> for RunImportHandler {
    async fn handle(&self, job: RunImport, ctx: &JobContext) -> Result<JobDetail, JobError> {
        // Hand over to a continuation well inside the attempt's timeout, whatever the
        // queue's timeout is configured to.
        let budget = self.time_budget.min(ctx.timeout / 2);
        self.run(job.import_id, budget).await.map(Some)
    }

    /// However the job died (last attempt, timeout, a rescue after a crash), the import
    /// shows `failed`, and a replay resumes it from its checkpoint.
    async fn dead_lettered(&self, job: Option<RunImport>, _ctx: &JobContext) {
        let Some(job) = job else { return };
        if let Err(e) = self.mark_failed(job.import_id).await {
            tracing::warn!(import_id = %job.import_id, error = %e, "could not mark import failed");
        }
    }
}

#[derive(Debug, Default)]
struct Progress {
    resumed_from: i64,
    checkpoint: i64,
    batches: i64,
    created: i64,
    failed: i64,
}

impl Progress {
    fn detail(&self, import_id: Uuid, outcome: &str) -> serde_json::Value {
        json!({
            "import_id": import_id,
            "outcome": outcome,
            "resumed_from_line": self.resumed_from,
            "batches": self.batches,
            "records_created": self.created,
            "lines_failed": self.failed,
        })
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn publish_failed(error: PublishError) -> JobError {
    match error {
        PublishError::Database(e) => JobError::from(e),
        PublishError::Encode(e) => JobError::retry(format!("event does not encode: {e}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::model::ImportLine;
    use crate::store::tests::test_db;
    use chrono::Utc;
    use events::TraceContext;
    use events::jobs::FailureKind;

    pub(crate) use events::testing::{
        FixedClock, RecordingJobQueue as RecordingQueue, RecordingOutbox,
    };

    pub(crate) fn fixed_clock() -> Arc<FixedClock> {
        FixedClock::at_millis(1_780_000_000_000)
    }

    struct Fixture {
        db: Db,
        outbox: Arc<RecordingOutbox>,
        queue: Arc<RecordingQueue>,
        handler: RunImportHandler,
    }

    async fn fixture() -> Fixture {
        let db = test_db().await;
        let outbox = Arc::new(RecordingOutbox::default());
        let queue = Arc::new(RecordingQueue::default());
        let handler =
            RunImportHandler::new(db.clone(), outbox.clone(), queue.clone(), fixed_clock());
        Fixture {
            db,
            outbox,
            queue,
            handler,
        }
    }

    fn line(n: i64, text: &str) -> ImportLine {
        ImportLine {
            line_no: n,
            content: LineContent::Text(text.to_owned()),
        }
    }

    fn good(n: i64) -> ImportLine {
        line(
            n,
            &format!(r#"{{"title":"Record {n}","owner_email":"o{n}@example.com"}}"#),
        )
    }

    async fn upload(db: &Db, lines: &[ImportLine]) -> Uuid {
        let id = Uuid::now_v7();
        let mut tx = db.begin().await.unwrap();
        store::insert_import(&mut tx, id, count(lines.len()), Utc::now())
            .await
            .unwrap();
        for chunk in lines.chunks(store::LINES_PER_INSERT) {
            store::insert_lines(&mut tx, id, chunk).await.unwrap();
        }
        tx.commit().await.unwrap();
        id
    }

    fn ctx(attempt: u32) -> JobContext {
        JobContext {
            id: Uuid::now_v7(),
            job_type: RunImport::TYPE.to_owned(),
            queue: RunImport::QUEUE.to_owned(),
            attempt,
            max_attempts: 3,
            timeout: std::time::Duration::from_secs(30),
            idempotency_key: "k".to_owned(),
            trace: TraceContext::new_chain(),
            enqueued_at: Utc::now(),
            payload: json!({}),
        }
    }

    async fn count_rows(db: &Db, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(db.pool())
            .await
            .unwrap()
    }

    #[test]
    fn the_job_is_unique_per_import_on_the_imports_queue() {
        let id = Uuid::now_v7();
        let job = NewJob::of(&RunImport { import_id: id }).unwrap();
        assert_eq!(job.queue, "imports");
        assert_eq!(job.job_type, "records.run_import");
        assert_eq!(job.unique_key, Some(id.to_string()));
    }

    #[tokio::test]
    async fn an_import_creates_records_reports_failures_and_completes() {
        let f = fixture().await;
        let lines = vec![
            good(1),
            line(2, r#"{"title":"T","owner_email":"bad@"}"#),
            good(4),
            ImportLine {
                line_no: 5,
                content: LineContent::Rejected("line is longer than 64 KiB".to_owned()),
            },
            good(6),
        ];
        let id = upload(&f.db, &lines).await;
        let handler = f.handler.clone().with_limits(2, Duration::MAX);
        let detail = handler
            .handle(RunImport { import_id: id }, &ctx(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(detail["outcome"], "completed");
        assert_eq!(detail["batches"], 3);
        assert_eq!(detail["records_created"], 3);
        assert_eq!(detail["lines_failed"], 2);

        let import = store::find_import(f.db.pool(), id).await.unwrap().unwrap();
        assert_eq!(import.status, ImportStatus::Completed);
        assert_eq!((import.total, import.processed, import.failed), (5, 5, 2));
        let failed = store::failed_rows(f.db.pool(), id, 10).await.unwrap();
        assert_eq!(
            failed.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![2, 5]
        );
        assert!(failed[0].error.starts_with("invalid owner_email"));
        assert_eq!(count_rows(&f.db, "records_records").await, 3);
        assert_eq!(count_rows(&f.db, "records_import_lines").await, 0);
        assert_eq!(
            f.outbox.names(),
            vec![
                "record.created",
                "record.created",
                "record.created",
                "import.completed"
            ]
        );
    }

    #[tokio::test]
    async fn running_a_completed_import_again_does_nothing() {
        let f = fixture().await;
        let id = upload(&f.db, &[good(1)]).await;
        f.handler
            .handle(RunImport { import_id: id }, &ctx(1))
            .await
            .unwrap();
        let again = f
            .handler
            .handle(RunImport { import_id: id }, &ctx(2))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again["outcome"], "already_completed");
        assert_eq!(count_rows(&f.db, "records_records").await, 1);
        assert_eq!(f.outbox.names().len(), 2);
    }

    #[tokio::test]
    async fn an_interrupted_import_resumes_from_its_checkpoint_without_duplicates() {
        let f = fixture().await;
        let lines: Vec<ImportLine> = (1..=7).map(good).collect();
        let id = upload(&f.db, &lines).await;
        // A first run that stops after its first batch, as a crash after a commit would.
        let first = f.handler.clone().with_limits(3, Duration::ZERO);
        let detail = first
            .handle(RunImport { import_id: id }, &ctx(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(detail["outcome"], "continued");
        let import = store::find_import(f.db.pool(), id).await.unwrap().unwrap();
        assert_eq!(
            (import.status, import.processed, import.checkpoint),
            (ImportStatus::Running, 3, 3)
        );
        let continuation = f.queue.enqueued()[0].clone();
        assert_eq!(continuation.unique_key, Some(format!("{id}@3")));
        assert_eq!(continuation.queue, "imports");

        let rest = f.handler.clone().with_limits(3, Duration::MAX);
        let detail = rest
            .handle(RunImport { import_id: id }, &ctx(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(detail["resumed_from_line"], 3);
        assert_eq!(detail["records_created"], 4);
        assert_eq!(count_rows(&f.db, "records_records").await, 7);
        let created = f
            .outbox
            .names()
            .iter()
            .filter(|n| *n == "record.created")
            .count();
        assert_eq!(created, 7);
    }

    #[tokio::test]
    async fn an_unknown_import_is_poison() {
        let f = fixture().await;
        let error = f
            .handler
            .handle(
                RunImport {
                    import_id: Uuid::now_v7(),
                },
                &ctx(1),
            )
            .await
            .unwrap_err();
        assert_eq!(error.kind, FailureKind::Poison);
    }

    #[tokio::test]
    async fn a_last_failed_attempt_marks_the_import_failed_and_a_replay_resumes_it() {
        let f = fixture().await;
        let id = upload(&f.db, &[good(1)]).await;
        // Break the records table so the batch fails on every attempt.
        sqlx::raw_sql("ALTER TABLE records_records RENAME TO records_records_away")
            .execute(f.db.pool())
            .await
            .unwrap();
        let error = f
            .handler
            .handle(RunImport { import_id: id }, &ctx(3))
            .await
            .unwrap_err();
        assert_eq!(error.kind, FailureKind::Retry);
        // The runtime dead-letters it after this last attempt and tells the handler.
        f.handler
            .dead_lettered(Some(RunImport { import_id: id }), &ctx(3))
            .await;
        let status = store::find_import(f.db.pool(), id)
            .await
            .unwrap()
            .unwrap()
            .status;
        assert_eq!(status, ImportStatus::Failed);

        sqlx::raw_sql("ALTER TABLE records_records_away RENAME TO records_records")
            .execute(f.db.pool())
            .await
            .unwrap();
        f.handler
            .handle(RunImport { import_id: id }, &ctx(1))
            .await
            .unwrap();
        let import = store::find_import(f.db.pool(), id).await.unwrap().unwrap();
        assert_eq!(
            (import.status, import.processed),
            (ImportStatus::Completed, 1)
        );
    }
}
