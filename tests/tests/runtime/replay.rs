//! Replays underneath `keel events replay` and backfills: deliveries in log order, spaced by
//! the rate on the database's clock, resumed from the checkpoint by another feeder without a
//! delivery lost or doubled — even by two feeders at once — and skipped by the inbox unless
//! forced.

use std::time::Duration;

use runtime::replay::{self, Fed, ReplayRequest};
use tests::testkit::{Happened, RECORDING_LISTENER};
use tests::{TestDb, TestRuntime, both_backends, eventually, harness::WAIT};

both_backends!(an_interrupted_replay_resumes_in_log_order_at_its_rate_without_doubles);

async fn an_interrupted_replay_resumes_in_log_order_at_its_rate_without_doubles(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let workers = rt.start_workers().await;
    let mut events = Vec::new();
    for i in 0..8 {
        let event = rt
            .publish(&Happened {
                key: format!("replay-{i}-{}", uuid::Uuid::now_v7().simple()),
                flaky: false,
            })
            .await;
        events.push(event);
    }
    eventually(WAIT, "the first deliveries", || async {
        let open = rt
            .count(
                "SELECT COUNT(*) FROM keel_jobs WHERE queue = 'events' AND state <> 'completed'",
                &[],
            )
            .await;
        (open == 0).then_some(())
    })
    .await;
    let rtm = &rt.runtime;
    let request = ReplayRequest {
        listener: RECORDING_LISTENER.to_owned(),
        since: events[0].occurred_at,
        until: None,
        rate: 1,
        force: true,
    };
    let plan = replay::plan(rtm.db(), rtm.registry(), &request)
        .await
        .unwrap();
    assert_eq!((plan.events, plan.already_processed), (8, 8));

    // The first feeder schedules what fits in its lookahead at one a second, then stops.
    let first = replay::start(rtm.db(), rtm.time(), rtm.registry(), &request)
        .await
        .unwrap();
    assert!(!first.resumed);
    let mut fed = 0;
    loop {
        match rtm.feed_replay(&first.id).await.unwrap() {
            Fed::More(n) => fed += n,
            // Other tests' transactions on the same server, in flight when it began.
            Fed::Settling => tokio::time::sleep(Duration::from_millis(20)).await,
            Fed::Ahead => break,
            Fed::Done => panic!("eight events at one a second cannot fit in the lookahead"),
        }
    }
    assert!(
        (1..8).contains(&fed),
        "fed {fed} before the lookahead was full"
    );

    // Another feeder resumes the same replay from its checkpoint; two feed at once.
    let again = replay::start(rtm.db(), rtm.time(), rtm.registry(), &request)
        .await
        .unwrap();
    assert!(again.resumed);
    assert_eq!(again.id, first.id);
    let id = first.id.clone();
    loop {
        rt.advance(Duration::from_secs(2));
        let (a, b) = tokio::join!(rtm.feed_replay(&id), rtm.feed_replay(&id));
        if a.unwrap() == Fed::Done || b.unwrap() == Fed::Done {
            break;
        }
    }
    let done = eventually(WAIT, "every replayed delivery", || async {
        rt.advance(Duration::from_secs(1));
        let p = replay::progress(rtm.db(), &id).await.unwrap();
        p.finished.then_some(p)
    })
    .await;
    assert_eq!(
        (done.enqueued, done.delivered, done.skipped, done.failed),
        (8, 8, 0, 0),
        "forced: each event ran once more, none twice"
    );
    for e in &events {
        let seen = rt
            .count(
                "SELECT COUNT(*) FROM testkit_seen WHERE listener = $1 AND event_id = $2",
                &[RECORDING_LISTENER, &e.id.to_string()],
            )
            .await;
        assert_eq!(seen, 2, "the first delivery and the forced one");
    }

    // One delivery per event, scheduled in log order, a second apart (a delivery deferred,
    // released or retried — a busy machine can cause it — has a later `run_at`: left out).
    let pattern = format!("%:{id}");
    let rows: Vec<(i64, i64, i32)> = sqlx::query_as(
        "SELECT e.position, j.run_at, CASE WHEN EXISTS (SELECT 1 FROM keel_job_attempts a \
         WHERE a.job_id = j.id AND a.outcome <> 'completed') THEN 0 ELSE 1 END AS untouched \
         FROM keel_jobs j JOIN keel_events e ON j.causation_id = e.id \
         WHERE j.job_type = $1 AND j.unique_key LIKE $2 ORDER BY e.position",
    )
    .bind(format!("listener:{RECORDING_LISTENER}"))
    .bind(pattern)
    .fetch_all(rt.db.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 8);
    let first_tries: Vec<&(i64, i64, i32)> = rows.iter().filter(|r| r.2 == 1).collect();
    assert!(first_tries.len() >= 2, "{rows:?}");
    for pair in first_tries.windows(2) {
        assert!(
            pair[1].1 - pair[0].1 >= 1000,
            "spaced by the rate: {rows:?}"
        );
    }

    // Not forced, the inbox skips them all.
    let unforced = ReplayRequest {
        force: false,
        rate: 100_000,
        ..request
    };
    let second = replay::start(rtm.db(), rtm.time(), rtm.registry(), &unforced)
        .await
        .unwrap();
    while rtm.feed_replay(&second.id).await.unwrap() != Fed::Done {}
    let skipped = eventually(WAIT, "the skips", || async {
        rt.advance(Duration::from_secs(1));
        let p = replay::progress(rtm.db(), &second.id).await.unwrap();
        p.finished.then_some(p)
    })
    .await;
    assert_eq!((skipped.delivered, skipped.skipped), (0, 8));
    workers.shutdown().await;
}
