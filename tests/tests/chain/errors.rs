//! Bad input never gets a 500 or a plain-text answer: every case answers the error contract
//! `{"error": {"code", "message"}}` with its status. And an `Idempotency-Key` makes a repeated
//! POST harmless.

use serde_json::json;
use tests::app::{ADMIN_TOKEN, AppOptions, TestApp, expect_error, expect_json, spawn_app};
use tests::{TestDb, both_backends};
use uuid::Uuid;

async fn post_raw(app: &TestApp, path: &str, body: &'static str) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn every_bad_input_answers_its_json_error_with_the_right_status(db: TestDb) {
    let app = spawn_app(&db, AppOptions::default()).await;
    let record = app.create_record("Valid", "valid@example.com").await;
    let unknown = Uuid::now_v7();

    // Bodies.
    let r = post_raw(&app, "/records", r#"{"title": "x", "owner_email""#).await;
    expect_error(r, 400, "malformed_json").await;
    let r = post_raw(
        &app,
        "/records",
        r#"{"title": "x", "owner_email": "o@example.com", "colour": "red"}"#,
    )
    .await;
    expect_error(r, 422, "invalid_body").await;
    let r = post_raw(
        &app,
        "/records",
        r#"{"title": 5, "owner_email": "o@example.com"}"#,
    )
    .await;
    expect_error(r, 422, "invalid_body").await;
    let r = post_raw(&app, "/records", r#"{"title": "x"}"#).await;
    expect_error(r, 422, "invalid_body").await;
    let r = app
        .post(
            "/records",
            &json!({ "title": "x", "owner_email": "not an email" }),
        )
        .await;
    let message = expect_error(r, 422, "invalid_owner_email").await;
    assert!(!message.contains("not an email"), "{message}");
    let r = app
        .post(
            "/records",
            &json!({ "title": "  ", "owner_email": "o@example.com" }),
        )
        .await;
    expect_error(r, 422, "invalid_title").await;

    let invoice = |amount: i64, currency: &str| json!({ "record_id": record["id"], "amount_cents": amount, "currency": currency });
    expect_error(
        app.post("/invoices", &invoice(100, "EUX")).await,
        422,
        "invalid_currency",
    )
    .await;
    expect_error(
        app.post("/invoices", &invoice(100, "euro")).await,
        422,
        "invalid_currency",
    )
    .await;
    expect_error(
        app.post("/invoices", &invoice(0, "EUR")).await,
        422,
        "invalid_amount",
    )
    .await;
    expect_error(
        app.post("/invoices", &invoice(-5, "EUR")).await,
        422,
        "invalid_amount",
    )
    .await;
    let r = app
        .post(
            "/invoices",
            &json!({ "record_id": unknown, "amount_cents": 100, "currency": "EUR" }),
        )
        .await;
    expect_error(r, 422, "record_not_found").await;
    let r = app
        .post(
            "/webhook-endpoints",
            &json!({ "url": "ftp://example.com", "events": ["*"] }),
        )
        .await;
    expect_error(r, 422, "invalid_url").await;
    let r = app
        .post(
            "/webhook-endpoints",
            &json!({ "url": "https://example.com/h", "events": ["record.deleted"] }),
        )
        .await;
    expect_error(r, 422, "unknown_event").await;

    // Ids and routes.
    expect_error(app.get("/records/not-a-uuid").await, 422, "invalid_path").await;
    expect_error(app.get("/imports/42").await, 422, "invalid_path").await;
    let r = app.post("/invoices/not-a-uuid/pay", &json!({})).await;
    expect_error(r, 422, "invalid_path").await;
    let r = app.get(&format!("/records/{unknown}")).await;
    expect_error(r, 404, "record_not_found").await;
    let r = app.get(&format!("/invoices/{unknown}")).await;
    expect_error(r, 404, "invoice_not_found").await;
    let r = app
        .post(&format!("/invoices/{unknown}/pay"), &json!({}))
        .await;
    expect_error(r, 404, "invoice_not_found").await;
    let r = app.get(&format!("/imports/{unknown}")).await;
    expect_error(r, 404, "import_not_found").await;
    let r = app
        .client
        .delete(app.url(&format!("/webhook-endpoints/{unknown}")))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "webhook_endpoint_not_found").await;
    expect_error(app.get("/no-such-route").await, 404, "route_not_found").await;
    let r = app.client.delete(app.url("/records")).send().await.unwrap();
    expect_error(r, 405, "method_not_allowed").await;
    let r = app.get("/records?limit=0").await;
    expect_error(r, 422, "invalid_limit").await;
    let r = app.get("/records?limit=").await;
    expect_error(r, 422, "invalid_limit").await;

    // Size: a JSON body over the limit (1 MiB by default).
    let huge = json!({
        "title": "big",
        "owner_email": "o@example.com",
        "attributes": { "blob": "x".repeat(2 << 20) },
    });
    // Its own client: the server may close a connection whose body it refused to read, and
    // a pooled connection closed that way would fail the next request of this test.
    let r = tests::app::client()
        .post(app.url("/records"))
        .json(&huge)
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "payload_too_large").await;

    // Admin routes.
    let r = app.get("/admin/queues").await;
    expect_error(r, 401, "unauthorized").await;
    let r = app
        .client
        .get(app.url("/admin/dead-letters"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unauthorized").await;
    let r = app
        .client
        .post(app.url(&format!("/admin/dead-letters/{unknown}/replay")))
        .header("authorization", format!("Basic {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unauthorized").await;

    // Nothing above created a record.
    let page = expect_json(app.get("/records").await, 200).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    app.shutdown().await;
}

async fn an_idempotency_key_replays_the_first_answer_and_refuses_a_different_body(db: TestDb) {
    let app = spawn_app(&db, AppOptions::default()).await;
    let body = json!({ "title": "Once", "owner_email": "once@example.com" });
    let send = |body: serde_json::Value, key: &'static str| {
        let request = app
            .client
            .post(app.url("/records"))
            .header("idempotency-key", key)
            .json(&body);
        async move { request.send().await.unwrap() }
    };

    let first = expect_json(send(body.clone(), "key-1").await, 201).await;
    let second = expect_json(send(body.clone(), "key-1").await, 201).await;
    assert_eq!(first, second, "the same answer, the same record");

    let other = json!({ "title": "Twice", "owner_email": "once@example.com" });
    expect_error(send(other, "key-1").await, 422, "idempotency_key_reused").await;

    // The same body under another key is another request.
    let third = expect_json(send(body, "key-2").await, 201).await;
    assert_ne!(first["id"], third["id"]);

    let page = expect_json(app.get("/records").await, 200).await;
    let ids: Vec<&serde_json::Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids, [&first["id"], &third["id"]], "{page}");
    app.shutdown().await;
}

both_backends!(
    every_bad_input_answers_its_json_error_with_the_right_status,
    an_idempotency_key_replays_the_first_answer_and_refuses_a_different_body,
);
