//! A receiver that never answers 2xx: exactly `max_attempts` tries, each error recorded, a
//! dead letter an operator can see — and, once the receiver recovers, a replay that delivers
//! the same message (same `webhook-id`).

use std::time::Duration;

use serde_json::Value;
use tests::app::{AppOptions, spawn_app};
use tests::receivers::HttpReceiver;
use tests::webhook_verify::verify;
use tests::{TestDb, both_backends, eventually};

const WITHIN: Duration = Duration::from_secs(20);
const DELIVER: &str = "notifications.deliver_webhook";

async fn a_failing_receiver_gets_max_attempts_tries_then_a_replayed_dead_letter_delivers_the_same_message(
    db: TestDb,
) {
    let receiver = HttpReceiver::start().await;
    receiver.answer(500);
    let options = AppOptions {
        max_attempts: Some(3),
        backoff: vec!["50ms".to_owned()],
        ..AppOptions::default()
    };
    let app = spawn_app(&db, options).await;
    let (_, secret) = app
        .subscribe(&receiver.url("/hooks"), &["record.created"])
        .await;

    app.create_record("Doomed delivery", "d@example.com").await;

    let dead: Value = eventually(WITHIN, "the delivery to be dead-lettered", || async {
        let list = app.admin_get("/admin/dead-letters").await;
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job_type"] == DELIVER)
            .cloned()
    })
    .await;
    assert_eq!(dead["queue"], "webhooks");
    assert_eq!(dead["state"], "dead");
    assert_eq!(dead["attempt"], 3);
    assert_eq!(dead["max_attempts"], 3);
    assert_eq!(dead["last_error"], "receiver answered 500");

    let requests = receiver.requests();
    assert_eq!(requests.len(), 3, "exactly max_attempts tries");
    let webhook_id = requests[0].header("webhook-id").unwrap().to_owned();
    for request in &requests {
        assert_eq!(request.header("webhook-id"), Some(webhook_id.as_str()));
        verify(&secret, request).unwrap();
    }

    let id = dead["id"].as_str().unwrap();
    let shown = app.admin_get(&format!("/admin/dead-letters/{id}")).await;
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{shown}");
    for (n, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["attempt"], n + 1);
        assert_eq!(attempt["error"], "receiver answered 500", "{attempt}");
        assert_eq!(attempt["detail"]["status"], 500, "{attempt}");
    }
    assert_eq!(attempts[2]["outcome"], "dead");

    receiver.answer(204);
    let replayed = app
        .admin_post(&format!("/admin/dead-letters/{id}/replay"))
        .await;
    assert_eq!(replayed["replayed"], serde_json::json!([id]));

    let requests = receiver.wait_for(4, WITHIN).await;
    let delivered = &requests[3];
    assert_eq!(delivered.answered, 204);
    assert_eq!(delivered.header("webhook-id"), Some(webhook_id.as_str()));
    verify(&secret, delivered).unwrap();
    assert_eq!(delivered.body, requests[0].body, "the same message");

    let job = eventually(WITHIN, "the replayed job to complete", || async {
        let job = app.admin_get(&format!("/admin/dead-letters/{id}")).await;
        (job["state"] == "completed").then_some(job)
    })
    .await;
    assert_eq!(job["replays"], 1);
    let list = app.admin_get("/admin/dead-letters").await;
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["id"] != id),
        "no longer a dead letter: {list}"
    );
    assert_eq!(receiver.requests().len(), 4);
    app.shutdown().await;
}

both_backends!(
    a_failing_receiver_gets_max_attempts_tries_then_a_replayed_dead_letter_delivers_the_same_message
);
