//! `cargo xtask bench profile`: CPU profiles of the Keel process as flamegraphs — one while
//! it drains a queue, one while it serves the write path — so the next person sees where
//! the time goes before changing anything.
//!
//! Sampling is `perf record` (Debian's `linux-perf`) with DWARF call graphs, which the
//! release build's debug info makes readable; folding the stacks and drawing the SVG are
//! inferno's `inferno-collapse-perf` and `inferno-flamegraph`, installed with
//! `cargo install inferno --locked` when missing. Both are tools run beside the workspace,
//! never linked into it. The profiled process is `keel-bench`, which runs Keel's runtime
//! (and, for the write path, the whole app with its HTTP server) in-process; PostgreSQL's
//! own processes are not in the profile, and neither is `pgbench` (its stacks are dropped).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Samples per second and thread: enough for a readable graph from a ten-second run, few
/// enough that DWARF stacks stay in the tens of megabytes.
const FREQUENCY: &str = "199";
/// Bytes of stack copied per sample for DWARF unwinding.
const STACK_BYTES: &str = "16384";

const USAGE: &str = "usage: cargo xtask bench profile [--database-url URL] [--jobs N] [--seconds S] [--only drain|write]

  --database-url URL   where the profiled runs keep their data
                       (default postgres://postgres@127.0.0.1:5432/postgres; sqlite: works too)
  --jobs N             jobs enqueued, then drained at concurrency 10, in the drain profile
                       (default 100000)
  --seconds S          how long 4 clients POST /records in the write profile (default 10)
  --only P             just one of the two profiles

writes bench/charts/profile-drain.svg and bench/charts/profile-write.svg";

/// What to profile.
struct Options {
    database_url: String,
    jobs: String,
    seconds: String,
    only: Option<String>,
}

/// One profile: its name, what `keel-bench` runs, and the graph's title.
struct Profile {
    name: &'static str,
    args: Vec<String>,
    title: &'static str,
}

/// Runs the profiles `args` ask for; fails with a message naming what is missing.
pub fn run(root: &Path, args: &[&str]) -> ExitCode {
    let options = match parse(args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match profile_all(root, &options) {
        Ok(written) => {
            for svg in written {
                println!("profile: wrote {}", svg.display());
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: bench profile: {message}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: &[&str]) -> Result<Options, String> {
    let mut options = Options {
        database_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
        jobs: "100000".into(),
        seconds: "10".into(),
        only: None,
    };
    let mut args = args.iter();
    while let Some(&flag) = args.next() {
        let mut value = || {
            args.next()
                .map(|v| (*v).to_owned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--database-url" => options.database_url = value()?,
            "--jobs" => options.jobs = number(flag, value()?)?,
            "--seconds" => options.seconds = number(flag, value()?)?,
            "--only" => {
                let only = value()?;
                if only != "drain" && only != "write" {
                    return Err(format!("--only takes drain or write, not `{only}`"));
                }
                options.only = Some(only);
            }
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    Ok(options)
}

fn number(flag: &str, value: String) -> Result<String, String> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(value),
        _ => Err(format!(
            "{flag} takes a positive whole number, not `{value}`"
        )),
    }
}

fn profile_all(root: &Path, options: &Options) -> Result<Vec<PathBuf>, String> {
    require(
        "perf",
        &["--version"],
        "install it with `apt-get install linux-perf`",
    )?;
    ensure_inferno()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    step(
        Command::new(cargo)
            .current_dir(root)
            .arg("build")
            .args(crate::bench::KEEL_BENCH),
        "building keel-bench",
    )?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bench = target.join("release").join("keel-bench");
    let work = target.join("profile");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let url = options.database_url.clone();
    let profiles = [
        Profile {
            name: "drain",
            args: vec![
                "queue".into(),
                "--database-url".into(),
                url.clone(),
                "--jobs".into(),
                options.jobs.clone(),
                "--concurrency".into(),
                "10".into(),
                "--no-single".into(),
                "--latency-samples".into(),
                "0".into(),
            ],
            title: "Keel draining a queue (keel-bench queue: batched enqueue, then drain at C = 10)",
        },
        Profile {
            name: "write",
            args: vec![
                "write".into(),
                "--database-url".into(),
                url,
                "--clients".into(),
                "4".into(),
                "--seconds".into(),
                options.seconds.clone(),
            ],
            title: "Keel serving POST /records (keel-bench write: 4 clients, workers running)",
        },
    ];
    let mut written = Vec::new();
    for profile in profiles
        .iter()
        .filter(|p| options.only.as_deref().is_none_or(|only| only == p.name))
    {
        written.push(record(root, &bench, &work, profile)?);
    }
    Ok(written)
}

/// Records one profile and draws it; returns the SVG's path.
fn record(root: &Path, bench: &Path, work: &Path, profile: &Profile) -> Result<PathBuf, String> {
    let data = work.join(format!("{}.perf.data", profile.name));
    println!(
        "profile: {} — perf record -- keel-bench {}",
        profile.name,
        profile.args.join(" ")
    );
    step(
        Command::new("perf")
            .args(["record", "--quiet", "-F", FREQUENCY, "--call-graph"])
            .arg(format!("dwarf,{STACK_BYTES}"))
            .arg("-o")
            .arg(&data)
            .arg("--")
            .arg(bench)
            .args(&profile.args),
        "perf record",
    )?;
    let script = output(
        Command::new("perf").arg("script").arg("-i").arg(&data),
        "perf script",
    )?;
    let folded = pipe("inferno-collapse-perf", &[], &script)?;
    // The write scenario runs pgbench after Keel, as a child: its stacks are not Keel's.
    let keel_only: String = String::from_utf8_lossy(&folded)
        .lines()
        .filter(|line| !line.starts_with("pgbench"))
        .map(|line| format!("{line}\n"))
        .collect();
    let command = format!("keel-bench {}", profile.args.join(" "));
    let svg = pipe(
        "inferno-flamegraph",
        // Frames narrower than a pixel are left out: a readable graph, a file of a few
        // hundred kilobytes rather than megabytes.
        &[
            "--title",
            profile.title,
            "--subtitle",
            &command,
            "--minwidth",
            "1",
        ],
        keel_only.as_bytes(),
    )?;
    let path = root
        .join("bench")
        .join("charts")
        .join(format!("profile-{}.svg", profile.name));
    std::fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Installs inferno's two commands when they are not on `PATH`.
fn ensure_inferno() -> Result<(), String> {
    if require("inferno-flamegraph", &["--help"], "").is_ok()
        && require("inferno-collapse-perf", &["--help"], "").is_ok()
    {
        return Ok(());
    }
    println!("profile: installing inferno (cargo install inferno --locked)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    step(
        Command::new(cargo).args(["install", "inferno", "--locked"]),
        "cargo install inferno",
    )?;
    require(
        "inferno-flamegraph",
        &["--help"],
        "installed, but not on PATH: add ~/.cargo/bin to it",
    )
}

/// Fails unless `program args` runs and succeeds.
fn require(program: &str, args: &[&str], hint: &str) -> Result<(), String> {
    match Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => Ok(()),
        _ => Err(format!(
            "`{program}` is needed and does not run here; {hint}"
        )),
    }
}

fn step(command: &mut Command, what: &str) -> Result<(), String> {
    match command.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("{what} failed ({status})")),
        Err(e) => Err(format!("{what} could not start: {e}")),
    }
}

fn output(command: &mut Command, what: &str) -> Result<Vec<u8>, String> {
    let out = command
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("{what} could not start: {e}"))?;
    if !out.status.success() {
        return Err(format!("{what} failed ({})", out.status));
    }
    Ok(out.stdout)
}

/// Runs `program args` with `input` on its stdin; returns its stdout.
fn pipe(program: &str, args: &[&str], input: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write as _;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program} could not start: {e}"))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| format!("{program}: no stdin"))?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    writer
        .join()
        .map_err(|_| format!("{program}: writing its input panicked"))?
        .map_err(|e| format!("{program}: writing its input: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program} failed ({})", out.status));
    }
    Ok(out.stdout)
}
