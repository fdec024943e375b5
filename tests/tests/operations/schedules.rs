//! Scheduled jobs through the real binary: `[schedules.<name>]` mistakes are refused at
//! start naming the key, and `keel schedules` lists the modules' schedules with the
//! configuration's overrides and additions.

use std::process::Command;

use tests::TestDb;

const KEEL: &str = env!("CARGO_BIN_EXE_keel-under-test");

fn keel(args: &[&str], db: &TestDb, config: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(KEEL)
        .args(args)
        .arg("--config")
        .arg(&path)
        .env("KEEL_DATABASE_URL", db.url())
        .env_remove("KEEL_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn schedule_mistakes_are_refused_at_start_naming_the_key() {
    let db = TestDb::sqlite();
    for (config, key) in [
        ("[schedules.nightly]\ncorn = \"0 2 * * *\"\n", "corn"),
        (
            "[schedules.nightly]\ncron = \"0 25 * * *\"\njob_type = \"billing.mark_overdue_invoices\"\n",
            "schedules.nightly.cron",
        ),
        (
            "[schedules.nightly]\ncron = \"0 2 * * *\"\nzone = \"Mars/Olympus\"\n",
            "schedules.nightly.zone",
        ),
        ("[schedules.nightly]\nmissed = \"later\"\n", "run_once"),
        (
            "[schedules.nightly]\ncron = \"0 2 * * *\"\njob_type = \"billing.nothing\"\n",
            "schedules.nightly.job_type",
        ),
        ("[schedules.nightly]\npaused = true\n", "schedules.nightly"),
        (
            "[billing]\noverdue_after = \"0s\"\n",
            "billing.overdue_after",
        ),
    ] {
        let (code, _, err) = keel(&["migrate"], &db, config);
        assert_eq!(code, Some(1), "{config}: {err}");
        assert!(err.contains(key), "{config}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn keel_schedules_lists_declared_overridden_and_added_schedules() {
    let db = TestDb::sqlite();
    let config = "\
[schedules.\"billing.mark_overdue_invoices\"]
paused = true

[schedules.sweep]
cron = \"*/15 * * * *\"
zone = \"Europe/Berlin\"
job_type = \"billing.mark_overdue_invoices\"
missed = \"skip\"
payload = {}
";
    let (code, _, err) = keel(&["migrate"], &db, config);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = keel(&["schedules", "--json"], &db, config);
    assert_eq!(code, Some(0), "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{out}");
    let overdue = &list[0];
    assert_eq!(overdue["name"], "billing.mark_overdue_invoices");
    assert_eq!(overdue["cron"], "0 3 * * *");
    assert_eq!(overdue["source"], "billing");
    assert_eq!(overdue["missed"], "run_once");
    assert_eq!(overdue["paused"], true);
    assert!(overdue["next_run_at"].is_null(), "{overdue}");
    let sweep = &list[1];
    assert_eq!(
        (
            &sweep["name"],
            &sweep["zone"],
            &sweep["queue"],
            &sweep["source"]
        ),
        (
            &serde_json::json!("sweep"),
            &serde_json::json!("Europe/Berlin"),
            &serde_json::json!("events"),
            &serde_json::json!("keel.toml")
        )
    );
    let next = sweep["next_run_at"].as_str().unwrap();
    let minute: u32 = next[14..16].parse().unwrap();
    assert_eq!(minute % 15, 0, "{next}");
    let (code, table, err) = keel(&["schedules"], &db, config);
    assert_eq!(code, Some(0), "{err}");
    assert!(table.starts_with("SCHEDULE"), "{table}");
    assert!(
        table.contains("paused") && table.contains("*/15 * * * *"),
        "{table}"
    );
}
