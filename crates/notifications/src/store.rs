//! The module's SQL: portable statements over `notifications_` tables only.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use events::DbConn;
use sqlx::{AnyPool, Row};
use uuid::Uuid;

use crate::endpoints::EndpointSettings;
use crate::model::{DeliveryTarget, EndpointSummary, NewEndpoint};

/// Stores a new endpoint and its subscriptions on `conn` (the caller's transaction).
pub(crate) async fn insert_endpoint(
    conn: &mut DbConn,
    endpoint: &NewEndpoint,
) -> Result<(), sqlx::Error> {
    let id = endpoint.id.to_string();
    sqlx::query(
        "INSERT INTO notifications_webhook_endpoints (id, url, secret, created_at, deleted_at) \
         VALUES ($1, $2, $3, $4, NULL)",
    )
    .bind(&id)
    .bind(endpoint.url.as_str())
    .bind(endpoint.secret.expose())
    .bind(endpoint.created_at.timestamp_millis())
    .execute(&mut *conn)
    .await?;
    for (ordinal, name) in (0_i64..).zip(endpoint.events.names()) {
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

/// Every endpoint not deleted, oldest first, with its subscriptions in the order given.
pub(crate) async fn list_endpoints(pool: &AnyPool) -> Result<Vec<EndpointSummary>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM notifications_webhook_endpoints \
         WHERE deleted_at IS NULL ORDER BY created_at, id"
    )))
    .fetch_all(pool)
    .await?;
    let subscriptions = sqlx::query(
        "SELECT s.endpoint_id, s.event_name FROM notifications_webhook_subscriptions s \
         JOIN notifications_webhook_endpoints e ON e.id = s.endpoint_id \
         WHERE e.deleted_at IS NULL ORDER BY s.endpoint_id, s.ordinal",
    )
    .fetch_all(pool)
    .await?;
    let mut events: HashMap<String, Vec<String>> = HashMap::new();
    for row in subscriptions {
        events
            .entry(row.try_get("endpoint_id")?)
            .or_default()
            .push(row.try_get("event_name")?);
    }
    rows.into_iter()
        .map(|row| {
            let id: String = row.try_get("id")?;
            let subscribed = events.remove(&id).unwrap_or_default();
            summary(&row, subscribed)
        })
        .collect()
}

/// The columns an [`EndpointSummary`] is read from.
const ENDPOINT_COLUMNS: &str = "id, url, created_at, description, disabled_at, disabled_reason, \
     previous_secret_until, headers, max_in_flight, rate_limit";

fn summary(row: &sqlx::any::AnyRow, events: Vec<String>) -> Result<EndpointSummary, sqlx::Error> {
    Ok(EndpointSummary {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        url: row.try_get("url")?,
        events,
        created_at: millis(row.try_get("created_at")?)?,
        description: row.try_get("description")?,
        disabled_at: row
            .try_get::<Option<i64>, _>("disabled_at")?
            .map(millis)
            .transpose()?,
        disabled_reason: row.try_get("disabled_reason")?,
        previous_secret_until: row
            .try_get::<Option<i64>, _>("previous_secret_until")?
            .map(millis)
            .transpose()?,
        settings: EndpointSettings::from_columns(
            &row.try_get::<String, _>("headers")?,
            row.try_get("max_in_flight")?,
            row.try_get("rate_limit")?,
        )?,
    })
}

/// One live endpoint with its subscriptions; `None` when no live endpoint has this id.
pub(crate) async fn find_endpoint(
    pool: &AnyPool,
    id: Uuid,
) -> Result<Option<EndpointSummary>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM notifications_webhook_endpoints \
         WHERE id = $1 AND deleted_at IS NULL"
    )))
    .bind(id.to_string())
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let events = sqlx::query_scalar(
        "SELECT event_name FROM notifications_webhook_subscriptions \
         WHERE endpoint_id = $1 ORDER BY ordinal",
    )
    .bind(id.to_string())
    .fetch_all(pool)
    .await?;
    summary(&row, events).map(Some)
}

/// Soft-deletes an endpoint: wipes its secrets and subscriptions so nothing new is sent to
/// it, and keeps the row so traces still name its URL. `false` when no live endpoint has
/// this id.
pub(crate) async fn delete_endpoint(
    conn: &mut DbConn,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let id = id.to_string();
    let updated = sqlx::query(
        "UPDATE notifications_webhook_endpoints SET deleted_at = $1, secret = '', \
         previous_secret = NULL, previous_secret_until = NULL \
         WHERE id = $2 AND deleted_at IS NULL",
    )
    .bind(now.timestamp_millis())
    .bind(&id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM notifications_webhook_subscriptions WHERE endpoint_id = $1")
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// The live endpoints subscribed to `event_name` directly or through `*`, read on `conn`
/// (the listener's transaction), each with whether it is enabled.
pub(crate) async fn subscribed_endpoints(
    conn: &mut DbConn,
    event_name: &str,
) -> Result<Vec<(Uuid, bool)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT DISTINCT e.id, e.disabled_at FROM notifications_webhook_endpoints e \
         JOIN notifications_webhook_subscriptions s ON s.endpoint_id = e.id \
         WHERE e.deleted_at IS NULL AND (s.event_name = $1 OR s.event_name = '*') \
         ORDER BY e.id",
    )
    .bind(event_name)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                parse_id(&row.try_get::<String, _>("id")?)?,
                row.try_get::<Option<i64>, _>("disabled_at")?.is_none(),
            ))
        })
        .collect()
}

/// What a delivery needs about its endpoint, deleted or not; `None` when the id was never
/// stored.
pub(crate) async fn delivery_target(
    pool: &AnyPool,
    id: Uuid,
) -> Result<Option<DeliveryTarget>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT url, secret, deleted_at, disabled_at, failing_since, previous_secret, \
         previous_secret_until, headers, max_in_flight, rate_limit \
         FROM notifications_webhook_endpoints WHERE id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        let previous: Option<String> = row.try_get("previous_secret")?;
        let until: Option<i64> = row.try_get("previous_secret_until")?;
        Ok(DeliveryTarget {
            url: row.try_get("url")?,
            secret: row.try_get("secret")?,
            deleted: row.try_get::<Option<i64>, _>("deleted_at")?.is_some(),
            disabled: row.try_get::<Option<i64>, _>("disabled_at")?.is_some(),
            failing: row.try_get::<Option<i64>, _>("failing_since")?.is_some(),
            previous_secret: previous.zip(until),
            settings: EndpointSettings::from_columns(
                &row.try_get::<String, _>("headers")?,
                row.try_get("max_in_flight")?,
                row.try_get("rate_limit")?,
            )?,
        })
    })
    .transpose()
}

pub(crate) fn parse_id(raw: &str) -> Result<Uuid, sqlx::Error> {
    Uuid::parse_str(raw)
        .map_err(|e| sqlx::Error::Decode(format!("stored id {raw:?} is not a UUID: {e}").into()))
}

pub(crate) fn millis(ms: i64) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| sqlx::Error::Decode(format!("stored timestamp {ms} is out of range").into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{EndpointUrl, EventFilter, WebhookSecret};
    use events::Db;

    /// A fresh in-memory SQLite database with the module's schema, through the Any driver.
    pub(crate) async fn test_db() -> Db {
        events::testing::memory_db(&crate::migrations()).await
    }

    /// Stores an endpoint subscribed to `events` and returns its id.
    pub(crate) async fn add_endpoint(db: &Db, url: &str, events: &[&str], at_ms: i64) -> Uuid {
        let endpoint = NewEndpoint {
            id: Uuid::now_v7(),
            url: EndpointUrl::parse(url, true).unwrap(),
            events: EventFilter::parse(events.iter().map(|s| (*s).to_owned()).collect()).unwrap(),
            secret: WebhookSecret::generate(),
            created_at: DateTime::from_timestamp_millis(at_ms).unwrap(),
        };
        let mut tx = db.begin().await.unwrap();
        insert_endpoint(&mut tx, &endpoint).await.unwrap();
        tx.commit().await.unwrap();
        endpoint.id
    }

    #[tokio::test]
    async fn endpoints_are_listed_oldest_first_with_their_events_in_order() {
        let db = test_db().await;
        let first = add_endpoint(
            &db,
            "https://a.example/hook",
            &["invoice.paid", "record.created"],
            1_000,
        )
        .await;
        let second = add_endpoint(&db, "https://b.example/hook", &["*"], 2_000).await;

        let listed = list_endpoints(db.pool()).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].id, first);
        assert_eq!(listed[0].url, "https://a.example/hook");
        assert_eq!(listed[0].events, ["invoice.paid", "record.created"]);
        assert_eq!(listed[0].created_at.timestamp_millis(), 1_000);
        assert_eq!(listed[1].id, second);
        assert_eq!(listed[1].events, ["*"]);
    }

    #[tokio::test]
    async fn subscriptions_match_the_event_name_or_the_star() {
        let db = test_db().await;
        let records = add_endpoint(&db, "https://a.example/", &["record.created"], 1).await;
        let all = add_endpoint(&db, "https://b.example/", &["*"], 2).await;
        let _invoices = add_endpoint(&db, "https://c.example/", &["invoice.paid"], 3).await;

        let mut conn = db.pool().acquire().await.unwrap();
        let mut expected = vec![(records, true), (all, true)];
        expected.sort();
        assert_eq!(
            subscribed_endpoints(&mut conn, "record.created")
                .await
                .unwrap(),
            expected
        );
        assert_eq!(
            subscribed_endpoints(&mut conn, "import.completed")
                .await
                .unwrap(),
            vec![(all, true)]
        );
    }

    #[tokio::test]
    async fn a_deleted_endpoint_is_hidden_unsubscribed_and_its_secret_wiped() {
        let db = test_db().await;
        let id = add_endpoint(&db, "https://a.example/", &["*"], 1).await;
        let now = DateTime::from_timestamp_millis(5_000).unwrap();

        let mut tx = db.begin().await.unwrap();
        assert!(delete_endpoint(&mut tx, id, now).await.unwrap());
        assert!(!delete_endpoint(&mut tx, id, now).await.unwrap());
        assert!(!delete_endpoint(&mut tx, Uuid::now_v7(), now).await.unwrap());
        tx.commit().await.unwrap();

        assert!(list_endpoints(db.pool()).await.unwrap().is_empty());
        let mut conn = db.pool().acquire().await.unwrap();
        assert!(
            subscribed_endpoints(&mut conn, "record.created")
                .await
                .unwrap()
                .is_empty()
        );
        drop(conn);
        let target = delivery_target(db.pool(), id).await.unwrap().unwrap();
        assert!(target.deleted);
        assert_eq!(target.secret, "");
        assert_eq!(target.url, "https://a.example/");
        assert!(
            delivery_target(db.pool(), Uuid::now_v7())
                .await
                .unwrap()
                .is_none()
        );
    }
}
