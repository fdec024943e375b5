//! The peers scenario (issue 7, scenario 6): graphile-worker and apalis-postgres draining the
//! same N no-op jobs at the same concurrency on the same PostgreSQL server, in the same run
//! as Keel's own queue scenario, and Keel ÷ peer ratios.
//!
//! Each peer is its own project under `bench/peers/` with its lockfile (see the README
//! there). This module installs them (`npm ci`; `cargo build --release --locked` with its own
//! target folder), runs every mode of every peer for R rounds — each run a child process on
//! a fresh database of its own — and takes medians. Every peer run prints one JSON line,
//! which is read back here.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::flags::Flags;
use crate::queue::{self, BacklogKind};
use crate::stats::median;

/// `keel-bench peers --help`.
pub const USAGE: &str = "\
usage: keel-bench peers --database-url postgres://… [--jobs 20000] [--concurrency 10]
                        [--batch 500] [--callers 4] [--rounds 1]
                        [--only graphile-worker,apalis] [--keel 1] [--peers-dir DIR]

  graphile-worker 0.17 (modes default, batched) and apalis-postgres 1.0 (fetch-10,
  fetch-100) drain N no-op jobs at concurrency C on the PostgreSQL server given, each run
  on a fresh database; Keel's queue scenario runs with the same N, C, batch and rounds.
  Prints one JSON line per peer mode (medians over the rounds), then one with Keel's
  figures and the Keel ÷ peer ratios.

  --batch B      jobs per bulk enqueue call (Keel: per transaction)
  --callers K    one-job-per-transaction enqueue from K callers (0 skips it)
  --keel 0       skip Keel's queue scenario (no ratios)
  needs node and npm (graphile-worker: `npm ci`) and cargo (apalis: built in
  target/peers, or $KEEL_PEERS_TARGET_DIR)";

/// Runs `keel-bench peers …` and prints its JSON lines.
pub fn main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let opts = match Flags::parse(args).and_then(|f| Options::from_flags(&f)) {
        Ok(o) => o,
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(rt) = crate::tokio_runtime() else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(run(&opts)) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The PostgreSQL server (each run creates and drops its own database there).
    pub database_url: String,
    /// N: jobs enqueued and drained per run.
    pub jobs: usize,
    /// Concurrency while draining.
    pub concurrency: usize,
    /// Jobs per bulk enqueue call (Keel: per transaction).
    pub batch: usize,
    /// Callers of the one-job-per-transaction enqueue (0 skips it).
    pub callers: usize,
    /// Rounds; figures are medians.
    pub rounds: usize,
    /// Which peers (`graphile-worker`, `apalis`).
    pub only: Vec<Peer>,
    /// Whether Keel's queue scenario runs too (needed for the ratios).
    pub keel: bool,
    /// Where the peers' folders are.
    pub dir: PathBuf,
}

impl Options {
    /// Reads the flags of `keel-bench peers`.
    pub fn from_flags(f: &Flags) -> Result<Self, String> {
        let only = match f.text("--only") {
            Ok(list) => list
                .split(',')
                .map(|p| Peer::parse(p).ok_or_else(|| format!("`--only`: unknown peer `{p}`")))
                .collect::<Result<Vec<_>, _>>()?,
            Err(_) => Peer::ALL.to_vec(),
        };
        let opts = Self {
            database_url: f.text("--database-url")?,
            jobs: f.number("--jobs", 20_000)?,
            concurrency: f.number("--concurrency", 10)?,
            batch: f.number("--batch", 500)?,
            callers: f.number("--callers", 4)?,
            rounds: f.number("--rounds", 1)?,
            only,
            keel: f.number("--keel", 1)? != 0,
            dir: f
                .text("--peers-dir")
                .map_or_else(|_| default_dir(), PathBuf::from),
        };
        f.finish()?;
        Ok(opts)
    }
}

/// A peer system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// npm `graphile-worker`, run by Node.js.
    Graphile,
    /// crates.io `apalis` + `apalis-postgres`.
    Apalis,
}

impl Peer {
    /// Every peer, in the order they run.
    pub const ALL: [Self; 2] = [Self::Graphile, Self::Apalis];

    /// Parses `graphile-worker` (or `graphile`) and `apalis` (or `apalis-postgres`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "graphile-worker" | "graphile" => Some(Self::Graphile),
            "apalis" | "apalis-postgres" => Some(Self::Apalis),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Graphile => "graphile-worker",
            Self::Apalis => "apalis-postgres",
        }
    }

    /// Its modes: the flags that select each, and the mode's name in the JSON line.
    fn modes(self) -> &'static [(&'static str, &'static [&'static str])] {
        match self {
            Self::Graphile => &[
                ("default", &["--mode", "default"]),
                ("batched", &["--mode", "batched"]),
            ],
            Self::Apalis => &[
                ("fetch-10", &["--fetch", "10"]),
                ("fetch-100", &["--fetch", "100"]),
            ],
        }
    }
}

/// The peers' folder in this checkout.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// A peer, installed and ready to run.
#[derive(Debug)]
struct Installed {
    peer: Peer,
    program: PathBuf,
    /// Arguments before the common ones (the script, for Node.js).
    prefix: Vec<String>,
    cwd: PathBuf,
}

/// Runs Keel's queue scenario and every peer mode; returns the JSON lines to print (one per
/// peer mode, then the summary with the ratios).
///
/// # Errors
/// Fails when a peer cannot be installed (naming what failed), a run fails, or Keel's
/// queue scenario fails.
pub async fn run(opts: &Options) -> anyhow::Result<Vec<Value>> {
    if opts.jobs == 0 || opts.concurrency == 0 || opts.batch == 0 || opts.rounds == 0 {
        bail!("--jobs, --concurrency, --batch and --rounds must be at least 1");
    }
    if !opts.database_url.starts_with("postgres") {
        bail!("the peers run on PostgreSQL only: give a postgres:// URL");
    }
    let mut installed = Vec::new();
    for peer in Peer::ALL.into_iter().filter(|p| opts.only.contains(p)) {
        eprintln!("peers: installing {}", peer.name());
        let dir = opts.dir.clone();
        let one = tokio::task::spawn_blocking(move || install(peer, &dir)).await??;
        installed.push(one);
    }

    let keel = if opts.keel {
        eprintln!("peers: Keel's queue scenario, same N, concurrency, batch and rounds");
        let summary = queue::run(&queue::Options {
            database_url: opts.database_url.clone(),
            jobs: opts.jobs,
            concurrency: opts.concurrency,
            batch: opts.batch,
            backlog: 0,
            backlog_kind: BacklogKind::OtherQueue,
            callers: opts.callers.max(1),
            latency_samples: 0,
            rounds: opts.rounds,
            single: opts.callers > 0,
            replicas: 1,
        })
        .await
        .context("Keel's queue scenario")?;
        Some(summary)
    } else {
        None
    };

    // Every run of every mode, rounds interleaved so a slow moment of the machine does not
    // land on one mode only.
    let mut lines = Vec::new();
    let mut per_mode: Vec<(Peer, &str, Vec<Value>)> = Vec::new();
    for one in &installed {
        for (mode, _) in one.peer.modes() {
            per_mode.push((one.peer, *mode, Vec::new()));
        }
    }
    for round in 0..opts.rounds {
        for one in &installed {
            for (i, (mode, flags)) in one.peer.modes().iter().enumerate() {
                eprintln!(
                    "peers: round {}/{}: {} {mode}",
                    round + 1,
                    opts.rounds,
                    one.peer.name()
                );
                // The one-job-per-transaction enqueue does not depend on the worker's mode:
                // measured in each peer's first mode only.
                let callers = if i == 0 { opts.callers } else { 0 };
                let line = run_once(one, opts, flags, callers).await?;
                if let Some(slot) = per_mode
                    .iter_mut()
                    .find(|(p, m, _)| *p == one.peer && m == mode)
                {
                    slot.2.push(line);
                }
            }
        }
    }
    let mut ratios = Vec::new();
    for (peer, mode, runs) in &per_mode {
        let line = summarize(*peer, mode, runs)?;
        if let Some(keel) = &keel {
            ratios.push(ratio(keel, &line));
        }
        lines.push(line);
    }
    lines.push(json!({
        "scenario": "peers",
        "n": opts.jobs,
        "concurrency": opts.concurrency,
        "batch": opts.batch,
        "rounds": opts.rounds,
        "keel": keel,
        "ratios": ratios,
    }));
    Ok(lines)
}

/// Installs `peer` from its folder under `dir`.
fn install(peer: Peer, dir: &Path) -> anyhow::Result<Installed> {
    match peer {
        Peer::Graphile => {
            let cwd = dir.join("graphile-worker");
            for tool in ["node", "npm"] {
                let out = Command::new(tool)
                    .arg("--version")
                    .output()
                    .with_context(|| {
                        format!(
                            "graphile-worker needs `{tool}` (Node.js 18+) on PATH; it was not found"
                        )
                    })?;
                if !out.status.success() {
                    bail!(
                        "graphile-worker: `{tool} --version` failed ({})",
                        out.status
                    );
                }
            }
            if needs_npm_ci(&cwd) {
                eprintln!("peers: npm ci in {}", cwd.display());
                let status = Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(&cwd)
                    .stdout(Stdio::null())
                    .status()
                    .with_context(|| format!("running `npm ci` in {}", cwd.display()))?;
                if !status.success() {
                    bail!(
                        "installing graphile-worker failed: `npm ci` in {} exited with {status}",
                        cwd.display()
                    );
                }
            }
            Ok(Installed {
                peer,
                program: "node".into(),
                prefix: vec!["bench.mjs".to_owned()],
                cwd,
            })
        }
        Peer::Apalis => {
            let cwd = dir.join("apalis");
            let target = std::env::var_os("KEEL_PEERS_TARGET_DIR").map_or_else(
                || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/peers"),
                PathBuf::from,
            );
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--release", "--locked", "--quiet"])
                .current_dir(&cwd)
                .env("CARGO_TARGET_DIR", &target)
                // apalis-postgres checks its queries at compile time: from its shipped
                // `.sqlx` data, never against a live DATABASE_URL.
                .env("SQLX_OFFLINE", "true")
                .env_remove("DATABASE_URL")
                .status()
                .with_context(|| format!("running `cargo build` in {}", cwd.display()))?;
            if !status.success() {
                bail!(
                    "building apalis failed: `cargo build --release --locked` in {} exited with {status}",
                    cwd.display()
                );
            }
            Ok(Installed {
                peer,
                program: target.join("release/keel-peer-apalis"),
                prefix: Vec::new(),
                cwd,
            })
        }
    }
}

/// Whether `node_modules` is missing or older than the lockfile.
fn needs_npm_ci(cwd: &Path) -> bool {
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(cwd.join("node_modules/.package-lock.json")),
        modified(cwd.join("package-lock.json")),
    ) {
        (Some(installed), Some(lock)) => installed < lock,
        _ => true,
    }
}

/// One run of one peer mode: a child process; its last stdout line is its JSON.
async fn run_once(
    one: &Installed,
    opts: &Options,
    flags: &[&str],
    callers: usize,
) -> anyhow::Result<Value> {
    let mut cmd = tokio::process::Command::new(&one.program);
    cmd.args(&one.prefix)
        .args([
            "--database-url",
            &opts.database_url,
            "--jobs",
            &opts.jobs.to_string(),
            "--concurrency",
            &opts.concurrency.to_string(),
            "--batch",
            &opts.batch.to_string(),
            "--callers",
            &callers.to_string(),
        ])
        .args(flags)
        .current_dir(&one.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let what = format!("{} {}", one.peer.name(), flags.join(" "));
    // Not `output()`: it would capture stderr too, and the peer's progress belongs there.
    let out = cmd
        .spawn()
        .with_context(|| format!("starting {what} ({})", one.program.display()))?
        .wait_with_output()
        .await
        .with_context(|| format!("waiting for {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .with_context(|| format!("{what} printed no JSON line"))?;
    serde_json::from_str(last).with_context(|| format!("{what} printed `{last}`, not JSON"))
}

/// One JSON line for a peer mode: the first run's identity, the medians of its figures.
fn summarize(peer: Peer, mode: &str, runs: &[Value]) -> anyhow::Result<Value> {
    let Some(first) = runs.first() else {
        bail!("{} {mode}: no runs", peer.name());
    };
    let figures = |key: &str| -> Vec<f64> { runs.iter().filter_map(|r| r[key].as_f64()).collect() };
    let med = |key: &str| median(&figures(key)).map(|x| (x * 10.0).round() / 10.0);
    Ok(json!({
        "scenario": "peer",
        "peer": peer.name(),
        "mode": mode,
        "version": first["version"],
        "backend": "postgres",
        "n": first["n"],
        "concurrency": first["concurrency"],
        "batch": first["batch"],
        "rounds": runs.len(),
        "enqueue_jobs_per_s": med("enqueue_jobs_per_s"),
        "drain_jobs_per_s": med("drain_jobs_per_s"),
        "enqueue_single_jobs_per_s": med("enqueue_single_jobs_per_s"),
        "enqueue_callers": first_callers(runs),
        "drain_jobs_per_s_rounds": figures("drain_jobs_per_s"),
        "enqueue_jobs_per_s_rounds": figures("enqueue_jobs_per_s"),
    }))
}

/// The callers of the one-job-per-transaction enqueue, when it was measured.
fn first_callers(runs: &[Value]) -> Value {
    runs.iter()
        .find(|r| !r["enqueue_single_jobs_per_s"].is_null())
        .map_or(Value::Null, |r| r["enqueue_callers"].clone())
}

/// Keel ÷ peer for one peer mode: drain; bulk enqueue (Keel's B-per-transaction enqueue
/// against the peer's B-per-call bulk add); one job per transaction where both measured it.
fn ratio(keel: &Value, peer: &Value) -> Value {
    let over = |k: &str, p: &str| match (keel[k].as_f64(), peer[p].as_f64()) {
        (Some(k), Some(p)) if p > 0.0 => json!((k / p * 1000.0).round() / 1000.0),
        _ => Value::Null,
    };
    json!({
        "peer": peer["peer"],
        "mode": peer["mode"],
        "keel_drain_over_peer": over("drain_jobs_per_s", "drain_jobs_per_s"),
        "keel_enqueue_over_peer": over("enqueue_batched_jobs_per_s", "enqueue_jobs_per_s"),
        "keel_single_enqueue_over_peer": over("enqueue_jobs_per_s", "enqueue_single_jobs_per_s"),
    })
}

#[cfg(test)]
mod tests {
    use super::{Peer, ratio, summarize};
    use serde_json::json;

    #[test]
    fn peer_names_parse() {
        assert_eq!(Peer::parse("graphile-worker"), Some(Peer::Graphile));
        assert_eq!(Peer::parse(" apalis "), Some(Peer::Apalis));
        assert_eq!(Peer::parse("apalis-postgres"), Some(Peer::Apalis));
        assert_eq!(Peer::parse("oban"), None);
    }

    #[test]
    fn modes_summarize_to_medians_and_ratios() {
        let runs = [
            json!({"version": "0.17.3", "n": 10, "concurrency": 2, "batch": 5,
                   "enqueue_jobs_per_s": 100.0, "drain_jobs_per_s": 10.0,
                   "enqueue_single_jobs_per_s": 4.0, "enqueue_callers": 4}),
            json!({"version": "0.17.3", "n": 10, "concurrency": 2, "batch": 5,
                   "enqueue_jobs_per_s": 300.0, "drain_jobs_per_s": 30.0,
                   "enqueue_single_jobs_per_s": null, "enqueue_callers": 0}),
            json!({"version": "0.17.3", "n": 10, "concurrency": 2, "batch": 5,
                   "enqueue_jobs_per_s": 200.0, "drain_jobs_per_s": 20.0,
                   "enqueue_single_jobs_per_s": 6.0, "enqueue_callers": 4}),
        ];
        let line = summarize(Peer::Graphile, "default", &runs).expect("three runs");
        assert_eq!(line["drain_jobs_per_s"], json!(20.0));
        assert_eq!(line["enqueue_jobs_per_s"], json!(200.0));
        assert_eq!(line["enqueue_single_jobs_per_s"], json!(5.0));
        assert_eq!(line["enqueue_callers"], json!(4));
        assert_eq!(line["drain_jobs_per_s_rounds"], json!([10.0, 30.0, 20.0]));
        assert_eq!(line["rounds"], json!(3));

        let keel = json!({"drain_jobs_per_s": 50.0, "enqueue_batched_jobs_per_s": 100.0,
                          "enqueue_jobs_per_s": null});
        let r = ratio(&keel, &line);
        assert_eq!(r["keel_drain_over_peer"], json!(2.5));
        assert_eq!(r["keel_enqueue_over_peer"], json!(0.5));
        assert!(r["keel_single_enqueue_over_peer"].is_null());
        assert_eq!(r["peer"], json!("graphile-worker"));
    }
}
