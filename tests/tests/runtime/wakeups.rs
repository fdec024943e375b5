//! Wake-ups and slots: idle workers start a new job at once — not at their next poll, which
//! in these tests is a minute away and never comes — and never run more than a queue's
//! concurrency at a time.

use tests::testkit::Plan;
use tests::{TestDb, TestRuntime, both_backends, postgres_only};

both_backends!(a_new_job_starts_promptly_when_workers_are_idle);
postgres_only!(an_enqueue_in_another_process_wakes_idle_workers_through_notify);

async fn a_new_job_starts_promptly_when_workers_are_idle(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    assert!(rt.runtime.config().poll_interval.as_secs() >= 60);
    let workers = rt.start_workers().await;
    // The first job finds the loops freshly started; the next ones find them idle.
    for n in 0..3 {
        let id = rt.enqueue(Plan::new(format!("prompt {n}"))).await;
        rt.wait_for_state(id, "completed").await;
    }
    workers.shutdown().await;
}

async fn an_enqueue_in_another_process_wakes_idle_workers_through_notify(db: TestDb) {
    let worker_side = TestRuntime::new(&db).await;
    let workers = worker_side.start_workers().await;
    // Another runtime (as another process would be) shares no in-process wake-up with it.
    let other = TestRuntime::new(&db).await;
    for n in 0..3 {
        let id = other.enqueue(Plan::new(format!("remote {n}"))).await;
        worker_side.wait_for_state(id, "completed").await;
    }
    workers.shutdown().await;
}

both_backends!(a_queue_never_runs_more_jobs_at_once_than_its_concurrency);

async fn a_queue_never_runs_more_jobs_at_once_than_its_concurrency(db: TestDb) {
    let rt = TestRuntime::builder(&db)
        .config(|c| c.queues.get_mut("testkit").unwrap().concurrency = 2)
        .build()
        .await;
    let workers = rt.start_workers().await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(rt.enqueue(Plan::new(format!("c{n}")).sleep_ms(150)).await);
    }
    for id in &ids {
        rt.wait_for_state(*id, "completed").await;
    }
    let spans: Vec<(i64, i64)> = sqlx::query_as("SELECT started_at, finished_at FROM testkit_runs")
        .fetch_all(rt.db.pool())
        .await
        .unwrap();
    let most = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, f)| s <= start && start < f)
                .count()
        })
        .max()
        .unwrap();
    assert!(
        most <= 2,
        "{most} jobs ran at once on a queue of concurrency 2"
    );
    workers.shutdown().await;
}
