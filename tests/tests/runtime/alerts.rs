//! The alerts the leader raises besides dead letters: a queue whose oldest ready job waited
//! too long, and a worker process that stopped heartbeating — each once, not a storm.

use std::time::Duration;

use events::NewJob;
use serde_json::json;
use tests::{TestDb, TestRuntime, both_backends};

both_backends!(
    a_queue_whose_oldest_ready_job_waits_too_long_raises_queue_stale,
    a_worker_that_stops_heartbeating_raises_worker_silent_once
);

async fn a_queue_whose_oldest_ready_job_waits_too_long_raises_queue_stale(db: TestDb) {
    let rt = TestRuntime::builder(&db)
        .config(|c| c.stale_queue_after = Duration::from_secs(60))
        .build()
        .await;
    // Workers for `testkit` only: nothing drains `emails`.
    let workers = rt
        .runtime
        .start_workers(Some(vec!["testkit".into()]))
        .await
        .unwrap();
    rt.enqueue_job(NewJob {
        queue: "emails".into(),
        job_type: "testkit.not_run_here".into(),
        payload: json!({}),
        unique_key: None,
        priority: 0,
        run_at: None,
        max_attempts: None,
    })
    .await
    .unwrap();

    workers.maintain_now().await.unwrap();
    let stale = |rt: &TestRuntime| {
        rt.alerts
            .raised()
            .into_iter()
            .filter(|a| a.kind == "queue_stale")
            .collect::<Vec<_>>()
    };
    assert!(stale(&rt).is_empty(), "not yet: the job waited 0 s");

    rt.advance(Duration::from_secs(61));
    workers.maintain_now().await.unwrap();
    // This round raises it; the leader's own rounds (every 100 ms) may raise it too — the
    // real sink rate-limits repeats of one condition, this recorder keeps them all.
    let raised = stale(&rt);
    assert!(!raised.is_empty(), "raised once the job waited 61 s");
    for alert in &raised {
        assert_eq!(alert.subject, "emails", "{raised:?}");
        assert_eq!(alert.detail["ready"], 1, "{raised:?}");
    }
    workers.shutdown().await;
}

async fn a_worker_that_stops_heartbeating_raises_worker_silent_once(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let workers = rt
        .runtime
        .start_workers(Some(vec!["testkit".into()]))
        .await
        .unwrap();
    // Another process registered long ago and then fell silent.
    let old = rt.now_ms() - 60_000;
    rt.execute(
        &format!(
            "INSERT INTO keel_workers (id, host, pid, queues, started_at, heartbeat_at) \
             VALUES ('silent-1', 'elsewhere', 4242, 'webhooks', {old}, {old})"
        ),
        &[],
    )
    .await;

    workers.maintain_now().await.unwrap();
    workers.maintain_now().await.unwrap();
    let silent: Vec<_> = rt
        .alerts
        .raised()
        .into_iter()
        .filter(|a| a.kind == "worker_silent")
        .collect();
    assert_eq!(silent.len(), 1, "one alert per silent worker: {silent:?}");
    assert_eq!(silent[0].subject, "silent-1");
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM keel_workers WHERE id = 'silent-1' AND stopped_at IS NOT NULL",
            &[]
        )
        .await,
        1,
        "the silent worker is marked stopped"
    );
    workers.shutdown().await;
}
