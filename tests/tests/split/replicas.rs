//! Replicas by queue: three `keel` processes on one PostgreSQL — one serving the API, one
//! working `webhooks`, one working `emails,imports` — where killing any one of them (SIGKILL,
//! then started again) loses nothing that was acknowledged.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tests::app::{AppOptions, KeelProcess, client, expect_json};
use tests::receivers::{HttpReceiver, SmtpReceiver};
use tests::{TestDb, eventually, postgres_only};

use crate::{KEEL, create_records, post};

postgres_only!(killing_any_one_of_three_processes_split_by_queue_loses_nothing);

const WITHIN: Duration = Duration::from_secs(60);

async fn killing_any_one_of_three_processes_split_by_queue_loses_nothing(db: TestDb) {
    let receiver = HttpReceiver::start().await;
    let smtp = SmtpReceiver::start().await;
    // Deliveries are retried every 50 ms for as long as the test needs them to fail.
    let options = AppOptions {
        smtp_url: Some(smtp.url()),
        max_attempts: Some(10_000),
        ..AppOptions::default()
    };
    let start = |args: &'static [&'static str]| {
        let options = options.clone();
        let db = &db;
        async move { KeelProcess::start_with(Path::new(KEEL), db, &options, args).await }
    };
    const API: &[&str] = &["serve", "--no-workers"];
    const WEBHOOKS: &[&str] = &["work", "--queues", "webhooks"];
    const EMAILS: &[&str] = &["work", "--queues", "emails,imports"];
    let mut api = start(API).await;
    let mut webhooks = start(WEBHOOKS).await;
    let mut emails = start(EMAILS).await;
    crate::post(
        &api.url("/webhook-endpoints"),
        &json!({ "url": receiver.url("/hook"), "events": ["record.created"] }),
        &uuid::Uuid::now_v7().to_string(),
        201,
    )
    .await;

    let mut records: Vec<String> = Vec::new();
    let mut invoices: Vec<String> = Vec::new();
    // An import (20 lines) for the `imports` worker, running while it is killed.
    let ndjson: String = (0..20)
        .map(|i| format!("{{\"title\": \"imported {i}\", \"owner_email\": \"i@example.com\"}}\n"))
        .collect();
    let accepted = expect_json(
        client()
            .post(api.url("/imports"))
            .header("content-type", "application/x-ndjson")
            .body(ndjson)
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    let import_id = accepted["id"].as_str().unwrap().to_owned();

    for victim in ["webhooks", "emails", "api"] {
        if victim == "webhooks" {
            // The receiver fails for now: the webhooks worker is mid-stream (deliveries
            // running and retrying) when it is killed.
            receiver.answer(503);
        }
        let batch = create_records(&api, 10, victim).await;
        for record_id in &batch[..2] {
            let invoice = post(
                &api.url("/invoices"),
                &json!({ "record_id": record_id, "amount_cents": 500, "currency": "EUR" }),
                &uuid::Uuid::now_v7().to_string(),
                201,
            )
            .await;
            invoices.push(invoice["id"].as_str().unwrap().to_owned());
        }
        records.extend(batch);
        match victim {
            "webhooks" => {
                receiver
                    .wait_for(receiver.requests().len() + 10, WITHIN)
                    .await;
                webhooks.kill().await;
                receiver.answer(200);
                webhooks = start(WEBHOOKS).await;
            }
            "emails" => {
                emails.kill().await;
                emails = start(EMAILS).await;
            }
            _ => {
                api.kill().await;
                api = start(API).await;
            }
        }
    }

    // Everything acknowledged went out: one webhook per record (the imported ones too), an
    // email per invoice, and the import completed.
    eventually(WITHIN, "the import to complete", || async {
        let status = expect_json(
            client()
                .get(api.url(&format!("/imports/{import_id}")))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        (status["status"] == "completed").then_some(())
    })
    .await;
    let expected_hooks = records.len() + 20;
    eventually(WITHIN, "a webhook for every record", || async {
        let ids: HashSet<String> = receiver
            .requests()
            .iter()
            .filter(|r| r.answered == 200)
            .filter_map(|r| r.json()["data"]["record_id"].as_str().map(str::to_owned))
            .collect();
        (ids.len() == expected_hooks).then_some(())
    })
    .await;
    let delivered: HashSet<String> = receiver
        .requests()
        .iter()
        .filter(|r| r.answered == 200)
        .filter_map(|r| r.json()["data"]["record_id"].as_str().map(str::to_owned))
        .collect();
    assert!(records.iter().all(|r| delivered.contains(r)));
    eventually(WITHIN, "an email for every invoice", || async {
        let mails = smtp.mails();
        invoices
            .iter()
            .all(|id| mails.iter().any(|m| m.body().contains(id.as_str())))
            .then_some(())
    })
    .await;
    drop((api, webhooks, emails));
}
