//! The boundary lint, seen from outside: each test copies the clean fixture workspace
//! (`fixtures/clean`), breaks one rule one way, and checks that `check-boundaries` names
//! the rule, the file and the line — and that the clean fixture and the real workspace pass.

use std::process::Command;

mod common;
use common::Fixture;

use xtask::boundaries::rules::Rule;
use xtask::boundaries::{self, ConfigError, Report};

/// What the boundary tests ask of a fixture.
trait Check {
    fn check(&self) -> Result<Report, boundaries::ConfigErrors>;
    fn assert_only(&self, rule: Rule, file: &str, line: usize, col: usize) -> String;
}

impl Check for Fixture {
    fn check(&self) -> Result<Report, boundaries::ConfigErrors> {
        boundaries::check_path(&self.root.join("Cargo.toml"))
    }

    /// Asserts the lint finds exactly one violation: `rule` at `file:line:col`.
    #[track_caller]
    fn assert_only(&self, rule: Rule, file: &str, line: usize, col: usize) -> String {
        let report = self.check().expect("the fixture's configuration is valid");
        let found: Vec<_> = report
            .violations
            .iter()
            .map(|v| (v.rule, v.file.as_str(), v.position.line, v.position.col))
            .collect();
        assert_eq!(found, [(rule, file, line, col)], "{:#?}", report.violations);
        report.violations[0].message.clone()
    }
}

const BILLING_TOML: &str = "crates/billing/Cargo.toml";
const BILLING_LIB: &str = "crates/billing/src/lib.rs";

// ── The clean fixture and the real workspace pass ──────────────────────────────────────────

#[test]
fn the_clean_fixture_passes() {
    let report = Fixture::clean("clean")
        .check()
        .expect("valid configuration");
    assert_eq!(report.violations, []);
    assert_eq!(report.crates, 5);
}

#[test]
fn the_real_workspace_passes() {
    let report = boundaries::check_path(&xtask::workspace::own_root().join("Cargo.toml"))
        .expect("valid configuration");
    let listed: Vec<String> = report
        .violations
        .iter()
        .map(|v| format!("{}:{}: {} {}", v.file, v.position.line, v.rule, v.message))
        .collect();
    assert!(
        listed.is_empty(),
        "the workspace crosses its own boundaries:\n{}",
        listed.join("\n")
    );
}

// ── Every kind of manifest entry ───────────────────────────────────────────────────────────

#[test]
fn a_normal_dependency_on_another_domain_fails() {
    let ws = Fixture::clean("normal");
    let line = ws.append(BILLING_TOML, "records = { path = \"../records\" }\n");
    let message = ws.assert_only(Rule::DomainImportsDomain, BILLING_TOML, line, 1);
    assert!(
        message.contains("`billing` (domain) depends on `records` (domain)"),
        "{message}"
    );
}

#[test]
fn a_dev_dependency_on_another_domain_fails() {
    let ws = Fixture::clean("dev");
    let line = ws.append(
        BILLING_TOML,
        "\n[dev-dependencies]\nrecords = { path = \"../records\" }\n",
    );
    let message = ws.assert_only(Rule::DomainImportsDomain, BILLING_TOML, line + 2, 1);
    assert!(message.contains("[dev-dependencies]"), "{message}");
}

#[test]
fn a_build_dependency_on_another_domain_fails() {
    let ws = Fixture::clean("build");
    let line = ws.append(
        BILLING_TOML,
        "\n[build-dependencies]\nrecords = { path = \"../records\" }\n",
    );
    ws.assert_only(Rule::DomainImportsDomain, BILLING_TOML, line + 2, 1);
}

#[test]
fn a_target_specific_dependency_on_another_domain_fails() {
    let ws = Fixture::clean("target");
    let line = ws.append(
        BILLING_TOML,
        "\n[target.'cfg(unix)'.dependencies]\nrecords = { path = \"../records\" }\n",
    );
    let message = ws.assert_only(Rule::DomainImportsDomain, BILLING_TOML, line + 2, 1);
    assert!(
        message.contains("[target.'cfg(unix)'.dependencies]"),
        "{message}"
    );
}

#[test]
fn an_optional_feature_gated_dependency_on_another_domain_fails() {
    let ws = Fixture::clean("optional");
    let line = ws.append(
        BILLING_TOML,
        "\n[dependencies.records]\npath = \"../records\"\noptional = true\n\n[features]\nledger = [\"dep:records\"]\n",
    );
    let message = ws.assert_only(Rule::DomainImportsDomain, BILLING_TOML, line + 1, 15);
    assert!(message.contains("optional"), "{message}");
}

#[test]
fn a_renamed_dependency_on_another_domain_fails() {
    let ws = Fixture::clean("renamed");
    let line = ws.append(
        BILLING_TOML,
        "ledger = { package = \"records\", path = \"../records\" }\n",
    );
    let message = ws.assert_only(Rule::DomainImportsDomain, BILLING_TOML, line, 1);
    assert!(message.contains("renamed `ledger`"), "{message}");
}

#[test]
fn a_workspace_inherited_dependency_on_another_domain_fails() {
    let ws = Fixture::clean("inherited");
    let line = ws.append(BILLING_TOML, "records.workspace = true\n");
    let message = ws.assert_only(Rule::DomainImportsDomain, BILLING_TOML, line, 1);
    assert!(message.contains("workspace-inherited"), "{message}");
}

#[test]
fn a_renamed_workspace_inherited_dependency_on_another_domain_fails() {
    // The root declares `ledger = { path = "crates/records", package = "records" }`.
    let ws = Fixture::clean("inherited-renamed");
    let line = ws.append(
        BILLING_TOML,
        "ledger = { workspace = true, optional = true }\n",
    );
    ws.assert_only(Rule::DomainImportsDomain, BILLING_TOML, line, 1);
}

#[test]
fn a_domain_depending_on_infrastructure_fails() {
    let ws = Fixture::clean("domain-runtime");
    let line = ws.append(BILLING_TOML, "runtime.workspace = true\n");
    ws.assert_only(Rule::DomainDependsBeyondContract, BILLING_TOML, line, 1);
}

#[test]
fn the_contract_depending_on_a_workspace_crate_fails() {
    let ws = Fixture::clean("contract");
    let line = ws.append(
        "crates/events/Cargo.toml",
        "records = { path = \"../records\" }\n",
    );
    ws.assert_only(
        Rule::ContractDependsOnWorkspace,
        "crates/events/Cargo.toml",
        line,
        1,
    );
}

#[test]
fn infrastructure_depending_on_a_domain_fails() {
    let ws = Fixture::clean("infra");
    let line = ws.append("crates/runtime/Cargo.toml", "billing.workspace = true\n");
    ws.assert_only(
        Rule::InfrastructureImportsDomain,
        "crates/runtime/Cargo.toml",
        line,
        1,
    );
}

// ── Crate names in code ────────────────────────────────────────────────────────────────────

#[test]
fn a_use_of_another_domain_fails() {
    let ws = Fixture::clean("use");
    let line = ws.append(BILLING_LIB, "pub use records::count;\n");
    let message = ws.assert_only(Rule::DomainImportsDomain, BILLING_LIB, line, 9);
    assert!(message.contains("`use records`"), "{message}");
}

#[test]
fn a_use_inside_a_group_fails() {
    let ws = Fixture::clean("use-group");
    let line = ws.append(
        BILLING_LIB,
        "use {\n    events::RecordQueries as _,\n    records::count,\n};\n",
    );
    ws.assert_only(Rule::DomainImportsDomain, BILLING_LIB, line + 2, 5);
}

#[test]
fn an_extern_crate_of_another_domain_fails() {
    let ws = Fixture::clean("extern");
    let line = ws.append(BILLING_LIB, "extern crate records;\n");
    ws.assert_only(Rule::DomainImportsDomain, BILLING_LIB, line, 14);
}

#[test]
fn an_absolute_path_into_another_domain_fails() {
    let ws = Fixture::clean("path");
    let line = ws.append(
        BILLING_LIB,
        "pub fn sneaky() -> usize {\n    ::records::count()\n}\n",
    );
    let message = ws.assert_only(Rule::DomainImportsDomain, BILLING_LIB, line + 1, 7);
    assert!(message.contains("`::records::…`"), "{message}");
}

#[test]
fn a_local_module_with_a_crate_name_is_not_a_crossing() {
    let ws = Fixture::clean("local-mod");
    ws.append(
        BILLING_LIB,
        "mod records {\n    pub fn count() {}\n}\nuse records::count as _;\n",
    );
    assert_eq!(ws.check().expect("valid").violations, []);
}

// ── Files pulled in from another crate's folder ────────────────────────────────────────────

#[test]
fn a_path_attribute_into_another_crate_fails() {
    let ws = Fixture::clean("path-attr");
    let line = ws.append(
        BILLING_LIB,
        "#[path = \"../../records/src/lib.rs\"]\nmod stolen;\n",
    );
    let message = ws.assert_only(Rule::FileReachesIntoCrate, BILLING_LIB, line, 10);
    assert!(message.contains("crates/records/src/lib.rs"), "{message}");
}

#[test]
fn an_include_from_another_crate_fails() {
    let ws = Fixture::clean("include");
    let line = ws.append(BILLING_LIB, "include!(\"../../records/src/lib.rs\");\n");
    ws.assert_only(Rule::FileReachesIntoCrate, BILLING_LIB, line, 10);
}

#[test]
fn an_include_str_from_another_crate_fails() {
    let ws = Fixture::clean("include-str");
    let line = ws.append(
        BILLING_LIB,
        "const Q: &str = include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/../records/src/lib.rs\"));\n",
    );
    ws.assert_only(Rule::FileReachesIntoCrate, BILLING_LIB, line, 30);
}

#[test]
fn an_include_bytes_from_another_crate_fails() {
    let ws = Fixture::clean("include-bytes");
    let line = ws.append(
        BILLING_LIB,
        "const B: &[u8] = include_bytes!(\"../../../app/src/lib.rs\");\n",
    );
    ws.assert_only(Rule::FileReachesIntoCrate, BILLING_LIB, line, 33);
}

// ── SQL naming another module's tables ─────────────────────────────────────────────────────

#[test]
fn sql_reading_another_modules_table_fails() {
    let ws = Fixture::clean("sql");
    let line = ws.append(
        BILLING_LIB,
        "pub const T: &str = \"SELECT title FROM records_records WHERE id = $1\";\n",
    );
    let message = ws.assert_only(Rule::ForeignTable, BILLING_LIB, line, 40);
    assert!(
        message.contains("`records_records`, which belongs to `records`"),
        "{message}"
    );
}

#[test]
fn sql_in_a_multi_line_raw_string_points_at_the_right_line() {
    let ws = Fixture::clean("sql-raw");
    let line = ws.append(BILLING_LIB, "pub const T: &str = r#\"\n    SELECT i.id\n    FROM billing_invoices i\n    JOIN records_records r ON r.id = i.record_id\n\"#;\n");
    ws.assert_only(Rule::ForeignTable, BILLING_LIB, line + 3, 10);
}

#[test]
fn a_migration_referencing_another_modules_table_fails() {
    let ws = Fixture::clean("sql-file");
    let file = "crates/billing/migrations/002_links.sql";
    let line = ws.append(file, "ALTER TABLE billing_invoices\n    ADD CONSTRAINT fk FOREIGN KEY (record_id) REFERENCES records_records (id);\n");
    ws.assert_only(Rule::ForeignTable, file, line + 1, 58);
}

#[test]
fn infrastructure_touching_a_domain_table_fails() {
    let ws = Fixture::clean("sql-infra");
    let line = ws.append(
        "crates/runtime/src/lib.rs",
        "pub const P: &str = \"DELETE FROM billing_invoices\";\n",
    );
    ws.assert_only(Rule::ForeignTable, "crates/runtime/src/lib.rs", line, 34);
}

#[test]
fn a_domain_touching_the_runtimes_tables_fails() {
    let ws = Fixture::clean("sql-keel");
    let line = ws.append(
        BILLING_LIB,
        "pub const K: &str = \"insert into keel_jobs (id) values ($1)\";\n",
    );
    ws.assert_only(Rule::ForeignTable, BILLING_LIB, line, 34);
}

// ── Configuration errors ───────────────────────────────────────────────────────────────────

#[test]
fn a_crate_without_a_role_is_a_configuration_error() {
    let ws = Fixture::clean("no-role");
    ws.replace(BILLING_TOML, "role = \"domain\"\n", "");
    let errors = ws
        .check()
        .expect_err("a missing role is a configuration error");
    assert!(
        matches!(errors.0.as_slice(), [ConfigError::MissingRole { path }] if path.ends_with(BILLING_TOML)),
        "{errors}"
    );
}

#[test]
fn a_crate_with_an_unknown_role_is_a_configuration_error() {
    let ws = Fixture::clean("bad-role");
    ws.replace(BILLING_TOML, "role = \"domain\"", "role = \"service\"");
    let errors = ws
        .check()
        .expect_err("an unknown role is a configuration error");
    assert!(
        matches!(errors.0.as_slice(), [ConfigError::UnknownRole { line: 8, role, .. }] if role == "service"),
        "{errors}"
    );
}

#[test]
fn a_table_prefix_claimed_twice_is_a_configuration_error() {
    let ws = Fixture::clean("dup-prefix");
    ws.replace(
        "crates/records/Cargo.toml",
        "tables = [\"records_\"]",
        "tables = [\"billing_\"]",
    );
    let errors = ws.check().expect_err("a prefix has one owner");
    assert!(
        matches!(errors.0.as_slice(), [ConfigError::DuplicatePrefix { .. }]),
        "{errors}"
    );
}

// ── The command line: formats and exit codes ───────────────────────────────────────────────

fn run_cli(ws: &Fixture, format: &str) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["check-boundaries", "--format", format, "--manifest-path"])
        .arg(ws.root.join("Cargo.toml"))
        .output()
        .expect("run xtask");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn the_cli_exits_0_when_clean_1_on_violations_and_2_on_configuration_errors() {
    let ws = Fixture::clean("cli");
    assert_eq!(run_cli(&ws, "human").0, 0);
    let line = ws.append(BILLING_TOML, "records.workspace = true\n");
    let (code, human) = run_cli(&ws, "human");
    assert_eq!(code, 1);
    assert!(
        human.contains(
            "error[domain-imports-domain]: `billing` (domain) depends on `records` (domain)"
        ),
        "{human}"
    );
    assert!(
        human.contains(&format!("--> {BILLING_TOML}:{line}:1")),
        "{human}"
    );
    assert!(human.contains("help: depend on `events` only"), "{human}");
    ws.replace(BILLING_TOML, "role = \"domain\"\n", "");
    assert_eq!(run_cli(&ws, "human").0, 2);
}

#[test]
fn github_format_prints_annotations() {
    let ws = Fixture::clean("cli-github");
    let line = ws.append(BILLING_LIB, "use records::count;\n");
    let (code, out) = run_cli(&ws, "github");
    assert_eq!(code, 1);
    let expected = format!(
        "::error file={BILLING_LIB},line={line},col=5,title=check-boundaries%3A domain-imports-domain::"
    );
    assert!(out.lines().any(|l| l.starts_with(&expected)), "{out}");
}

#[test]
fn json_format_is_one_document() {
    let ws = Fixture::clean("cli-json");
    let line = ws.append(BILLING_LIB, "extern crate records;\n");
    let (code, out) = run_cli(&ws, "json");
    assert_eq!(code, 1);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(doc["violations"][0]["rule"], "domain-imports-domain");
    assert_eq!(doc["violations"][0]["file"], BILLING_LIB);
    assert_eq!(doc["violations"][0]["line"], line);
    assert_eq!(doc["violations"][0]["column"], 14);
    assert_eq!(doc["crates"], 5);
}

// ── Which workspace: the one it runs in ────────────────────────────────────────────────────

#[test]
fn the_cli_checks_the_workspace_it_runs_in_not_the_one_it_was_compiled_in() {
    let ws = Fixture::clean("cwd");
    ws.append(BILLING_TOML, "records.workspace = true\n");
    for dir in [ws.root.clone(), ws.root.join("crates/billing")] {
        let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .arg("check-boundaries")
            .current_dir(&dir)
            .output()
            .expect("run xtask");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(1),
            "from {}: {stdout}",
            dir.display()
        );
        assert!(
            stdout.contains("`billing` (domain) depends on `records` (domain)"),
            "from {}: {stdout}",
            dir.display()
        );
    }
    assert_eq!(
        xtask::workspace::root_from(&ws.root.join("crates/billing"))
            .map(|r| r.canonicalize().expect("the found root exists")),
        Some(ws.root.canonicalize().expect("the fixture exists"))
    );
}
