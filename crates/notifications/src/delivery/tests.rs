//! Tests of `delivery` against real HTTP and an in-memory database.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::DateTime;
use events::jobs::FailureKind;
use events::queries::{ImportSummary, InvoiceSummary, RecordSummary};
use events::{CorrelationId, TraceContext};

use super::*;
use crate::request::client;
use crate::signing::sign;
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
        Arc::new(events::testing::RecordingOutbox::default()),
        config(allow, timeout),
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
        recovery: None,
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
async fn a_410_disables_the_endpoint_announces_it_and_later_deliveries_are_skipped() {
    let db = test_db().await;
    let rx = receiver(410, "gone").await;
    let endpoint = add_endpoint(&db, &format!("http://{}/hook", rx.addr), &["*"], 1).await;
    let outbox = Arc::new(events::testing::RecordingOutbox::default());
    let config = config(true, Duration::from_secs(10));
    let deliverer = Deliverer::new(
        client(&config).unwrap(),
        db.clone(),
        fixed_clock(),
        empty_ports(),
        outbox.clone(),
        config,
    );
    deliverer
        .handle(record_job(endpoint, Uuid::now_v7()), &ctx("c"))
        .await
        .unwrap_err();
    assert_eq!(outbox.names(), ["endpoint.disabled"]);
    assert_eq!(
        outbox.published()[0].payload,
        json!({"endpoint_id": endpoint, "reason": "gone"})
    );
    let shown = store::find_endpoint(db.pool(), endpoint)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shown.disabled_reason.as_deref(), Some("gone"));

    let later = record_job(endpoint, Uuid::now_v7());
    let err = deliverer
        .handle(later.clone(), &ctx("c"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Cancel);
    assert_eq!(err.reason, "webhook endpoint is disabled");
    assert_eq!(
        rx.seen.lock().unwrap().len(),
        1,
        "nothing sent once disabled"
    );
    let logged = delivery_log::list(db.pool(), endpoint, &Default::default(), 10)
        .await
        .unwrap();
    let statuses: Vec<&str> = logged.iter().map(|d| d.status.as_str()).collect();
    assert_eq!(statuses, ["skipped", "failed"]);
}

#[tokio::test]
async fn during_a_rotation_both_secrets_sign_and_a_busy_endpoint_defers_without_a_request() {
    let db = test_db().await;
    let rx = receiver(200, "ok").await;
    let endpoint = add_endpoint(&db, &format!("http://{}/hook", rx.addr), &["*"], 1).await;
    let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    sqlx::query("UPDATE notifications_webhook_endpoints SET secret = $1")
        .bind(old)
        .execute(db.pool())
        .await
        .unwrap();
    let new = WebhookSecret::generate();
    let mut tx = db.begin().await.unwrap();
    let until = fixed_clock().now() + chrono::TimeDelta::hours(1);
    assert!(
        endpoints::rotate(&mut tx, endpoint, &new, until)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    let deliverer = deliverer(&db, true, Duration::from_secs(10), empty_ports()).await;
    let job = record_job(endpoint, Uuid::now_v7());
    deliverer.handle(job.clone(), &ctx("c")).await.unwrap();
    let (headers, body) = rx.seen.lock().unwrap()[0].clone();
    let msg_id = format!("msg_{}", job.event_id);
    let old_key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert_eq!(
        headers["webhook-signature"].to_str().unwrap(),
        format!(
            "{} {}",
            sign(new.key(), &msg_id, 1_614_265_330, &body),
            sign(&old_key, &msg_id, 1_614_265_330, &body)
        )
    );

    // Every slot of the endpoint taken: the delivery is handed back, unspent, unsent.
    let permits: Vec<_> = (0..4)
        .map(|_| deliverer.throttle.enter(endpoint, 4, None).unwrap())
        .collect();
    let err = deliverer
        .handle(record_job(endpoint, Uuid::now_v7()), &ctx("c"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Deferred);
    assert!(err.delay.is_some());
    assert_eq!(rx.seen.lock().unwrap().len(), 1);
    drop(permits);
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

/// A replica whose wall clock runs `skew` ahead, with no stand-in for the database's clock.
#[derive(Debug)]
struct SkewedClock(chrono::TimeDelta);

impl events::Clock for SkewedClock {
    fn now(&self) -> DateTime<chrono::Utc> {
        chrono::Utc::now() + self.0
    }
}

#[tokio::test]
async fn failing_for_disable_after_is_judged_on_the_databases_clock_not_a_skewed_replicas() {
    let db = test_db().await;
    let rx = receiver(500, "down").await;
    let endpoint = add_endpoint(&db, &format!("http://{}/hook", rx.addr), &["*"], 1).await;
    let replica = |skew_days: i64| {
        Deliverer::new(
            client(&config(true, Duration::from_secs(10))).unwrap(),
            db.clone(),
            Arc::new(SkewedClock(chrono::TimeDelta::days(skew_days))),
            empty_ports(),
            Arc::new(events::testing::RecordingOutbox::default()),
            config(true, Duration::from_secs(10)),
        )
    };
    // One replica's failure starts the clock; one whose wall clock runs ten days ahead
    // (past `disable_after`, five days) fails a moment later.
    for skew in [0, 10] {
        replica(skew)
            .handle(record_job(endpoint, Uuid::now_v7()), &ctx("c"))
            .await
            .unwrap_err();
    }
    let disabled: Option<i64> =
        sqlx::query_scalar("SELECT disabled_at FROM notifications_webhook_endpoints WHERE id = $1")
            .bind(endpoint.to_string())
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(
        disabled, None,
        "two failures a moment apart are not five days of failing"
    );
}
