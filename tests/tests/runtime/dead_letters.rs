//! Poison: what can never succeed is dead-lettered at once, with a clear reason and an
//! alert, and the worker carries on with other jobs.

use events::NewJob;
use serde_json::json;
use tests::testkit::{FLAKY_LISTENER, Happened, Plan, RECORDING_LISTENER};
use tests::{TestDb, TestRuntime, both_backends};
use uuid::Uuid;

both_backends!(
    a_payload_that_does_not_decode_is_dead_lettered_at_once,
    a_stored_payload_that_is_not_json_is_dead_lettered_at_once,
    an_unknown_job_type_is_dead_lettered_at_once,
    a_listener_delivery_whose_stored_event_no_longer_decodes_is_dead_lettered_at_once,
);

/// Asserts the job died on its first attempt with a reason containing `reason`, raised an
/// alert, and that the workers still run a healthy job afterwards.
async fn assert_dead_at_once(rt: &TestRuntime, id: Uuid, reason: &str) {
    let dead = rt.wait_for_state(id, "dead").await;
    assert_eq!(dead.attempt, 1, "no retries for poison");
    let error = dead.last_error.clone().unwrap();
    assert!(
        error.contains(reason),
        "{error:?} should mention {reason:?}"
    );
    assert_eq!(dead.attempts.len(), 1);
    assert_eq!(dead.attempts[0].outcome, "dead");
    assert_eq!(rt.alerts.about_job("job_dead", &id.to_string()).len(), 1);
    let healthy = rt.enqueue(Plan::new("healthy")).await;
    rt.wait_for_state(healthy, "completed").await;
}

async fn a_payload_that_does_not_decode_is_dead_lettered_at_once(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let workers = rt.start_workers().await;
    let id = rt
        .enqueue_job(NewJob {
            queue: "testkit".into(),
            job_type: "testkit.run".into(),
            payload: json!({ "no_such_field": true }),
            unique_key: None,
            priority: 0,
            run_at: None,
            max_attempts: None,
        })
        .await
        .unwrap();
    assert_dead_at_once(&rt, id, "payload of testkit.run does not decode").await;
    workers.shutdown().await;
}

async fn a_stored_payload_that_is_not_json_is_dead_lettered_at_once(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let id = rt.enqueue(Plan::new("corrupted")).await;
    rt.execute(
        "UPDATE keel_jobs SET payload = '{not json' WHERE id = $1",
        &[&id.to_string()],
    )
    .await;
    let workers = rt.start_workers().await;
    assert_dead_at_once(&rt, id, "stored payload is not JSON").await;
    workers.shutdown().await;
}

async fn an_unknown_job_type_is_dead_lettered_at_once(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let workers = rt.start_workers().await;
    let id = rt
        .enqueue_job(NewJob {
            queue: "testkit".into(),
            job_type: "testkit.nobody_runs_this".into(),
            payload: json!({}),
            unique_key: None,
            priority: 0,
            run_at: None,
            max_attempts: None,
        })
        .await
        .unwrap();
    assert_dead_at_once(
        &rt,
        id,
        "no handler is registered for job type `testkit.nobody_runs_this`",
    )
    .await;
    workers.shutdown().await;
}

async fn a_listener_delivery_whose_stored_event_no_longer_decodes_is_dead_lettered_at_once(
    db: TestDb,
) {
    let rt = TestRuntime::new(&db).await;
    let event = rt
        .publish(&Happened {
            key: "corrupted".into(),
            flaky: false,
        })
        .await;
    let event_id = event.id.to_string();
    rt.execute(
        "UPDATE keel_events SET payload = 'garbage' WHERE id = $1",
        &[&event_id],
    )
    .await;
    let workers = rt.start_workers().await;
    for listener in [RECORDING_LISTENER, FLAKY_LISTENER] {
        let id: String = sqlx::query_scalar(
            "SELECT id FROM keel_jobs WHERE causation_id = $1 AND job_type = $2",
        )
        .bind(&event_id)
        .bind(format!("listener:{listener}"))
        .fetch_one(rt.db.pool())
        .await
        .unwrap();
        let id = Uuid::parse_str(&id).unwrap();
        assert_dead_at_once(&rt, id, &format!("event {event_id} does not decode")).await;
    }
    workers.shutdown().await;
}
