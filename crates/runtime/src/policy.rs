//! Retry policy per queue (and per job type), and the runtime's timing settings.
//!
//! Queue configuration is a product decision, not a default: each queue has its own
//! concurrency, attempt budget, backoff schedule, jitter and timeout. The defaults are the
//! seed's tiers — 10 s, 60 s, 10 min, 1 h, 2 h — with six attempts and ±10 % jitter.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The queues that exist even when the configuration names none.
pub const DEFAULT_QUEUES: &[&str] = &["events", "webhooks", "emails", "imports"];

/// How one queue runs and retries its jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuePolicy {
    /// Jobs of this queue running at once in one process.
    pub concurrency: usize,
    /// Tries in all (1 try + retries) before a job is dead.
    pub max_attempts: u32,
    /// Delay before retry N (1-based); the last value repeats.
    pub backoff: Vec<Duration>,
    /// ± fraction applied to each delay; 0 turns it off.
    pub jitter: f64,
    /// An attempt running longer is failed (and retried).
    pub timeout: Duration,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        Self {
            concurrency: 16,
            max_attempts: 6,
            backoff: vec![
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(600),
                Duration::from_secs(3600),
                Duration::from_secs(7200),
            ],
            jitter: 0.1,
            timeout: Duration::from_secs(30),
        }
    }
}

impl QueuePolicy {
    /// The delay before the retry that follows failed attempt `attempt` (1-based), with
    /// jitter applied.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let base = self.base_delay_after(attempt);
        if self.jitter <= 0.0 || base.is_zero() {
            return base;
        }
        let factor = 1.0 + rand::random_range(-self.jitter..=self.jitter);
        base.mul_f64(factor.max(0.0))
    }

    /// The longest wait the schedule has (its last step): a handler's own wish, such as a
    /// receiver's `Retry-After`, is capped here.
    pub fn ceiling(&self) -> Duration {
        self.backoff.iter().copied().max().unwrap_or_default()
    }

    /// The delay before the retry that follows failed attempt `attempt`, without jitter.
    pub fn base_delay_after(&self, attempt: u32) -> Duration {
        let index = (attempt.max(1) as usize - 1).min(self.backoff.len().saturating_sub(1));
        self.backoff.get(index).copied().unwrap_or_default()
    }
}

/// What a job type may change about its queue's policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyOverride {
    /// Replaces the queue's attempt budget.
    pub max_attempts: Option<u32>,
    /// Replaces the queue's schedule.
    pub backoff: Option<Vec<Duration>>,
    /// Replaces the queue's timeout.
    pub timeout: Option<Duration>,
}

/// Everything the runtime needs to know about timing and queues.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// One policy per queue.
    pub queues: BTreeMap<String, QueuePolicy>,
    /// Per-job-type overrides of the queue policy.
    pub job_types: BTreeMap<String, PolicyOverride>,
    /// How often a worker process proves it is alive.
    pub heartbeat_interval: Duration,
    /// Jobs held by a process silent this long are rescued.
    pub dead_after: Duration,
    /// Completed and cancelled jobs, and old events, are deleted after this long.
    pub retention: Duration,
    /// Dead letters not replayed or purged are deleted after this long.
    pub dead_letter_retention: Duration,
    /// A job whose runs took their worker down this many times is dead-lettered as poison.
    pub poison_after: u32,
    /// Fallback poll when no wake-up arrives (LISTEN lost, scheduled jobs coming due).
    pub poll_interval: Duration,
    /// How long in-flight jobs may run on after SIGTERM before they are handed back.
    pub shutdown_grace: Duration,
    /// A queue whose oldest ready job waited longer than this raises a `queue_stale` alert.
    pub stale_queue_after: Duration,
    /// Stored events (and the inbox entries that say a listener processed them) are kept
    /// this long (`[events] retention`), apart from the jobs' retention: the log is what
    /// replays and backfills read, so it may well outlive finished jobs. `None`: as long as
    /// finished jobs (`retention`), as before the log had a retention of its own.
    pub event_retention: Option<Duration>,
    /// Start points in the past set in configuration (`[listeners.<name>] backfill_from`);
    /// they take precedence over the listener's own `Listener::backfill_from`.
    pub backfills: BTreeMap<String, DateTime<Utc>>,
    /// Deliveries per second a backfill feeds at most (`[events] backfill_rate`).
    pub backfill_rate: u32,
    /// `[broker]`: when set, events named in `publish` also go to NATS JetStream.
    pub broker: Option<crate::broker::BrokerConfig>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            queues: DEFAULT_QUEUES
                .iter()
                .map(|q| ((*q).to_owned(), QueuePolicy::default()))
                .collect(),
            job_types: BTreeMap::new(),
            heartbeat_interval: Duration::from_secs(5),
            dead_after: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 3600),
            dead_letter_retention: Duration::from_secs(30 * 24 * 3600),
            poison_after: 3,
            poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
            stale_queue_after: Duration::from_secs(600),
            event_retention: None,
            backfills: BTreeMap::new(),
            backfill_rate: 50,
            broker: None,
        }
    }
}

impl RuntimeConfig {
    /// How long stored events are kept: `[events] retention`, else the jobs' retention.
    pub fn event_retention(&self) -> Duration {
        self.event_retention.unwrap_or(self.retention)
    }

    /// The effective policy for a job type on a queue.
    pub fn policy_for(&self, queue: &str, job_type: &str) -> QueuePolicy {
        let mut policy = self.queues.get(queue).cloned().unwrap_or_default();
        if let Some(o) = self.job_types.get(job_type) {
            if let Some(n) = o.max_attempts {
                policy.max_attempts = n;
            }
            if let Some(b) = &o.backoff {
                policy.backoff.clone_from(b);
            }
            if let Some(t) = o.timeout {
                policy.timeout = t;
            }
        }
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_follows_the_tiers_and_repeats_the_last() {
        let p = QueuePolicy {
            jitter: 0.0,
            ..QueuePolicy::default()
        };
        let secs: Vec<u64> = (1..=7).map(|a| p.delay_after(a).as_secs()).collect();
        assert_eq!(secs, vec![10, 60, 600, 3600, 7200, 7200, 7200]);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let p = QueuePolicy::default();
        for _ in 0..1000 {
            let d = p.delay_after(1).as_secs_f64();
            assert!((9.0..=11.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn job_type_overrides_replace_queue_values() {
        let mut c = RuntimeConfig::default();
        c.job_types.insert(
            "x".into(),
            PolicyOverride {
                max_attempts: Some(2),
                ..PolicyOverride::default()
            },
        );
        assert_eq!(c.policy_for("emails", "x").max_attempts, 2);
        assert_eq!(c.policy_for("emails", "y").max_attempts, 6);
    }
}
