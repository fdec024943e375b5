//! The split scenario: events on NATS JetStream.
//!
//! - **Relay throughput**: `--events N` events committed while no relay runs (in transactions
//!   of 500), then the relay started: events published *and acknowledged* by JetStream per
//!   second, until the last one is marked published.
//! - **Latency across the split**: deployment A (records, billing) and deployment B
//!   (notifications, consuming from the broker, asking A over HTTP) on two fresh databases;
//!   `POST /records` on A → relay → JetStream → B's durable consumer → listener → signed
//!   webhook from B, timed one request at a time (`--idle-samples`), p50/p99.
//!
//! Needs a NATS server with JetStream (`--nats-url`, default `nats://127.0.0.1:4222`); each run
//! uses a stream and subjects of its own and deletes the stream at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use events::{EventKey, Module, SystemClock};
use runtime::alerts::LogAlerts;
use runtime::broker::{BrokerConfig, StreamLimits};
use runtime::{Runtime, RuntimeConfig};
use serde_json::{Value, json};

use crate::db::Fresh;
use crate::served::{Receiver, ServedApp};
use crate::stats::percentile_ms;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server (PostgreSQL) or backend (SQLite) to run on.
    pub database_url: String,
    /// The NATS server.
    pub nats_url: String,
    /// Events the relay publishes in the throughput part.
    pub events: usize,
    /// Sequential samples across the split (0 skips).
    pub idle_samples: usize,
}

/// Runs both parts; one JSON object.
///
/// # Errors
/// Fails when the broker or the apps do not work.
pub async fn run(opts: &Options) -> anyhow::Result<Value> {
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let stream = format!("KEEL_BENCH_{tag}");
    let prefix = format!("keel.bench.{tag}");
    let broker = BrokerConfig {
        url: opts.nats_url.clone(),
        stream: stream.clone(),
        subject_prefix: prefix.clone(),
        publish: vec!["*".to_owned()],
        consume: false,
        limits: StreamLimits::default(),
        stuck_after: Duration::from_secs(300),
    };
    let relay = relay_throughput(opts, &broker).await;
    let latency = if opts.idle_samples > 0 {
        Some(across_the_split(opts, &broker).await)
    } else {
        None
    };
    let js = runtime::broker::connect(&broker).await?;
    let _ = js.delete_stream(&stream).await;
    let relay = relay?;
    let latency = latency.transpose()?;
    Ok(json!({
        "scenario": "split",
        "backend": crate::backend_name(runtime::storage::backend_of(&opts.database_url)?),
        "relay": relay,
        "across_the_split": latency,
    }))
}

async fn relay_throughput(opts: &Options, broker: &BrokerConfig) -> anyhow::Result<Value> {
    let fresh = Fresh::create(&opts.database_url).await?;
    let db = runtime::connect(&fresh.url, 8).await?;
    let config = RuntimeConfig {
        broker: Some(broker.clone()),
        ..RuntimeConfig::default()
    };
    let rt = Runtime::new(
        db.clone(),
        fresh.url.clone(),
        Arc::new(SystemClock),
        config,
        Arc::new(LogAlerts),
    );
    let module = Module {
        name: "bench",
        migrations: Vec::new(),
        publishes: Vec::new(),
        listeners: Vec::new(),
        jobs: Vec::new(),
        routes: axum::Router::new(),
        retention: Vec::new(),
        schedules: Vec::new(),
    };
    rt.migrate(&[&module]).await?;
    rt.install(&[&module])?;
    let outbox = rt.outbox();
    let key = EventKey {
        name: "record.created",
        version: 1,
    };
    let mut written = 0;
    while written < opts.events {
        let mut tx = db.begin().await?;
        for _ in 0..500.min(opts.events - written) {
            outbox
                .publish_json(&mut tx, key, json!({ "record_id": uuid::Uuid::now_v7() }))
                .await?;
            written += 1;
        }
        tx.commit().await?;
    }
    let started = Instant::now();
    let workers = rt.start_workers(Some(Vec::new())).await?;
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM keel_relay WHERE published_at IS NULL")
                .fetch_one(db.pool())
                .await?;
        if left == 0 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "{left} events still unpublished after 10 min"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    workers.shutdown().await;
    db.pool().close().await;
    fresh.remove().await?;
    let rate = opts.events as f64 / seconds;
    eprintln!(
        "  relay: {} events in {seconds:.2} s = {rate:.0} events/s (acked)",
        opts.events
    );
    Ok(json!({ "events": opts.events, "seconds": seconds, "events_per_s": rate }))
}

async fn across_the_split(opts: &Options, broker: &BrokerConfig) -> anyhow::Result<Value> {
    let db_a = Fresh::create(&opts.database_url).await?;
    let db_b = Fresh::create(&opts.database_url).await?;
    let broker_toml = |consume: bool| {
        format!(
            "[broker]\nurl = {:?}\nstream = {:?}\nsubject_prefix = {:?}\nconsume = {consume}\n",
            broker.url, broker.stream, broker.subject_prefix
        )
    };
    let a = ServedApp::start_with(
        &db_a.url,
        &format!(
            "{}\n[modules]\nenabled = [\"records\", \"billing\"]\n",
            broker_toml(false)
        ),
    )
    .await?;
    let b = ServedApp::start_with(
        &db_b.url,
        &format!(
            "{}\n[modules]\nenabled = [\"notifications\"]\n\n[modules.remote]\nrecords = {:?}\nbilling = {:?}\n",
            broker_toml(true),
            a.api.base,
            a.api.base
        ),
    )
    .await?;
    let receiver = Receiver::start().await?;
    b.api.subscribe(&receiver.url).await?;
    let mut samples = Vec::with_capacity(opts.idle_samples);
    for i in 0..(opts.idle_samples + 20) {
        let _ = receiver.take();
        let at = Instant::now();
        a.api.create_record(i).await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let arrived = loop {
            if let Some((_, when)) = receiver.take().into_iter().next() {
                break when;
            }
            anyhow::ensure!(Instant::now() < deadline, "no webhook from B within 20 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        // The first 20 warm connections, consumers and statement caches up.
        if i >= 20 {
            samples.push(arrived.saturating_duration_since(at));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.shutdown().await.context("stopping B")?;
    a.shutdown().await.context("stopping A")?;
    db_b.remove().await?;
    db_a.remove().await?;
    let p50 = percentile_ms(&samples, 0.50);
    let p99 = percentile_ms(&samples, 0.99);
    eprintln!("  POST on A → webhook from B: p50 {p50:?} ms, p99 {p99:?} ms");
    Ok(json!({ "samples": samples.len(), "p50_ms": p50, "p99_ms": p99 }))
}
