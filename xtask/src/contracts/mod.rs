//! `cargo xtask check-contracts`: event schemas, the golden corpus, consumer contracts and
//! payload discipline, checked against what the code declares.
//!
//! xtask links no workspace crate, so the declarations come as JSON from the `keel-contracts`
//! binary (`app/src/contracts.rs`: the event catalog with schemas and examples, every
//! module's `publishes`, every listener's `consumes` and queue). This module holds the pure
//! logic on that JSON and on the committed files:
//!
//! - `crates/events/schemas/<name>.v<N>.json` — the committed schema of every version. A
//!   breaking difference fails ("add version N+1 with an upcaster"); a compatible one fails
//!   until `--bless` writes the new snapshot. A new version is written by `--bless`.
//! - `crates/events/golden/<name>.v<N>.json` — one stored event per version, written once by
//!   `--bless` from the publisher's example and never rewritten; the `events` crate's tests
//!   decode and upcast every one.
//! - consumer contracts: every consumed `(event, version)` is published by a module, exists,
//!   and is reachable by upcasting from the published version.
//! - payload discipline ([`discipline`]).

pub mod diff;
pub mod discipline;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::Value;

/// Where the committed schemas live, relative to the workspace root.
pub const SCHEMAS_DIR: &str = "crates/events/schemas";
/// Where the golden corpus lives, relative to the workspace root.
pub const GOLDEN_DIR: &str = "crates/events/golden";
/// The dump format this xtask understands (`app::contracts::FORMAT`).
pub const FORMAT: u32 = 1;

/// `(name, version)` of an event, as the dump writes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub struct Key {
    /// The event name.
    pub name: String,
    /// The version.
    pub version: u32,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.v{}", self.name, self.version)
    }
}

/// One version of one event in the catalog.
#[derive(Debug, Clone, Deserialize)]
pub struct EventVersion {
    /// The event name.
    pub name: String,
    /// The version.
    pub version: u32,
    /// Whether it is the version publishers emit today.
    pub latest: bool,
    /// The version it upcasts to, for older versions.
    pub upcasts_to: Option<u32>,
    /// The reason, when the type is marked as event-carried state transfer.
    pub state_transfer: Option<String>,
    /// Its JSON Schema.
    pub schema: Value,
    /// The publisher's example payload.
    pub example: Value,
    /// The example as a stored event envelope (what the golden corpus holds).
    pub stored_example: Value,
}

impl EventVersion {
    /// Its key.
    #[must_use]
    pub fn key(&self) -> Key {
        Key {
            name: self.name.clone(),
            version: self.version,
        }
    }

    /// `<name>.v<N>.json`.
    #[must_use]
    pub fn file_name(&self) -> String {
        format!("{}.json", self.key())
    }
}

/// A listener as wired.
#[derive(Debug, Clone, Deserialize)]
pub struct ListenerInfo {
    /// Its name.
    pub name: String,
    /// The queue its deliveries run on (for an inline listener: when it falls back).
    pub queue: String,
    /// Runs in the publisher's transaction (`Dispatch::Inline`) rather than as a job.
    #[serde(default)]
    pub inline: bool,
    /// The events and versions it consumes.
    pub consumes: Vec<Key>,
}

/// A job type as wired.
#[derive(Debug, Clone, Deserialize)]
pub struct JobInfo {
    /// Its type name.
    #[serde(rename = "type")]
    pub job_type: String,
    /// Its queue.
    pub queue: String,
}

/// A module as wired.
#[derive(Debug, Clone, Deserialize)]
pub struct ModuleInfo {
    /// Its name.
    pub name: String,
    /// The events it publishes.
    pub publishes: Vec<Key>,
    /// Its listeners.
    pub listeners: Vec<ListenerInfo>,
    /// Its job types.
    #[serde(default)]
    pub jobs: Vec<JobInfo>,
}

/// What `keel-contracts` prints.
#[derive(Debug, Clone, Deserialize)]
pub struct Dump {
    /// The shape's version.
    pub format: u32,
    /// Every event version, by name then version.
    pub events: Vec<EventVersion>,
    /// The wired modules.
    pub modules: Vec<ModuleInfo>,
}

impl Dump {
    /// Parses a dump, refusing formats this xtask does not know.
    ///
    /// # Errors
    /// When the text is not a dump of [`FORMAT`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let dump: Self =
            serde_json::from_str(text).map_err(|e| format!("not a contracts dump: {e}"))?;
        if dump.format != FORMAT {
            return Err(format!(
                "contracts dump format {} is not {FORMAT}; rebuild xtask and app together",
                dump.format
            ));
        }
        Ok(dump)
    }

    /// The catalog entry of `key`.
    #[must_use]
    pub fn event(&self, name: &str, version: u32) -> Option<&EventVersion> {
        self.events
            .iter()
            .find(|e| e.name == name && e.version == version)
    }

    /// Which module publishes each event name.
    #[must_use]
    pub fn publishers(&self) -> BTreeMap<&str, Vec<(&str, u32)>> {
        let mut out: BTreeMap<&str, Vec<(&str, u32)>> = BTreeMap::new();
        for module in &self.modules {
            for key in &module.publishes {
                out.entry(key.name.as_str())
                    .or_default()
                    .push((module.name.as_str(), key.version));
            }
        }
        out
    }
}

/// Runs `cargo run -p app --bin keel-contracts` in `root` and parses what it prints.
///
/// # Errors
/// When it cannot run, fails, or prints something that is not a dump.
pub fn load(root: &Path) -> Result<Dump, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["run", "--quiet", "-p", "app", "--bin", "keel-contracts"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not run `cargo run -p app --bin keel-contracts`: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo run -p app --bin keel-contracts` failed ({})",
            output.status
        ));
    }
    Dump::parse(&String::from_utf8_lossy(&output.stdout))
}

/// What kind of problem a finding is, which decides whether `--bless` fixes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A published version changed incompatibly, or vanished.
    Breaking,
    /// A compatible change or a new version whose snapshot is not committed yet; `--bless`.
    Unblessed,
    /// A listener consumes something no module publishes, or cannot reach.
    Consumer,
    /// A module publishes something the catalog does not know.
    Publisher,
    /// A field breaks the payload discipline.
    Discipline,
}

/// One problem, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What it is about, e.g. `record.created.v1` or a file.
    pub subject: String,
    /// Its kind.
    pub kind: Kind,
    /// The message a developer acts on.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.message)
    }
}

/// The outcome of one check.
#[derive(Debug, Default)]
pub struct Report {
    /// What is wrong (after `--bless`, only what blessing cannot fix).
    pub findings: Vec<Finding>,
    /// Files `--bless` wrote, relative to the root.
    pub written: Vec<String>,
}

fn read_json(path: &Path) -> Result<Option<Value>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{}: not JSON: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The text a schema or golden file is committed as.
#[must_use]
pub fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

fn write(root: &Path, rel: &str, value: &Value, report: &mut Report) -> Result<(), String> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(&path, pretty(value)).map_err(|e| format!("{}: {e}", path.display()))?;
    report.written.push(rel.to_owned());
    Ok(())
}

/// `<name>.v<N>` keys of the `.json` files in a folder.
fn committed(dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        {
            out.push((stem.to_owned(), path));
        }
    }
    out.sort();
    Ok(out)
}

/// Checks everything against the files under `root`; with `bless`, first writes the
/// snapshots of compatible changes and new versions, and missing golden events.
///
/// # Errors
/// When a committed file cannot be read or a file cannot be written.
pub fn check(root: &Path, dump: &Dump, bless: bool) -> Result<Report, String> {
    let mut report = Report::default();
    schemas(root, dump, bless, &mut report)?;
    golden(root, dump, bless, &mut report)?;
    publishers(dump, &mut report);
    consumers(dump, &mut report);
    discipline_of(dump, &mut report);
    Ok(report)
}

fn breaking_advice(event: &EventVersion) -> String {
    if event.latest {
        format!(
            "add version {} with an upcaster (keep `{}` as it was, as `EventSchema::superseded`; see events::catalog)",
            event.version + 1,
            event.key()
        )
    } else {
        format!(
            "{} is an older version and frozen: restore its type as it was (stored events of it must keep decoding)",
            event.key()
        )
    }
}

fn schemas(root: &Path, dump: &Dump, bless: bool, report: &mut Report) -> Result<(), String> {
    for event in &dump.events {
        let rel = format!("{SCHEMAS_DIR}/{}", event.file_name());
        let Some(old) = read_json(&root.join(&rel))? else {
            if bless {
                write(root, &rel, &event.schema, report)?;
            } else {
                report.findings.push(Finding {
                    subject: event.key().to_string(),
                    kind: Kind::Unblessed,
                    message: format!(
                        "new version: {rel} is not committed yet; run `cargo xtask check-contracts --bless` and commit it"
                    ),
                });
            }
            continue;
        };
        if old == event.schema {
            continue;
        }
        let changes = diff::compare(&old, &event.schema);
        let breaking: Vec<&diff::Change> = changes.iter().filter(|c| c.breaking).collect();
        if breaking.is_empty() {
            if bless {
                write(root, &rel, &event.schema, report)?;
            } else {
                let list: Vec<String> = changes.iter().map(describe).collect();
                report.findings.push(Finding {
                    subject: event.key().to_string(),
                    kind: Kind::Unblessed,
                    message: format!(
                        "compatible change ({}); run `cargo xtask check-contracts --bless` to update {rel} and commit it",
                        list.join("; ")
                    ),
                });
            }
            continue;
        }
        for change in breaking {
            report.findings.push(Finding {
                subject: event.key().to_string(),
                kind: Kind::Breaking,
                message: format!(
                    "breaking change: {} — {}",
                    describe(change),
                    breaking_advice(event)
                ),
            });
        }
    }
    for (stem, _) in committed(&root.join(SCHEMAS_DIR))? {
        if !dump.events.iter().any(|e| e.key().to_string() == stem) {
            report.findings.push(Finding {
                subject: stem.clone(),
                kind: Kind::Breaking,
                message: format!(
                    "breaking change: {SCHEMAS_DIR}/{stem}.json is committed but the version is gone from events::catalog::registry(); stored events of it would no longer decode — restore it as `EventSchema::superseded` with an upcaster"
                ),
            });
        }
    }
    Ok(())
}

fn describe(change: &diff::Change) -> String {
    if change.field.is_empty() {
        format!("the payload {}", change.what)
    } else {
        format!("field `{}` {}", change.field, change.what)
    }
}

fn golden(root: &Path, dump: &Dump, bless: bool, report: &mut Report) -> Result<(), String> {
    for event in &dump.events {
        let rel = format!("{GOLDEN_DIR}/{}", event.file_name());
        if root.join(&rel).is_file() {
            continue;
        }
        if bless {
            write(root, &rel, &event.stored_example, report)?;
        } else {
            report.findings.push(Finding {
                subject: event.key().to_string(),
                kind: Kind::Unblessed,
                message: format!(
                    "{rel} (its golden stored event) is missing; run `cargo xtask check-contracts --bless` and commit it"
                ),
            });
        }
    }
    for (stem, _) in committed(&root.join(GOLDEN_DIR))? {
        if !dump.events.iter().any(|e| e.key().to_string() == stem) {
            report.findings.push(Finding {
                subject: stem.clone(),
                kind: Kind::Breaking,
                message: format!(
                    "{GOLDEN_DIR}/{stem}.json holds a stored event of a version that is gone from events::catalog::registry(); restore the version with an upcaster"
                ),
            });
        }
    }
    Ok(())
}

fn publishers(dump: &Dump, report: &mut Report) {
    for (name, modules) in dump.publishers() {
        if modules.len() > 1 {
            let list: Vec<String> = modules
                .iter()
                .map(|(m, v)| format!("`{m}` (v{v})"))
                .collect();
            report.findings.push(Finding {
                subject: name.to_owned(),
                kind: Kind::Publisher,
                message: format!(
                    "published by {}; an event belongs to one module — publish it from one",
                    list.join(" and ")
                ),
            });
        }
        for (module, version) in modules {
            let key = Key {
                name: name.to_owned(),
                version,
            };
            match dump.event(name, version) {
                None => report.findings.push(Finding {
                    subject: key.to_string(),
                    kind: Kind::Publisher,
                    message: format!(
                        "module `{module}` publishes {key}, which is not in events::catalog::registry(); add it there (`EventSchema::current::<…>()`)"
                    ),
                }),
                Some(event) if !event.latest => report.findings.push(Finding {
                    subject: key.to_string(),
                    kind: Kind::Publisher,
                    message: format!(
                        "module `{module}` publishes {key}, an older version; publish the latest (older versions exist only for stored events)"
                    ),
                }),
                Some(_) => {}
            }
        }
    }
}

fn consumers(dump: &Dump, report: &mut Report) {
    let publishers = dump.publishers();
    for module in &dump.modules {
        for listener in &module.listeners {
            for key in &listener.consumes {
                let who = format!("listener `{}` (module `{}`)", listener.name, module.name);
                let mut finding = |message: String| {
                    report.findings.push(Finding {
                        subject: key.to_string(),
                        kind: Kind::Consumer,
                        message,
                    });
                };
                let Some(published) = publishers.get(key.name.as_str()) else {
                    finding(format!(
                        "{who} consumes {key}, which no module publishes; drop it from `consumes` or publish it (add it to the publishing module's `publishes`)"
                    ));
                    continue;
                };
                if dump.event(&key.name, key.version).is_none() {
                    let versions: Vec<String> = dump
                        .events
                        .iter()
                        .filter(|e| e.name == key.name)
                        .map(|e| format!("v{}", e.version))
                        .collect();
                    finding(format!(
                        "{who} consumes {key}, a version that does not exist (the catalog has {}); consume one of those",
                        if versions.is_empty() {
                            "none".to_owned()
                        } else {
                            versions.join(", ")
                        }
                    ));
                    continue;
                }
                for (publisher, version) in published {
                    if *version > key.version {
                        finding(format!(
                            "{who} consumes {key}, but `{publisher}` publishes v{version}, which does not upcast to v{} (upcasting only goes forward); consume v{version}",
                            key.version
                        ));
                        continue;
                    }
                    for step in *version..key.version {
                        let upcasts = dump.event(&key.name, step).and_then(|e| e.upcasts_to);
                        if upcasts != Some(step + 1) {
                            finding(format!(
                                "{who} consumes {key}, but {}.v{step} (published by `{publisher}`) has no upcaster to v{}; add one",
                                key.name,
                                step + 1
                            ));
                            break;
                        }
                    }
                }
            }
        }
    }
}

fn discipline_of(dump: &Dump, report: &mut Report) {
    for event in &dump.events {
        if event
            .state_transfer
            .as_ref()
            .is_some_and(|reason| !reason.trim().is_empty())
        {
            continue;
        }
        for violation in discipline::lint(&event.schema) {
            report.findings.push(Finding {
                subject: event.key().to_string(),
                kind: Kind::Discipline,
                message: format!(
                    "field `{}` {} — events carry ids, enums, timestamps, amounts and small scalars; let the listener fetch the rest through a query port, or mark the type as event-carried state transfer with a reason (`const STATE_TRANSFER: Option<&'static str> = Some(\"why\");` in its `Event` impl)",
                    violation.field, violation.why
                ),
            });
        }
    }
}

/// Reads the dump from `path`, or runs `keel-contracts` when `None`.
///
/// # Errors
/// As [`load`], or when the file cannot be read.
pub fn dump_from(root: &Path, path: Option<&Path>) -> Result<Dump, String> {
    match path {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Dump::parse(&text)
        }
        None => load(root),
    }
}

/// `cargo xtask check-contracts [--bless] [--dump FILE]`: prints the findings; 0 clean,
/// 1 findings, 2 when the contracts cannot be read.
#[must_use]
pub fn command(root: &Path, dump: Option<&Path>, bless: bool) -> std::process::ExitCode {
    use std::process::ExitCode;
    let outcome =
        dump_from(root, dump).and_then(|dump| check(root, &dump, bless).map(|r| (dump, r)));
    let (dump, report) = match outcome {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("check-contracts: {e}");
            return ExitCode::from(2);
        }
    };
    for file in &report.written {
        println!("check-contracts: wrote {file}");
    }
    for finding in &report.findings {
        println!("check-contracts: {finding}");
    }
    if report.findings.is_empty() {
        println!(
            "check-contracts: ok ({} event versions, {} modules)",
            dump.events.len(),
            dump.modules.len()
        );
        ExitCode::SUCCESS
    } else {
        println!("check-contracts: {} problem(s)", report.findings.len());
        ExitCode::FAILURE
    }
}
