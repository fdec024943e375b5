//! Chain 1: `POST /records` → `record.created` → one signed Standard Webhooks delivery per
//! subscribed endpoint, carrying the request's correlation id — and the same `webhook-id`
//! when a failed attempt is retried.

use std::time::Duration;

use chrono::DateTime;
use serde_json::json;
use tests::app::{AppOptions, expect_json, spawn_app};
use tests::receivers::HttpReceiver;
use tests::webhook_verify::verify;
use tests::{TestDb, both_backends};
use uuid::Uuid;

const WITHIN: Duration = Duration::from_secs(20);

async fn a_created_record_reaches_the_receiver_as_a_signed_webhook_with_a_stable_id_across_a_retry(
    db: TestDb,
) {
    let receiver = HttpReceiver::start().await;
    let app = spawn_app(&db, AppOptions::default()).await;
    let (_, secret) = app
        .subscribe(&receiver.url("/hooks"), &["record.created"])
        .await;
    // The first attempt fails, so the message is sent twice.
    receiver.answer_next(1, 500);

    let correlation_id = Uuid::new_v4().to_string();
    let response = app
        .client
        .post(app.url("/records"))
        .header("x-correlation-id", &correlation_id)
        .json(&json!({ "title": "Quarterly report", "owner_email": "owner@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-correlation-id"].to_str().unwrap(),
        correlation_id
    );
    let record = expect_json(response, 201).await;
    let record_id = record["id"].as_str().unwrap();

    let requests = receiver.wait_for(2, WITHIN).await;
    assert_eq!(requests[0].answered, 500);
    assert_eq!(requests[1].answered, 200);
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.uri.path(), "/hooks");
        assert_eq!(request.header("content-type"), Some("application/json"));
        verify(&secret, request).unwrap_or_else(|e| panic!("signature: {e}"));
        assert_eq!(
            request.header("x-correlation-id"),
            Some(correlation_id.as_str())
        );
        let traceparent = request.header("traceparent").expect("a traceparent header");
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "traceparent {traceparent}");
        assert_eq!(parts[0], "00");
        assert_eq!(
            parts[1],
            Uuid::parse_str(&correlation_id)
                .unwrap()
                .simple()
                .to_string(),
            "the trace id is the correlation id"
        );
        assert!(parts[2].len() == 16 && parts[2].bytes().all(|b| b.is_ascii_hexdigit()));
        let body = request.json();
        assert_eq!(
            body,
            json!({
                "type": "record.created",
                "timestamp": body["timestamp"],
                "data": { "record_id": record_id, "title": "Quarterly report" },
            })
        );
        let timestamp = body["timestamp"].as_str().expect("an RFC 3339 timestamp");
        DateTime::parse_from_rfc3339(timestamp)
            .unwrap_or_else(|e| panic!("timestamp {timestamp:?}: {e}"));
        assert!(
            !request.body.windows(5).any(|w| w == b"owner"),
            "no personal data is sent to receivers"
        );
    }
    let id = requests[0].header("webhook-id").expect("a webhook-id");
    assert!(id.starts_with("msg_"), "webhook-id {id}");
    assert_eq!(
        requests[1].header("webhook-id"),
        Some(id),
        "stable across retries"
    );

    app.settle(WITHIN).await;
    assert_eq!(
        receiver.requests().len(),
        2,
        "delivered once, after one retry"
    );
    app.shutdown().await;
}

async fn each_subscribed_endpoint_gets_its_own_delivery_and_others_get_none(db: TestDb) {
    let invoices_only = HttpReceiver::start().await;
    let everything = HttpReceiver::start().await;
    let app = spawn_app(&db, AppOptions::default()).await;
    app.subscribe(&invoices_only.url("/"), &["invoice.paid"])
        .await;
    let (_, secret) = app.subscribe(&everything.url("/all"), &["*"]).await;

    let record = app.create_record("Wildcard", "w@example.com").await;

    let requests = everything.wait_for(1, WITHIN).await;
    verify(&secret, &requests[0]).unwrap();
    assert_eq!(requests[0].json()["data"]["record_id"], record["id"]);
    app.settle(WITHIN).await;
    assert_eq!(everything.requests().len(), 1);
    assert!(
        invoices_only.requests().is_empty(),
        "not subscribed to record.created"
    );
    app.shutdown().await;
}

both_backends!(
    a_created_record_reaches_the_receiver_as_a_signed_webhook_with_a_stable_id_across_a_retry,
    each_subscribed_endpoint_gets_its_own_delivery_and_others_get_none,
);
