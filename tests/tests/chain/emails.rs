//! Chain 2: issuing and paying an invoice email the record's owner over SMTP (the owner's
//! address found through a query port), and an invoice is paid only once.

use std::time::Duration;

use serde_json::json;
use tests::app::{AppOptions, expect_error, expect_json, spawn_app};
use tests::receivers::SmtpReceiver;
use tests::{TestDb, both_backends};

const WITHIN: Duration = Duration::from_secs(20);

async fn an_issued_and_a_paid_invoice_each_email_the_owner_and_a_second_payment_is_refused(
    db: TestDb,
) {
    let smtp = SmtpReceiver::start().await;
    let options = AppOptions {
        smtp_url: Some(smtp.url()),
        ..AppOptions::default()
    };
    let app = spawn_app(&db, options).await;
    let record = app.create_record("Garden shed", "owner@example.com").await;

    let response = app
        .post(
            "/invoices",
            &json!({ "record_id": record["id"], "amount_cents": 1250, "currency": "EUR" }),
        )
        .await;
    let invoice = expect_json(response, 201).await;
    assert_eq!(invoice["status"], "open");
    assert_eq!(invoice["amount_cents"], 1250);
    let invoice_id = invoice["id"].as_str().unwrap();

    let mails = smtp.wait_for(1, WITHIN).await;
    let issued = &mails[0];
    assert_eq!(issued.to, vec!["owner@example.com".to_owned()]);
    assert_eq!(
        issued.header("subject").as_deref(),
        Some("Invoice issued: 12.50 EUR")
    );
    assert!(issued.body().contains("12.50 EUR"), "{}", issued.data);
    assert!(issued.body().contains(invoice_id), "{}", issued.data);

    let response = app
        .post(&format!("/invoices/{invoice_id}/pay"), &json!({}))
        .await;
    let paid = expect_json(response, 200).await;
    assert_eq!(paid["status"], "paid");
    assert!(paid["paid_at"].is_string(), "{paid}");

    let mails = smtp.wait_for(2, WITHIN).await;
    let receipt = &mails[1];
    assert_eq!(receipt.to, vec!["owner@example.com".to_owned()]);
    assert_eq!(
        receipt.header("subject").as_deref(),
        Some("Invoice paid: 12.50 EUR")
    );
    assert!(receipt.body().contains("12.50 EUR"), "{}", receipt.data);
    assert_ne!(
        issued.header("message-id"),
        receipt.header("message-id"),
        "two messages, two ids"
    );

    let again = app
        .post(&format!("/invoices/{invoice_id}/pay"), &json!({}))
        .await;
    expect_error(again, 409, "invoice_already_paid").await;

    app.settle(WITHIN).await;
    assert_eq!(
        smtp.mails().len(),
        2,
        "one email per invoice event, no more"
    );
    app.shutdown().await;
}

both_backends!(an_issued_and_a_paid_invoice_each_email_the_owner_and_a_second_payment_is_refused);
