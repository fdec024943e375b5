//! Housekeeping: past the retention window, finished jobs, their attempts and their events
//! are pruned — while dead letters, and the events they need for a replay, stay.

use std::time::Duration;

use runtime::policy::PolicyOverride;
use tests::testkit::{FLAKY_LISTENER, Happened, Plan};
use tests::{TestDb, TestRuntime, both_backends};

both_backends!(finished_work_is_pruned_after_retention_while_dead_letters_and_their_events_stay);

async fn finished_work_is_pruned_after_retention_while_dead_letters_and_their_events_stay(
    db: TestDb,
) {
    let rt = TestRuntime::builder(&db)
        .config(|c| {
            c.retention = Duration::from_secs(3600);
            c.job_types.insert(
                format!("listener:{FLAKY_LISTENER}"),
                PolicyOverride {
                    max_attempts: Some(1),
                    ..PolicyOverride::default()
                },
            );
        })
        .build()
        .await;
    let workers = rt.start_workers().await;
    let done = rt.enqueue(Plan::new("done")).await;
    let dead = rt
        .enqueue_job(events::NewJob {
            payload: serde_json::json!({ "bad": true }),
            ..events::NewJob::of(&tests::testkit::Run(Plan::new("x"))).unwrap()
        })
        .await
        .unwrap();
    let kept = rt
        .publish(&Happened {
            key: "flaky".into(),
            flaky: true,
        })
        .await
        .id
        .to_string();
    let gone = rt
        .publish(&Happened {
            key: "fine".into(),
            flaky: false,
        })
        .await
        .id
        .to_string();
    rt.wait_for_state(done, "completed").await;
    rt.wait_for_state(dead, "dead").await;
    tests::eventually(tests::harness::WAIT, "the deliveries to finish", || async {
        let open = rt
            .count(
                "SELECT COUNT(*) FROM keel_jobs WHERE queue = 'events' \
                 AND state NOT IN ('completed', 'dead')",
                &[],
            )
            .await;
        (open == 0).then_some(())
    })
    .await;
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM keel_jobs WHERE queue = 'events' AND state = 'dead'",
            &[]
        )
        .await,
        1
    );

    // Within the window, nothing goes.
    rt.advance(Duration::from_secs(1800));
    workers.maintain_now().await.unwrap();
    assert_eq!(rt.count("SELECT COUNT(*) FROM keel_jobs", &[]).await, 6);

    rt.advance(Duration::from_secs(3600));
    workers.maintain_now().await.unwrap();
    let remaining: Vec<String> = sqlx::query_scalar("SELECT state FROM keel_jobs ORDER BY state")
        .fetch_all(rt.db.pool())
        .await
        .unwrap();
    assert_eq!(remaining, vec!["dead", "dead"], "only dead letters stay");
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM keel_job_attempts WHERE job_id = $1",
            &[&done.to_string()]
        )
        .await,
        0
    );
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM keel_job_attempts WHERE job_id = $1",
            &[&dead.to_string()]
        )
        .await,
        1,
        "a dead letter keeps its attempts"
    );
    assert_eq!(
        rt.count("SELECT COUNT(*) FROM keel_events WHERE id = $1", &[&kept])
            .await,
        1
    );
    assert_eq!(
        rt.count("SELECT COUNT(*) FROM keel_events WHERE id = $1", &[&gone])
            .await,
        0
    );
    workers.shutdown().await;
}
