//! A crash in the middle of an import: the real `keel` binary is killed with SIGKILL while
//! the import is running, a new process is started on the same database, and the import
//! finishes with every good line created exactly once.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tests::app::{AppOptions, KeelProcess, client, expect_json};
use tests::{TestDb, both_backends, eventually};

use crate::imports::upload;

/// Lines in the file: enough that the import is still running when the test looks.
///
/// SQLite imports several times faster than PostgreSQL here, so it gets a bigger file: the
/// kill must land while the import is still running on either backend.
fn lines_for(backend: events::Backend) -> usize {
    match backend {
        events::Backend::Sqlite => 40_000,
        events::Backend::Postgres => 6_000,
    }
}
/// Every this-many-th line is bad.
const BAD_EVERY: usize = 500;
/// The real `keel` (`app/src/main.rs`), built by cargo as a binary of this package.
const KEEL: &str = env!("CARGO_BIN_EXE_keel-under-test");

async fn status(client: &reqwest::Client, process: &KeelProcess, id: &str) -> Value {
    let response = client
        .get(process.url(&format!("/imports/{id}")))
        .send()
        .await
        .unwrap();
    let status = expect_json(response, 200).await;
    // One consistent view, even while batches commit: every failure counted is listed, and
    // none that is not yet counted.
    let listed = status["failed_rows"].as_array().unwrap().len();
    assert_eq!(status["failed"], listed, "{status}");
    status
}

async fn a_killed_import_resumes_in_a_new_process_without_duplicates(db: TestDb) {
    let lines = lines_for(db.backend());
    let client = client();
    let started = std::time::Instant::now();
    let options = AppOptions::default();
    let first = KeelProcess::start(Path::new(KEEL), &db, &options).await;

    let ndjson: String = (1..=lines)
        .map(|n| {
            if n % BAD_EVERY == 0 {
                format!("{{\"title\": \"row-{n}\", \"owner_email\": \"nobody\"}}\n")
            } else {
                format!("{{\"title\": \"row-{n}\", \"owner_email\": \"r{n}@example.com\"}}\n")
            }
        })
        .collect();
    let good = lines - lines / BAD_EVERY;
    let id = upload(&first.base, &client, ndjson).await;
    eprintln!("{:?}: uploaded", started.elapsed());

    let seen = eventually(
        Duration::from_secs(60),
        "the import to be running",
        || async {
            let s = status(&client, &first, &id).await;
            assert_ne!(
                s["status"], "completed",
                "the import finished before the test could kill keel; make the file larger"
            );
            let processed = s["processed"].as_u64().unwrap();
            (s["status"] == "running" && processed > 0).then_some(s)
        },
    )
    .await;
    eprintln!("{:?}: killing keel at {seen}", started.elapsed());
    first.kill().await;
    let at_kill = seen["processed"].as_u64().unwrap();
    assert!(at_kill < lines as u64, "{seen}");

    let second = KeelProcess::start(Path::new(KEEL), &db, &options).await;
    eprintln!("{:?}: keel restarted", started.elapsed());
    let done = eventually(
        Duration::from_secs(90),
        "the import to complete",
        || async {
            let s = status(&client, &second, &id).await;
            (s["status"] == "completed").then_some(s)
        },
    )
    .await;
    eprintln!("{:?}: import completed", started.elapsed());
    assert_eq!(done["total"], lines, "{}", done["total"]);
    assert_eq!(done["processed"], lines, "{}", done["processed"]);
    let failed: Vec<u64> = done["failed_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["line"].as_u64().unwrap())
        .collect();
    let expected_failed: Vec<u64> = (1..=lines)
        .filter(|n| n % BAD_EVERY == 0)
        .map(|n| n as u64)
        .collect();
    assert_eq!(failed, expected_failed, "each bad line reported once");

    let mut titles = Vec::with_capacity(good);
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => second.url(&format!("/records?limit=200&cursor={c}")),
            None => second.url("/records?limit=200"),
        };
        let page = expect_json(client.get(url).send().await.unwrap(), 200).await;
        for record in page["items"].as_array().unwrap() {
            titles.push(record["title"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let distinct: HashSet<&String> = titles.iter().collect();
    assert_eq!(distinct.len(), good, "every good line became a record");
    assert_eq!(titles.len(), good, "and none became two");
    second.kill().await;
}

both_backends!(a_killed_import_resumes_in_a_new_process_without_duplicates);
