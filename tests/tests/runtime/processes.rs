//! Several worker processes: a SIGKILLed worker's job is rescued after `dead_after` and run
//! again elsewhere; two processes on one PostgreSQL run each of many jobs exactly once.

use std::time::Duration;

use tests::harness::WAIT;
use tests::process::{WorkerProcess, WorkerTiming};
use tests::testkit::{Plan, Run};
use tests::{TestDb, TestRuntime, both_backends, eventually, postgres_only};

both_backends!(a_job_held_by_a_killed_worker_process_is_rescued_and_completed_elsewhere);
postgres_only!(two_worker_processes_run_each_of_many_jobs_exactly_once);

const WORKER: &str = env!("CARGO_BIN_EXE_test-worker");

/// Waits until `n` worker processes with these pids have registered.
async fn wait_registered(rt: &TestRuntime, pids: &[u32]) {
    for pid in pids {
        let what = format!("worker process {pid} to register");
        eventually(WAIT, &what, || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM keel_workers WHERE pid = $1 AND stopped_at IS NULL",
            )
            .bind(i64::from(*pid))
            .fetch_one(rt.db.pool())
            .await
            .unwrap();
            (n > 0).then_some(())
        })
        .await;
    }
}

async fn a_job_held_by_a_killed_worker_process_is_rescued_and_completed_elsewhere(db: TestDb) {
    let timing = WorkerTiming::default();
    let rt = TestRuntime::builder(&db)
        .system_clock()
        .config(|c| {
            c.heartbeat_interval = timing.heartbeat;
            c.dead_after = timing.dead_after;
            c.poll_interval = timing.poll;
        })
        .build()
        .await;
    let mut child = WorkerProcess::spawn(WORKER, rt.url(), timing);
    wait_registered(&rt, &[child.pid()]).await;

    let id = rt.enqueue(Plan::new("kill me").hang(1)).await;
    rt.wait_until_running(id, 1).await;
    assert_eq!(rt.runs(id).await[0].1, i64::from(child.pid()));
    child.kill().await;

    let workers = rt.start_workers().await;
    let done = rt.wait_for_state(id, "completed").await;
    let outcomes: Vec<_> = done
        .attempts
        .iter()
        .map(|a| (a.attempt, a.outcome.as_str()))
        .collect();
    assert_eq!(outcomes, vec![(1, "lost"), (2, "completed")]);
    let lost = &done.attempts[0];
    assert!(
        lost.error
            .as_deref()
            .unwrap()
            .contains("stopped heartbeating"),
        "{:?}",
        lost.error
    );
    let runs = rt.runs(id).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].1, i64::from(std::process::id()));
    assert_eq!(runs[1].2.as_deref(), Some("ok"));
    assert!(rt.violations().await.is_empty());
    workers.shutdown().await;
}

async fn two_worker_processes_run_each_of_many_jobs_exactly_once(db: TestDb) {
    const JOBS: usize = 500;
    let rt = TestRuntime::builder(&db).system_clock().build().await;
    let timing = WorkerTiming {
        dead_after: Duration::from_secs(5),
        ..WorkerTiming::default()
    };
    let mut a = WorkerProcess::spawn(WORKER, rt.url(), timing);
    let mut b = WorkerProcess::spawn(WORKER, rt.url(), timing);
    wait_registered(&rt, &[a.pid(), b.pid()]).await;

    for batch in 0..(JOBS / 100) {
        let mut tx = rt.db.begin().await.unwrap();
        for n in 0..100 {
            let i = batch * 100 + n;
            let plan = Plan::new(format!("job {i}")).sleep_ms(u64::try_from(i % 4).unwrap());
            rt.runtime
                .jobs()
                .enqueue(&mut tx, events::NewJob::of(&Run(plan)).unwrap())
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    eventually(Duration::from_secs(60), "every job to complete", || async {
        let done = rt
            .count(
                "SELECT COUNT(*) FROM keel_jobs WHERE state = 'completed'",
                &[],
            )
            .await;
        (done == i64::try_from(JOBS).unwrap()).then_some(())
    })
    .await;

    let twice = rt
        .count(
            "SELECT COUNT(*) FROM (SELECT job_id FROM testkit_runs GROUP BY job_id \
             HAVING COUNT(*) <> 1) AS t",
            &[],
        )
        .await;
    assert_eq!(twice, 0, "every job ran exactly once");
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM testkit_runs WHERE outcome = 'ok'",
            &[]
        )
        .await,
        i64::try_from(JOBS).unwrap()
    );
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM keel_job_attempts WHERE outcome = 'completed'",
            &[]
        )
        .await,
        i64::try_from(JOBS).unwrap()
    );
    assert!(
        rt.violations().await.is_empty(),
        "{:?}",
        rt.violations().await
    );
    let per_process: Vec<(i64, i64)> =
        sqlx::query_as("SELECT pid, COUNT(*) FROM testkit_runs GROUP BY pid ORDER BY pid")
            .fetch_all(rt.db.pool())
            .await
            .unwrap();
    eprintln!("jobs per worker process: {per_process:?}");
    assert_eq!(
        per_process.len(),
        2,
        "both processes took work: {per_process:?}"
    );

    for p in [&mut a, &mut b] {
        let status = p.terminate(Duration::from_secs(10)).await;
        assert!(
            status.success(),
            "SIGTERM ends a worker with exit 0, got {status}"
        );
    }
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM keel_workers WHERE stopped_at IS NULL",
            &[]
        )
        .await,
        0
    );
}

both_backends!(a_job_that_keeps_killing_its_worker_is_dead_lettered_when_its_budget_is_spent);
postgres_only!(workers_carry_on_after_every_database_connection_is_killed);

async fn a_job_that_keeps_killing_its_worker_is_dead_lettered_when_its_budget_is_spent(db: TestDb) {
    let timing = WorkerTiming::default();
    let rt = TestRuntime::builder(&db)
        .system_clock()
        .config(|c| {
            c.heartbeat_interval = timing.heartbeat;
            c.dead_after = timing.dead_after;
            c.poll_interval = timing.poll;
        })
        .build()
        .await;
    let mut child = WorkerProcess::spawn(WORKER, rt.url(), timing);
    wait_registered(&rt, &[child.pid()]).await;
    let mut job = events::NewJob::of(&Run(Plan::new("deadly").hang(1))).unwrap();
    job.max_attempts = Some(1);
    let id = rt.enqueue_job(job).await.unwrap();
    rt.wait_until_running(id, 1).await;
    child.kill().await;

    let workers = rt.start_workers().await;
    let dead = rt.wait_for_state(id, "dead").await;
    assert_eq!(dead.attempts.len(), 1);
    assert_eq!(dead.attempts[0].outcome, "dead");
    assert!(dead.last_error.unwrap().contains("stopped heartbeating"));
    assert_eq!(rt.alerts.about_job("job_dead", &id.to_string()).len(), 1);
    assert_eq!(rt.runs(id).await.len(), 1, "it is not run again");
    let told = id.to_string();
    tests::eventually(
        Duration::from_secs(5),
        "the handler to be told, though the rescue killed it",
        || async { tests::testkit::told_dead(&told).then_some(()) },
    )
    .await;
    workers.shutdown().await;
}

async fn workers_carry_on_after_every_database_connection_is_killed(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let workers = rt.start_workers().await;
    // Enqueue from another runtime, so only the LISTEN connection can wake the workers.
    let other = TestRuntime::new(&db).await;
    let before = other.enqueue(Plan::new("before")).await;
    rt.wait_for_state(before, "completed").await;

    let killed = other
        .count(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()) AS t",
            &[],
        )
        .await;
    assert!(killed > 0);

    let after = eventually(WAIT, "an enqueue to succeed again", || async {
        let mut tx = other.db.begin().await.ok()?;
        let id = other
            .runtime
            .jobs()
            .enqueue(
                &mut tx,
                events::NewJob::of(&Run(Plan::new("after"))).unwrap(),
            )
            .await
            .ok()??;
        tx.commit().await.ok()?;
        Some(id)
    })
    .await;
    rt.wait_for_state(after, "completed").await;
    workers.shutdown().await;
}

postgres_only!(an_enqueue_inside_after_commit_notifies_the_other_replicas_after_its_commit);

async fn an_enqueue_inside_after_commit_notifies_the_other_replicas_after_its_commit(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    // What another replica's LISTEN connection hears.
    let mut replica = sqlx::postgres::PgListener::connect(rt.url()).await.unwrap();
    replica.listen(runtime::wake::CHANNEL).await.unwrap();
    // Enqueued as an HTTP handler enqueues: the transaction leaves the insert trigger's
    // NOTIFY out, and the runtime notifies once the commit is done.
    let id = rt
        .runtime
        .after_commit(async {
            let mut tx = rt.db.begin().await.unwrap();
            let job = events::NewJob::of(&Run(Plan::new("woken"))).unwrap();
            let id = rt.runtime.jobs().enqueue(&mut tx, job).await.unwrap();
            let deferred: Option<String> =
                sqlx::query_scalar("SELECT current_setting('keel.notify_after_commit', true)")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
            assert_eq!(
                deferred.as_deref(),
                Some("on"),
                "the transaction leaves its NOTIFY to after the commit"
            );
            tx.commit().await.unwrap();
            id.unwrap()
        })
        .await;
    let heard = tokio::time::timeout(WAIT, replica.recv())
        .await
        .expect("no NOTIFY reached the other replica")
        .unwrap();
    assert_eq!(heard.payload(), tests::testkit::QUEUE);
    // Outside such a scope (a CLI command, say), the trigger still notifies at commit.
    let other = rt.enqueue(Plan::new("plain")).await;
    let heard = tokio::time::timeout(WAIT, replica.recv())
        .await
        .expect("the trigger's NOTIFY did not come")
        .unwrap();
    assert_eq!(heard.payload(), tests::testkit::QUEUE);
    assert_ne!(id, other);
}

both_backends!(a_worker_process_stopped_with_sigterm_hands_back_its_job_and_exits_0);

async fn a_worker_process_stopped_with_sigterm_hands_back_its_job_and_exits_0(db: TestDb) {
    let rt = TestRuntime::builder(&db).system_clock().build().await;
    let timing = WorkerTiming {
        grace: Duration::from_millis(300),
        ..WorkerTiming::default()
    };
    let mut child = WorkerProcess::spawn(WORKER, rt.url(), timing);
    wait_registered(&rt, &[child.pid()]).await;
    let id = rt.enqueue(Plan::new("interrupted").hang(1)).await;
    rt.wait_until_running(id, 1).await;

    let status = child.terminate(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "SIGTERM ends a worker with exit 0, got {status}"
    );
    let job = rt.job(id).await;
    assert_eq!(job.state, "available", "handed back, not left running");
    assert_eq!(job.attempt, 0, "handing back spends no attempt");
    assert!(job.attempts.is_empty());
    let stopped: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM keel_workers WHERE pid = $1 AND stopped_at IS NOT NULL",
    )
    .bind(i64::from(child.pid()))
    .fetch_one(rt.db.pool())
    .await
    .unwrap();
    assert_eq!(stopped, 1, "the process marked itself stopped");
}
