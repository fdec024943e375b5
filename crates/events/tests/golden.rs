//! The golden corpus: one stored event of every version ever published, committed under
//! `crates/events/golden/<name>.v<N>.json`. Each must keep decoding at its own version and
//! after upcasting to the latest — so events already in the outbox or in dead letters
//! survive every release. Files are written once by `cargo xtask check-contracts --bless`
//! and never edited.

use std::path::{Path, PathBuf};

use events::EventEnvelope;
use events::catalog::registry;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn golden_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("crates/events/golden exists")
        .map(|e| e.expect("a readable golden entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_golden_event_decodes_and_upcasts_to_the_latest_version() {
    let catalog = registry();
    let files = golden_files();
    assert!(!files.is_empty(), "the golden corpus is empty");
    for path in files {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let text = std::fs::read_to_string(&path).expect("a readable golden file");
        let stored: EventEnvelope = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{name}: not a stored event envelope: {e}"));
        assert_eq!(
            name,
            format!("{}.v{}.json", stored.name, stored.version),
            "a golden file is named after the event it holds"
        );
        let entry = catalog
            .get(&stored.name, stored.version)
            .unwrap_or_else(|| {
                panic!(
                    "{name}: {}.v{} is no longer in events::catalog::registry(); stored events of \
                     that version would be lost — keep the version with an upcaster",
                    stored.name, stored.version
                )
            });
        if let Err(e) = entry.decode(&stored.payload) {
            panic!("{name}: {e}");
        }
        let latest = catalog
            .latest(&stored.name)
            .expect("the entry's event has a latest version");
        let upcast = catalog
            .upcast(&stored, latest)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let last = catalog
            .get(&upcast.name, latest)
            .expect("the latest entry exists");
        if let Err(e) = last.decode(&upcast.payload) {
            panic!("{name} upcast to v{latest}: {e}");
        }
    }
}

#[test]
fn every_version_in_the_catalog_has_a_golden_event() {
    for entry in registry().entries() {
        let file = format!("{}.v{}.json", entry.key.name, entry.key.version);
        assert!(
            golden_dir().join(&file).is_file(),
            "crates/events/golden/{file} is missing; run `cargo xtask check-contracts --bless` \
             to write it from the publisher's example, and commit it"
        );
    }
}

#[test]
fn the_catalog_is_consistent_and_every_example_decodes() {
    let catalog = registry();
    assert_eq!(catalog.problems(), Vec::<String>::new());
    for entry in catalog.entries() {
        entry
            .decode(&entry.example())
            .unwrap_or_else(|e| panic!("the publisher's example does not decode: {e}"));
    }
}
