//! The import scenario: one `POST /imports` of N NDJSON lines with one webhook endpoint
//! subscribed to `record.created`, through the real app. Measures how fast the `imports`
//! job turns lines into records and their events (and the listener's deliveries, written in
//! the same batch transactions), and how fast the `webhooks` queue then delivers them all
//! to a real receiver.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::db::Fresh;
use crate::served::{Receiver, ServedApp};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server (PostgreSQL) or backend (SQLite) to run on.
    pub database_url: String,
    /// Lines in the uploaded file.
    pub lines: usize,
}

/// How long the import and its deliveries may take before the run is called failed.
const DEADLINE: Duration = Duration::from_secs(900);

/// Runs the scenario; one JSON object.
///
/// # Errors
/// Fails when the app does not start, the upload is refused, the import fails, or the
/// deliveries do not all arrive before the deadline.
pub async fn run(opts: &Options) -> anyhow::Result<Value> {
    let fresh = Fresh::create(&opts.database_url).await?;
    let backend = fresh.backend;
    let result = measure(&fresh.url, opts.lines).await;
    fresh.remove().await?;
    let (upload_s, records_s, deliveries_s) = result?;
    let n = opts.lines as f64;
    let round = |x: f64| (x * 10.0).round() / 10.0;
    eprintln!(
        "  import of {} lines: records and events {:.0} lines/s, webhooks delivered {:.0}/s",
        opts.lines,
        n / records_s,
        n / deliveries_s
    );
    Ok(json!({
        "scenario": "import",
        "backend": crate::backend_name(backend),
        "lines": opts.lines,
        "upload_s": round(upload_s * 1000.0) / 1000.0,
        "records_s": round(records_s * 1000.0) / 1000.0,
        "deliveries_s": round(deliveries_s * 1000.0) / 1000.0,
        "lines_per_s": round(n / records_s),
        "deliveries_per_s": round(n / deliveries_s),
    }))
}

/// (upload, upload → import completed, upload → last webhook received), in seconds.
async fn measure(url: &str, lines: usize) -> anyhow::Result<(f64, f64, f64)> {
    let receiver = Receiver::start().await?;
    let app = ServedApp::start(url).await?;
    let result = async {
        app.api.subscribe(&receiver.url).await?;
        let body: String = (0..lines)
            .map(|i| {
                format!("{{\"title\":\"imported {i}\",\"owner_email\":\"owner{i}@example.com\"}}\n")
            })
            .collect();
        let start = Instant::now();
        let response = app
            .api
            .client
            .post(format!("{}/imports", app.api.base))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let answer: Value = response.json().await?;
        if status.as_u16() != 202 {
            bail!("POST /imports answered {status}: {answer}");
        }
        let uploaded = start.elapsed().as_secs_f64();
        let id = answer["id"].as_str().context("no import id")?.to_owned();
        let completed = loop {
            let state: Value = app
                .api
                .client
                .get(format!("{}/imports/{id}", app.api.base))
                .send()
                .await?
                .json()
                .await?;
            match state["status"].as_str() {
                Some("completed") => break start.elapsed().as_secs_f64(),
                Some("failed") => bail!("the import failed: {state}"),
                _ if start.elapsed() > DEADLINE => bail!("the import did not finish: {state}"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        while receiver.pending() < lines {
            if start.elapsed() > DEADLINE {
                bail!(
                    "only {} of {lines} webhooks arrived in time",
                    receiver.pending()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok((uploaded, completed, start.elapsed().as_secs_f64()))
    }
    .await;
    app.shutdown().await?;
    result
}
