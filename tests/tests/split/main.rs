//! A module split off into its own deployment, through the real `keel` binary: records and
//! billing on deployment A, notifications on deployment B with its own database, events
//! crossing on a real NATS JetStream server that the tests start, stop and restart, real
//! webhook and SMTP receivers, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod config;
mod crossing;
mod failures;
mod replicas;

use std::path::Path;
use std::process::Command;

use events::Backend;
use serde_json::Value;
use tests::TestDb;
use tests::app::{AppOptions, KeelProcess, client, expect_json};
use tests::nats::NatsServer;

/// The real `keel` main.
pub const KEEL: &str = env!("CARGO_BIN_EXE_keel-under-test");
/// The stream every test uses.
pub const STREAM: &str = "KEEL_EVENTS";

/// A second, empty database of the same backend as `db` (deployment B's own).
pub async fn another_db(db: &TestDb) -> TestDb {
    match db.backend() {
        Backend::Sqlite => TestDb::sqlite(),
        Backend::Postgres => TestDb::postgres().await,
    }
}

/// `[broker]` pointing at `nats`.
pub fn broker_toml(nats: &NatsServer, consume: bool) -> String {
    format!(
        "[broker]\nurl = {:?}\nstream = {STREAM:?}\nsubject_prefix = \"keel.events\"\npublish = [\"*\"]\nconsume = {consume}\nstuck_after = \"1s\"\n",
        nats.url()
    )
}

/// Deployment A: records and billing, publishing to the broker.
pub async fn deployment_a(db: &TestDb, nats: &NatsServer) -> KeelProcess {
    deployment_a_with(db, nats, "").await
}

/// As [`deployment_a`], with `more` appended to its `keel.toml`.
pub async fn deployment_a_with(db: &TestDb, nats: &NatsServer, more: &str) -> KeelProcess {
    // In the file, so that `keel trace` and `keel queues` with this file see the same set.
    let options = AppOptions {
        extra_toml: format!(
            "{}\n[modules]\nenabled = [\"records\", \"billing\"]\n{more}",
            broker_toml(nats, false)
        ),
        ..AppOptions::default()
    };
    KeelProcess::start_with(Path::new(KEEL), db, &options, &["serve"]).await
}

/// Deployment B: notifications only, consuming from the broker, asking A for records and
/// invoices over HTTP.
pub async fn deployment_b(
    db: &TestDb,
    nats: &NatsServer,
    a: &KeelProcess,
    smtp_url: Option<String>,
) -> KeelProcess {
    deployment_b_with(db, nats, a, smtp_url, "").await
}

/// As [`deployment_b`], with `more` appended to its `keel.toml`.
pub async fn deployment_b_with(
    db: &TestDb,
    nats: &NatsServer,
    a: &KeelProcess,
    smtp_url: Option<String>,
    more: &str,
) -> KeelProcess {
    let options = AppOptions {
        smtp_url,
        extra_toml: format!(
            "{}\n[modules]\nenabled = [\"notifications\"]\n\n[modules.remote]\nrecords = {:?}\nbilling = {:?}\n{more}",
            broker_toml(nats, true),
            a.base,
            a.base
        ),
        ..AppOptions::default()
    };
    KeelProcess::start_with(Path::new(KEEL), db, &options, &["serve"]).await
}

/// Runs `keel <args>` against `process`'s configuration: (exit code, stdout, stderr).
pub fn cli(process: &KeelProcess, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(KEEL)
        .arg("--config")
        .arg(process.config_path())
        .args(args)
        .env_remove("KEEL_DATABASE_URL")
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// POSTs JSON with a correlation id; returns the body of the expected status.
pub async fn post(url: &str, body: &Value, correlation_id: &str, status: u16) -> Value {
    let response = client()
        .post(url)
        .header("x-correlation-id", correlation_id)
        .json(body)
        .send()
        .await
        .unwrap();
    expect_json(response, status).await
}

/// Subscribes an endpoint at `url` on `b` to `events`.
pub async fn subscribe(b: &KeelProcess, url: &str, events: &[&str]) {
    post(
        &b.url("/webhook-endpoints"),
        &serde_json::json!({ "url": url, "events": events }),
        &uuid::Uuid::now_v7().to_string(),
        201,
    )
    .await;
}

/// Creates `n` records on `a` one after the other; their ids in creation order.
pub async fn create_records(a: &KeelProcess, n: usize, tag: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let record = post(
            &a.url("/records"),
            &serde_json::json!({ "title": format!("{tag} {i}"), "owner_email": "owner@example.com" }),
            &uuid::Uuid::now_v7().to_string(),
            201,
        )
        .await;
        ids.push(record["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// The `record_id`s of the `record.created` messages in the stream, in stream order, and
/// whether any event id appears twice.
pub async fn streamed_record_ids(nats: &NatsServer) -> (Vec<String>, bool) {
    let messages = nats.messages(STREAM).await;
    let mut seen = std::collections::HashSet::new();
    let mut duplicate = false;
    let mut ids = Vec::new();
    for (_, subject, msg_id, body) in messages {
        if subject != "keel.events.record.created" {
            continue;
        }
        duplicate |= !seen.insert(msg_id.clone());
        assert_eq!(
            body["id"].as_str(),
            Some(msg_id.as_str()),
            "Nats-Msg-Id is the event id"
        );
        ids.push(
            body["payload"]["record_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    (ids, duplicate)
}
