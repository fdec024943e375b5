//! `cargo xtask test`: the README's test command. It runs `cargo test --workspace` on both
//! backends when it can, and counts honestly when it cannot: tests whose PostgreSQL server or
//! browser is missing are left out with libtest `--skip` filters (so they show as "filtered
//! out", not "passed"), and the last line names them, why, and how to run them. Under `CI`
//! nothing may be left out; `cargo xtask ci` runs its tests through this command.
//!
//! [`probe`] gathers the facts, [`plan`] decides (pure, tested); this file runs cargo.
//! Arguments pass through: `cargo xtask test -p tests -- dashboard`.

pub mod plan;
pub mod probe;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use plan::{Plan, Skip};

fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// Probes, plans and runs the tests in `root` with the caller's `args`; exit 0 when they
/// pass (skips included, named in the last line), 1 when they fail, 2 when a missing
/// resource may not be skipped.
#[must_use]
pub fn command(root: &Path, args: &[&str]) -> ExitCode {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let facts = probe::detect();
    let plan = match plan::plan(&facts) {
        Ok(plan) => plan,
        Err(refusals) => {
            for refusal in refusals {
                eprintln!("error: test: {refusal}");
            }
            return ExitCode::from(2);
        }
    };
    let counts = if plan.skips.is_empty() {
        Vec::new()
    } else {
        match count_left_out(root, &args, &plan.skips) {
            Ok(counts) => counts,
            Err(code) => return code,
        }
    };
    let test_args = plan::test_args(&args, &plan.skips);
    println!("==> {}", shown(&plan, &test_args));
    let status = Command::new(cargo())
        .args(&test_args)
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .current_dir(root)
        .status();
    let code = match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: test: cannot run cargo: {e}");
            return ExitCode::from(2);
        }
    };
    println!("\n{}", plan::summary(&plan, &counts));
    code
}

/// Lists the selected tests (building them, with the build's output shown) and counts what
/// each skip leaves out; on a failed build, the exit code to stop with.
fn count_left_out(
    root: &Path,
    args: &[String],
    skips: &[Skip],
) -> Result<Vec<Option<usize>>, ExitCode> {
    let output = Command::new(cargo())
        .args(plan::list_args(args))
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output();
    match output {
        Ok(out) if out.status.success() => {
            let listing = String::from_utf8_lossy(&out.stdout);
            Ok(skips
                .iter()
                .map(|s| Some(plan::count_left_out(&listing, s.need.filter())))
                .collect())
        }
        Ok(out) => {
            print!("{}", String::from_utf8_lossy(&out.stdout));
            eprintln!("error: test: listing the tests failed ({})", out.status);
            Err(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("error: test: cannot run cargo: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// The command line as a shell would take it, passwords masked.
fn shown(plan: &Plan, args: &[String]) -> String {
    let mut line = String::new();
    for (key, value) in &plan.env {
        line.push_str(&format!("{key}={} ", plan::redacted(value)));
    }
    line.push_str("cargo ");
    line.push_str(&args.join(" "));
    line
}
