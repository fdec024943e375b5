//! `queue_stats`: ready, scheduled, running, retrying and dead, per queue.

use std::time::Duration;

use chrono::TimeDelta;
use events::NewJob;
use runtime::admin::{QueueStats, queue_stats};
use serde_json::json;
use tests::testkit::Plan;
use tests::{TestDb, TestRuntime, both_backends};

both_backends!(queue_stats_counts_every_state);

fn on_emails(run_in: Option<Duration>, rt: &TestRuntime) -> NewJob {
    NewJob {
        queue: "emails".into(),
        job_type: "testkit.not_run_here".into(),
        payload: json!({}),
        unique_key: None,
        priority: 0,
        run_at: run_in.map(|d| rt.runtime.clock().now() + TimeDelta::from_std(d).unwrap()),
        max_attempts: None,
    }
}

async fn queue_stats_counts_every_state(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    // `emails` has no workers here: two ready jobs and one scheduled for later.
    rt.enqueue_job(on_emails(None, &rt)).await.unwrap();
    rt.enqueue_job(on_emails(None, &rt)).await.unwrap();
    rt.enqueue_job(on_emails(Some(Duration::from_secs(3600)), &rt))
        .await
        .unwrap();
    // `testkit` runs: one running, one retrying, one dead, one completed (not counted).
    let workers = rt
        .runtime
        .start_workers(Some(vec!["testkit".into()]))
        .await
        .unwrap();
    let running = rt.enqueue(Plan::new("running").hang(1)).await;
    let retrying = rt.enqueue(Plan::new("retrying").fail(1)).await;
    let dead = rt
        .enqueue_job(NewJob {
            payload: json!({ "bad": 1 }),
            ..NewJob::of(&tests::testkit::Run(Plan::new("x"))).unwrap()
        })
        .await
        .unwrap();
    let done = rt.enqueue(Plan::new("done")).await;
    rt.wait_until_running(running, 1).await;
    rt.wait_for_state(retrying, "retrying").await;
    rt.wait_for_state(dead, "dead").await;
    rt.wait_for_state(done, "completed").await;

    let queues = vec![
        "emails".to_owned(),
        "testkit".to_owned(),
        "webhooks".to_owned(),
    ];
    let stats = queue_stats(&rt.db, rt.runtime.time(), &queues)
        .await
        .unwrap();
    assert_eq!(
        stats,
        vec![
            QueueStats {
                queue: "emails".into(),
                ready: 2,
                scheduled: 1,
                oldest_ready_age_seconds: Some(0.0),
                ..QueueStats::default()
            },
            QueueStats {
                queue: "testkit".into(),
                running: 1,
                retrying: 1,
                dead: 1,
                ..QueueStats::default()
            },
            QueueStats {
                queue: "webhooks".into(),
                ..QueueStats::default()
            },
        ]
    );

    // Ten seconds on (the database's clock; no worker is woken to stage it), the retry is
    // due (ready) and the oldest ready email has aged.
    rt.clock().advance(std::time::Duration::from_secs(10));
    let stats = queue_stats(&rt.db, rt.runtime.time(), &queues)
        .await
        .unwrap();
    assert_eq!(stats[0].oldest_ready_age_seconds, Some(10.0));
    assert_eq!((stats[1].ready, stats[1].retrying), (1, 0));
    assert_eq!(stats[1].oldest_ready_age_seconds, Some(0.0));
    workers.shutdown().await;
}
