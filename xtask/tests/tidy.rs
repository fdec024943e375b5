//! Tidy, enforced by plain `cargo test`: every Rust file in `crates/`, `app/`, `xtask/src`
//! and `tests/` opens with a `//!` doc, and no `dbg!`/`todo!`/`unimplemented!` is left in.

use std::path::Path;

use xtask::tidy;

#[test]
fn the_workspace_is_tidy() {
    let problems = tidy::check(&xtask::workspace::own_root(), &tidy::CHECKED_DIRS);
    let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        listed.is_empty(),
        "tidy found {} problem(s):\n{}",
        listed.len(),
        listed.join("\n")
    );
}

#[test]
fn tidy_catches_a_missing_doc_and_a_leftover_dbg() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tidy");
    let problems: Vec<(String, usize, usize)> = tidy::check(&root, &["crates"])
        .into_iter()
        .map(|p| (p.file, p.line, p.col))
        .collect();
    assert_eq!(
        problems,
        [
            ("crates/demo/src/lib.rs".to_owned(), 1, 1),
            ("crates/demo/src/lib.rs".to_owned(), 6, 5),
        ]
    );
}

#[test]
fn tidy_reports_todo_and_unimplemented_too() {
    let mut problems = Vec::new();
    tidy::check_file(
        "x.rs",
        "//! Doc.\nfn a() { todo!() }\nfn b() { unimplemented!() }\n",
        &mut problems,
    );
    let found: Vec<(usize, usize)> = problems.iter().map(|p| (p.line, p.col)).collect();
    assert_eq!(found, [(2, 10), (3, 10)]);
}
