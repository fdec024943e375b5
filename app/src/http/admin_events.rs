//! `/admin/events`: the event log, as `keel events list|show` prints it, behind the admin
//! token (the routes are merged into [`super::admin::routes`], under its token check).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use events::http::{ApiError, ApiPath, ApiQuery, ErrorBody};
use runtime::event_log::{self, EventFilter, EventPage, EventRecord};
use serde::Deserialize;

use super::EdgeState;
use super::admin::runtime_error;

/// The routes' OpenAPI description (admin token required, as for every admin route).
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(list_events, show_event))]
pub struct ApiDoc;

/// The routes, without state: [`super::admin::routes`] adds its token check and state.
pub fn routes() -> Router<EdgeState> {
    Router::new()
        .route("/admin/events", get(list_events))
        .route("/admin/events/{id}", get(show_event))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    name: Option<String>,
    correlation_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn time(key: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|r| {
        DateTime::parse_from_rfc3339(r)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::invalid(
                    "invalid_query",
                    format!("`{key}` must be an RFC 3339 time, got {r:?}"),
                )
            })
    })
    .transpose()
}

/// Stored events, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/admin/events",
    tag = "admin",
    security(("admin_token" = [])),
    params(
        ("name" = Option<String>, Query, description = "Only this event name, e.g. `record.created`."),
        ("correlation_id" = Option<String>, Query, description = "Only this chain."),
        ("since" = Option<String>, Query, description = "RFC 3339: occurred at or after."),
        ("until" = Option<String>, Query, description = "RFC 3339: occurred at or before."),
        ("limit" = Option<u32>, Query, description = "Events per page, 1 to 500 (default 50)."),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`.")
    ),
    responses(
        (status = 200, description = "`{\"items\": [...], \"next_cursor\"}`, as `keel events list --json`.", body = serde_json::Value),
        (status = 401, description = "`unauthorized`: no valid `Authorization: Bearer <admin token>` header.", body = ErrorBody),
        (status = 403, description = "`admin_disabled`: no admin token is configured.", body = ErrorBody),
        (status = 422, description = "`invalid_query`: an unknown parameter, a time that is not RFC 3339, a limit that is not 1 to 500, or a cursor that is not one.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn list_events(
    State(state): State<EdgeState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let limit = match q.limit.as_deref() {
        None => None,
        Some(raw) => Some(
            raw.parse::<i64>()
                .ok()
                .filter(|n| (1..=event_log::MAX_PAGE).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_query",
                        format!(
                            "`limit` must be an integer from 1 to {}, got {raw:?}",
                            event_log::MAX_PAGE
                        ),
                    )
                })?,
        ),
    };
    let before = match q.cursor.as_deref() {
        None => None,
        Some(raw) => Some(event_log::parse_cursor(raw).ok_or_else(|| {
            ApiError::invalid(
                "invalid_query",
                format!("`cursor` is not a cursor: {raw:?}"),
            )
        })?),
    };
    let filter = EventFilter {
        name: q.name,
        correlation_id: q.correlation_id,
        since: time("since", q.since.as_deref())?,
        until: time("until", q.until.as_deref())?,
        before,
        limit,
    };
    let page = event_log::list(state.runtime.db(), &filter)
        .await
        .map_err(runtime_error)?;
    Ok(Json(page))
}

/// One stored event, as `keel events show`.
#[utoipa::path(
    get,
    path = "/admin/events/{id}",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The event's id.")),
    responses(
        (status = 200, description = "The event: position, id, name, version, occurred_at, correlation_id, causation_id, payload.", body = serde_json::Value),
        (status = 401, description = "`unauthorized`: no valid `Authorization: Bearer <admin token>` header.", body = ErrorBody),
        (status = 403, description = "`admin_disabled`: no admin token is configured.", body = ErrorBody),
        (status = 404, description = "`event_not_found`: no stored event has this id.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn show_event(
    State(state): State<EdgeState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EventRecord>, ApiError> {
    match event_log::show(state.runtime.db(), &id).await {
        Ok(event) => Ok(Json(event)),
        Err(runtime::RuntimeError::NotFound(message)) => {
            Err(ApiError::not_found("event_not_found", message))
        }
        Err(e) => Err(runtime_error(e)),
    }
}
