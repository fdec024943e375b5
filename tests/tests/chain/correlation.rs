//! Every response carries `x-correlation-id`: the caller's own, else the trace id of its W3C
//! `traceparent`, else a new UUID — on successes and errors alike.

use serde_json::json;
use tests::app::{AppOptions, TestApp, spawn_app};
use tests::{TestDb, both_backends};
use uuid::Uuid;

fn correlation_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-correlation-id")
        .unwrap_or_else(|| panic!("{} has no x-correlation-id", response.url()))
        .to_str()
        .unwrap()
        .to_owned()
}

async fn get_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> String {
    let mut request = app.client.get(app.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    correlation_of(&request.send().await.unwrap())
}

async fn every_response_carries_the_callers_correlation_id_or_a_new_one(db: TestDb) {
    let app = spawn_app(&db, AppOptions::default()).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let unknown = format!("/records/{}", Uuid::now_v7());

    for path in [
        "/healthz",
        "/records",
        unknown.as_str(),
        "/no-such-route",
        "/records/x",
    ] {
        assert_eq!(
            get_with(&app, path, &[("x-correlation-id", "order-42")]).await,
            "order-42",
            "{path} echoes the caller's id"
        );
        assert_eq!(
            get_with(&app, path, &[("traceparent", traceparent)]).await,
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "{path} adopts the traceparent's trace id"
        );
        assert_eq!(
            get_with(
                &app,
                path,
                &[
                    ("x-correlation-id", "order-42"),
                    ("traceparent", traceparent)
                ]
            )
            .await,
            "order-42",
            "{path}: the explicit id wins"
        );
        let fresh = get_with(&app, path, &[]).await;
        let other = get_with(&app, path, &[]).await;
        Uuid::parse_str(&fresh).unwrap_or_else(|e| panic!("{path}: {fresh:?} is not a UUID: {e}"));
        assert_ne!(fresh, other, "{path}: each request starts its own chain");
        let invalid = get_with(&app, path, &[("traceparent", "00-garbage")]).await;
        Uuid::parse_str(&invalid).unwrap_or_else(|e| panic!("{path}: {invalid:?}: {e}"));
    }

    // POSTs, created or refused, and admin answers too.
    let response = app
        .client
        .post(app.url("/records"))
        .header("x-correlation-id", "post-1")
        .json(&json!({ "title": "T", "owner_email": "t@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(correlation_of(&response), "post-1");
    let response = app
        .client
        .post(app.url("/records"))
        .header("x-correlation-id", "post-2")
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(correlation_of(&response), "post-2");
    assert_eq!(
        get_with(&app, "/admin/queues", &[("x-correlation-id", "admin-1")]).await,
        "admin-1",
        "a 401 carries it too"
    );
    app.shutdown().await;
}

both_backends!(every_response_carries_the_callers_correlation_id_or_a_new_one);
