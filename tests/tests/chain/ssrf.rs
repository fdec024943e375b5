//! The SSRF guard: with `allow_private_targets = false`, an endpoint on a private literal IP
//! is refused at creation, and a host name that resolves to loopback fails at delivery with
//! a reason naming the private address — the receiver behind it gets nothing.

use std::time::Duration;

use serde_json::{Value, json};
use tests::app::{AppOptions, expect_error, expect_json, spawn_app};
use tests::receivers::HttpReceiver;
use tests::{TestDb, both_backends, eventually};

const WITHIN: Duration = Duration::from_secs(20);

async fn private_targets_are_refused_at_creation_and_at_delivery(db: TestDb) {
    let receiver = HttpReceiver::start().await;
    let options = AppOptions {
        allow_private_targets: false,
        max_attempts: Some(2),
        ..AppOptions::default()
    };
    let app = spawn_app(&db, options).await;
    let port = receiver.port();

    for url in [
        format!("http://127.0.0.1:{port}/hooks"),
        format!("http://[::1]:{port}/hooks"),
        "http://10.0.0.7/hooks".to_owned(),
        "http://192.168.1.1/hooks".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://[::ffff:127.0.0.1]/hooks".to_owned(),
    ] {
        let r = app
            .post(
                "/webhook-endpoints",
                &json!({ "url": url, "events": ["*"] }),
            )
            .await;
        expect_error(r, 422, "private_target").await;
    }

    // A name is checked when it is resolved, at delivery.
    let r = app
        .post(
            "/webhook-endpoints",
            &json!({ "url": format!("http://localhost:{port}/hooks"), "events": ["*"] }),
        )
        .await;
    expect_json(r, 201).await;
    app.create_record("Exfiltration attempt", "x@example.com")
        .await;

    let dead: Value = eventually(WITHIN, "the delivery to be dead-lettered", || async {
        let list = app.admin_get("/admin/dead-letters?queue=webhooks").await;
        list["items"].as_array().unwrap().first().cloned()
    })
    .await;
    let id = dead["id"].as_str().unwrap();
    let job = app.admin_get(&format!("/admin/dead-letters/{id}")).await;
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job}");
    for attempt in attempts {
        let error = attempt["error"].as_str().unwrap();
        assert!(
            error.contains("private address")
                && (error.contains("127.0.0.1") || error.contains("::1")),
            "the reason names the private address: {error}"
        );
    }
    assert!(receiver.requests().is_empty(), "the receiver got nothing");
    app.shutdown().await;
}

both_backends!(private_targets_are_refused_at_creation_and_at_delivery);
