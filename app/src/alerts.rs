//! Alerts to `[alerts] webhook_url`: a JSON POST signed like a webhook (Standard Webhooks),
//! plus an error log line — at most one per condition per interval, never a storm.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use events::Clock;
use runtime::alerts::{Alert, AlertSink, LogAlerts};
use serde_json::json;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::config::AlertSettings;

/// An alert condition: its kind and subject.
type Condition = (String, String);
/// When a condition's alert last went out, and how many were suppressed since.
type LastSent = (DateTime<Utc>, u64);

/// Logs every alert that passes the rate limit and POSTs it when a URL is configured.
#[derive(Debug)]
pub struct WebhookAlerts {
    clock: Arc<dyn Clock>,
    min_interval: TimeDelta,
    /// Per condition (kind, subject): when it last went out, and how many were held back since.
    last: Mutex<HashMap<Condition, LastSent>>,
    outbound: Option<mpsc::UnboundedSender<Alert>>,
}

impl WebhookAlerts {
    /// Builds the sink; when a URL is set, starts the background sender.
    ///
    /// # Errors
    /// Fails when the HTTP client cannot be built or the secret is not `whsec_…`.
    pub fn new(settings: &AlertSettings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let outbound = match &settings.webhook_url {
            Some(url) => {
                let key = match &settings.secret {
                    Some(s) => Some(
                        notifications::signing::decode_secret(s)
                            .map_err(|e| anyhow::anyhow!("[alerts] secret: {e}"))?,
                    ),
                    None => None,
                };
                let client = reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(10))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()?;
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(send_loop(client, url.clone(), key, clock.clone(), rx));
                Some(tx)
            }
            None => None,
        };
        Ok(Self {
            clock,
            min_interval: TimeDelta::from_std(settings.min_interval).unwrap_or(TimeDelta::MAX),
            last: Mutex::new(HashMap::new()),
            outbound,
        })
    }

    /// Whether `alert` may go out now; `Some(n)` with the number of alerts of the same
    /// condition suppressed since the last one that went out.
    fn admit(&self, alert: &Alert) -> Option<u64> {
        let now = self.clock.now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let key = (alert.kind.to_owned(), alert.subject.clone());
        match last.get_mut(&key) {
            Some((prev, suppressed)) if now - *prev < self.min_interval => {
                *suppressed += 1;
                None
            }
            Some((prev, suppressed)) => {
                let held_back = *suppressed;
                *prev = now;
                *suppressed = 0;
                Some(held_back)
            }
            None => {
                last.insert(key, (now, 0));
                Some(0)
            }
        }
    }

    #[cfg(test)]
    fn allowed(&self, alert: &Alert) -> bool {
        self.admit(alert).is_some()
    }
}

impl AlertSink for WebhookAlerts {
    fn raise(&self, mut alert: Alert) {
        let Some(suppressed) = self.admit(&alert) else {
            tracing::debug!(kind = alert.kind, subject = %alert.subject, "alert suppressed by rate limit");
            return;
        };
        if suppressed > 0 {
            // Nothing is silently lost: the next alert of a condition says how many it stands for.
            if let serde_json::Value::Object(map) = &mut alert.detail {
                map.insert("suppressed_since_last".into(), suppressed.into());
            }
            alert.message = format!("{} ({suppressed} more since the last alert)", alert.message);
        }
        LogAlerts.raise(alert.clone());
        if let Some(tx) = &self.outbound {
            let _ = tx.send(alert);
        }
    }
}

async fn send_loop(
    client: reqwest::Client,
    url: String,
    key: Option<Vec<u8>>,
    clock: Arc<dyn Clock>,
    mut rx: mpsc::UnboundedReceiver<Alert>,
) {
    while let Some(alert) = rx.recv().await {
        let now = clock.now();
        let id = format!("alert_{}", Uuid::now_v7().simple());
        let body = json!({
            "type": format!("keel.alert.{}", alert.kind),
            "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": {
                "kind": alert.kind,
                "subject": alert.subject,
                "message": alert.message,
                "detail": alert.detail,
            },
        })
        .to_string();
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", now.timestamp().to_string());
        if let Some(key) = &key {
            request = request.header(
                "webhook-signature",
                notifications::signing::sign(key, &id, now.timestamp(), body.as_bytes()),
            );
        }
        match request.body(body).send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(kind = alert.kind, "alert delivered");
            }
            Ok(r) => tracing::warn!(
                status = r.status().as_u16(),
                "alert receiver refused the alert"
            ),
            Err(e) => tracing::warn!(error = %e, "alert could not be delivered"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::time::Duration;

    use super::*;

    #[derive(Debug)]
    struct StepClock(AtomicI64);

    impl Clock for StepClock {
        fn now(&self) -> DateTime<Utc> {
            DateTime::from_timestamp_millis(self.0.load(Ordering::SeqCst)).unwrap()
        }
    }

    fn alert(kind: &'static str, subject: &str) -> Alert {
        Alert {
            kind,
            subject: subject.to_owned(),
            message: String::new(),
            detail: serde_json::Value::Null,
        }
    }

    #[test]
    fn one_alert_per_condition_per_interval() {
        let clock = Arc::new(StepClock(AtomicI64::new(1_000_000)));
        let settings = AlertSettings {
            webhook_url: None,
            secret: None,
            queue_age_threshold: Duration::from_secs(600),
            min_interval: Duration::from_secs(300),
        };
        let sink = WebhookAlerts::new(&settings, clock.clone()).unwrap();
        assert!(sink.allowed(&alert("job_dead", "webhooks/x")));
        assert!(
            !sink.allowed(&alert("job_dead", "webhooks/x")),
            "a storm is suppressed"
        );
        assert!(
            sink.allowed(&alert("job_dead", "emails/y")),
            "another condition is not"
        );
        assert!(
            sink.allowed(&alert("queue_stale", "webhooks/x")),
            "nor another kind"
        );
        assert!(!sink.allowed(&alert("job_dead", "webhooks/x")));
        clock.0.fetch_add(300_000, Ordering::SeqCst);
        assert_eq!(
            sink.admit(&alert("job_dead", "webhooks/x")),
            Some(2),
            "the interval has passed, and the alert counts the two held back"
        );
    }
}
