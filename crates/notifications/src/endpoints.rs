//! An endpoint's lifecycle and settings: enabled, or disabled with a reason (a 410, failing
//! for longer than `[webhooks] disable_after`, or by hand) and announced as
//! `endpoint.disabled`; edited and re-enabled; its secret rotated with a grace period; its
//! custom headers and throttling.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use events::outbox::OutboxExt;
use events::{DbConn, EndpointDisabled, EndpointDisabledReason, Outbox, PublishError};
use reqwest::header::{HeaderName, HeaderValue};
use uuid::Uuid;

use crate::model::{EndpointUrl, EventFilter, InvalidEndpoint, WebhookSecret};

/// Deliveries to one endpoint at once when the endpoint does not say.
pub(crate) const DEFAULT_MAX_IN_FLIGHT: u32 = 4;
/// The most `max_in_flight` may be: beyond, one endpoint could take a queue's every slot.
const MAX_IN_FLIGHT_LIMIT: u32 = 64;
/// The most custom headers an endpoint may have.
const MAX_HEADERS: usize = 20;
/// Headers Keel sets (and signs or relies on); a custom header may not replace them.
const RESERVED_HEADERS: [&str; 9] = [
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "traceparent",
    "tracestate",
    "x-correlation-id",
    "transfer-encoding",
    "connection",
];

/// What an endpoint says about how it is called: static headers and throttling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointSettings {
    /// Sent with every delivery, under the signed ones.
    pub headers: BTreeMap<String, String>,
    /// Deliveries to it at once (per process).
    pub max_in_flight: u32,
    /// Deliveries started per second, when limited.
    pub rate_limit: Option<u32>,
}

impl Default for EndpointSettings {
    fn default() -> Self {
        Self {
            headers: BTreeMap::new(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            rate_limit: None,
        }
    }
}

impl EndpointSettings {
    /// Checks headers and limits; header names are kept lower-case.
    pub(crate) fn parse(
        headers: BTreeMap<String, String>,
        max_in_flight: u32,
        rate_limit: Option<u32>,
    ) -> Result<Self, InvalidEndpoint> {
        if headers.len() > MAX_HEADERS {
            return Err(InvalidEndpoint::Header(format!(
                "at most {MAX_HEADERS} custom headers"
            )));
        }
        let mut kept = BTreeMap::new();
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            if HeaderName::from_bytes(lower.as_bytes()).is_err() {
                return Err(InvalidEndpoint::Header(format!(
                    "{name:?} is not a valid header name"
                )));
            }
            if HeaderValue::from_str(&value).is_err() {
                return Err(InvalidEndpoint::Header(format!(
                    "the value of {name:?} is not a valid header value"
                )));
            }
            if lower.starts_with("webhook-") || RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(InvalidEndpoint::Header(format!(
                    "{name:?} is set by Keel and cannot be overridden"
                )));
            }
            kept.insert(lower, value);
        }
        if !(1..=MAX_IN_FLIGHT_LIMIT).contains(&max_in_flight) {
            return Err(InvalidEndpoint::Throttle(format!(
                "max_in_flight must be between 1 and {MAX_IN_FLIGHT_LIMIT}"
            )));
        }
        if rate_limit == Some(0) {
            return Err(InvalidEndpoint::Throttle(
                "rate_limit must be at least 1 a second (or absent)".to_owned(),
            ));
        }
        Ok(Self {
            headers: kept,
            max_in_flight,
            rate_limit,
        })
    }

    /// Reads the stored columns back.
    pub(crate) fn from_columns(
        headers: &str,
        max_in_flight: i64,
        rate_limit: Option<i64>,
    ) -> Result<Self, sqlx::Error> {
        let headers = serde_json::from_str(headers).map_err(|e| {
            sqlx::Error::Decode(
                format!("stored endpoint headers are not a JSON object: {e}").into(),
            )
        })?;
        Ok(Self {
            headers,
            max_in_flight: u32::try_from(max_in_flight).unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            rate_limit: rate_limit.and_then(|r| u32::try_from(r).ok()),
        })
    }
}

/// Writes an endpoint's description and settings on `conn` (the caller's transaction).
pub(crate) async fn save_settings(
    conn: &mut DbConn,
    id: Uuid,
    description: &str,
    settings: &EndpointSettings,
) -> Result<(), sqlx::Error> {
    let headers =
        serde_json::to_string(&settings.headers).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "UPDATE notifications_webhook_endpoints \
         SET description = $1, headers = $2, max_in_flight = $3, rate_limit = $4 WHERE id = $5",
    )
    .bind(description)
    .bind(headers)
    .bind(i64::from(settings.max_in_flight))
    .bind(settings.rate_limit.map(i64::from))
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Points a live endpoint at a new URL; `false` when no live endpoint has this id.
pub(crate) async fn set_url(
    conn: &mut DbConn,
    id: Uuid,
    url: &EndpointUrl,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE notifications_webhook_endpoints SET url = $1 WHERE id = $2 AND deleted_at IS NULL",
    )
    .bind(url.as_str())
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(updated > 0)
}

/// Replaces a live endpoint's subscriptions.
pub(crate) async fn set_events(
    conn: &mut DbConn,
    id: Uuid,
    events: &EventFilter,
) -> Result<(), sqlx::Error> {
    let id = id.to_string();
    sqlx::query("DELETE FROM notifications_webhook_subscriptions WHERE endpoint_id = $1")
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    for (ordinal, name) in (0_i64..).zip(events.names()) {
        sqlx::query(
            "INSERT INTO notifications_webhook_subscriptions (endpoint_id, event_name, ordinal) \
             VALUES ($1, $2, $3)",
        )
        .bind(&id)
        .bind(name.as_str())
        .bind(ordinal)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Enables a live endpoint again, forgetting its failures.
pub(crate) async fn enable(conn: &mut DbConn, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications_webhook_endpoints \
         SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL \
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Disables a live, enabled endpoint; `false` when it was not (already disabled, deleted).
pub(crate) async fn disable(
    conn: &mut DbConn,
    id: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE notifications_webhook_endpoints SET disabled_at = $1, disabled_reason = $2 \
         WHERE id = $3 AND deleted_at IS NULL AND disabled_at IS NULL",
    )
    .bind(now.timestamp_millis())
    .bind(reason)
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(updated > 0)
}

/// Rotates a live endpoint's secret: the current one keeps signing until `grace_until`.
/// `false` when no live endpoint has this id.
pub(crate) async fn rotate(
    conn: &mut DbConn,
    id: Uuid,
    secret: &WebhookSecret,
    grace_until: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE notifications_webhook_endpoints \
         SET previous_secret = secret, previous_secret_until = $1, secret = $2 \
         WHERE id = $3 AND deleted_at IS NULL",
    )
    .bind(grace_until.timestamp_millis())
    .bind(secret.expose())
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(updated > 0)
}

/// Forgets an endpoint's failures after a delivery succeeded (writes only when it had some).
pub(crate) async fn mark_succeeded(pool: &sqlx::AnyPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications_webhook_endpoints SET failing_since = NULL \
         WHERE id = $1 AND failing_since IS NOT NULL",
    )
    .bind(id.to_string())
    .execute(pool)
    .await?;
    Ok(())
}

/// Why disabling an endpoint and announcing it failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DisableError {
    /// The database could not answer.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// `endpoint.disabled` could not be published.
    #[error("publishing endpoint.disabled: {0}")]
    Publish(#[from] PublishError),
}

/// Records a failed delivery and, when every delivery has failed for `disable_after` or the
/// receiver answered 410, disables the endpoint and publishes `endpoint.disabled` in the same
/// transaction. Returns the reason when this call disabled it. `now` is the database's
/// reading ([`events::Db::now`]), so replicas with skewed clocks agree on when it expires.
pub(crate) async fn record_failure(
    db: &events::Db,
    outbox: &Arc<dyn Outbox>,
    id: Uuid,
    gone: bool,
    now: DateTime<Utc>,
    disable_after: std::time::Duration,
) -> Result<Option<EndpointDisabledReason>, DisableError> {
    let mut tx = db.begin().await?;
    let key = id.to_string();
    sqlx::query(
        "UPDATE notifications_webhook_endpoints SET failing_since = $1 \
         WHERE id = $2 AND failing_since IS NULL",
    )
    .bind(now.timestamp_millis())
    .bind(&key)
    .execute(&mut *tx)
    .await?;
    let since: Option<i64> = sqlx::query_scalar(
        "SELECT failing_since FROM notifications_webhook_endpoints WHERE id = $1",
    )
    .bind(&key)
    .fetch_optional(&mut *tx)
    .await?
    .flatten();
    let after = i64::try_from(disable_after.as_millis()).unwrap_or(i64::MAX);
    let reason = if gone {
        Some(EndpointDisabledReason::Gone)
    } else if since.is_some_and(|s| now.timestamp_millis().saturating_sub(s) >= after) {
        Some(EndpointDisabledReason::Failing)
    } else {
        None
    };
    let mut disabled = None;
    if let Some(reason) = reason
        && disable(&mut tx, id, reason_text(reason), now).await?
    {
        outbox
            .publish(
                &mut tx,
                &EndpointDisabled {
                    endpoint_id: id,
                    reason,
                },
            )
            .await?;
        disabled = Some(reason);
    }
    tx.commit().await?;
    Ok(disabled)
}

/// How a reason is stored and shown.
pub(crate) fn reason_text(reason: EndpointDisabledReason) -> &'static str {
    match reason {
        EndpointDisabledReason::Gone => "gone",
        EndpointDisabledReason::Failing => "failing",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn custom_headers_are_kept_lower_case_and_never_override_keels() {
        let ok = EndpointSettings::parse(headers(&[("X-Tenant", "acme")]), 4, None).unwrap();
        assert_eq!(ok.headers, headers(&[("x-tenant", "acme")]));
        for reserved in [
            "webhook-signature",
            "Webhook-Id",
            "content-type",
            "traceparent",
        ] {
            assert!(matches!(
                EndpointSettings::parse(headers(&[(reserved, "x")]), 4, None),
                Err(InvalidEndpoint::Header(_))
            ));
        }
        assert!(EndpointSettings::parse(headers(&[("bad name", "x")]), 4, None).is_err());
        assert!(EndpointSettings::parse(headers(&[("x-a", "line\nbreak")]), 4, None).is_err());
    }

    #[tokio::test]
    async fn an_endpoint_is_disabled_only_after_failing_for_disable_after_without_a_success() {
        let db = crate::store::tests::test_db().await;
        let id = crate::store::tests::add_endpoint(&db, "https://a.example/", &["*"], 1).await;
        let recording = Arc::new(events::testing::RecordingOutbox::default());
        let outbox: Arc<dyn Outbox> = recording.clone();
        let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        let after = std::time::Duration::from_secs(100);

        assert_eq!(
            record_failure(&db, &outbox, id, false, at(1_000), after)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            record_failure(&db, &outbox, id, false, at(1_099), after)
                .await
                .unwrap(),
            None
        );
        // A success forgets the failures: the clock starts again at the next one.
        mark_succeeded(db.pool(), id).await.unwrap();
        assert_eq!(
            record_failure(&db, &outbox, id, false, at(1_150), after)
                .await
                .unwrap(),
            None
        );
        assert!(recording.names().is_empty());
        assert_eq!(
            record_failure(&db, &outbox, id, false, at(1_250), after)
                .await
                .unwrap(),
            Some(EndpointDisabledReason::Failing)
        );
        // Already disabled: nothing more is announced.
        assert_eq!(
            record_failure(&db, &outbox, id, true, at(1_300), after)
                .await
                .unwrap(),
            None
        );
        assert_eq!(recording.names(), ["endpoint.disabled"]);
    }

    #[test]
    fn throttling_limits_are_bounded() {
        assert!(EndpointSettings::parse(BTreeMap::new(), 0, None).is_err());
        assert!(EndpointSettings::parse(BTreeMap::new(), 65, None).is_err());
        assert!(EndpointSettings::parse(BTreeMap::new(), 1, Some(0)).is_err());
        assert!(EndpointSettings::parse(BTreeMap::new(), 64, Some(5)).is_ok());
    }
}
