//! Scheduled jobs: one job per tick however many replicas fire at once, ticks read in the
//! schedule's time zone on the database's clock, no burst after downtime (`skip` drops the
//! missed ticks, `run_once` makes up for them once), pausing, and the state `keel schedules`
//! shows (next run, last run, the last job's outcome).

use std::collections::BTreeMap;
use std::time::Duration;

use events::{Missed, Schedule};
use runtime::schedule::ScheduleOverride;
use tests::poll::eventually;
use tests::testkit::{Plan, Run};
use tests::{TestDb, TestRuntime, both_backends};

use events::Clock;

const WAIT: Duration = Duration::from_secs(20);

both_backends!(
    replicas_firing_together_enqueue_exactly_one_job_per_tick,
    missed_ticks_are_skipped_or_run_once_never_replayed_as_a_burst,
    a_paused_schedule_enqueues_nothing_and_a_changed_expression_starts_afresh,
    the_status_shows_next_and_last_run_and_the_last_jobs_outcome,
    a_schedule_for_an_unknown_job_type_or_a_bad_zone_is_refused_naming_the_key,
);

const NAME: &str = "testkit.every_minute";
const MINUTE: Duration = Duration::from_secs(60);

/// The testkit module with a schedule of `testkit.run` every minute (on the minute).
fn schedule(missed: Missed) -> Schedule {
    let payload = serde_json::to_value(Run(Plan::new("tick"))).unwrap();
    Schedule::new(NAME, "* * * * *", "testkit.run")
        .with_payload(payload)
        .when_missed(missed)
}

fn install(rt: &TestRuntime, missed: Missed, overrides: &BTreeMap<String, ScheduleOverride>) {
    let mut module = rt.module();
    module.schedules = vec![schedule(missed)];
    rt.runtime
        .configure_schedules(&[&module], overrides)
        .unwrap();
}

async fn jobs(rt: &TestRuntime) -> i64 {
    rt.count(
        "SELECT COUNT(*) FROM keel_jobs WHERE job_type = 'testkit.run' AND unique_key LIKE 'schedule:%'",
        &[],
    )
    .await
}

async fn replicas_firing_together_enqueue_exactly_one_job_per_tick(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let time = rt.shared_clock();
    let mut replicas = vec![];
    for _ in 0..3 {
        let replica = TestRuntime::builder(&db)
            .clock(time.clone(), Some(time.clone()))
            .build()
            .await;
        install(&replica, Missed::Skip, &BTreeMap::new());
        replicas.push(replica);
    }
    install(&rt, Missed::Skip, &BTreeMap::new());
    // The first pass only learns the next tick: nothing is due yet.
    rt.runtime.fire_schedules_now().await.unwrap();
    assert_eq!(jobs(&rt).await, 0);
    for tick in 1..=4 {
        rt.advance(MINUTE);
        let passes = replicas.iter().map(|r| r.runtime.fire_schedules_now());
        for result in futures::future::join_all(passes).await {
            result.unwrap();
        }
        // And again, later within the same minute: still the same tick.
        rt.advance(Duration::from_secs(1));
        rt.runtime.fire_schedules_now().await.unwrap();
        assert_eq!(jobs(&rt).await, tick, "one job per tick, after tick {tick}");
    }
    let keys = rt
        .count(
            "SELECT COUNT(DISTINCT unique_key) FROM keel_jobs WHERE unique_key LIKE 'schedule:%'",
            &[],
        )
        .await;
    assert_eq!(keys, 4);
}

async fn missed_ticks_are_skipped_or_run_once_never_replayed_as_a_burst(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let hourly = |missed: Missed| {
        BTreeMap::from([(
            NAME.to_owned(),
            ScheduleOverride {
                cron: Some("0 * * * *".to_owned()),
                missed: Some(missed),
                ..ScheduleOverride::default()
            },
        )])
    };
    const HALF_HOUR: Duration = Duration::from_secs(1800);
    const DAY: Duration = Duration::from_secs(24 * 3600);
    install(&rt, Missed::Skip, &hourly(Missed::Skip));
    rt.runtime.fire_schedules_now().await.unwrap();
    // A day of downtime: 24 ticks missed, the latest half an hour ago — none enqueued.
    rt.advance(DAY + HALF_HOUR);
    rt.runtime.fire_schedules_now().await.unwrap();
    assert_eq!(jobs(&rt).await, 0, "skip: missed ticks are dropped");
    // ...and the schedule goes on at its next tick.
    rt.advance(HALF_HOUR);
    rt.runtime.fire_schedules_now().await.unwrap();
    assert_eq!(jobs(&rt).await, 1);

    install(&rt, Missed::Skip, &hourly(Missed::RunOnce));
    rt.advance(DAY + HALF_HOUR);
    rt.runtime.fire_schedules_now().await.unwrap();
    rt.runtime.fire_schedules_now().await.unwrap();
    assert_eq!(
        jobs(&rt).await,
        2,
        "run_once: one job for the whole day missed"
    );
    let status = rt.runtime.schedule_statuses().await.unwrap();
    assert_eq!(
        status[0].last_run_at,
        Some(rt.clock().now() - HALF_HOUR),
        "the job stands for the latest tick missed"
    );
    rt.advance(HALF_HOUR);
    rt.runtime.fire_schedules_now().await.unwrap();
    assert_eq!(jobs(&rt).await, 3);
}

async fn a_paused_schedule_enqueues_nothing_and_a_changed_expression_starts_afresh(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    install(&rt, Missed::RunOnce, &BTreeMap::new());
    rt.runtime.fire_schedules_now().await.unwrap();
    let paused = BTreeMap::from([(
        NAME.to_owned(),
        ScheduleOverride {
            paused: Some(true),
            ..ScheduleOverride::default()
        },
    )]);
    install(&rt, Missed::RunOnce, &paused);
    for _ in 0..3 {
        rt.advance(MINUTE);
        rt.runtime.fire_schedules_now().await.unwrap();
    }
    assert_eq!(jobs(&rt).await, 0, "paused");
    let status = rt.runtime.schedule_statuses().await.unwrap();
    assert!(
        status[0].paused && status[0].next_run_at.is_none(),
        "{status:?}"
    );

    // Hourly at :30 in Kolkata (UTC+5:30), i.e. on the hour UTC.
    let hourly = BTreeMap::from([(
        NAME.to_owned(),
        ScheduleOverride {
            cron: Some("30 * * * *".to_owned()),
            zone: Some("Asia/Kolkata".to_owned()),
            ..ScheduleOverride::default()
        },
    )]);
    install(&rt, Missed::RunOnce, &hourly);
    rt.runtime.fire_schedules_now().await.unwrap();
    assert_eq!(jobs(&rt).await, 0, "a new expression is not due at once");
    let status = rt.runtime.schedule_statuses().await.unwrap();
    let next = status[0].next_run_at.unwrap();
    assert_eq!(
        next.format("%M:%S").to_string(),
        "00:00",
        "the next tick is on the hour UTC: {next}"
    );
    rt.advance(Duration::from_secs(3600));
    rt.runtime.fire_schedules_now().await.unwrap();
    assert_eq!(jobs(&rt).await, 1);
}

async fn the_status_shows_next_and_last_run_and_the_last_jobs_outcome(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    install(&rt, Missed::Skip, &BTreeMap::new());
    let start = rt.clock().now();
    rt.runtime.fire_schedules_now().await.unwrap();
    let before = rt.runtime.schedule_statuses().await.unwrap();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].name, NAME);
    assert_eq!(before[0].next_run_at, Some(start + MINUTE));
    assert_eq!(
        (before[0].last_run_at, before[0].last_outcome.as_deref()),
        (None, None)
    );

    rt.advance(MINUTE + Duration::from_secs(5));
    rt.runtime.fire_schedules_now().await.unwrap();
    let workers = rt.start_workers().await;
    let done = eventually(WAIT, "the scheduled job completes", || async {
        let s = rt.runtime.schedule_statuses().await.unwrap();
        (s[0].last_outcome.as_deref() == Some("completed")).then_some(s)
    })
    .await;
    assert_eq!(
        done[0].last_run_at,
        Some(start + MINUTE),
        "the tick it ran for"
    );
    assert_eq!(done[0].next_run_at, Some(start + MINUTE * 2));
    assert!(done[0].last_job_id.is_some());
    workers.shutdown().await;
}

async fn a_schedule_for_an_unknown_job_type_or_a_bad_zone_is_refused_naming_the_key(db: TestDb) {
    let rt = TestRuntime::new(&db).await;
    let module = rt.module();
    let added = |o: ScheduleOverride| BTreeMap::from([("nightly".to_owned(), o)]);
    let unknown = rt
        .runtime
        .configure_schedules(
            &[&module],
            &added(ScheduleOverride {
                cron: Some("0 2 * * *".into()),
                job_type: Some("testkit.nope".into()),
                ..ScheduleOverride::default()
            }),
        )
        .unwrap_err()
        .to_string();
    assert!(
        unknown.contains("schedules.nightly.job_type") && unknown.contains("testkit.nope"),
        "{unknown}"
    );
    let incomplete = rt
        .runtime
        .configure_schedules(
            &[&module],
            &added(ScheduleOverride {
                job_type: Some("testkit.run".into()),
                ..ScheduleOverride::default()
            }),
        )
        .unwrap_err()
        .to_string();
    assert!(
        incomplete.contains("schedules.nightly") && incomplete.contains("`cron`"),
        "{incomplete}"
    );
    let zone = rt
        .runtime
        .configure_schedules(
            &[&module],
            &added(ScheduleOverride {
                cron: Some("0 2 * * *".into()),
                zone: Some("Europe/Atlantis".into()),
                job_type: Some("testkit.run".into()),
                ..ScheduleOverride::default()
            }),
        )
        .unwrap_err()
        .to_string();
    assert!(
        zone.contains("schedules.nightly") && zone.contains("Europe/Atlantis"),
        "{zone}"
    );
    // A valid addition is in force.
    rt.runtime
        .configure_schedules(
            &[&module],
            &added(ScheduleOverride {
                cron: Some("0 2 * * *".into()),
                job_type: Some("testkit.run".into()),
                ..ScheduleOverride::default()
            }),
        )
        .unwrap();
    let list = rt.runtime.schedules();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].source.as_str(), list[0].queue.as_str()),
        ("keel.toml", "testkit")
    );
}
