//! Chain 3: an NDJSON import creates the good lines as records, reports the bad ones by line
//! number, counts exactly, and ends with an `import.completed` webhook.

use std::time::Duration;

use serde_json::{Value, json};
use tests::app::{AppOptions, TestApp, expect_json, spawn_app};
use tests::receivers::HttpReceiver;
use tests::webhook_verify::verify;
use tests::{TestDb, both_backends, eventually};

const WITHIN: Duration = Duration::from_secs(30);

/// Uploads `ndjson`; returns the import id.
pub async fn upload(base_url: &str, client: &reqwest::Client, ndjson: String) -> String {
    let response = client
        .post(format!("{base_url}/imports"))
        .header("content-type", "application/x-ndjson")
        .body(ndjson)
        .send()
        .await
        .unwrap();
    let accepted = expect_json(response, 202).await;
    assert_eq!(accepted["status"], "queued");
    accepted["id"].as_str().unwrap().to_owned()
}

async fn import_status(app: &TestApp, id: &str) -> Value {
    expect_json(app.get(&format!("/imports/{id}")).await, 200).await
}

async fn an_ndjson_import_creates_the_good_lines_reports_the_bad_ones_and_announces_completion(
    db: TestDb,
) {
    let receiver = HttpReceiver::start().await;
    let app = spawn_app(&db, AppOptions::default()).await;
    let (_, secret) = app
        .subscribe(&receiver.url("/imports"), &["import.completed"])
        .await;

    let ndjson = [
        r#"{"title": "first", "owner_email": "a@example.com"}"#,
        r#"{"title": "bad email", "owner_email": "not-an-email"}"#,
        "",
        r#"{"title": "second", "owner_email": "b@example.com", "attributes": {"n": 2}}"#,
        r#"{"title": "broken"#,
        r#"{"title": "third", "owner_email": "c@example.com"}"#,
        r#"{"title": "extra", "owner_email": "d@example.com", "colour": "red"}"#,
        "   ",
        r#"{"title": "", "owner_email": "e@example.com"}"#,
    ]
    .join("\n");
    let id = upload(&app.base, &app.client, ndjson).await;

    let done = eventually(WITHIN, "the import to complete", || async {
        let status = import_status(&app, &id).await;
        (status["status"] == "completed").then_some(status)
    })
    .await;
    assert_eq!(done["total"], 7, "non-empty lines: {done}");
    assert_eq!(done["processed"], 7, "{done}");
    assert_eq!(done["failed"], 4, "{done}");
    let failed = done["failed_rows"].as_array().unwrap();
    let lines: Vec<&Value> = failed.iter().map(|f| &f["line"]).collect();
    assert_eq!(
        lines,
        [&json!(2), &json!(5), &json!(7), &json!(9)],
        "{done}"
    );
    for row in failed {
        let error = row["error"].as_str().unwrap();
        assert!(!error.is_empty(), "{row}");
        assert!(
            !error.contains("not-an-email"),
            "errors never echo addresses: {row}"
        );
    }

    let page = expect_json(app.get("/records?limit=200").await, 200).await;
    let mut titles: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["title"].as_str().unwrap())
        .collect();
    titles.sort_unstable();
    assert_eq!(titles, ["first", "second", "third"]);
    assert!(page["next_cursor"].is_null());

    let requests = receiver.wait_for(1, WITHIN).await;
    verify(&secret, &requests[0]).unwrap();
    let body = requests[0].json();
    assert_eq!(body["type"], "import.completed");
    assert_eq!(body["data"]["import_id"], id.as_str());
    assert_eq!(body["data"]["status"], "completed");
    assert_eq!(body["data"]["total"], 7);
    assert_eq!(body["data"]["processed"], 7);
    assert_eq!(body["data"]["failed"], 4);

    app.settle(WITHIN).await;
    assert_eq!(receiver.requests().len(), 1, "completion is announced once");
    app.shutdown().await;
}

both_backends!(
    an_ndjson_import_creates_the_good_lines_reports_the_bad_ones_and_announces_completion
);
