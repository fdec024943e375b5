//! Tidy: house rules for every Rust file, run as a `#[test]` so plain `cargo test` keeps
//! them (see `xtask/tests/tidy.rs`).
//!
//! - every file opens with a `//!` (or `/*!`) doc saying why it exists;
//! - no `dbg!`, `todo!` or `unimplemented!` calls are left in (found by tokens, so the words
//!   in a comment or a string are fine).
//!
//! Folders named `fixtures` hold deliberately broken inputs for tests and are skipped, as
//! are `target/` and hidden folders.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::lexer::{self, Kind};
use crate::workspace::relative_to;

/// The folders, relative to the workspace root, whose Rust files tidy checks.
pub const CHECKED_DIRS: [&str; 4] = ["crates", "app", "xtask/src", "tests"];

/// One broken house rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, relative to the root.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

const FORBIDDEN_MACROS: [&str; 3] = ["dbg", "todo", "unimplemented"];

/// Checks every `.rs` file under `root/<dir>` for each of `dirs`.
#[must_use]
pub fn check(root: &Path, dirs: &[&str]) -> Vec<Problem> {
    let mut files = Vec::new();
    for dir in dirs {
        collect(&root.join(dir), &mut files);
    }
    files.sort();
    let mut problems = Vec::new();
    for path in files {
        let file = relative_to(root, &path);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                problems.push(Problem {
                    file,
                    line: 1,
                    col: 1,
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        check_file(&file, &text, &mut problems);
    }
    problems
}

/// Checks one file's text.
pub fn check_file(file: &str, text: &str, problems: &mut Vec<Problem>) {
    let first = text.lines().enumerate().find(|(_, l)| !l.trim().is_empty());
    if !first.is_some_and(|(_, l)| {
        l.trim_start().starts_with("//!") || l.trim_start().starts_with("/*!")
    }) {
        problems.push(Problem {
            file: file.to_owned(),
            line: first.map_or(1, |(i, _)| i + 1),
            col: 1,
            message: "the file must open with a `//!` doc comment saying why it exists".to_owned(),
        });
    }
    match lexer::tokenize(text) {
        Ok(tokens) => {
            for pair in tokens.windows(2) {
                if let Kind::Ident(name) = &pair[0].kind
                    && FORBIDDEN_MACROS.contains(&name.as_str())
                    && pair[1].is_punct('!')
                {
                    problems.push(Problem {
                        file: file.to_owned(),
                        line: pair[0].line,
                        col: pair[0].col,
                        message: format!("`{name}!` left in; finish or remove it before merging"),
                    });
                }
            }
        }
        Err(e) => problems.push(Problem {
            file: file.to_owned(),
            line: e.line,
            col: e.col,
            message: format!("not valid Rust tokens: {}", e.message),
        }),
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if !(name.starts_with('.') || name == "target" || name == "fixtures") {
                collect(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}
