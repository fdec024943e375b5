//! The HTTP edge: every module's routes merged into one router, behind the layers every
//! request passes — correlation id, request record, idempotency keys, body limit, panics
//! caught as JSON — plus the operational routes (health, readiness, admin API and dashboard,
//! OpenAPI).

pub mod admin;
pub mod admin_events;
pub mod correlation;
pub mod dashboard;
pub mod health;
pub mod idempotency;
pub mod metrics;
pub mod openapi;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use events::http::ApiError;
use runtime::Runtime;

/// Everything the edge layers need. Cheap to clone (reference counts only): axum clones a
/// layer's state for every request.
#[derive(Debug, Clone)]
pub struct EdgeState {
    /// The runtime (database, clock, admin queries).
    pub runtime: Runtime,
    /// Admin bearer token; `None` disables admin routes.
    pub admin_token: Option<Arc<str>>,
    /// Where mutating requests are recorded for `keel trace`, off the request's path.
    pub requests: runtime::request_log::RequestLog,
    /// The modules served here (`/openapi.json` describes only these).
    pub modules: Arc<[String]>,
}

/// Builds the whole router from the modules' routes.
pub fn router(module_routes: Vec<Router>, state: EdgeState, max_body: usize) -> Router {
    let mut app = Router::new();
    for routes in module_routes {
        app = app.merge(routes);
    }
    app.merge(health::routes(state.runtime.clone()))
        .merge(admin::routes(state.clone()))
        .merge(dashboard::routes(state.clone()))
        .merge(metrics::routes(state.runtime.clone()))
        .merge(openapi::routes(&state.modules))
        .route_layer(axum::middleware::from_fn(metrics::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.runtime.clone(),
            wake_after_commit,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        // A panic becomes a 500 *inside* the idempotency layer, which then frees the key
        // for a retry instead of leaving it claimed forever.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn_with_state(
            state.runtime.clone(),
            idempotency::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state,
            correlation::layer,
        ))
}

/// Runs the handler inside [`Runtime::after_commit`]: the jobs its transaction enqueued
/// wake this process's workers once it has committed, not before (when they would find
/// nothing to claim yet).
async fn wake_after_commit(
    State(runtime): State<Runtime>,
    request: Request,
    next: Next,
) -> Response {
    runtime.after_commit(next.run(request)).await
}

async fn not_found() -> ApiError {
    ApiError::not_found("route_not_found", "no route matches this path")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "an internal error occurred",
    )
    .into_response()
}
