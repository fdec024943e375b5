//! Wake-ups: a new job starts within milliseconds, not a poll interval.
//!
//! In one process an enqueue wakes its queue's loop directly — after the enqueuing
//! transaction has committed when the work runs inside [`Wakers::after_commit`] (an HTTP
//! request, a job's handler), else at once. Across processes (several replicas on
//! PostgreSQL) the enqueue's `pg_notify` travels on commit to every process's `LISTEN`
//! connection. When that connection drops, the listener reconnects with backoff and wakes
//! every queue (notifications may have been missed); the workers' fallback poll keeps jobs
//! moving in the meantime. An enqueue inside [`Wakers::after_commit`] on PostgreSQL leaves
//! that `NOTIFY` to the scope's end, where it is sent out of the transaction (`Notifier`):
//! notifying commits take a database-wide lock and run one at a time.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use events::{Backend, Db};
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, mpsc, watch};

/// The PostgreSQL channel enqueues notify; the payload is the queue name.
pub const CHANNEL: &str = "keel_jobs";

/// One wake-up signal per queue.
#[derive(Debug, Default)]
pub struct Wakers {
    queues: HashMap<String, Arc<Notify>>,
    /// PostgreSQL: wakes the other replicas after a commit (see [`Notifier`]).
    notifier: Option<Notifier>,
}

impl Wakers {
    /// Signals for the given queues.
    pub fn new<'a>(queues: impl IntoIterator<Item = &'a String>) -> Self {
        Self {
            queues: queues
                .into_iter()
                .map(|q| (q.clone(), Arc::new(Notify::new())))
                .collect(),
            notifier: None,
        }
    }

    /// These signals, and on PostgreSQL the other replicas' too: after an
    /// [`Wakers::after_commit`] scope, through a `NOTIFY` of their own.
    pub fn with_notifier(mut self, db: &Db) -> Self {
        if db.backend() == Backend::Postgres {
            self.notifier = Some(Notifier::new(db.clone()));
        }
        self
    }

    /// Whether an enqueue here will be followed by a `NOTIFY` after its commit, so its
    /// transaction need not notify (see the `keel_jobs_notify` trigger).
    pub fn notifies_after_commit(&self) -> bool {
        self.notifier.is_some() && PENDING.try_with(|_| ()).is_ok()
    }

    /// The signal of one queue.
    pub fn get(&self, queue: &str) -> Option<Arc<Notify>> {
        self.queues.get(queue).cloned()
    }

    /// Wakes a queue's loop (a stored permit if it is busy, so no wake-up is lost).
    pub fn wake(&self, queue: &str) {
        if let Some(n) = self.queues.get(queue) {
            n.notify_one();
        }
    }

    /// Wakes every queue.
    pub fn wake_all(&self) {
        for n in self.queues.values() {
            n.notify_one();
        }
    }

    /// Wakes `queue` for a job just enqueued on a transaction that has not committed yet:
    /// when the enclosing [`Wakers::after_commit`] ends, or at once outside one.
    ///
    /// A loop woken before the commit finds nothing to claim: on PostgreSQL it runs an
    /// empty claim and waits for the insert's `NOTIFY`, and on SQLite its claim queues
    /// behind the open transaction's write lock in the busy handler's sleeps.
    pub fn wake_when_committed(&self, queue: &str) {
        let deferred = PENDING.try_with(|pending| {
            if let Ok(mut queues) = pending.lock() {
                queues.insert(queue.to_owned());
            }
        });
        if deferred.is_err() {
            self.wake(queue);
        }
    }

    /// Runs `work` — which commits (or rolls back) what it enqueues before it returns — and
    /// then wakes the queues it enqueued on. Also when `work` is dropped half-way (a client
    /// that hung up): its transaction may have committed. A wake after a rollback only
    /// costs an empty claim.
    pub async fn after_commit<F: Future>(self: Arc<Self>, work: F) -> F::Output {
        let pending = Arc::new(Mutex::new(BTreeSet::new()));
        let _wake = WakeOnDrop {
            wakers: self,
            pending: pending.clone(),
        };
        PENDING.scope(pending, work).await
    }
}

tokio::task_local! {
    /// The queues enqueued on inside the current [`Wakers::after_commit`].
    static PENDING: Arc<Mutex<BTreeSet<String>>>;
}

/// Wakes the recorded queues when an [`Wakers::after_commit`] scope ends, however it ends.
struct WakeOnDrop {
    wakers: Arc<Wakers>,
    pending: Arc<Mutex<BTreeSet<String>>>,
}

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        let queues = match self.pending.lock() {
            Ok(mut queues) => std::mem::take(&mut *queues),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for queue in queues {
            self.wakers.wake(&queue);
            if let Some(notifier) = &self.wakers.notifier {
                notifier.notify(queue);
            }
        }
    }
}

/// Sends the `NOTIFY` of jobs enqueued inside an [`Wakers::after_commit`] scope once the
/// scope has ended, out of their transaction, many commits' worth in one statement.
///
/// A transaction that notifies holds a database-wide lock through its commit, so notifying
/// commits run one at a time; out here, the enqueuing transactions commit side by side, and
/// one small statement wakes the replicas for all of them. If this process dies between a
/// commit and its `NOTIFY`, the other replicas find the job at their next poll.
#[derive(Debug)]
struct Notifier {
    db: Db,
    /// Started on first use, on the runtime that enqueues.
    sender: OnceLock<mpsc::UnboundedSender<String>>,
}

impl Notifier {
    fn new(db: Db) -> Self {
        Self {
            db,
            sender: OnceLock::new(),
        }
    }

    /// Queues a `NOTIFY` for `queue`. A scope that ends outside any tokio runtime (dropped
    /// while one shuts down) sends none: the other replicas' poll finds the job.
    fn notify(&self, queue: String) {
        let sender = match self.sender.get() {
            Some(sender) => sender,
            None => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                self.sender.get_or_init(|| {
                    let (sender, receiver) = mpsc::unbounded_channel();
                    runtime.spawn(send_notifies(self.db.clone(), receiver));
                    sender
                })
            }
        };
        let _ = sender.send(queue);
    }
}

/// Notifies, once per queue, whatever has gathered; ends when the [`Notifier`] is gone.
async fn send_notifies(db: Db, mut queues: mpsc::UnboundedReceiver<String>) {
    let mut batch = Vec::new();
    while queues.recv_many(&mut batch, 256).await > 0 {
        let distinct: BTreeSet<String> = batch.drain(..).collect();
        let calls = (1..=distinct.len())
            .map(|i| format!("pg_notify('{CHANNEL}', ${i})"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {calls}")));
        for queue in &distinct {
            query = query.bind(queue.as_str());
        }
        if let Err(e) = query.execute(db.pool()).await {
            tracing::warn!(error = %e, "could not NOTIFY the other replicas; they poll instead");
        }
    }
}

/// Relays PostgreSQL notifications to `wakers` until `shutdown` turns true.
pub async fn listen_postgres(
    url: String,
    wakers: Arc<Wakers>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delay = Duration::from_millis(100);
    while !*shutdown.borrow() {
        let connected = async {
            let mut listener = PgListener::connect(&url).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            r = connected => match r {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "LISTEN connection failed");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        delay = Duration::from_millis(100);
        // Anything enqueued while we were not listening would otherwise wait for a poll.
        wakers.wake_all();
        loop {
            tokio::select! {
                n = listener.try_recv() => match n {
                    Ok(Some(n)) => wakers.wake(n.payload()),
                    Ok(None) => {
                        tracing::warn!("LISTEN connection lost; reconnecting");
                        wakers.wake_all();
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection failed; reconnecting");
                        break;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Whether `queue` has a wake-up waiting, taking it.
    async fn woken(wakers: &Wakers, queue: &str) -> bool {
        let notify = wakers.get(queue).unwrap();
        tokio::select! {
            biased;
            () = notify.notified() => true,
            () = std::future::ready(()) => false,
        }
    }

    fn wakers() -> Arc<Wakers> {
        let queues = ["events".to_owned(), "default".to_owned()];
        Arc::new(Wakers::new(queues.iter()))
    }

    #[tokio::test]
    async fn inside_a_scope_the_wake_waits_for_the_scope_to_end() {
        let wakers = wakers();
        let inner = wakers.clone();
        let during = wakers
            .clone()
            .after_commit(async move {
                inner.wake_when_committed("events");
                woken(&inner, "events").await
            })
            .await;
        assert!(!during, "woken before the work (and its commit) ended");
        assert!(woken(&wakers, "events").await, "not woken when it ended");
        assert!(
            !woken(&wakers, "default").await,
            "a queue nothing was enqueued on"
        );
    }

    #[tokio::test]
    async fn outside_a_scope_the_wake_is_at_once() {
        let wakers = wakers();
        wakers.wake_when_committed("events");
        assert!(woken(&wakers, "events").await);
    }

    #[tokio::test]
    async fn work_dropped_half_way_still_wakes() {
        let wakers = wakers();
        let inner = wakers.clone();
        let work = wakers.clone().after_commit(async move {
            inner.wake_when_committed("events");
            std::future::pending::<()>().await;
        });
        let timed_out = tokio::time::timeout(Duration::from_millis(5), work).await;
        assert!(timed_out.is_err());
        assert!(
            woken(&wakers, "events").await,
            "the dropped scope lost its wake"
        );
    }
}
