//! Graceful shutdown: short jobs finish, jobs still running when the grace period ends are
//! handed back without spending an attempt.

use std::time::Duration;

use tests::harness::WAIT;
use tests::testkit::Plan;
use tests::{TestDb, TestRuntime, both_backends, eventually};

both_backends!(shutdown_lets_short_jobs_finish_and_hands_back_the_rest_without_spending_an_attempt);

async fn shutdown_lets_short_jobs_finish_and_hands_back_the_rest_without_spending_an_attempt(
    db: TestDb,
) {
    let rt = TestRuntime::builder(&db)
        .config(|c| c.shutdown_grace = Duration::from_secs(2))
        .build()
        .await;
    let workers = rt.start_workers().await;
    let stuck = rt.enqueue(Plan::new("stuck").hang(1)).await;
    let short = rt.enqueue(Plan::new("short").sleep_ms(300)).await;
    rt.wait_until_running(stuck, 1).await;
    rt.wait_until_running(short, 1).await;

    workers.shutdown().await;

    let finished = rt.job(short).await;
    assert_eq!(
        finished.state, "completed",
        "a short job finishes within the grace period"
    );
    let handed_back = rt.job(stuck).await;
    assert_eq!(handed_back.state, "available");
    assert_eq!(handed_back.attempt, 0, "handing back spends no attempt");
    assert!(
        handed_back.attempts.is_empty(),
        "{:?}",
        handed_back.attempts
    );
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM keel_jobs WHERE id = $1 AND locked_by IS NULL",
            &[&stuck.to_string()]
        )
        .await,
        1
    );
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM keel_workers WHERE stopped_at IS NULL",
            &[]
        )
        .await,
        0,
        "a stopped worker says so"
    );

    // The next worker runs it again as the same first attempt.
    let workers = rt.start_workers().await;
    let runs = eventually(WAIT, "the handed-back job to run again", || async {
        let runs = rt.runs(stuck).await;
        (runs.len() == 2).then_some(runs)
    })
    .await;
    assert_eq!(runs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 1]);
    workers.shutdown().await;
    assert_eq!(rt.job(stuck).await.attempt, 0);
    assert!(rt.violations().await.is_empty());
}
