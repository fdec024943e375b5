//! Tests of the routes, through the router on an in-memory database.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::store::tests::test_db;

/// Every test here runs at one fixed instant.
fn fixed_clock() -> Arc<events::testing::FixedClock> {
    events::testing::FixedClock::at_millis(1_764_150_000_000)
}

async fn app(allow_private_targets: bool) -> Router {
    routes(EndpointsState {
        db: test_db().await,
        clock: fixed_clock(),
        jobs: Arc::new(events::testing::RecordingJobQueue::default()),
        config: NotificationsConfig {
            allow_private_targets,
            ..NotificationsConfig::default()
        },
    })
}

async fn call(app: &Router, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(json) => {
            request = request.header("content-type", "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, json)
}

#[tokio::test]
async fn creating_an_endpoint_returns_its_secret_once_and_lists_it_without() {
    let app = app(false).await;
    let (status, created) = call(
        &app,
        "POST",
        "/webhook-endpoints",
        Some(json!({"url": "https://hooks.example.com/keel", "events": ["record.created", "invoice.paid"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["url"], "https://hooks.example.com/keel");
    assert_eq!(created["events"], json!(["record.created", "invoice.paid"]));
    assert_eq!(created["created_at"], "2025-11-26T09:40:00.000Z");
    let secret = created["secret"].as_str().unwrap();
    assert!(WebhookSecret::parse(secret).is_ok());

    let (status, listed) = call(&app, "GET", "/webhook-endpoints", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        listed,
        json!({"items": [{
            "id": created["id"],
            "url": "https://hooks.example.com/keel",
            "events": ["record.created", "invoice.paid"],
            "description": "",
            "status": "enabled",
            "disabled_reason": null,
            "disabled_at": null,
            "previous_secret_until": null,
            "headers": {},
            "max_in_flight": 4,
            "rate_limit": null,
            "created_at": "2025-11-26T09:40:00.000Z",
        }]})
    );
    assert!(!listed.to_string().contains(secret));
}

#[tokio::test]
async fn an_endpoint_is_edited_disabled_re_enabled_and_rotated_without_listing_secrets() {
    let app = app(false).await;
    let (_, created) = call(
        &app,
        "POST",
        "/webhook-endpoints",
        Some(json!({"url": "https://a.example/", "events": ["*"], "rate_limit": 5})),
    )
    .await;
    let uri = format!("/webhook-endpoints/{}", created["id"].as_str().unwrap());

    let (status, patched) = call(
        &app,
        "PATCH",
        &uri,
        Some(json!({"url": "https://b.example/", "events": ["invoice.paid"], "description": "billing", "enabled": false, "headers": {"X-Tenant": "acme"}, "rate_limit": null})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["url"], "https://b.example/");
    assert_eq!(patched["events"], json!(["invoice.paid"]));
    assert_eq!(patched["description"], "billing");
    assert_eq!(patched["status"], "disabled");
    assert_eq!(patched["disabled_reason"], "manual");
    assert_eq!(patched["disabled_at"], "2025-11-26T09:40:00.000Z");
    assert_eq!(patched["headers"], json!({"x-tenant": "***"}));
    assert_eq!(patched["rate_limit"], Value::Null);

    let (status, refused) = call(
        &app,
        "PATCH",
        &uri,
        Some(json!({"headers": {"webhook-signature": "v1,forged"}})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused["error"]["code"], "invalid_header");

    let (status, recover) = call(
        &app,
        "POST",
        &format!("{uri}/recover"),
        Some(json!({"since": "2025-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(recover["error"]["code"], "webhook_endpoint_disabled");

    let (_, enabled) = call(&app, "PATCH", &uri, Some(json!({"enabled": true}))).await;
    assert_eq!(enabled["status"], "enabled");
    assert_eq!(enabled["disabled_reason"], Value::Null);

    let (status, rotated) = call(&app, "POST", &format!("{uri}/rotate-secret"), None).await;
    assert_eq!(status, StatusCode::OK);
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, created["secret"].as_str().unwrap());
    assert_eq!(rotated["previous_secret_until"], "2025-11-27T09:40:00.000Z");
    let (_, read) = call(&app, "GET", &uri, None).await;
    assert_eq!(read["previous_secret_until"], "2025-11-27T09:40:00.000Z");
    assert!(!read.to_string().contains(new_secret));
    assert!(
        !read
            .to_string()
            .contains(created["secret"].as_str().unwrap())
    );

    let (status, missing) = call(
        &app,
        "GET",
        &format!("/webhook-deliveries/{}", Uuid::now_v7()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["code"], "webhook_delivery_not_found");
    let (status, bad) = call(&app, "GET", &format!("{uri}/deliveries?status=lost"), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad["error"]["code"], "invalid_status");
}

#[tokio::test]
async fn a_caller_chosen_secret_is_kept() {
    let app = app(false).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (status, created) = call(
        &app,
        "POST",
        "/webhook-endpoints",
        Some(json!({"url": "https://a.example/", "events": ["*"], "secret": secret})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["secret"], secret);
    assert_eq!(created["events"], json!(["*"]));
}

#[tokio::test]
async fn invalid_input_gets_a_422_with_a_stable_code() {
    let app = app(false).await;
    let cases = [
        (
            json!({"url": "ftp://a.example/", "events": ["*"]}),
            "invalid_url",
        ),
        (
            json!({"url": "https://u:p@a.example/", "events": ["*"]}),
            "invalid_url",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "events": ["*"]}),
            "private_target",
        ),
        (
            json!({"url": "http://[::1]/", "events": ["*"]}),
            "private_target",
        ),
        (
            json!({"url": "https://a.example/", "events": ["record.deleted"]}),
            "unknown_event",
        ),
        (
            json!({"url": "https://a.example/", "events": []}),
            "unknown_event",
        ),
        (
            json!({"url": "https://a.example/", "events": ["*"], "secret": "nope"}),
            "invalid_secret",
        ),
        (
            json!({"url": "https://a.example/", "events": ["*"], "extra": 1}),
            "invalid_body",
        ),
        (json!({"url": "https://a.example/"}), "invalid_body"),
        (json!({"url": 5, "events": ["*"]}), "invalid_body"),
    ];
    for (body, code) in cases {
        let (status, error) = call(&app, "POST", "/webhook-endpoints", Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(error["error"]["code"], code, "{body}");
        assert!(error["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn private_literal_targets_are_accepted_when_allowed() {
    let app = app(true).await;
    let (status, _) = call(
        &app,
        "POST",
        "/webhook-endpoints",
        Some(json!({"url": "http://127.0.0.1:9/", "events": ["*"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn deleting_removes_the_endpoint_and_a_second_delete_is_404() {
    let app = app(false).await;
    let (_, created) = call(
        &app,
        "POST",
        "/webhook-endpoints",
        Some(json!({"url": "https://a.example/", "events": ["*"]})),
    )
    .await;
    let uri = format!("/webhook-endpoints/{}", created["id"].as_str().unwrap());

    let (status, body) = call(&app, "DELETE", &uri, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    let (_, listed) = call(&app, "GET", "/webhook-endpoints", None).await;
    assert_eq!(listed, json!({"items": []}));

    let (status, error) = call(&app, "DELETE", &uri, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"]["code"], "webhook_endpoint_not_found");

    let (status, error) = call(&app, "DELETE", "/webhook-endpoints/not-a-uuid", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["code"], "invalid_path");
}
