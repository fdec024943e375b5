//! Retries: the default schedule to the minute, a dead letter with every attempt's own error
//! and an alert, replay with a fresh budget, policy overrides, timeouts and panics.

use std::time::Duration;

use events::NewJob;
use runtime::admin;
use runtime::policy::PolicyOverride;
use tests::testkit::{Limited, Plan, Run};
use tests::{TestDb, TestRuntime, both_backends};
use uuid::Uuid;

both_backends!(
    retries_follow_the_default_schedule_then_dead_letter_with_every_attempts_error_and_replay_starts_afresh,
    a_job_type_override_and_a_jobs_own_max_attempts_are_honoured,
    a_job_exceeding_its_queue_timeout_is_failed_and_retried,
    a_panicking_handler_is_a_failed_attempt_and_the_worker_keeps_going,
);

const TIERS: [u64; 5] = [10, 60, 600, 3600, 7200];

async fn run_at(rt: &TestRuntime, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT run_at FROM keel_jobs WHERE id = $1")
        .bind(id.to_string())
        .fetch_one(rt.db.pool())
        .await
        .unwrap()
}

async fn retries_follow_the_default_schedule_then_dead_letter_with_every_attempts_error_and_replay_starts_afresh(
    db: TestDb,
) {
    let rt = TestRuntime::new(&db).await;
    rt.kit.set_flag("down").await;
    let workers = rt.start_workers().await;
    let id = rt.enqueue(Plan::new("retry").fail_while("down")).await;
    let first = rt.job(id).await;

    for (i, tier) in TIERS.iter().enumerate() {
        let attempt = i32::try_from(i + 1).unwrap();
        let job = rt.wait_for_attempt(id, "retrying", attempt).await;
        let last = job.attempts.last().unwrap();
        assert_eq!(last.attempt, attempt);
        assert_eq!(last.outcome, "failed");
        assert_eq!(
            last.error.as_deref(),
            Some(format!("boom {attempt}").as_str())
        );
        assert_eq!(
            run_at(&rt, id).await,
            last.finished_at.timestamp_millis() + i64::try_from(tier * 1000).unwrap(),
            "retry after attempt {attempt} is due {tier}s after it finished"
        );
        // One millisecond early, nothing runs; on the dot, the next attempt does.
        rt.advance(Duration::from_secs(*tier) - Duration::from_millis(1));
        assert_eq!(rt.job(id).await.attempt, attempt);
        rt.advance(Duration::from_millis(1));
    }

    let dead = rt.wait_for_attempt(id, "dead", 6).await;
    let errors: Vec<_> = dead
        .attempts
        .iter()
        .map(|a| a.error.clone().unwrap())
        .collect();
    assert_eq!(
        errors,
        (1..=6).map(|n| format!("boom {n}")).collect::<Vec<_>>()
    );
    assert_eq!(dead.attempts.last().unwrap().outcome, "dead");
    assert_eq!(dead.last_error.as_deref(), Some("boom 6"));
    assert_eq!(dead.max_attempts, 6);
    let told = id.to_string();
    tests::eventually(Duration::from_secs(5), "the handler to be told", || async {
        tests::testkit::told_dead(&told).then_some(())
    })
    .await;
    assert!(dead.finished_at.is_some());
    assert_eq!(
        admin::dead_ids(&rt.db, Some("testkit")).await.unwrap(),
        vec![id.to_string()]
    );
    let letters = admin::dead_letters(&rt.db, None).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].id, id.to_string());
    let alerts = rt.alerts.about_job("job_dead", &id.to_string());
    assert_eq!(alerts.len(), 1, "one alert for the dead letter: {alerts:?}");
    assert!(
        alerts[0].message.contains("boom 6"),
        "{}",
        alerts[0].message
    );

    // Replay: a fresh budget, the same idempotency key.
    rt.kit.clear_flag("down").await;
    let replayed = admin::replay(
        &rt.db,
        &[id.to_string(), Uuid::now_v7().to_string()],
        rt.runtime.time(),
    )
    .await
    .unwrap();
    assert_eq!(replayed, vec![id.to_string()]);
    rt.runtime.wake_all();
    let done = rt.wait_for_state(id, "completed").await;
    assert_eq!(done.attempt, 1, "a replay starts counting attempts afresh");
    assert_eq!(done.replays, 1);
    assert_eq!(done.idempotency_key, first.idempotency_key);
    assert_eq!(done.attempts.len(), 7);
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT idempotency_key FROM testkit_runs WHERE job_id = $1")
            .bind(id.to_string())
            .fetch_all(rt.db.pool())
            .await
            .unwrap();
    assert_eq!(keys, vec![first.idempotency_key.clone()]);
    assert!(admin::dead_ids(&rt.db, None).await.unwrap().is_empty());
    workers.shutdown().await;
}

async fn a_job_type_override_and_a_jobs_own_max_attempts_are_honoured(db: TestDb) {
    let rt = TestRuntime::builder(&db)
        .config(|c| {
            c.job_types.insert(
                "testkit.limited".into(),
                PolicyOverride {
                    max_attempts: Some(2),
                    backoff: Some(vec![Duration::from_secs(1)]),
                    timeout: None,
                },
            );
        })
        .build()
        .await;
    let workers = rt.start_workers().await;
    let limited = rt
        .enqueue_typed(&Limited(Plan::new("limited").fail(100)))
        .await
        .unwrap();
    let mut own = NewJob::of(&Run(Plan::new("own").fail(100))).unwrap();
    own.max_attempts = Some(3);
    let own = rt.enqueue_job(own).await.unwrap();

    let job = rt.wait_for_attempt(limited, "retrying", 1).await;
    assert_eq!(job.max_attempts, 2);
    let finished = job.attempts[0].finished_at.timestamp_millis();
    assert_eq!(
        run_at(&rt, limited).await,
        finished + 1000,
        "the override's backoff"
    );
    let job = rt.wait_for_attempt(own, "retrying", 1).await;
    assert_eq!(job.max_attempts, 3);

    rt.advance(Duration::from_secs(10));
    rt.wait_for_attempt(limited, "dead", 2).await;
    rt.wait_for_attempt(own, "retrying", 2).await;
    rt.advance(Duration::from_secs(60));
    let dead = rt.wait_for_attempt(own, "dead", 3).await;
    assert_eq!(dead.last_error.as_deref(), Some("boom 3"));
    workers.shutdown().await;
}

async fn a_job_exceeding_its_queue_timeout_is_failed_and_retried(db: TestDb) {
    let rt = TestRuntime::builder(&db)
        .config(|c| c.queues.get_mut("testkit").unwrap().timeout = Duration::from_millis(300))
        .build()
        .await;
    let workers = rt.start_workers().await;
    let id = rt.enqueue(Plan::new("slow").hang(1)).await;
    let job = rt.wait_for_attempt(id, "retrying", 1).await;
    assert_eq!(job.last_error.as_deref(), Some("timed out after 300ms"));
    assert_eq!(job.attempts[0].outcome, "failed");
    rt.advance(Duration::from_secs(10));
    let done = rt.wait_for_state(id, "completed").await;
    assert_eq!(done.attempt, 2);
    assert!(rt.violations().await.is_empty());
    workers.shutdown().await;
}

async fn a_panicking_handler_is_a_failed_attempt_and_the_worker_keeps_going(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let workers = rt.start_workers().await;
    let id = rt.enqueue(Plan::new("panics").panic(1)).await;
    let job = rt.wait_for_attempt(id, "retrying", 1).await;
    let error = job.last_error.unwrap();
    assert!(
        error.contains("panicked") && error.contains("kaboom 1"),
        "{error}"
    );
    let other = rt.enqueue(Plan::new("after the panic")).await;
    rt.wait_for_state(other, "completed").await;
    rt.advance(Duration::from_secs(10));
    let done = rt.wait_for_state(id, "completed").await;
    assert_eq!(done.attempt, 2);
    workers.shutdown().await;
}

both_backends!(
    a_cancelled_job_stops_at_once_without_retry_or_alert,
    a_job_scheduled_for_later_waits_until_it_is_due,
);

async fn a_cancelled_job_stops_at_once_without_retry_or_alert(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let workers = rt.start_workers().await;
    let id = rt.enqueue(Plan::new("cancel").cancel()).await;
    let job = rt.wait_for_state(id, "cancelled").await;
    assert_eq!(job.attempt, 1);
    assert_eq!(job.last_error.as_deref(), Some("cancelled by its plan"));
    assert_eq!(job.attempts[0].outcome, "cancelled");
    assert!(rt.alerts.raised().is_empty());
    assert!(admin::dead_ids(&rt.db, None).await.unwrap().is_empty());
    workers.shutdown().await;
}

async fn a_job_scheduled_for_later_waits_until_it_is_due(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let workers = rt.start_workers().await;
    let mut job = NewJob::of(&Run(Plan::new("later"))).unwrap();
    job.run_at = Some(rt.runtime.clock().now() + chrono::TimeDelta::seconds(30));
    let id = rt.enqueue_job(job).await.unwrap();
    assert_eq!(rt.job(id).await.state, "scheduled");
    let now = rt.enqueue(Plan::new("now")).await;
    rt.wait_for_state(now, "completed").await;
    assert_eq!(rt.job(id).await.state, "scheduled", "not before its time");
    rt.advance(Duration::from_secs(30));
    rt.wait_for_state(id, "completed").await;
    workers.shutdown().await;
}
