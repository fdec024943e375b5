//! Delivering one event to one endpoint: build the body from what the query ports say now,
//! sign it (Standard Webhooks), POST it through the SSRF-guarded client, and turn the outcome
//! into what the runtime records and does next.
//!
//! A refused target (a private address, unless allowed) is a failed attempt retried like any
//! other: the configuration or the DNS answer may change before the attempts run out, and a
//! dead letter can be replayed once it has.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use events::jobs::{HandleJob, JobDetail};
use events::queries::{ImportDirectory, InvoiceDirectory, RecordDirectory};
use events::{Clock, Db, JobContext, JobError};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tracing::Instrument;
use uuid::Uuid;

use crate::jobs::{DeliverWebhook, Subject};
use crate::model::{WebhookSecret, literal_ip};
use crate::signing::sign;
use crate::ssrf::{self, GuardedResolver};
use crate::{NotificationsConfig, NotificationsError, store};

/// How much of a receiver's answer is kept with the attempt.
const RESPONSE_SNIPPET_BYTES: usize = 2048;

/// Builds the webhook client: a timeout per attempt, no redirects (following one would
/// bypass the SSRF guard), no proxies, pooled connections, and the guarded resolver unless
/// private targets are allowed.
pub(crate) fn client(config: &NotificationsConfig) -> Result<reqwest::Client, NotificationsError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("keel-webhooks/", env!("CARGO_PKG_VERSION")))
        .timeout(config.request_timeout)
        .connect_timeout(config.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(90));
    if !config.allow_private_targets {
        builder = builder.dns_resolver(GuardedResolver);
    }
    builder.build().map_err(NotificationsError::HttpClient)
}

/// The query ports a delivery reads the receiver's data from.
#[derive(Clone)]
pub(crate) struct Ports {
    pub records: Arc<dyn RecordDirectory>,
    pub invoices: Arc<dyn InvoiceDirectory>,
    pub imports: Arc<dyn ImportDirectory>,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports").finish_non_exhaustive()
    }
}

/// Runs `notifications.deliver_webhook` jobs.
#[derive(Debug, Clone)]
pub(crate) struct Deliverer {
    client: reqwest::Client,
    db: Db,
    clock: Arc<dyn Clock>,
    ports: Ports,
    allow_private_targets: bool,
    timeout: Duration,
}

impl Deliverer {
    pub(crate) fn new(
        client: reqwest::Client,
        db: Db,
        clock: Arc<dyn Clock>,
        ports: Ports,
        allow_private_targets: bool,
        timeout: Duration,
    ) -> Self {
        Self {
            client,
            db,
            clock,
            ports,
            allow_private_targets,
            timeout,
        }
    }

    /// The body's `data`: the event's ids plus what the receiver is told about the subject
    /// now. No personal data: a record contributes its title, never its owner's email.
    async fn data(&self, subject: &Subject) -> Result<Map<String, Value>, JobError> {
        let mut data: Map<String, Value> = subject
            .ids()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v.to_string())))
            .collect();
        match subject {
            Subject::Record(e) => {
                if let Some(record) = self.ports.records.find_record(e.record_id).await? {
                    data.insert("title".into(), json!(record.title));
                }
            }
            Subject::InvoiceIssued(events::InvoiceIssued { invoice_id, .. })
            | Subject::InvoicePaid(events::InvoicePaid { invoice_id, .. })
            | Subject::InvoiceOverdue(events::InvoiceOverdue { invoice_id, .. }) => {
                if let Some(invoice) = self.ports.invoices.find_invoice(*invoice_id).await? {
                    data.insert("amount_cents".into(), json!(invoice.amount_cents));
                    data.insert("currency".into(), json!(invoice.currency));
                    data.insert("status".into(), json!(invoice.status));
                }
            }
            Subject::Import(e) => {
                if let Some(import) = self.ports.imports.find_import(e.import_id).await? {
                    data.insert("status".into(), json!(import.status));
                    data.insert("total".into(), json!(import.total));
                    data.insert("processed".into(), json!(import.processed));
                    data.insert("failed".into(), json!(import.failed));
                }
            }
        }
        Ok(data)
    }
}

#[async_trait]
impl HandleJob<DeliverWebhook> for Deliverer {
    async fn handle(&self, job: DeliverWebhook, ctx: &JobContext) -> Result<JobDetail, JobError> {
        let ids = serde_json::to_value(&job.ids)
            .map_err(|e| JobError::poison(format!("ids do not serialize: {e}")))?;
        let subject =
            Subject::decode(&job.event, job.event_version, &ids).map_err(JobError::poison)?;

        // The endpoint and the receiver's data are independent reads: one round trip, not two.
        let (target, data) = tokio::try_join!(
            async {
                store::delivery_target(self.db.pool(), job.endpoint_id)
                    .await
                    .map_err(JobError::from)
            },
            self.data(&subject)
        )?;
        let target = match target {
            Some(target) if !target.deleted => target,
            _ => {
                return Err(JobError::cancel("webhook endpoint was deleted")
                    .with_detail(json!({"endpoint_id": job.endpoint_id})));
            }
        };
        let url = Url::parse(&target.url)
            .map_err(|e| JobError::poison(format!("stored endpoint url does not parse: {e}")))?;
        let shown_url = without_query(&url);
        let secret = WebhookSecret::parse(&target.secret)
            .map_err(|_| JobError::poison("stored endpoint secret is not a valid whsec_ secret"))?;

        if !self.allow_private_targets
            && let Some(ip) = literal_ip(&url)
            && let Err(refusal) = ssrf::check(ip)
        {
            return Err(JobError::retry(refusal.to_string())
                .with_detail(json!({"url": shown_url, "status": 0, "duration_ms": 0})));
        }

        let body = body(&job.event, job.occurred_at, data);
        let msg_id = format!("msg_{}", job.event_id);
        let timestamp = self.clock.now().timestamp();
        let correlation_id = ctx.trace.correlation_id.as_str();
        // The outbound call's own span: the receiver's trace continues from it.
        let span = if events::propagation::enabled() {
            tracing::info_span!(
                "webhook.send",
                otel.name = "POST webhook",
                otel.kind = "client",
                http.request.method = "POST",
                server.address = url.host_str().unwrap_or(""),
                correlation_id = %correlation_id,
            )
        } else {
            tracing::Span::none()
        };
        let trace_parent = span
            .in_scope(events::propagation::current_traceparent)
            .unwrap_or_else(|| traceparent(correlation_id, span_id()));
        let headers = headers(
            &msg_id,
            timestamp,
            &sign(secret.key(), &msg_id, timestamp, &body),
            correlation_id,
            &trace_parent,
        );

        let started = Instant::now();
        let sent = self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .instrument(span)
            .await;
        let outcome = match sent {
            Ok(response) => {
                let status = response.status();
                let snippet = snippet(response).await;
                Ok((status, snippet))
            }
            Err(err) => Err(err),
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let status_class = match &outcome {
            Ok((status, _)) => format!("{}xx", status.as_u16() / 100),
            Err(_) => "transport_error".to_owned(),
        };
        metrics::counter!("keel_webhook_deliveries_total", "status_class" => status_class)
            .increment(1);
        metrics::histogram!("keel_webhook_delivery_duration_seconds")
            .record(started.elapsed().as_secs_f64());

        match outcome {
            Ok((status, response)) => {
                let detail = json!({
                    "url": shown_url,
                    "status": status.as_u16(),
                    "duration_ms": duration_ms,
                    "response": response,
                });
                if status.is_success() {
                    Ok(Some(detail))
                } else if status == StatusCode::GONE {
                    Err(JobError::cancel("receiver answered 410 Gone").with_detail(detail))
                } else {
                    Err(
                        JobError::retry(format!("receiver answered {}", status.as_u16()))
                            .with_detail(detail),
                    )
                }
            }
            Err(err) => {
                let reason = transport_failure(&err, self.timeout);
                Err(JobError::retry(reason.clone()).with_detail(json!({
                    "url": shown_url,
                    "status": 0,
                    "duration_ms": duration_ms,
                    "error": reason,
                })))
            }
        }
    }
}

/// The JSON body: `{"type", "timestamp", "data"}`.
fn body(event: &str, occurred_at: DateTime<Utc>, data: Map<String, Value>) -> Vec<u8> {
    let body = json!({
        "type": event,
        "timestamp": occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    });
    body.to_string().into_bytes()
}

/// The Standard Webhooks headers plus correlation and W3C trace context.
fn headers(
    msg_id: &str,
    timestamp: i64,
    signature: &str,
    correlation_id: &str,
    traceparent: &str,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut put = |name: &'static str, value: &str| {
        // Every value here is ASCII we built ourselves, except a caller's correlation id,
        // which `CorrelationId::parse` limits to visible ASCII; skip one that is not.
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    put("webhook-id", msg_id);
    put("webhook-timestamp", &timestamp.to_string());
    put("webhook-signature", signature);
    put("x-correlation-id", correlation_id);
    put("traceparent", traceparent);
    headers
}

/// Without trace export, `00-<trace id>-<span id>-01`: the trace id is the correlation id's
/// UUID when it is one, else the first 16 bytes of its SHA-256, so a receiver's traces join
/// Keel's. With trace export the delivery span's own traceparent is sent instead.
fn traceparent(correlation_id: &str, span_id: u64) -> String {
    let trace_id: [u8; 16] = match Uuid::parse_str(correlation_id) {
        Ok(uuid) if !uuid.is_nil() => *uuid.as_bytes(),
        _ => {
            let digest = Sha256::digest(correlation_id.as_bytes());
            let mut id = [0u8; 16];
            id.copy_from_slice(&digest[..16]);
            id
        }
    };
    let hex: String = trace_id.iter().map(|b| format!("{b:02x}")).collect();
    format!("00-{hex}-{span_id:016x}-01")
}

/// A random, non-zero span id (zero is invalid in W3C trace context).
fn span_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

/// The URL as recorded with attempts: without its query string, which may carry a token.
fn without_query(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// The first 2 KB of the response body as lossy UTF-8; the rest is never read.
async fn snippet(mut response: reqwest::Response) -> String {
    let mut kept: Vec<u8> = Vec::new();
    while kept.len() < RESPONSE_SNIPPET_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    kept.truncate(RESPONSE_SNIPPET_BYTES);
    String::from_utf8_lossy(&kept).into_owned()
}

/// Why a request got no answer, in words that carry no URL (it may hold a token).
fn transport_failure(err: &reqwest::Error, timeout: Duration) -> String {
    if let Some(refusal) = ssrf::find_refusal(err) {
        return refusal.to_string();
    }
    if err.is_timeout() {
        return format!("timed out after {}", human(timeout));
    }
    let mut io_kind = None;
    let mut innermost = None;
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        innermost = Some(e.to_string());
        source = e.source();
    }
    match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_owned(),
        Some(std::io::ErrorKind::ConnectionReset) => "connection reset by the receiver".to_owned(),
        Some(std::io::ErrorKind::TimedOut) => format!("timed out after {}", human(timeout)),
        _ => {
            let what = if err.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            match innermost {
                Some(cause) => format!("{what}: {cause}"),
                None => what.to_owned(),
            }
        }
    }
}

/// `10s`, `1.5s` or `250ms`, as durations are written in `keel.toml`.
fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use axum::Router;
    use axum::body::Bytes;
    use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus};
    use axum::routing::post;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use events::jobs::FailureKind;
    use events::queries::{ImportSummary, InvoiceSummary, RecordSummary};
    use events::{CorrelationId, TraceContext};

    use super::*;
    use crate::store::tests::{add_endpoint, test_db};

    /// Every test here runs at one fixed instant.
    fn fixed_clock() -> Arc<events::testing::FixedClock> {
        events::testing::FixedClock::at_millis(1_614_265_330_000)
    }

    struct Directory {
        record: Option<RecordSummary>,
        invoice: Option<InvoiceSummary>,
        import: Option<ImportSummary>,
    }

    #[async_trait]
    impl RecordDirectory for Directory {
        async fn find_record(&self, _id: Uuid) -> Result<Option<RecordSummary>, sqlx::Error> {
            Ok(self.record.clone())
        }
    }

    #[async_trait]
    impl InvoiceDirectory for Directory {
        async fn find_invoice(&self, _id: Uuid) -> Result<Option<InvoiceSummary>, sqlx::Error> {
            Ok(self.invoice.clone())
        }
    }

    #[async_trait]
    impl ImportDirectory for Directory {
        async fn find_import(&self, _id: Uuid) -> Result<Option<ImportSummary>, sqlx::Error> {
            Ok(self.import.clone())
        }
    }

    fn ports(directory: Directory) -> Ports {
        let directory = Arc::new(directory);
        Ports {
            records: directory.clone(),
            invoices: directory.clone(),
            imports: directory,
        }
    }

    fn empty_ports() -> Ports {
        ports(Directory {
            record: None,
            invoice: None,
            import: None,
        })
    }

    /// A receiver on 127.0.0.1 that answers `status` and keeps what it got.
    struct Receiver {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<(AxumHeaders, Bytes)>>>,
    }

    async fn receiver(status: u16, answer: &'static str) -> Receiver {
        let seen: Arc<Mutex<Vec<(AxumHeaders, Bytes)>>> = Arc::default();
        let kept = seen.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: AxumHeaders, body: Bytes| {
                let kept = kept.clone();
                async move {
                    kept.lock().unwrap().push((headers, body));
                    (AxumStatus::from_u16(status).unwrap(), answer)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, seen }
    }

    fn config(allow_private_targets: bool, timeout: Duration) -> NotificationsConfig {
        NotificationsConfig {
            allow_private_targets,
            request_timeout: timeout,
            ..NotificationsConfig::default()
        }
    }

    async fn deliverer(db: &Db, allow: bool, timeout: Duration, ports: Ports) -> Deliverer {
        Deliverer::new(
            client(&config(allow, timeout)).unwrap(),
            db.clone(),
            fixed_clock(),
            ports,
            allow,
            timeout,
        )
    }

    fn record_job(endpoint_id: Uuid, record_id: Uuid) -> DeliverWebhook {
        DeliverWebhook {
            endpoint_id,
            event_id: Uuid::now_v7(),
            event: "record.created".into(),
            event_version: 1,
            occurred_at: DateTime::from_timestamp_millis(1_764_150_000_123).unwrap(),
            ids: [("record_id".to_owned(), record_id)].into(),
        }
    }

    fn ctx(correlation: &str) -> JobContext {
        JobContext {
            id: Uuid::now_v7(),
            job_type: "notifications.deliver_webhook".into(),
            queue: "webhooks".into(),
            attempt: 1,
            max_attempts: 6,
            timeout: std::time::Duration::from_secs(30),
            idempotency_key: "k".into(),
            trace: TraceContext {
                correlation_id: CorrelationId::parse(correlation).unwrap(),
                causation_id: None,
            },
            enqueued_at: DateTime::from_timestamp(0, 0).unwrap(),
            payload: Value::Null,
        }
    }

    #[test]
    fn the_body_is_type_timestamp_and_data() {
        let mut data = Map::new();
        data.insert("record_id".into(), json!("r1"));
        let body = body(
            "record.created",
            DateTime::from_timestamp_millis(1_764_150_000_123).unwrap(),
            data,
        );
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            parsed,
            json!({"type": "record.created", "timestamp": "2025-11-26T09:40:00.123Z", "data": {"record_id": "r1"}})
        );
    }

    #[test]
    fn traceparent_reuses_a_uuid_correlation_id_and_hashes_any_other() {
        let uuid = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(
            traceparent(uuid, 0xabc),
            "00-0193a1b2c3d47e5f8a9b0c1d2e3f4a5b-0000000000000abc-01"
        );
        let other = traceparent("order-42", 1);
        let digest = Sha256::digest(b"order-42");
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(other, format!("00-{hex}-0000000000000001-01"));
        assert_ne!(span_id(), 0);
    }

    #[test]
    fn recorded_urls_drop_the_query_string() {
        let url = Url::parse("https://a.example/hook?token=secret#frag").unwrap();
        assert_eq!(without_query(&url), "https://a.example/hook");
    }

    #[test]
    fn durations_are_written_as_in_the_config() {
        assert_eq!(human(Duration::from_secs(10)), "10s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
    }

    #[tokio::test]
    async fn a_2xx_delivery_is_signed_traced_and_carries_the_title_but_no_email() {
        let db = test_db().await;
        let rx = receiver(200, "thanks").await;
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let url = format!("http://{}/hook?token=abc", rx.addr);
        let endpoint = add_endpoint(&db, &url, &["*"], 1).await;
        sqlx::query("UPDATE notifications_webhook_endpoints SET secret = $1")
            .bind(secret)
            .execute(db.pool())
            .await
            .unwrap();
        let record_id = Uuid::now_v7();
        let ports = ports(Directory {
            record: Some(RecordSummary {
                record_id,
                title: "Quarterly report".into(),
                owner_email: "owner@example.com".into(),
            }),
            invoice: None,
            import: None,
        });
        let deliverer = deliverer(&db, true, Duration::from_secs(10), ports).await;
        let job = record_job(endpoint, record_id);
        let correlation = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

        let detail = deliverer
            .handle(job.clone(), &ctx(correlation))
            .await
            .unwrap()
            .unwrap();

        assert_eq!(detail["status"], 200);
        assert_eq!(detail["response"], "thanks");
        assert_eq!(detail["url"], format!("http://{}/hook", rx.addr));
        assert!(detail["duration_ms"].is_u64());
        let seen = rx.seen.lock().unwrap();
        let (headers, body) = &seen[0];
        let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        let msg_id = format!("msg_{}", job.event_id);
        assert_eq!(header("content-type"), "application/json");
        assert_eq!(header("webhook-id"), msg_id);
        assert_eq!(header("webhook-timestamp"), "1614265330");
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            header("webhook-signature"),
            sign(&key, &msg_id, 1_614_265_330, body)
        );
        assert_eq!(header("x-correlation-id"), correlation);
        assert!(header("traceparent").starts_with("00-0193a1b2c3d47e5f8a9b0c1d2e3f4a5b-"));
        assert!(header("user-agent").starts_with("keel-webhooks/"));
        let body: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            body,
            json!({
                "type": "record.created",
                "timestamp": "2025-11-26T09:40:00.123Z",
                "data": {"record_id": record_id, "title": "Quarterly report"},
            })
        );
    }

    #[tokio::test]
    async fn invoice_and_import_deliveries_carry_what_the_ports_say_or_ids_only() {
        let db = test_db().await;
        let rx = receiver(204, "").await;
        let endpoint = add_endpoint(&db, &format!("http://{}/hook", rx.addr), &["*"], 1).await;
        let invoice_id = Uuid::now_v7();
        let record_id = Uuid::now_v7();
        let import_id = Uuid::now_v7();
        let with_data = ports(Directory {
            record: None,
            invoice: Some(InvoiceSummary {
                invoice_id,
                record_id,
                amount_cents: 1250,
                currency: "EUR".into(),
                status: "paid".into(),
            }),
            import: Some(ImportSummary {
                import_id,
                status: "completed".into(),
                total: 10,
                processed: 10,
                failed: 2,
            }),
        });
        let full = deliverer(&db, true, Duration::from_secs(10), with_data).await;
        let bare = deliverer(&db, true, Duration::from_secs(10), empty_ports()).await;
        let invoice_job = DeliverWebhook {
            event: "invoice.paid".into(),
            ids: [
                ("invoice_id".to_owned(), invoice_id),
                ("record_id".to_owned(), record_id),
            ]
            .into(),
            ..record_job(endpoint, record_id)
        };
        let import_job = DeliverWebhook {
            event: "import.completed".into(),
            ids: [("import_id".to_owned(), import_id)].into(),
            ..record_job(endpoint, record_id)
        };

        full.handle(invoice_job.clone(), &ctx("c1")).await.unwrap();
        full.handle(import_job, &ctx("c2")).await.unwrap();
        bare.handle(invoice_job, &ctx("c3")).await.unwrap();

        let seen = rx.seen.lock().unwrap();
        let data = |i: usize| serde_json::from_slice::<Value>(&seen[i].1).unwrap()["data"].clone();
        assert_eq!(
            data(0),
            json!({"invoice_id": invoice_id, "record_id": record_id, "amount_cents": 1250, "currency": "EUR", "status": "paid"})
        );
        assert_eq!(
            data(1),
            json!({"import_id": import_id, "status": "completed", "total": 10, "processed": 10, "failed": 2})
        );
        assert_eq!(
            data(2),
            json!({"invoice_id": invoice_id, "record_id": record_id})
        );
    }

    #[tokio::test]
    async fn a_5xx_is_retried_with_status_and_response() {
        let db = test_db().await;
        let rx = receiver(500, "boom").await;
        let endpoint = add_endpoint(&db, &format!("http://{}/hook", rx.addr), &["*"], 1).await;
        let deliverer = deliverer(&db, true, Duration::from_secs(10), empty_ports()).await;
        let err = deliverer
            .handle(record_job(endpoint, Uuid::now_v7()), &ctx("c"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Retry);
        assert_eq!(err.reason, "receiver answered 500");
        let detail = err.detail.unwrap();
        assert_eq!(detail["status"], 500);
        assert_eq!(detail["response"], "boom");
    }

    #[tokio::test]
    async fn a_410_cancels_the_delivery() {
        let db = test_db().await;
        let rx = receiver(410, "gone").await;
        let endpoint = add_endpoint(&db, &format!("http://{}/hook", rx.addr), &["*"], 1).await;
        let deliverer = deliverer(&db, true, Duration::from_secs(10), empty_ports()).await;
        let err = deliverer
            .handle(record_job(endpoint, Uuid::now_v7()), &ctx("c"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Cancel);
        assert_eq!(err.reason, "receiver answered 410 Gone");
        assert_eq!(err.detail.unwrap()["status"], 410);
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_and_counts_as_a_failure() {
        let db = test_db().await;
        let rx = receiver(307, "").await;
        let endpoint = add_endpoint(&db, &format!("http://{}/hook", rx.addr), &["*"], 1).await;
        let deliverer = deliverer(&db, true, Duration::from_secs(10), empty_ports()).await;
        let err = deliverer
            .handle(record_job(endpoint, Uuid::now_v7()), &ctx("c"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Retry);
        assert_eq!(err.reason, "receiver answered 307");
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_with_status_0() {
        let db = test_db().await;
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let endpoint = add_endpoint(&db, &format!("http://{addr}/hook"), &["*"], 1).await;
        let deliverer = deliverer(&db, true, Duration::from_secs(10), empty_ports()).await;
        let err = deliverer
            .handle(record_job(endpoint, Uuid::now_v7()), &ctx("c"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Retry);
        assert_eq!(err.reason, "connection refused");
        assert_eq!(err.detail.unwrap()["status"], 0);
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_times_out() {
        let db = test_db().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/hook", post(std::future::pending::<&'static str>));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let endpoint = add_endpoint(&db, &format!("http://{addr}/hook"), &["*"], 1).await;
        let deliverer = deliverer(&db, true, Duration::from_millis(200), empty_ports()).await;
        let err = deliverer
            .handle(record_job(endpoint, Uuid::now_v7()), &ctx("c"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Retry);
        assert_eq!(err.reason, "timed out after 200ms");
    }

    #[tokio::test]
    async fn private_targets_are_refused_unless_allowed_by_literal_ip_or_by_resolution() {
        let db = test_db().await;
        let rx = receiver(200, "ok").await;
        let port = rx.addr.port();
        let literal = add_endpoint(&db, &format!("http://127.0.0.1:{port}/hook"), &["*"], 1).await;
        let named = add_endpoint(&db, &format!("http://localhost:{port}/hook"), &["*"], 2).await;
        let guarded = deliverer(&db, false, Duration::from_secs(10), empty_ports()).await;

        for endpoint in [literal, named] {
            let err = guarded
                .handle(record_job(endpoint, Uuid::now_v7()), &ctx("c"))
                .await
                .unwrap_err();
            assert_eq!(err.kind, FailureKind::Retry);
            assert!(
                err.reason
                    .starts_with("target resolves to a private address ("),
                "{}",
                err.reason
            );
            assert_eq!(err.detail.unwrap()["status"], 0);
        }
        assert!(rx.seen.lock().unwrap().is_empty());

        let open = deliverer(&db, true, Duration::from_secs(10), empty_ports()).await;
        open.handle(record_job(named, Uuid::now_v7()), &ctx("c"))
            .await
            .unwrap();
        assert_eq!(rx.seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn deliveries_to_a_deleted_or_unknown_endpoint_are_cancelled() {
        let db = test_db().await;
        let endpoint = add_endpoint(&db, "https://a.example/", &["*"], 1).await;
        let mut tx = db.begin().await.unwrap();
        store::delete_endpoint(&mut tx, endpoint, fixed_clock().now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let deliverer = deliverer(&db, false, Duration::from_secs(10), empty_ports()).await;
        for id in [endpoint, Uuid::now_v7()] {
            let err = deliverer
                .handle(record_job(id, Uuid::now_v7()), &ctx("c"))
                .await
                .unwrap_err();
            assert_eq!(err.kind, FailureKind::Cancel);
            assert_eq!(err.reason, "webhook endpoint was deleted");
        }
    }

    #[tokio::test]
    async fn a_job_for_an_unknown_event_is_poison() {
        let db = test_db().await;
        let deliverer = deliverer(&db, false, Duration::from_secs(10), empty_ports()).await;
        let job = DeliverWebhook {
            event: "record.deleted".into(),
            ..record_job(Uuid::now_v7(), Uuid::now_v7())
        };
        let err = deliverer.handle(job, &ctx("c")).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Poison);
    }
}
