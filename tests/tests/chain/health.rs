//! Liveness and readiness with the database up: `/healthz` and `/readyz` both answer 200.

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
