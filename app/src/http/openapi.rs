//! `GET /openapi.json`: the API's OpenAPI 3 document, generated from the code.
//!
//! Each domain module describes its own routes (`records::openapi()`, `billing::openapi()`,
//! `notifications::openapi()`, from `#[utoipa::path]` on its handlers and `ToSchema` on its
//! request and response types); the app adds its operational routes (health, readiness,
//! metrics, this one), the admin JSON API with its bearer scheme, and what the edge layers do
//! for every route: the `x-correlation-id` header on every answer and `Idempotency-Key` on
//! POSTs. The document is built once and served from memory.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::OpenApi as _;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    Components, ComponentsBuilder, HeaderBuilder, InfoBuilder, ObjectBuilder, OpenApi, Ref, RefOr,
    Required, Type,
};

use super::{admin, health, metrics};

/// Name of the bearer security scheme the admin routes require.
pub const ADMIN_SCHEME: &str = "admin_token";

/// The app's own routes; the modules' come from their crates.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(openapi_json),
    tags(
        (name = "operations", description = "Liveness, readiness, metrics and this document."),
        (name = "admin", description = "Queues, dead letters and traces, as the CLI shows them. Requires `Authorization: Bearer <admin_token>`.")
    )
)]
struct AppDoc;

/// The openapi route, describing only the modules served here.
pub fn routes(modules: &[String]) -> Router {
    let all = crate::deployment::MODULES.len() == modules.len();
    let doc = if all {
        serde_json::to_string(document())
    } else {
        serde_json::to_string(&build_for(modules))
    };
    let doc: Arc<str> = Arc::from(doc.unwrap_or_else(|_| "{}".to_owned()));
    Router::new().route("/openapi.json", get(move || openapi_json(doc.clone())))
}

/// The whole document, built on first use.
pub fn document() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(build)
}

/// Merges every module's document with the app's into one.
pub fn build() -> OpenApi {
    let all: Vec<String> = crate::deployment::MODULES
        .iter()
        .map(|m| (*m).to_owned())
        .collect();
    build_for(&all)
}

/// As [`build`], with only `modules`' routes (a deployment running a subset).
pub fn build_for(modules: &[String]) -> OpenApi {
    let mut doc = AppDoc::openapi();
    let has = |m: &str| modules.iter().any(|n| n == m);
    let mut parts = Vec::new();
    if has("records") {
        parts.push(records::openapi());
    }
    if has("billing") {
        parts.push(billing::openapi());
    }
    if has("notifications") {
        parts.push(notifications::openapi());
    }
    for part in parts.into_iter().chain([
        health::ApiDoc::openapi(),
        metrics::ApiDoc::openapi(),
        admin::ApiDoc::openapi(),
        super::admin_events::ApiDoc::openapi(),
    ]) {
        doc.merge(part);
    }
    doc.info = InfoBuilder::new()
        .title("Keel")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "JSON in and out. Every error is `{\"error\": {\"code\", \"message\"}}` with a 4xx/5xx \
             status; the `code` values are listed per response.",
        ))
        .build();
    let mut components = doc
        .components
        .take()
        .unwrap_or_else(|| ComponentsBuilder::new().build());
    components.add_security_scheme(
        ADMIN_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("The configured admin token (`KEEL_ADMIN_TOKEN`)."))
                .build(),
        ),
    );
    add_edge_headers(&mut doc, &mut components);
    doc.components = Some(components);
    doc
}

/// Component name of the `x-correlation-id` response header.
const CORRELATION_HEADER: &str = "x-correlation-id";
/// Component name of the `Idempotency-Key` request header.
const IDEMPOTENCY_PARAMETER: &str = "Idempotency-Key";

/// What the edge layers add to every route, declared once in `components` and referenced:
/// `x-correlation-id` on every response, the `Idempotency-Key` request header on POSTs.
fn add_edge_headers(doc: &mut OpenApi, components: &mut Components) {
    let string = || ObjectBuilder::new().schema_type(Type::String).build();
    components.headers.insert(
        CORRELATION_HEADER.to_owned(),
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(string()))
                .description(Some(
                    "The request's own `x-correlation-id` (or the trace id of its \
                     `traceparent`), else a new UUID.",
                ))
                .build(),
        ),
    );
    components.parameters.insert(
        IDEMPOTENCY_PARAMETER.to_owned(),
        RefOr::T(
            ParameterBuilder::new()
                .name(IDEMPOTENCY_PARAMETER)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .schema(Some(string()))
                .description(Some(
                    "A repeat with the same key and body returns the first response and does \
                     nothing twice.",
                ))
                .build(),
        ),
    );
    let header = || {
        RefOr::Ref(Ref::new(format!(
            "#/components/headers/{CORRELATION_HEADER}"
        )))
    };
    for item in doc.paths.paths.values_mut() {
        if let Some(post) = item.post.as_mut() {
            post.parameters
                .get_or_insert_with(Vec::new)
                .push(RefOr::Ref(Ref::new(format!(
                    "#/components/parameters/{IDEMPOTENCY_PARAMETER}"
                ))));
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    response
                        .headers
                        .insert(CORRELATION_HEADER.to_owned(), header());
                }
            }
        }
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The API's OpenAPI 3 document.", body = serde_json::Value))
)]
async fn openapi_json(doc: Arc<str>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
}

/// Every route of INTERFACE.md's HTTP API table as (method, path). A route added there is
/// added here, and the document tests (unit and chain) then fail until it is documented.
pub const INTERFACE_ROUTES: &[(&str, &str)] = &[
    ("post", "/records"),
    ("get", "/records"),
    ("get", "/records/{id}"),
    ("post", "/invoices"),
    ("post", "/invoices/{id}/pay"),
    ("post", "/webhook-endpoints"),
    ("get", "/webhook-endpoints"),
    ("delete", "/webhook-endpoints/{id}"),
    ("post", "/imports"),
    ("get", "/imports/{id}"),
    ("get", "/admin/queues"),
    ("get", "/admin/dead-letters"),
    ("post", "/admin/dead-letters/{id}/replay"),
    ("get", "/admin/traces/{correlation_id}"),
    ("get", "/metrics"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn json() -> Value {
        let text = serde_json::to_string(document()).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn the_document_is_openapi_3_named_keel_with_the_crate_version() {
        let doc = json();
        let version = doc["openapi"].as_str().unwrap();
        assert!(version.starts_with("3."), "{version}");
        assert_eq!(doc["info"]["title"], "Keel");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn every_route_of_the_interface_is_documented_with_its_method() {
        let doc = json();
        let paths = doc["paths"].as_object().unwrap();
        let missing: Vec<String> = INTERFACE_ROUTES
            .iter()
            .filter(|(method, path)| paths.get(*path).and_then(|p| p.get(*method)).is_none())
            .map(|(method, path)| format!("{} {path}", method.to_uppercase()))
            .collect();
        assert!(missing.is_empty(), "undocumented routes: {missing:?}");
    }

    #[test]
    fn every_operation_documents_its_responses_and_errors_share_one_schema() {
        let doc = json();
        let error_ref = "#/components/schemas/ErrorBody";
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                assert!(!responses.is_empty(), "{method} {path}");
                for (status, response) in responses {
                    assert_eq!(
                        response["headers"]["x-correlation-id"]["$ref"],
                        "#/components/headers/x-correlation-id",
                        "{method} {path} {status}"
                    );
                    if status.starts_with('4') || status.starts_with('5') {
                        let schema = &response["content"]["application/json"]["schema"]["$ref"];
                        assert_eq!(schema, error_ref, "{method} {path} {status}");
                    }
                }
            }
        }
    }

    #[test]
    fn admin_routes_require_the_bearer_scheme_and_posts_take_an_idempotency_key() {
        let doc = json();
        let scheme = &doc["components"]["securitySchemes"][ADMIN_SCHEME];
        assert_eq!(scheme["type"], "http");
        assert_eq!(scheme["scheme"], "bearer");
        let queues = &doc["paths"]["/admin/queues"]["get"];
        assert!(queues["security"][0][ADMIN_SCHEME].is_array(), "{queues}");
        let key = "#/components/parameters/Idempotency-Key";
        assert_eq!(
            doc["components"]["parameters"]["Idempotency-Key"]["in"],
            "header"
        );
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let refs: Vec<&Value> = operation["parameters"]
                    .as_array()
                    .map(|ps| ps.iter().map(|p| &p["$ref"]).collect())
                    .unwrap_or_default();
                let takes_key = refs.iter().any(|r| *r == key);
                assert_eq!(takes_key, method == "post", "{method} {path}");
            }
        }
    }

    #[test]
    fn request_and_response_schemas_keep_the_serde_names() {
        let doc = json();
        let schemas = &doc["components"]["schemas"];
        let required = |name: &str| -> Vec<String> {
            schemas[name]["required"]
                .as_array()
                .unwrap_or(&Vec::new())
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        assert_eq!(required("CreateRecordRequest"), ["title", "owner_email"]);
        assert_eq!(
            required("IssueInvoiceRequest"),
            ["record_id", "amount_cents", "currency"]
        );
        assert_eq!(required("ErrorDetail"), ["code", "message"]);
        assert!(schemas["Record"]["properties"]["owner_email"].is_object());
        assert!(schemas["Invoice"]["properties"]["paid_at"].is_object());
    }
}
