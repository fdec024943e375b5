//! `cargo xtask`: Keel's project automation. This file only parses arguments and turns
//! outcomes into exit codes (0 ok, 1 check failed, 2 usage or configuration error); the
//! work lives in the library.

mod bench;
mod profile;

use std::path::PathBuf;
use std::process::ExitCode;

use xtask::boundaries::{self, report::Format};
use xtask::codeowners::{self, Freshness};
use xtask::workspace::{Workspace, own_root};
use xtask::{ci, suite, tidy};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  check-boundaries [--format human|json|github] [--manifest-path PATH]
                      check module boundaries (roles, imports, included files, SQL tables)
  codeowners [--check] [--manifest-path PATH]
                      write .github/CODEOWNERS from each crate's owner (--check: exit 1 if stale)
  tidy                every .rs file opens with a `//!` doc; no dbg!/todo!/unimplemented!
  check-contracts [--bless] [--dump FILE]
                      event schemas, golden corpus, consumer contracts, payload discipline
                      (--bless: write snapshots of compatible changes and new versions)
  docs [--check] [--dump FILE]
                      write docs/events.md, the event catalog (--check: exit 1 if stale)
  bench queue --database-url URL --jobs N --concurrency C [--json] [...]
                      run the queue benchmark in release mode (`cargo xtask bench` lists its options)
  bench profile [--database-url URL] [--only drain|write]
                      CPU flamegraphs of a drain and of the write path (perf + inferno), written
                      to bench/charts/profile-*.svg
  test [CARGO TEST ARGS] [-- LIBTEST ARGS]
                      the test suite on both backends: `cargo test --workspace`, with the tests
                      whose PostgreSQL or chromium is missing skipped and named (none under CI)
  ci                  the whole CI pipeline: fmt, clippy, boundaries, codeowners, cargo deny, tests
  help                this text

exit status: 0 ok, 1 check failed, 2 usage or configuration error (for `test`: a missing
PostgreSQL or chromium that may not be skipped)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(Usage(message)) => {
            eprintln!("error: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

struct Usage(String);

/// Pulls `--name VALUE` (or `--name=VALUE`) out of `args`.
fn take_value(args: &mut Vec<&str>, name: &str) -> Result<Option<String>, Usage> {
    let Some(i) = args
        .iter()
        .position(|a| *a == name || a.starts_with(&format!("{name}=")))
    else {
        return Ok(None);
    };
    let arg = args.remove(i);
    if let Some(value) = arg.strip_prefix(&format!("{name}=")) {
        return Ok(Some(value.to_owned()));
    }
    if i < args.len() {
        Ok(Some(args.remove(i).to_owned()))
    } else {
        Err(Usage(format!("`{name}` needs a value")))
    }
}

fn take_flag(args: &mut Vec<&str>, name: &str) -> bool {
    args.iter()
        .position(|a| *a == name)
        .map(|i| args.remove(i))
        .is_some()
}

fn no_more(args: &[&str]) -> Result<(), Usage> {
    match args.first() {
        Some(extra) => Err(Usage(format!("unexpected argument `{extra}`"))),
        None => Ok(()),
    }
}

fn manifest_path(args: &mut Vec<&str>) -> Result<PathBuf, Usage> {
    Ok(take_value(args, "--manifest-path")?
        .map_or_else(|| own_root().join("Cargo.toml"), PathBuf::from))
}

fn run(args: &[String]) -> Result<ExitCode, Usage> {
    let Some((command, rest)) = args.split_first() else {
        return Err(Usage("no command given".to_owned()));
    };
    let mut rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match command.as_str() {
        "check-boundaries" => {
            let format = match take_value(&mut rest, "--format")? {
                None => Format::Human,
                Some(name) => Format::parse(&name).ok_or_else(|| {
                    Usage(format!(
                        "unknown format `{name}`; expected human, json or github"
                    ))
                })?,
            };
            let manifest = manifest_path(&mut rest)?;
            no_more(&rest)?;
            Ok(check_boundaries(&manifest, format))
        }
        "codeowners" => {
            let check = take_flag(&mut rest, "--check");
            let manifest = manifest_path(&mut rest)?;
            no_more(&rest)?;
            Ok(codeowners_command(&manifest, check))
        }
        "tidy" => {
            no_more(&rest)?;
            let problems = tidy::check(&own_root(), &tidy::CHECKED_DIRS);
            for problem in &problems {
                println!("{problem}");
            }
            if problems.is_empty() {
                println!("tidy: ok");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("tidy: {} problem(s)", problems.len());
                Ok(ExitCode::FAILURE)
            }
        }
        "ci" => {
            no_more(&rest)?;
            match ci::run(&own_root(), &ci::Env::detect()) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("\n{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        "check-contracts" => {
            let bless = take_flag(&mut rest, "--bless");
            let dump = take_value(&mut rest, "--dump")?.map(PathBuf::from);
            no_more(&rest)?;
            Ok(xtask::contracts::command(
                &own_root(),
                dump.as_deref(),
                bless,
            ))
        }
        "docs" => {
            let check = take_flag(&mut rest, "--check");
            let dump = take_value(&mut rest, "--dump")?.map(PathBuf::from);
            no_more(&rest)?;
            Ok(xtask::docs::command(&own_root(), dump.as_deref(), check))
        }
        "bench" => Ok(bench::run(&own_root(), &rest)),
        "test" => Ok(suite::command(&own_root(), &rest)),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(Usage(format!("unknown command `{other}`"))),
    }
}

fn check_boundaries(manifest: &std::path::Path, format: Format) -> ExitCode {
    match boundaries::check_path(manifest) {
        Ok(report) => {
            print!("{}", boundaries::report::render(&report, format));
            if report.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(errors) => {
            let text = boundaries::report::render_config_errors(&errors, format);
            if format == Format::Human {
                eprint!("{text}");
            } else {
                print!("{text}");
            }
            ExitCode::from(2)
        }
    }
}

fn codeowners_command(manifest: &std::path::Path, check: bool) -> ExitCode {
    let workspace = match Workspace::load(manifest) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = if check {
        codeowners::check(&workspace).map(|freshness| match freshness {
            Freshness::Fresh => {
                println!("codeowners: {} is up to date", codeowners::PATH);
                ExitCode::SUCCESS
            }
            Freshness::Stale(at) => {
                let place = at.map_or_else(|| " (missing)".to_owned(), |p| format!(" (first difference at line {})", p.line));
                eprintln!(
                    "codeowners: {}{place} is stale: it does not match the crates' `owner` keys; run `cargo xtask codeowners` and commit the result",
                    codeowners::PATH
                );
                ExitCode::FAILURE
            }
        })
    } else {
        codeowners::write(&workspace).map(|path| {
            println!("codeowners: wrote {}", workspace.relative(&path));
            ExitCode::SUCCESS
        })
    };
    outcome.unwrap_or_else(|e| {
        eprintln!("configuration error: {e}");
        ExitCode::from(2)
    })
}
