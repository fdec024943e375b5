//! The transactional outbox: events commit with the caller's transaction, fan out to one
//! delivery per listener, survive a crash between commit and dispatch, and one listener's
//! failure never holds up or repeats another's.

use std::time::Duration;

use events::NewJob;
use events::outbox::OutboxExt;
use tests::harness::WAIT;
use tests::testkit::{
    FLAKY_LISTENER, Fanned, Happened, INLINE_DOWN, INLINE_LISTENER, Ignored, Plan,
    RECORDING_LISTENER, Run, listener_runs,
};
use tests::{TestDb, TestRuntime, both_backends, eventually};

fn happened(key: &str) -> Happened {
    Happened {
        key: key.to_owned(),
        flaky: false,
    }
}

async fn seen(rt: &TestRuntime, event_id: &str) -> i64 {
    rt.count(
        "SELECT COUNT(*) FROM testkit_seen WHERE event_id = $1",
        &[event_id],
    )
    .await
}

both_backends!(
    publishing_in_a_committed_transaction_stores_the_event_and_one_delivery_per_listener,
    a_rolled_back_transaction_publishes_nothing,
    an_event_committed_before_a_crash_is_still_delivered_after_restart,
    each_listener_gets_its_own_delivery_so_a_failing_one_never_blocks_or_repeats_another,
    an_inline_listener_writes_in_the_publishers_transaction_and_names_the_event_as_cause,
    a_failing_inline_listener_is_rolled_back_and_its_delivery_queued_instead,
    a_batch_stores_every_event_and_each_delivery_names_its_own_event_as_cause,
    a_failing_inline_listener_on_a_batch_is_rolled_back_and_every_delivery_queued,
);

async fn publishing_in_a_committed_transaction_stores_the_event_and_one_delivery_per_listener(
    db: TestDb,
) {
    let rt = TestRuntime::new(&db).await;
    let event = rt.publish(&happened("a")).await;
    let id = event.id.to_string();
    assert_eq!(
        rt.count("SELECT COUNT(*) FROM keel_events WHERE id = $1", &[&id])
            .await,
        1
    );
    let deliveries = sqlx::query_scalar::<_, String>(
        "SELECT job_type FROM keel_jobs WHERE causation_id = $1 AND queue = 'events' \
         AND state = 'available' ORDER BY job_type",
    )
    .bind(&id)
    .fetch_all(rt.db.pool())
    .await
    .unwrap();
    assert_eq!(
        deliveries,
        vec![
            format!("listener:{FLAKY_LISTENER}"),
            format!("listener:{RECORDING_LISTENER}")
        ]
    );

    // An event nobody consumes is stored, and fans out to nothing.
    let ignored = rt.publish(&Ignored { key: "b".into() }).await;
    let ignored_id = ignored.id.to_string();
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM keel_events WHERE id = $1",
            &[&ignored_id]
        )
        .await,
        1
    );
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM keel_jobs WHERE causation_id = $1",
            &[&ignored_id]
        )
        .await,
        0
    );

    let workers = rt.start_workers().await;
    eventually(WAIT, "both listeners to handle the event", || async {
        (seen(&rt, &id).await == 2).then_some(())
    })
    .await;
    workers.shutdown().await;
}

async fn a_rolled_back_transaction_publishes_nothing(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let mut tx = rt.db.begin().await.unwrap();
    rt.runtime
        .outbox()
        .publish(&mut tx, &happened("rolled back"))
        .await
        .unwrap();
    rt.runtime
        .jobs()
        .enqueue(&mut tx, NewJob::of(&Run(Plan::new("rolled back"))).unwrap())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(rt.count("SELECT COUNT(*) FROM keel_events", &[]).await, 0);
    assert_eq!(rt.count("SELECT COUNT(*) FROM keel_jobs", &[]).await, 0);
}

async fn an_event_committed_before_a_crash_is_still_delivered_after_restart(db: TestDb) {
    // Commit with no workers running, then the process "dies".
    let first = TestRuntime::new(&db).await;
    let event = first.publish(&happened("crash")).await;
    first.db.pool().close().await;
    drop(first);

    let second = TestRuntime::new(&db).await;
    let workers = second.start_workers().await;
    let id = event.id.to_string();
    eventually(
        WAIT,
        "both listeners to handle the event after restart",
        || async { (seen(&second, &id).await == 2).then_some(()) },
    )
    .await;
    workers.shutdown().await;
}

async fn each_listener_gets_its_own_delivery_so_a_failing_one_never_blocks_or_repeats_another(
    db: TestDb,
) {
    let rt = TestRuntime::new(&db).await;
    let workers = rt.start_workers().await;
    let event = rt
        .publish(&Happened {
            key: "flaky".into(),
            flaky: true,
        })
        .await;
    let id = event.id.to_string();
    let delivery = |listener: &'static str| {
        let rt = &rt;
        let id = id.clone();
        async move {
            let job: String = sqlx::query_scalar(
                "SELECT id FROM keel_jobs WHERE causation_id = $1 AND job_type = $2",
            )
            .bind(&id)
            .bind(format!("listener:{listener}"))
            .fetch_one(rt.db.pool())
            .await
            .unwrap();
            uuid::Uuid::parse_str(&job).unwrap()
        }
    };
    let recording = delivery(RECORDING_LISTENER).await;
    let flaky = delivery(FLAKY_LISTENER).await;

    let done = rt.wait_for_state(recording, "completed").await;
    assert_eq!(done.attempt, 1);
    let failed = rt.wait_for_attempt(flaky, "retrying", 1).await;
    assert_eq!(
        failed.last_error.as_deref(),
        Some("the flaky listener is down")
    );

    // The flaky listener retries on its own schedule; the other one never runs again.
    rt.advance(Duration::from_secs(10));
    rt.wait_for_attempt(flaky, "retrying", 2).await;
    assert_eq!(listener_runs(RECORDING_LISTENER, &id), 1);
    assert_eq!(listener_runs(FLAKY_LISTENER, &id), 2);
    assert_eq!(
        rt.count(
            "SELECT COUNT(*) FROM testkit_seen WHERE event_id = $1 AND listener = $2",
            &[&id, RECORDING_LISTENER]
        )
        .await,
        1
    );
    workers.shutdown().await;
}

/// (job type, state, causation id) of every job the chain `correlation` holds, sorted.
async fn jobs_of_chain(rt: &TestRuntime, correlation: &str) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT job_type, state, causation_id FROM keel_jobs WHERE correlation_id = $1 \
         ORDER BY job_type",
    )
    .bind(correlation)
    .fetch_all(rt.db.pool())
    .await
    .unwrap()
}

async fn an_inline_listener_writes_in_the_publishers_transaction_and_names_the_event_as_cause(
    db: TestDb,
) {
    let rt = TestRuntime::new(&db).await;
    let event = rt.publish(&Fanned { key: "in".into() }).await;
    let id = event.id.to_string();
    // Committed with the event: the listener's row and the job it enqueued — and no
    // listener delivery job, since the listener already ran.
    assert_eq!(seen(&rt, &id).await, 1);
    assert_eq!(listener_runs(INLINE_LISTENER, &id), 1);
    let jobs = jobs_of_chain(&rt, event.correlation_id.as_str()).await;
    assert_eq!(
        jobs,
        vec![("testkit.run".to_owned(), "available".to_owned(), id.clone())],
        "the fanned-out job names the event as its cause"
    );

    // Rolled back with the publisher: nothing of the listener's remains.
    let mut tx = rt.db.begin().await.unwrap();
    let gone = rt
        .runtime
        .outbox()
        .publish(&mut tx, &Fanned { key: "gone".into() })
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(listener_runs(INLINE_LISTENER, &gone.id.to_string()), 1);
    assert_eq!(seen(&rt, &gone.id.to_string()).await, 0);
    assert!(
        jobs_of_chain(&rt, gone.correlation_id.as_str())
            .await
            .is_empty()
    );
    assert_eq!(rt.count("SELECT COUNT(*) FROM keel_jobs", &[]).await, 1);
}

async fn a_failing_inline_listener_is_rolled_back_and_its_delivery_queued_instead(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    rt.kit.set_flag(INLINE_DOWN).await;
    // The publisher's transaction goes on and commits despite the listener's failure.
    let event = rt.publish(&Fanned { key: "down".into() }).await;
    let id = event.id.to_string();
    assert_eq!(listener_runs(INLINE_LISTENER, &id), 1);
    assert_eq!(seen(&rt, &id).await, 0, "its writes were rolled back");
    assert_eq!(
        jobs_of_chain(&rt, event.correlation_id.as_str()).await,
        vec![(
            format!("listener:{INLINE_LISTENER}"),
            "available".to_owned(),
            id.clone()
        )],
        "only a queued delivery, committed with the event"
    );

    // The queued delivery runs it again once it is back, exactly once in effect.
    rt.kit.clear_flag(INLINE_DOWN).await;
    let workers = rt.start_workers().await;
    eventually(WAIT, "the queued delivery to run the listener", || async {
        (seen(&rt, &id).await == 1).then_some(())
    })
    .await;
    eventually(WAIT, "the delivery and its job to complete", || async {
        let jobs = jobs_of_chain(&rt, event.correlation_id.as_str()).await;
        (jobs.len() == 2 && jobs.iter().all(|(_, state, _)| state == "completed")).then_some(jobs)
    })
    .await;
    assert_eq!(listener_runs(INLINE_LISTENER, &id), 2);
    workers.shutdown().await;
}

/// Publishes `events` as one batch in one committed transaction.
async fn publish_batch<E: events::Event>(
    rt: &TestRuntime,
    events: &[E],
) -> Vec<events::EventEnvelope> {
    let mut tx = rt.db.begin().await.unwrap();
    let published = rt
        .runtime
        .outbox()
        .publish_many(&mut tx, events)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    published
}

async fn a_batch_stores_every_event_and_each_delivery_names_its_own_event_as_cause(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    // More than one multi-row statement's worth, queued listeners.
    let batch: Vec<Happened> = (0..120).map(|i| happened(&format!("h{i}"))).collect();
    let published = publish_batch(&rt, &batch).await;
    assert_eq!(published.len(), 120);
    for event in [&published[0], &published[77], &published[119]] {
        let id = event.id.to_string();
        assert_eq!(
            rt.count("SELECT COUNT(*) FROM keel_events WHERE id = $1", &[&id])
                .await,
            1
        );
        assert_eq!(
            rt.count(
                "SELECT COUNT(*) FROM keel_jobs WHERE causation_id = $1 AND queue = 'events'",
                &[&id]
            )
            .await,
            2,
            "one delivery per listener, caused by its own event"
        );
    }
    assert_eq!(rt.count("SELECT COUNT(*) FROM keel_events", &[]).await, 120);
    assert_eq!(rt.count("SELECT COUNT(*) FROM keel_jobs", &[]).await, 240);

    // An inline listener takes the whole batch in the transaction; each job it enqueues
    // names its own event.
    let fanned: Vec<Fanned> = (0..3)
        .map(|i| Fanned {
            key: format!("f{i}"),
        })
        .collect();
    let published = publish_batch(&rt, &fanned).await;
    for event in &published {
        let id = event.id.to_string();
        assert_eq!(seen(&rt, &id).await, 1);
        assert_eq!(listener_runs(INLINE_LISTENER, &id), 1);
        assert_eq!(
            rt.count(
                "SELECT COUNT(*) FROM keel_jobs WHERE causation_id = $1 AND job_type = 'testkit.run'",
                &[&id]
            )
            .await,
            1
        );
    }
    assert_eq!(rt.count("SELECT COUNT(*) FROM keel_jobs", &[]).await, 243);
}

async fn a_failing_inline_listener_on_a_batch_is_rolled_back_and_every_delivery_queued(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    rt.kit.set_flag(INLINE_DOWN).await;
    let fanned: Vec<Fanned> = (0..3)
        .map(|i| Fanned {
            key: format!("d{i}"),
        })
        .collect();
    let published = publish_batch(&rt, &fanned).await;
    for event in &published {
        let id = event.id.to_string();
        assert_eq!(
            seen(&rt, &id).await,
            0,
            "the batch's writes were rolled back"
        );
        assert_eq!(
            jobs_of_chain(&rt, event.correlation_id.as_str())
                .await
                .iter()
                .filter(|(job_type, _, cause)| {
                    *job_type == format!("listener:{INLINE_LISTENER}") && *cause == id
                })
                .count(),
            1,
            "a queued delivery of its own"
        );
    }
    rt.kit.clear_flag(INLINE_DOWN).await;
    let workers = rt.start_workers().await;
    for event in &published {
        let id = event.id.to_string();
        eventually(WAIT, "each queued delivery to run the listener", || async {
            (seen(&rt, &id).await == 1).then_some(())
        })
        .await;
    }
    workers.shutdown().await;
}
