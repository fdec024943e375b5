//! Recording inbound requests for `keel trace` without making the request wait for it.
//!
//! The HTTP edge hands each [`RequestRecord`] to a [`RequestLog`] and answers at once; one
//! background writer inserts whatever has queued up in a single multi-row `INSERT`. A request
//! thus costs no extra round trip, and under load many requests share one statement. The
//! record is observability, not business data: when the queue is full (the database cannot
//! keep up) a record is dropped with a warning rather than slowing requests down, and
//! [`RequestLog::close`] writes what is left before the process exits.

use std::sync::Arc;

use events::Db;
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::task::JoinHandle;

use crate::trace::RequestRecord;

/// Records queued for the writer before new ones are dropped.
const CAPACITY: usize = 8192;
/// Most rows per `INSERT` (7 parameters each, well under every backend's limit).
const MAX_BATCH: usize = 256;

/// A handle on the background request writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct RequestLog {
    sender: mpsc::Sender<RequestRecord>,
    stop: Arc<Notify>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl RequestLog {
    /// Starts the writer on `db`; call [`RequestLog::close`] before closing the pool.
    pub fn start(db: Db) -> Self {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        let stop = Arc::new(Notify::new());
        let writer = tokio::spawn(write_until_closed(db, receiver, stop.clone()));
        Self {
            sender,
            stop,
            writer: Arc::new(Mutex::new(Some(writer))),
        }
    }

    /// Queues one record; never waits.
    pub fn record(&self, record: RequestRecord) {
        if let Err(e) = self.sender.try_send(record) {
            metrics::counter!("keel_request_records_dropped_total").increment(1);
            tracing::warn!(error = %e, "request record dropped: the request log is not keeping up");
        }
    }

    /// Stops taking records, writes those already queued, and waits for the writer.
    pub async fn close(&self) {
        self.stop.notify_one();
        if let Some(writer) = self.writer.lock().await.take() {
            let _ = writer.await;
        }
    }
}

async fn write_until_closed(
    db: Db,
    mut receiver: mpsc::Receiver<RequestRecord>,
    stop: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            n = receiver.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    return;
                }
                write(&db, &mut batch).await;
            }
            () = stop.notified() => break,
        }
    }
    receiver.close();
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        write(&db, &mut batch).await;
    }
}

/// Writes and empties `batch`; a failure is logged, never retried (see the module doc).
async fn write(db: &Db, batch: &mut Vec<RequestRecord>) {
    if let Err(e) = crate::trace::record_requests(db, batch).await {
        tracing::warn!(error = %e, records = batch.len(), "could not record requests for tracing");
    }
    batch.clear();
}
