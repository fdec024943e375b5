//! Splitting is configuration, so mistakes in it are refused at start, naming what is wrong.

use std::process::Command;

use crate::KEEL;

/// Runs `keel --config <file with text> <args>` in a folder of its own.
fn keel(toml: &str, args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    keel_in(&dir, toml, args)
}

/// As [`keel`], in `dir` (its database is `dir/keel.db`).
fn keel_in(dir: &tempfile::TempDir, toml: &str, args: &[&str]) -> (i32, String) {
    let config = dir.path().join("keel.toml");
    std::fs::write(&config, toml).unwrap();
    let db = format!("sqlite:{}/keel.db", dir.path().display());
    let out = Command::new(KEEL)
        .arg("--config")
        .arg(&config)
        .arg("--database-url")
        .arg(&db)
        .args(args)
        .current_dir(dir.path())
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_module_is_a_usage_error() {
    let (code, err) = keel("", &["serve", "--modules", "records,payments"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("payments") && err.contains("records, billing, notifications"),
        "{err}"
    );
}

#[test]
fn a_module_whose_ports_are_nowhere_is_refused_naming_the_key() {
    let (code, err) = keel("[modules]\nenabled = [\"notifications\"]\n", &["migrate"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("[modules.remote] billing"), "{err}");
}

#[test]
fn bad_broker_and_remote_values_are_refused_naming_the_key() {
    let (code, err) = keel("[broker]\nurl = \"http://127.0.0.1:4222\"\n", &["migrate"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("broker.url"), "{err}");
    let (code, err) = keel(
        "[broker]\nurl = \"nats://127.0.0.1:4222\"\nstream = \"a.b\"\n",
        &["migrate"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("broker.stream"), "{err}");
    let (code, err) = keel(
        "[broker]\nurl = \"nats://127.0.0.1:4222\"\nretention = \"1d\"\n",
        &["migrate"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("retention"), "unknown keys are refused: {err}");
    let (code, err) = keel(
        "[modules.remote]\nrecords = \"records.internal\"\n",
        &["migrate"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("modules.remote.records"), "{err}");
}

#[tokio::test]
async fn a_subset_migrates_only_its_modules_tables() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = keel_in(
        &dir,
        "[modules]\nenabled = [\"records\", \"billing\"]\n",
        &["migrate"],
    );
    assert_eq!(code, 0, "{err}");
    let db = runtime::connect(&format!("sqlite:{}/keel.db", dir.path().display()), 1)
        .await
        .unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert!(
        tables.iter().any(|t| t.starts_with("records_")),
        "{tables:?}"
    );
    assert!(
        tables.iter().any(|t| t.starts_with("billing_")),
        "{tables:?}"
    );
    assert!(
        !tables.iter().any(|t| t.starts_with("notifications_")),
        "{tables:?}"
    );
    assert!(tables.iter().any(|t| t == "keel_relay"), "{tables:?}");
}

#[test]
fn a_subset_starts_on_a_database_the_whole_monolith_migrated() {
    // Step 4 of docs/split-a-module.md: the monolith's own database, every module's
    // migrations applied, is then run with only some of them. With a `keel.toml` shared by
    // both shapes: settings of a module that is not here are left to its deployment.
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = keel_in(&dir, "", &["migrate"]);
    assert_eq!(code, 0, "{err}");
    let shared = "[schedules.\"billing.mark_overdue_invoices\"]\npaused = true\n\n\
                  [listeners.\"notifications.on_event_deliver_webhooks\"]\n\
                  backfill_from = \"2026-01-01T00:00:00Z\"\n";
    let (code, err) = keel_in(&dir, shared, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    for modules in ["\"records\", \"billing\"", "\"notifications\""] {
        let toml = format!(
            "{shared}\n[modules]\nenabled = [{modules}]\n\n[modules.remote]\n\
             records = \"http://127.0.0.1:9\"\nbilling = \"http://127.0.0.1:9\"\n"
        );
        let (code, err) = keel_in(&dir, &toml, &["migrate"]);
        assert_eq!(code, 0, "enabled = [{modules}]: {err}");
    }
}
