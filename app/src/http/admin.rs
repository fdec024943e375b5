//! The admin API: queues, schedules, dead letters, replay and traces — the same answers as the CLI,
//! behind `Authorization: Bearer <admin_token>`. Without a configured token the routes are
//! disabled (403), never open. [`ApiDoc`] describes the JSON routes for the OpenAPI document
//! (the HTML dashboard is not part of it).

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use events::http::{ApiError, ApiPath, ApiQuery, ErrorBody};
use runtime::RuntimeError;
use runtime::admin::{JobRecord, QueueStats};
use runtime::trace::Trace;
use serde::Deserialize;
use serde_json::{Value, json};

use super::EdgeState;

/// The admin routes' OpenAPI description; the app's document declares the `admin_token`
/// bearer scheme they require.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(
    queues,
    schedules,
    dead_letters,
    dead_letter,
    purge,
    groups,
    replay_group,
    replay,
    trace
))]
pub struct ApiDoc;

/// The admin routes.
pub fn routes(state: EdgeState) -> Router {
    Router::new()
        .route("/admin/queues", get(queues))
        .route("/admin/schedules", get(schedules))
        .route("/admin/dead-letters", get(dead_letters))
        .route("/admin/dead-letters/{id}", get(dead_letter).delete(purge))
        .route("/admin/dead-letter-groups", get(groups))
        .route("/admin/dead-letter-groups/{id}/replay", post(replay_group))
        .route("/admin/dead-letters/{id}/replay", post(replay))
        .route("/admin/traces/{correlation_id}", get(trace))
        .merge(super::admin_events::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state)
}

/// Refuses requests without the admin bearer token (compared in constant time).
async fn require_token(
    State(state): State<EdgeState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(expected) = state.admin_token.as_deref() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "admin routes are disabled: set KEEL_ADMIN_TOKEN or [http] admin_token",
        ));
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <admin token>` header is required",
        ));
    }
    Ok(next.run(request).await)
}

/// Compares without an early exit, so timing reveals nothing about the token.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

/// Maps runtime failures onto the HTTP error contract.
pub fn runtime_error(e: RuntimeError) -> ApiError {
    match e {
        RuntimeError::NotFound(message) => ApiError::not_found("not_found", message),
        RuntimeError::Database(db) => ApiError::from_database(&db),
        other => {
            tracing::error!(error = %other, "admin query failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "an internal error occurred",
            )
        }
    }
}

/// Per queue: ready, scheduled, reserved (claimed ahead, no attempt spent), running, retrying and dead jobs, and the age of the oldest ready one.
#[utoipa::path(
    get,
    path = "/admin/queues",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "`{\"queues\": [...]}`, as `keel queues --json`; the `events` queue lists its unfinished replays and backfills under `replays`.", body = serde_json::Value),
        (status = 401, description = "`unauthorized`: no valid `Authorization: Bearer <admin token>` header.", body = ErrorBody),
        (status = 403, description = "`admin_disabled`: no admin token is configured.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn queues(State(state): State<EdgeState>) -> Result<Json<Value>, ApiError> {
    let rt = &state.runtime;
    let names: Vec<String> = rt.config().queues.keys().cloned().collect();
    let stats: Vec<QueueStats> = runtime::admin::queue_stats(rt.db(), rt.time(), &names)
        .await
        .map_err(runtime_error)?;
    let replays = runtime::replay::active(rt.db())
        .await
        .map_err(runtime_error)?;
    let queues = runtime::replay::with_replays(&stats, &replays)
        .map_err(|e| runtime_error(runtime::RuntimeError::Wiring(e.to_string())))?;
    Ok(Json(json!({ "queues": queues })))
}

/// Scheduled jobs: expression, zone, next run, last run and the last job's outcome.
#[utoipa::path(
    get,
    path = "/admin/schedules",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "`{\"schedules\": [...]}`, as `keel schedules --json`.", body = serde_json::Value),
        (status = 401, description = "`unauthorized`: no valid `Authorization: Bearer <admin token>` header.", body = ErrorBody),
        (status = 403, description = "`admin_disabled`: no admin token is configured.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn schedules(State(state): State<EdgeState>) -> Result<Json<Value>, ApiError> {
    let list = state
        .runtime
        .schedule_statuses()
        .await
        .map_err(runtime_error)?;
    Ok(Json(json!({ "schedules": list })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadQuery {
    queue: Option<String>,
}

/// Dead letters: jobs that ran out of attempts.
#[utoipa::path(
    get,
    path = "/admin/dead-letters",
    tag = "admin",
    security(("admin_token" = [])),
    params(("queue" = Option<String>, Query, description = "Only this queue's dead letters.")),
    responses(
        (status = 200, description = "`{\"items\": [...]}`, as `keel dead list --json`.", body = serde_json::Value),
        (status = 401, description = "`unauthorized`: no valid `Authorization: Bearer <admin token>` header.", body = ErrorBody),
        (status = 403, description = "`admin_disabled`: no admin token is configured.", body = ErrorBody),
        (status = 422, description = "`invalid_query`: an unknown query parameter.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn dead_letters(
    State(state): State<EdgeState>,
    ApiQuery(q): ApiQuery<DeadQuery>,
) -> Result<Json<Value>, ApiError> {
    let items: Vec<JobRecord> =
        runtime::admin::dead_letters(state.runtime.db(), q.queue.as_deref())
            .await
            .map_err(runtime_error)?;
    Ok(Json(json!({ "items": items })))
}

/// One dead letter, as `keel dead show`.
#[utoipa::path(
    get,
    path = "/admin/dead-letters/{id}",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The dead job's id.")),
    responses(
        (status = 200, description = "The job with its attempts.", body = serde_json::Value),
        (status = 401, description = "`unauthorized`: no valid `Authorization: Bearer <admin token>` header.", body = ErrorBody),
        (status = 403, description = "`admin_disabled`: no admin token is configured.", body = ErrorBody),
        (status = 404, description = "`not_found`: no job has this id.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn dead_letter(
    State(state): State<EdgeState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobRecord>, ApiError> {
    let job = runtime::admin::show_job(state.runtime.db(), &id)
        .await
        .map_err(runtime_error)?;
    Ok(Json(job))
}

/// Replays a dead letter with a fresh attempt budget and the same idempotency key.
#[utoipa::path(
    post,
    path = "/admin/dead-letters/{id}/replay",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The dead job's id.")),
    responses(
        (status = 200, description = "`{\"replayed\": [id]}`.", body = serde_json::Value),
        (status = 401, description = "`unauthorized`: no valid `Authorization: Bearer <admin token>` header.", body = ErrorBody),
        (status = 403, description = "`admin_disabled`: no admin token is configured.", body = ErrorBody),
        (status = 404, description = "`dead_letter_not_found`: no dead job has this id.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn replay(
    State(state): State<EdgeState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let rt = &state.runtime;
    let replayed = runtime::admin::replay(rt.db(), std::slice::from_ref(&id), rt.time())
        .await
        .map_err(runtime_error)?;
    if replayed.is_empty() {
        return Err(ApiError::not_found(
            "dead_letter_not_found",
            format!("no dead job has id {id}"),
        ));
    }
    rt.wake_all();
    Ok(Json(json!({ "replayed": replayed })))
}

/// Deletes a dead letter for good.
#[utoipa::path(
    delete,
    path = "/admin/dead-letters/{id}",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The dead job's id.")),
    responses(
        (status = 204, description = "Purged."),
        (status = 401, description = "`unauthorized`: no valid `Authorization: Bearer <admin token>` header.", body = ErrorBody),
        (status = 403, description = "`admin_disabled`: no admin token is configured.", body = ErrorBody),
        (status = 404, description = "`dead_letter_not_found`: no dead job has this id.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn purge(
    State(state): State<EdgeState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let purged = runtime::admin::purge(state.runtime.db(), std::slice::from_ref(&id))
        .await
        .map_err(runtime_error)?;
    if purged.is_empty() {
        return Err(ApiError::not_found(
            "dead_letter_not_found",
            format!("no dead job has id {id}"),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Dead letters grouped by queue, job type and error.
#[utoipa::path(
    get,
    path = "/admin/dead-letter-groups",
    tag = "admin",
    security(("admin_token" = [])),
    params(("queue" = Option<String>, Query, description = "Only this queue's dead letters.")),
    responses(
        (status = 200, description = "`{\"groups\": [...]}`.", body = serde_json::Value),
        (status = 401, description = "`unauthorized`: no valid `Authorization: Bearer <admin token>` header.", body = ErrorBody),
        (status = 403, description = "`admin_disabled`: no admin token is configured.", body = ErrorBody),
        (status = 422, description = "`invalid_query`: an unknown query parameter.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn groups(
    State(state): State<EdgeState>,
    ApiQuery(q): ApiQuery<DeadQuery>,
) -> Result<Json<Value>, ApiError> {
    let groups = runtime::admin::dead_letter_groups(state.runtime.db(), q.queue.as_deref())
        .await
        .map_err(runtime_error)?;
    Ok(Json(json!({ "groups": groups })))
}

/// Starts a careful group replay in the background (one canary first, then the rest at a
/// capped rate) and answers at once.
#[utoipa::path(
    post,
    path = "/admin/dead-letter-groups/{id}/replay",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The dead-letter group's id.")),
    responses(
        (status = 202, description = "`{\"group_id\", \"jobs\", \"status\": \"started\", \"message\"}`.", body = serde_json::Value),
        (status = 401, description = "`unauthorized`: no valid `Authorization: Bearer <admin token>` header.", body = ErrorBody),
        (status = 403, description = "`admin_disabled`: no admin token is configured.", body = ErrorBody),
        (status = 404, description = "`dead_letter_group_not_found`: no group has this id.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn replay_group(
    State(state): State<EdgeState>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let groups = runtime::admin::dead_letter_groups(state.runtime.db(), None)
        .await
        .map_err(runtime_error)?;
    let Some(group) = groups.into_iter().find(|g| g.id == id) else {
        return Err(ApiError::not_found(
            "dead_letter_group_not_found",
            format!("no dead-letter group has id {id}"),
        ));
    };
    start_group_replay(state.runtime.clone(), group.id.clone());
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "group_id": group.id,
            "jobs": group.count,
            "status": "started",
            "message": "one job is replayed first; the rest follow only if it succeeds",
        })),
    ))
}

/// Replays a dead-letter group in the background: one canary first, the rest only if it
/// succeeds, at [`GROUP_REPLAY_RATE`] a second. The JSON route and the dashboard share it.
pub fn start_group_replay(rt: runtime::Runtime, group_id: String) {
    tokio::spawn(async move {
        let wake = {
            let rt = rt.clone();
            move || rt.wake_all()
        };
        match runtime::admin::replay_group(
            rt.db(),
            rt.time(),
            &group_id,
            GROUP_REPLAY_RATE,
            GROUP_CANARY_TIMEOUT,
            &wake,
        )
        .await
        {
            Ok(report) => tracing::info!(
                group_id = %report.group_id,
                canary_state = report.canary_state.as_deref().unwrap_or(""),
                replayed = report.replayed.len(),
                left_dead = report.left_dead,
                "group replay finished"
            ),
            Err(e) => tracing::warn!(error = %e, "group replay failed"),
        }
    });
}

/// Jobs per second a group replay sends after its canary succeeded.
pub const GROUP_REPLAY_RATE: usize = 20;
/// How long a group replay waits for its canary.
pub const GROUP_CANARY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The whole chain of a request: events, listeners, jobs and their attempts, deliveries — as `keel trace --json`.
#[utoipa::path(
    get,
    path = "/admin/traces/{correlation_id}",
    tag = "admin",
    security(("admin_token" = [])),
    params(("correlation_id" = String, Path, description = "The `x-correlation-id` of the request.")),
    responses(
        (status = 200, description = "The trace tree.", body = serde_json::Value),
        (status = 401, description = "`unauthorized`: no valid `Authorization: Bearer <admin token>` header.", body = ErrorBody),
        (status = 403, description = "`admin_disabled`: no admin token is configured.", body = ErrorBody),
        (status = 404, description = "`not_found`: nothing was recorded under this correlation id.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn trace(
    State(state): State<EdgeState>,
    ApiPath(correlation_id): ApiPath<String>,
) -> Result<Json<Trace>, ApiError> {
    runtime::trace::trace(state.runtime.db(), &correlation_id)
        .await
        .map(Json)
        .map_err(runtime_error)
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-tokem", b"secret-token"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
        assert!(!constant_time_eq(b"", b"secret-token"));
    }
}
