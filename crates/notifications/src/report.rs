//! What the admin dashboard shows about webhook endpoints: each endpoint's state, its
//! success rate over the last 24 hours, and its latest deliveries with every attempt — read
//! from the delivery log, for the app's server-rendered pages.

use chrono::{DateTime, TimeDelta, Utc};
use events::Db;
use uuid::Uuid;

use crate::delivery_log::{self, DeliveryFilter};
use crate::model::EndpointSummary;
use crate::store;

/// Deliveries the endpoint page shows.
const PAGE_DELIVERIES: i64 = 50;

/// One endpoint as the dashboard lists it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EndpointRow {
    /// Its id.
    pub id: Uuid,
    /// Where deliveries go, without its query string (which may carry a token), as attempts
    /// record it.
    pub url: String,
    /// Free text for people.
    pub description: String,
    /// The events it receives.
    pub events: Vec<String>,
    /// When it was disabled and why (`gone`, `failing`, `manual`); `None` while enabled.
    pub disabled: Option<(DateTime<Utc>, String)>,
    /// Deliveries at once.
    pub max_in_flight: u32,
    /// Deliveries per second at most, when limited.
    pub rate_limit: Option<u32>,
}

impl From<EndpointSummary> for EndpointRow {
    fn from(e: EndpointSummary) -> Self {
        Self {
            id: e.id,
            url: reqwest::Url::parse(&e.url)
                .map(|url| crate::request::without_query(&url))
                .unwrap_or_default(),
            description: e.description,
            events: e.events,
            disabled: e
                .disabled_at
                .map(|at| (at, e.disabled_reason.unwrap_or_default())),
            max_in_flight: e.settings.max_in_flight,
            rate_limit: e.settings.rate_limit,
        }
    }
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AttemptRow {
    /// When it started.
    pub attempted_at: DateTime<Utc>,
    /// The receiver's status code, when it answered.
    pub status_code: Option<i64>,
    /// How long it took.
    pub duration_ms: i64,
    /// The first KiB of the answer.
    pub response: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// One message's delivery to the endpoint, with its attempts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryRow {
    /// The log entry's id.
    pub id: Uuid,
    /// The `webhook-id` the receiver sees.
    pub message_id: String,
    /// The event's name.
    pub event: String,
    /// `pending`, `succeeded`, `failing`, `failed` or `skipped`.
    pub status: String,
    /// When the event happened.
    pub occurred_at: DateTime<Utc>,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptRow>,
}

/// Everything the endpoint's page shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EndpointReport {
    /// The endpoint.
    pub endpoint: EndpointRow,
    /// Attempts that got a 2xx in the last 24 hours.
    pub succeeded_24h: i64,
    /// All attempts in the last 24 hours.
    pub attempts_24h: i64,
    /// Its latest deliveries, newest first.
    pub deliveries: Vec<DeliveryRow>,
}

/// Every live endpoint, oldest first.
///
/// # Errors
/// When the database cannot answer.
pub async fn endpoints(db: &Db) -> Result<Vec<EndpointRow>, sqlx::Error> {
    Ok(store::list_endpoints(db.pool())
        .await?
        .into_iter()
        .map(EndpointRow::from)
        .collect())
}

/// One endpoint's page as of `now`; `None` when no live endpoint has this id.
///
/// # Errors
/// When the database cannot answer.
pub async fn endpoint(
    db: &Db,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<EndpointReport>, sqlx::Error> {
    let Some(endpoint) = store::find_endpoint(db.pool(), id).await? else {
        return Ok(None);
    };
    let (succeeded_24h, attempts_24h) =
        delivery_log::success_counts(db.pool(), id, now - TimeDelta::hours(24)).await?;
    let latest =
        delivery_log::list(db.pool(), id, &DeliveryFilter::default(), PAGE_DELIVERIES).await?;
    let mut deliveries = Vec::with_capacity(latest.len());
    for summary in latest {
        let attempts = delivery_log::find(db.pool(), summary.id)
            .await?
            .map(|(_, attempts)| attempts)
            .unwrap_or_default();
        deliveries.push(DeliveryRow {
            id: summary.id,
            message_id: format!("msg_{}", summary.event_id),
            event: summary.event,
            status: summary.status,
            occurred_at: summary.occurred_at,
            attempts: attempts
                .into_iter()
                .map(|a| AttemptRow {
                    attempted_at: a.attempted_at,
                    status_code: a.status_code,
                    duration_ms: a.duration_ms,
                    response: a.response,
                    error: a.error,
                })
                .collect(),
        });
    }
    Ok(Some(EndpointReport {
        endpoint: endpoint.into(),
        succeeded_24h,
        attempts_24h,
        deliveries,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::tests::{add_endpoint, test_db};

    #[tokio::test]
    async fn an_endpoint_is_listed_without_the_query_string_that_may_carry_a_token() {
        let db = test_db().await;
        add_endpoint(&db, "https://hooks.example/in?token=s3cret", &["*"], 1_000).await;
        let rows = endpoints(&db).await.unwrap();
        assert_eq!(rows[0].url, "https://hooks.example/in");
    }
}
