//! The records module's routes: create, read and page through records; upload an NDJSON
//! import and follow its progress. Every failure maps to `{"error": {"code", "message"}}`
//! here, in the two `From<…> for ApiError` impls. Each handler carries its OpenAPI
//! description (`#[utoipa::path]`), gathered by [`ApiDoc`].

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use uuid::Uuid;

use events::http::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, ErrorDetail};
use events::outbox::OutboxExt;
use events::{NewJob, PublishError, RecordCreated};

use crate::RecordsDeps;
use crate::jobs::RunImport;
use crate::model::{
    CreateRecordRequest, FailedRow, ImportAccepted, ImportStatus, ImportView, InvalidRecord,
    NewRecord, Record, RecordPage, RecordView,
};
use crate::store;
use crate::upload::{MAX_UPLOAD_BYTES, Spool, UploadError};

/// Page size when the client names none.
pub const DEFAULT_PAGE: i64 = 50;
/// Largest page a client may ask for.
pub const MAX_PAGE: i64 = 200;
/// Failed rows shown by `GET /imports/{id}` (the first ones, by line).
pub const MAX_FAILED_ROWS_SHOWN: i64 = 1000;
/// Text bytes of import lines stored per `INSERT`, besides the row cap.
const INSERT_BYTES: usize = 4 * 1024 * 1024;

type Shared = Arc<RecordsDeps>;

/// The module's routes with their state applied.
pub fn routes(deps: RecordsDeps) -> Router {
    Router::new()
        .route("/records", post(create_record).get(list_records))
        .route("/records/{id}", get(get_record))
        .route(
            "/imports",
            post(upload_import).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/imports/{id}", get(get_import))
        .with_state(Arc::new(deps))
}

/// The module's OpenAPI document: its routes, their bodies and their errors.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(create_record, list_records, get_record, upload_import, get_import),
    components(schemas(
        CreateRecordRequest,
        RecordView,
        RecordPage,
        ImportAccepted,
        ImportView,
        ImportStatus,
        FailedRow,
        ErrorBody,
        ErrorDetail
    )),
    tags(
        (name = "records", description = "Records: create, read, page through."),
        (name = "imports", description = "Bulk NDJSON imports of records and their progress.")
    )
)]
pub(crate) struct ApiDoc;

/// Why a record operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A field is invalid.
    #[error(transparent)]
    Invalid(#[from] InvalidRecord),
    /// No record has this id.
    #[error("no record has this id")]
    NotFound,
    /// `limit` is not an integer in 1..=200.
    #[error("limit must be an integer from 1 to {MAX_PAGE}")]
    InvalidLimit,
    /// `cursor` is not one this API handed out.
    #[error("cursor is not valid; use a next_cursor from a previous page")]
    InvalidCursor,
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The event could not be written to the outbox.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl From<RecordError> for ApiError {
    fn from(error: RecordError) -> Self {
        let message = error.to_string();
        match error {
            RecordError::Invalid(InvalidRecord::Title) => {
                ApiError::invalid("invalid_title", message)
            }
            RecordError::Invalid(InvalidRecord::OwnerEmail) => {
                ApiError::invalid("invalid_owner_email", message)
            }
            RecordError::Invalid(InvalidRecord::Attributes(_)) => {
                ApiError::invalid("invalid_attributes", message)
            }
            RecordError::NotFound => ApiError::not_found("record_not_found", message),
            RecordError::InvalidLimit => ApiError::invalid("invalid_limit", message),
            RecordError::InvalidCursor => ApiError::invalid("invalid_cursor", message),
            RecordError::Database(e) | RecordError::Publish(PublishError::Database(e)) => {
                ApiError::from_database(&e)
            }
            RecordError::Publish(PublishError::Encode(e)) => internal(&e),
        }
    }
}

impl IntoResponse for RecordError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// Why an import operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The upload could not be received.
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// The file has no non-blank line.
    #[error("the import has no records: every line is empty")]
    Empty,
    /// No import has this id.
    #[error("no import has this id")]
    NotFound,
    /// The import job could not be encoded.
    #[error("the import job does not encode: {0}")]
    Encode(#[from] serde_json::Error),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<ImportError> for ApiError {
    fn from(error: ImportError) -> Self {
        let message = error.to_string();
        match error {
            ImportError::Upload(UploadError::TooLarge) => too_large(),
            ImportError::Upload(UploadError::Body(_)) => {
                ApiError::new(StatusCode::BAD_REQUEST, "body_read_failed", message)
            }
            ImportError::Upload(UploadError::Spool(e)) => internal(&e),
            ImportError::Empty => ApiError::invalid("empty_import", message),
            ImportError::NotFound => ApiError::not_found("import_not_found", message),
            ImportError::Encode(e) => internal(&e),
            ImportError::Database(e) => ApiError::from_database(&e),
        }
    }
}

impl IntoResponse for ImportError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

fn internal(error: &dyn std::error::Error) -> ApiError {
    tracing::error!(error = %error, "records: internal error");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "an internal error occurred",
    )
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "an import may be at most {} MiB",
            MAX_UPLOAD_BYTES / (1024 * 1024)
        ),
    )
}

/// Creates a record and publishes `record.created`.
#[utoipa::path(
    post,
    path = "/records",
    tag = "records",
    request_body = CreateRecordRequest,
    responses(
        (status = 201, description = "The record, created.", body = RecordView),
        (status = 400, description = "`malformed_json`: the body is not JSON.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the limit.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not `application/json`.", body = ErrorBody),
        (status = 422, description = "`invalid_title`, `invalid_owner_email`, `invalid_attributes`; `invalid_body` for unknown fields, wrong types or missing fields.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn create_record(
    State(deps): State<Shared>,
    ApiJson(request): ApiJson<CreateRecordRequest>,
) -> Result<(StatusCode, ApiJson<RecordView>), RecordError> {
    let new = NewRecord::parse(request)?;
    let record = Record {
        id: Uuid::now_v7(),
        title: new.title,
        owner_email: new.owner_email,
        attributes: new.attributes,
        created_at: deps.clock.now(),
    };
    let mut tx = deps.db.begin().await?;
    store::insert_record(&mut tx, &record).await?;
    deps.outbox
        .publish(
            &mut tx,
            &RecordCreated {
                record_id: record.id,
            },
        )
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(RecordView::from(record))))
}

/// Reads one record.
#[utoipa::path(
    get,
    path = "/records/{id}",
    tag = "records",
    params(("id" = Uuid, Path, description = "The record's id.")),
    responses(
        (status = 200, description = "The record.", body = RecordView),
        (status = 404, description = "`record_not_found`: no record has this id.", body = ErrorBody),
        (status = 422, description = "`invalid_path`: the id is not a UUID.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn get_record(
    State(deps): State<Shared>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<RecordView>, RecordError> {
    let record = store::find_record(deps.db.pool(), id)
        .await?
        .ok_or(RecordError::NotFound)?;
    Ok(ApiJson(RecordView::from(record)))
}

/// The query string of `GET /records`; values are parsed by hand so a bad one gets its own
/// error code.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// Absent: the default page. Present, it must be an integer in range — an empty value
/// (`?limit=`) is a mistake in the caller's URL, not a request for the default.
fn parse_limit(raw: Option<&str>) -> Result<i64, RecordError> {
    match raw {
        None => Ok(DEFAULT_PAGE),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or(RecordError::InvalidLimit),
    }
}

fn parse_cursor(raw: Option<&str>) -> Result<Option<Uuid>, RecordError> {
    match raw {
        None | Some("") => Ok(None),
        Some(text) => Uuid::try_parse(text)
            .map(Some)
            .map_err(|_| RecordError::InvalidCursor),
    }
}

/// Pages through records, oldest first.
#[utoipa::path(
    get,
    path = "/records",
    tag = "records",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Records per page: 1 to 200, default 50."),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page; absent for the first page.")
    ),
    responses(
        (status = 200, description = "A page of records.", body = RecordPage),
        (status = 422, description = "`invalid_limit`: `limit` is not an integer from 1 to 200 (an empty `limit=` included); `invalid_cursor`; `invalid_query` for an unknown parameter.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn list_records(
    State(deps): State<Shared>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<ApiJson<RecordPage>, RecordError> {
    let limit = parse_limit(query.limit.as_deref())?;
    let after = parse_cursor(query.cursor.as_deref())?;
    let mut records = store::list_records(deps.db.pool(), after, limit + 1).await?;
    let more = records.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more {
        records.last().map(|r| r.id.to_string())
    } else {
        None
    };
    let items: Vec<RecordView> = records.into_iter().map(RecordView::from).collect();
    Ok(ApiJson(RecordPage { items, next_cursor }))
}

/// Stores an NDJSON file, one record a line as for `POST /records`, and queues its import.
#[utoipa::path(
    post,
    path = "/imports",
    tag = "imports",
    request_body(
        content = String,
        content_type = "application/x-ndjson",
        description = "One JSON object a line, each as the body of `POST /records`; blank lines are skipped. At most 64 MiB."
    ),
    responses(
        (status = 202, description = "Stored; its job is queued. Follow it with `GET /imports/{id}`.", body = ImportAccepted),
        (status = 400, description = "`body_read_failed`: the upload broke off.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the file is over the limit.", body = ErrorBody),
        (status = 422, description = "`empty_import`: every line is blank.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn upload_import(
    State(deps): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, ApiJson<ImportAccepted>), ImportError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_UPLOAD_BYTES as u64) {
        return Err(UploadError::TooLarge.into());
    }
    let mut spool = Spool::receive(body.into_data_stream()).await?;
    if spool.total() == 0 {
        return Err(ImportError::Empty);
    }

    let import_id = Uuid::now_v7();
    let job = NewJob::of(&RunImport { import_id })?;
    let mut tx = deps.db.begin().await?;
    store::insert_import(&mut tx, import_id, spool.total(), deps.clock.now()).await?;
    loop {
        let batch = spool
            .next_batch(store::LINES_PER_INSERT, INSERT_BYTES)
            .await?;
        if batch.is_empty() {
            break;
        }
        store::insert_lines(&mut tx, import_id, &batch).await?;
    }
    deps.jobs.enqueue(&mut tx, job).await?;
    tx.commit().await?;
    tracing::info!(%import_id, total = spool.total(), "import queued");
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(ImportAccepted {
            id: import_id,
            status: ImportStatus::Queued,
        }),
    ))
}

/// Reads an import's progress and its first failed lines.
#[utoipa::path(
    get,
    path = "/imports/{id}",
    tag = "imports",
    params(("id" = Uuid, Path, description = "The import's id.")),
    responses(
        (status = 200, description = "The import's progress.", body = ImportView),
        (status = 404, description = "`import_not_found`: no import has this id.", body = ErrorBody),
        (status = 422, description = "`invalid_path`: the id is not a UUID.", body = ErrorBody),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn get_import(
    State(deps): State<Shared>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<ImportView>, ImportError> {
    let import = store::find_import(deps.db.pool(), id)
        .await?
        .ok_or(ImportError::NotFound)?;
    // Two reads, two snapshots: a batch may commit between them. Its failures lie past the
    // checkpoint read above (they commit together with the checkpoint's advance), so showing
    // only rows up to it keeps `failed_rows` consistent with `processed` and `failed`.
    let failed_rows: Vec<FailedRow> = store::failed_rows(deps.db.pool(), id, MAX_FAILED_ROWS_SHOWN)
        .await?
        .into_iter()
        .filter(|row| row.line <= import.checkpoint)
        .collect();
    Ok(ApiJson(ImportView {
        id: import.id,
        status: import.status,
        total: import.total,
        processed: import.processed,
        failed: import.failed,
        failed_rows,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::jobs::tests::{RecordingOutbox, RecordingQueue, fixed_clock};
    use crate::store::tests::test_db;
    use axum::http::Request;
    use events::Db;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    struct Harness {
        db: Db,
        outbox: Arc<RecordingOutbox>,
        queue: Arc<RecordingQueue>,
        app: Router,
    }

    async fn harness() -> Harness {
        let db = test_db().await;
        let outbox = Arc::new(RecordingOutbox::default());
        let queue = Arc::new(RecordingQueue::default());
        let app = routes(RecordsDeps {
            db: db.clone(),
            outbox: outbox.clone(),
            jobs: queue.clone(),
            clock: fixed_clock(),
        });
        Harness {
            db,
            outbox,
            queue,
            app,
        }
    }

    async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, body)
    }

    fn post_json(uri: &str, body: &str) -> Request<Body> {
        Request::post(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    fn get(uri: &str) -> Request<Body> {
        Request::get(uri).body(Body::empty()).unwrap()
    }

    fn code(body: &Value) -> &str {
        body["error"]["code"].as_str().unwrap_or_default()
    }

    #[tokio::test]
    async fn creating_a_record_answers_201_and_publishes_record_created() {
        let h = harness().await;
        let (status, body) = call(
            &h.app,
            post_json(
                "/records",
                r#"{"title":" Hello ","owner_email":"o@example.com","attributes":{"a":1}}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(body["title"], "Hello");
        assert_eq!(body["owner_email"], "o@example.com");
        assert_eq!(body["attributes"], json!({"a": 1}));
        assert_eq!(body["created_at"], "2026-05-28T20:26:40.000Z");
        let published = h.outbox.published();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].name, "record.created");
        assert_eq!(published[0].payload, json!({ "record_id": body["id"] }));

        let (status, fetched) = call(
            &h.app,
            get(&format!("/records/{}", body["id"].as_str().unwrap())),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(fetched, body);
    }

    #[tokio::test]
    async fn attributes_default_to_an_empty_object() {
        let h = harness().await;
        let (status, body) = call(
            &h.app,
            post_json("/records", r#"{"title":"T","owner_email":"o@example.com"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(body["attributes"], json!({}));
    }

    #[tokio::test]
    async fn invalid_records_are_refused_with_their_codes_and_publish_nothing() {
        let h = harness().await;
        let cases = [
            (
                r#"{"title":"  ","owner_email":"o@example.com"}"#,
                "invalid_title",
            ),
            (
                r#"{"title":"T","owner_email":"nope"}"#,
                "invalid_owner_email",
            ),
            (
                r#"{"title":"T","owner_email":"o@example.com","attributes":[1]}"#,
                "invalid_attributes",
            ),
            (
                r#"{"title":"T","owner_email":"o@example.com","extra":1}"#,
                "invalid_body",
            ),
            (
                r#"{"title":5,"owner_email":"o@example.com"}"#,
                "invalid_body",
            ),
            (r#"{"title":"T"}"#, "invalid_body"),
        ];
        for (body, expected) in cases {
            let (status, answer) = call(&h.app, post_json("/records", body)).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(code(&answer), expected, "{body}");
        }
        assert!(h.outbox.published().is_empty());
    }

    #[tokio::test]
    async fn unknown_and_malformed_record_ids_are_refused() {
        let h = harness().await;
        let (status, body) = call(&h.app, get(&format!("/records/{}", Uuid::now_v7()))).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "record_not_found")
        );
        let (status, body) = call(&h.app, get("/records/not-a-uuid")).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_path")
        );
    }

    #[tokio::test]
    async fn records_page_with_a_cursor() {
        let h = harness().await;
        let mut ids = Vec::new();
        for i in 0..5 {
            let (_, body) = call(
                &h.app,
                post_json(
                    "/records",
                    &format!(r#"{{"title":"R{i}","owner_email":"o@example.com"}}"#),
                ),
            )
            .await;
            ids.push(body["id"].as_str().unwrap().to_owned());
        }
        let (status, page) = call(&h.app, get("/records?limit=2")).await;
        assert_eq!(status, StatusCode::OK);
        let got: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(got, ids[..2]);
        assert_eq!(page["next_cursor"], ids[1].as_str());

        let (_, last) = call(&h.app, get(&format!("/records?limit=3&cursor={}", ids[1]))).await;
        let got: Vec<&str> = last["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(got, ids[2..]);
        assert_eq!(last["next_cursor"], Value::Null);

        let (_, all) = call(&h.app, get("/records")).await;
        assert_eq!(all["items"].as_array().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn bad_page_parameters_are_refused() {
        let h = harness().await;
        for (uri, expected) in [
            ("/records?limit=0", "invalid_limit"),
            ("/records?limit=201", "invalid_limit"),
            ("/records?limit=ten", "invalid_limit"),
            ("/records?limit=", "invalid_limit"),
            ("/records?limit=%20", "invalid_limit"),
            ("/records?limit=1.5", "invalid_limit"),
            ("/records?limit=-3", "invalid_limit"),
            ("/records?cursor=zzz", "invalid_cursor"),
            ("/records?page=2", "invalid_query"),
        ] {
            let (status, body) = call(&h.app, get(uri)).await;
            assert_eq!(
                (status, code(&body)),
                (StatusCode::UNPROCESSABLE_ENTITY, expected),
                "{uri}"
            );
        }
    }

    fn post_ndjson(body: impl Into<Body>) -> Request<Body> {
        Request::post("/imports")
            .header("content-type", "application/x-ndjson")
            .body(body.into())
            .unwrap()
    }

    #[tokio::test]
    async fn an_upload_is_stored_and_its_job_enqueued_in_one_go() {
        let h = harness().await;
        let ndjson = "{\"title\":\"A\",\"owner_email\":\"a@example.com\"}\n\n{\"title\":\"B\",\"owner_email\":\"b@\"}\n";
        let (status, body) = call(&h.app, post_ndjson(ndjson)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(body["status"], "queued");
        let id = body["id"].as_str().unwrap().to_owned();

        let jobs = h.queue.enqueued();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].job_type, "records.run_import");
        assert_eq!(jobs[0].payload, json!({ "import_id": id }));

        let (status, progress) = call(&h.app, get(&format!("/imports/{id}"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(progress["status"], "queued");
        assert_eq!(
            (progress["total"].as_i64(), progress["processed"].as_i64()),
            (Some(2), Some(0))
        );
        assert_eq!(progress["failed_rows"], json!([]));

        let stored: Vec<i64> =
            sqlx::query_scalar("SELECT line_no FROM records_import_lines ORDER BY line_no")
                .fetch_all(h.db.pool())
                .await
                .unwrap();
        assert_eq!(stored, vec![1, 3]);
    }

    #[tokio::test]
    async fn an_upload_and_its_job_run_end_to_end() {
        let h = harness().await;
        let mut ndjson = String::new();
        for i in 1..=1200 {
            if i % 100 == 0 {
                ndjson.push_str("{\"title\":\"\",\"owner_email\":\"x@example.com\"}\n");
            } else {
                ndjson.push_str(&format!(
                    "{{\"title\":\"R{i}\",\"owner_email\":\"o{i}@example.com\"}}\n"
                ));
            }
        }
        let (_, body) = call(&h.app, post_ndjson(ndjson)).await;
        let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();

        let handler = crate::jobs::RunImportHandler::new(
            h.db.clone(),
            h.outbox.clone(),
            h.queue.clone(),
            fixed_clock(),
        );
        let ctx = events::JobContext {
            id: Uuid::now_v7(),
            job_type: "records.run_import".to_owned(),
            queue: "imports".to_owned(),
            attempt: 1,
            max_attempts: 6,
            timeout: std::time::Duration::from_secs(30),
            idempotency_key: id.to_string(),
            trace: events::TraceContext::new_chain(),
            enqueued_at: chrono::Utc::now(),
            payload: json!({ "import_id": id }),
        };
        let detail = events::jobs::HandleJob::handle(&handler, RunImport { import_id: id }, &ctx)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(detail["outcome"], "completed");

        let (_, progress) = call(&h.app, get(&format!("/imports/{id}"))).await;
        assert_eq!(progress["status"], "completed");
        assert_eq!(
            (progress["total"].as_i64(), progress["processed"].as_i64()),
            (Some(1200), Some(1200))
        );
        let failed = progress["failed_rows"].as_array().unwrap();
        assert_eq!(failed.len(), 12);
        assert_eq!(
            failed[0],
            json!({ "line": 100, "error": "invalid title: must be 1 to 200 characters after trimming, without control characters" })
        );
        let (_, page) = call(&h.app, get("/records?limit=200")).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 200);
    }

    #[tokio::test]
    async fn a_hundred_thousand_line_import_runs_to_completion() {
        let h = harness().await;
        let line = "{\"title\":\"Bulk\",\"owner_email\":\"bulk@example.com\"}\n";
        // Streamed in 64 KiB chunks, as a client would send it.
        let file = line.repeat(100_000).into_bytes();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            file.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
        let request = Request::post("/imports")
            .body(Body::from_stream(futures::stream::iter(chunks)))
            .unwrap();
        let (status, body) = call(&h.app, request).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();

        let handler = crate::jobs::RunImportHandler::new(
            h.db.clone(),
            h.outbox.clone(),
            h.queue.clone(),
            fixed_clock(),
        );
        let ctx = events::JobContext {
            id: Uuid::now_v7(),
            job_type: "records.run_import".to_owned(),
            queue: "imports".to_owned(),
            attempt: 1,
            max_attempts: 6,
            timeout: std::time::Duration::from_secs(30),
            idempotency_key: id.to_string(),
            trace: events::TraceContext::new_chain(),
            enqueued_at: chrono::Utc::now(),
            payload: json!({ "import_id": id }),
        };
        let mut outcome = String::new();
        for _ in 0..1000 {
            let detail =
                events::jobs::HandleJob::handle(&handler, RunImport { import_id: id }, &ctx)
                    .await
                    .unwrap()
                    .unwrap();
            outcome = detail["outcome"].as_str().unwrap().to_owned();
            if outcome != "continued" {
                break;
            }
        }
        assert_eq!(outcome, "completed");
        let (_, progress) = call(&h.app, get(&format!("/imports/{id}"))).await;
        assert_eq!(progress["status"], "completed");
        assert_eq!(progress["processed"], 100_000);
        let records: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM records_records")
            .fetch_one(h.db.pool())
            .await
            .unwrap();
        assert_eq!(records, 100_000);
    }

    #[tokio::test]
    async fn an_empty_upload_is_refused() {
        let h = harness().await;
        for body in ["", "\n \n\t\n"] {
            let (status, answer) = call(&h.app, post_ndjson(body)).await;
            assert_eq!(
                (status, code(&answer)),
                (StatusCode::UNPROCESSABLE_ENTITY, "empty_import")
            );
        }
        assert!(h.queue.enqueued().is_empty());
    }

    #[tokio::test]
    async fn an_upload_declared_too_large_gets_a_json_413() {
        let h = harness().await;
        let request = Request::post("/imports")
            .header("content-length", (MAX_UPLOAD_BYTES + 1).to_string())
            .body(Body::from("{}\n"))
            .unwrap();
        let (status, body) = call(&h.app, request).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        );
    }

    #[tokio::test]
    async fn a_streamed_upload_past_the_limit_gets_a_json_413() {
        let h = harness().await;
        let chunk = vec![b'x'; 1024 * 1024];
        let chunks = (0..65).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
        let request = Request::post("/imports")
            .body(Body::from_stream(futures::stream::iter(chunks)))
            .unwrap();
        let (status, body) = call(&h.app, request).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        );
    }

    #[tokio::test]
    async fn failures_of_a_batch_committed_after_the_progress_was_read_are_not_shown() {
        let h = harness().await;
        let (_, accepted) = call(
            &h.app,
            post_json("/imports", r#"{"title":"T","owner_email":"o@example.com"}"#),
        )
        .await;
        let id: Uuid = accepted["id"].as_str().unwrap().parse().unwrap();
        // A failure whose batch has not advanced the checkpoint the reader saw.
        let mut conn = h.db.pool().acquire().await.unwrap();
        let failure = FailedRow {
            line: 1,
            error: "invalid owner_email".into(),
        };
        store::insert_failures(&mut conn, id, &[failure])
            .await
            .unwrap();
        drop(conn);
        let (_, body) = call(&h.app, get(&format!("/imports/{id}"))).await;
        assert_eq!(
            (&body["processed"], &body["failed"]),
            (&json!(0), &json!(0))
        );
        assert_eq!(body["failed_rows"], json!([]), "{body}");
    }

    #[tokio::test]
    async fn unknown_imports_are_404() {
        let h = harness().await;
        let (status, body) = call(&h.app, get(&format!("/imports/{}", Uuid::now_v7()))).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "import_not_found")
        );
    }

    #[test]
    fn limits_parse_within_bounds() {
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(parse_limit(Some("200")).unwrap(), 200);
        assert!(parse_limit(Some("-1")).is_err());
        assert!(parse_limit(Some("")).is_err());
        assert!(parse_limit(Some(" 5")).is_err());
        assert!(parse_cursor(Some("abc")).is_err());
    }
}
