//! The module's routes: create, list and remove webhook endpoints, and the router with the
//! lifecycle (`lifecycle`) and delivery-log (`deliveries`) routes. Each handler
//! carries its OpenAPI description (`#[utoipa::path]`), gathered by [`ApiDoc`].

mod deliveries;
mod lifecycle;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use events::http::{ApiError, ApiJson, ApiPath, ErrorBody, ErrorDetail};
use events::{Clock, Db, JobQueue};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::endpoints::{self, DEFAULT_MAX_IN_FLIGHT, EndpointSettings};
use crate::model::{
    EndpointSummary, EndpointUrl, EventFilter, InvalidEndpoint, NewEndpoint, WebhookSecret,
};
use crate::{NotificationsConfig, store};

/// What the routes share.
#[derive(Debug, Clone)]
pub(crate) struct EndpointsState {
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    /// Where `recover` enqueues its re-sends.
    pub jobs: Arc<dyn JobQueue>,
    /// `[webhooks]`: private targets, rotation grace, recovery rate.
    pub config: NotificationsConfig,
}

/// `/webhook-endpoints`, `/webhook-endpoints/{id}` and what hangs below, and
/// `/webhook-deliveries/{id}`, state applied.
pub(crate) fn routes(state: EndpointsState) -> Router {
    Router::new()
        .route(
            "/webhook-endpoints",
            get(list_endpoints).post(create_endpoint),
        )
        .route(
            "/webhook-endpoints/{id}",
            delete(delete_endpoint)
                .get(lifecycle::get_endpoint)
                .patch(lifecycle::update_endpoint),
        )
        .route(
            "/webhook-endpoints/{id}/rotate-secret",
            post(lifecycle::rotate_secret),
        )
        .route("/webhook-endpoints/{id}/recover", post(lifecycle::recover))
        .route(
            "/webhook-endpoints/{id}/deliveries",
            get(deliveries::list_deliveries),
        )
        .route("/webhook-deliveries/{id}", get(deliveries::get_delivery))
        .with_state(Arc::new(state))
}

/// The module's whole OpenAPI document: these routes and the lifecycle and delivery-log ones.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = <ApiDoc as utoipa::OpenApi>::openapi();
    doc.merge(<lifecycle::ApiDoc as utoipa::OpenApi>::openapi());
    doc.merge(<deliveries::ApiDoc as utoipa::OpenApi>::openapi());
    doc
}

/// The module's OpenAPI document: its routes, their bodies and their errors.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(create_endpoint, list_endpoints, delete_endpoint),
    components(schemas(
        CreateEndpoint,
        CreatedEndpoint,
        ListedEndpoint,
        EndpointList,
        ErrorBody,
        ErrorDetail
    )),
    tags((
        name = "webhook-endpoints",
        description = "Where signed webhook deliveries go, and for which events."
    ))
)]
pub(crate) struct ApiDoc;

/// Why a webhook-endpoint operation failed; each knows its HTTP status and code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EndpointError {
    /// The request named an invalid URL, event list or secret.
    #[error(transparent)]
    Invalid(#[from] InvalidEndpoint),
    /// No live endpoint has this id.
    #[error("webhook endpoint {0} does not exist")]
    NotFound(Uuid),
    /// No delivery in the log has this id (or it was pruned).
    #[error("webhook delivery {0} does not exist")]
    DeliveryNotFound(Uuid),
    /// A query parameter or body field is out of range or malformed.
    #[error("{message}")]
    Query {
        /// The stable code.
        code: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The endpoint is disabled; `recover` needs it enabled.
    #[error("webhook endpoint {0} is disabled; re-enable it (PATCH {{\"enabled\": true}}) first")]
    Disabled(Uuid),
    /// A re-send could not be encoded.
    #[error("{0}")]
    Enqueue(String),
    /// The database could not answer.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<EndpointError> for ApiError {
    fn from(err: EndpointError) -> Self {
        let message = err.to_string();
        match err {
            EndpointError::Invalid(invalid) => {
                let code = match invalid {
                    InvalidEndpoint::Url(_) => "invalid_url",
                    InvalidEndpoint::PrivateTarget { .. } => "private_target",
                    InvalidEndpoint::Events(_) => "unknown_event",
                    InvalidEndpoint::Secret(_) => "invalid_secret",
                    InvalidEndpoint::Header(_) => "invalid_header",
                    InvalidEndpoint::Throttle(_) => "invalid_throttle",
                };
                ApiError::invalid(code, message)
            }
            EndpointError::NotFound(_) => {
                ApiError::not_found("webhook_endpoint_not_found", message)
            }
            EndpointError::DeliveryNotFound(_) => {
                ApiError::not_found("webhook_delivery_not_found", message)
            }
            EndpointError::Query { code, .. } => ApiError::invalid(code, message),
            EndpointError::Disabled(_) => {
                ApiError::new(StatusCode::CONFLICT, "webhook_endpoint_disabled", message)
            }
            EndpointError::Enqueue(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
            }
            EndpointError::Database(db) => ApiError::from_database(&db),
        }
    }
}

impl IntoResponse for EndpointError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// The body of `POST /webhook-endpoints`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateEndpoint {
    /// Where deliveries are POSTed: an absolute `http`/`https` URL without credentials.
    #[schema(example = "https://example.com/hooks/keel")]
    url: String,
    /// Event names from the catalog (e.g. `record.created`), or `["*"]` for every event.
    #[schema(example = json!(["record.created", "invoice.paid"]))]
    events: Vec<String>,
    /// The signing secret, `whsec_` + base64 of 24 to 64 bytes; generated when absent.
    #[serde(default)]
    secret: Option<String>,
    /// Free text for people (e.g. who owns the receiver).
    #[serde(default)]
    description: Option<String>,
    /// Static headers sent with every delivery; names Keel sets (`webhook-*`,
    /// `content-type`, `traceparent`, `x-correlation-id`, …) are refused.
    #[serde(default)]
    #[schema(example = json!({"x-tenant": "acme"}))]
    headers: Option<BTreeMap<String, String>>,
    /// Deliveries to this endpoint at once (1–64, default 4).
    #[serde(default)]
    max_in_flight: Option<u32>,
    /// Deliveries started per second at most; unlimited when absent.
    #[serde(default)]
    rate_limit: Option<u32>,
}

/// A webhook endpoint just created, with its signing secret (shown this once).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CreatedEndpoint {
    /// The endpoint.
    #[serde(flatten)]
    endpoint: ListedEndpoint,
    /// The signing secret (`whsec_…`).
    secret: String,
}

/// A webhook endpoint as listed (without its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ListedEndpoint {
    /// The endpoint's id.
    id: Uuid,
    /// Where deliveries go.
    url: String,
    /// The events it receives; `["*"]` for all.
    events: Vec<String>,
    /// Free text for people.
    description: String,
    /// `enabled`, or `disabled`: a disabled endpoint gets no new deliveries.
    #[schema(example = "enabled")]
    status: &'static str,
    /// Why it was disabled: `gone` (the receiver answered 410), `failing` (every delivery
    /// failed for `[webhooks] disable_after`) or `manual`.
    disabled_reason: Option<String>,
    /// When it was disabled (RFC 3339).
    #[schema(format = DateTime)]
    disabled_at: Option<String>,
    /// While a rotated-out secret still signs (both signatures are sent): until when.
    #[schema(format = DateTime)]
    previous_secret_until: Option<String>,
    /// Static headers sent with every delivery, by name; each value reads `***`, since it may
    /// be a credential (an `Authorization`, an API key) and is write-only like the secret.
    headers: BTreeMap<String, String>,
    /// Deliveries to it at once.
    max_in_flight: u32,
    /// Deliveries started per second at most, when limited.
    rate_limit: Option<u32>,
    /// When it was created (RFC 3339, UTC, milliseconds).
    #[schema(format = DateTime)]
    created_at: String,
}

/// What an answer shows for a static header's value.
const HIDDEN_HEADER_VALUE: &str = "***";

impl From<EndpointSummary> for ListedEndpoint {
    fn from(e: EndpointSummary) -> Self {
        Self {
            id: e.id,
            url: e.url,
            events: e.events,
            description: e.description,
            status: if e.disabled_at.is_some() {
                "disabled"
            } else {
                "enabled"
            },
            disabled_reason: e.disabled_reason,
            disabled_at: e.disabled_at.map(rfc3339),
            previous_secret_until: e.previous_secret_until.map(rfc3339),
            headers: e
                .settings
                .headers
                .into_keys()
                .map(|name| (name, HIDDEN_HEADER_VALUE.to_owned()))
                .collect(),
            max_in_flight: e.settings.max_in_flight,
            rate_limit: e.settings.rate_limit,
            created_at: rfc3339(e.created_at),
        }
    }
}

/// The answer of `GET /webhook-endpoints`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct EndpointList {
    /// Every live endpoint.
    items: Vec<ListedEndpoint>,
}

/// Registers a webhook endpoint.
#[utoipa::path(
    post,
    path = "/webhook-endpoints",
    tag = "webhook-endpoints",
    request_body = CreateEndpoint,
    responses(
        (status = 201, description = "The endpoint, with its `id` and signing `secret`.", body = CreatedEndpoint),
        (status = 400, description = "`malformed_json`: the body is not JSON.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the limit.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not `application/json`.", body = ErrorBody),
        (status = 422, description = "`invalid_url`, `private_target` (the URL names a private address), `unknown_event`, `invalid_secret`, `invalid_header` (malformed, or one Keel sets), `invalid_throttle`; `invalid_body` for unknown fields, wrong types or missing fields.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn create_endpoint(
    State(state): State<Arc<EndpointsState>>,
    ApiJson(request): ApiJson<CreateEndpoint>,
) -> Result<(StatusCode, ApiJson<CreatedEndpoint>), EndpointError> {
    let url = EndpointUrl::parse(&request.url, state.config.allow_private_targets)?;
    let events = EventFilter::parse(request.events)?;
    let settings = EndpointSettings::parse(
        request.headers.unwrap_or_default(),
        request.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
        request.rate_limit,
    )?;
    let description = request.description.unwrap_or_default();
    let secret = match request.secret.as_deref() {
        Some(raw) => WebhookSecret::parse(raw)?,
        None => WebhookSecret::generate(),
    };
    let endpoint = NewEndpoint {
        id: Uuid::now_v7(),
        url,
        events,
        secret,
        created_at: state.clock.now(),
    };
    let mut tx = state.db.begin().await?;
    store::insert_endpoint(&mut tx, &endpoint).await?;
    endpoints::save_settings(&mut tx, endpoint.id, &description, &settings).await?;
    tx.commit().await?;
    tracing::info!(endpoint_id = %endpoint.id, "webhook endpoint created");

    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedEndpoint {
            endpoint: ListedEndpoint::from(EndpointSummary {
                id: endpoint.id,
                url: endpoint.url.as_str().to_owned(),
                events: endpoint.events.names().to_vec(),
                created_at: endpoint.created_at,
                description,
                disabled_at: None,
                disabled_reason: None,
                previous_secret_until: None,
                settings,
            }),
            secret: endpoint.secret.expose().to_owned(),
        }),
    ))
}

/// Lists the live webhook endpoints.
#[utoipa::path(
    get,
    path = "/webhook-endpoints",
    tag = "webhook-endpoints",
    responses(
        (status = 200, description = "Every live endpoint, without secrets.", body = EndpointList),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn list_endpoints(
    State(state): State<Arc<EndpointsState>>,
) -> Result<ApiJson<EndpointList>, EndpointError> {
    let items = store::list_endpoints(state.db.pool())
        .await?
        .into_iter()
        .map(ListedEndpoint::from)
        .collect();
    Ok(ApiJson(EndpointList { items }))
}

/// Removes a webhook endpoint; no delivery is sent to it afterwards.
#[utoipa::path(
    delete,
    path = "/webhook-endpoints/{id}",
    tag = "webhook-endpoints",
    params(("id" = Uuid, Path, description = "The endpoint's id.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 404, description = "`webhook_endpoint_not_found`: no live endpoint has this id.", body = ErrorBody),
        (status = 422, description = "`invalid_path`: the id is not a UUID.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn delete_endpoint(
    State(state): State<Arc<EndpointsState>>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, EndpointError> {
    let mut tx = state.db.begin().await?;
    let deleted = store::delete_endpoint(&mut tx, id, state.clock.now()).await?;
    if !deleted {
        return Err(EndpointError::NotFound(id));
    }
    tx.commit().await?;
    tracing::info!(endpoint_id = %id, "webhook endpoint deleted");
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests;
