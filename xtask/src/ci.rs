//! `cargo xtask ci`: the whole CI pipeline, the same on a laptop, in `.ci/run` and in GitHub
//! Actions, so "green locally" and "green in CI" mean the same thing.
//!
//! Steps run in order and stop at the first failure, naming the step and how to reproduce
//! it; each step's duration is printed. New checks go in [`steps`] (see the marked spot).
//! The tests run through `cargo xtask test` ([`crate::suite`]), the README's command, which
//! finds PostgreSQL and chromium itself and, with `CI` set, skips nothing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// The facts about the environment the pipeline depends on, gathered once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// `GITHUB_ACTIONS=true`: report boundary violations as annotations.
    pub github_actions: bool,
    /// `CI` is set: missing tools are failures, not notices.
    pub ci: bool,
    /// `cargo deny` runs.
    pub cargo_deny_installed: bool,
}

impl Env {
    /// Reads the process environment and probes for `cargo deny`.
    #[must_use]
    pub fn detect() -> Self {
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        Self {
            github_actions: std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true"),
            ci: set("CI"),
            cargo_deny_installed: Command::new(cargo())
                .args(["deny", "--version"])
                .output()
                .is_ok_and(|o| o.status.success()),
        }
    }
}

/// What runs a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// `cargo <args>`.
    Cargo,
    /// This xtask binary, `cargo xtask <args>`.
    Xtask,
}

/// One step of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// A short name, used in progress lines and failure messages.
    pub name: &'static str,
    /// What runs it.
    pub program: Program,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment for it.
    pub env: Vec<(String, String)>,
    /// When set, the step is skipped and this notice printed instead.
    pub skip: Option<String>,
    /// When set, the step fails at once with this message (a required tool is missing).
    pub missing: Option<String>,
}

impl Step {
    fn new(name: &'static str, program: Program, args: &[&str]) -> Self {
        Self {
            name,
            program,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: Vec::new(),
            skip: None,
            missing: None,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in &self.env {
            write!(f, "{key}={value} ")?;
        }
        let program = match self.program {
            Program::Cargo => "cargo",
            Program::Xtask => "cargo xtask",
        };
        write!(f, "{program} {}", self.args.join(" "))
    }
}

/// The pipeline, in order.
#[must_use]
pub fn steps(env: &Env) -> Vec<Step> {
    let mut boundaries = vec!["check-boundaries"];
    if env.github_actions {
        boundaries.extend(["--format", "github"]);
    }
    let mut deny = Step::new(
        "cargo-deny",
        Program::Cargo,
        &["deny", "check", "bans", "licenses", "sources"],
    );
    if !env.cargo_deny_installed {
        let install = "install it with `cargo install cargo-deny --locked`";
        if env.ci {
            deny.missing = Some(format!(
                "`cargo deny` is required when CI is set; {install}"
            ));
        } else {
            deny.skip = Some(format!(
                "`cargo deny` is not installed; {install} to run this check locally"
            ));
        }
    }
    vec![
        Step::new("fmt", Program::Cargo, &["fmt", "--all", "--", "--check"]),
        Step::new(
            "clippy",
            Program::Cargo,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        Step::new("check-boundaries", Program::Xtask, &boundaries),
        Step::new("codeowners", Program::Xtask, &["codeowners", "--check"]),
        deny,
        Step::new("check-contracts", Program::Xtask, &["check-contracts"]),
        Step::new("docs", Program::Xtask, &["docs", "--check"]),
        // ── Later checks go here, before the test suite (cheap and static first). ──
        Step::new("test", Program::Xtask, &["test"]),
    ]
}

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum CiError {
    /// A step's command could not be started.
    #[error("ci: step `{step}` could not start `{command}`: {source}")]
    Spawn {
        /// The step.
        step: &'static str,
        /// Its command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A step ran and failed.
    #[error("ci: step `{step}` failed ({status}) after {:.1}s; reproduce with `{command}`", elapsed.as_secs_f64())]
    Failed {
        /// The step.
        step: &'static str,
        /// Its command line.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// How long it ran.
        elapsed: Duration,
    },
    /// A step needs a tool that is not installed.
    #[error("ci: step `{step}` cannot run: {message}")]
    Missing {
        /// The step.
        step: &'static str,
        /// What is missing and how to install it.
        message: String,
    },
}

fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// Runs the pipeline in `root`.
///
/// # Errors
/// At the first step that fails, cannot start, or lacks a required tool.
pub fn run(root: &Path, env: &Env) -> Result<(), CiError> {
    let steps = steps(env);
    let total = steps.len();
    let started = Instant::now();
    let mut timings = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        println!("\n==> [{}/{total}] {}: {step}", i + 1, step.name);
        if let Some(notice) = &step.skip {
            println!("    skipped: {notice}");
            timings.push((step.name, None));
            continue;
        }
        if let Some(message) = &step.missing {
            return Err(CiError::Missing {
                step: step.name,
                message: message.clone(),
            });
        }
        let mut command = match step.program {
            Program::Cargo => Command::new(cargo()),
            Program::Xtask => {
                Command::new(std::env::current_exe().unwrap_or_else(|_| PathBuf::from("xtask")))
            }
        };
        command.args(&step.args).current_dir(root);
        for (key, value) in &step.env {
            command.env(key, value);
        }
        let start = Instant::now();
        let status = command.status().map_err(|source| CiError::Spawn {
            step: step.name,
            command: step.to_string(),
            source,
        })?;
        let elapsed = start.elapsed();
        if !status.success() {
            return Err(CiError::Failed {
                step: step.name,
                command: step.to_string(),
                status,
                elapsed,
            });
        }
        println!("<== {} ok in {:.1}s", step.name, elapsed.as_secs_f64());
        timings.push((step.name, Some(elapsed)));
    }
    println!(
        "\nci: all steps passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for (name, elapsed) in timings {
        match elapsed {
            Some(d) => println!("    {name:<18} {:>7.1}s", d.as_secs_f64()),
            None => println!("    {name:<18} skipped"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            github_actions: false,
            ci: false,
            cargo_deny_installed: true,
        }
    }

    fn names(steps: &[Step]) -> Vec<&'static str> {
        steps.iter().map(|s| s.name).collect()
    }

    #[test]
    fn steps_run_cheapest_first_and_tests_last() {
        assert_eq!(
            names(&steps(&env())),
            [
                "fmt",
                "clippy",
                "check-boundaries",
                "codeowners",
                "cargo-deny",
                "check-contracts",
                "docs",
                "test"
            ]
        );
        let test = steps(&env()).pop().map(|s| s.to_string());
        assert_eq!(test.as_deref(), Some("cargo xtask test"));
    }

    #[test]
    fn github_actions_get_annotations() {
        let steps = steps(&Env {
            github_actions: true,
            ..env()
        });
        assert_eq!(
            steps[2].to_string(),
            "cargo xtask check-boundaries --format github"
        );
    }

    #[test]
    fn missing_cargo_deny_is_a_notice_locally_and_a_failure_in_ci() {
        let local = steps(&Env {
            cargo_deny_installed: false,
            ..env()
        });
        assert!(local[4].skip.is_some() && local[4].missing.is_none());
        let ci = steps(&Env {
            cargo_deny_installed: false,
            ci: true,
            ..env()
        });
        assert!(ci[4].missing.is_some() && ci[4].skip.is_none());
    }
}
