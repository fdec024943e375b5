//! When parts of a split deployment fail: the broker goes away while writes continue, the
//! consumer is killed mid-stream, the relay's leader is killed while publishing, and an
//! event the consumer's listener can never take arrives.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tests::app::{AppOptions, KeelProcess};
use tests::nats::NatsServer;
use tests::receivers::HttpReceiver;
use tests::{TestDb, both_backends, eventually, postgres_only};

use crate::{
    KEEL, another_db, broker_toml, cli, create_records, deployment_a, deployment_b,
    streamed_record_ids, subscribe,
};

both_backends!(
    events_written_while_the_broker_is_down_go_out_in_order_when_it_is_back,
    a_consumer_killed_mid_stream_loses_nothing,
    a_poison_event_on_the_consumer_side_ends_as_a_dead_letter
);
postgres_only!(the_relay_leader_killed_while_publishing_leaves_no_gap_and_no_reorder);

const WITHIN: Duration = Duration::from_secs(60);

/// The distinct `webhook-id`s `receiver` got.
fn distinct_deliveries(receiver: &HttpReceiver) -> usize {
    receiver
        .requests()
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect::<HashSet<_>>()
        .len()
}

/// A's broker row from `keel queues --json`: (backlog, lag in seconds).
fn broker_row(a: &KeelProcess) -> (i64, f64) {
    let (code, out, err) = cli(a, &["queues", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["queue"] == "broker")
        .cloned()
        .unwrap_or_else(|| panic!("a broker row in {out}"));
    (
        row["ready"].as_i64().unwrap(),
        row["oldest_ready_age_seconds"].as_f64().unwrap_or(0.0),
    )
}

async fn events_written_while_the_broker_is_down_go_out_in_order_when_it_is_back(db: TestDb) {
    let mut nats = NatsServer::start().await;
    let db_b = another_db(&db).await;
    let receiver = HttpReceiver::start().await;
    let a = deployment_a(&db, &nats).await;
    let b = deployment_b(&db_b, &nats, &a, None).await;
    subscribe(&b, &receiver.url("/hook"), &["record.created"]).await;
    let before = create_records(&a, 3, "before").await;
    receiver.wait_for(3, WITHIN).await;

    // The broker goes away: every write still answers 201 at once, events wait in A's
    // database, counted in the broker row.
    nats.stop().await;
    let started = std::time::Instant::now();
    let during = create_records(&a, 20, "during").await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "writes do not wait for the broker ({:?} for 20)",
        started.elapsed()
    );
    let (backlog, _) = broker_row(&a);
    assert_eq!(backlog, 20, "all 20 events wait for the broker");
    let metrics = reqwest::get(a.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("keel_broker_backlog 20"), "{metrics}");
    eventually(WITHIN, "the relay's lag to show", || async {
        (broker_row(&a).1 >= 1.0).then_some(())
    })
    .await;
    // Stuck longer than `[broker] stuck_after` (1 s here): an alert (logged, no webhook set).
    eventually(WITHIN, "a broker_stuck alert", || async {
        a.logs()
            .iter()
            .any(|l| l.contains("\"broker_stuck\""))
            .then_some(())
    })
    .await;

    // Back: everything goes out, in commit order, once, and reaches B.
    nats.restart().await;
    eventually(WITHIN, "the backlog to drain", || async {
        (broker_row(&a).0 == 0).then_some(())
    })
    .await;
    let (streamed, duplicate) = streamed_record_ids(&nats).await;
    let expected: Vec<String> = before.iter().chain(&during).cloned().collect();
    assert_eq!(
        streamed, expected,
        "the stream holds every event once, in commit order"
    );
    assert!(!duplicate);
    eventually(WITHIN, "every webhook to arrive from B", || async {
        (distinct_deliveries(&receiver) == 23).then_some(())
    })
    .await;
}

async fn a_consumer_killed_mid_stream_loses_nothing(db: TestDb) {
    const N: usize = 40;
    let nats = NatsServer::start().await;
    let db_b = another_db(&db).await;
    let receiver = HttpReceiver::start().await;
    let a = deployment_a(&db, &nats).await;
    let b = deployment_b(&db_b, &nats, &a, None).await;
    subscribe(&b, &receiver.url("/hook"), &["record.created"]).await;
    let ids = create_records(&a, N, "stream").await;
    receiver.wait_for(3, WITHIN).await;
    b.kill().await;
    let got_before = distinct_deliveries(&receiver);

    // A new B on the same database takes up where the durable consumers stopped.
    let b = deployment_b(&db_b, &nats, &a, None).await;
    eventually(WITHIN, "every record's webhook", || async {
        (distinct_deliveries(&receiver) == N).then_some(())
    })
    .await;
    let delivered: HashSet<String> = receiver
        .requests()
        .iter()
        .map(|r| r.json()["data"]["record_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(delivered, ids.iter().cloned().collect::<HashSet<_>>());
    assert!(
        got_before < N,
        "the kill happened mid-stream ({got_before} of {N} before)"
    );
    drop(b);
}

async fn a_poison_event_on_the_consumer_side_ends_as_a_dead_letter(db: TestDb) {
    let nats = NatsServer::start().await;
    let db_b = another_db(&db).await;
    let receiver = HttpReceiver::start().await;
    let a = deployment_a(&db, &nats).await;
    let b = deployment_b(&db_b, &nats, &a, None).await;
    subscribe(&b, &receiver.url("/hook"), &["record.created"]).await;
    create_records(&a, 1, "first").await;
    receiver.wait_for(1, WITHIN).await;

    // Another publisher puts a record.created on the stream that no listener can take.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let poison_id = uuid::Uuid::now_v7();
    let envelope = json!({
        "id": poison_id, "name": "record.created", "version": 1,
        "occurred_at": "2026-12-02T10:00:00Z", "correlation_id": uuid::Uuid::now_v7().to_string(),
        "causation_id": null, "payload": { "record_id": "not-a-uuid" }
    });
    js.publish("keel.events.record.created", envelope.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();

    eventually(
        WITHIN,
        "the poison delivery to be dead-lettered on B",
        || async {
            let (code, out, _) = cli(&b, &["dead", "list", "--json"]);
            (code == 0 && out.contains("listener:notifications.on_event_deliver_webhooks"))
                .then_some(out)
        },
    )
    .await;
    let (_, out, _) = cli(&b, &["dead", "list", "--json"]);
    let dead: serde_json::Value = serde_json::from_str(&out).unwrap();
    let item = dead
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["job_type"] == "listener:notifications.on_event_deliver_webhooks")
        .unwrap()
        .clone();
    let reason = item["last_error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("record.created") && reason.contains("does not decode"),
        "the reason is kept: {item}"
    );
    // Replayable like any other dead letter (it dies again: the event is what it is).
    let (code, _, err) = cli(&b, &["dead", "replay", item["id"].as_str().unwrap()]);
    assert_eq!(code, 0, "{err}");

    // The consumer carries on: a later event still crosses.
    create_records(&a, 1, "after").await;
    receiver.wait_for(2, WITHIN).await;
    // And the broker does not redeliver it in a loop: one dead letter, one delivery job.
    let (_, out, _) = cli(&b, &["dead", "list", "--json"]);
    let dead: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dead.as_array().unwrap().len(), 1, "{out}");
}

async fn the_relay_leader_killed_while_publishing_leaves_no_gap_and_no_reorder(db: TestDb) {
    const WRITERS: usize = 16;
    const EACH: usize = 150;
    let mut nats = NatsServer::start().await;
    let options = AppOptions {
        extra_toml: broker_toml(&nats, false),
        ..AppOptions::default()
    };
    let args = ["serve", "--modules", "records,billing"];
    let first = KeelProcess::start_with(Path::new(KEEL), &db, &options, &args).await;
    let second = KeelProcess::start_with(Path::new(KEEL), &db, &options, &args).await;

    // A backlog written by concurrent transactions on both processes (their commit order is
    // not their id order), then the broker back: the relay publishes it in batches.
    nats.stop().await;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let target = if w % 2 == 0 {
            first.base.clone()
        } else {
            second.base.clone()
        };
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                crate::post(
                    &format!("{target}/records"),
                    &json!({ "title": format!("writer {w} record {i}"), "owner_email": "o@example.com" }),
                    &uuid::Uuid::now_v7().to_string(),
                    201,
                )
                .await;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let conn = db.connect().await;
    let count = |sql: &'static str| {
        let pool = conn.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    nats.restart().await;
    eventually(
        WITHIN,
        "the relay to have published part of the backlog",
        || async {
            (count("SELECT COUNT(*) FROM keel_relay WHERE published_at IS NOT NULL").await > 0)
                .then_some(())
        },
    )
    .await;
    // Kill the leader mid-publishing; the other process takes the lease over.
    let holder: String =
        sqlx::query_scalar("SELECT holder FROM keel_leases WHERE name = 'broker_relay'")
            .fetch_one(conn.pool())
            .await
            .unwrap();
    let leader_pid: u32 = holder.split('-').next().unwrap().parse().unwrap();
    let (killed, survivor) = if first.pid() == Some(leader_pid) {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(
        killed.pid(),
        Some(leader_pid),
        "one of the two holds the relay lease"
    );
    killed.kill().await;
    let at_kill = count("SELECT COUNT(*) FROM keel_relay WHERE published_at IS NOT NULL").await;
    eventually(WITHIN, "the survivor to drain the backlog", || async {
        (count("SELECT COUNT(*) FROM keel_relay WHERE published_at IS NULL").await == 0)
            .then_some(())
    })
    .await;
    let new_holder: String =
        sqlx::query_scalar("SELECT holder FROM keel_leases WHERE name = 'broker_relay'")
            .fetch_one(conn.pool())
            .await
            .unwrap();
    assert!(
        !new_holder.starts_with(&format!("{leader_pid}-")),
        "{new_holder}"
    );

    // The stream holds every event once, in the relay's commit order.
    let expected: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM keel_relay ORDER BY tx, position")
            .fetch_all(conn.pool())
            .await
            .unwrap();
    assert_eq!(expected.len(), WRITERS * EACH);
    let streamed: Vec<String> = nats
        .messages(crate::STREAM)
        .await
        .into_iter()
        .map(|(_, _, id, _)| id)
        .collect();
    assert_eq!(streamed.len(), expected.len(), "no gap, no duplicate");
    assert!(streamed == expected, "no reordering");
    eprintln!(
        "relay leader killed after {at_kill} of {} were published",
        WRITERS * EACH
    );
    drop(survivor);
}
