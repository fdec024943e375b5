//! The chain scenario: `POST /records` → `record.created` → listener job → signed webhook
//! received by a local receiver, timed from sending the request to the receiver getting the
//! webhook (matched by the record id in its body).
//!
//! At idle (one request at a time, each waiting for its webhook, then a 10 ms pause), and at
//! fixed offered loads (open loop: request i is due at `start + i / rate` and is sent then,
//! whatever the earlier ones are doing; its latency counts from that due instant, so a late
//! generator cannot hide queueing).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::db::Fresh;
use crate::served::{Api, Receiver, ServedApp};
use crate::stats::{percentile_ms, percentile_table};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server (PostgreSQL) or backend (SQLite) to run on.
    pub database_url: String,
    /// Sequential samples at idle (0 skips).
    pub idle_samples: usize,
    /// Offered loads, requests per second.
    pub rates: Vec<usize>,
    /// How long each offered load lasts.
    pub seconds: u64,
}

/// One request that the app answered 201.
#[derive(Debug, Clone)]
struct Sent {
    /// The record it created.
    record_id: String,
    /// When it was due (open loop) or sent (idle).
    at: Instant,
    /// From `at` to the app's answer.
    answered_after: Duration,
}

/// How long to wait for the last webhooks once no new one arrives.
const STALL: Duration = Duration::from_secs(15);

/// Runs the scenario on a fresh database; one JSON object with one entry per load.
///
/// # Errors
/// Fails when the app does not start or a request fails at idle.
pub async fn run(opts: &Options) -> anyhow::Result<Value> {
    let fresh = Fresh::create(&opts.database_url).await?;
    let result = measure(opts, &fresh).await;
    fresh.remove().await?;
    result
}

async fn measure(opts: &Options, fresh: &Fresh) -> anyhow::Result<Value> {
    let receiver = Receiver::start().await?;
    let app = ServedApp::start(&fresh.url).await?;
    app.api.subscribe(&receiver.url).await?;
    let mut loads = Vec::new();
    // Warm-up: connections, statement caches, the first claim of each queue.
    sequential(&app.api, &receiver, 20).await?;
    if opts.idle_samples > 0 {
        let (sent, errors) = sequential(&app.api, &receiver, opts.idle_samples).await?;
        let start = sent.first().map_or_else(Instant::now, |s| s.at);
        let mut load = summarize("idle", sent, errors, &receiver, start).await;
        // One request at a time: a delivery rate says nothing here.
        if let Some(fields) = load.as_object_mut() {
            fields.remove("delivered_per_s");
        }
        eprintln!("  idle: {load}");
        loads.push(load);
    }
    for &rate in &opts.rates {
        let load = open_loop(&app.api, &receiver, rate, opts.seconds).await;
        eprintln!("  {rate} req/s: {load}");
        loads.push(load);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    app.shutdown().await?;
    Ok(json!({
        "scenario": "chain",
        "backend": crate::backend_name(fresh.backend),
        "loads": loads,
    }))
}

/// Sends `n` requests one at a time, each waiting for its webhook; returns (id, sent) pairs.
async fn sequential(
    api: &Api,
    receiver: &Receiver,
    n: usize,
) -> anyhow::Result<(Vec<Sent>, usize)> {
    let _ = receiver.take();
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        let at = Instant::now();
        let record_id = api.create_record(i).await?;
        let answered_after = at.elapsed();
        let deadline = Instant::now() + Duration::from_secs(10);
        while receiver.pending() <= i {
            anyhow::ensure!(Instant::now() < deadline, "no webhook within 10 s at idle");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sent.push(Sent {
            record_id,
            at,
            answered_after,
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((sent, 0))
}

/// Fires `rate` requests per second for `seconds`, open loop, then waits for the webhooks.
async fn open_loop(api: &Api, receiver: &Receiver, rate: usize, seconds: u64) -> Value {
    let _ = receiver.take();
    let total = rate * usize::try_from(seconds).unwrap_or(usize::MAX);
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let errors = Arc::new(Mutex::new(0usize));
    let start = Instant::now() + Duration::from_millis(10);
    let mut generator_lag = Duration::ZERO;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        generator_lag = generator_lag.max(Instant::now().saturating_duration_since(due));
        let (api, sent, errors) = (api.clone(), Arc::clone(&sent), Arc::clone(&errors));
        tasks.spawn(async move {
            match api.create_record(i).await {
                Ok(record_id) => lock(&sent).push(Sent {
                    record_id,
                    at: due,
                    answered_after: due.elapsed(),
                }),
                Err(_) => *lock(&errors) += 1,
            }
        });
    }
    let fired = start.elapsed();
    while tasks.join_next().await.is_some() {}
    let sent = std::mem::take(&mut *lock(&sent));
    let errors = *lock(&errors);
    let mut load = summarize(&rate.to_string(), sent, errors, receiver, start).await;
    load["offered_per_s"] = json!(rate);
    load["fired_in_s"] = json!(round(fired.as_secs_f64()));
    load["generator_max_lag_ms"] = json!(round(generator_lag.as_secs_f64() * 1000.0));
    load
}

/// Waits for the webhook of every sent request (until none arrives for [`STALL`]), matches
/// them by record id and gives the percentiles.
async fn summarize(
    label: &str,
    sent: Vec<Sent>,
    errors: usize,
    receiver: &Receiver,
    start: Instant,
) -> Value {
    let mut arrived: HashMap<String, Instant> = HashMap::with_capacity(sent.len());
    let mut last_progress = Instant::now();
    while arrived.len() < sent.len() && last_progress.elapsed() < STALL {
        let batch = receiver.take();
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        } else {
            last_progress = Instant::now();
            for (id, at) in batch {
                arrived.entry(id).or_insert(at);
            }
        }
    }
    let latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|s| Some(arrived.get(&s.record_id)?.saturating_duration_since(s.at)))
        .collect();
    let answers: Vec<Duration> = sent.iter().map(|s| s.answered_after).collect();
    let last_arrival = arrived.values().max().copied();
    let p = |q| percentile_ms(&latencies, q).map(round);
    json!({
        "load": label,
        "requests_ok": sent.len(),
        "request_errors": errors,
        "webhooks_matched": latencies.len(),
        "webhooks_missing": sent.len() - latencies.len(),
        "delivered_per_s": last_arrival
            .map(|t| round(latencies.len() as f64 / t.saturating_duration_since(start).as_secs_f64())),
        "p50_ms": p(0.5),
        "p90_ms": p(0.9),
        "p99_ms": p(0.99),
        "max_ms": p(1.0),
        "answer_p50_ms": percentile_ms(&answers, 0.5).map(round),
        "answer_p99_ms": percentile_ms(&answers, 0.99).map(round),
        "percentiles_ms": percentile_table(&latencies),
    })
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::round;

    #[test]
    fn rounds_to_hundredths() {
        assert!((round(1.23456) - 1.23).abs() < 1e-9);
    }
}
