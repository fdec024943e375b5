//! The CLI contract: usage errors exit 2, failures exit 1 with one clear line on stderr,
//! and a bad configuration is refused at start naming the key.

use std::process::Command;

use tests::TestDb;

const KEEL: &str = env!("CARGO_BIN_EXE_keel-under-test");

fn keel(args: &[&str], db: &TestDb, config: Option<&std::path::Path>) -> std::process::Output {
    let mut command = Command::new(KEEL);
    command
        .args(args)
        .env("KEEL_DATABASE_URL", db.url())
        .env_remove("KEEL_CONFIG")
        .env("RUST_LOG", "error");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command.output().unwrap()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    let db = TestDb::sqlite();
    let out = keel(&["frobnicate"], &db, None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn an_unknown_config_key_is_refused_with_its_name() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    std::fs::write(&config, "[queues.webhooks]\nconcurency = 4\n").unwrap();
    let out = keel(&["migrate"], &db, Some(&config));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("concurency"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn a_bad_duration_is_refused_saying_what_was_expected() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    std::fs::write(&config, "[workers]\ndead_after = \"soon\"\n").unwrap();
    let out = keel(&["migrate"], &db, Some(&config));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("expected a duration"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn migrate_then_queues_and_an_unknown_dead_letter() {
    let db = TestDb::sqlite();
    let out = keel(&["migrate"], &db, None);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = keel(&["queues", "--json"], &db, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let queues: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = queues
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["emails", "events", "imports", "webhooks"]);

    let out = keel(&["dead", "show", "no-such-job"], &db, None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("keel: error: ") && err.contains("no-such-job"),
        "{err}"
    );

    let out = keel(&["dead", "purge", "--all"], &db, None);
    assert_eq!(out.status.code(), Some(1), "purge needs --yes");
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));

    let out = keel(&["trace", "nothing-here"], &db, None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nothing is recorded"),
        "{}",
        stderr(&out)
    );
}
