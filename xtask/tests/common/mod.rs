//! Shared by the xtask integration tests: throwaway copies of the fixture workspaces.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A throwaway copy of the clean fixture.
pub struct Fixture {
    pub root: PathBuf,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create fixture folder");
    for entry in std::fs::read_dir(from).expect("read fixture folder") {
        let entry = entry.expect("read fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

impl Fixture {
    pub fn clean(name: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("fixture-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clean"),
            &root,
        );
        Self { root }
    }

    /// Appends `text` to the file (creating it) and returns the line `text` starts on.
    pub fn append(&self, file: &str, text: &str) -> usize {
        let path = self.root.join(file);
        let mut content = std::fs::read_to_string(&path).unwrap_or_default();
        if !content.is_empty() && !content.ends_with('\n') {
            content.push('\n');
        }
        let line = content.lines().count() + 1;
        content.push_str(text);
        std::fs::create_dir_all(path.parent().expect("file has a folder")).expect("create folder");
        std::fs::write(&path, content).expect("write fixture file");
        line
    }

    pub fn replace(&self, file: &str, from: &str, to: &str) {
        let path = self.root.join(file);
        let content = std::fs::read_to_string(&path).expect("read fixture file");
        assert!(content.contains(from), "{file} does not contain {from:?}");
        std::fs::write(&path, content.replacen(from, to, 1)).expect("write fixture file");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
