//! Prints a [`Report`] for people (`human`), for programs (`json`), or as GitHub Actions
//! annotations (`github`) so violations show on the pull request's diff.

use std::fmt::Write as _;

use super::{ConfigErrors, Report};

/// An output format, chosen with `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// rustc-style blocks with a help line.
    Human,
    /// One JSON document.
    Json,
    /// `::error file=…,line=…,col=…::…` workflow commands.
    Github,
}

impl Format {
    /// Parses the `--format` value.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "human" => Some(Self::Human),
            "json" => Some(Self::Json),
            "github" => Some(Self::Github),
            _ => None,
        }
    }
}

/// Renders the report; the text ends with a newline.
#[must_use]
pub fn render(report: &Report, format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Human => {
            for v in &report.violations {
                let _ = writeln!(out, "error[{}]: {}", v.rule, v.message);
                let _ = writeln!(
                    out,
                    "  --> {}:{}:{}",
                    v.file, v.position.line, v.position.col
                );
                let _ = writeln!(out, "   = help: {}\n", v.rule.help());
            }
            out.push_str(&summary(report));
            out.push('\n');
        }
        Format::Github => {
            for v in &report.violations {
                let _ = writeln!(
                    out,
                    "::error file={},line={},col={},title={}::{}",
                    escape_property(&v.file),
                    v.position.line,
                    v.position.col,
                    escape_property(&format!("check-boundaries: {}", v.rule)),
                    escape_data(&format!("{}\nhelp: {}", v.message, v.rule.help()))
                );
            }
            out.push_str(&summary(report));
            out.push('\n');
        }
        Format::Json => {
            let violations: Vec<_> = report
                .violations
                .iter()
                .map(|v| {
                    serde_json::json!({
                        "rule": v.rule.id(),
                        "file": v.file,
                        "line": v.position.line,
                        "column": v.position.col,
                        "message": v.message,
                        "help": v.rule.help(),
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "violations": violations,
                "crates": report.crates,
                "files": report.files,
            });
            out.push_str(&doc.to_string());
            out.push('\n');
        }
    }
    out
}

/// Renders configuration errors (exit 2); GitHub gets annotations too.
#[must_use]
pub fn render_config_errors(errors: &ConfigErrors, format: Format) -> String {
    match format {
        Format::Github => errors
            .0
            .iter()
            .map(|e| {
                format!(
                    "::error title=check-boundaries: configuration error::{}\n",
                    escape_data(&e.to_string())
                )
            })
            .collect(),
        Format::Json => {
            let list: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            format!("{}\n", serde_json::json!({ "configuration_errors": list }))
        }
        Format::Human => format!("{errors}\n"),
    }
}

fn summary(report: &Report) -> String {
    match report.violations.len() {
        0 => format!(
            "check-boundaries: ok — {} crates, {} files, no boundary crossed",
            report.crates, report.files
        ),
        n => format!(
            "check-boundaries: {n} violation{} in {} crates ({} files scanned)",
            if n == 1 { "" } else { "s" },
            report.crates,
            report.files
        ),
    }
}

fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}
