//! The module's routes: create, list and remove webhook endpoints. Each handler carries its
//! OpenAPI description (`#[utoipa::path]`), gathered by [`ApiDoc`].

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use chrono::{DateTime, SecondsFormat, Utc};
use events::http::{ApiError, ApiJson, ApiPath, ErrorBody, ErrorDetail};
use events::{Clock, Db};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{EndpointUrl, EventFilter, InvalidEndpoint, NewEndpoint, WebhookSecret};
use crate::store;

/// What the routes share.
#[derive(Debug, Clone)]
pub(crate) struct EndpointsState {
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    pub allow_private_targets: bool,
}

/// `/webhook-endpoints` and `/webhook-endpoints/{id}`, state applied.
pub(crate) fn routes(state: EndpointsState) -> Router {
    Router::new()
        .route(
            "/webhook-endpoints",
            get(list_endpoints).post(create_endpoint),
        )
        .route("/webhook-endpoints/{id}", delete(delete_endpoint))
        .with_state(Arc::new(state))
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
                };
                ApiError::invalid(code, message)
            }
            EndpointError::NotFound(_) => {
                ApiError::not_found("webhook_endpoint_not_found", message)
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
}

/// A webhook endpoint just created, with its signing secret (shown this once).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CreatedEndpoint {
    /// The endpoint's id.
    id: Uuid,
    /// Where deliveries go.
    url: String,
    /// The events it receives; `["*"]` for all.
    events: Vec<String>,
    /// The signing secret (`whsec_…`).
    secret: String,
    /// When it was created (RFC 3339, UTC, milliseconds).
    #[schema(format = DateTime)]
    created_at: String,
}

/// A webhook endpoint as listed (without its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ListedEndpoint {
    /// The endpoint's id.
    id: Uuid,
    /// Where deliveries go.
    url: String,
    /// The events it receives; `["*"]` for all.
    events: Vec<String>,
    /// When it was created (RFC 3339, UTC, milliseconds).
    #[schema(format = DateTime)]
    created_at: String,
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
        (status = 422, description = "`invalid_url`, `private_target` (the URL names a private address), `unknown_event`, `invalid_secret`; `invalid_body` for unknown fields, wrong types or missing fields.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn create_endpoint(
    State(state): State<Arc<EndpointsState>>,
    ApiJson(request): ApiJson<CreateEndpoint>,
) -> Result<(StatusCode, ApiJson<CreatedEndpoint>), EndpointError> {
    let url = EndpointUrl::parse(&request.url, state.allow_private_targets)?;
    let events = EventFilter::parse(request.events)?;
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
    tx.commit().await?;
    tracing::info!(endpoint_id = %endpoint.id, "webhook endpoint created");

    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedEndpoint {
            id: endpoint.id,
            url: endpoint.url.as_str().to_owned(),
            events: endpoint.events.names().to_vec(),
            secret: endpoint.secret.expose().to_owned(),
            created_at: rfc3339(endpoint.created_at),
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
        .map(|e| ListedEndpoint {
            id: e.id,
            url: e.url,
            events: e.events,
            created_at: rfc3339(e.created_at),
        })
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

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::*;
    use crate::store::tests::test_db;

    /// Every test here runs at one fixed instant.
    fn fixed_clock() -> Arc<events::testing::FixedClock> {
        events::testing::FixedClock::at_millis(1_764_150_000_000)
    }

    async fn app(allow_private_targets: bool) -> Router {
        routes(EndpointsState {
            db: test_db().await,
            clock: fixed_clock(),
            allow_private_targets,
        })
    }

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(json) => {
                request = request.header("content-type", "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let response = app
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, json)
    }

    #[tokio::test]
    async fn creating_an_endpoint_returns_its_secret_once_and_lists_it_without() {
        let app = app(false).await;
        let (status, created) = call(
            &app,
            "POST",
            "/webhook-endpoints",
            Some(json!({"url": "https://hooks.example.com/keel", "events": ["record.created", "invoice.paid"]})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(created["url"], "https://hooks.example.com/keel");
        assert_eq!(created["events"], json!(["record.created", "invoice.paid"]));
        assert_eq!(created["created_at"], "2025-11-26T09:40:00.000Z");
        let secret = created["secret"].as_str().unwrap();
        assert!(WebhookSecret::parse(secret).is_ok());

        let (status, listed) = call(&app, "GET", "/webhook-endpoints", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            listed,
            json!({"items": [{
                "id": created["id"],
                "url": "https://hooks.example.com/keel",
                "events": ["record.created", "invoice.paid"],
                "created_at": "2025-11-26T09:40:00.000Z",
            }]})
        );
    }

    #[tokio::test]
    async fn a_caller_chosen_secret_is_kept() {
        let app = app(false).await;
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let (status, created) = call(
            &app,
            "POST",
            "/webhook-endpoints",
            Some(json!({"url": "https://a.example/", "events": ["*"], "secret": secret})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(created["secret"], secret);
        assert_eq!(created["events"], json!(["*"]));
    }

    #[tokio::test]
    async fn invalid_input_gets_a_422_with_a_stable_code() {
        let app = app(false).await;
        let cases = [
            (
                json!({"url": "ftp://a.example/", "events": ["*"]}),
                "invalid_url",
            ),
            (
                json!({"url": "https://u:p@a.example/", "events": ["*"]}),
                "invalid_url",
            ),
            (
                json!({"url": "http://127.0.0.1:9/", "events": ["*"]}),
                "private_target",
            ),
            (
                json!({"url": "http://[::1]/", "events": ["*"]}),
                "private_target",
            ),
            (
                json!({"url": "https://a.example/", "events": ["record.deleted"]}),
                "unknown_event",
            ),
            (
                json!({"url": "https://a.example/", "events": []}),
                "unknown_event",
            ),
            (
                json!({"url": "https://a.example/", "events": ["*"], "secret": "nope"}),
                "invalid_secret",
            ),
            (
                json!({"url": "https://a.example/", "events": ["*"], "extra": 1}),
                "invalid_body",
            ),
            (json!({"url": "https://a.example/"}), "invalid_body"),
            (json!({"url": 5, "events": ["*"]}), "invalid_body"),
        ];
        for (body, code) in cases {
            let (status, error) =
                call(&app, "POST", "/webhook-endpoints", Some(body.clone())).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(error["error"]["code"], code, "{body}");
            assert!(error["error"]["message"].is_string());
        }
    }

    #[tokio::test]
    async fn private_literal_targets_are_accepted_when_allowed() {
        let app = app(true).await;
        let (status, _) = call(
            &app,
            "POST",
            "/webhook-endpoints",
            Some(json!({"url": "http://127.0.0.1:9/", "events": ["*"]})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }

    #[tokio::test]
    async fn deleting_removes_the_endpoint_and_a_second_delete_is_404() {
        let app = app(false).await;
        let (_, created) = call(
            &app,
            "POST",
            "/webhook-endpoints",
            Some(json!({"url": "https://a.example/", "events": ["*"]})),
        )
        .await;
        let uri = format!("/webhook-endpoints/{}", created["id"].as_str().unwrap());

        let (status, body) = call(&app, "DELETE", &uri, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(body, Value::Null);
        let (_, listed) = call(&app, "GET", "/webhook-endpoints", None).await;
        assert_eq!(listed, json!({"items": []}));

        let (status, error) = call(&app, "DELETE", &uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error["error"]["code"], "webhook_endpoint_not_found");

        let (status, error) = call(&app, "DELETE", "/webhook-endpoints/not-a-uuid", None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error["error"]["code"], "invalid_path");
    }
}
