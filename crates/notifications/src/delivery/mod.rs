//! Delivering one event to one endpoint: skip it when the endpoint is disabled, wait for the
//! endpoint's turn (without spending an attempt), build the body from what the query ports
//! say now, sign it (Standard Webhooks; with both secrets during a rotation), POST it
//! through the SSRF-guarded client, log the attempt, count it against the endpoint, and turn
//! the outcome into what the runtime records and does next (a 429 or 503's `Retry-After`
//! included).
//!
//! A refused target (a private address, unless allowed) is a failed attempt retried like any
//! other: the configuration or the DNS answer may change before the attempts run out, and a
//! dead letter can be replayed once it has.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use events::jobs::{HandleJob, JobDetail};
use events::queries::{ImportDirectory, InvoiceDirectory, RecordDirectory};
use events::{Clock, Db, JobContext, JobError, Outbox};
use reqwest::{StatusCode, Url};
use serde_json::{Map, Value, json};
use tracing::Instrument;
use uuid::Uuid;

use crate::attempt_writer::AttemptWriter;
use crate::delivery_log::{self, AttemptRecord, DeliveryStatus, LOGGED_RESPONSE_BYTES};
use crate::endpoints;
use crate::jobs::{DeliverWebhook, Subject};
use crate::model::{WebhookSecret, literal_ip};
use crate::request::{
    body, headers, retry_after, snippet, span_id, traceparent, transport_failure, without_query,
};
use crate::signing::sign_with_each;
use crate::throttle::Throttle;
use crate::{NotificationsConfig, ssrf, store};

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
    outbox: Arc<dyn Outbox>,
    config: NotificationsConfig,
    throttle: Throttle,
    labels: EndpointLabels,
    attempts: AttemptWriter,
}

impl Deliverer {
    pub(crate) fn new(
        client: reqwest::Client,
        db: Db,
        clock: Arc<dyn Clock>,
        ports: Ports,
        outbox: Arc<dyn Outbox>,
        config: NotificationsConfig,
    ) -> Self {
        Self {
            attempts: AttemptWriter::new(db.clone()),
            client,
            db,
            clock,
            ports,
            outbox,
            config,
            throttle: Throttle::default(),
            labels: EndpointLabels::default(),
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
        if target.disabled {
            let mut conn = self.db.pool().acquire().await?;
            delivery_log::upsert(
                &mut conn,
                &job,
                DeliveryStatus::Skipped,
                false,
                self.clock.now(),
            )
            .await?;
            return Err(JobError::cancel("webhook endpoint is disabled")
                .with_detail(json!({"endpoint_id": job.endpoint_id})));
        }
        // Waiting for the endpoint's turn is not an attempt: hand the job back unspent.
        let permit = self
            .throttle
            .wait_for_turn(
                job.endpoint_id,
                target.settings.max_in_flight,
                target.settings.rate_limit,
            )
            .await
            .map_err(|wait| JobError::defer("waiting for the endpoint's turn", wait))?;

        let url = Url::parse(&target.url)
            .map_err(|e| JobError::poison(format!("stored endpoint url does not parse: {e}")))?;
        let shown_url = without_query(&url);
        let now = self.clock.now();
        let mut keys = vec![WebhookSecret::parse(&target.secret).map_err(|_| {
            JobError::poison("stored endpoint secret is not a valid whsec_ secret")
        })?];
        if let Some((previous, until)) = &target.previous_secret
            && *until > now.timestamp_millis()
            && let Ok(previous) = WebhookSecret::parse(previous)
        {
            keys.push(previous);
        }

        if !self.config.allow_private_targets
            && let Some(ip) = literal_ip(&url)
            && let Err(refusal) = ssrf::check(ip)
        {
            let reason = refusal.to_string();
            let attempt = AttemptRecord {
                attempted_at: now,
                status_code: None,
                duration_ms: 0,
                response: String::new(),
                error: Some(reason.clone()),
            };
            self.failed(&job, ctx, attempt, false, false).await;
            return Err(JobError::retry(reason)
                .with_detail(json!({"url": shown_url, "status": 0, "duration_ms": 0})));
        }

        let body = body(&job.event, job.occurred_at, data);
        if body.len() > self.config.max_payload_bytes {
            let reason = format!(
                "the body is {} bytes, over the limit of {} ([webhooks] max_payload_bytes)",
                body.len(),
                self.config.max_payload_bytes
            );
            let attempt = AttemptRecord {
                attempted_at: now,
                status_code: None,
                duration_ms: 0,
                response: String::new(),
                error: Some(reason.clone()),
            };
            self.log(&job, DeliveryStatus::Failed, &attempt).await;
            return Err(JobError::poison(reason));
        }
        let msg_id = format!("msg_{}", job.event_id);
        let timestamp = now.timestamp();
        let key_bytes: Vec<&[u8]> = keys.iter().map(WebhookSecret::key).collect();
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
            &sign_with_each(&key_bytes, &msg_id, timestamp, &body),
            correlation_id,
            &trace_parent,
            &target.settings.headers,
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
                let wait = retry_after(response.headers(), now);
                let snippet = snippet(response).await;
                Ok((status, wait, snippet))
            }
            Err(err) => Err(err),
        };
        let elapsed = started.elapsed();
        // The endpoint's turn ends with its answer: logging the attempt does not load it.
        drop(permit);
        let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let status_class = match &outcome {
            Ok((status, _, _)) => format!("{}xx", status.as_u16() / 100),
            Err(_) => "transport_error".to_owned(),
        };
        metrics::counter!("keel_webhook_deliveries_total", "status_class" => status_class)
            .increment(1);
        metrics::histogram!("keel_webhook_delivery_duration_seconds").record(elapsed.as_secs_f64());
        let endpoint_label = self.labels.label(job.endpoint_id);
        metrics::counter!("keel_webhook_endpoint_attempts_total", "endpoint_id" => endpoint_label.clone())
            .increment(1);
        metrics::histogram!("keel_webhook_endpoint_duration_seconds", "endpoint_id" => endpoint_label.clone())
            .record(elapsed.as_secs_f64());
        let succeeded = matches!(&outcome, Ok((status, _, _)) if status.is_success());
        if !succeeded {
            metrics::counter!("keel_webhook_endpoint_failures_total", "endpoint_id" => endpoint_label)
                .increment(1);
        }

        match outcome {
            Ok((status, wait, response)) => {
                let attempt = AttemptRecord {
                    attempted_at: now,
                    status_code: Some(status.as_u16()),
                    duration_ms,
                    response: logged(&response),
                    error: (!status.is_success())
                        .then(|| format!("receiver answered {}", status.as_u16())),
                };
                let detail = json!({
                    "url": shown_url,
                    "status": status.as_u16(),
                    "duration_ms": duration_ms,
                    "response": response,
                });
                if status.is_success() {
                    self.log(&job, DeliveryStatus::Succeeded, &attempt).await;
                    // Only an endpoint that was failing has anything to forget.
                    if target.failing
                        && let Err(e) =
                            endpoints::mark_succeeded(self.db.pool(), job.endpoint_id).await
                    {
                        tracing::warn!(endpoint_id = %job.endpoint_id, error = %e, "could not clear the endpoint's failures");
                    }
                    Ok(Some(detail))
                } else if status == StatusCode::GONE {
                    self.failed(&job, ctx, attempt, true, true).await;
                    Err(JobError::cancel("receiver answered 410 Gone").with_detail(detail))
                } else {
                    self.failed(&job, ctx, attempt, false, false).await;
                    let error = JobError::retry(format!("receiver answered {}", status.as_u16()))
                        .with_detail(detail);
                    let throttled = matches!(
                        status,
                        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                    );
                    Err(match wait {
                        Some(wait) if throttled => error.after(wait),
                        _ => error,
                    })
                }
            }
            Err(err) => {
                let reason = transport_failure(&err, self.config.request_timeout);
                let attempt = AttemptRecord {
                    attempted_at: now,
                    status_code: None,
                    duration_ms,
                    response: String::new(),
                    error: Some(reason.clone()),
                };
                self.failed(&job, ctx, attempt, false, false).await;
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

impl Deliverer {
    /// Logs an attempt. The request has been made either way, so a log that cannot be
    /// written is a warning, never a reason to send again.
    async fn log(&self, job: &DeliverWebhook, status: DeliveryStatus, attempt: &AttemptRecord) {
        if let Err(e) = self.attempts.record(job, status, attempt).await {
            tracing::warn!(endpoint_id = %job.endpoint_id, error = %e, "could not log the delivery attempt");
        }
    }

    /// Logs a failed attempt and counts it against the endpoint: a 410 (`gone`) or failing
    /// for `[webhooks] disable_after` disables it and publishes `endpoint.disabled`.
    async fn failed(
        &self,
        job: &DeliverWebhook,
        ctx: &JobContext,
        attempt: AttemptRecord,
        gone: bool,
        last: bool,
    ) {
        let status = if last || ctx.attempt >= ctx.max_attempts {
            DeliveryStatus::Failed
        } else {
            DeliveryStatus::Failing
        };
        self.log(job, status, &attempt).await;
        // "Failing for `disable_after`" is an expiry judged across replicas: on the
        // database's clock, not this process's.
        let now = match self.db.now(self.clock.as_ref()).await {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(endpoint_id = %job.endpoint_id, error = %e, "could not record the endpoint's failure");
                return;
            }
        };
        match endpoints::record_failure(
            &self.db,
            &self.outbox,
            job.endpoint_id,
            gone,
            now,
            self.config.disable_after,
        )
        .await
        {
            Ok(Some(reason)) => tracing::warn!(
                endpoint_id = %job.endpoint_id,
                reason = endpoints::reason_text(reason),
                "webhook endpoint disabled"
            ),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(endpoint_id = %job.endpoint_id, error = %e, "could not record the endpoint's failure");
            }
        }
    }
}

/// The first KiB of an answer, cut on a character boundary, as the delivery log keeps it.
fn logged(response: &str) -> String {
    let mut end = response.len().min(LOGGED_RESPONSE_BYTES);
    while !response.is_char_boundary(end) {
        end -= 1;
    }
    response[..end].to_owned()
}

/// Endpoint ids as metric labels, at most [`MAX_ENDPOINT_LABELS`] of them per process (the
/// rest are counted as `other`), so a system with many endpoints cannot blow up `/metrics`.
#[derive(Debug, Clone, Default)]
struct EndpointLabels {
    seen: Arc<Mutex<HashSet<Uuid>>>,
}

/// The most endpoint ids that get labels of their own.
const MAX_ENDPOINT_LABELS: usize = 500;

impl EndpointLabels {
    fn label(&self, endpoint: Uuid) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(&endpoint) || seen.len() < MAX_ENDPOINT_LABELS {
            seen.insert(endpoint);
            endpoint.to_string()
        } else {
            "other".to_owned()
        }
    }
}

#[cfg(test)]
mod tests;
