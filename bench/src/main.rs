//! `keel-bench`: Keel's benchmarks. Run it through `cargo xtask bench …` (release build).
//!
//! ```text
//! keel-bench queue --database-url URL --jobs N --concurrency C [--batch B]
//!                  [--backlog M] [--backlog-kind other-queue|scheduled] [--callers K]
//!                  [--latency-samples S] [--rounds R] [--no-single] [--json]
//! keel-bench chain --database-url URL [--idle-samples S] [--rates 50,200] [--seconds T]
//! keel-bench write --database-url URL [--clients 1,4] [--seconds T]
//! keel-bench notify --database-url postgres://… [--clients 1,4,8,16] [--seconds T]
//! keel-bench memory --database-url URL --backlog M [--jobs N] [--concurrency C]
//! keel-bench prune --database-url URL [--jobs N]
//! keel-bench peers --database-url postgres://… [--jobs N] [--concurrency C] [--rounds R]
//!                  [--only graphile-worker,apalis]
//! keel-bench split --database-url URL [--nats-url nats://127.0.0.1:4222] [--events 20000]
//!                  [--idle-samples 200]
//! keel-bench soak --database-url URL [--seconds 600] [--retention 30s] [--sample-every 5s]
//!                 [--concurrency 32] [--batch 500] [--event-every 5] [--producers 2]
//!                 [--ahead 5000]
//! ```
//!
//! `chain`, `write`, `memory`, `prune` and `soak` print one JSON line; `peers` one per peer mode, then the
//! Keel ÷ peer ratios (see `peers.rs` and `bench/peers/README.md`).
//!
//! `keel-bench suite [--quick] [--jobs N] [--out FILE] …` runs every scenario, each as a child
//! process, appending their lines to a results file; `keel-bench report [--write]` prints its
//! tables and, with `--write`, draws `bench/charts/*.svg` and rewrites the generated part of
//! BENCHMARKS.md (see `suite.rs` and `report.rs`).
//!
//! Benchmarks are not tests: nothing here asserts a timing.

mod chain;
mod charts;
mod counters;
mod db;
mod flags;
mod import;
mod machine;
mod memory;
mod notify;
mod peers;
mod prune;
mod queue;
mod report;
mod results;
mod served;
mod soak;
mod split;
mod stats;
mod suite;
mod tables;
mod targets;
mod write;

use std::process::ExitCode;
use std::time::Duration;

use events::Backend;
use queue::{BacklogKind, Options};

/// The allocator `keel` runs with (see `app/src/main.rs`), so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage: keel-bench queue --database-url URL --jobs N --concurrency C [options]

  --database-url URL    sqlite:… (a fresh temp file is used) or postgres://… (a fresh
                        database keel_bench_<uuid> is created on that server, then dropped)
  --jobs N              jobs enqueued and drained per round
  --concurrency C       the queue's concurrency while draining
  --batch B             jobs per transaction in the batched enqueue (default 500)
  --backlog M           jobs already in the table before the measured ones (default 0)
  --backlog-kind K      other-queue (ready, on another queue; default), scheduled
                        (on the measured queue, due in a day) or same-queue (ready, on the
                        measured queue ahead of the N jobs: the drain runs N + M)
  --callers K           concurrent callers of the one-job-per-transaction enqueue (default 4)
  --latency-samples S   idle claim-latency samples, commit → handler start (default 200; 0 skips)
  --rounds R            rounds, each on a fresh database; figures are medians (default 1)
  --replicas K          runtimes draining the queue side by side, each with its own pools,
                        worker id and C slots, as K replicas of `keel work` would (default 1)
  --no-single           skip the one-job-per-transaction enqueue
  --json                print one JSON line instead of a table

       keel-bench chain --database-url URL [--idle-samples 300] [--rates 50,200]
                        [--seconds 10]
  POST /records → signed webhook at a local receiver: latency at idle, then open-loop
  offered loads (requests/s), each for --seconds

       keel-bench write --database-url URL [--clients 1,4] [--seconds 10]
  sustained POST /records per second from K clients; on PostgreSQL also pgbench (one-row
  INSERT, same K) on the same server, and the ratio

       keel-bench notify --database-url POSTGRES_URL [--clients 1,4,8,16] [--seconds 8]
  one-row INSERTs/s into a table with Keel's NOTIFY trigger vs without it (pgbench,
  interleaved), and a SELECT 1 round trip back to back vs after 10 ms idle

       keel-bench import --database-url URL [--lines 200000]
  one POST /imports of N NDJSON lines, one webhook endpoint subscribed: lines/s until the
  import is completed (records, events, deliveries enqueued), webhooks delivered per s

       keel-bench memory --database-url URL --backlog M [--jobs 20000] [--concurrency 32]
  resident memory of this process while draining N jobs with M ready jobs queued

       keel-bench peers --database-url postgres://… [--jobs 20000] [--concurrency 10]
                        [--rounds 1] [--only graphile-worker,apalis]
  graphile-worker and apalis-postgres (bench/peers/) beside Keel's queue scenario, same
  N, concurrency and server, with Keel ÷ peer ratios (keel-bench peers --help)

       keel-bench prune --database-url URL [--jobs 200000]
  the maintenance leader's pruning capacity: N finished jobs (with an attempt, an event and
  an inbox entry each) past retention, deleted by back-to-back leader rounds

       keel-bench soak --database-url URL [--seconds 600] [--retention 30s]
                       [--sample-every 5s] [--concurrency 32] [--batch 500]
                       [--event-every 5] [--producers 2] [--ahead 5000]
  sustained load with a short retention: --producers tasks enqueue as fast as the drain
  allows (--batch jobs per transaction, one in --event-every the queued listener delivery
  of a published event, the rest no-op jobs; at most --ahead jobs waiting), two queues at
  --concurrency; samples the runtime's row counts, this process's RSS, jobs drained/s and
  rows pruned/s

       keel-bench split --database-url URL [--nats-url nats://127.0.0.1:4222]
                        [--events 20000] [--idle-samples 200]
  events on NATS JetStream: relay throughput (events published and acknowledged per
  second, from a committed backlog) and POST on deployment A → webhook from deployment B
  (notifications split off, consuming from the broker), p50/p99 at idle

       keel-bench suite …    every scenario in one run (keel-bench suite --help)
       keel-bench report …   tables, charts and BENCHMARKS.md (keel-bench report --help)";

/// `sqlite` or `postgres`, as the JSON lines name them.
pub fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((command, rest)) if command == "suite" => return suite::main(rest),
        Some((command, rest)) if command == "report" => return report::main(rest),
        _ => {}
    }
    if let Some(("peers", rest)) = args.split_first().map(|(c, r)| (c.as_str(), r)) {
        return peers::main(rest);
    }
    if let Some((
        command @ ("chain" | "write" | "import" | "memory" | "prune" | "soak" | "split" | "notify"),
        rest,
    )) = args.split_first().map(|(c, r)| (c.as_str(), r))
    {
        return run_json_scenario(command, rest);
    }
    let (opts, json) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(rt) = tokio_runtime() else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(queue::run(&opts)) {
        Ok(summary) => {
            if json {
                println!("{summary}");
            } else {
                print_table(&summary);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn tokio_runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .inspect_err(|e| eprintln!("error: cannot start tokio: {e}"))
        .ok()
}

/// Runs `chain`, `write`, `import`, `memory`, `prune` or `soak` and prints its JSON line.
fn run_json_scenario(command: &str, rest: &[String]) -> ExitCode {
    let scenario = match flags::Flags::parse(rest) {
        Ok(f) => Scenario::from_flags(command, &f),
        Err(e) => Err(e),
    };
    let scenario = match scenario {
        Ok(s) => s,
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(rt) = tokio_runtime() else {
        return ExitCode::FAILURE;
    };
    let result = rt.block_on(async {
        match &scenario {
            Scenario::Chain(o) => chain::run(o).await,
            Scenario::Write(o) => write::run(o).await,
            Scenario::Import(o) => import::run(o).await,
            Scenario::Memory(o) => memory::run(o).await,
            Scenario::Prune(o) => prune::run(o).await,
            Scenario::Soak(o) => soak::run(o).await,
            Scenario::Split(o) => split::run(o).await,
            Scenario::Notify(o) => notify::run(o).await,
        }
    });
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One of the scenarios that answer a JSON line.
enum Scenario {
    Chain(chain::Options),
    Write(write::Options),
    Import(import::Options),
    Memory(memory::Options),
    Prune(prune::Options),
    Soak(soak::Options),
    Split(split::Options),
    Notify(notify::Options),
}

impl Scenario {
    fn from_flags(command: &str, f: &flags::Flags) -> Result<Self, String> {
        let database_url = f.text("--database-url")?;
        let scenario = match command {
            "chain" => Self::Chain(chain::Options {
                database_url,
                idle_samples: f.number("--idle-samples", 300)?,
                rates: f.numbers("--rates", &[50, 200])?,
                seconds: f.number("--seconds", 10)? as u64,
            }),
            "write" => Self::Write(write::Options {
                database_url,
                clients: f.numbers("--clients", &[1, 4])?,
                seconds: f.number("--seconds", 10)? as u64,
            }),
            "notify" => Self::Notify(notify::Options {
                database_url,
                clients: f.numbers("--clients", &[1, 4, 8, 16])?,
                seconds: f.number("--seconds", 8)? as u64,
            }),
            "import" => Self::Import(import::Options {
                database_url,
                lines: f.number("--lines", 200_000)?,
            }),
            "prune" => Self::Prune(prune::Options {
                database_url,
                jobs: f.number("--jobs", 200_000)?,
            }),
            "split" => Self::Split(split::Options {
                database_url,
                nats_url: f
                    .text("--nats-url")
                    .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned()),
                events: f.number("--events", 20_000)?,
                idle_samples: f.number("--idle-samples", 200)?,
            }),
            "soak" => Self::Soak(soak::Options {
                database_url,
                seconds: f.number("--seconds", 600)? as u64,
                retention: f.duration("--retention", Duration::from_secs(30))?,
                sample_every: f.duration("--sample-every", Duration::from_secs(5))?,
                concurrency: f.number("--concurrency", 32)?,
                batch: f.number("--batch", 500)?,
                event_every: f.number("--event-every", 5)?,
                producers: f.number("--producers", 2)?,
                ahead: f.number("--ahead", 5000)?,
            }),
            _ => Self::Memory(memory::Options {
                database_url,
                backlog: f.number("--backlog", 10_000)?,
                jobs: f.number("--jobs", 20_000)?,
                concurrency: f.number("--concurrency", 32)?,
            }),
        };
        f.finish()?;
        Ok(scenario)
    }
}

fn parse(args: &[String]) -> Result<(Options, bool), String> {
    let Some((command, rest)) = args.split_first() else {
        return Err("no scenario given".to_owned());
    };
    if command != "queue" {
        return Err(format!(
            "unknown scenario `{command}` (known: queue, chain, write, memory, soak)"
        ));
    }
    let mut opts = Options {
        database_url: String::new(),
        jobs: 0,
        concurrency: 0,
        batch: 500,
        backlog: 0,
        backlog_kind: BacklogKind::OtherQueue,
        callers: 4,
        latency_samples: 200,
        rounds: 1,
        single: true,
        replicas: 1,
    };
    let mut json = false;
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("`{name}` needs a value"))
        };
        let number = |v: String| {
            v.replace('_', "")
                .parse::<usize>()
                .map_err(|e| format!("`{name}`: {e}"))
        };
        match name {
            "--database-url" => opts.database_url = value()?,
            "--jobs" => opts.jobs = number(value()?)?,
            "--concurrency" => opts.concurrency = number(value()?)?,
            "--batch" => opts.batch = number(value()?)?,
            "--backlog" => opts.backlog = number(value()?)?,
            "--backlog-kind" => {
                let v = value()?;
                opts.backlog_kind =
                    BacklogKind::parse(&v).ok_or_else(|| format!("unknown backlog kind `{v}`"))?;
            }
            "--callers" => opts.callers = number(value()?)?,
            "--latency-samples" => opts.latency_samples = number(value()?)?,
            "--rounds" => opts.rounds = number(value()?)?,
            "--replicas" => opts.replicas = number(value()?)?,
            "--no-single" => opts.single = false,
            "--json" => json = true,
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    if opts.database_url.is_empty() {
        return Err("`--database-url` is required".to_owned());
    }
    if opts.jobs == 0 || opts.concurrency == 0 {
        return Err("`--jobs` and `--concurrency` are required (at least 1)".to_owned());
    }
    if opts.replicas == 0 {
        return Err("`--replicas` must be at least 1".to_owned());
    }
    Ok((opts, json))
}

fn print_table(summary: &serde_json::Value) {
    let rows = [
        ("backend", "backend"),
        ("jobs (N)", "n"),
        ("concurrency", "concurrency"),
        ("replicas", "replicas"),
        ("backlog", "backlog"),
        ("backlog kind", "backlog_kind"),
        ("rounds (medians)", "rounds"),
        ("enqueue, 1 job/tx, jobs/s", "enqueue_jobs_per_s"),
        ("enqueue, batched, jobs/s", "enqueue_batched_jobs_per_s"),
        ("drain, jobs/s", "drain_jobs_per_s"),
        ("drain, seconds", "drain_seconds"),
        ("keel CPU s / 1k jobs", "keel_cpu_s_per_1k_jobs"),
        ("postgres CPU s / 1k jobs", "postgres_cpu_s_per_1k_jobs"),
        ("idle latency p50, ms", "idle_latency_p50_ms"),
        ("idle latency p99, ms", "idle_latency_p99_ms"),
    ];
    for (label, key) in rows {
        let value = match summary.get(key) {
            None | Some(serde_json::Value::Null) => "—".to_owned(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        println!("{label:<28} {value:>14}");
    }
}
