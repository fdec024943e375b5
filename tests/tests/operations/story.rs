//! The whole operational story against the real binary, on SQLite and PostgreSQL.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tests::app::{AppOptions, KeelProcess, client, expect_json};
use tests::receivers::HttpReceiver;
use tests::webhook_verify::verify;
use tests::{TestDb, both_backends, eventually};

const KEEL: &str = env!("CARGO_BIN_EXE_keel-under-test");
const ALERT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OWNER: &str = "grace.hopper@example.com";

fn cli(process: &KeelProcess, args: &[&str]) -> (i32, String, String) {
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

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn a_broken_receiver_is_seen_alerted_replayed_and_traced(db: TestDb) {
    let http = client();
    let receiver = HttpReceiver::start().await;
    receiver.answer(500);
    let alerts = HttpReceiver::start().await;
    let options = AppOptions {
        max_attempts: Some(2),
        extra_toml: format!(
            "[alerts]\nwebhook_url = {:?}\nsecret = {ALERT_SECRET:?}\nmin_interval = \"1h\"\n",
            alerts.url("/alerts")
        ),
        ..AppOptions::default()
    };
    let keel = KeelProcess::start(Path::new(KEEL), &db, &options).await;

    let endpoint = expect_json(
        http.post(keel.url("/webhook-endpoints"))
            .json(&json!({"url": receiver.url("/hook"), "events": ["record.created"]}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    assert!(endpoint["secret"].as_str().unwrap().starts_with("whsec_"));
    let correlation = format!("ops-{}", uuid::Uuid::now_v7().simple());
    expect_json(
        http.post(keel.url("/records"))
            .header("x-correlation-id", &correlation)
            .json(&json!({"title": "Broken receiver", "owner_email": OWNER}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;

    // Two attempts, both 500, then dead — and exactly one signed alert.
    receiver.wait_for(2, Duration::from_secs(30)).await;
    let alert = alerts.wait_for(1, Duration::from_secs(30)).await.remove(0);
    verify(ALERT_SECRET, &alert).unwrap();
    let body = alert.json();
    assert_eq!(body["type"], "keel.alert.job_dead", "{body}");
    assert_eq!(body["data"]["detail"]["queue"], "webhooks", "{body}");
    assert_eq!(
        body["data"]["detail"]["job_type"],
        "notifications.deliver_webhook"
    );
    assert_eq!(
        body["data"]["detail"]["correlation_id"],
        correlation.as_str()
    );
    assert!(
        !String::from_utf8_lossy(&alert.body).contains(OWNER),
        "no PII in alerts"
    );

    // /metrics shows the dead job, the failed deliveries and the request.
    let text = eventually(
        Duration::from_secs(10),
        "metrics to show the dead job",
        || async {
            let text = http
                .get(keel.url("/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            (metric(
                &text,
                "keel_queue_jobs",
                &[("queue", "webhooks"), ("state", "dead")],
            ) == Some(1.0))
            .then_some(text)
        },
    )
    .await;
    let dead = [
        ("queue", "webhooks"),
        ("job_type", "notifications.deliver_webhook"),
    ];
    assert_eq!(
        metric(&text, "keel_jobs_dead_total", &dead),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "keel_jobs_failed_total", &dead),
        Some(2.0),
        "{text}"
    );
    assert!(
        metric(
            &text,
            "keel_webhook_deliveries_total",
            &[("status_class", "5xx")]
        ) >= Some(2.0)
    );
    // Per endpoint, labelled by its id and never by its URL.
    let endpoint_id = [("endpoint_id", endpoint["id"].as_str().unwrap())];
    for name in [
        "keel_webhook_endpoint_attempts_total",
        "keel_webhook_endpoint_failures_total",
    ] {
        assert_eq!(
            metric(&text, name, &endpoint_id),
            Some(2.0),
            "{name}: {text}"
        );
    }
    assert!(
        text.contains("keel_webhook_endpoint_duration_seconds_bucket{endpoint_id="),
        "{text}"
    );
    assert!(!text.contains(&receiver.url("/hook")), "no URL in labels");

    // `keel webhooks show` reads the endpoint's delivery log: two attempts, both 500.
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let (code, out, err) = cli(&keel, &["webhooks", "show", endpoint_id, "--json"]);
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["attempts_24h"], 2, "{shown}");
    assert_eq!(shown["succeeded_24h"], 0, "{shown}");
    let attempts = &shown["deliveries"][0]["attempts"];
    assert_eq!(attempts[0]["status_code"], 500, "{shown}");
    assert_eq!(attempts[1]["status_code"], 500, "{shown}");
    assert_eq!(shown["deliveries"][0]["status"], "failed", "{shown}");
    assert!(!out.contains("whsec_"), "no secret in the CLI's answer");
    let (code, out, _) = cli(&keel, &["webhooks", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(endpoint_id) && out.contains("enabled"),
        "{out}"
    );
    let (code, _, err) = cli(&keel, &["webhooks", "show", "not-an-id"]);
    assert_eq!(code, 1);
    assert!(err.contains("not a webhook endpoint id"), "{err}");
    assert!(
        metric(
            &text,
            "keel_http_requests_total",
            &[("method", "POST"), ("route", "/records"), ("status", "201")]
        )
        .is_some(),
        "{text}"
    );
    assert!(text.contains("keel_job_duration_seconds_bucket"), "{text}");
    assert_eq!(
        metric(&text, "keel_workers_alive", &[]),
        Some(1.0),
        "{text}"
    );

    // The operator finds the group, fixes the receiver and replays the group.
    let (code, out, err) = cli(&keel, &["dead", "groups", "--json"]);
    assert_eq!(code, 0, "{err}");
    let groups: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(groups.len(), 1, "{out}");
    assert_eq!(groups[0]["count"], 1);
    assert_eq!(groups[0]["error_class"], "receiver answered 500");
    let group = groups[0]["id"].as_str().unwrap().to_owned();

    receiver.answer(200);
    let (code, out, err) = cli(&keel, &["dead", "replay", "--group", &group]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("completed"), "{out}");
    let delivered = receiver.wait_for(3, Duration::from_secs(30)).await;
    let ids: Vec<_> = delivered.iter().map(|r| r.header("webhook-id")).collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "one message: {ids:?}");

    // `keel trace` tells the story, from the request to the delivered webhook.
    let (code, tree, err) = cli(&keel, &["trace", &correlation]);
    assert_eq!(code, 0, "{err}");
    for expected in [
        "request POST /records → 201",
        "event record.created v1",
        "notifications.deliver_webhook on webhooks [completed]",
        "status 500",
        "status 200",
    ] {
        assert!(tree.contains(expected), "missing {expected:?} in\n{tree}");
    }
    let (code, out, _) = cli(&keel, &["queues", "--json"]);
    assert_eq!(code, 0);
    let queues: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert!(queues.iter().all(|q| q["dead"] == 0), "{out}");

    // The logs are JSON lines carrying the chain's ids — and never the owner's address.
    let logs = keel.logs();
    assert!(
        logs.iter()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "JSON lines"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains(&correlation) && l.contains("job_id")),
        "a job's log line carries the correlation id"
    );
    assert!(
        !logs.iter().any(|l| l.contains(OWNER)),
        "an email address reached the logs"
    );
    keel.kill().await;
}

both_backends!(a_broken_receiver_is_seen_alerted_replayed_and_traced);
