//! Liveness and readiness: `/healthz` answers while the process runs; `/readyz` only while
//! the database answers too, so a load balancer stops sending traffic during an outage.
//! [`ApiDoc`] describes both for the OpenAPI document.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use events::http::{ApiError, ErrorBody};
use runtime::Runtime;
use serde_json::{Value, json};

/// The health routes' OpenAPI description.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(healthz, readyz))]
pub struct ApiDoc;

/// The health routes.
pub fn routes(runtime: Runtime) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(runtime)
}

/// Liveness: answers while the process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive: `{\"status\": \"ok\"}`.", body = serde_json::Value))
)]
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: answers 200 only while the database answers too (within 2 s).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: `{\"status\": \"ready\", \"database\": \"ok\"}`.", body = serde_json::Value),
        (status = 503, description = "`database_unavailable`: the database is not answering.", body = ErrorBody)
    )
)]
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
