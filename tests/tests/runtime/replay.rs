//! Replays underneath `keel events replay` and backfills: deliveries in log order, spaced by
//! the rate on the database's clock, resumed from the checkpoint by another feeder without a
//! delivery lost or doubled — even by two feeders at once — and skipped by the inbox unless
//! forced; and a listener declaring a start point in the past, fed it once by one of two
//! replicas.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use events::{Clock, DbConn, Event, EventEnvelope, EventKey, JobError, Listener};
use runtime::Runtime;
use runtime::replay::{self, Fed, ReplayRequest};
use tests::testkit::{Happened, RECORDING_LISTENER};
use tests::{Kit, RecordingAlerts, TestDb, TestRuntime, both_backends, eventually, harness::WAIT};

both_backends!(
    an_interrupted_replay_resumes_in_log_order_at_its_rate_without_doubles,
    a_listener_that_starts_in_the_past_is_fed_it_once_by_one_of_two_replicas,
);

/// A listener added after the events it needs, declaring where it starts.
const LATE: &str = "testkit.on_happened_late";

#[derive(Debug)]
struct Late {
    since: DateTime<Utc>,
}

#[async_trait::async_trait]
impl Listener for Late {
    fn name(&self) -> &'static str {
        LATE
    }

    fn consumes(&self) -> Vec<EventKey> {
        vec![Happened::key()]
    }

    async fn handle(&self, tx: &mut DbConn, event: &EventEnvelope) -> Result<(), JobError> {
        sqlx::query(
            "INSERT INTO testkit_seen (listener, event_id, key, correlation_id) \
             VALUES ($1, $2, '', $3)",
        )
        .bind(LATE)
        .bind(event.id.to_string())
        .bind(event.correlation_id.as_str())
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    fn backfill_from(&self) -> Option<DateTime<Utc>> {
        Some(self.since)
    }
}

async fn a_listener_that_starts_in_the_past_is_fed_it_once_by_one_of_two_replicas(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let mut past = Vec::new();
    for i in 0..3 {
        let event = rt
            .publish(&Happened {
                key: format!("past-{i}"),
                flaky: false,
            })
            .await;
        past.push(event.id.to_string());
    }
    let since = rt.clock().now() - chrono::Duration::seconds(60);
    let replica = || async {
        let replica = Runtime::new(
            rt.db.clone(),
            rt.url(),
            rt.shared_clock(),
            tests::harness::test_config(),
            Arc::new(RecordingAlerts::default()),
        );
        let mut module = Kit::new(rt.db.clone(), replica.outbox(), replica.jobs()).module();
        module.listeners.push(Arc::new(Late { since }));
        replica.install(&[&module]).unwrap();
        let workers = replica.start_workers(None).await.unwrap();
        (replica, workers)
    };
    let (a, a_workers) = replica().await;
    let (b, b_workers) = replica().await;
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM keel_replays WHERE kind = 'backfill'",
            &[]
        )
        .await,
        1,
        "one backfill, whatever the number of replicas"
    );
    let seen = |id: String| {
        let rt = &rt;
        async move {
            rt.count(
                "SELECT COUNT(*) FROM testkit_seen WHERE listener = $1 AND event_id = $2",
                &[LATE, &id],
            )
            .await
        }
    };
    eventually(WAIT, "the past to reach the late listener", || async {
        rt.advance(Duration::from_secs(1));
        a.wake_all();
        b.wake_all();
        let mut all = true;
        for id in &past {
            all &= seen(id.clone()).await >= 1;
        }
        all.then_some(())
    })
    .await;
    for id in &past {
        assert_eq!(seen(id.clone()).await, 1, "each past event once");
    }
    a_workers.shutdown().await;
    b_workers.shutdown().await;
}

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
