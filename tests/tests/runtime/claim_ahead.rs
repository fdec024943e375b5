//! Claiming ahead: a loop holds more jobs than it has free slots, so a finishing job starts
//! the next without a claim round trip — but a job it cannot start soon goes back to the
//! queue without spending its attempt, and each job still runs exactly once. Claiming
//! onward through a long backlog never keeps a more urgent job waiting for all of it.

use std::time::Duration;

use events::NewJob;
use tests::testkit::{Plan, Run};
use tests::{TestDb, TestRuntime, both_backends, eventually};

both_backends!(jobs_claimed_ahead_that_cannot_start_go_back_unspent_and_run_once);

async fn jobs_claimed_ahead_that_cannot_start_go_back_unspent_and_run_once(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    // Four slow jobs fill the queue's four slots; the quick ones behind them are claimed
    // ahead in the same claim, then wait in memory.
    let mut slow = Vec::new();
    for i in 0..4 {
        slow.push(
            rt.enqueue(Plan::new(format!("slow {i}")).sleep_ms(6_000))
                .await,
        );
    }
    let mut quick = Vec::new();
    for i in 0..8 {
        quick.push(rt.enqueue(Plan::new(format!("quick {i}"))).await);
    }
    let workers = rt.start_workers().await;
    for &id in &slow {
        rt.wait_for_state(id, "running").await;
    }

    // Not started within 2 s, they go back: available again, attempt not spent.
    eventually(
        Duration::from_secs(5),
        "the jobs claimed ahead to go back to the queue",
        || async {
            let mut back = 0;
            for &id in &quick {
                let job = rt.job(id).await;
                if job.state == "available" && job.attempt == 0 {
                    back += 1;
                }
            }
            (back == quick.len()).then_some(())
        },
    )
    .await;

    // Once the slots free up, every job runs, once, on its first attempt.
    for &id in slow.iter().chain(&quick) {
        let job = rt.wait_for_state(id, "completed").await;
        assert_eq!(job.attempt, 1, "{job:?}");
        assert_eq!(job.attempts.len(), 1, "{job:?}");
    }
    workers.shutdown().await;
}

both_backends!(a_more_urgent_job_does_not_wait_for_a_long_backlog_to_drain);

/// On PostgreSQL a loop that keeps claiming full batches claims onward from where its last
/// claim ended (so it does not walk the dead entries its own claims left behind); it must
/// still look from the head of the queue again soon, or a more urgent job would wait for
/// the whole backlog.
async fn a_more_urgent_job_does_not_wait_for_a_long_backlog_to_drain(db: TestDb) {
    const BACKLOG: usize = 30_000;
    let rt = TestRuntime::new(&db).await;
    let job = |name: String, priority: i16| NewJob {
        priority,
        ..NewJob::of(&Run(Plan::new(name))).unwrap()
    };
    let mut tx = rt.db.begin().await.unwrap();
    rt.runtime
        .jobs()
        .enqueue_many(
            &mut tx,
            (0..BACKLOG)
                .map(|i| job(format!("backlog {i}"), 5))
                .collect(),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let workers = rt.start_workers().await;
    let finished = || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM keel_jobs WHERE state IN ('completed', 'cancelled', 'dead') \
             AND state = 'completed'",
        )
        .fetch_one(rt.db.pool())
        .await
        .unwrap();
        usize::try_from(n).unwrap()
    };
    // The drain is under way: full claims, one after another.
    eventually(
        Duration::from_secs(60),
        "the drain to be under way",
        || async { (finished().await >= 1_000).then_some(()) },
    )
    .await;

    let urgent = rt.enqueue_job(job("urgent".into(), 0)).await.unwrap();
    rt.wait_for_state(urgent, "completed").await;
    let done = finished().await;
    assert!(
        done < BACKLOG,
        "the urgent job ran only after the whole backlog ({done} jobs finished by then)"
    );
    workers.shutdown().await;
}
