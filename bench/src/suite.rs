//! `keel-bench suite`: the whole set of scenarios in one run. Each scenario is a child process
//! of this same binary (so each memory figure is one process's), and every JSON line it prints
//! is appended to a results file, made self-describing: which scenario, when (UTC), the exact
//! command that produced it, the suite command around it, the load average before it.
//!
//! A scenario that fails, or a subcommand that does not exist (`peers` while it is being
//! built), leaves an `"error"` line and the suite goes on. `keel-bench report` reads the file.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::flags::Flags;
use crate::machine;

/// Where the results go unless `--out` says otherwise.
pub const DEFAULT_OUT: &str = "bench/results/latest.jsonl";
/// The PostgreSQL server unless `--database-url-pg` says otherwise.
pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The concurrency issue 7 quotes for the peers; used when the peers do not say theirs.
const PEER_CONCURRENCY: usize = 10;
/// A scenario that runs longer than this is stopped and recorded as an error.
const CHILD_TIMEOUT: Duration = Duration::from_secs(45 * 60);
/// Names `--skip` accepts: groups of scenarios, or a backend.
const SKIPPABLE: [&str; 9] = [
    "queue", "backlog", "chain", "write", "memory", "soak", "peers", "sqlite", "postgres",
];
/// The retention of the soak steps: short, so pruning runs for most of the step.
const SOAK_RETENTION: &str = "30s";

/// The usage text of `suite`.
pub const USAGE: &str = "\
keel-bench suite [--database-url-pg URL] [--jobs 20000] [--rounds 1] [--seconds 10]
                 [--soak-seconds 120] [--quick] [--skip a,b] [--out bench/results/latest.jsonl]

  every scenario, each in a child process, on SQLite and PostgreSQL; appends every JSON line
  (with its UTC time and exact command) to --out. --quick skips the 1 000 000-job backlogs;
  the soak runs --soak-seconds per backend (retention 30 s; issue 11 quotes 600);
  --skip takes queue, backlog, chain, write, memory, soak, peers, sqlite, postgres";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The PostgreSQL server every PostgreSQL scenario runs on.
    pub pg_url: String,
    /// N for the queue, backlog, memory and peers scenarios.
    pub jobs: usize,
    /// Rounds of the queue scenarios (medians) and of the peers.
    pub rounds: usize,
    /// Duration of each chain load and write measurement.
    pub seconds: usize,
    /// Duration of each soak (shorter than the scenario's own 600 s default).
    pub soak_seconds: usize,
    /// Skip the 1 000 000-job backlogs.
    pub quick: bool,
    /// Groups or backends not to run.
    pub skip: BTreeSet<String>,
    /// The results file (appended to).
    pub out: PathBuf,
}

impl Options {
    /// Parses the flags of `suite`.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let quick = args.iter().any(|a| a == "--quick");
        let rest: Vec<String> = args.iter().filter(|a| *a != "--quick").cloned().collect();
        let f = Flags::parse(&rest)?;
        let text_or = |name: &str, default: &str| f.text(name).unwrap_or_else(|_| default.into());
        let skip: BTreeSet<String> = text_or("--skip", "")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(unknown) = skip.iter().find(|s| !SKIPPABLE.contains(&s.as_str())) {
            return Err(format!(
                "`--skip`: unknown `{unknown}` (known: {})",
                SKIPPABLE.join(", ")
            ));
        }
        let opts = Self {
            pg_url: text_or("--database-url-pg", DEFAULT_PG),
            jobs: f.number("--jobs", 20_000)?,
            rounds: f.number("--rounds", 1)?,
            seconds: f.number("--seconds", 10)?,
            soak_seconds: f.number("--soak-seconds", 120)?,
            quick,
            skip,
            out: PathBuf::from(text_or("--out", DEFAULT_OUT)),
        };
        f.finish()?;
        if opts.jobs == 0 || opts.rounds == 0 || opts.seconds == 0 || opts.soak_seconds == 0 {
            return Err(
                "`--jobs`, `--rounds`, `--seconds` and `--soak-seconds` must be at least 1"
                    .to_owned(),
            );
        }
        Ok(opts)
    }

    fn runs(&self, name: &str) -> bool {
        !self.skip.contains(name)
    }

    /// The backends not skipped, as (name, URL).
    fn backends(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.runs("sqlite") {
            out.push(("sqlite", "sqlite:".to_owned()));
        }
        if self.runs("postgres") {
            out.push(("postgres", self.pg_url.clone()));
        }
        out
    }
}

/// One child process of the suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The scenario its lines belong to when they do not say (`queue`, `chain`, …).
    pub scenario: &'static str,
    /// `sqlite`, `postgres`, or `None` (peers: PostgreSQL, but their own harness).
    pub backend: Option<&'static str>,
    /// The arguments after the program name.
    pub args: Vec<String>,
}

fn step(scenario: &'static str, backend: Option<&'static str>, args: &[&str]) -> Step {
    Step {
        scenario,
        backend,
        args: args.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// The peers step: the peers' own harness on the PostgreSQL server, same N and rounds.
pub fn peers_step(opts: &Options) -> Step {
    let (n, rounds) = (opts.jobs.to_string(), opts.rounds.to_string());
    step(
        "peers",
        None,
        &[
            "peers",
            "--database-url",
            &opts.pg_url,
            "--jobs",
            &n,
            "--rounds",
            &rounds,
        ],
    )
}

/// Every Keel step, in order; `peer_concurrency` is added to the queue's concurrencies so
/// Keel is measured at the peers' N and concurrency too.
pub fn keel_steps(opts: &Options, peer_concurrency: usize) -> Vec<Step> {
    let (n, rounds, seconds) = (
        opts.jobs.to_string(),
        opts.rounds.to_string(),
        opts.seconds.to_string(),
    );
    let backends = opts.backends();
    let mut steps = Vec::new();
    if opts.runs("queue") {
        let concurrencies: BTreeSet<usize> = [1, 8, 32, peer_concurrency].into();
        for (backend, url) in &backends {
            for c in &concurrencies {
                let c = c.to_string();
                let mut args = vec![
                    "queue",
                    "--database-url",
                    url,
                    "--jobs",
                    &n,
                    "--concurrency",
                    &c,
                    "--rounds",
                    &rounds,
                    "--json",
                ];
                // Enqueue one job per transaction and idle claim latency do not depend on
                // the drain's concurrency: measured once per backend, at C = 8.
                if c != "8" {
                    args.extend(["--no-single", "--latency-samples", "0"]);
                }
                steps.push(step("queue", Some(backend), &args));
            }
        }
    }
    let backlogs: &[&str] = if opts.quick {
        &["10000"]
    } else {
        &["10000", "1000000"]
    };
    if opts.runs("backlog") {
        for (backend, url) in &backends {
            for m in backlogs {
                steps.push(step(
                    "queue",
                    Some(backend),
                    &[
                        "queue",
                        "--database-url",
                        url,
                        "--jobs",
                        &n,
                        "--concurrency",
                        "32",
                        "--rounds",
                        &rounds,
                        "--no-single",
                        "--latency-samples",
                        "100",
                        "--backlog",
                        m,
                        "--backlog-kind",
                        "other-queue",
                        "--json",
                    ],
                ));
            }
        }
    }
    if opts.runs("chain") {
        for (backend, url) in &backends {
            steps.push(step(
                "chain",
                Some(backend),
                &[
                    "chain",
                    "--database-url",
                    url,
                    "--idle-samples",
                    "300",
                    "--rates",
                    "50,200,1000",
                    "--seconds",
                    &seconds,
                ],
            ));
        }
    }
    if opts.runs("write") {
        for (backend, url) in &backends {
            steps.push(step(
                "write",
                Some(backend),
                &[
                    "write",
                    "--database-url",
                    url,
                    "--clients",
                    "1,4",
                    "--seconds",
                    &seconds,
                ],
            ));
        }
    }
    if opts.runs("memory") {
        for (backend, url) in &backends {
            for m in backlogs {
                steps.push(step(
                    "memory",
                    Some(backend),
                    &[
                        "memory",
                        "--database-url",
                        url,
                        "--backlog",
                        m,
                        "--jobs",
                        &n,
                        "--concurrency",
                        "32",
                    ],
                ));
            }
        }
    }
    if opts.runs("soak") {
        let soak_seconds = opts.soak_seconds.to_string();
        for (backend, url) in &backends {
            steps.push(step(
                "soak",
                Some(backend),
                &[
                    "soak",
                    "--database-url",
                    url,
                    "--seconds",
                    &soak_seconds,
                    "--retention",
                    SOAK_RETENTION,
                ],
            ));
        }
    }
    steps
}

/// Runs `suite` with its arguments (after the word `suite`).
pub fn main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage:\n{USAGE}");
        return ExitCode::SUCCESS;
    }
    let opts = match Options::parse(args) {
        Ok(o) => o,
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(failed) => {
            eprintln!(
                "suite: done; {failed} step(s) failed; results appended to {}",
                opts.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What every line of this run shares.
struct Run {
    run_id: String,
    argv0: String,
    exe: PathBuf,
    suite_command: String,
    out: std::fs::File,
}

impl Run {
    /// Appends `line` (one JSON object) and flushes, so a later crash keeps it.
    fn append(&mut self, line: &Value) -> anyhow::Result<()> {
        writeln!(self.out, "{line}").context("writing the results file")?;
        self.out.flush().context("writing the results file")
    }
}

/// Runs every step; returns how many failed.
fn run(opts: &Options) -> anyhow::Result<usize> {
    if let Some(dir) = opts.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&opts.out)
        .with_context(|| format!("opening {}", opts.out.display()))?;
    let argv: Vec<String> = std::env::args().collect();
    let mut run = Run {
        run_id: chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string(),
        argv0: argv.first().cloned().unwrap_or_else(|| "keel-bench".into()),
        exe: std::env::current_exe().context("locating this binary")?,
        suite_command: command_line(&argv.iter().map(|a| redact_url(a)).collect::<Vec<_>>()),
        out,
    };

    let pg = opts.runs("postgres").then_some(opts.pg_url.as_str());
    let mut facts = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(machine::describe(pg)))
        .context("starting tokio")?;
    stamp(&mut facts, &run, None);
    run.append(&facts)?;

    let mut failed = 0;
    let mut peer_concurrency = PEER_CONCURRENCY;
    // The peers first: their concurrency decides the Keel run compared with them.
    if opts.runs("peers") && opts.runs("postgres") {
        let lines = run_step(&mut run, &peers_step(opts))?;
        failed += usize::from(lines.iter().any(|l| l.get("error").is_some()));
        if let Some(c) = lines
            .iter()
            .find(|l| l["scenario"] == "peer")
            .and_then(|l| l["concurrency"].as_u64())
            .and_then(|c| usize::try_from(c).ok())
        {
            peer_concurrency = c;
        }
    }
    for s in keel_steps(opts, peer_concurrency) {
        let lines = run_step(&mut run, &s)?;
        failed += usize::from(lines.iter().any(|l| l.get("error").is_some()));
    }
    Ok(failed)
}

/// Runs one child and appends its lines (or one error line); returns what was appended.
fn run_step(run: &mut Run, step: &Step) -> anyhow::Result<Vec<Value>> {
    let shown = command_line(
        &std::iter::once(run.argv0.clone())
            .chain(step.args.iter().map(|a| redact_url(a)))
            .collect::<Vec<_>>(),
    );
    eprintln!("suite: {shown}");
    let loadavg = machine::loadavg();
    let started = chrono::Utc::now();
    let t = Instant::now();
    let outcome = run_child(&run.exe, &step.args, CHILD_TIMEOUT);
    let mut lines = match outcome {
        Ok(lines) if !lines.is_empty() => lines,
        Ok(_) => vec![json!({ "error": "the scenario printed no JSON line" })],
        Err(e) => {
            // The child's own message may quote a URL with its password.
            let mut message = format!("{e:#}");
            for arg in &step.args {
                message = message.replace(arg.as_str(), &redact_url(arg));
            }
            vec![json!({ "error": message })]
        }
    };
    for line in &mut lines {
        if line.get("scenario").is_none() {
            line["scenario"] = json!(step.scenario);
        }
        if line.get("backend").is_none()
            && let Some(b) = step.backend
        {
            line["backend"] = json!(b);
        }
        line["started_at"] = json!(started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        line["loadavg_before"] = json!(loadavg);
        line["command"] = json!(shown);
        line["args"] = json!(step.args.iter().map(|a| redact_url(a)).collect::<Vec<_>>());
        stamp(line, run, Some(t.elapsed()));
        if let Some(e) = line.get("error") {
            eprintln!("suite: failed: {e}");
        }
        run.append(line)?;
    }
    Ok(lines)
}

/// Adds the fields every line carries: run id, UTC time, the suite's command line.
fn stamp(line: &mut Value, run: &Run, duration: Option<Duration>) {
    line["run_id"] = json!(run.run_id);
    line["timestamp"] =
        json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    line["suite_command"] = json!(run.suite_command);
    if let Some(d) = duration {
        line["duration_s"] = json!((d.as_secs_f64() * 10.0).round() / 10.0);
    }
}

/// Runs `exe args`, passing its stderr through; returns the JSON objects it printed on
/// stdout. Fails when it cannot start, exits unsuccessfully, or outlives `timeout`.
fn run_child(exe: &Path, args: &[String], timeout: Duration) -> anyhow::Result<Vec<Value>> {
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        BufReader::new(stdout)
            .read_to_string(&mut text)
            .map(|_| text)
    });
    // Pass stderr through as it comes, keeping its tail for the error line.
    let tee = std::thread::spawn(move || {
        let mut tail: Vec<String> = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("    {line}");
            tail.push(line);
            if tail.len() > 8 {
                tail.remove(0);
            }
        }
        tail
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for the scenario")? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("stopped after {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = reader
        .join()
        .map_err(|_| anyhow::anyhow!("stdout reader panicked"))?
        .context("reading the scenario's output")?;
    let tail = tee.join().unwrap_or_default();
    if !status.success() {
        anyhow::bail!("{status}: {}", tail.join(" | "));
    }
    Ok(json_lines(&text))
}

/// The JSON objects among `text`'s lines (anything else is progress, ignored).
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(Value::is_object)
        .collect()
}

/// A database URL with its password replaced by `***`; any other text unchanged.
pub fn redact_url(arg: &str) -> String {
    let Some((scheme, rest)) = arg.split_once("://") else {
        return arg.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return arg.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => arg.to_owned(),
    }
}

/// `args` as one shell command line (quoted where a shell would need it).
pub fn command_line(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-./:=,@%+".contains(&b));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn quick_and_skip_shape_the_plan() {
        let opts = Options::parse(&args(&[
            "--jobs",
            "2000",
            "--quick",
            "--skip",
            "chain,write",
        ]))
        .expect("valid flags");
        assert_eq!(opts.pg_url, DEFAULT_PG);
        assert_eq!(opts.out, PathBuf::from(DEFAULT_OUT));
        let steps = keel_steps(&opts, 10);
        assert!(
            steps
                .iter()
                .all(|s| s.scenario != "chain" && s.scenario != "write")
        );
        // C = 1, 8, 10, 32 on both backends, one backlog each (quick), one memory each.
        let queue = steps.iter().filter(|s| s.args[0] == "queue").count();
        assert_eq!(queue, 2 * 4 + 2);
        assert!(!steps.iter().any(|s| s.args.contains(&"1000000".to_owned())));
        assert_eq!(steps.iter().filter(|s| s.scenario == "memory").count(), 2);
        let soak: Vec<&Step> = steps.iter().filter(|s| s.scenario == "soak").collect();
        assert_eq!(soak.len(), 2);
        assert!(
            soak[0]
                .args
                .ends_with(&args(&["--seconds", "120", "--retention", "30s"]))
        );

        let only_soak = Options::parse(&args(&[
            "--skip",
            "queue,backlog,chain,write,memory,peers",
            "--soak-seconds",
            "600",
        ]))
        .expect("valid flags");
        let steps = keel_steps(&only_soak, 10);
        assert_eq!(steps.len(), 2);
        assert!(steps.iter().all(|s| s.args.contains(&"600".to_owned())));

        let full = Options::parse(&args(&["--skip", "sqlite"])).expect("valid flags");
        let steps = keel_steps(&full, 8);
        assert!(steps.iter().all(|s| s.backend == Some("postgres")));
        assert!(steps.iter().any(|s| s.args.contains(&"1000000".to_owned())));
        assert!(Options::parse(&args(&["--skip", "nope"])).is_err());
        assert!(Options::parse(&args(&["--bogus", "1"])).is_err());
    }

    #[test]
    fn commands_are_quoted_and_passwords_hidden() {
        assert_eq!(
            command_line(&args(&["keel-bench", "queue", "--rates", "50,200", "it's"])),
            "keel-bench queue --rates 50,200 'it'\\''s'"
        );
        assert_eq!(
            redact_url("postgres://bench:s3cret@127.0.0.1:5432/test"),
            "postgres://bench:***@127.0.0.1:5432/test"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test"
        );
        assert_eq!(redact_url("sqlite:"), "sqlite:");
    }

    #[test]
    fn only_json_objects_are_kept() {
        let text = "round 1/1\n{\"scenario\":\"peer\",\"drain_jobs_per_s\":1}\n[1,2]\n\n{bad\n";
        let lines = json_lines(text);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["scenario"], "peer");
    }
}
