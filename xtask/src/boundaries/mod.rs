//! `cargo xtask check-boundaries`: the module boundaries, checked from files alone.
//!
//! Each member declares a role in `[package.metadata.boundaries]`; [`rules::judge`] says
//! which role may depend on which. The lint then looks at every way one crate can reach
//! another — manifest entries of every kind ([`manifest`]), crate names in code and files
//! pulled in by path ([`source`]), and SQL naming another module's tables ([`sql`]) — and
//! reports each crossing with its file, line, rule id and fix ([`report`]).
//!
//! It never compiles anything: `cargo metadata --no-deps` for the member list, then reading
//! files, so it runs in well under a second.

pub mod manifest;
pub mod report;
pub mod rules;
pub mod source;
pub mod sql;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::lexer::{self, string_literal};
use crate::workspace::{Member, Workspace, WorkspaceError};

use manifest::{DepKind, Manifest, Position};
use rules::{Role, Rule};

/// The workspace's boundary configuration is wrong, so the lint cannot judge it (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `cargo metadata` or a file read failed.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// A manifest is not valid TOML.
    #[error("{}:{line}: invalid manifest: {message}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// Where the parser stopped.
        line: usize,
        /// What it said.
        message: String,
    },
    /// A member declares no role.
    #[error(
        "{}: no `[package.metadata.boundaries] role`; declare one of: {}",
        path.display(),
        role_list()
    )]
    MissingRole {
        /// The manifest.
        path: PathBuf,
    },
    /// A member declares a role the rule table does not know.
    #[error("{}:{line}: unknown role `{role}`; expected one of: {}", path.display(), role_list())]
    UnknownRole {
        /// The manifest.
        path: PathBuf,
        /// Where the role is written.
        line: usize,
        /// What was written.
        role: String,
    },
    /// A boundary key is unknown or has the wrong type.
    #[error("{}:{line}: `[package.metadata.boundaries] {key}`: expected {expected}", path.display())]
    BadKey {
        /// The manifest.
        path: PathBuf,
        /// Where the key is written.
        line: usize,
        /// The key.
        key: String,
        /// What it should be.
        expected: String,
    },
    /// Two crates claim the same table prefix.
    #[error(
        "table prefix `{prefix}` is declared by both `{first}` and `{second}`; a table has one owner"
    )]
    DuplicatePrefix {
        /// The prefix.
        prefix: String,
        /// One claimant.
        first: String,
        /// The other.
        second: String,
    },
    /// A Rust file is not valid Rust tokens, so it cannot be scanned.
    #[error("{}:{source}", path.display())]
    Lex {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: lexer::LexError,
    },
}

fn role_list() -> String {
    Role::ALL
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every configuration problem found, so one run shows them all.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "configuration error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

/// One boundary crossing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule it breaks.
    pub rule: Rule,
    /// The file, relative to the workspace root, `/`-separated.
    pub file: String,
    /// Where in the file.
    pub position: Position,
    /// What crosses which boundary.
    pub message: String,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every violation, sorted by file and position.
    pub violations: Vec<Violation>,
    /// How many crates were checked.
    pub crates: usize,
    /// How many source files were scanned.
    pub files: usize,
}

struct Crate<'w> {
    member: &'w Member,
    manifest: Manifest,
}

/// Checks the workspace.
///
/// # Errors
/// When the configuration is wrong: a manifest without a known role, a bad boundary key, a
/// prefix claimed twice, an unreadable file.
pub fn check(workspace: &Workspace) -> Result<Report, ConfigErrors> {
    let root_manifest = workspace.root.join("Cargo.toml");
    let root_text = Workspace::read(&root_manifest).map_err(ConfigError::from)?;
    let inherited = manifest::workspace_dependencies(&root_manifest, &root_text)?;

    let mut errors = Vec::new();
    let mut crates = Vec::new();
    let mut manifest_texts = Vec::new();
    for member in &workspace.members {
        let parsed = Workspace::read(&member.manifest_path)
            .map_err(ConfigError::from)
            .and_then(|text| {
                manifest::member(&member.manifest_path, &text, &inherited).map(|m| (text, m))
            });
        match parsed {
            Ok((text, manifest)) => {
                manifest_texts.push(text);
                crates.push(Crate { member, manifest });
            }
            Err(e) => errors.push(e),
        }
    }
    let owners = table_owners(&crates, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }

    let by_dir: HashMap<PathBuf, &Crate<'_>> = crates
        .iter()
        .map(|c| (canonical(&c.member.dir), c))
        .collect();
    let mut report = Report {
        crates: crates.len(),
        ..Report::default()
    };
    for krate in &crates {
        check_manifest(workspace, krate, &by_dir, &mut report);
        check_sources(
            workspace,
            krate,
            &crates,
            &by_dir,
            &owners,
            &mut report,
            &mut errors,
        );
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    report
        .violations
        .sort_by(|a, b| (&a.file, a.position, a.rule).cmp(&(&b.file, b.position, b.rule)));
    report.violations.dedup();
    Ok(report)
}

/// Loads the workspace at `manifest_path` and checks it.
///
/// # Errors
/// As [`check`], and when cargo cannot read the workspace.
pub fn check_path(manifest_path: &Path) -> Result<Report, ConfigErrors> {
    let workspace = Workspace::load(manifest_path).map_err(ConfigError::from)?;
    check(&workspace)
}

/// Maps each declared table prefix to the crate that owns it.
fn table_owners(crates: &[Crate<'_>], errors: &mut Vec<ConfigError>) -> BTreeMap<String, String> {
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for krate in crates {
        for prefix in &krate.manifest.tables {
            if let Some(first) = owners.get(prefix) {
                errors.push(ConfigError::DuplicatePrefix {
                    prefix: prefix.clone(),
                    first: first.clone(),
                    second: krate.member.name.clone(),
                });
            } else {
                owners.insert(prefix.clone(), krate.member.name.clone());
            }
        }
    }
    owners
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| manifest::normalize(path))
}

fn describe_dep(dep: &manifest::Dependency) -> String {
    let mut how = Vec::new();
    if dep.kind == DepKind::Dev {
        how.push("dev");
    }
    if dep.kind == DepKind::Build {
        how.push("build");
    }
    if dep.optional {
        how.push("optional");
    }
    if dep.inherited {
        how.push("workspace-inherited");
    }
    let renamed = if dep.key == dep.package {
        String::new()
    } else {
        format!(" (renamed `{}`)", dep.key)
    };
    let kind = if how.is_empty() {
        String::new()
    } else {
        format!("{} ", how.join(", "))
    };
    format!("{kind}dependency in {}{renamed}", dep.section)
}

fn check_manifest(
    workspace: &Workspace,
    krate: &Crate<'_>,
    by_dir: &HashMap<PathBuf, &Crate<'_>>,
    report: &mut Report,
) {
    let file = workspace.relative(&krate.member.manifest_path);
    let from = krate.manifest.role;
    for dep in &krate.manifest.dependencies {
        let Some(target) = dep.path.as_deref().and_then(|p| by_dir.get(&canonical(p))) else {
            continue;
        };
        if std::ptr::eq(*target, krate) {
            continue;
        }
        let to = target.manifest.role;
        if let Some(rule) = rules::judge(from, to) {
            report.violations.push(Violation {
                rule,
                file: file.clone(),
                position: dep.position,
                message: format!(
                    "`{}` ({from}) depends on `{}` ({to}) through a {}",
                    krate.member.name,
                    target.member.name,
                    describe_dep(dep)
                ),
            });
        }
    }
}

/// The files of a crate: everything under its folder except `target/`, `node_modules/`,
/// hidden folders and nested packages (any folder with its own `Cargo.toml`, such as test
/// fixtures or the benchmark peers).
fn crate_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if name.starts_with('.')
                    || name == "target"
                    || name == "node_modules"
                    || path.join("Cargo.toml").exists()
                {
                    continue;
                }
                stack.push(path);
            } else if name.ends_with(".rs") || name.ends_with(".sql") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn check_sources(
    workspace: &Workspace,
    krate: &Crate<'_>,
    crates: &[Crate<'_>],
    by_dir: &HashMap<PathBuf, &Crate<'_>>,
    owners: &BTreeMap<String, String>,
    report: &mut Report,
    errors: &mut Vec<ConfigError>,
) {
    let name = &krate.member.name;
    let from = krate.manifest.role;
    // The names other workspace crates can be reached by from this crate's code.
    let mut names: HashMap<String, &Crate<'_>> = crates
        .iter()
        .filter(|c| !std::ptr::eq(*c, krate))
        .filter_map(|c| c.member.lib_name.clone().map(|n| (n, c)))
        .collect();
    for dep in &krate.manifest.dependencies {
        if let Some(target) = dep.path.as_deref().and_then(|p| by_dir.get(&canonical(p)))
            && !std::ptr::eq(*target, krate)
        {
            names.insert(dep.key.replace('-', "_"), target);
        }
    }
    let sql_is_free = from.reads_any_table();

    let files = crate_files(&krate.member.dir);
    report.files += files.len();
    let mut local_names = std::collections::BTreeSet::new();
    let mut uses = Vec::new();
    for path in files {
        let text = match Workspace::read(&path) {
            Ok(text) => text,
            Err(e) => {
                errors.push(e.into());
                continue;
            }
        };
        let file = workspace.relative(&path);
        if path.extension().is_some_and(|e| e == "sql") {
            if !sql_is_free {
                check_sql(
                    &text,
                    |offset| Position::at(&text, offset),
                    &file,
                    krate,
                    owners,
                    report,
                );
            }
            continue;
        }
        let tokens = match lexer::tokenize(&text) {
            Ok(tokens) => tokens,
            Err(source) => {
                errors.push(ConfigError::Lex {
                    path: path.clone(),
                    source,
                });
                continue;
            }
        };
        let scan = source::scan(&tokens, &path, &krate.member.dir);
        local_names.extend(scan.local_names);
        for reference in scan.crate_refs {
            let Some(target) = names.get(&reference.name) else {
                continue;
            };
            if reference.form == source::RefForm::Use {
                uses.push((file.clone(), reference, *target));
                continue;
            }
            push_reference(report, &file, &reference, krate, target);
        }
        for inclusion in scan.inclusions {
            let Some(owner) = workspace.member_containing(&inclusion.target) else {
                continue;
            };
            if canonical(&owner.dir) == canonical(&krate.member.dir) {
                continue;
            }
            report.violations.push(Violation {
                rule: Rule::FileReachesIntoCrate,
                file: file.clone(),
                position: inclusion.position,
                message: format!(
                    "`{name}` pulls in `{}` from crate `{}` with {}",
                    workspace.relative(&inclusion.target),
                    owner.name,
                    inclusion.form
                ),
            });
        }
        if !sql_is_free {
            for literal in scan.literals {
                let Some(lit) = string_literal(&literal.repr) else {
                    continue;
                };
                let start = literal.position;
                let position_of = |offset: usize| {
                    let at = Position::at(lit.repr, lit.content_start + offset);
                    if at.line == 1 {
                        Position {
                            line: start.line,
                            col: start.col + at.col - 1,
                        }
                    } else {
                        Position {
                            line: start.line + at.line - 1,
                            col: at.col,
                        }
                    }
                };
                check_sql(&lit.masked, position_of, &file, krate, owners, report);
            }
        }
    }
    // A `use x::…` names crate `x` only when the crate has no local item called `x`.
    for (file, reference, target) in uses {
        if !local_names.contains(&reference.name) {
            push_reference(report, &file, &reference, krate, target);
        }
    }
}

fn push_reference(
    report: &mut Report,
    file: &str,
    reference: &source::CrateRef,
    krate: &Crate<'_>,
    target: &Crate<'_>,
) {
    let (from, to) = (krate.manifest.role, target.manifest.role);
    if let Some(rule) = rules::judge(from, to) {
        report.violations.push(Violation {
            rule,
            file: file.to_owned(),
            position: reference.position,
            message: format!(
                "`{}` ({from}) reaches `{}` ({to}) through {}",
                krate.member.name,
                target.member.name,
                reference.form.describe(&reference.name)
            ),
        });
    }
}

fn check_sql(
    sql: &str,
    position_of: impl Fn(usize) -> Position,
    file: &str,
    krate: &Crate<'_>,
    owners: &BTreeMap<String, String>,
    report: &mut Report,
) {
    for table in sql::table_refs(sql) {
        let lower = table.name.to_ascii_lowercase();
        // The most specific prefix wins, so `billing_` and `billing_audit_` can have different owners.
        let Some((_, owner)) = owners
            .iter()
            .filter(|(prefix, _)| lower.starts_with(prefix.as_str()))
            .max_by_key(|(p, _)| p.len())
        else {
            continue;
        };
        if *owner == krate.member.name {
            continue;
        }
        report.violations.push(Violation {
            rule: Rule::ForeignTable,
            file: file.to_owned(),
            position: position_of(table.offset),
            message: format!(
                "`{}` ({}) uses table `{}`, which belongs to `{owner}`",
                krate.member.name, krate.manifest.role, table.name
            ),
        });
    }
}
