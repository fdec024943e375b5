//! The delivery log over HTTP: an endpoint's deliveries (filtered by status and time, newest
//! first, in pages) and one delivery with every attempt.

use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use events::http::{ApiJson, ApiPath, ApiQuery, ErrorBody, ErrorDetail};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{EndpointError, EndpointsState, rfc3339};
use crate::delivery_log::{self, DeliveryFilter, DeliveryStatus, DeliverySummary, LoggedAttempt};
use crate::store;

/// Deliveries a page holds when the caller does not say.
const DEFAULT_PAGE: i64 = 50;
/// The most a page may hold.
const MAX_PAGE: i64 = 200;

/// The delivery log's part of the OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(list_deliveries, get_delivery),
    components(schemas(
        DeliveryView,
        DeliveryPage,
        AttemptView,
        DeliveryDetail,
        ErrorBody,
        ErrorDetail
    ))
)]
pub(crate) struct ApiDoc;

/// One message's delivery to one endpoint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DeliveryView {
    /// The log entry's id (for `GET /webhook-deliveries/{id}`).
    id: Uuid,
    /// The endpoint.
    endpoint_id: Uuid,
    /// The `webhook-id` the receiver sees (`msg_<event id>`), the same on every attempt.
    message_id: String,
    /// The event's name.
    event: String,
    /// `pending`, `succeeded`, `failing` (retries remain), `failed` or `skipped` (the
    /// endpoint was disabled).
    status: String,
    /// Attempts made.
    attempts: i64,
    /// When the event happened (RFC 3339).
    #[schema(format = DateTime)]
    occurred_at: String,
    /// When it last changed (RFC 3339).
    #[schema(format = DateTime)]
    updated_at: String,
}

impl From<DeliverySummary> for DeliveryView {
    fn from(d: DeliverySummary) -> Self {
        Self {
            id: d.id,
            endpoint_id: d.endpoint_id,
            message_id: format!("msg_{}", d.event_id),
            event: d.event,
            status: d.status,
            attempts: d.attempts,
            occurred_at: rfc3339(d.occurred_at),
            updated_at: rfc3339(d.updated_at),
        }
    }
}

/// A page of an endpoint's deliveries, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DeliveryPage {
    /// The deliveries.
    items: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; absent on the last.
    next_cursor: Option<String>,
}

/// One attempt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AttemptView {
    /// When it started (RFC 3339).
    #[schema(format = DateTime)]
    attempted_at: String,
    /// The receiver's status code; absent when it never answered.
    status_code: Option<i64>,
    /// How long it took.
    duration_ms: i64,
    /// The first KiB of the answer.
    response: String,
    /// Why it failed.
    error: Option<String>,
    /// Whether a 2xx came back.
    succeeded: bool,
}

impl From<LoggedAttempt> for AttemptView {
    fn from(a: LoggedAttempt) -> Self {
        Self {
            attempted_at: rfc3339(a.attempted_at),
            status_code: a.status_code,
            duration_ms: a.duration_ms,
            response: a.response,
            error: a.error,
            succeeded: a.succeeded,
        }
    }
}

/// A delivery with every attempt, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DeliveryDetail {
    /// The delivery.
    #[serde(flatten)]
    delivery: DeliveryView,
    /// Its attempts.
    attempt_log: Vec<AttemptView>,
}

/// The query string of the deliveries list; parsed by hand so each bad value gets its code.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveryQuery {
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

fn query_error(code: &'static str, message: impl Into<String>) -> EndpointError {
    EndpointError::Query {
        code,
        message: message.into(),
    }
}

fn parse_time(raw: Option<&str>, name: &str) -> Result<Option<DateTime<Utc>>, EndpointError> {
    match raw {
        None | Some("") => Ok(None),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| query_error("invalid_time", format!("{name} is not an RFC 3339 time"))),
    }
}

impl DeliveryQuery {
    fn parse(self) -> Result<(DeliveryFilter, i64), EndpointError> {
        let status = match self.status.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(DeliveryStatus::parse(raw).ok_or_else(|| {
                query_error(
                    "invalid_status",
                    "status must be pending, succeeded, failing, failed or skipped",
                )
            })?),
        };
        let before = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(Uuid::try_parse(raw).map_err(|_| {
                query_error(
                    "invalid_cursor",
                    "cursor is not valid; use a next_cursor from a previous page",
                )
            })?),
        };
        let limit = match self.limit.as_deref().map(str::trim) {
            None | Some("") => DEFAULT_PAGE,
            Some(raw) => raw
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| query_error("invalid_limit", "limit must be 1 to 200"))?,
        };
        let filter = DeliveryFilter {
            status,
            since: parse_time(self.since.as_deref(), "since")?,
            until: parse_time(self.until.as_deref(), "until")?,
            before,
        };
        Ok((filter, limit))
    }
}

/// Lists an endpoint's deliveries, newest first.
#[utoipa::path(
    get,
    path = "/webhook-endpoints/{id}/deliveries",
    tag = "webhook-endpoints",
    params(
        ("id" = Uuid, Path, description = "The endpoint's id."),
        ("status" = Option<String>, Query, description = "Only `pending`, `succeeded`, `failing`, `failed` or `skipped`."),
        ("since" = Option<String>, Query, description = "Only messages that happened at or after (RFC 3339)."),
        ("until" = Option<String>, Query, description = "Only messages that happened before (RFC 3339)."),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Deliveries per page: 1 to 200, default 50.")
    ),
    responses(
        (status = 200, description = "A page of deliveries.", body = DeliveryPage),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
        (status = 422, description = "`invalid_status`, `invalid_time`, `invalid_cursor`, `invalid_limit`, `invalid_path`; `invalid_query` for an unknown parameter.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
pub(crate) async fn list_deliveries(
    State(state): State<Arc<EndpointsState>>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<ApiJson<DeliveryPage>, EndpointError> {
    let (filter, limit) = query.parse()?;
    if store::find_endpoint(state.db.pool(), id).await?.is_none() {
        return Err(EndpointError::NotFound(id));
    }
    let mut items = delivery_log::list(state.db.pool(), id, &filter, limit + 1).await?;
    let page = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = items.len() > page;
    items.truncate(page);
    let next_cursor = if more {
        items.last().map(|d| d.id.to_string())
    } else {
        None
    };
    Ok(ApiJson(DeliveryPage {
        items: items.into_iter().map(DeliveryView::from).collect(),
        next_cursor,
    }))
}

/// Reads one delivery with every attempt: time, status code, duration, the first KiB of
/// the answer, the error.
#[utoipa::path(
    get,
    path = "/webhook-deliveries/{id}",
    tag = "webhook-endpoints",
    params(("id" = Uuid, Path, description = "The delivery's id.")),
    responses(
        (status = 200, description = "The delivery and its attempts.", body = DeliveryDetail),
        (status = 404, description = "`webhook_delivery_not_found` (never logged, or pruned).", body = ErrorBody),
        (status = 422, description = "`invalid_path`: the id is not a UUID.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
pub(crate) async fn get_delivery(
    State(state): State<Arc<EndpointsState>>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<DeliveryDetail>, EndpointError> {
    let (delivery, attempts) = delivery_log::find(state.db.pool(), id)
        .await?
        .ok_or(EndpointError::DeliveryNotFound(id))?;
    Ok(ApiJson(DeliveryDetail {
        delivery: delivery.into(),
        attempt_log: attempts.into_iter().map(AttemptView::from).collect(),
    }))
}
