//! Webhooks as a product, through the real app and real receivers: an endpoint answering 410
//! is disabled at once (with a signed alert) and gets what it missed back through `recover`;
//! one failing for longer than `disable_after` is disabled too; a 429/503's `Retry-After` is
//! honoured up to the backoff ceiling; a slow receiver holds only its own slots, and waiting
//! for them spends no attempt; a receiver down for a while gets its deliveries once up; a
//! rotated secret signs beside the old one (checked with the `standardwebhooks` reference
//! verifier) until the grace period ends; custom headers, the payload limit, the delivery
//! log with its filters and retention, and the routes in `/openapi.json`.

use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::{Value, json};
use tests::app::{AppOptions, TestApp, expect_error, expect_json, spawn_app};
use tests::poll::eventually;
use tests::receivers::{HttpReceiver, ReceivedRequest};
use tests::webhook_verify::verify;
use tests::{TestDb, both_backends};

const WITHIN: Duration = Duration::from_secs(20);
const ALERT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Options whose alerts go, signed, to `alerts`.
fn alerting_to(alerts: &HttpReceiver) -> AppOptions {
    AppOptions {
        extra_toml: format!(
            "[alerts]\nwebhook_url = {:?}\nsecret = {ALERT_SECRET:?}\n",
            alerts.url("/alerts")
        ),
        ..AppOptions::default()
    }
}

async fn create_endpoint(app: &TestApp, body: Value) -> (String, String) {
    let created = expect_json(app.post("/webhook-endpoints", &body).await, 201).await;
    (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

async fn endpoint(app: &TestApp, id: &str) -> Value {
    expect_json(app.get(&format!("/webhook-endpoints/{id}")).await, 200).await
}

async fn patch(app: &TestApp, id: &str, body: Value) -> Value {
    let response = app
        .client
        .patch(app.url(&format!("/webhook-endpoints/{id}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_json(response, 200).await
}

async fn deliveries(app: &TestApp, id: &str, query: &str) -> Vec<Value> {
    let page = expect_json(
        app.get(&format!("/webhook-endpoints/{id}/deliveries{query}"))
            .await,
        200,
    )
    .await;
    page["items"].as_array().unwrap().clone()
}

/// Waits until the endpoint's log has `n` deliveries matching `query`, all of them.
async fn wait_for_deliveries(app: &TestApp, id: &str, query: &str, n: usize) -> Vec<Value> {
    eventually(WITHIN, &format!("{n} deliveries{query}"), || async {
        let items = deliveries(app, id, query).await;
        (items.len() >= n).then_some(items)
    })
    .await
}

async fn wait_until_disabled(app: &TestApp, id: &str) -> Value {
    eventually(WITHIN, "the endpoint to be disabled", || async {
        let e = endpoint(app, id).await;
        (e["status"] == "disabled").then_some(e)
    })
    .await
}

fn headers_of(request: &ReceivedRequest) -> HeaderMap {
    request.headers.clone()
}

async fn a_410_disables_the_endpoint_with_a_signed_alert_and_recover_resends_what_it_missed(
    db: TestDb,
) {
    let alerts = HttpReceiver::start().await;
    let receiver = HttpReceiver::start().await;
    receiver.answer(410);
    let app = spawn_app(&db, alerting_to(&alerts)).await;
    let (id, secret) = app.subscribe(&receiver.url("/hooks"), &["*"]).await;

    let first = app.create_record("Gone", "g@example.com").await;
    let gone = receiver.wait_for(1, WITHIN).await;
    assert_eq!(gone[0].answered, 410);
    let disabled = wait_until_disabled(&app, &id).await;
    assert_eq!(disabled["disabled_reason"], "gone");
    assert!(disabled["disabled_at"].is_string());

    // The operator hears of it: a signed alert naming the endpoint.
    let alert = eventually(WITHIN, "the endpoint_disabled alert", || async {
        alerts
            .requests()
            .into_iter()
            .find(|r| r.json()["data"]["kind"] == "webhook_endpoint_disabled")
    })
    .await;
    verify(ALERT_SECRET, &alert).unwrap();
    assert_eq!(alert.json()["data"]["detail"]["endpoint_id"], id.as_str());
    assert_eq!(alert.json()["data"]["detail"]["reason"], "gone");

    // A disabled endpoint gets no new deliveries: the message is logged as skipped.
    let second = app.create_record("Skipped", "s@example.com").await;
    let skipped = wait_for_deliveries(&app, &id, "?status=skipped", 1).await;
    assert_eq!(skipped.len(), 1);
    app.settle(WITHIN).await;
    assert_eq!(receiver.requests().len(), 1, "nothing sent while disabled");
    let failed = deliveries(&app, &id, "?status=failed").await;
    assert_eq!(failed.len(), 1, "the 410 ended its message: {failed:?}");

    // A disabled endpoint cannot be recovered; re-enabled, it can.
    let refused = app
        .post(
            &format!("/webhook-endpoints/{id}/recover"),
            &json!({"since": "2020-01-01T00:00:00Z"}),
        )
        .await;
    expect_error(refused, 409, "webhook_endpoint_disabled").await;
    receiver.answer(200);
    let enabled = patch(&app, &id, json!({"enabled": true})).await;
    assert_eq!(enabled["status"], "enabled");
    assert_eq!(enabled["disabled_reason"], Value::Null);
    let recovering = expect_json(
        app.post(
            &format!("/webhook-endpoints/{id}/recover"),
            &json!({"since": "2020-01-01T00:00:00Z"}),
        )
        .await,
        202,
    )
    .await;
    assert_eq!(recovering["messages"], 2);

    let requests = receiver.wait_for(3, WITHIN).await;
    let resent: Vec<&ReceivedRequest> = requests[1..].iter().collect();
    for request in &resent {
        verify(&secret, request).unwrap();
    }
    let ids: Vec<&str> = resent
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert!(
        ids.contains(&gone[0].header("webhook-id").unwrap()),
        "the failed message keeps its webhook-id: {ids:?}"
    );
    let records: Vec<Value> = resent
        .iter()
        .map(|r| r.json()["data"]["record_id"].clone())
        .collect();
    assert!(records.contains(&first["id"]) && records.contains(&second["id"]));
    let succeeded = wait_for_deliveries(&app, &id, "?status=succeeded", 2).await;

    // The log keeps every attempt: the 410, then the 200.
    let first_delivery = succeeded
        .iter()
        .find(|d| d["message_id"] == gone[0].header("webhook-id").unwrap())
        .unwrap();
    let detail = expect_json(
        app.get(&format!(
            "/webhook-deliveries/{}",
            first_delivery["id"].as_str().unwrap()
        ))
        .await,
        200,
    )
    .await;
    let attempts = detail["attempt_log"].as_array().unwrap();
    let codes: Vec<&Value> = attempts.iter().map(|a| &a["status_code"]).collect();
    assert_eq!(codes, [&json!(410), &json!(200)]);
    assert_eq!(attempts[0]["error"], "receiver answered 410");
    assert_eq!(attempts[1]["succeeded"], true);
    assert!(attempts[1]["duration_ms"].is_i64());
    app.settle(WITHIN).await;
    assert_eq!(receiver.requests().len(), 3, "each missed message once");
    app.shutdown().await;
}

async fn an_endpoint_failing_for_longer_than_disable_after_is_disabled(db: TestDb) {
    let alerts = HttpReceiver::start().await;
    let port = HttpReceiver::down().await;
    let app = spawn_app(
        &db,
        AppOptions {
            max_attempts: Some(100),
            backoff: vec!["100ms".to_owned()],
            webhooks_toml: "disable_after = \"1s\"\n".to_owned(),
            ..alerting_to(&alerts)
        },
    )
    .await;
    let (id, _) = app
        .subscribe(&format!("http://127.0.0.1:{port}/hook"), &["*"])
        .await;
    app.create_record("Never answered", "n@example.com").await;

    let disabled = wait_until_disabled(&app, &id).await;
    assert_eq!(disabled["disabled_reason"], "failing");
    let alert = eventually(WITHIN, "the endpoint_disabled alert", || async {
        alerts
            .requests()
            .into_iter()
            .find(|r| r.json()["data"]["kind"] == "webhook_endpoint_disabled")
    })
    .await;
    verify(ALERT_SECRET, &alert).unwrap();
    assert_eq!(alert.json()["data"]["detail"]["reason"], "failing");
    // Its pending retry is skipped, not sent: the log says so.
    wait_for_deliveries(&app, &id, "?status=skipped", 1).await;
    app.shutdown().await;
}

async fn retry_after_on_429_and_503_is_honoured_up_to_the_backoff_ceiling(db: TestDb) {
    let polite = HttpReceiver::start().await;
    let greedy = HttpReceiver::start().await;
    polite.answer_next_retry_after(1, 429, "1");
    greedy.answer_next_retry_after(1, 503, "3600");
    let app = spawn_app(
        &db,
        AppOptions {
            // First retry after 50 ms by the schedule; its ceiling is 2 s.
            backoff: vec!["50ms".to_owned(), "2s".to_owned()],
            ..AppOptions::default()
        },
    )
    .await;
    app.subscribe(&polite.url("/"), &["*"]).await;
    app.subscribe(&greedy.url("/"), &["*"]).await;
    app.create_record("Throttled", "t@example.com").await;

    let polite = polite.wait_for(2, WITHIN).await;
    let waited = polite[1].at - polite[0].at;
    assert!(
        waited >= Duration::from_millis(900),
        "Retry-After: 1 honoured, not the 50 ms schedule: {waited:?}"
    );
    let greedy = greedy.wait_for(2, WITHIN).await;
    let waited = greedy[1].at - greedy[0].at;
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_secs(15),
        "Retry-After: 3600 clamped to the 2 s ceiling: {waited:?}"
    );
    assert_eq!(polite[1].answered, 200);
    assert_eq!(
        polite[0].header("webhook-id"),
        polite[1].header("webhook-id")
    );
    app.shutdown().await;
}

async fn a_slow_receiver_holds_only_its_own_slots_and_waiting_for_them_spends_no_attempt(
    db: TestDb,
) {
    let slow = HttpReceiver::start().await;
    slow.delay(Duration::from_millis(600));
    let fast = HttpReceiver::start().await;
    // One attempt only: a delivery that spent one while waiting for its turn would die.
    let app = spawn_app(
        &db,
        AppOptions {
            max_attempts: Some(1),
            ..AppOptions::default()
        },
    )
    .await;
    let (slow_id, _) = create_endpoint(
        &app,
        json!({"url": slow.url("/slow"), "events": ["*"], "max_in_flight": 1}),
    )
    .await;
    app.subscribe(&fast.url("/fast"), &["*"]).await;
    for i in 0..4 {
        app.create_record(&format!("Record {i}"), "o@example.com")
            .await;
    }

    fast.wait_for(4, WITHIN).await;
    assert!(
        slow.requests().len() < 4,
        "the fast receiver was served while the slow one was still busy"
    );
    let slow_requests = slow.wait_for(4, WITHIN).await;
    assert!(
        slow_requests.iter().all(|r| r.concurrent == 1),
        "max_in_flight = 1: {:?}",
        slow_requests
            .iter()
            .map(|r| r.concurrent)
            .collect::<Vec<_>>()
    );
    let logged = wait_for_deliveries(&app, &slow_id, "?status=succeeded", 4).await;
    assert!(logged.iter().all(|d| d["attempts"] == 1), "{logged:?}");
    let dead = app.admin_get("/admin/dead-letters").await;
    assert_eq!(dead["items"].as_array().map_or(0, Vec::len), 0, "{dead}");
    app.shutdown().await;
}

async fn a_receiver_down_for_a_while_gets_its_delivery_once_up_and_stays_enabled(db: TestDb) {
    let port = HttpReceiver::down().await;
    let app = spawn_app(
        &db,
        AppOptions {
            max_attempts: Some(100),
            backoff: vec!["200ms".to_owned()],
            ..AppOptions::default()
        },
    )
    .await;
    let (id, secret) = app
        .subscribe(&format!("http://127.0.0.1:{port}/hook"), &["*"])
        .await;
    app.create_record("Patience", "p@example.com").await;

    let failing = eventually(WITHIN, "two failed attempts", || async {
        let items = deliveries(&app, &id, "?status=failing").await;
        items
            .into_iter()
            .find(|d| d["attempts"].as_i64().unwrap_or(0) >= 2)
    })
    .await;
    let receiver = HttpReceiver::start_on(port).await;
    let requests = receiver.wait_for(1, WITHIN).await;
    verify(&secret, &requests[0]).unwrap();
    let done = wait_for_deliveries(&app, &id, "?status=succeeded", 1).await;
    assert_eq!(done[0]["id"], failing["id"]);
    let detail = expect_json(
        app.get(&format!(
            "/webhook-deliveries/{}",
            done[0]["id"].as_str().unwrap()
        ))
        .await,
        200,
    )
    .await;
    let attempts = detail["attempt_log"].as_array().unwrap();
    assert!(attempts.len() >= 3, "{detail}");
    assert_eq!(attempts[0]["error"], "connection refused");
    assert_eq!(attempts[0]["status_code"], Value::Null);
    assert_eq!(attempts.last().unwrap()["status_code"], 200);
    assert_eq!(endpoint(&app, &id).await["status"], "enabled");
    app.shutdown().await;
}

async fn during_a_rotation_deliveries_carry_both_signatures_until_the_grace_period_ends(
    db: TestDb,
) {
    let receiver = HttpReceiver::start().await;
    let app = spawn_app(
        &db,
        AppOptions {
            webhooks_toml: "rotation_grace = \"3s\"\n".to_owned(),
            ..AppOptions::default()
        },
    )
    .await;
    let (id, old) = app.subscribe(&receiver.url("/hooks"), &["*"]).await;
    let rotated = expect_json(
        app.post(
            &format!("/webhook-endpoints/{id}/rotate-secret"),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let listed = app.get("/webhook-endpoints").await.text().await.unwrap();
    assert!(!listed.contains(&new) && !listed.contains(&old), "{listed}");

    app.create_record("Rotating", "r@example.com").await;
    let request = receiver.wait_for(1, WITHIN).await.remove(0);
    let signatures: Vec<&str> = request
        .header("webhook-signature")
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!(signatures.len(), 2, "{signatures:?}");
    assert!(signatures.iter().all(|s| s.starts_with("v1,")));
    // The reference verifier accepts the delivery with either secret, and not with another.
    for secret in [&old, &new] {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&request.body, &headers_of(&request))
            .unwrap_or_else(|e| panic!("verifying with {}: {e}", &secret[..10]));
    }
    let stranger = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    assert!(
        standardwebhooks::Webhook::new(stranger)
            .unwrap()
            .verify(&request.body, &headers_of(&request))
            .is_err()
    );

    // After the grace period only the new secret signs.
    let late = eventually(WITHIN, "a delivery signed once", || async {
        let seen = receiver.requests().len();
        app.create_record("After the grace", "a@example.com").await;
        let requests = receiver.wait_for(seen + 1, WITHIN).await;
        let last = requests.last().unwrap().clone();
        (!last.header("webhook-signature").unwrap().contains(' ')).then_some(last)
    })
    .await;
    standardwebhooks::Webhook::new(&new)
        .unwrap()
        .verify(&late.body, &headers_of(&late))
        .unwrap();
    assert!(
        standardwebhooks::Webhook::new(&old)
            .unwrap()
            .verify(&late.body, &headers_of(&late))
            .is_err()
    );
    assert_eq!(
        endpoint(&app, &id).await["previous_secret_until"],
        rotated["previous_secret_until"]
    );
    app.shutdown().await;
}

async fn custom_headers_go_under_the_signed_ones_and_an_oversized_body_is_never_sent(db: TestDb) {
    let receiver = HttpReceiver::start().await;
    let app = spawn_app(
        &db,
        AppOptions {
            max_attempts: Some(1),
            webhooks_toml: "max_payload_bytes = 250\n".to_owned(),
            ..AppOptions::default()
        },
    )
    .await;
    let refused = app
        .post(
            "/webhook-endpoints",
            &json!({"url": receiver.url("/"), "events": ["*"], "headers": {"Webhook-Signature": "v1,forged"}}),
        )
        .await;
    expect_error(refused, 422, "invalid_header").await;
    let (id, secret) = create_endpoint(
        &app,
        json!({"url": receiver.url("/"), "events": ["*"], "headers": {"X-Tenant": "acme"}, "description": "tenant acme"}),
    )
    .await;
    assert_eq!(
        endpoint(&app, &id).await["headers"],
        json!({"x-tenant": "***"}),
        "header values may be credentials: answers name the headers only"
    );

    app.create_record("Small", "s@example.com").await;
    let request = receiver.wait_for(1, WITHIN).await.remove(0);
    assert_eq!(request.header("x-tenant"), Some("acme"));
    verify(&secret, &request).unwrap();

    app.create_record(&"x".repeat(190), "big@example.com").await;
    let failed = wait_for_deliveries(&app, &id, "?status=failed", 1).await;
    let detail = expect_json(
        app.get(&format!(
            "/webhook-deliveries/{}",
            failed[0]["id"].as_str().unwrap()
        ))
        .await,
        200,
    )
    .await;
    let error = detail["attempt_log"][0]["error"].as_str().unwrap();
    assert!(error.contains("max_payload_bytes"), "{error}");
    app.settle(WITHIN).await;
    assert_eq!(
        receiver.requests().len(),
        1,
        "the oversized body was never sent"
    );
    app.shutdown().await;
}

async fn the_delivery_log_filters_pages_and_is_pruned_by_its_retention(db: TestDb) {
    let receiver = HttpReceiver::start().await;
    let app = spawn_app(
        &db,
        AppOptions {
            webhooks_toml: "delivery_log_retention = \"3s\"\n".to_owned(),
            ..AppOptions::default()
        },
    )
    .await;
    let (id, _) = app.subscribe(&receiver.url("/"), &["*"]).await;
    for title in ["one", "two", "three"] {
        app.create_record(title, "l@example.com").await;
    }
    let all = wait_for_deliveries(&app, &id, "?status=succeeded", 3).await;
    assert!(deliveries(&app, &id, "?status=failed").await.is_empty());
    assert!(
        deliveries(&app, &id, "?until=2000-01-01T00:00:00Z")
            .await
            .is_empty()
    );

    let first = expect_json(
        app.get(&format!("/webhook-endpoints/{id}/deliveries?limit=2"))
            .await,
        200,
    )
    .await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = expect_json(
        app.get(&format!(
            "/webhook-endpoints/{id}/deliveries?limit=2&cursor={cursor}"
        ))
        .await,
        200,
    )
    .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["next_cursor"], Value::Null);
    expect_error(
        app.get(&format!(
            "/webhook-endpoints/{id}/deliveries?since=yesterday"
        ))
        .await,
        422,
        "invalid_time",
    )
    .await;

    // The leader prunes the log after its own retention.
    let some = all[0]["id"].as_str().unwrap().to_owned();
    eventually(WITHIN, "the delivery to be pruned", || async {
        let response = app.get(&format!("/webhook-deliveries/{some}")).await;
        (response.status() == 404).then_some(())
    })
    .await;
    app.shutdown().await;
}

async fn new_routes_are_in_openapi_and_ipv4_translated_addresses_are_refused(db: TestDb) {
    let app = spawn_app(
        &db,
        AppOptions {
            allow_private_targets: false,
            ..AppOptions::default()
        },
    )
    .await;
    let doc = expect_json(app.get("/openapi.json").await, 200).await;
    for path in [
        "/webhook-endpoints/{id}",
        "/webhook-endpoints/{id}/rotate-secret",
        "/webhook-endpoints/{id}/recover",
        "/webhook-endpoints/{id}/deliveries",
        "/webhook-deliveries/{id}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    assert!(doc["paths"]["/webhook-endpoints/{id}"]["patch"]["responses"]["422"].is_object());
    for url in [
        "http://[::ffff:0:127.0.0.1]/hook",
        "http://[::ffff:0:a9fe:a9fe]/hook",
    ] {
        let refused = app
            .post("/webhook-endpoints", &json!({"url": url, "events": ["*"]}))
            .await;
        expect_error(refused, 422, "private_target").await;
    }
    app.shutdown().await;
}

both_backends!(
    a_410_disables_the_endpoint_with_a_signed_alert_and_recover_resends_what_it_missed,
    an_endpoint_failing_for_longer_than_disable_after_is_disabled,
    retry_after_on_429_and_503_is_honoured_up_to_the_backoff_ceiling,
    a_slow_receiver_holds_only_its_own_slots_and_waiting_for_them_spends_no_attempt,
    a_receiver_down_for_a_while_gets_its_delivery_once_up_and_stays_enabled,
    during_a_rotation_deliveries_carry_both_signatures_until_the_grace_period_ends,
    custom_headers_go_under_the_signed_ones_and_an_oversized_body_is_never_sent,
    the_delivery_log_filters_pages_and_is_pruned_by_its_retention,
    new_routes_are_in_openapi_and_ipv4_translated_addresses_are_refused,
);
