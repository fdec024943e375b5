//! Claiming ahead: a loop holds more jobs than it has free slots, so a finishing job starts
//! the next without a claim round trip — but a job it cannot start soon goes back to the
//! queue without spending its attempt, and each job still runs exactly once.

use std::time::Duration;

use tests::testkit::Plan;
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
