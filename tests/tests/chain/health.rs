//! Liveness and readiness with the database up: `/healthz` and `/readyz` both answer 200;
//! `/openapi.json` serves the API's OpenAPI document with every route.

use tests::app::{AppOptions, expect_json, spawn_app};
use tests::{TestDb, both_backends};

async fn health_and_readiness_answer_200_with_the_database_up(db: TestDb) {
    let app = spawn_app(&db, AppOptions::default()).await;
    let health = expect_json(app.get("/healthz").await, 200).await;
    assert_eq!(health["status"], "ok");
    let ready = expect_json(app.get("/readyz").await, 200).await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["database"], "ok");
    app.shutdown().await;
}

both_backends!(health_and_readiness_answer_200_with_the_database_up);

async fn the_openapi_document_is_served_with_every_route(db: TestDb) {
    let app = spawn_app(&db, AppOptions::default()).await;
    let response = app.get("/openapi.json").await;
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let doc = expect_json(response, 200).await;
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.")
    );
    assert_eq!(doc["info"]["title"], "Keel");
    for (method, path) in app::http::openapi::INTERFACE_ROUTES {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    app.shutdown().await;
}

both_backends!(the_openapi_document_is_served_with_every_route);
