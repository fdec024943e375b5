//! `cargo xtask bench …`: runs the `keel-bench` harness (the `bench` crate) in release mode,
//! passing every argument through, e.g.
//! `cargo xtask bench queue --database-url sqlite: --jobs 20000 --concurrency 8 --json`;
//! `cargo xtask bench suite` runs every scenario into `bench/results/latest.jsonl`, and
//! `cargo xtask bench report --write` turns that file into BENCHMARKS.md's generated part and
//! the charts in `bench/charts/`; `cargo xtask bench profile` draws CPU flamegraphs of a
//! drain and of the write path.
//!
//! Benchmarks are not tests: they print figures and never fail on a timing.

use std::path::Path;
use std::process::{Command, ExitCode};

/// Cargo's words for `keel-bench`, in release mode, after `run` or `build`.
pub const KEEL_BENCH: [&str; 6] = ["--quiet", "--release", "-p", "bench", "--bin", "keel-bench"];

/// Builds and runs `keel-bench` with `args`; its exit status becomes ours. `profile` is
/// ours, not the harness's: see [`crate::profile`].
pub fn run(root: &Path, args: &[&str]) -> ExitCode {
    if let Some((&"profile", rest)) = args.split_first() {
        return crate::profile::run(root, rest);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .arg("run")
        .args(KEEL_BENCH)
        .arg("--")
        .args(args)
        .status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => ExitCode::from(u8::try_from(s.code().unwrap_or(1)).unwrap_or(1)),
        Err(e) => {
            eprintln!("bench: cannot run cargo: {e}");
            ExitCode::from(2)
        }
    }
}
