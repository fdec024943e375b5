//! Correlation and causation: a chain keeps its correlation id from enqueue to listener,
//! and each step names the one before it as its cause.

use events::TraceContext;
use events::context::CorrelationId;
use sqlx::Row;
use tests::harness::WAIT;
use tests::testkit::{Happened, Plan, RECORDING_LISTENER};
use tests::{TestDb, TestRuntime, both_backends, eventually};
use uuid::Uuid;

both_backends!(
    a_chain_keeps_its_correlation_id_and_each_step_names_its_cause,
    an_event_published_inside_a_trace_scope_carries_its_ids,
);

async fn a_chain_keeps_its_correlation_id_and_each_step_names_its_cause(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let trace = TraceContext {
        correlation_id: CorrelationId::parse("chain-under-test").unwrap(),
        causation_id: None,
    };
    let id = trace.scope(rt.enqueue(Plan::new("chain").publish())).await;
    let job = rt.job(id).await;
    assert_eq!(job.correlation_id, "chain-under-test");
    assert_eq!(job.causation_id, None);

    let workers = rt.start_workers().await;
    rt.wait_for_state(id, "completed").await;

    // The handler ran inside the job's context: same chain, the job as cause.
    let run =
        sqlx::query("SELECT correlation_id, causation_id FROM testkit_runs WHERE job_id = $1")
            .bind(id.to_string())
            .fetch_one(rt.db.pool())
            .await
            .unwrap();
    assert_eq!(
        run.try_get::<String, _>("correlation_id").unwrap(),
        "chain-under-test"
    );
    assert_eq!(
        run.try_get::<Option<String>, _>("causation_id").unwrap(),
        Some(id.to_string())
    );

    // The event it published: same chain, caused by the job.
    let event = sqlx::query("SELECT id, correlation_id, causation_id FROM keel_events")
        .fetch_one(rt.db.pool())
        .await
        .unwrap();
    let event_id: String = event.try_get("id").unwrap();
    assert_eq!(
        event.try_get::<String, _>("correlation_id").unwrap(),
        "chain-under-test"
    );
    assert_eq!(
        event.try_get::<Option<String>, _>("causation_id").unwrap(),
        Some(id.to_string())
    );

    // Its listener deliveries: same chain, caused by the event.
    let deliveries =
        sqlx::query("SELECT correlation_id, causation_id FROM keel_jobs WHERE queue = 'events'")
            .fetch_all(rt.db.pool())
            .await
            .unwrap();
    assert_eq!(deliveries.len(), 2);
    for d in &deliveries {
        assert_eq!(
            d.try_get::<String, _>("correlation_id").unwrap(),
            "chain-under-test"
        );
        assert_eq!(
            d.try_get::<Option<String>, _>("causation_id").unwrap(),
            Some(event_id.clone())
        );
    }

    // And the listener saw the envelope with both ids.
    let seen = eventually(WAIT, "the listener to record the event", || async {
        sqlx::query("SELECT correlation_id, causation_id FROM testkit_seen WHERE listener = $1")
            .bind(RECORDING_LISTENER)
            .fetch_optional(rt.db.pool())
            .await
            .unwrap()
    })
    .await;
    assert_eq!(
        seen.try_get::<String, _>("correlation_id").unwrap(),
        "chain-under-test"
    );
    assert_eq!(
        seen.try_get::<Option<String>, _>("causation_id").unwrap(),
        Some(id.to_string())
    );
    workers.shutdown().await;
}

async fn an_event_published_inside_a_trace_scope_carries_its_ids(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let cause = Uuid::now_v7();
    let trace = TraceContext {
        correlation_id: CorrelationId::parse("request-42").unwrap(),
        causation_id: Some(cause),
    };
    let event = trace
        .scope(rt.publish(&Happened {
            key: "scoped".into(),
            flaky: false,
        }))
        .await;
    assert_eq!(event.correlation_id.as_str(), "request-42");
    assert_eq!(event.causation_id, Some(cause));

    // Outside any scope, a new chain starts.
    let loose = rt
        .publish(&Happened {
            key: "loose".into(),
            flaky: false,
        })
        .await;
    assert_ne!(loose.correlation_id.as_str(), "request-42");
    assert_eq!(loose.causation_id, None);
}
