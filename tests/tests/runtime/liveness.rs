//! Liveness over time, on several replicas (issue 11): who owns a job is decided on the
//! database's clock, so replicas whose clocks are minutes apart agree; only a started run
//! spends an attempt, so a crash costs the jobs that were running and nothing held in
//! memory; a job that keeps taking its worker down is retried on its backoff and then
//! dead-lettered as poison; a slow maintenance round delays no heartbeat and stops no
//! rescue; a process that cannot heartbeat fences itself and rejoins; pruning keeps every
//! table level under sustained load without keeping writers waiting; one outcome the
//! database refuses blocks no other; and waiting for a connection spends no attempt.
//!
//! Time is injected: a [`ManualClock`] stands in for the database's clock and moves only
//! when a test says so — in steps shorter than `dead_after`, each followed by a heartbeat
//! and maintenance round of every live replica (see [`pass`]), as real time would. A replica
//! "crashes" by losing its tokio runtime at once (`CrashableWorkers::crash`), or — across
//! processes — by `kill -9` of a `test-worker`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use events::{Backend, NewJob};
use runtime::{RuntimeConfig, Workers};
use tests::clock::SkewedClock;
use tests::harness::WAIT;
use tests::process::{WorkerProcess, WorkerTiming};
use tests::testkit::{self, Plan, Run};
use tests::{ManualClock, TestDb, TestRuntime, both_backends, eventually, postgres_only};

const WORKER: &str = env!("CARGO_BIN_EXE_test-worker");

/// The longest step [`pass`] moves the clock by: below `dead_after` (2 s in tests), so a
/// live replica that heartbeats after every step never looks silent.
const STEP: Duration = Duration::from_secs(1);

/// Lets `by` pass on the shared database clock `time`, in steps of at most [`STEP`]; after
/// each step every replica is woken and runs a heartbeat and a maintenance round.
async fn pass(time: &ManualClock, by: Duration, replicas: &[(&TestRuntime, &Workers)]) {
    let mut left = by;
    while !left.is_zero() {
        let step = left.min(STEP);
        time.advance(step);
        left -= step;
        for (rt, workers) in replicas {
            rt.runtime.wake_all();
            workers.maintain_now().await.unwrap();
        }
    }
}

/// One `BIGINT` of one job's row.
async fn job_column(rt: &TestRuntime, column: &str, id: uuid::Uuid) -> i64 {
    rt.count(
        &format!("SELECT {column} FROM keel_jobs WHERE id = $1"),
        &[&id.to_string()],
    )
    .await
}

/// The ids of the jobs in `state` held by `worker`.
async fn held_by(rt: &TestRuntime, worker: &str, state: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM keel_jobs WHERE locked_by = $1 AND state = $2 ORDER BY id")
        .bind(worker)
        .bind(state)
        .fetch_all(rt.db.pool())
        .await
        .unwrap()
}

/// The outcomes of a job's attempts, oldest first.
async fn outcomes(rt: &TestRuntime, id: uuid::Uuid) -> Vec<String> {
    rt.job(id)
        .await
        .attempts
        .into_iter()
        .map(|a| a.outcome)
        .collect()
}

/// The `worker_silent` alerts a runtime raised, by the worker they name.
fn silent_workers(rt: &TestRuntime) -> Vec<String> {
    rt.alerts
        .raised()
        .into_iter()
        .filter(|a| a.kind == "worker_silent")
        .map(|a| a.subject)
        .collect()
}

/// A second runtime on `db`, on the same manual database clock as `rt`.
async fn replica(
    db: &TestDb,
    rt: &TestRuntime,
    config: impl FnOnce(&mut RuntimeConfig),
) -> TestRuntime {
    let time = rt.shared_clock();
    TestRuntime::builder(db)
        .config(config)
        .clock(time.clone(), Some(time))
        .build()
        .await
}

fn testkit_queue(c: &mut RuntimeConfig) -> &mut runtime::QueuePolicy {
    c.queues.get_mut(testkit::QUEUE).unwrap()
}

// 1. Clocks minutes apart.

both_backends!(
    replicas_whose_clocks_are_ten_minutes_apart_run_each_job_once_rescue_nothing_and_share_one_schedule
);

async fn replicas_whose_clocks_are_ten_minutes_apart_run_each_job_once_rescue_nothing_and_share_one_schedule(
    db: TestDb,
) {
    let time = Arc::new(ManualClock::new());
    let skewed = |minutes: i64| {
        let clock = SkewedClock::manual(time.clone(), TimeDelta::minutes(minutes));
        TestRuntime::builder(&db)
            .clock(Arc::new(clock), Some(time.clone()))
            .build()
    };
    let ahead = skewed(5).await;
    let behind = skewed(-5).await;
    assert_eq!(ahead.now_ms() - behind.now_ms(), 10 * 60 * 1000);
    let wa = ahead.start_workers().await;
    let wb = behind.start_workers().await;
    let replicas = [(&ahead, &wa), (&behind, &wb)];

    // Jobs for now, from both: available at once to both, though one replica's "now" is
    // five minutes behind the other's.
    let mut now = Vec::new();
    for i in 0..20 {
        now.push(
            ahead
                .enqueue(Plan::new(format!("ahead {i}")).sleep_ms(5))
                .await,
        );
        now.push(
            behind
                .enqueue(Plan::new(format!("behind {i}")).sleep_ms(5))
                .await,
        );
    }
    // Jobs for 30 s from now on the database's clock, from both.
    let due = ManualClock::start() + TimeDelta::seconds(30);
    let mut later = Vec::new();
    for (i, rt) in [&ahead, &behind].into_iter().enumerate() {
        let mut job = NewJob::of(&Run(Plan::new(format!("later {i}")))).unwrap();
        job.run_at = Some(due);
        later.push(rt.enqueue_job(job).await.unwrap());
    }
    for &id in &now {
        ahead.wait_for_state(id, "completed").await;
    }

    // Maintenance rounds from both while time passes: nobody looks silent to anybody, and
    // the scheduled jobs wait for the shared clock, not for the replica 5 minutes ahead.
    pass(&time, Duration::from_secs(29), &replicas).await;
    for &id in &later {
        assert_eq!(
            ahead.job(id).await.state,
            "scheduled",
            "not due before 30 s on the database's clock"
        );
    }
    pass(&time, Duration::from_secs(1), &replicas).await;
    for &id in &later {
        ahead.wait_for_state(id, "completed").await;
    }

    for &id in now.iter().chain(&later) {
        let job = ahead.job(id).await;
        assert_eq!(job.attempt, 1, "{job:?}");
        assert_eq!(outcomes(&ahead, id).await, ["completed"], "{job:?}");
        assert_eq!(ahead.runs(id).await.len(), 1, "{job:?}");
    }
    assert!(
        ahead.violations().await.is_empty(),
        "{:?}",
        ahead.violations().await
    );
    assert_eq!(silent_workers(&ahead), Vec::<String>::new());
    assert_eq!(silent_workers(&behind), Vec::<String>::new());
    assert_eq!(
        ahead
            .count(
                "SELECT COUNT(*) FROM keel_job_attempts WHERE outcome <> 'completed'",
                &[]
            )
            .await,
        0,
        "nothing rescued, released or retried"
    );
    assert_eq!(
        ahead
            .count(
                "SELECT COUNT(*) FROM keel_workers WHERE stopped_at IS NULL",
                &[]
            )
            .await,
        2,
        "both replicas still count as alive"
    );
    wa.shutdown().await;
    wb.shutdown().await;
}

// 2. kill -9 with jobs held in memory.

postgres_only!(a_killed_worker_process_spends_attempts_only_for_the_jobs_it_was_running);

async fn a_killed_worker_process_spends_attempts_only_for_the_jobs_it_was_running(db: TestDb) {
    const JOBS: usize = 40;
    /// `test-worker`'s concurrency on `testkit` (from `test_config`).
    const CHILD_CONCURRENCY: usize = 4;
    let timing = WorkerTiming::default();
    let rt = TestRuntime::builder(&db)
        .system_clock()
        .config(|c| {
            c.heartbeat_interval = timing.heartbeat;
            c.dead_after = timing.dead_after;
            c.poll_interval = timing.poll;
            testkit_queue(c).concurrency = 16;
        })
        .build()
        .await;
    let mut child = WorkerProcess::spawn(WORKER, rt.url(), timing);
    let child_id = eventually(WAIT, "the worker process to register", || async {
        sqlx::query_scalar::<_, String>(
            "SELECT id FROM keel_workers WHERE pid = $1 AND stopped_at IS NULL",
        )
        .bind(i64::from(child.pid()))
        .fetch_optional(rt.db.pool())
        .await
        .unwrap()
    })
    .await;

    // One transaction, so the worker's first claim sees them all: it starts as many as it
    // has slots and holds most of the rest in memory, reserved.
    let mut tx = rt.db.begin().await.unwrap();
    for i in 0..JOBS {
        let mut job = NewJob::of(&Run(Plan::new(format!("job {i}")).sleep_ms(1000))).unwrap();
        job.max_attempts = Some(1);
        rt.runtime.jobs().enqueue(&mut tx, job).await.unwrap();
    }
    tx.commit().await.unwrap();
    eventually(
        WAIT,
        "the worker to run jobs and hold others reserved",
        || async {
            let running = held_by(&rt, &child_id, "running").await.len();
            let reserved = held_by(&rt, &child_id, "reserved").await.len();
            (running > 0 && reserved > 0).then_some(())
        },
    )
    .await;
    child.kill().await;
    let running = held_by(&rt, &child_id, "running").await;
    let reserved = held_by(&rt, &child_id, "reserved").await;
    eprintln!(
        "killed holding {} running and {} reserved",
        running.len(),
        reserved.len()
    );
    assert!(running.len() <= CHILD_CONCURRENCY, "{running:?}");
    assert!(!reserved.is_empty());

    let workers = rt.start_workers().await;
    eventually(
        Duration::from_secs(60),
        "every job to be finished",
        || async {
            let open = rt
                .count(
                    "SELECT COUNT(*) FROM keel_jobs WHERE state NOT IN ('completed', 'dead')",
                    &[],
                )
                .await;
            (open == 0).then_some(())
        },
    )
    .await;

    // Only the runs the kill interrupted spent their (only) attempt.
    let dead: Vec<String> =
        sqlx::query_scalar("SELECT id FROM keel_jobs WHERE state = 'dead' ORDER BY id")
            .fetch_all(rt.db.pool())
            .await
            .unwrap();
    assert_eq!(dead, running, "exactly the jobs that were running are dead");
    assert!(dead.len() <= CHILD_CONCURRENCY);
    for id in &dead {
        let job = rt.job(id.parse().unwrap()).await;
        assert_eq!(
            outcomes(&rt, id.parse().unwrap()).await,
            ["dead"],
            "{job:?}"
        );
        assert!(
            job.last_error
                .as_deref()
                .unwrap()
                .contains("stopped heartbeating"),
            "{job:?}"
        );
    }
    // Every reserved one came back unspent and ran here, on its first attempt.
    for id in &reserved {
        let id: uuid::Uuid = id.parse().unwrap();
        let job = rt.job(id).await;
        assert_eq!(job.state, "completed", "{job:?}");
        assert_eq!(job.attempt, 1, "{job:?}");
        assert_eq!(
            outcomes(&rt, id).await,
            ["released", "completed"],
            "{job:?}"
        );
        let runs = rt.runs(id).await;
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0].1, i64::from(std::process::id()));
    }
    // Nothing lost: the rest completed on their first attempt too.
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM keel_jobs WHERE state = 'completed' AND attempt = 1",
            &[]
        )
        .await,
        i64::try_from(JOBS - dead.len()).unwrap()
    );
    assert!(
        rt.violations().await.is_empty(),
        "{:?}",
        rt.violations().await
    );
    workers.shutdown().await;
}

// 3. Rescue with backoff, and poison.

both_backends!(
    a_job_that_keeps_taking_down_its_worker_is_retried_on_its_backoff_then_dead_lettered_as_poison
);

async fn a_job_that_keeps_taking_down_its_worker_is_retried_on_its_backoff_then_dead_lettered_as_poison(
    db: TestDb,
) {
    let backoff = [Duration::from_secs(10), Duration::from_secs(20)];
    let config = |c: &mut RuntimeConfig| testkit_queue(c).backoff = backoff.to_vec();
    let rt = TestRuntime::builder(&db).config(config).build().await;
    let time = rt.shared_clock();
    // This runtime only looks after the others: heartbeat and maintenance, no queue loops.
    let maintenance = rt.runtime.start_workers(Some(Vec::new())).await.unwrap();
    let id = rt.enqueue(Plan::new("deadly").hang(3)).await;
    assert_eq!(rt.runtime.config().poison_after, 3);

    for crash in 1..=3 {
        // A replica starts the job, and goes down with it.
        let doomed = replica(&db, &rt, config).await;
        let workers = doomed.start_crashable_workers().await;
        rt.wait_until_running(id, crash).await;
        workers.crash();
        // Once it has been silent for longer than dead_after, the next round rescues the job.
        pass(&time, Duration::from_secs(2), &[(&rt, &maintenance)]).await;
        assert_eq!(
            rt.job(id).await.state,
            "running",
            "not silent for long enough yet"
        );
        pass(&time, Duration::from_secs(1), &[(&rt, &maintenance)]).await;
        let rescued_at = time.now_ms();
        let job = rt.job(id).await;
        let last = job.attempts.last().unwrap();
        assert_eq!(last.attempt, crash);
        assert_eq!(last.finished_at.timestamp_millis(), rescued_at);
        assert_eq!(job_column(&rt, "crashes", id).await, i64::from(crash));
        if crash < 3 {
            // Retried on its schedule like any failure, not at once elsewhere.
            assert_eq!(job.state, "retrying", "{job:?}");
            assert_eq!(last.outcome, "lost");
            assert!(
                last.error
                    .as_deref()
                    .unwrap()
                    .contains("stopped heartbeating")
            );
            let delay = backoff[usize::try_from(crash - 1).unwrap()];
            let run_at = job_column(&rt, "run_at", id).await;
            assert_eq!(
                run_at,
                rescued_at + i64::try_from(delay.as_millis()).unwrap()
            );
            pass(&time, delay - STEP, &[(&rt, &maintenance)]).await;
            assert_eq!(rt.job(id).await.state, "retrying", "not before its backoff");
            pass(&time, STEP, &[(&rt, &maintenance)]).await;
        } else {
            // The third run that took its worker down: poison, saying so.
            assert_eq!(job.state, "dead", "{job:?}");
            assert_eq!(last.outcome, "dead");
            let error = job.last_error.unwrap();
            assert!(error.contains("poison"), "{error}");
            assert!(error.contains("3 times"), "{error}");
        }
    }
    assert_eq!(outcomes(&rt, id).await, ["lost", "lost", "dead"]);
    assert_eq!(rt.runs(id).await.len(), 3);
    assert_eq!(rt.alerts.about_job("job_dead", &id.to_string()).len(), 1);
    let told = id.to_string();
    eventually(WAIT, "the handler to be told it is dead", || async {
        testkit::told_dead(&told).then_some(())
    })
    .await;
    maintenance.shutdown().await;
}

// 4. Reservations go back unspent.

both_backends!(
    reservations_of_a_silent_worker_go_back_unspent_on_the_next_round,
    a_reservation_held_past_its_ttl_goes_back_before_its_worker_counts_as_silent
);

/// A replica with one slot that runs `busy` (hanging) and holds the other jobs reserved,
/// then crashes. Returns the crashed worker's id.
async fn crash_holding_reservations(
    db: &TestDb,
    rt: &TestRuntime,
    config: impl FnOnce(&mut RuntimeConfig),
    busy: uuid::Uuid,
    held: &[uuid::Uuid],
) -> String {
    let doomed = replica(db, rt, |c| {
        config(c);
        testkit_queue(c).concurrency = 1;
    })
    .await;
    let workers = doomed.start_crashable_workers().await;
    let worker = workers.worker_id().to_owned();
    rt.wait_until_running(busy, 1).await;
    // It hands back what it cannot start within 2 s: crash before that.
    eventually(
        WAIT,
        "the replica to hold the other jobs reserved",
        || async { (held_by(rt, &worker, "reserved").await.len() == held.len()).then_some(()) },
    )
    .await;
    workers.crash();
    worker
}

/// `near_crash`: whether their worker was silent (not just slow), so each may have started
/// in the moment before the crash, its start unwritten: from now on it runs only once its
/// start is committed.
async fn assert_released_unspent(
    rt: &TestRuntime,
    held: &[uuid::Uuid],
    worker: &str,
    near_crash: bool,
) {
    for &id in held {
        assert_eq!(
            job_column(rt, "held_at_crash", id).await,
            i64::from(near_crash)
        );
        let job = rt.job(id).await;
        assert_eq!(job.state, "available", "{job:?}");
        assert_eq!(job.attempt, 0, "no attempt spent: {job:?}");
        assert_eq!(job.attempts.len(), 1, "{job:?}");
        assert_eq!(job.attempts[0].outcome, "released");
        let error = job.attempts[0].error.as_deref().unwrap();
        assert!(error.contains(worker), "{error}");
        assert!(error.contains("no attempt spent"), "{error}");
    }
}

async fn reservations_of_a_silent_worker_go_back_unspent_on_the_next_round(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let time = rt.shared_clock();
    let maintenance = rt.runtime.start_workers(Some(Vec::new())).await.unwrap();
    let busy = rt.enqueue(Plan::new("busy").hang(1)).await;
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(rt.enqueue(Plan::new(format!("held {i}"))).await);
    }
    let worker = crash_holding_reservations(&db, &rt, |_| {}, busy, &held).await;

    pass(&time, Duration::from_secs(2), &[(&rt, &maintenance)]).await;
    for &id in &held {
        assert_eq!(
            rt.job(id).await.state,
            "reserved",
            "its worker is not silent yet"
        );
    }
    // The first round that finds the worker silent puts them back.
    pass(&time, Duration::from_secs(1), &[(&rt, &maintenance)]).await;
    assert_released_unspent(&rt, &held, &worker, true).await;
    assert_eq!(
        outcomes(&rt, busy).await,
        ["lost"],
        "the running one was rescued"
    );
    assert_eq!(silent_workers(&rt), [worker]);

    // Elsewhere, each runs on its first attempt.
    maintenance.shutdown().await;
    let workers = rt.start_workers().await;
    for &id in &held {
        let job = rt.wait_for_state(id, "completed").await;
        assert_eq!(job.attempt, 1, "{job:?}");
        assert_eq!(outcomes(&rt, id).await, ["released", "completed"]);
    }
    workers.shutdown().await;
}

async fn a_reservation_held_past_its_ttl_goes_back_before_its_worker_counts_as_silent(db: TestDb) {
    // dead_after far longer than the reservation TTL (10 s).
    let config = |c: &mut RuntimeConfig| c.dead_after = Duration::from_secs(60);
    let rt = TestRuntime::builder(&db).config(config).build().await;
    let time = rt.shared_clock();
    let maintenance = rt.runtime.start_workers(Some(Vec::new())).await.unwrap();
    let busy = rt.enqueue(Plan::new("busy").hang(1)).await;
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(rt.enqueue(Plan::new(format!("held {i}"))).await);
    }
    let worker = crash_holding_reservations(&db, &rt, config, busy, &held).await;

    pass(&time, Duration::from_secs(10), &[(&rt, &maintenance)]).await;
    for &id in &held {
        assert_eq!(
            rt.job(id).await.state,
            "reserved",
            "held for 10 s: not past the TTL"
        );
    }
    pass(&time, Duration::from_secs(1), &[(&rt, &maintenance)]).await;
    assert_released_unspent(&rt, &held, &worker, false).await;
    // Its worker is not silent for dead_after yet: its running job stays its own.
    assert_eq!(rt.job(busy).await.state, "running");
    assert!(silent_workers(&rt).is_empty());
    maintenance.shutdown().await;
}

// 5. A slow maintenance round; a process that cannot heartbeat.

postgres_only!(
    a_maintenance_round_stuck_in_pruning_still_rescues_and_declares_no_healthy_worker_silent
);

async fn a_maintenance_round_stuck_in_pruning_still_rescues_and_declares_no_healthy_worker_silent(
    db: TestDb,
) {
    let rt = TestRuntime::new(&db).await;
    let time = rt.shared_clock();
    // A replica runs a job, and goes down with it.
    let doomed = replica(&db, &rt, |_| {}).await;
    let crashed = doomed.start_crashable_workers().await;
    let crashed_id = crashed.worker_id().to_owned();
    let lost = rt.enqueue(Plan::new("lost").hang(1)).await;
    rt.wait_until_running(lost, 1).await;
    crashed.crash();
    let workers = rt.start_workers().await;
    // The crashed replica held the maintenance lease: it expires with its silence.
    pass(&time, Duration::from_secs(2), &[(&rt, &workers)]).await;
    assert_eq!(
        rt.job(lost).await.state,
        "running",
        "not silent for long enough yet"
    );

    // Pruning cannot get its lock: every round's prune step waits until it times out.
    let locker = db.connect().await;
    let mut lock = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE keel_idempotency IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();

    let mut jobs = Vec::new();
    for i in 0..20 {
        jobs.push(rt.enqueue(Plan::new(format!("job {i}")).sleep_ms(20)).await);
    }
    for _ in 0..3 {
        time.advance(STEP);
        rt.runtime.wake_all();
        // The heartbeat goes on by itself while the leader's rounds are stuck.
        eventually(WAIT, "a heartbeat at the new time", || async {
            let at = rt
                .count(
                    "SELECT heartbeat_at FROM keel_workers WHERE id = $1",
                    &[workers.worker_id()],
                )
                .await;
            (at == time.now_ms()).then_some(())
        })
        .await;
        // The round fails for its prune step only: the database gives up on the blocked
        // statement when the step does, so its connection is free for the next round.
        let round = workers.maintain_now().await;
        let error = round.expect_err("the prune step cannot finish").to_string();
        assert!(
            error.contains("statement timeout") || error.contains("`prune` timed out"),
            "{error}"
        );
        // Its lease was renewed all the same.
        let holder: String =
            sqlx::query_scalar("SELECT holder FROM keel_leases WHERE name = 'maintenance'")
                .fetch_one(rt.db.pool())
                .await
                .unwrap();
        assert_eq!(holder, workers.worker_id());
        assert_eq!(
            rt.count(
                "SELECT expires_at FROM keel_leases WHERE name = 'maintenance'",
                &[]
            )
            .await,
            time.now_ms() + 2000
        );
    }
    // The rescue step still ran: the crashed replica's job went back on its schedule.
    let job = rt.job(lost).await;
    assert_eq!(job.state, "retrying", "{job:?}");
    assert_eq!(outcomes(&rt, lost).await, ["lost"]);
    for &id in &jobs {
        let job = rt.wait_for_state(id, "completed").await;
        assert_eq!(job.attempt, 1, "{job:?}");
        assert_eq!(rt.runs(id).await.len(), 1);
    }
    assert_eq!(silent_workers(&rt), [crashed_id], "only the crashed one");
    assert!(
        rt.violations().await.is_empty(),
        "{:?}",
        rt.violations().await
    );

    lock.rollback().await.unwrap();
    workers.maintain_now().await.unwrap();
    workers.shutdown().await;
}

both_backends!(
    a_process_that_cannot_renew_its_heartbeat_fences_itself_then_rejoins_and_runs_every_job_once
);

async fn a_process_that_cannot_renew_its_heartbeat_fences_itself_then_rejoins_and_runs_every_job_once(
    db: TestDb,
) {
    let rt = TestRuntime::builder(&db)
        .config(|c| testkit_queue(c).concurrency = 1)
        .build()
        .await;
    let mut jobs = Vec::new();
    for i in 0..8 {
        jobs.push(
            rt.enqueue(Plan::new(format!("job {i}")).sleep_ms(100))
                .await,
        );
    }
    let workers = rt.start_workers().await;
    eventually(WAIT, "jobs running and held", || async {
        let held = rt
            .count(
                "SELECT COUNT(*) FROM keel_jobs WHERE state = 'reserved'",
                &[],
            )
            .await;
        (held > 0).then_some(())
    })
    .await;

    // Nothing can renew the heartbeat: on SQLite a write transaction holds the one write
    // lock; on PostgreSQL a lock on the workers' table.
    let locker = db.connect().await;
    let mut lock = locker.begin().await.unwrap();
    if db.backend() == Backend::Postgres {
        sqlx::query("LOCK TABLE keel_workers IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *lock)
            .await
            .unwrap();
    }
    eventually(WAIT, "the process to fence itself", || async {
        workers.is_fenced().then_some(())
    })
    .await;
    if db.backend() == Backend::Postgres {
        // What it held in memory went back while it could still write jobs.
        eventually(WAIT, "the reservations to go back", || async {
            let held = rt
                .count(
                    "SELECT COUNT(*) FROM keel_jobs WHERE state = 'reserved'",
                    &[],
                )
                .await;
            (held == 0).then_some(())
        })
        .await;
    }
    lock.rollback().await.unwrap();

    eventually(WAIT, "the process to rejoin", || async {
        (!workers.is_fenced()).then_some(())
    })
    .await;
    for &id in &jobs {
        let job = rt.wait_for_state(id, "completed").await;
        assert_eq!(job.attempt, 1, "{job:?}");
        assert_eq!(rt.runs(id).await.len(), 1, "{job:?}");
    }
    assert!(
        rt.violations().await.is_empty(),
        "{:?}",
        rt.violations().await
    );
    assert!(silent_workers(&rt).is_empty());
    workers.shutdown().await;
}

// 6. Pruning keeps up.

both_backends!(row_counts_stay_flat_under_sustained_drain_with_a_short_retention);

async fn row_counts_stay_flat_under_sustained_drain_with_a_short_retention(db: TestDb) {
    const ROUNDS: usize = 8;
    const PER_ROUND: usize = 30;
    let rt = TestRuntime::builder(&db)
        .config(|c| {
            c.retention = Duration::from_secs(10);
            c.dead_letter_retention = Duration::from_secs(20);
        })
        .build()
        .await;
    let time = rt.shared_clock();
    let workers = rt.start_workers().await;
    let tables = [
        "keel_jobs",
        "keel_job_attempts",
        "keel_events",
        "keel_inbox",
    ];
    let mut history = Vec::new();
    for round in 0..ROUNDS {
        // Each job publishes an event (two listener deliveries, each recorded in the inbox)
        // and performs an effect behind the inbox guard; one job a round is dead-lettered.
        for i in 0..PER_ROUND {
            rt.enqueue(
                Plan::new(format!("round {round} job {i}"))
                    .publish()
                    .guarded_effect(),
            )
            .await;
        }
        let mut dead = NewJob::of(&Run(Plan::new(format!("round {round} dead")).fail(1))).unwrap();
        dead.max_attempts = Some(1);
        rt.enqueue_job(dead).await.unwrap();
        eventually(WAIT, "the round's work to drain", || async {
            let open = rt
                .count(
                    "SELECT COUNT(*) FROM keel_jobs WHERE state NOT IN ('completed', 'dead')",
                    &[],
                )
                .await;
            (open == 0).then_some(())
        })
        .await;
        pass(&time, Duration::from_secs(5), &[(&rt, &workers)]).await;
        let mut counts = Vec::new();
        for table in tables {
            counts.push(
                rt.count(&format!("SELECT COUNT(*) FROM {table}"), &[])
                    .await,
            );
        }
        let dead_letters = rt
            .count("SELECT COUNT(*) FROM keel_jobs WHERE state = 'dead'", &[])
            .await;
        eprintln!("round {round}: {tables:?} = {counts:?}, dead letters {dead_letters}");
        history.push((counts, dead_letters));
    }
    // Finished work is kept for 10 s (two rounds of 5 s), dead letters for 20 s (four
    // rounds): once those windows are full, every count stays where it is.
    let per_round = i64::try_from(PER_ROUND).unwrap();
    let (steady, _) = &history[3];
    assert_eq!(
        steady[0],
        2 * (3 * per_round) + 4,
        "two rounds of jobs and deliveries, four dead letters"
    );
    for (round, (counts, dead_letters)) in history.iter().enumerate().skip(3) {
        assert_eq!(counts, steady, "round {round}: {history:?}");
        assert_eq!(*dead_letters, 4, "round {round}: {history:?}");
    }
    workers.shutdown().await;
}

// 7. One bad row.

both_backends!(one_outcome_the_database_refuses_is_dead_lettered_without_blocking_the_others);

async fn one_outcome_the_database_refuses_is_dead_lettered_without_blocking_the_others(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let mut jobs = Vec::new();
    for i in 0..20 {
        jobs.push(rt.enqueue(Plan::new(format!("job {i}"))).await);
    }
    let bad = jobs[7];
    // The database refuses every attempt row of one job.
    match db.backend() {
        Backend::Sqlite => {
            rt.execute(
                &format!(
                    "CREATE TRIGGER testkit_refuse BEFORE INSERT ON keel_job_attempts \
                     WHEN NEW.job_id = '{bad}' BEGIN SELECT RAISE(ABORT, 'refused on purpose'); END"
                ),
                &[],
            )
            .await;
        }
        Backend::Postgres => {
            rt.execute(
                &format!(
                    "CREATE FUNCTION testkit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
                     BEGIN IF NEW.job_id = '{bad}' THEN RAISE EXCEPTION 'refused on purpose'; \
                     END IF; RETURN NEW; END $$"
                ),
                &[],
            )
            .await;
            rt.execute(
                "CREATE TRIGGER testkit_refuse BEFORE INSERT ON keel_job_attempts \
                 FOR EACH ROW EXECUTE FUNCTION testkit_refuse()",
                &[],
            )
            .await;
        }
    }
    let workers = rt.start_workers().await;

    let dead = rt.wait_for_state(bad, "dead").await;
    let error = dead.last_error.clone().unwrap();
    assert!(
        error.contains("its outcome could not be written"),
        "{error}"
    );
    assert!(error.contains("refused on purpose"), "{error}");
    assert!(dead.attempts.is_empty(), "no attempt row could be written");
    assert_eq!(rt.runs(bad).await.len(), 1, "it ran once");
    for &id in jobs.iter().filter(|&&id| id != bad) {
        let job = rt.wait_for_state(id, "completed").await;
        assert_eq!(outcomes(&rt, id).await, ["completed"], "{job:?}");
    }
    // The writer carries on after it.
    let after = rt.enqueue(Plan::new("after")).await;
    rt.wait_for_state(after, "completed").await;
    assert_eq!(rt.alerts.about_job("job_dead", &bad.to_string()).len(), 1);
    let told = bad.to_string();
    eventually(WAIT, "the handler to be told it is dead", || async {
        testkit::told_dead(&told).then_some(())
    })
    .await;
    workers.shutdown().await;
}

// 8. A starved pool.

both_backends!(jobs_waiting_for_a_database_connection_spend_no_attempt);

async fn jobs_waiting_for_a_database_connection_spend_no_attempt(db: TestDb) {
    // Four slots, one connection for the handlers, and a short wait for it.
    let rt = TestRuntime::builder(&db)
        .handler_pool(1, Duration::from_millis(200))
        .build()
        .await;
    let time = rt.shared_clock();
    let mut jobs = Vec::new();
    for i in 0..12 {
        jobs.push(
            rt.enqueue(Plan::new(format!("job {i}")).hold_connection_ms(300))
                .await,
        );
    }
    let workers = rt.start_workers().await;
    eventually(Duration::from_secs(60), "every job to complete", || async {
        let open = rt
            .count(
                "SELECT COUNT(*) FROM keel_jobs WHERE state <> 'completed'",
                &[],
            )
            .await;
        if open == 0 {
            return Some(());
        }
        // A deferred job waits a second on the database's clock: once nothing runs, let
        // it pass.
        let busy = rt
            .count(
                "SELECT COUNT(*) FROM keel_jobs WHERE state IN ('available', 'reserved', 'running')",
                &[],
            )
            .await;
        if busy == 0 {
            pass(&time, STEP, &[(&rt, &workers)]).await;
        }
        None
    })
    .await;

    let deferred = rt
        .count(
            "SELECT COUNT(*) FROM keel_job_attempts WHERE outcome = 'deferred'",
            &[],
        )
        .await;
    eprintln!("{deferred} attempts deferred for want of a connection");
    assert!(deferred > 0, "the pool was starved");
    for &id in &jobs {
        let job = rt.job(id).await;
        assert_eq!(job.attempt, 1, "only the real run counts: {job:?}");
        let mut outcomes = outcomes(&rt, id).await;
        assert_eq!(outcomes.pop().as_deref(), Some("completed"), "{job:?}");
        assert!(outcomes.iter().all(|o| o == "deferred"), "{job:?}");
        // A run whose own bookkeeping then waited in vain for a connection was deferred
        // too (and ran again): the testkit may have recorded it `ok` before that.
        let ok = rt
            .runs(id)
            .await
            .into_iter()
            .filter(|(_, _, outcome)| outcome.as_deref() == Some("ok"))
            .count();
        assert!(ok >= 1, "{job:?}");
    }
    assert!(
        rt.violations().await.is_empty(),
        "{:?}",
        rt.violations().await
    );
    workers.shutdown().await;
}

// 9. Writes while a large prune runs.

both_backends!(enqueues_stay_prompt_while_a_large_backlog_is_pruned);

async fn enqueues_stay_prompt_while_a_large_backlog_is_pruned(db: TestDb) {
    const BACKLOG: i64 = 50_000;
    /// Generous: what matters is that no pruning transaction holds writers for long (the
    /// busy timeout is 10 s), not how fast this machine is.
    const BOUND: Duration = Duration::from_secs(1);
    let rt = TestRuntime::builder(&db)
        .config(|c| c.retention = Duration::from_secs(3600))
        .build()
        .await;
    // Finished two hours ago, each with its attempt.
    let finished = ManualClock::start().timestamp_millis() - 2 * 3600 * 1000;
    let seed = |table_and_columns: &str, select: &str| {
        format!(
            "INSERT INTO {table_and_columns} WITH RECURSIVE n(i) AS \
             (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {BACKLOG}) {select} FROM n"
        )
    };
    rt.execute(
        &seed(
            "keel_jobs (id, queue, job_type, payload, state, run_at, attempt, max_attempts, \
             idempotency_key, correlation_id, enqueued_at, started_at, finished_at)",
            &format!(
                "SELECT 'seed-' || i, 'testkit', 'testkit.run', '{{}}', 'completed', {finished}, 1, 1, \
                 'seed-' || i, 'seed', {finished}, {finished}, {finished}"
            ),
        ),
        &[],
    )
    .await;
    rt.execute(
        &seed(
            "keel_job_attempts (job_id, attempt, worker, started_at, finished_at, outcome)",
            &format!("SELECT 'seed-' || i, 1, 'seed', {finished}, {finished}, 'completed'"),
        ),
        &[],
    )
    .await;

    // The leader prunes in the background while enqueues go on.
    let workers = rt.start_workers().await;
    let mut latencies = Vec::new();
    let mut jobs = Vec::new();
    let began = Instant::now();
    loop {
        let left = rt
            .count("SELECT COUNT(*) FROM keel_jobs WHERE id LIKE 'seed-%'", &[])
            .await;
        if left == 0 {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "{left} seeded jobs still not pruned"
        );
        let start = Instant::now();
        jobs.push(rt.enqueue(Plan::new(format!("job {}", jobs.len()))).await);
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let worst = *latencies.last().unwrap();
    eprintln!(
        "pruned {BACKLOG} jobs in {:?} while {} enqueues ran: median {:?}, worst {worst:?}",
        began.elapsed(),
        latencies.len(),
        latencies[latencies.len() / 2]
    );
    assert!(
        latencies.len() > 1,
        "the prune was not concurrent with anything"
    );
    assert!(worst < BOUND, "an enqueue waited {worst:?} behind pruning");
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM keel_job_attempts WHERE job_id LIKE 'seed-%'",
            &[]
        )
        .await,
        0
    );
    for &id in &jobs {
        rt.wait_for_state(id, "completed").await;
    }
    workers.shutdown().await;
}
