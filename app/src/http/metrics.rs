//! `GET /metrics`: Prometheus text. Counters and histograms are recorded where things happen
//! (the runtime's workers, the HTTP edge, webhook deliveries) through the `metrics` facade;
//! queue depth, oldest ready age and live workers are read from the database at scrape time,
//! so every replica reports the shared truth. [`ApiDoc`] describes the route for the OpenAPI
//! document.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use events::http::{ApiError, ErrorBody};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use runtime::Runtime;

use super::admin::runtime_error;

/// The job states a schedule's last outcome is reported as.
const SCHEDULE_OUTCOMES: [&str; 8] = [
    "available",
    "scheduled",
    "reserved",
    "running",
    "retrying",
    "completed",
    "cancelled",
    "dead",
];

/// Histogram buckets in seconds: from a fast claim to a slow webhook.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The process-wide recorder (installed once, even when tests start several apps).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /metrics shows this one only"
            );
        }
        handle
    })
}

/// The metrics route's OpenAPI description.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(render))]
pub struct ApiDoc;

/// The metrics route.
pub fn routes(runtime: Runtime) -> Router {
    handle();
    Router::new()
        .route("/metrics", get(render))
        .with_state(runtime)
}

/// Counts requests and their latency by route template (`/records/{id}`, so there is not
/// one series per id) and status. Applied as a route layer, where the template is known.
pub async fn track(
    route: Option<axum::extract::MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = request.method().to_string();
    let route = route.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("keel_http_requests_total", &labels).increment(1);
    metrics::histogram!("keel_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Prometheus text exposition: job figures labelled `queue` and `job_type`, HTTP requests by
/// route template and status, queue depth, live workers, and each schedule's next run,
/// last run and last outcome.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4.", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 500, description = "`internal_error`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry shortly.", body = ErrorBody)
    )
)]
async fn render(State(runtime): State<Runtime>) -> Result<impl IntoResponse, ApiError> {
    let names: Vec<String> = runtime.config().queues.keys().cloned().collect();
    let stats = runtime::admin::queue_stats(runtime.db(), runtime.time(), &names)
        .await
        .map_err(runtime_error)?;
    for s in &stats {
        for (state, n) in [
            ("ready", s.ready),
            ("scheduled", s.scheduled),
            ("reserved", s.reserved),
            ("running", s.running),
            ("retrying", s.retrying),
            ("dead", s.dead),
        ] {
            metrics::gauge!("keel_queue_jobs", "queue" => s.queue.clone(), "state" => state)
                .set(n as f64);
        }
        metrics::gauge!("keel_queue_oldest_ready_age_seconds", "queue" => s.queue.clone())
            .set(s.oldest_ready_age_seconds.unwrap_or(0.0));
        if s.queue == runtime::admin::BROKER_ROW {
            // The relay's own names, besides the `queue="broker"` row.
            metrics::gauge!("keel_broker_backlog").set(s.ready as f64);
            metrics::gauge!("keel_broker_lag_seconds")
                .set(s.oldest_ready_age_seconds.unwrap_or(0.0));
        }
    }
    let alive =
        runtime::admin::workers_alive(runtime.db(), runtime.time(), runtime.config().dead_after)
            .await
            .map_err(runtime_error)?;
    metrics::gauge!("keel_workers_alive").set(alive as f64);
    let schedules = runtime.schedule_statuses().await.map_err(runtime_error)?;
    for s in &schedules {
        let seconds = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0)
        };
        metrics::gauge!("keel_schedule_next_run_timestamp_seconds", "schedule" => s.name.clone())
            .set(seconds(s.next_run_at));
        metrics::gauge!("keel_schedule_last_run_timestamp_seconds", "schedule" => s.name.clone())
            .set(seconds(s.last_run_at));
        metrics::gauge!("keel_schedule_paused", "schedule" => s.name.clone()).set(if s.paused {
            1.0
        } else {
            0.0
        });
        // One series per outcome, 1 for the last job's: a state that changed goes back to 0.
        for outcome in SCHEDULE_OUTCOMES {
            let current = s.last_outcome.as_deref() == Some(outcome);
            metrics::gauge!("keel_schedule_last_outcome", "schedule" => s.name.clone(), "outcome" => outcome)
                .set(if current { 1.0 } else { 0.0 });
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle().render(),
    ))
}
