//! A webhook and an invoice email cross the split with the request's correlation id, each
//! side serves only its modules' routes, and `keel trace` on each side names the other.

use std::time::Duration;

use serde_json::json;
use tests::app::{client, expect_error, expect_json};
use tests::nats::NatsServer;
use tests::receivers::{HttpReceiver, SmtpReceiver};
use tests::{TestDb, both_backends};

use crate::{another_db, cli, deployment_a, deployment_b, post, subscribe};

both_backends!(
    a_webhook_and_an_invoice_email_cross_the_split_with_the_correlation_id,
    the_trace_of_a_request_on_a_continues_through_the_broker_to_the_webhook_from_b,
);

const WITHIN: Duration = Duration::from_secs(30);

async fn a_webhook_and_an_invoice_email_cross_the_split_with_the_correlation_id(db: TestDb) {
    let nats = NatsServer::start().await;
    let db_b = another_db(&db).await;
    let receiver = HttpReceiver::start().await;
    let smtp = SmtpReceiver::start().await;
    let a = deployment_a(&db, &nats).await;
    let b = deployment_b(&db_b, &nats, &a, Some(smtp.url())).await;
    subscribe(&b, &receiver.url("/hook"), &["record.created"]).await;

    // Each side serves its own modules only; the others' routes are the JSON 404.
    expect_error(
        client()
            .get(a.url("/webhook-endpoints"))
            .send()
            .await
            .unwrap(),
        404,
        "route_not_found",
    )
    .await;
    expect_error(
        client()
            .post(b.url("/records"))
            .json(&json!({"title": "x", "owner_email": "o@example.com"}))
            .send()
            .await
            .unwrap(),
        404,
        "route_not_found",
    )
    .await;
    let doc_a = expect_json(
        client().get(a.url("/openapi.json")).send().await.unwrap(),
        200,
    )
    .await;
    assert!(
        doc_a["paths"]["/records"].is_object(),
        "A documents /records"
    );
    assert!(
        doc_a["paths"]["/webhook-endpoints"].is_null(),
        "A does not document notifications' routes"
    );
    let doc_b = expect_json(
        client().get(b.url("/openapi.json")).send().await.unwrap(),
        200,
    )
    .await;
    assert!(doc_b["paths"]["/webhook-endpoints"].is_object());
    assert!(doc_b["paths"]["/records"].is_null() && doc_b["paths"]["/invoices"].is_null());

    // POST on A → record.created → relay → JetStream → B's consumer → webhook from B.
    let correlation = uuid::Uuid::now_v7().to_string();
    let record = post(
        &a.url("/records"),
        &json!({ "title": "Garden shed", "owner_email": "owner@example.com" }),
        &correlation,
        201,
    )
    .await;
    let record_id = record["id"].as_str().unwrap();
    let hooks = receiver.wait_for(1, WITHIN).await;
    let hook = &hooks[0];
    assert_eq!(hook.header("x-correlation-id"), Some(correlation.as_str()));
    let tp = hook.header("traceparent").unwrap();
    assert!(tp.contains(&correlation.replace('-', "")), "{tp}");
    let body = hook.json();
    assert_eq!(body["type"], "record.created");
    assert_eq!(body["data"]["record_id"], record_id);
    // What B fetched for the receiver came from A over HTTP (the record's title).
    assert!(body.to_string().contains("Garden shed"), "{body}");

    // An invoice on A → invoice.issued → B emails the owner, found through A's API.
    let invoice_correlation = uuid::Uuid::now_v7().to_string();
    let invoice = post(
        &a.url("/invoices"),
        &json!({ "record_id": record_id, "amount_cents": 1250, "currency": "EUR" }),
        &invoice_correlation,
        201,
    )
    .await;
    let mails = smtp.wait_for(1, WITHIN).await;
    assert_eq!(mails[0].to, vec!["owner@example.com".to_owned()]);
    assert!(
        mails[0].body().contains(invoice["id"].as_str().unwrap()),
        "{}",
        mails[0].data
    );
    assert_eq!(
        mails[0].header("x-correlation-id").as_deref(),
        Some(invoice_correlation.as_str())
    );

    // Each side's trace shows its part and names the other.
    let (code, out_a, err) = cli(&a, &["trace", &correlation]);
    assert_eq!(code, 0, "{err}");
    assert!(out_a.contains("request POST /records"), "{out_a}");
    assert!(
        out_a.contains("published to subject keel.events.record.created with sequence"),
        "{out_a}"
    );
    let (code, out_b, err) = cli(&b, &["trace", &correlation]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out_b.contains("consumed from stream KEEL_EVENTS, sequence"),
        "{out_b}"
    );
    assert!(out_b.contains("notifications.deliver_webhook"), "{out_b}");
    // The sequence A published with is the one B consumed.
    let seq = |text: &str, marker: &str| -> String {
        let at = text.find(marker).unwrap() + marker.len();
        text[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect()
    };
    assert_eq!(
        seq(&out_a, "with sequence "),
        seq(&out_b, "KEEL_EVENTS, sequence ")
    );

    // The relay has nothing left: A's broker row is empty.
    let (code, queues, err) = cli(&a, &["queues", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&queues).unwrap();
    let broker = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["queue"] == "broker")
        .unwrap_or_else(|| panic!("a broker row in {queues}"));
    assert_eq!(broker["ready"], 0);
    drop(b);
    drop(a);
    drop(nats);
}

/// With traces exported on both sides, the caller's W3C trace reaches the webhook B sends:
/// A's publish span rides the message's `traceparent`, B's consumer continues it, and every
/// job after it continues the span that enqueued it.
async fn the_trace_of_a_request_on_a_continues_through_the_broker_to_the_webhook_from_b(
    db: TestDb,
) {
    let nats = NatsServer::start().await;
    let db_b = another_db(&db).await;
    let receiver = HttpReceiver::start().await;
    // Takes the OTLP exports of both deployments (answers 200 to everything).
    let collector = HttpReceiver::start().await;
    let telemetry = format!(
        "\n[telemetry]\notlp_endpoint = {:?}\nexport_interval = \"100ms\"\n",
        collector.url("")
    );
    let a = crate::deployment_a_with(&db, &nats, &telemetry).await;
    let b = crate::deployment_b_with(&db_b, &nats, &a, None, &telemetry).await;
    subscribe(&b, &receiver.url("/hook"), &["record.created"]).await;

    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let response = client()
        .post(a.url("/records"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({ "title": "Traced across", "owner_email": "owner@example.com" }))
        .send()
        .await
        .unwrap();
    expect_json(response, 201).await;
    let hooks = receiver.wait_for(1, WITHIN).await;
    let sent = hooks[0].header("traceparent").unwrap();
    assert!(
        sent.starts_with(&format!("00-{trace_id}-")),
        "the webhook from B continues the caller's trace on A: {sent}"
    );
}
