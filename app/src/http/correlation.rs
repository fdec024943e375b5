//! Every request belongs to a chain: adopt the caller's `x-correlation-id` (or the trace id
//! of a W3C `traceparent`), else start one; run the request inside that trace context so
//! whatever it publishes or enqueues carries it; echo it on the response; and record
//! mutating requests so `keel trace` can show where a chain began.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use events::TraceContext;
use events::context::CorrelationId;
use tracing::Instrument;
use uuid::Uuid;

use super::EdgeState;

/// The header that carries the correlation id, in and out.
pub const HEADER: &str = "x-correlation-id";

/// The middleware.
pub async fn layer(State(edge): State<EdgeState>, request: Request, next: Next) -> Response {
    let correlation_id = from_headers(request.headers());
    let request_id = Uuid::now_v7();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();

    let span = tracing::info_span!(
        "request",
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        %method,
        path = %path,
        correlation_id = %correlation_id,
        request_id = %request_id,
    );
    // Only for the trace exporter (logs stay as they were without one): the span's name and
    // kind, and the caller's W3C trace context, which this request's span continues.
    if events::propagation::enabled() {
        span.record("otel.name", method.as_str());
        span.record("otel.kind", "server");
    }
    events::propagation::continue_trace(
        &span,
        request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    let trace = TraceContext {
        correlation_id: correlation_id.clone(),
        causation_id: Some(request_id),
    };
    let started = Instant::now();
    let started_at = edge.runtime.clock().now();
    let mut response = trace
        .scope(next.run(request))
        .instrument(span.clone())
        .await;
    let status = response.status().as_u16();
    if let Ok(value) = HeaderValue::from_str(correlation_id.as_str()) {
        response.headers_mut().insert(HEADER, value);
    }
    let elapsed = started.elapsed();

    if method != Method::GET && method != Method::HEAD {
        let record = runtime::trace::RequestRecord {
            id: request_id,
            correlation_id: correlation_id.to_string(),
            method: method.to_string(),
            path,
            status,
            started_at,
            duration_ms: i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
        };
        edge.requests.record(record);
    }
    span.in_scope(|| {
        tracing::info!(
            status,
            duration_ms = elapsed.as_millis() as u64,
            "request handled"
        );
    });
    response
}

/// The correlation id a request asks for, or a new one.
pub fn from_headers(headers: &axum::http::HeaderMap) -> CorrelationId {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(CorrelationId::parse)
        .or_else(|| {
            headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .and_then(trace_id_of)
                .and_then(|t| CorrelationId::parse(&t))
        })
        .unwrap_or_default()
}

/// The trace id of a `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`), when valid.
fn trace_id_of(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(span_id, 16)
        && hex(flags, 2);
    valid.then(|| trace_id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_trace_ids_are_adopted() {
        assert_eq!(
            trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert!(trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(trace_id_of("garbage").is_none());
    }
}
