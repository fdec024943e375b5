//! Query ports over HTTP: when the module that owns a port runs in another deployment
//! (`[modules.remote]`), the modules here reach it through its public API.
//!
//! Each call carries the chain's `x-correlation-id` and a `traceparent`, runs under a
//! timeout, and fails with an error that names the remote and what went wrong. The ports'
//! error type is the database's (`sqlx::Error`): a remote that cannot answer is, to the
//! asking module, exactly a store that cannot answer — its job fails the attempt and is
//! retried on its queue's schedule. A 404 is an answer (`None`), as for a local lookup.
//! The domain crates never see any of this: `notifications` runs split off unchanged.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use events::TraceContext;
use events::queries::{
    ImportDirectory, ImportSummary, InvoiceDirectory, InvoiceSummary, RecordDirectory,
    RecordSummary,
};
use serde::Deserialize;
use uuid::Uuid;

/// How long a remote query may take before the attempt fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A client of one remote deployment's public API.
#[derive(Debug, Clone)]
pub struct Remote {
    module: &'static str,
    base: String,
    http: reqwest::Client,
}

impl Remote {
    /// A client of `module`, served at `base` (`http://host:port`).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(module: &'static str, base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        Ok(Self {
            module,
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// `GET <base><path>`: `Ok(None)` on 404, the decoded body on 2xx, an error otherwise.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, sqlx::Error> {
        let trace = TraceContext::current_or_new();
        let correlation = trace.correlation_id.as_str().to_owned();
        let started = std::time::Instant::now();
        let answer = self
            .http
            .get(format!("{}{path}", self.base))
            .header("x-correlation-id", &correlation)
            .header(
                "traceparent",
                runtime::broker::traceparent(&correlation, Uuid::now_v7()),
            )
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| self.failed(path, &without_url(&e)))?;
        let status = answer.status();
        metrics::histogram!("keel_remote_query_seconds", "module" => self.module)
            .record(started.elapsed().as_secs_f64());
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.failed(path, &format!("answered {status}")));
        }
        answer.json::<T>().await.map(Some).map_err(|e| {
            self.failed(
                path,
                &format!("answer does not decode: {}", without_url(&e)),
            )
        })
    }

    fn failed(&self, path: &str, why: &str) -> sqlx::Error {
        sqlx::Error::Protocol(format!(
            "remote {} at {}: GET {path} {why}",
            self.module, self.base
        ))
    }
}

/// A reqwest error without the URL it carries (the base URL is in our message already).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_decode() {
        "bad body"
    } else {
        "failed"
    };
    let detail =
        std::error::Error::source(e).map_or_else(|| "no detail".to_owned(), ToString::to_string);
    format!("{kind} ({detail})")
}

#[derive(Deserialize)]
struct RecordBody {
    id: Uuid,
    title: String,
    owner_email: String,
}

#[derive(Deserialize)]
struct InvoiceBody {
    id: Uuid,
    record_id: Uuid,
    amount_cents: i64,
    currency: String,
    status: String,
}

#[derive(Deserialize)]
struct ImportBody {
    status: String,
    total: i64,
    processed: i64,
    #[serde(default)]
    failed_rows: Vec<serde_json::Value>,
}

#[async_trait]
impl RecordDirectory for Remote {
    async fn find_record(&self, id: Uuid) -> Result<Option<RecordSummary>, sqlx::Error> {
        let body: Option<RecordBody> = self.get(&format!("/records/{id}")).await?;
        Ok(body.map(|b| RecordSummary {
            record_id: b.id,
            title: b.title,
            owner_email: b.owner_email,
        }))
    }
}

#[async_trait]
impl InvoiceDirectory for Remote {
    async fn find_invoice(&self, id: Uuid) -> Result<Option<InvoiceSummary>, sqlx::Error> {
        let body: Option<InvoiceBody> = self.get(&format!("/invoices/{id}")).await?;
        Ok(body.map(|b| InvoiceSummary {
            invoice_id: b.id,
            record_id: b.record_id,
            amount_cents: b.amount_cents,
            currency: b.currency,
            status: b.status,
        }))
    }
}

#[async_trait]
impl ImportDirectory for Remote {
    async fn find_import(&self, id: Uuid) -> Result<Option<ImportSummary>, sqlx::Error> {
        let body: Option<ImportBody> = self.get(&format!("/imports/{id}")).await?;
        Ok(body.map(|b| ImportSummary {
            import_id: id,
            status: b.status,
            total: b.total,
            processed: b.processed,
            failed: i64::try_from(b.failed_rows.len()).unwrap_or(i64::MAX),
        }))
    }
}

/// The port of `module` served at `base`.
///
/// # Errors
/// When the HTTP client cannot be built.
pub fn port(module: &'static str, base: &str) -> anyhow::Result<Arc<Remote>> {
    Ok(Arc::new(Remote::new(module, base)?))
}
