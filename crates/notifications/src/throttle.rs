//! Fair throttling per endpoint: at most `max_in_flight` deliveries to one endpoint at once
//! and, when set, at most `rate_limit` a second — so one slow or throttling receiver holds
//! only its own share of the `webhooks` queue's slots.
//!
//! A delivery that finds its endpoint busy first waits a moment in process ([`PATIENCE`]): a
//! fast receiver frees a slot within milliseconds, and handing every such delivery back
//! would turn a backlog for one endpoint into claim-and-defer churn (measured: an import's
//! 50 000 deliveries to one local endpoint went at ~290/s that way, against ~1 200/s without
//! the gate). Past that moment it is handed back to the runtime without spending an attempt
//! (`JobError::defer`), with the wait this gate expects, and frees its slot for another
//! endpoint's delivery meanwhile. The gate is per process: with several replicas an
//! endpoint sees at most `max_in_flight` from each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// How long a delivery waits when its endpoint has no free slot: about one short attempt.
const BUSY_WAIT: Duration = Duration::from_millis(500);

/// How long a delivery waits in process for its endpoint's turn before it is handed back:
/// long enough for a fast receiver to free a slot, short enough that a slow one holds other
/// endpoints' slots only briefly.
pub(crate) const PATIENCE: Duration = Duration::from_millis(100);

/// The in-process gates of every endpoint that had a delivery lately.
#[derive(Debug, Clone, Default)]
pub(crate) struct Throttle {
    gates: Arc<Mutex<HashMap<Uuid, Gate>>>,
    /// Woken whenever a slot is given back, for deliveries waiting their [`PATIENCE`].
    freed: Arc<tokio::sync::Notify>,
}

#[derive(Debug)]
struct Gate {
    in_flight: u32,
    /// When the rate limit lets the next delivery start.
    next_start: Option<Instant>,
}

/// A slot on an endpoint, given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    gates: Arc<Mutex<HashMap<Uuid, Gate>>>,
    freed: Arc<tokio::sync::Notify>,
    endpoint: Uuid,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gate) = gates.get_mut(&self.endpoint) {
            gate.in_flight = gate.in_flight.saturating_sub(1);
            let idle = gate.in_flight == 0 && gate.next_start.is_none_or(|t| t <= Instant::now());
            if idle {
                gates.remove(&self.endpoint);
            }
        }
        drop(gates);
        self.freed.notify_waiters();
    }
}

impl Throttle {
    /// Takes a slot on `endpoint`, waiting up to [`PATIENCE`] for one (a rate limit's wait
    /// too, when it is that short); else says how long to wait.
    pub(crate) async fn wait_for_turn(
        &self,
        endpoint: Uuid,
        max_in_flight: u32,
        rate_limit: Option<u32>,
    ) -> Result<Permit, Duration> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            // Registered before trying, so a slot given back in between still wakes us.
            let freed = self.freed.notified();
            let wait = match self.enter(endpoint, max_in_flight, rate_limit) {
                Ok(permit) => return Ok(permit),
                Err(wait) => wait,
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(wait);
            }
            let until = if wait == BUSY_WAIT {
                deadline
            } else if now + wait <= deadline {
                now + wait
            } else {
                return Err(wait);
            };
            let _ = tokio::time::timeout_at(until, freed).await;
        }
    }

    /// Takes a slot on `endpoint`, or says how long to wait for one.
    pub(crate) fn enter(
        &self,
        endpoint: Uuid,
        max_in_flight: u32,
        rate_limit: Option<u32>,
    ) -> Result<Permit, Duration> {
        let now = Instant::now();
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        let gate = gates.entry(endpoint).or_insert(Gate {
            in_flight: 0,
            next_start: None,
        });
        if gate.in_flight >= max_in_flight.max(1) {
            return Err(BUSY_WAIT);
        }
        if let Some(per_second) = rate_limit.filter(|r| *r > 0) {
            let spacing = Duration::from_secs(1) / per_second;
            match gate.next_start {
                Some(at) if at > now => return Err(at - now),
                _ => gate.next_start = Some(now + spacing),
            }
        }
        gate.in_flight += 1;
        Ok(Permit {
            gates: self.gates.clone(),
            freed: self.freed.clone(),
            endpoint,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_gets_at_most_max_in_flight_and_others_are_not_held_up() {
        let throttle = Throttle::default();
        let (slow, other) = (Uuid::now_v7(), Uuid::now_v7());
        let a = throttle.enter(slow, 2, None).unwrap();
        let _b = throttle.enter(slow, 2, None).unwrap();
        assert_eq!(throttle.enter(slow, 2, None).unwrap_err(), BUSY_WAIT);
        assert!(throttle.enter(other, 2, None).is_ok());
        drop(a);
        assert!(throttle.enter(slow, 2, None).is_ok());
    }

    #[test]
    fn a_rate_limit_spaces_starts_and_says_how_long_to_wait() {
        let throttle = Throttle::default();
        let endpoint = Uuid::now_v7();
        drop(throttle.enter(endpoint, 4, Some(2)).unwrap());
        let wait = throttle.enter(endpoint, 4, Some(2)).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
    }

    #[tokio::test]
    async fn a_delivery_waits_a_moment_for_a_slot_a_fast_receiver_frees() {
        let throttle = Throttle::default();
        let endpoint = Uuid::now_v7();
        let busy = throttle.enter(endpoint, 1, None).unwrap();
        let waiting = {
            let throttle = throttle.clone();
            tokio::spawn(async move { throttle.wait_for_turn(endpoint, 1, None).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(busy);
        assert!(waiting.await.unwrap(), "the freed slot is taken");
    }

    #[tokio::test]
    async fn past_its_patience_a_delivery_is_told_to_come_back_later() {
        let throttle = Throttle::default();
        let endpoint = Uuid::now_v7();
        let _busy = throttle.enter(endpoint, 1, None).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            throttle.wait_for_turn(endpoint, 1, None).await.unwrap_err(),
            BUSY_WAIT
        );
        assert!(started.elapsed() >= PATIENCE);
    }
}
