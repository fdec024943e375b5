//! Reads what the lint needs from a `Cargo.toml`: the crate's boundary metadata and every
//! dependency it declares, each with the line it is declared on.
//!
//! Dependencies are gathered from every table cargo reads them from — `[dependencies]`,
//! `[dev-dependencies]`, `[build-dependencies]` and their `[target.'cfg(…)'.…]` forms — and
//! resolved to the package they name: a `package = "…"` rename, or a `workspace = true`
//! entry looked up (rename included) in the root's `[workspace.dependencies]`. `optional`
//! does not matter: a feature away is not far enough.

use std::borrow::Cow;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::ConfigError;
use super::rules::Role;

/// A position in a file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

impl Position {
    /// The position of byte `offset` in `text`.
    #[must_use]
    pub fn at(text: &str, offset: usize) -> Self {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line,
            col: before[line_start..].chars().count() + 1,
        }
    }
}

/// Which kind of dependency table an entry sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepKind {
    /// `[dependencies]`.
    Normal,
    /// `[dev-dependencies]`.
    Dev,
    /// `[build-dependencies]`.
    Build,
}

/// One dependency entry, as declared.
#[derive(Debug, Clone)]
pub struct Dependency {
    /// The key it is declared under (the name the code imports it by, before `-` → `_`).
    pub key: String,
    /// The package it names.
    pub package: String,
    /// The folder it points at, for path dependencies (own or inherited from the workspace).
    pub path: Option<PathBuf>,
    /// The table it was declared in, as a reader would write it (`[dev-dependencies]`).
    pub section: String,
    /// Normal, dev or build.
    pub kind: DepKind,
    /// Whether it hides behind a feature.
    pub optional: bool,
    /// Whether it was declared as `workspace = true`.
    pub inherited: bool,
    /// Where the key is written.
    pub position: Position,
}

/// One entry of the root's `[workspace.dependencies]`.
#[derive(Debug, Clone)]
pub struct WorkspaceDependency {
    /// Its key.
    pub key: String,
    /// The package it names (`package = "…"` or the key).
    pub package: String,
    /// The folder it points at, resolved against the workspace root.
    pub path: Option<PathBuf>,
}

/// A member manifest as the lint sees it.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The crate's role.
    pub role: Role,
    /// Who owns it (`owner = "team-billing"`), if declared.
    pub owners: Vec<String>,
    /// The table prefixes it owns.
    pub tables: Vec<String>,
    /// Every dependency it declares.
    pub dependencies: Vec<Dependency>,
}

type Table<'i> = DeTable<'i>;
type Value<'i> = Spanned<DeValue<'i>>;

fn get<'a, 'i>(
    table: &'a Table<'i>,
    key: &str,
) -> Option<(&'a Spanned<Cow<'i, str>>, &'a Value<'i>)> {
    table.iter().find(|(k, _)| k.get_ref() == key)
}

fn as_table<'a, 'i>(value: &'a Value<'i>) -> Option<&'a Table<'i>> {
    match value.get_ref() {
        DeValue::Table(t) => Some(t),
        _ => None,
    }
}

fn as_str<'a>(value: &'a Value<'_>) -> Option<&'a str> {
    match value.get_ref() {
        DeValue::String(s) => Some(s),
        _ => None,
    }
}

fn as_bool(value: &Value<'_>) -> Option<bool> {
    match value.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        _ => None,
    }
}

/// Parses manifest text, naming the file in the error.
fn parse<'i>(path: &Path, text: &'i str) -> Result<Table<'i>, ConfigError> {
    DeTable::parse(text)
        .map(Spanned::into_inner)
        .map_err(|e| ConfigError::Manifest {
            path: path.to_path_buf(),
            line: e
                .span()
                .map_or(1, |s: Range<usize>| Position::at(text, s.start).line),
            message: e.message().to_owned(),
        })
}

/// Reads the root manifest's `[workspace.dependencies]`.
///
/// # Errors
/// When the manifest is not valid TOML.
pub fn workspace_dependencies(
    path: &Path,
    text: &str,
) -> Result<Vec<WorkspaceDependency>, ConfigError> {
    let root_dir = path.parent().unwrap_or(Path::new("."));
    let doc = parse(path, text)?;
    let Some(deps) = get(&doc, "workspace")
        .and_then(|(_, w)| as_table(w))
        .and_then(|w| get(w, "dependencies"))
        .and_then(|(_, d)| as_table(d))
    else {
        return Ok(Vec::new());
    };
    Ok(deps
        .iter()
        .map(|(key, value)| {
            let key = key.get_ref().to_string();
            let (package, path) = match as_table(value) {
                Some(t) => (
                    get(t, "package")
                        .and_then(|(_, p)| as_str(p))
                        .map_or_else(|| key.clone(), str::to_owned),
                    get(t, "path")
                        .and_then(|(_, p)| as_str(p))
                        .map(|p| normalize(&root_dir.join(p))),
                ),
                None => (key.clone(), None),
            };
            WorkspaceDependency { key, package, path }
        })
        .collect())
}

/// Reads a member manifest.
///
/// # Errors
/// When it is not valid TOML, lacks `[package.metadata.boundaries]` or a known `role`, or a
/// boundary key has the wrong type.
pub fn member(
    path: &Path,
    text: &str,
    workspace: &[WorkspaceDependency],
) -> Result<Manifest, ConfigError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let doc = parse(path, text)?;
    let boundaries = get(&doc, "package")
        .and_then(|(_, p)| as_table(p))
        .and_then(|p| get(p, "metadata"))
        .and_then(|(_, m)| as_table(m))
        .and_then(|m| get(m, "boundaries"))
        .and_then(|(_, b)| as_table(b))
        .ok_or_else(|| ConfigError::MissingRole {
            path: path.to_path_buf(),
        })?;

    let bad = |offset: usize, key: &str, expected: &str| ConfigError::BadKey {
        path: path.to_path_buf(),
        line: Position::at(text, offset).line,
        key: key.to_owned(),
        expected: expected.to_owned(),
    };
    let mut role = None;
    let mut owners = Vec::new();
    let mut tables = Vec::new();
    for (key, value) in boundaries {
        match key.get_ref().as_ref() {
            "role" => {
                let name =
                    as_str(value).ok_or_else(|| bad(value.span().start, "role", "a string"))?;
                role = Some(Role::parse(name).ok_or_else(|| ConfigError::UnknownRole {
                    path: path.to_path_buf(),
                    line: Position::at(text, value.span().start).line,
                    role: name.to_owned(),
                })?);
            }
            "owner" => {
                owners = string_or_list(value).ok_or_else(|| {
                    bad(value.span().start, "owner", "a string or a list of strings")
                })?;
            }
            "tables" => {
                tables = match value.get_ref() {
                    DeValue::Array(items) => items
                        .iter()
                        .map(|i| as_str(i).filter(|s| !s.is_empty()).map(str::to_owned))
                        .collect(),
                    _ => None,
                }
                .ok_or_else(|| {
                    bad(
                        value.span().start,
                        "tables",
                        "a list of table-name prefixes like [\"billing_\"]",
                    )
                })?;
            }
            other => {
                return Err(bad(
                    key.span().start,
                    other,
                    "one of `role`, `owner`, `tables`",
                ));
            }
        }
    }
    let role = role.ok_or_else(|| ConfigError::MissingRole {
        path: path.to_path_buf(),
    })?;

    let mut dependencies = Vec::new();
    collect_deps(&doc, None, dir, text, workspace, &mut dependencies);
    if let Some(targets) = get(&doc, "target").and_then(|(_, t)| as_table(t)) {
        for (cfg, platform) in targets {
            if let Some(platform) = as_table(platform) {
                collect_deps(
                    platform,
                    Some(cfg.get_ref()),
                    dir,
                    text,
                    workspace,
                    &mut dependencies,
                );
            }
        }
    }
    dependencies.sort_by_key(|d| d.position);
    Ok(Manifest {
        role,
        owners,
        tables,
        dependencies,
    })
}

fn string_or_list(value: &Value<'_>) -> Option<Vec<String>> {
    match value.get_ref() {
        DeValue::String(s) if !s.is_empty() => Some(vec![s.to_string()]),
        DeValue::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| as_str(i).filter(|s| !s.is_empty()).map(str::to_owned))
            .collect(),
        _ => None,
    }
}

fn collect_deps(
    table: &Table<'_>,
    target: Option<&str>,
    dir: &Path,
    text: &str,
    workspace: &[WorkspaceDependency],
    out: &mut Vec<Dependency>,
) {
    const TABLES: [(&str, DepKind); 5] = [
        ("dependencies", DepKind::Normal),
        ("dev-dependencies", DepKind::Dev),
        ("dev_dependencies", DepKind::Dev),
        ("build-dependencies", DepKind::Build),
        ("build_dependencies", DepKind::Build),
    ];
    for (name, kind) in TABLES {
        let Some(deps) = get(table, name).and_then(|(_, d)| as_table(d)) else {
            continue;
        };
        let section = match target {
            Some(cfg) => format!("[target.'{cfg}'.{name}]"),
            None => format!("[{name}]"),
        };
        for (key, value) in deps {
            let key_name = key.get_ref().to_string();
            let mut dep = Dependency {
                package: key_name.clone(),
                key: key_name,
                path: None,
                section: section.clone(),
                kind,
                optional: false,
                inherited: false,
                position: Position::at(text, key.span().start),
            };
            if let Some(spec) = as_table(value) {
                dep.optional = get(spec, "optional")
                    .and_then(|(_, o)| as_bool(o))
                    .unwrap_or(false);
                dep.inherited = get(spec, "workspace")
                    .and_then(|(_, w)| as_bool(w))
                    .unwrap_or(false);
                if dep.inherited {
                    if let Some(root) = workspace.iter().find(|w| w.key == dep.key) {
                        dep.package.clone_from(&root.package);
                        dep.path.clone_from(&root.path);
                    }
                } else {
                    if let Some(package) = get(spec, "package").and_then(|(_, p)| as_str(p)) {
                        package.clone_into(&mut dep.package);
                    }
                    dep.path = get(spec, "path")
                        .and_then(|(_, p)| as_str(p))
                        .map(|p| normalize(&dir.join(p)));
                }
            }
            out.push(dep);
        }
    }
}

/// Resolves `.` and `..` without touching the file system (the path may not exist).
#[must_use]
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}
