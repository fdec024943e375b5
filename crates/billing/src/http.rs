//! The billing module's routes: issue an invoice for a record, pay it, read it. Every
//! failure maps to `{"error": {"code", "message"}}` here, in `From<InvoiceError> for ApiError`.
//! Each handler carries its OpenAPI description (`#[utoipa::path]`), gathered by [`ApiDoc`].

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use uuid::Uuid;

use events::http::{ApiError, ApiJson, ApiPath, ErrorBody, ErrorDetail};
use events::outbox::OutboxExt;
use events::{InvoiceIssued, InvoicePaid, PublishError};

use crate::BillingDeps;
use crate::model::{
    InvalidInvoice, Invoice, InvoiceStatus, InvoiceView, IssueInvoiceRequest, NewInvoice,
};
use crate::store;

type Shared = Arc<BillingDeps>;

/// The module's routes with their state applied.
pub fn routes(deps: BillingDeps) -> Router {
    Router::new()
        .route("/invoices", post(issue_invoice))
        .route("/invoices/{id}", get(get_invoice))
        .route("/invoices/{id}/pay", post(pay_invoice))
        .with_state(Arc::new(deps))
}

/// The module's OpenAPI document: its routes, their bodies and their errors.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(issue_invoice, get_invoice, pay_invoice),
    components(schemas(IssueInvoiceRequest, InvoiceView, InvoiceStatus, ErrorBody, ErrorDetail)),
    tags((name = "invoices", description = "Invoices for records: issue, pay, read."))
)]
pub(crate) struct ApiDoc;

/// Why an invoice operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InvoiceError {
    /// The amount or the currency is invalid.
    #[error(transparent)]
    Invalid(#[from] InvalidInvoice),
    /// The invoice names a record that does not exist.
    #[error("no record has this record_id")]
    RecordNotFound,
    /// No invoice has this id.
    #[error("no invoice has this id")]
    NotFound,
    /// The invoice was paid before.
    #[error("the invoice is already paid")]
    AlreadyPaid,
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The event could not be written to the outbox.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl From<InvoiceError> for ApiError {
    fn from(error: InvoiceError) -> Self {
        let message = error.to_string();
        match error {
            InvoiceError::Invalid(InvalidInvoice::Amount) => {
                ApiError::invalid("invalid_amount", message)
            }
            InvoiceError::Invalid(InvalidInvoice::Currency) => {
                ApiError::invalid("invalid_currency", message)
            }
            InvoiceError::RecordNotFound => ApiError::invalid("record_not_found", message),
            InvoiceError::NotFound => ApiError::not_found("invoice_not_found", message),
            InvoiceError::AlreadyPaid => {
                ApiError::new(StatusCode::CONFLICT, "invoice_already_paid", message)
            }
            InvoiceError::Database(e) | InvoiceError::Publish(PublishError::Database(e)) => {
                ApiError::from_database(&e)
            }
            InvoiceError::Publish(PublishError::Encode(e)) => {
                tracing::error!(error = %e, "billing: event does not encode");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "an internal error occurred",
                )
            }
        }
    }
}

impl IntoResponse for InvoiceError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// Issues an open invoice for a record and publishes `invoice.issued`.
#[utoipa::path(
    post,
    path = "/invoices",
    tag = "invoices",
    request_body = IssueInvoiceRequest,
    responses(
        (status = 201, description = "The invoice, issued with `status: \"open\"`.", body = InvoiceView),
        (status = 400, description = "`malformed_json`: the body is not JSON.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the limit.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not `application/json`.", body = ErrorBody),
        (status = 422, description = "`invalid_amount`, `invalid_currency`, `record_not_found` (no record has this `record_id`); `invalid_body` for unknown fields, wrong types or missing fields.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn issue_invoice(
    State(deps): State<Shared>,
    ApiJson(request): ApiJson<IssueInvoiceRequest>,
) -> Result<(StatusCode, ApiJson<InvoiceView>), InvoiceError> {
    let new = NewInvoice::parse(&request)?;
    // Asked through the port, before the write transaction: billing never reads records'
    // tables, and holds no write lock while another module answers.
    if deps.records.find_record(new.record_id).await?.is_none() {
        return Err(InvoiceError::RecordNotFound);
    }
    let invoice = Invoice {
        id: Uuid::now_v7(),
        record_id: new.record_id,
        amount_cents: new.amount.get(),
        currency: new.currency.as_str().to_owned(),
        status: InvoiceStatus::Open,
        created_at: deps.clock.now(),
        paid_at: None,
    };
    let mut tx = deps.db.begin().await?;
    store::insert_invoice(&mut tx, &invoice).await?;
    let event = InvoiceIssued {
        invoice_id: invoice.id,
        record_id: invoice.record_id,
    };
    deps.outbox.publish(&mut tx, &event).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(InvoiceView::from(invoice))))
}

/// Pays an open invoice and publishes `invoice.paid`.
#[utoipa::path(
    post,
    path = "/invoices/{id}/pay",
    tag = "invoices",
    params(("id" = Uuid, Path, description = "The invoice's id.")),
    responses(
        (status = 200, description = "The invoice, now `status: \"paid\"`.", body = InvoiceView),
        (status = 404, description = "`invoice_not_found`: no invoice has this id.", body = ErrorBody),
        (status = 409, description = "`invoice_already_paid`: it was paid before.", body = ErrorBody),
        (status = 422, description = "`invalid_path`: the id is not a UUID.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn pay_invoice(
    State(deps): State<Shared>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<InvoiceView>, InvoiceError> {
    let mut tx = deps.db.begin().await?;
    let Some(invoice) = store::mark_paid(&mut tx, id, deps.clock.now()).await? else {
        let exists = store::find_invoice_in(&mut tx, id).await?.is_some();
        return Err(if exists {
            InvoiceError::AlreadyPaid
        } else {
            InvoiceError::NotFound
        });
    };
    let event = InvoicePaid {
        invoice_id: invoice.id,
        record_id: invoice.record_id,
    };
    deps.outbox.publish(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(ApiJson(InvoiceView::from(invoice)))
}

/// Reads one invoice.
#[utoipa::path(
    get,
    path = "/invoices/{id}",
    tag = "invoices",
    params(("id" = Uuid, Path, description = "The invoice's id.")),
    responses(
        (status = 200, description = "The invoice.", body = InvoiceView),
        (status = 404, description = "`invoice_not_found`: no invoice has this id.", body = ErrorBody),
        (status = 422, description = "`invalid_path`: the id is not a UUID.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn get_invoice(
    State(deps): State<Shared>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<InvoiceView>, InvoiceError> {
    let invoice = store::find_invoice(deps.db.pool(), id)
        .await?
        .ok_or(InvoiceError::NotFound)?;
    Ok(ApiJson(InvoiceView::from(invoice)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::tests::test_db;
    use crate::tests::{FixedClock, KnownRecords, RecordingOutbox};
    use axum::body::Body;
    use axum::http::Request;
    use chrono::DateTime;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    struct Harness {
        outbox: Arc<RecordingOutbox>,
        record_id: Uuid,
        app: Router,
    }

    async fn harness() -> Harness {
        let record_id = Uuid::now_v7();
        let outbox = Arc::new(RecordingOutbox::default());
        let app = routes(BillingDeps {
            db: test_db().await,
            outbox: outbox.clone(),
            clock: Arc::new(FixedClock(
                DateTime::from_timestamp_millis(1_780_000_000_000).unwrap(),
            )),
            records: Arc::new(KnownRecords(vec![record_id])),
            overdue_after: crate::DEFAULT_OVERDUE_AFTER,
        });
        Harness {
            outbox,
            record_id,
            app,
        }
    }

    async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn post_json(uri: &str, body: &Value) -> Request<Body> {
        Request::post(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    fn post_empty(uri: &str) -> Request<Body> {
        Request::post(uri).body(Body::empty()).unwrap()
    }

    fn get(uri: &str) -> Request<Body> {
        Request::get(uri).body(Body::empty()).unwrap()
    }

    fn code(body: &Value) -> &str {
        body["error"]["code"].as_str().unwrap_or_default()
    }

    #[tokio::test]
    async fn issuing_an_invoice_answers_201_open_and_publishes_invoice_issued() {
        let h = harness().await;
        let (status, body) = call(
            &h.app,
            post_json(
                "/invoices",
                &json!({"record_id": h.record_id, "amount_cents": 1250, "currency": "EUR"}),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(body["status"], "open");
        assert_eq!(body["amount_cents"], 1250);
        assert_eq!(body["currency"], "EUR");
        assert_eq!(body["record_id"], json!(h.record_id));
        assert_eq!(body["created_at"], "2026-05-28T20:26:40.000Z");
        assert_eq!(body["paid_at"], Value::Null);
        let published = h.outbox.published();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].name, "invoice.issued");
        assert_eq!(
            published[0].payload,
            json!({"invoice_id": body["id"], "record_id": h.record_id})
        );

        let (status, fetched) = call(
            &h.app,
            get(&format!("/invoices/{}", body["id"].as_str().unwrap())),
        )
        .await;
        assert_eq!((status, fetched), (StatusCode::OK, body));
    }

    #[tokio::test]
    async fn invalid_invoices_are_refused_with_their_codes() {
        let h = harness().await;
        let r = h.record_id;
        let cases = [
            (
                json!({"record_id": r, "amount_cents": 0, "currency": "EUR"}),
                "invalid_amount",
            ),
            (
                json!({"record_id": r, "amount_cents": -1, "currency": "EUR"}),
                "invalid_amount",
            ),
            (
                json!({"record_id": r, "amount_cents": 5, "currency": "eur"}),
                "invalid_currency",
            ),
            (
                json!({"record_id": r, "amount_cents": 5, "currency": "ABC"}),
                "invalid_currency",
            ),
            (
                json!({"record_id": Uuid::now_v7(), "amount_cents": 5, "currency": "EUR"}),
                "record_not_found",
            ),
            (
                json!({"record_id": "nope", "amount_cents": 5, "currency": "EUR"}),
                "invalid_body",
            ),
            (
                json!({"record_id": r, "amount_cents": 1.5, "currency": "EUR"}),
                "invalid_body",
            ),
            (
                json!({"record_id": r, "amount_cents": 5, "currency": "EUR", "x": 1}),
                "invalid_body",
            ),
            (json!({"record_id": r, "currency": "EUR"}), "invalid_body"),
        ];
        for (body, expected) in cases {
            let (status, answer) = call(&h.app, post_json("/invoices", &body)).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(code(&answer), expected, "{body}");
        }
        assert!(h.outbox.published().is_empty());
    }

    #[tokio::test]
    async fn paying_an_invoice_once_succeeds_and_twice_conflicts() {
        let h = harness().await;
        let (_, invoice) = call(
            &h.app,
            post_json(
                "/invoices",
                &json!({"record_id": h.record_id, "amount_cents": 99, "currency": "USD"}),
            ),
        )
        .await;
        let pay = format!("/invoices/{}/pay", invoice["id"].as_str().unwrap());
        let (status, paid) = call(&h.app, post_empty(&pay)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(paid["status"], "paid");
        assert_eq!(paid["paid_at"], "2026-05-28T20:26:40.000Z");

        let (status, again) = call(&h.app, post_empty(&pay)).await;
        assert_eq!(
            (status, code(&again)),
            (StatusCode::CONFLICT, "invoice_already_paid")
        );

        let names: Vec<String> = h
            .outbox
            .published()
            .iter()
            .map(|e| e.name.clone())
            .collect();
        assert_eq!(names, vec!["invoice.issued", "invoice.paid"]);
        let paid_event = h.outbox.published()[1].payload.clone();
        assert_eq!(
            paid_event,
            json!({"invoice_id": invoice["id"], "record_id": h.record_id})
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_concurrent_payments_have_exactly_one_winner() {
        sqlx::any::install_default_drivers();
        let path = std::env::temp_dir().join(format!("billing-pay-{}.db", Uuid::now_v7()));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap();
        for migration in crate::migrations::all() {
            sqlx::raw_sql(migration.sqlite)
                .execute(&pool)
                .await
                .unwrap();
        }
        let record_id = Uuid::now_v7();
        let outbox = Arc::new(RecordingOutbox::default());
        let app = routes(BillingDeps {
            db: events::Db::new(pool.clone(), events::Backend::Sqlite),
            outbox: outbox.clone(),
            clock: Arc::new(FixedClock(DateTime::from_timestamp_millis(0).unwrap())),
            records: Arc::new(KnownRecords(vec![record_id])),
            overdue_after: crate::DEFAULT_OVERDUE_AFTER,
        });
        let (_, invoice) = call(
            &app,
            post_json(
                "/invoices",
                &json!({"record_id": record_id, "amount_cents": 1, "currency": "EUR"}),
            ),
        )
        .await;
        let pay = format!("/invoices/{}/pay", invoice["id"].as_str().unwrap());
        let (a, b) = tokio::join!(call(&app, post_empty(&pay)), call(&app, post_empty(&pay)));
        let mut statuses = vec![a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, vec![StatusCode::OK, StatusCode::CONFLICT]);
        let paid_events = outbox
            .published()
            .iter()
            .filter(|e| e.name == "invoice.paid")
            .count();
        assert_eq!(paid_events, 1);
        pool.close().await;
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn unknown_and_malformed_invoice_ids_are_refused() {
        let h = harness().await;
        let unknown = Uuid::now_v7();
        let (status, body) = call(&h.app, get(&format!("/invoices/{unknown}"))).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "invoice_not_found")
        );
        let (status, body) = call(&h.app, post_empty(&format!("/invoices/{unknown}/pay"))).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "invoice_not_found")
        );
        let (status, body) = call(&h.app, post_empty("/invoices/123/pay")).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_path")
        );
    }
}
