//! `keel trace` over the admin API: a `POST /records` chain, once delivered, reads as one tree
//! — request → `record.created` → the listener's job → the webhook delivery, whose attempt
//! recorded the receiver's 200.

use std::time::Duration;

use serde_json::{Value, json};
use tests::app::{AppOptions, expect_json, spawn_app};
use tests::receivers::HttpReceiver;
use tests::{TestDb, both_backends, eventually};

const WITHIN: Duration = Duration::from_secs(20);

fn children<'a>(node: &'a Value, kind: &str, key: &str, value: &str) -> Vec<&'a Value> {
    node["children"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == kind && c[key] == value)
        .collect()
}

async fn a_record_chain_is_traced_from_the_request_to_the_delivered_webhook(db: TestDb) {
    let receiver = HttpReceiver::start().await;
    let app = spawn_app(&db, AppOptions::default()).await;
    app.subscribe(&receiver.url("/hooks"), &["record.created"])
        .await;
    let correlation_id = "trace-me-0001";
    let response = app
        .client
        .post(app.url("/records"))
        .header("x-correlation-id", correlation_id)
        .json(&json!({ "title": "Traced", "owner_email": "t@example.com" }))
        .send()
        .await
        .unwrap();
    let record = expect_json(response, 201).await;
    receiver.wait_for(1, WITHIN).await;

    let trace = eventually(
        WITHIN,
        "the delivery to be completed in the trace",
        || async {
            let trace = app
                .admin_get(&format!("/admin/traces/{correlation_id}"))
                .await;
            // The request itself is recorded off the request's path, a moment after it answered.
            let done = trace["roots"][0]["kind"] == "request"
                && trace
                    .to_string()
                    .contains("\"job_type\":\"notifications.deliver_webhook\"")
                && !trace.to_string().contains("\"state\":\"running\"")
                && trace.to_string().contains("\"state\":\"completed\"");
            done.then_some(trace)
        },
    )
    .await;
    assert_eq!(trace["correlation_id"], correlation_id);
    let roots = trace["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "one request began the chain: {trace}");
    let request = &roots[0];
    assert_eq!(request["kind"], "request", "{trace}");
    assert_eq!(request["method"], "POST");
    assert_eq!(request["path"], "/records");
    assert_eq!(request["status"], 201);

    let events = children(request, "event", "name", "record.created");
    assert_eq!(events.len(), 1, "{trace}");
    assert_eq!(events[0]["payload"]["record_id"], record["id"]);
    // The webhook fan-out listener runs inline, in the request's transaction: the delivery
    // job hangs right under the event, with no listener job between them.
    let deliveries = children(
        events[0],
        "job",
        "job_type",
        "notifications.deliver_webhook",
    );
    assert_eq!(deliveries.len(), 1, "{trace}");
    let delivery = deliveries[0];
    assert_eq!(delivery["queue"], "webhooks");
    assert_eq!(delivery["state"], "completed");
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{delivery}");
    assert_eq!(attempts[0]["outcome"], "completed");
    assert_eq!(attempts[0]["detail"]["status"], 200, "{delivery}");
    assert_eq!(
        attempts[0]["detail"]["url"],
        receiver.url("/hooks").as_str(),
        "{delivery}"
    );

    let missing = app.client.get(app.url("/admin/traces/nothing-here"));
    let response = missing
        .bearer_auth(tests::app::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "an unknown chain is not found");
    app.shutdown().await;
}

both_backends!(a_record_chain_is_traced_from_the_request_to_the_delivered_webhook);
