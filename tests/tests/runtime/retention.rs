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

both_backends!(events_a_feeding_replay_still_needs_outlive_their_retention);

async fn events_a_feeding_replay_still_needs_outlive_their_retention(db: TestDb) {
    let rt = TestRuntime::builder(&db)
        .config(|c| {
            c.retention = Duration::from_secs(3600);
            c.event_retention = Some(Duration::from_secs(2 * 3600));
        })
        .build()
        .await;
    let workers = rt.start_workers().await;
    let mut published = Vec::new();
    for key in ["a", "b"] {
        let event = rt
            .publish(&Happened {
                key: key.into(),
                flaky: false,
            })
            .await;
        published.push(event);
    }
    tests::eventually(tests::harness::WAIT, "the deliveries to finish", || async {
        let open = rt
            .count(
                "SELECT COUNT(*) FROM keel_jobs WHERE queue = 'events' AND state <> 'completed'",
                &[],
            )
            .await;
        (open == 0).then_some(())
    })
    .await;

    // A replay begins, and its feeder stops before it fed anything.
    let request = runtime::replay::ReplayRequest {
        listener: tests::testkit::RECORDING_LISTENER.to_owned(),
        since: published[0].occurred_at - chrono::Duration::seconds(1),
        until: None,
        rate: 100_000,
        force: false,
    };
    let rtm = &rt.runtime;
    let replay = runtime::replay::start(rtm.db(), rtm.time(), rtm.registry(), &request)
        .await
        .unwrap();
    assert_eq!(replay.total, 2);

    // Past every retention: the jobs go, the events the replay needs stay.
    rt.advance(Duration::from_secs(3 * 3600));
    workers.maintain_now().await.unwrap();
    workers.maintain_now().await.unwrap();
    assert_eq!(rt.count("SELECT COUNT(*) FROM keel_jobs", &[]).await, 0);
    assert_eq!(rt.count("SELECT COUNT(*) FROM keel_events", &[]).await, 2);

    // Resumed from its checkpoint, it delivers both (the inbox, past its retention too, no
    // longer remembers them).
    while rtm.feed_replay(&replay.id).await.unwrap() != runtime::replay::Fed::Done {}
    let done = tests::eventually(tests::harness::WAIT, "the replay to finish", || async {
        let p = runtime::replay::progress(rtm.db(), &replay.id)
            .await
            .unwrap();
        p.finished.then_some(p)
    })
    .await;
    assert_eq!((done.enqueued, done.delivered, done.skipped), (2, 2, 0));
    tests::eventually(
        tests::harness::WAIT,
        "the replayed jobs to complete",
        || async {
            let open = rt
            .count(
                "SELECT COUNT(*) FROM keel_jobs WHERE queue = 'events' AND state <> 'completed'",
                &[],
            )
            .await;
            (open == 0).then_some(())
        },
    )
    .await;

    // Fed and finished, it holds nothing back any more.
    rt.advance(Duration::from_secs(3 * 3600));
    workers.maintain_now().await.unwrap();
    workers.maintain_now().await.unwrap();
    assert_eq!(rt.count("SELECT COUNT(*) FROM keel_events", &[]).await, 0);
    let left: Vec<(String, Option<i64>, i64, i64)> =
        sqlx::query_as("SELECT state, finished_at, enqueued, delivered FROM keel_replays")
            .fetch_all(rt.db.pool())
            .await
            .unwrap();
    assert!(
        left.is_empty(),
        "finished replays are pruned: {left:?} now {}",
        rt.now_ms()
    );
    workers.shutdown().await;
}
