//! Alerts: the explicit end of the failure path. A dead-lettered job (and, in the app, a
//! stale queue or a silent worker) is raised here; the sink decides where it goes.

use std::fmt::Debug;

use serde::Serialize;

/// Something an operator should look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// What happened: `job_dead`, `queue_stale`, `worker_silent`.
    pub kind: &'static str,
    /// What it concerns (`webhooks/notifications.deliver_webhook`, a worker id …): alerts
    /// with the same kind and subject are one condition, rate-limited together.
    pub subject: String,
    /// For humans.
    pub message: String,
    /// Structured facts (ids, counts); never secrets or PII.
    pub detail: serde_json::Value,
}

/// Where alerts go.
pub trait AlertSink: Send + Sync + Debug {
    /// Raises one alert. Must not block: deliver in the background.
    fn raise(&self, alert: Alert);
}

/// Logs alerts at error level (the default when no `[alerts] webhook_url` is set).
#[derive(Debug, Default, Clone, Copy)]
pub struct LogAlerts;

impl AlertSink for LogAlerts {
    fn raise(&self, alert: Alert) {
        tracing::error!(kind = alert.kind, subject = %alert.subject, detail = %alert.detail, "ALERT: {}", alert.message);
    }
}
