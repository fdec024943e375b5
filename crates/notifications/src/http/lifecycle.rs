//! An endpoint's lifecycle over HTTP: read one, edit it (and re-enable or disable it),
//! rotate its secret, and re-send what it missed (`recover`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use events::NewJob;
use events::http::{ApiJson, ApiPath, ErrorBody, ErrorDetail};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use super::{EndpointError, EndpointsState, ListedEndpoint, rfc3339};
use crate::delivery_log;
use crate::endpoints::{self, EndpointSettings};
use crate::model::{EndpointUrl, EventFilter, WebhookSecret};
use crate::store;

/// The lifecycle routes' part of the OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(get_endpoint, update_endpoint, rotate_secret, recover),
    components(schemas(
        UpdateEndpoint,
        RotatedSecret,
        Recover,
        Recovering,
        ListedEndpoint,
        ErrorBody,
        ErrorDetail
    ))
)]
pub(crate) struct ApiDoc;

/// The body of `PATCH /webhook-endpoints/{id}`: every field optional, absent ones unchanged.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateEndpoint {
    /// A new URL (validated as at creation).
    #[serde(default)]
    url: Option<String>,
    /// A new event list (replaces the old one).
    #[serde(default)]
    events: Option<Vec<String>>,
    /// A new description.
    #[serde(default)]
    description: Option<String>,
    /// `true` re-enables a disabled endpoint (forgetting its failures); `false` disables it
    /// by hand (`disabled_reason: "manual"`).
    #[serde(default)]
    enabled: Option<bool>,
    /// New static headers (replace the old ones).
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    /// Deliveries at once (1–64).
    #[serde(default)]
    max_in_flight: Option<u32>,
    /// Deliveries per second at most; `null` removes the limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    rate_limit: Option<Option<u32>>,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A new signing secret; the previous one keeps signing until `previous_secret_until`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RotatedSecret {
    /// The endpoint.
    id: Uuid,
    /// The new secret (`whsec_…`), shown this once.
    secret: String,
    /// Until when deliveries also carry the old secret's signature (RFC 3339).
    #[schema(format = DateTime)]
    previous_secret_until: String,
}

/// The body of `POST /webhook-endpoints/{id}/recover`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Recover {
    /// Re-send what failed or was skipped since then (RFC 3339).
    #[schema(format = DateTime, example = "2026-12-01T00:00:00Z")]
    since: String,
}

/// What `recover` queued.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Recovering {
    /// Messages queued to be sent again (same `webhook-id`s).
    messages: usize,
    /// When the last of them is due, at the capped rate (RFC 3339).
    #[schema(format = DateTime)]
    last_due_at: Option<String>,
}

/// Reads one webhook endpoint (without its secret).
#[utoipa::path(
    get,
    path = "/webhook-endpoints/{id}",
    tag = "webhook-endpoints",
    params(("id" = Uuid, Path, description = "The endpoint's id.")),
    responses(
        (status = 200, description = "The endpoint.", body = ListedEndpoint),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
        (status = 422, description = "`invalid_path`: the id is not a UUID.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
pub(crate) async fn get_endpoint(
    State(state): State<Arc<EndpointsState>>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<ListedEndpoint>, EndpointError> {
    let endpoint = store::find_endpoint(state.db.pool(), id)
        .await?
        .ok_or(EndpointError::NotFound(id))?;
    Ok(ApiJson(endpoint.into()))
}

/// Edits a webhook endpoint: URL, events, description, headers, throttling; re-enables or
/// disables it.
#[utoipa::path(
    patch,
    path = "/webhook-endpoints/{id}",
    tag = "webhook-endpoints",
    params(("id" = Uuid, Path, description = "The endpoint's id.")),
    request_body = UpdateEndpoint,
    responses(
        (status = 200, description = "The endpoint as it is now.", body = ListedEndpoint),
        (status = 400, description = "`malformed_json`: the body is not JSON.", body = ErrorBody),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not `application/json`.", body = ErrorBody),
        (status = 422, description = "`invalid_url`, `private_target`, `unknown_event`, `invalid_header`, `invalid_throttle`, `invalid_path`; `invalid_body` for unknown fields or wrong types.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
pub(crate) async fn update_endpoint(
    State(state): State<Arc<EndpointsState>>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<UpdateEndpoint>,
) -> Result<ApiJson<ListedEndpoint>, EndpointError> {
    let current = store::find_endpoint(state.db.pool(), id)
        .await?
        .ok_or(EndpointError::NotFound(id))?;
    let url = request
        .url
        .as_deref()
        .map(|raw| EndpointUrl::parse(raw, state.config.allow_private_targets))
        .transpose()?;
    let events = request.events.map(EventFilter::parse).transpose()?;
    let settings = EndpointSettings::parse(
        request.headers.unwrap_or(current.settings.headers),
        request
            .max_in_flight
            .unwrap_or(current.settings.max_in_flight),
        request.rate_limit.unwrap_or(current.settings.rate_limit),
    )?;
    let description = request.description.unwrap_or(current.description);

    let mut tx = state.db.begin().await?;
    if let Some(url) = &url
        && !endpoints::set_url(&mut tx, id, url).await?
    {
        return Err(EndpointError::NotFound(id));
    }
    if let Some(events) = &events {
        endpoints::set_events(&mut tx, id, events).await?;
    }
    endpoints::save_settings(&mut tx, id, &description, &settings).await?;
    match request.enabled {
        Some(true) => endpoints::enable(&mut tx, id).await?,
        Some(false) => {
            endpoints::disable(&mut tx, id, "manual", state.clock.now()).await?;
        }
        None => {}
    }
    tx.commit().await?;
    tracing::info!(endpoint_id = %id, "webhook endpoint updated");
    let endpoint = store::find_endpoint(state.db.pool(), id)
        .await?
        .ok_or(EndpointError::NotFound(id))?;
    Ok(ApiJson(endpoint.into()))
}

/// Issues a new signing secret; for `[webhooks] rotation_grace` deliveries carry both
/// signatures (`v1,<new> v1,<old>`), then the old secret stops.
#[utoipa::path(
    post,
    path = "/webhook-endpoints/{id}/rotate-secret",
    tag = "webhook-endpoints",
    params(("id" = Uuid, Path, description = "The endpoint's id.")),
    responses(
        (status = 200, description = "The new secret, shown this once.", body = RotatedSecret),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
        (status = 422, description = "`invalid_path`: the id is not a UUID.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
pub(crate) async fn rotate_secret(
    State(state): State<Arc<EndpointsState>>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<RotatedSecret>, EndpointError> {
    let secret = WebhookSecret::generate();
    let until = state.clock.now() + delta(state.config.rotation_grace);
    let mut tx = state.db.begin().await?;
    if !endpoints::rotate(&mut tx, id, &secret, until).await? {
        return Err(EndpointError::NotFound(id));
    }
    tx.commit().await?;
    tracing::info!(endpoint_id = %id, "webhook endpoint secret rotated");
    Ok(ApiJson(RotatedSecret {
        id,
        secret: secret.expose().to_owned(),
        previous_secret_until: rfc3339(until),
    }))
}

/// Re-sends every message to this endpoint that failed or was skipped since `since`, with
/// the same `webhook-id`s, at most `[webhooks] recover_rate` a second.
#[utoipa::path(
    post,
    path = "/webhook-endpoints/{id}/recover",
    tag = "webhook-endpoints",
    params(("id" = Uuid, Path, description = "The endpoint's id.")),
    request_body = Recover,
    responses(
        (status = 202, description = "The re-sends are queued.", body = Recovering),
        (status = 400, description = "`malformed_json`: the body is not JSON.", body = ErrorBody),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
        (status = 409, description = "`webhook_endpoint_disabled`: re-enable it first.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_since` (not RFC 3339), `invalid_path`; `invalid_body`.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
pub(crate) async fn recover(
    State(state): State<Arc<EndpointsState>>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<Recover>,
) -> Result<(StatusCode, ApiJson<Recovering>), EndpointError> {
    let since = DateTime::parse_from_rfc3339(&request.since)
        .map_err(|e| EndpointError::Query {
            code: "invalid_since",
            message: format!("since is not an RFC 3339 time: {e}"),
        })?
        .with_timezone(&Utc);
    let endpoint = store::find_endpoint(state.db.pool(), id)
        .await?
        .ok_or(EndpointError::NotFound(id))?;
    if endpoint.disabled_at.is_some() {
        return Err(EndpointError::Disabled(id));
    }
    let now = state.clock.now();
    let spacing = TimeDelta::milliseconds(1000 / i64::from(state.config.recover_rate.max(1)));
    let mut tx = state.db.begin().await?;
    let jobs = delivery_log::take_for_recovery(&mut tx, id, since, now).await?;
    let mut last_due_at = None;
    for (i, job) in (0_i32..).zip(&jobs) {
        let due = now + spacing * i;
        let mut new = NewJob::of(job).map_err(|e| EndpointError::Enqueue(e.to_string()))?;
        new.run_at = Some(due);
        state.jobs.enqueue(&mut tx, new).await?;
        last_due_at = Some(due);
    }
    tx.commit().await?;
    tracing::info!(endpoint_id = %id, messages = jobs.len(), "webhook endpoint recovery queued");
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(Recovering {
            messages: jobs.len(),
            last_due_at: last_due_at.map(rfc3339),
        }),
    ))
}

fn delta(d: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}
