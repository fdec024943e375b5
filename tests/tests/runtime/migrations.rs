//! Migrations: idempotent, kept in `keel_migrations` beside an application's own
//! `_sqlx_migrations`, and safe when several replicas start at once.

use sqlx::Row;
use tests::{TestDb, TestRuntime, both_backends, postgres_only};

both_backends!(migrations_are_idempotent_and_leave_an_applications_sqlx_table_alone);
postgres_only!(concurrent_migrations_from_several_replicas_are_safe);

async fn migrations_are_idempotent_and_leave_an_applications_sqlx_table_alone(db: TestDb) {
    let rt = TestRuntime::builder(&db).without_migrations().build().await;
    rt.execute(
        "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL)",
        &[],
    )
    .await;
    rt.execute(
        "INSERT INTO _sqlx_migrations (version, description) VALUES (1, 'the app''s own')",
        &[],
    )
    .await;

    let module = rt.module();
    let applied = rt.runtime.migrate(&[&module]).await.unwrap();
    let again = rt.runtime.migrate(&[&module]).await.unwrap();
    assert_eq!(applied, again);
    assert_eq!(
        rt.count("SELECT COUNT(*) FROM keel_migrations", &[]).await,
        i64::try_from(applied).unwrap()
    );
    // The testkit's tables exist and work.
    assert_eq!(rt.count("SELECT COUNT(*) FROM testkit_runs", &[]).await, 0);

    let rows = sqlx::query("SELECT version, description FROM _sqlx_migrations")
        .fetch_all(rt.db.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the app's own migrations table is untouched");
    assert_eq!(rows[0].try_get::<i64, _>("version").unwrap(), 1);
    assert_eq!(
        rows[0].try_get::<String, _>("description").unwrap(),
        "the app's own"
    );

    // A fresh runtime on the migrated database finds nothing to do and does not fail.
    let second = TestRuntime::new(&db).await;
    assert_eq!(
        second
            .count("SELECT COUNT(*) FROM keel_migrations", &[])
            .await,
        i64::try_from(applied).unwrap()
    );
}

async fn concurrent_migrations_from_several_replicas_are_safe(db: TestDb) {
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(TestRuntime::builder(&db).without_migrations().build().await);
    }
    let runs = replicas.iter().map(|rt| async move {
        let module = rt.module();
        rt.runtime.migrate(&[&module]).await
    });
    let results = futures::future::join_all(runs).await;
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    let applied = *results[0].as_ref().unwrap();
    assert_eq!(
        replicas[0]
            .count("SELECT COUNT(*) FROM keel_migrations", &[])
            .await,
        i64::try_from(applied).unwrap()
    );
}
