//! Billing's background work: the daily pass that marks invoices overdue.
//!
//! It runs on a schedule the module declares (see [`crate::module`]); each batch marks
//! invoices and publishes their `invoice.overdue` in one transaction, so a crash between
//! batches loses nothing and a re-run finds only what is left.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::TimeDelta;
use events::jobs::{HandleJob, JobDetail};
use events::outbox::OutboxExt;
use events::{Clock, Db, InvoiceOverdue, Job, JobContext, JobError, Outbox};
use serde::{Deserialize, Serialize};

use crate::store;

/// Invoices marked per transaction: short write transactions, however many are due.
const BATCH: i64 = 200;

/// Marks every invoice open for longer than `[billing] overdue_after` overdue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkOverdueInvoices {}

impl Job for MarkOverdueInvoices {
    const TYPE: &'static str = "billing.mark_overdue_invoices";
    // Short bookkeeping beside the listener deliveries; billing has no queue of its own.
    const QUEUE: &'static str = "events";
}

/// Runs [`MarkOverdueInvoices`].
pub(crate) struct OverdueMarker {
    pub(crate) db: Db,
    pub(crate) outbox: Arc<dyn Outbox>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) overdue_after: Duration,
}

#[async_trait]
impl HandleJob<MarkOverdueInvoices> for OverdueMarker {
    async fn handle(
        &self,
        _job: MarkOverdueInvoices,
        _ctx: &JobContext,
    ) -> Result<JobDetail, JobError> {
        let after = TimeDelta::from_std(self.overdue_after)
            .map_err(|e| JobError::poison(format!("overdue_after out of range: {e}")))?;
        // "Open for longer than `overdue_after`" is an expiry: judged on the database's clock,
        // whichever replica runs the job.
        let cutoff = self.db.now(self.clock.as_ref()).await? - after;
        let mut marked = 0_usize;
        loop {
            let mut tx = self.db.begin().await?;
            let batch = store::mark_overdue(&mut tx, cutoff, BATCH).await?;
            for (invoice_id, record_id) in &batch {
                let event = InvoiceOverdue {
                    invoice_id: *invoice_id,
                    record_id: *record_id,
                };
                self.outbox
                    .publish(&mut tx, &event)
                    .await
                    .map_err(|e| JobError::retry(format!("publishing invoice.overdue: {e}")))?;
            }
            tx.commit().await?;
            marked += batch.len();
            if i64::try_from(batch.len()).unwrap_or(i64::MAX) < BATCH {
                break;
            }
        }
        tracing::info!(marked, "overdue invoices marked");
        Ok(Some(serde_json::json!({ "marked": marked })))
    }
}
