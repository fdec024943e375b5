//! Billing's schedule: an invoice left open past `[billing] overdue_after` becomes
//! `overdue` at the daily tick, `invoice.overdue` emails the record's owner over SMTP, the
//! schedule shows its last run, and the overdue invoice can still be paid.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tests::app::{AppOptions, expect_json, spawn_app};
use tests::poll::eventually;
use tests::receivers::SmtpReceiver;
use tests::{ManualClock, TestDb, both_backends};

const WITHIN: Duration = Duration::from_secs(20);

async fn an_invoice_open_past_its_due_date_becomes_overdue_emails_the_owner_and_can_be_paid(
    db: TestDb,
) {
    let smtp = SmtpReceiver::start().await;
    let clock = Arc::new(ManualClock::new());
    let options = AppOptions {
        smtp_url: Some(smtp.url()),
        clock: Some(clock.clone()),
        extra_toml: "[billing]\noverdue_after = \"10d\"\n".to_owned(),
        ..AppOptions::default()
    };
    let app = spawn_app(&db, options).await;
    let record = app.create_record("Boat house", "late@example.com").await;
    let issue = |amount: i64| json!({ "record_id": record["id"], "amount_cents": amount, "currency": "EUR" });
    let old = expect_json(app.post("/invoices", &issue(990)).await, 201).await;
    let old_id = old["id"].as_str().unwrap().to_owned();
    smtp.wait_for(1, WITHIN).await;

    // The leader has learnt the schedule's next tick (03:00 UTC on the clock's first day).
    let schedule = eventually(WITHIN, "the schedule's next run is known", || async {
        let list = app.admin_get("/admin/schedules").await;
        let s = list["schedules"]
            .as_array()
            .and_then(|l| {
                l.iter()
                    .find(|s| s["name"] == "billing.mark_overdue_invoices")
            })
            .cloned()?;
        let stored = app.runtime().db().pool().clone();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keel_schedules")
            .fetch_one(&stored)
            .await
            .ok()?;
        (n == 1).then_some(s)
    })
    .await;
    assert_eq!(
        schedule["next_run_at"], "2030-01-01T03:00:00Z",
        "{schedule}"
    );
    assert_eq!(schedule["missed"], "run_once");

    // Eleven days later (ten ticks missed while nothing moved the clock) an invoice issued
    // just now stays open; the old one is overdue, announced once.
    clock.advance(Duration::from_secs(11 * 24 * 3600));
    let recent = expect_json(app.post("/invoices", &issue(500)).await, 201).await;
    smtp.wait_for(2, WITHIN).await;
    let mails = smtp.wait_for(3, WITHIN).await;
    let overdue = &mails[2];
    assert_eq!(overdue.to, vec!["late@example.com".to_owned()]);
    assert_eq!(
        overdue.header("subject").as_deref(),
        Some("Invoice overdue: 9.90 EUR")
    );
    assert!(overdue.body().contains(&old_id), "{}", overdue.data);
    assert!(overdue.body().contains("is overdue"), "{}", overdue.data);

    let shown = expect_json(app.get(&format!("/invoices/{old_id}")).await, 200).await;
    assert_eq!(shown["status"], "overdue");
    let still_open = expect_json(
        app.get(&format!("/invoices/{}", recent["id"].as_str().unwrap()))
            .await,
        200,
    )
    .await;
    assert_eq!(still_open["status"], "open");

    let ran = eventually(WITHIN, "the schedule's last job completed", || async {
        let list = app.admin_get("/admin/schedules").await;
        let s = list["schedules"][0].clone();
        (s["last_outcome"] == "completed").then_some(s)
    })
    .await;
    assert_eq!(ran["last_run_at"], "2030-01-11T03:00:00Z", "{ran}");
    assert_eq!(ran["next_run_at"], "2030-01-12T03:00:00Z", "{ran}");

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(
            "keel_schedule_next_run_timestamp_seconds{schedule=\"billing.mark_overdue_invoices\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("keel_schedule_last_outcome{schedule=\"billing.mark_overdue_invoices\""),
        "{metrics}"
    );

    let paid = expect_json(
        app.post(&format!("/invoices/{old_id}/pay"), &json!({}))
            .await,
        200,
    )
    .await;
    assert_eq!(paid["status"], "paid");
    smtp.wait_for(4, WITHIN).await;
    // Drain with time moving: on a busy machine an attempt may be deferred or retried, which
    // waits on the (manual) clock.
    eventually(WITHIN, "every queue to drain", || async {
        clock.advance(Duration::from_secs(1));
        app.runtime().wake_all();
        let stats = app.admin_get("/admin/queues").await;
        let busy = stats["queues"]
            .as_array()?
            .iter()
            .any(|q| q["ready"] != 0 || q["running"] != 0 || q["retrying"] != 0);
        (!busy).then_some(())
    })
    .await;
    let announced: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM keel_events WHERE name = 'invoice.overdue'")
            .fetch_one(app.runtime().db().pool())
            .await
            .unwrap();
    assert_eq!(
        announced, 1,
        "one invoice.overdue for the one overdue invoice"
    );
    app.shutdown().await;
}

both_backends!(an_invoice_open_past_its_due_date_becomes_overdue_emails_the_owner_and_can_be_paid);
