//! Exactly-once in effect: unique jobs dedupe at enqueue, and the inbox guard makes a
//! handler's second run a no-op.

use std::time::Duration;

use tests::testkit::Plan;
use tests::{TestDb, TestRuntime, both_backends};

both_backends!(
    a_unique_job_enqueued_twice_is_stored_once,
    enqueue_many_stores_each_job_once_and_answers_in_order,
    mark_processed_makes_a_handlers_second_run_a_no_op,
);

async fn a_unique_job_enqueued_twice_is_stored_once(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let first = rt
        .enqueue_typed(&tests::testkit::Run(Plan::new("u1").unique("same")))
        .await;
    let second = rt
        .enqueue_typed(&tests::testkit::Run(Plan::new("u2").unique("same")))
        .await;
    assert!(first.is_some());
    assert_eq!(second, None, "a duplicate is a no-op, not an error");
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM keel_jobs WHERE unique_key = 'same'",
            &[]
        )
        .await,
        1
    );
    // Another key, or another job type with the same key, is not a duplicate.
    assert!(
        rt.enqueue_typed(&tests::testkit::Run(Plan::new("u3").unique("other")))
            .await
            .is_some()
    );
    assert!(
        rt.enqueue_typed(&tests::testkit::Limited(Plan::new("u4").unique("same")))
            .await
            .is_some()
    );
    // Jobs without a key never collide.
    rt.enqueue(Plan::new("plain")).await;
    rt.enqueue(Plan::new("plain")).await;
}

async fn enqueue_many_stores_each_job_once_and_answers_in_order(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    rt.enqueue_typed(&tests::testkit::Run(Plan::new("before").unique("taken")))
        .await
        .unwrap();
    let job = |key: &str, unique: Option<&str>| {
        let mut plan = Plan::new(key);
        plan.unique = unique.map(str::to_owned);
        events::NewJob::of(&tests::testkit::Run(plan)).unwrap()
    };
    // More than one multi-row statement's worth, with a duplicate of a stored job, a
    // duplicate inside the batch, and a job for later.
    let mut jobs: Vec<events::NewJob> = (0..runtime::queue::ROWS_PER_INSERT + 3)
        .map(|i| job(&format!("bulk {i}"), None))
        .collect();
    jobs[1] = job("dup of stored", Some("taken"));
    jobs[2] = job("first of two", Some("twice"));
    jobs[3] = job("second of two", Some("twice"));
    let mut later = job("later", None);
    later.run_at = Some(rt.runtime.clock().now() + chrono::TimeDelta::hours(1));
    jobs.push(later);
    let n = jobs.len();
    let mut tx = rt.db.begin().await.unwrap();
    let ids = rt.runtime.jobs().enqueue_many(&mut tx, jobs).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(ids.len(), n, "one answer per job");
    assert!(ids[0].is_some());
    assert_eq!(ids[1], None, "a duplicate of a stored job");
    assert!(ids[2].is_some());
    assert_eq!(ids[3], None, "a duplicate inside the batch");
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM keel_jobs WHERE queue = 'testkit'",
            &[]
        )
        .await,
        i64::try_from(n - 2 + 1).unwrap(),
        "every job but the two duplicates, plus the one stored before"
    );
    let last = rt.job(ids[n - 1].unwrap()).await;
    assert_eq!(last.state, "scheduled");
    let first = rt.job(ids[0].unwrap()).await;
    assert_eq!(first.state, "available");
}

async fn mark_processed_makes_a_handlers_second_run_a_no_op(db: TestDb) {
    let rt = TestRuntime::new(&db).await;

    // The port itself: first true, then false, in separate transactions.
    for expected in [true, false] {
        let mut tx = rt.db.begin().await.unwrap();
        let first = rt
            .runtime
            .jobs()
            .mark_processed(&mut tx, "testkit.port", "key-1")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(first, expected);
    }
    // A rolled-back mark is no mark.
    let mut tx = rt.db.begin().await.unwrap();
    assert!(
        rt.runtime
            .jobs()
            .mark_processed(&mut tx, "testkit.port", "key-2")
            .await
            .unwrap()
    );
    tx.rollback().await.unwrap();
    let mut tx = rt.db.begin().await.unwrap();
    assert!(
        rt.runtime
            .jobs()
            .mark_processed(&mut tx, "testkit.port", "key-2")
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();

    // A handler that did its effect and then failed: the retry runs but skips the effect.
    let workers = rt.start_workers().await;
    let id = rt
        .enqueue(Plan::new("guarded").guarded_effect().fail(1))
        .await;
    rt.wait_for_attempt(id, "retrying", 1).await;
    rt.advance(Duration::from_secs(10));
    let done = rt.wait_for_state(id, "completed").await;
    assert_eq!(done.attempt, 2);
    assert_eq!(rt.runs(id).await.len(), 2);
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM testkit_effects WHERE key = 'guarded'",
            &[]
        )
        .await,
        1
    );
    workers.shutdown().await;
}
