//! Exactly-once in effect: unique jobs dedupe at enqueue, and the inbox guard makes a
//! handler's second run a no-op.

use std::time::Duration;

use tests::testkit::Plan;
use tests::{TestDb, TestRuntime, both_backends};

both_backends!(
    a_unique_job_enqueued_twice_is_stored_once,
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
