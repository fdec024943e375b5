//! The event log as an asset, through the real binary and the admin API: `keel events
//! list|show` pages through stored events, `keel events replay` delivers a window of them to
//! a listener that never saw them — once, then skipped by its inbox unless `--force` — and a
//! listener's configured `backfill_from` is fed at start-up, once across replicas, with its
//! progress in `/admin/queues`.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::Value;
use tests::app::{ADMIN_TOKEN, AppOptions, TestApp, client, expect_json, spawn_app};
use tests::receivers::HttpReceiver;
use tests::{TestDb, both_backends, eventually};

const KEEL: &str = env!("CARGO_BIN_EXE_keel-under-test");
const WEBHOOKS: &str = "notifications.on_event_deliver_webhooks";
const WAIT: Duration = Duration::from_secs(30);

/// Runs `keel args…` against `db`; returns (exit code, stdout, stderr).
async fn keel(db: &TestDb, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(KEEL)
        .args(args)
        .env("KEEL_DATABASE_URL", db.url())
        .env_remove("KEEL_CONFIG")
        .env("RUST_LOG", "error")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn keel_json(db: &TestDb, args: &[&str]) -> Value {
    let (code, out, err) = keel(db, args).await;
    assert_eq!(code, 0, "keel {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("keel {args:?}: not JSON ({e}): {out}"))
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Three records created before any webhook endpoint existed: their `record.created`
/// reached the webhook listener, which had nobody to deliver to.
async fn records_before_the_endpoint(app: &TestApp) -> Vec<String> {
    let mut ids = Vec::new();
    for title in ["one", "two", "three"] {
        let record = app.create_record(title, "ada@example.com").await;
        ids.push(record["id"].as_str().unwrap().to_owned());
    }
    ids
}

fn delivered_record_ids(receiver: &HttpReceiver) -> Vec<String> {
    let mut ids: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.json()["data"]["record_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

both_backends!(
    the_event_log_is_listed_paged_shown_and_replayed_to_a_listener_once,
    a_configured_backfill_is_fed_once_at_start_up_with_its_progress_in_queues,
);

async fn the_event_log_is_listed_paged_shown_and_replayed_to_a_listener_once(db: TestDb) {
    let app = spawn_app(&db, AppOptions::default()).await;
    let since = rfc3339(Utc::now() - chrono::Duration::seconds(5));
    let mut records = records_before_the_endpoint(&app).await;
    records.sort();
    let receiver = HttpReceiver::start().await;
    app.subscribe(&receiver.url("/hook"), &["record.created"])
        .await;
    app.settle(WAIT).await;
    assert!(receiver.requests().is_empty(), "nothing was delivered yet");

    // The log, newest first, two a page.
    let page = keel_json(
        &db,
        &[
            "events",
            "list",
            "--name",
            "record.created",
            "--limit",
            "2",
            "--json",
        ],
    )
    .await;
    let first: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(first.len(), 2);
    assert!(first[0] > first[1], "newest first: {first:?}");
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let rest = keel_json(
        &db,
        &[
            "events",
            "list",
            "--name",
            "record.created",
            "--limit",
            "2",
            "--cursor",
            &cursor,
            "--json",
        ],
    )
    .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());
    let event_id = rest["items"][0]["id"].as_str().unwrap().to_owned();
    let (code, shown, err) = keel(&db, &["events", "show", &event_id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        shown.contains("record.created.v1") && shown.contains(&event_id),
        "{shown}"
    );
    let (code, _, err) = keel(&db, &["events", "show", "no-such-event"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no event has id no-such-event"), "{err}");
    let (code, _, err) = keel(&db, &["events", "list", "--since", "last tuesday"]).await;
    assert_eq!(code, 2, "a bad time is a usage error: {err}");

    // The same log under /admin/events, behind the token.
    let listed = app
        .admin_get("/admin/events?name=record.created&limit=2")
        .await;
    assert_eq!(listed["items"], page["items"]);
    let one = app.admin_get(&format!("/admin/events/{event_id}")).await;
    assert_eq!(one["name"], "record.created");
    assert_eq!(
        one["payload"]["record_id"],
        rest["items"][0]["payload"]["record_id"]
    );
    let http = client();
    for (path, status, code) in [
        ("/admin/events?limit=0".to_owned(), 422, "invalid_query"),
        (
            "/admin/events?since=yesterday".to_owned(),
            422,
            "invalid_query",
        ),
        ("/admin/events?cursor=x".to_owned(), 422, "invalid_query"),
        ("/admin/events/nope".to_owned(), 404, "event_not_found"),
    ] {
        let response = http
            .get(app.url(&path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            expect_json(response, status).await["error"]["code"],
            code,
            "{path}"
        );
    }
    let response = http.get(app.url("/admin/events")).send().await.unwrap();
    assert_eq!(
        expect_json(response, 401).await["error"]["code"],
        "unauthorized"
    );
    let doc = expect_json(app.get("/openapi.json").await, 200).await;
    for (path, codes) in [
        ("/admin/events", ["200", "401", "403", "422"]),
        ("/admin/events/{id}", ["200", "401", "403", "404"]),
    ] {
        let responses = &doc["paths"][path]["get"]["responses"];
        for code in codes {
            assert!(
                responses.get(code).is_some(),
                "{path} documents {code}: {responses}"
            );
        }
    }

    // A dry run changes nothing.
    let replay = [
        "events",
        "replay",
        "--listener",
        WEBHOOKS,
        "--since",
        &since,
        "--rate",
        "1000",
    ];
    let plan = keel_json(&db, &[&replay[..], &["--dry-run", "--json"]].concat()).await;
    assert_eq!(plan["events"], 3);
    assert_eq!(plan["already_processed"], 0);
    app.settle(WAIT).await;
    assert!(receiver.requests().is_empty());

    // The replay delivers the three old events, waits for them, and sums up.
    let summary = keel_json(&db, &[&replay[..], &["--json"]].concat()).await;
    assert_eq!(summary["enqueued"], 3, "{summary}");
    assert_eq!(summary["delivered"], 3, "{summary}");
    assert_eq!(summary["skipped"], 0, "{summary}");
    assert_eq!(summary["finished"], true, "{summary}");
    receiver.wait_for(3, WAIT).await;
    assert_eq!(delivered_record_ids(&receiver), records);

    // Again: the inbox says the listener processed them; nothing runs twice.
    let (code, text, err) = keel(&db, &replay).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("0 delivered, 3 skipped (already processed), 0 failed"),
        "{text}"
    );
    let plan = keel_json(&db, &[&replay[..], &["--dry-run", "--json"]].concat()).await;
    assert_eq!(plan["already_processed"], 3);

    // --force runs the listener again (its webhook jobs are unique per event and endpoint,
    // so the receiver still sees each record once).
    let forced = keel_json(&db, &[&replay[..], &["--force", "--json"]].concat()).await;
    assert_eq!(forced["delivered"], 3, "{forced}");
    assert_eq!(forced["forced"], true);
    app.settle(WAIT).await;
    assert_eq!(delivered_record_ids(&receiver), records);

    // An unknown listener is refused naming the known ones.
    let (code, _, err) = keel(
        &db,
        &["events", "replay", "--listener", "nope", "--since", "1h"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("no listener is named `nope`") && err.contains(WEBHOOKS),
        "{err}"
    );
    app.shutdown().await;
}

async fn a_configured_backfill_is_fed_once_at_start_up_with_its_progress_in_queues(db: TestDb) {
    let since = rfc3339(Utc::now() - chrono::Duration::seconds(5));
    let receiver = HttpReceiver::start().await;
    let first = spawn_app(&db, AppOptions::default()).await;
    let mut records = records_before_the_endpoint(&first).await;
    records.sort();
    first
        .subscribe(&receiver.url("/hook"), &["record.created"])
        .await;
    first.settle(WAIT).await;
    first.shutdown().await;
    assert!(receiver.requests().is_empty());

    // Two replicas start with the listener's start point in the past: one backfill, fed at
    // two deliveries a second.
    let options = AppOptions {
        extra_toml: format!(
            "[events]\nbackfill_rate = 2\n\n[listeners.\"{WEBHOOKS}\"]\nbackfill_from = {since:?}\n"
        ),
        ..AppOptions::default()
    };
    let app = spawn_app(&db, options.clone()).await;
    let replica = spawn_app(&db, options).await;
    let queues = app.admin_get("/admin/queues").await;
    let events = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "events")
        .unwrap()
        .clone();
    let replays = events["replays"].as_array().unwrap();
    assert_eq!(replays.len(), 1, "one backfill across replicas: {queues}");
    assert_eq!(replays[0]["kind"], "backfill");
    assert_eq!(replays[0]["listener"], WEBHOOKS);
    assert_eq!(replays[0]["total"], 3);

    receiver.wait_for(3, WAIT).await;
    assert_eq!(delivered_record_ids(&receiver), records);
    eventually(WAIT, "the backfill to finish", || async {
        let queues = app.admin_get("/admin/queues").await;
        let done = queues["queues"]
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["replays"].as_array().is_none_or(Vec::is_empty));
        done.then_some(())
    })
    .await;
    let out = keel_json(&db, &["queues", "--json"]).await;
    assert!(
        out.as_array().is_some(),
        "`keel queues --json` is still a list: {out}"
    );

    // Deliveries were spaced by the rate: three at two a second span at least a second.
    let at: Vec<_> = receiver.requests().iter().map(|r| r.at).collect();
    let span = at
        .iter()
        .max()
        .unwrap()
        .duration_since(*at.iter().min().unwrap());
    assert!(
        span >= Duration::from_millis(800),
        "delivered within {span:?}"
    );
    replica.shutdown().await;
    app.shutdown().await;
}
