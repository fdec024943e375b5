//! Liveness and readiness: `/healthz` answers while the process runs; `/readyz` only while
//! the database answers too, so a load balancer stops sending traffic during an outage.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use events::http::ApiError;
use runtime::Runtime;
use serde_json::{Value, json};

/// The health routes.
pub fn routes(runtime: Runtime) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(runtime)
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(runtime): State<Runtime>) -> Result<Json<Value>, ApiError> {
    let ping = sqlx::query("SELECT 1").execute(runtime.db().pool());
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => Ok(Json(json!({ "status": "ready", "database": "ok" }))),
        _ => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is not answering",
        )),
    }
}
