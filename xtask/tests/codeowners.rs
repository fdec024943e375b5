//! `cargo xtask codeowners`: CODEOWNERS follows the crates' `owner` keys, and `--check`
//! notices when it does not.

mod common;

use common::Fixture;
use xtask::codeowners::{self, CodeownersError, Freshness};
use xtask::workspace::Workspace;

fn load(ws: &Fixture) -> Workspace {
    Workspace::load(&ws.root.join("Cargo.toml")).expect("fixture workspace loads")
}

#[test]
fn each_crate_folder_is_owned_by_its_declared_team() {
    let ws = Fixture::clean("codeowners");
    let text = codeowners::render(&load(&ws)).expect("every crate has an owner");
    let rules: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(
        rules,
        [
            "/app/            @keel/team-platform",
            "/crates/billing/ @keel/team-billing",
            "/crates/events/  @keel/team-platform",
            "/crates/records/ @keel/team-records",
            "/crates/runtime/ @keel/team-platform",
        ]
    );
}

#[test]
fn check_is_stale_until_written_and_after_an_owner_changes() {
    let ws = Fixture::clean("codeowners-check");
    let workspace = load(&ws);
    assert_eq!(
        codeowners::check(&workspace).expect("renders"),
        Freshness::Stale(None)
    );
    codeowners::write(&workspace).expect("writes");
    assert_eq!(
        codeowners::check(&workspace).expect("renders"),
        Freshness::Fresh
    );
    ws.replace(
        "crates/billing/Cargo.toml",
        "owner = \"team-billing\"",
        "owner = [\"team-finance\", \"@alice\"]",
    );
    assert!(matches!(
        codeowners::check(&workspace).expect("renders"),
        Freshness::Stale(Some(_))
    ));
    codeowners::write(&workspace).expect("writes");
    let text = std::fs::read_to_string(codeowners::path_in(&ws.root)).expect("written");
    assert!(
        text.contains("/crates/billing/ @keel/team-finance @alice\n"),
        "{text}"
    );
}

#[test]
fn a_crate_without_an_owner_is_an_error() {
    let ws = Fixture::clean("codeowners-missing");
    ws.replace(
        "crates/records/Cargo.toml",
        "owner = \"team-records\"\n",
        "",
    );
    let err = codeowners::render(&load(&ws)).expect_err("an owner is required");
    assert!(matches!(err, CodeownersError::MissingOwner { .. }), "{err}");
}

#[test]
fn the_cli_check_exits_1_when_stale() {
    let ws = Fixture::clean("codeowners-cli");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
            .arg("codeowners")
            .args(args)
            .arg("--manifest-path")
            .arg(ws.root.join("Cargo.toml"))
            .status()
            .expect("run xtask")
            .code()
    };
    assert_eq!(run(&["--check"]), Some(1));
    assert_eq!(run(&[]), Some(0));
    assert_eq!(run(&["--check"]), Some(0));
}
