//! OpenTelemetry: with `[telemetry] otlp_endpoint` set, one chain is one trace, exported
//! over OTLP/HTTP protobuf to a receiver in this test that decodes it — the HTTP request
//! (continuing the caller's `traceparent`), the publish, the inline listener, the webhook
//! job's attempt (across the queue hop, from the traceparent stored with the job) and the
//! outbound webhook call, whose `traceparent` header names that call's span.
//!
//! Its own test binary: the trace exporter is process-wide, installed once.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use app::config::{Overrides, Settings};
use app::telemetry::{LogFormat, Telemetry};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use serde_json::json;
use tests::app::{AppOptions, client, expect_json, spawn_app};
use tests::poll::eventually;
use tests::receivers::{HttpReceiver, SmtpReceiver};
use tests::{TestDb, both_backends};

const WITHIN: Duration = Duration::from_secs(20);

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    attributes: Vec<(String, String)>,
    resource: Vec<(String, String)>,
}

impl Span {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn text(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(s)) => s.clone(),
                Some(Any::IntValue(i)) => i.to_string(),
                Some(Any::BoolValue(b)) => b.to_string(),
                Some(Any::DoubleValue(d)) => d.to_string(),
                _ => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A local OTLP/HTTP receiver on a thread and runtime of its own (it outlives each test's
/// runtime), and the exporter pointed at it — both once per process.
fn exported() -> &'static (Arc<Mutex<Vec<Span>>>, Telemetry) {
    static ONCE: OnceLock<(Arc<Mutex<Vec<Span>>>, Telemetry)> = OnceLock::new();
    ONCE.get_or_init(|| {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let store = spans.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let route = axum::routing::post(move |body: axum::body::Bytes| {
                    let store = store.clone();
                    async move {
                        let request = ExportTraceServiceRequest::decode(body).unwrap();
                        let mut out = store.lock().unwrap();
                        for rs in request.resource_spans {
                            let resource = text(&rs.resource.map(|r| r.attributes).unwrap_or_default());
                            for ss in rs.scope_spans {
                                for s in ss.spans {
                                    out.push(Span {
                                        trace_id: hex(&s.trace_id),
                                        span_id: hex(&s.span_id),
                                        parent: hex(&s.parent_span_id),
                                        name: s.name.clone(),
                                        attributes: text(&s.attributes),
                                        resource: resource.clone(),
                                    });
                                }
                            }
                        }
                        ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
                    }
                });
                let app = axum::Router::new().route("/v1/traces", route);
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let toml = format!(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\nexport_interval = \"100ms\"\n"
        );
        let settings = Settings::from_toml(&toml, &Overrides::default()).unwrap();
        let telemetry = app::telemetry::init(LogFormat::Pretty, std::io::sink, &settings.telemetry).unwrap();
        assert!(telemetry.exporting(), "the first init in this process installs the exporter");
        (spans, telemetry)
    })
}

async fn one_chain_is_one_trace_from_the_request_to_the_outbound_webhook(db: TestDb) {
    let (spans, telemetry) = exported();
    let receiver = HttpReceiver::start().await;
    let smtp = SmtpReceiver::start().await;
    let options = AppOptions {
        smtp_url: Some(smtp.url()),
        ..AppOptions::default()
    };
    let app = spawn_app(&db, options).await;
    app.subscribe(&receiver.url("/hooks"), &["record.created"])
        .await;

    // The caller's own trace: the request continues it.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span = "00f067aa0ba902b7";
    let correlation_id = format!("otel-{}", &trace_id[..12]);
    let response = client()
        .post(app.url("/records"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .header("x-correlation-id", &correlation_id)
        .json(&json!({ "title": "Traced", "owner_email": "t@example.com" }))
        .send()
        .await
        .unwrap();
    let record = expect_json(response, 201).await;
    let delivered = receiver.wait_for(1, WITHIN).await;
    let sent = delivered[0].header("traceparent").unwrap().to_owned();

    let chain = eventually(WITHIN, "the whole chain is exported", || async {
        telemetry.flush();
        let all: Vec<Span> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect();
        // Spans come in batches as they end (a parent after its children): wait for all.
        let names = [
            "POST",
            "publish record.created",
            "notifications.on_event_deliver_webhooks",
            "notifications.deliver_webhook",
            "POST webhook",
        ];
        names
            .iter()
            .all(|n| all.iter().any(|s| s.name == *n))
            .then_some(all)
    })
    .await;
    let named = |name: &str| {
        chain
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name} in {chain:#?}"))
    };
    let request = named("POST");
    let publish = named("publish record.created");
    let listener = named("notifications.on_event_deliver_webhooks");
    let attempt = named("notifications.deliver_webhook");
    let outbound = named("POST webhook");
    assert_eq!(
        request.parent, caller_span,
        "the request continues the caller's trace"
    );
    assert_eq!(publish.parent, request.span_id);
    assert_eq!(listener.parent, publish.span_id);
    assert_eq!(
        attempt.parent, listener.span_id,
        "the job's attempt continues, across the queue, the span that enqueued it"
    );
    assert_eq!(outbound.parent, attempt.span_id);
    assert_eq!(
        sent,
        format!("00-{trace_id}-{}-01", outbound.span_id),
        "the webhook carries the outbound call's own span"
    );
    for span in [request, publish, listener, attempt, outbound] {
        assert_eq!(
            span.attribute("correlation_id"),
            Some(correlation_id.as_str()),
            "{span:?}"
        );
    }
    assert_eq!(request.attribute("path"), Some("/records"));
    let resource = &request.resource;
    assert!(
        resource.contains(&("service.name".to_owned(), "keel".to_owned())),
        "{resource:?}"
    );
    assert!(
        resource.contains(&(
            "service.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned()
        )),
        "{resource:?}"
    );
    assert!(
        resource.iter().any(|(k, _)| k == "telemetry.sdk.name"),
        "{resource:?}"
    );

    // An invoice's email: the SMTP call is a child of the email job's attempt, in the
    // request's trace (a new one: this request sends no traceparent).
    let mail_correlation = format!("{correlation_id}-mail");
    let response = client()
        .post(app.url("/invoices"))
        .header("x-correlation-id", &mail_correlation)
        .json(&json!({ "record_id": record["id"], "amount_cents": 100, "currency": "EUR" }))
        .send()
        .await
        .unwrap();
    expect_json(response, 201).await;
    smtp.wait_for(1, WITHIN).await;
    let (smtp_span, trace) = eventually(WITHIN, "the email chain is exported", || async {
        telemetry.flush();
        let all = spans.lock().unwrap().clone();
        let smtp_span = all
            .iter()
            .find(|s| {
                s.name == "SMTP send"
                    && s.attribute("correlation_id") == Some(mail_correlation.as_str())
            })?
            .clone();
        let trace: Vec<Span> = all
            .into_iter()
            .filter(|s| s.trace_id == smtp_span.trace_id)
            .collect();
        // The attempt ends after its SMTP call: it may come in a later batch.
        trace
            .iter()
            .any(|s| s.span_id == smtp_span.parent)
            .then_some((smtp_span, trace))
    })
    .await;
    let attempt = trace
        .iter()
        .find(|s| s.span_id == smtp_span.parent)
        .unwrap_or_else(|| panic!("the SMTP span's parent is exported: {trace:#?}"));
    assert_eq!(attempt.name, "notifications.send_invoice_email");
    assert!(
        trace
            .iter()
            .any(|s| s.name == "POST" && s.parent.is_empty()),
        "the request is the root: {trace:#?}"
    );
    app.shutdown().await;
}

both_backends!(one_chain_is_one_trace_from_the_request_to_the_outbound_webhook);
