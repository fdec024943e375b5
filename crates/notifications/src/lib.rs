//! The notifications module: tells the outside world what happened in Keel.
//!
//! It owns webhook endpoints (`/webhook-endpoints`), the signed delivery of events to them
//! (Standard Webhooks, on the `webhooks` queue) and the emails sent to a record's owner when
//! one of its invoices is issued or paid (on the `emails` queue). Its tables start with
//! `notifications_`.
//!
//! How it works: listeners react to the v1 events by enqueuing one job per delivery inside
//! the listener's transaction; the jobs fetch what the receiver needs through the query ports
//! at the time they run, then make the outbound call. Nothing is ever sent from inside a
//! database transaction, and nothing is sent after a commit without a job to retry it.
//!
//! What it must never do: import another domain crate (it asks `events::queries` ports
//! instead), read another module's tables, send personal data (the owner's email) to webhook
//! receivers, log or record secrets, signatures or unmasked email addresses, or connect to a
//! private address unless `[webhooks] allow_private_targets` says so.

mod attempt_writer;
mod delivery;
mod delivery_log;
mod email;
mod endpoints;
mod http;
mod jobs;
mod listeners;
mod migrations;
mod model;
pub mod report;
mod request;
pub mod signing;
mod ssrf;
mod store;
mod throttle;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use events::queries::{ImportDirectory, InvoiceDirectory, RecordDirectory};
use events::{Clock, Db, Event, JobQueue, Module, Outbox};

pub use jobs::{DeliverWebhook, SendInvoiceEmail};
pub use migrations::migrations;

/// The module's settings, from `[webhooks]` and `[smtp]` in `keel.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationsConfig {
    /// Deliver to loopback/private/link-local targets; off in production (SSRF guard).
    pub allow_private_targets: bool,
    /// How long one webhook attempt may take, connect to last byte.
    pub request_timeout: Duration,
    /// `smtp://host:port` (plain), `smtp://host?tls=required` (STARTTLS) or `smtps://host`;
    /// `None` writes each email as an `.eml` file under `mail_dir` instead.
    pub smtp_url: Option<String>,
    /// Where emails go when no SMTP server is configured.
    pub mail_dir: PathBuf,
    /// The `From` of every email, e.g. `Keel <no-reply@keel.localhost>`.
    pub mail_from: String,
    /// An endpoint whose deliveries have all failed for this long is disabled.
    pub disable_after: Duration,
    /// How long the previous secret keeps signing after a rotation.
    pub rotation_grace: Duration,
    /// The largest outbound body; a bigger one is dead-lettered, never sent.
    pub max_payload_bytes: usize,
    /// Re-sends started per second by `recover`, per endpoint.
    pub recover_rate: u32,
    /// How long the delivery log keeps a delivery and its attempts.
    pub delivery_log_retention: Duration,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            request_timeout: Duration::from_secs(10),
            smtp_url: None,
            mail_dir: PathBuf::from("./var/mail"),
            mail_from: "Keel <no-reply@keel.localhost>".to_owned(),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            rotation_grace: Duration::from_secs(24 * 3600),
            max_payload_bytes: 256 * 1024,
            recover_rate: 10,
            delivery_log_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// What the module needs from the app: its database, the job port, time, the query ports of
/// the modules it reports on, and its settings.
#[derive(Clone)]
pub struct NotificationsDeps {
    /// The shared database; the module touches only `notifications_` tables.
    pub db: Db,
    /// Where listeners enqueue deliveries.
    pub jobs: Arc<dyn JobQueue>,
    /// Where `endpoint.disabled` is published.
    pub outbox: Arc<dyn Outbox>,
    /// Injected time: endpoint timestamps, `webhook-timestamp`, email `Date`.
    pub clock: Arc<dyn Clock>,
    /// Record titles and owner emails, from `records`.
    pub records: Arc<dyn RecordDirectory>,
    /// Invoice amounts and status, from `billing`.
    pub invoices: Arc<dyn InvoiceDirectory>,
    /// Import progress, from `records`.
    pub imports: Arc<dyn ImportDirectory>,
    /// The module's settings.
    pub config: NotificationsConfig,
}

impl std::fmt::Debug for NotificationsDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationsDeps")
            .field("db", &self.db)
            .field("jobs", &self.jobs)
            .field("clock", &self.clock)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why the module could not be built from its configuration; reported at start.
#[derive(Debug, thiserror::Error)]
pub enum NotificationsError {
    /// The webhook HTTP client could not be built (e.g. no TLS roots).
    #[error("building the webhook HTTP client failed: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// `[smtp] url` is not a usable SMTP URL.
    #[error(
        "[smtp] url is not a valid SMTP URL (expected smtp://host:port, smtps://host or smtp://host?tls=required): {0}"
    )]
    SmtpUrl(#[source] lettre::transport::smtp::Error),
    /// The configured sender is not a valid mailbox.
    #[error(
        "the mail sender {0:?} is not a valid mailbox (expected e.g. \"Keel <no-reply@example.com>\")"
    )]
    MailFrom(String),
}

/// The module's part of the API's OpenAPI document: `/webhook-endpoints`, generated from the
/// handlers and the request and response types.
pub fn openapi() -> utoipa::openapi::OpenApi {
    http::openapi()
}

/// Builds the notifications module: its routes, listeners, jobs and migrations.
///
/// # Errors
/// Fails only when the HTTP client or the mail transport cannot be built from `config`.
pub fn module(deps: NotificationsDeps) -> Result<Module, NotificationsError> {
    let config = &deps.config;
    let deliverer = delivery::Deliverer::new(
        request::client(config)?,
        deps.db.clone(),
        deps.clock.clone(),
        delivery::Ports {
            records: deps.records.clone(),
            invoices: deps.invoices.clone(),
            imports: deps.imports.clone(),
        },
        deps.outbox.clone(),
        config.clone(),
    );
    let emailer = email::InvoiceEmailer::new(
        email::Mailer::from_config(config)?,
        email::sender(&config.mail_from)?,
        deps.clock.clone(),
        deps.invoices.clone(),
        deps.records.clone(),
    );

    Ok(Module {
        name: "notifications",
        migrations: migrations(),
        publishes: vec![events::EndpointDisabled::key()],
        listeners: vec![
            Arc::new(listeners::DeliverWebhooks::new(
                deps.jobs.clone(),
                deps.clock.clone(),
            )),
            Arc::new(listeners::EmailInvoiceOwner::new(deps.jobs.clone())),
        ],
        jobs: vec![events::jobs::typed(deliverer), events::jobs::typed(emailer)],
        schedules: Vec::new(),
        routes: http::routes(http::EndpointsState {
            db: deps.db.clone(),
            clock: deps.clock.clone(),
            jobs: deps.jobs.clone(),
            config: config.clone(),
        }),
        retention: delivery_log::retention(config.delivery_log_retention),
    })
}
