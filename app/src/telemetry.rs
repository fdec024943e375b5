//! Logging and trace export set-up. Logs: `RUST_LOG` filters, `KEEL_LOG_FORMAT=json`
//! switches to one JSON object a line; the sink is a parameter so tests can capture what
//! would be logged. Traces: with `[telemetry] otlp_endpoint` (or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`) set, every `tracing` span — the HTTP request, a publish,
//! each listener and job attempt, the outbound webhook or SMTP call — is exported over
//! OTLP/HTTP (protobuf) in batches, and the W3C trace context is carried across the queue
//! (stored with each job, see `events::propagation`), so one chain is one trace. Unset: no
//! exporter and no propagation — nothing is stored, nothing is sent.

use std::collections::HashMap;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{KeyValue, propagation::TextMapPropagator};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::TelemetrySettings;

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object a line.
    Json,
}

impl LogFormat {
    /// The format `KEEL_LOG_FORMAT` asks for.
    pub fn from_env() -> Self {
        match std::env::var("KEEL_LOG_FORMAT").as_deref() {
            Ok("json") => Self::Json,
            _ => Self::Pretty,
        }
    }
}

/// The trace exporter, when one runs: flush it before the process exits.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends every finished span now.
    pub fn flush(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.force_flush()
        {
            tracing::warn!(error = %e, "flushing spans failed");
        }
    }

    /// Flushes and stops the exporter (at exit).
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "stopping the span exporter failed");
        }
    }
}

/// Installs the global subscriber writing logs to `sink` and, when `export` names an
/// endpoint, exporting spans there; a second call is a no-op (tests start several apps in
/// one process) and exports nothing.
///
/// # Errors
/// Fails when the exporter cannot be built (e.g. an endpoint that is not a URL).
pub fn init<W>(format: LogFormat, sink: W, export: &TelemetrySettings) -> anyhow::Result<Telemetry>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,lettre=warn"));
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(sink)
            .with_target(false)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(sink)
            .with_target(false)
            .compact()
            .boxed(),
    }
    .with_filter(filter);
    let provider = match &export.otlp_endpoint {
        Some(endpoint) => Some(provider(endpoint, export)?),
        None => None,
    };
    let spans = provider.as_ref().map(|p| {
        // Keel's own spans; never the exporter's HTTP client (it would trace itself).
        let only_keel = EnvFilter::new(
            "info,sqlx=off,hyper=off,hyper_util=off,h2=off,reqwest=off,tower=off,opentelemetry=off,opentelemetry_sdk=off,lettre=off",
        );
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("keel"))
            .with_filter(only_keel)
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .is_ok();
    if !installed {
        // Already installed: keep the first, and its exporter.
        if let Some(p) = provider {
            let _ = p.shutdown();
        }
        return Ok(Telemetry::default());
    }
    if provider.is_some() {
        events::propagation::install(events::propagation::Propagation {
            current: current_traceparent,
            continue_from,
        });
    }
    Ok(Telemetry { provider })
}

/// A batch exporter over OTLP/HTTP protobuf, with the standard resource attributes.
fn provider(endpoint: &str, export: &TelemetrySettings) -> anyhow::Result<SdkTracerProvider> {
    let base = endpoint.trim_end_matches('/');
    let url = if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .build()?;
    let batch = BatchConfigBuilder::default()
        .with_scheduled_delay(export.export_interval)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("keel")
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("process.pid", i64::from(std::process::id())),
        ])
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

/// The current span's W3C `traceparent`, when it is sampled into a trace.
fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// Makes `span` a child of the span a `traceparent` names (a malformed one is ignored).
fn continue_from(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}
