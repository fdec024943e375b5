//! Wake-ups: a new job starts within milliseconds, not a poll interval.
//!
//! In one process an enqueue wakes its queue's loop directly. Across processes (several
//! replicas on PostgreSQL) the enqueue's `pg_notify` travels on commit to every process's
//! `LISTEN` connection. When that connection drops, the listener reconnects with backoff
//! and wakes every queue (notifications may have been missed); the workers' fallback poll
//! keeps jobs moving in the meantime.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};

/// The PostgreSQL channel enqueues notify; the payload is the queue name.
pub const CHANNEL: &str = "keel_jobs";

/// One wake-up signal per queue.
#[derive(Debug, Default)]
pub struct Wakers {
    queues: HashMap<String, Arc<Notify>>,
}

impl Wakers {
    /// Signals for the given queues.
    pub fn new<'a>(queues: impl IntoIterator<Item = &'a String>) -> Self {
        Self {
            queues: queues
                .into_iter()
                .map(|q| (q.clone(), Arc::new(Notify::new())))
                .collect(),
        }
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
