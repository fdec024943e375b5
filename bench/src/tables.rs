//! The report as Markdown: machine and versions, the exact commands, the targets of issue 7
//! with their verdicts, and one table per scenario (Keel ÷ peer ratios beside the peers).
//! The same text is printed by `keel-bench report` and written into BENCHMARKS.md.

use std::fmt::Write as _;

use serde_json::Value;

use crate::results::{Results, num, text};
use crate::targets;

/// A figure for a table: thousands grouped with a space, fewer decimals as it grows.
pub fn fmt(x: f64) -> String {
    if !x.is_finite() {
        return "–".to_owned();
    }
    let abs = x.abs();
    if abs >= 1000.0 {
        let digits = format!("{abs:.0}");
        let mut grouped = String::new();
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(' ');
            }
            grouped.push(ch);
        }
        format!("{}{grouped}", if x < 0.0 { "-" } else { "" })
    } else if abs >= 100.0 {
        format!("{x:.0}")
    } else if abs >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_owned(), fmt)
}

fn field(v: &Value, key: &str) -> String {
    opt(num(v, key))
}

fn pair(v: &Value, a: &str, b: &str) -> String {
    match (num(v, a), num(v, b)) {
        (None, None) => "–".to_owned(),
        (x, y) => format!("{} / {}", opt(x), opt(y)),
    }
}

/// `PostgreSQL` or `SQLite` for a line's backend.
pub fn backend_label(v: &Value) -> &'static str {
    match text(v, "backend") {
        Some("postgres") => "PostgreSQL",
        Some("sqlite") => "SQLite",
        _ => "?",
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn mib(kib: Option<f64>) -> String {
    kib.map_or_else(|| "–".to_owned(), |k| format!("{:.1} MiB", k / 1024.0))
}

/// One table: header cells, then rows.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for r in rows {
        let cells: Vec<String> = r.iter().map(|c| cell(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push('\n');
}

/// Where the text comes from and which charts it shows.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The results file, as given.
    pub results_file: String,
    /// (alt text, link) of every chart drawn.
    pub charts: Vec<(String, String)>,
}

/// Why these figures should not be quoted, if a reason shows in the run itself.
fn smoke_reasons(r: &Results) -> Vec<String> {
    let mut reasons = Vec::new();
    let ns: Vec<u64> = r.of("queue").filter_map(|v| v["n"].as_u64()).collect();
    if let Some(small) = ns.iter().copied().filter(|n| *n < 20_000).min() {
        reasons.push(format!("N = {} (issue 7 uses 20 000)", fmt(small as f64)));
    }
    if r.backlogs("sqlite")
        .iter()
        .chain(&r.backlogs("postgres"))
        .all(|(b, _)| *b < 1_000_000)
    {
        reasons.push("no 1 000 000-job backlog (`--quick`)".to_owned());
    }
    // The 1-min average before a step still carries the previous step, which keeps every core
    // busy on its own (database, Keel and load generator): only load beyond one core more
    // than that says something else was running.
    if let Some(cores) = r.machine().and_then(|m| num(m, "nproc")) {
        let mut busiest: Option<f64> = None;
        let mut during: Vec<String> = Vec::new();
        for v in &r.lines {
            let Some(load) = v["loadavg_before"][0].as_f64().filter(|l| *l > cores + 1.0) else {
                continue;
            };
            busiest = Some(busiest.map_or(load, |m| m.max(load)));
            let step = format!(
                "{}{}",
                text(v, "scenario").unwrap_or("?"),
                text(v, "backend").map_or_else(String::new, |b| format!(" on {b}"))
            );
            if !during.contains(&step) {
                during.push(step);
            }
        }
        if let Some(load) = busiest {
            reasons.push(format!(
                "a busy machine (1-min load average up to {} on {cores} cores, before: {})",
                fmt(load),
                during.join(", ")
            ));
        }
    }
    if r.machine().and_then(|m| text(m, "build")) == Some("debug") {
        reasons.push("a debug build".to_owned());
    }
    if r.errors().count() > 0 {
        reasons.push(format!("{} failed step(s)", r.errors().count()));
    }
    reasons
}

/// The whole generated text (Markdown, headings from level 2 down).
pub fn render(r: &Results, ctx: &Context) -> String {
    let mut out = String::new();
    let started = r.lines.iter().filter_map(|v| text(v, "started_at")).min();
    let ended = r.lines.iter().filter_map(|v| text(v, "timestamp")).max();
    let _ = writeln!(
        out,
        "## Figures of the {} (generated)\n",
        if r.runs.len() > 1 {
            "latest suite runs"
        } else {
            "last suite run"
        }
    );
    let _ = writeln!(
        out,
        "Generated by `keel-bench report --write` from `{}` (run {}, {} → {} UTC). \
         Everything between the `bench:generated` markers is rewritten by it; the analysis \
         lives outside them.\n",
        ctx.results_file,
        if r.runs.is_empty() {
            "–".to_owned()
        } else {
            r.runs.join(", ")
        },
        started.unwrap_or("?"),
        ended.unwrap_or("?"),
    );
    let reasons = smoke_reasons(r);
    if !reasons.is_empty() {
        let _ = writeln!(
            out,
            "> **Not figures to quote**: {} {}.\n",
            if r.runs.len() > 1 {
                "these runs have"
            } else {
                "this run has"
            },
            reasons.join(", ")
        );
    }
    machine(&mut out, r);
    commands(&mut out, r);
    if !ctx.charts.is_empty() {
        let _ = writeln!(out, "### Charts\n");
        for (alt, link) in &ctx.charts {
            let _ = writeln!(out, "![{alt}]({link})\n");
        }
    }
    targets_table(&mut out, r);
    peers(&mut out, r);
    queue(&mut out, r);
    backlog(&mut out, r);
    chain(&mut out, r);
    write_path(&mut out, r);
    memory(&mut out, r);
    soak(&mut out, r);
    failures(&mut out, r);
    out.trim_end().to_owned() + "\n"
}

/// One fact of the machine table from one machine line.
type Fact = fn(&Value) -> String;

fn cpu(m: &Value) -> String {
    format!(
        "{} ({} cores available)",
        text(m, "cpu_model").unwrap_or("?"),
        m["nproc"]
    )
}

fn memory_total(m: &Value) -> String {
    num(m, "mem_total_kib").map_or_else(
        || "–".to_owned(),
        |k| format!("{:.1} GiB", k / 1024.0 / 1024.0),
    )
}

fn kernel(m: &Value) -> String {
    text(m, "kernel").unwrap_or("–").to_owned()
}

fn load_at_start(m: &Value) -> String {
    let at_start = m["loadavg"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| opt(x.as_f64()))
                .collect::<Vec<_>>()
                .join(" / ")
        })
        .unwrap_or_else(|| "–".to_owned());
    format!("{at_start} (1/5/15 min) at the start")
}

fn postgres(m: &Value) -> String {
    let pg = &m["postgres"];
    if pg.is_object() {
        format!(
            "{} (local; synchronous_commit = {}, fsync = {}, shared_buffers = {}, \
             max_connections = {})",
            text(pg, "server_version").unwrap_or("?"),
            text(pg, "synchronous_commit").unwrap_or("?"),
            text(pg, "fsync").unwrap_or("?"),
            text(pg, "shared_buffers").unwrap_or("?"),
            text(pg, "max_connections").unwrap_or("?"),
        )
    } else {
        text(m, "postgres_error")
            .map_or_else(|| "not used".to_owned(), |e| format!("unreachable: {e}"))
    }
}

fn sqlite(m: &Value) -> String {
    format!(
        "{} (bundled by sqlx)",
        text(m, "sqlite_version").unwrap_or("?")
    )
}

fn rustc(m: &Value) -> String {
    format!(
        "{} ({} build of keel-bench)",
        text(m, "rustc").unwrap_or("?"),
        text(m, "build").unwrap_or("?")
    )
}

fn node(m: &Value) -> String {
    text(m, "node").unwrap_or("–").to_owned()
}

fn commit(m: &Value) -> String {
    format!(
        "{}{}",
        text(m, "git_commit").unwrap_or("?"),
        if m["git_dirty"] == true {
            " with uncommitted changes"
        } else {
            ""
        }
    )
}

/// A fact as every run reported says it: once when they agree, else per run.
fn per_run(machines: &[&Value], fact: Fact) -> String {
    let values: Vec<String> = machines.iter().map(|m| fact(m)).collect();
    if values.windows(2).all(|w| w[0] == w[1]) {
        return values.into_iter().next().unwrap_or_else(|| "–".to_owned());
    }
    machines
        .iter()
        .zip(values)
        .map(|(m, v)| format!("{v} (run {})", text(m, "run_id").unwrap_or("?")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn machine(out: &mut String, r: &Results) {
    let _ = writeln!(out, "### Machine and versions\n");
    let machines = r.machines();
    if machines.is_empty() {
        let _ = writeln!(out, "No machine line in the results.\n");
        return;
    }
    if machines.len() > 1 {
        let _ = writeln!(
            out,
            "The figures come from {} runs; a fact that differs between them is given per \
             run.\n",
            machines.len()
        );
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |k: &str, v: String| rows.push(vec![k.to_owned(), v]);
    row("CPU", per_run(&machines, cpu));
    row("memory", per_run(&machines, memory_total));
    row("kernel", per_run(&machines, kernel));
    let loads: Vec<f64> = r
        .lines
        .iter()
        .filter_map(|v| v["loadavg_before"][0].as_f64())
        .collect();
    let range = if loads.is_empty() {
        String::new()
    } else {
        format!(
            "; 1-min before each scenario: {} – {}",
            fmt(loads.iter().copied().fold(f64::INFINITY, f64::min)),
            fmt(loads.iter().copied().fold(0.0, f64::max))
        )
    };
    row(
        "load average",
        format!("{}{range}", per_run(&machines, load_at_start)),
    );
    row("PostgreSQL", per_run(&machines, postgres));
    row("SQLite", per_run(&machines, sqlite));
    row("rustc", per_run(&machines, rustc));
    row("node", per_run(&machines, node));
    row("Keel commit", per_run(&machines, commit));
    let mut peers: Vec<String> = Vec::new();
    for p in r.peers() {
        let named = match &p.version {
            Some(v) => format!("{} {v}", p.name),
            None => p.name.clone(),
        };
        if !peers.contains(&named) {
            peers.push(named);
        }
    }
    row(
        "peers",
        if peers.is_empty() {
            "not in this run".to_owned()
        } else {
            peers.join(", ")
        },
    );
    table(out, &["", ""], &rows);
}

fn commands(out: &mut String, r: &Results) {
    let _ = writeln!(out, "### Commands\n");
    let mut suites: Vec<&str> = Vec::new();
    let mut steps: Vec<&str> = Vec::new();
    for v in &r.lines {
        if let Some(s) = text(v, "suite_command").filter(|s| !suites.contains(s)) {
            suites.push(s);
        }
        if let Some(c) = text(v, "command").filter(|c| !steps.contains(c)) {
            steps.push(c);
        }
    }
    let _ = writeln!(
        out,
        "```sh\n{}\n```\n\nwhich ran, each as its own process:\n\n```sh\n{}\n```\n",
        suites.join("\n"),
        steps.join("\n")
    );
}

fn targets_table(out: &mut String, r: &Results) {
    let _ = writeln!(out, "### Against the targets of issue 7\n");
    let rows: Vec<Vec<String>> = targets::evaluate(r)
        .iter()
        .map(|t| {
            let measured = match t.measured {
                Some(m) if t.unit == "×" => format!("{m:.3}"),
                Some(m) => format!("{} {}", fmt(m), t.unit),
                None => "–".to_owned(),
            };
            let measured = if t.detail.is_empty() {
                measured
            } else {
                format!("{measured} ({})", t.detail)
            };
            vec![t.name.clone(), measured, t.verdict()]
        })
        .collect();
    table(out, &["target", "measured", "verdict"], &rows);
}

fn peers(out: &mut String, r: &Results) {
    let peers = r.peers();
    let _ = writeln!(out, "### Drain and enqueue beside the peers (PostgreSQL)\n");
    let Some((n, c)) = r.peer_setting() else {
        let _ = writeln!(out, "No peer was measured in this run.\n");
        return;
    };
    let pg = r.keel_beside_peers(n, c);
    let sqlite = r.keel_at("sqlite", n, c);
    let keel_drain = pg.and_then(|v| num(v, "drain_jobs_per_s"));
    let keel_enqueue = pg.and_then(|v| num(v, "enqueue_batched_jobs_per_s"));
    let ratio = |k: Option<f64>, p: Option<f64>| match (k, p) {
        (Some(k), Some(p)) if p > 0.0 => format!("**{:.2}**", k / p),
        _ => "–".to_owned(),
    };
    let mut rows = Vec::new();
    for (label, line) in [("Keel, PostgreSQL", pg), ("Keel, SQLite", sqlite)] {
        rows.push(vec![
            label.to_owned(),
            line.map_or_else(|| "–".into(), |v| field(v, "enqueue_batched_jobs_per_s")),
            line.map_or_else(|| "–".into(), |v| field(v, "enqueue_jobs_per_s")),
            line.map_or_else(|| "–".into(), |v| field(v, "drain_jobs_per_s")),
            "".to_owned(),
            "".to_owned(),
        ]);
    }
    for p in &peers {
        rows.push(vec![
            p.label.clone(),
            opt(p.enqueue),
            opt(p.enqueue_single),
            opt(p.drain),
            ratio(keel_drain, p.drain),
            ratio(keel_enqueue, p.enqueue),
        ]);
    }
    let _ = writeln!(
        out,
        "N = {}, concurrency {c}, bulk enqueue, drain timed until every completion is \
         committed. Keel on PostgreSQL is the queue scenario that `keel-bench peers` ran beside \
         them (same N, C, batch and server); Keel on SQLite is the suite's queue run at the \
         same N and C. Keel's bulk enqueue is 500 jobs per transaction; 1/tx is one job per \
         transaction from 4 callers.\n",
        fmt(n as f64)
    );
    table(
        out,
        &[
            "system",
            "enqueue bulk, jobs/s",
            "enqueue 1/tx, jobs/s",
            "drain, jobs/s",
            "Keel PG drain ÷ this",
            "Keel PG enqueue ÷ this",
        ],
        &rows,
    );
}

fn queue(out: &mut String, r: &Results) {
    let rows: Vec<Vec<String>> = r
        .queue(0)
        .iter()
        .map(|v| {
            vec![
                backend_label(v).to_owned(),
                field(v, "n"),
                v["concurrency"].to_string(),
                field(v, "enqueue_batched_jobs_per_s"),
                field(v, "enqueue_jobs_per_s"),
                format!("**{}**", field(v, "drain_jobs_per_s")),
                field(v, "keel_cpu_s_per_1k_jobs"),
                field(v, "postgres_cpu_s_per_1k_jobs"),
                pair(v, "idle_latency_p50_ms", "idle_latency_p99_ms"),
                v["rounds"].to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "### Queue throughput (no backlog)\n");
    table(
        out,
        &[
            "backend",
            "N",
            "C",
            "enqueue, 500/tx",
            "enqueue, 1/tx × 4",
            "drain, jobs/s",
            "keel CPU s/1k",
            "postgres CPU s/1k",
            "idle claim p50 / p99 ms",
            "rounds",
        ],
        &rows,
    );
}

fn backlog(out: &mut String, r: &Results) {
    let mut rows = Vec::new();
    for backend in ["sqlite", "postgres"] {
        let lines = r.backlogs(backend);
        let base = lines
            .iter()
            .find(|(b, _)| *b == 10_000)
            .and_then(|(_, v)| num(v, "drain_jobs_per_s"));
        for (m, v) in &lines {
            let ratio = match (num(v, "drain_jobs_per_s"), base) {
                (Some(d), Some(b)) if *m != 10_000 && b > 0.0 => format!("**{:.2}**", d / b),
                _ => "".to_owned(),
            };
            rows.push(vec![
                backend_label(v).to_owned(),
                format!(
                    "{} {}",
                    fmt(*m as f64),
                    text(v, "backlog_kind").unwrap_or("")
                ),
                field(v, "n"),
                v["concurrency"].to_string(),
                field(v, "drain_jobs_per_s"),
                ratio,
                pair(v, "idle_latency_p50_ms", "idle_latency_p99_ms"),
            ]);
        }
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "### Backlog: drain with jobs already queued\n");
    table(
        out,
        &[
            "backend",
            "backlog",
            "N",
            "C",
            "drain, jobs/s",
            "÷ 10 k",
            "idle claim p50 / p99 ms",
        ],
        &rows,
    );
}

/// The loads of a chain line in order: idle, then by offered rate.
pub fn chain_loads(chain: &Value) -> Vec<&Value> {
    let mut loads: Vec<&Value> = chain["loads"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    loads.sort_by_key(|l| num(l, "offered_per_s").map_or(0, |r| r as u64 + 1));
    loads
}

/// `idle` or `200 req/s`.
pub fn load_label(load: &Value) -> String {
    match text(load, "load") {
        Some("idle") | None => "idle".to_owned(),
        Some(rate) => match rate.parse::<f64>() {
            Ok(r) if r >= 1000.0 => format!("{} req/s", fmt(r)),
            _ => format!("{rate} req/s"),
        },
    }
}

fn chain(out: &mut String, r: &Results) {
    let mut rows = Vec::new();
    for backend in ["sqlite", "postgres"] {
        let Some(line) = r.last("chain", backend) else {
            continue;
        };
        for l in chain_loads(line) {
            rows.push(vec![
                load_label(l),
                backend_label(line).to_owned(),
                field(l, "p50_ms"),
                field(l, "p90_ms"),
                field(l, "p99_ms"),
                field(l, "max_ms"),
                pair(l, "answer_p50_ms", "answer_p99_ms"),
                field(l, "delivered_per_s"),
                format!("{} / {}", l["webhooks_missing"], l["request_errors"]),
                field(l, "generator_max_lag_ms"),
            ]);
        }
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### Chain latency: `POST /records` → signed webhook received (ms)\n"
    );
    table(
        out,
        &[
            "load",
            "backend",
            "p50",
            "p90",
            "p99",
            "max",
            "answer p50 / p99",
            "delivered/s",
            "missing / errors",
            "generator lag ms",
        ],
        &rows,
    );
}

fn write_path(out: &mut String, r: &Results) {
    let mut rows = Vec::new();
    for backend in ["postgres", "sqlite"] {
        let Some(line) = r.last("write", backend) else {
            continue;
        };
        for run in line["runs"].as_array().into_iter().flatten() {
            rows.push(vec![
                run["clients"].to_string(),
                backend_label(line).to_owned(),
                field(run, "keel_requests_per_s"),
                field(run, "pgbench_tps"),
                num(run, "ratio").map_or_else(|| "–".to_owned(), |x| format!("**{x:.3}**")),
                run["request_errors"].to_string(),
            ]);
        }
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### Write path: `POST /records` per second vs pgbench one-row INSERT\n"
    );
    table(
        out,
        &[
            "K clients",
            "backend",
            "Keel req/s",
            "pgbench TPS",
            "Keel ÷ pgbench",
            "errors",
        ],
        &rows,
    );
}

fn memory(out: &mut String, r: &Results) {
    let mut rows = Vec::new();
    for backend in ["sqlite", "postgres"] {
        let mut lines: Vec<&Value> = r
            .of("memory")
            .filter(|v| text(v, "backend") == Some(backend))
            .collect();
        lines.sort_by_key(|v| v["backlog"].as_u64());
        let base = lines.first().and_then(|v| num(v, "vm_hwm_kib"));
        for (i, v) in lines.iter().enumerate() {
            let ratio = match (num(v, "vm_hwm_kib"), base) {
                (Some(h), Some(b)) if i > 0 && b > 0.0 => format!("**{:.2}**", h / b),
                _ => "".to_owned(),
            };
            rows.push(vec![
                backend_label(v).to_owned(),
                field(v, "backlog"),
                mib(num(v, "rss_start_kib")),
                format!(
                    "{} / {}",
                    mib(num(v, "rss_peak_sampled_kib")),
                    mib(num(v, "vm_hwm_kib"))
                ),
                ratio,
                format!(
                    "{} (N = {}, C = {})",
                    field(v, "drain_jobs_per_s"),
                    field(v, "n"),
                    v["concurrency"]
                ),
            ]);
        }
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "### Memory: RSS of one process draining N jobs\n");
    table(
        out,
        &[
            "backend",
            "backlog",
            "RSS at start",
            "peak RSS sampled / VmHWM",
            "VmHWM ÷ smallest backlog",
            "drain, jobs/s",
        ],
        &rows,
    );
}

/// `a → b (max c)` of one table's row counts in a soak line.
fn soak_rows(v: &Value, table: &str) -> String {
    let count = |key: &str| opt(v[key][table].as_f64());
    format!(
        "{} → {} (max {})",
        count("rows_at_warmup"),
        count("rows_end"),
        count("rows_max")
    )
}

fn yes_no(v: &Value) -> &'static str {
    match v.as_bool() {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "–",
    }
}

fn soak(out: &mut String, r: &Results) {
    let lines: Vec<&Value> = ["sqlite", "postgres"]
        .iter()
        .filter_map(|b| r.last("soak", b))
        .collect();
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### Soak: sustained drain with a short retention, row counts and RSS over time
"
    );
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|v| {
            vec![
                backend_label(v).to_owned(),
                format!(
                    "{} s / {} s",
                    field(v, "seconds"),
                    num(v, "retention_s").map_or_else(|| "–".to_owned(), |x| format!("{x:.0}"))
                ),
                format!("**{}**", field(v, "drain_jobs_per_s")),
                field(v, "pruned_jobs_per_s"),
                field(v, "pruned_rows_per_s"),
                num(v, "prune_to_drain_ratio")
                    .map_or_else(|| "–".to_owned(), |x| format!("**{x:.3}**")),
                field(v, "pruned_jobs_per_s_peak"),
                yes_no(&v["rows_flat"]).to_owned(),
                format!(
                    "{} → {} (peak {})",
                    mib(num(v, "rss_at_warmup_kib")),
                    mib(num(v, "rss_end_kib")),
                    mib(num(v, "rss_peak_sampled_kib"))
                ),
                yes_no(&v["rss_flat"]).to_owned(),
            ]
        })
        .collect();
    let _ = writeln!(
        out,
        "Rates over the samples after the warm-up (retention + two heartbeat intervals); \
         drain counts every job run (no-op jobs and listener deliveries), pruned jobs/s is \
         the runtime's `keel_pruned_rows_total{{table=\"jobs\"}}`, pruned rows/s adds their \
         attempts, events and inbox rows. *Flat*: the largest count of the second half of the \
         window is at most 1.2 × the largest of the first half.\n"
    );
    table(
        out,
        &[
            "backend",
            "duration / retention",
            "drain, jobs/s",
            "pruned, jobs/s",
            "pruned, rows/s",
            "pruned ÷ drain",
            "pruned jobs/s, best interval",
            "row counts flat",
            "RSS at warm-up → end",
            "RSS flat",
        ],
        &rows,
    );
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|v| {
            let mut row = vec![backend_label(v).to_owned()];
            row.extend(
                [
                    "keel_jobs",
                    "keel_job_attempts",
                    "keel_events",
                    "keel_inbox",
                ]
                .iter()
                .map(|t| soak_rows(v, t)),
            );
            row
        })
        .collect();
    table(
        out,
        &[
            "rows at warm-up → end (max)",
            "keel_jobs",
            "keel_job_attempts",
            "keel_events",
            "keel_inbox",
        ],
        &rows,
    );
}

fn failures(out: &mut String, r: &Results) {
    let rows: Vec<Vec<String>> = r
        .errors()
        .map(|v| {
            let mut e = text(v, "error").unwrap_or("?").to_owned();
            if e.chars().count() > 300 {
                e = e.chars().take(300).collect::<String>() + "…";
            }
            vec![format!("`{}`", text(v, "command").unwrap_or("?")), e]
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "### Steps that failed\n");
    table(out, &["command", "error"], &rows);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Selection;

    #[test]
    fn figures_are_grouped() {
        assert_eq!(fmt(13_268.4), "13 268");
        assert_eq!(fmt(1_000_000.0), "1 000 000");
        assert_eq!(fmt(563.2), "563");
        assert_eq!(fmt(10.41), "10.4");
        assert_eq!(fmt(5.034), "5.03");
        assert_eq!(fmt(f64::NAN), "–");
    }

    #[test]
    fn a_small_run_renders_and_says_it_is_small() {
        let file = r#"{"scenario":"machine","run_id":"A","nproc":2,"cpu_model":"CPU X","build":"release","postgres":{"server_version":"15.20"}}
{"scenario":"queue","run_id":"A","command":"keel-bench queue --jobs 2000","suite_command":"keel-bench suite --jobs 2000","backend":"sqlite","n":2000,"concurrency":8,"backlog":0,"drain_jobs_per_s":5000.0,"rounds":1}
{"scenario":"peers","run_id":"A","command":"keel-bench peers","error":"unknown scenario | peers"}
"#;
        let r = Results::parse(file, Selection::LastRun);
        let text = render(
            &r,
            &Context {
                results_file: "x.jsonl".into(),
                charts: vec![("Drain".into(), "bench/charts/drain.svg".into())],
            },
        );
        assert!(text.contains("**Not figures to quote**"));
        assert!(text.contains("N = 2 000"));
        assert!(text.contains("CPU X (2 cores available)"));
        assert!(text.contains("15.20"));
        assert!(text.contains("![Drain](bench/charts/drain.svg)"));
        assert!(text.contains("| SQLite | 2 000 | 8 |"));
        assert!(text.contains("keel-bench suite --jobs 2000"));
        assert!(text.contains("unknown scenario \\| peers"));
        assert!(text.contains("No peer was measured"));
    }

    #[test]
    fn a_soak_line_renders_both_tables() {
        let file = r#"{"scenario":"soak","run_id":"A","backend":"postgres","seconds":600,"retention_s":30.0,"drain_jobs_per_s":9000.0,"pruned_jobs_per_s":8990.0,"pruned_rows_per_s":27000.0,"prune_to_drain_ratio":0.999,"pruned_jobs_per_s_peak":20000.0,"rows_flat":true,"rss_flat":false,"rss_at_warmup_kib":40960,"rss_end_kib":51200,"rss_peak_sampled_kib":52224,"rows_at_warmup":{"keel_jobs":300000,"keel_job_attempts":290000,"keel_events":150000,"keel_inbox":145000},"rows_end":{"keel_jobs":310000,"keel_job_attempts":300000,"keel_events":155000,"keel_inbox":150000},"rows_max":{"keel_jobs":330000,"keel_job_attempts":320000,"keel_events":165000,"keel_inbox":160000}}
"#;
        let r = Results::parse(file, Selection::LastRun);
        let text = render(&r, &Context::default());
        assert!(text.contains("### Soak"));
        assert!(text.contains(
            "| PostgreSQL | 600 s / 30 s | **9 000** | 8 990 | 27 000 | **0.999** | 20 000 | yes | \
             40.0 MiB → 50.0 MiB (peak 51.0 MiB) | **no** |"
        ));
        assert!(text.contains("| PostgreSQL | 300 000 → 310 000 (max 330 000) |"));
    }

    #[test]
    fn merged_runs_give_each_run_its_machine_facts() {
        let file = r#"{"scenario":"machine","run_id":"A","nproc":2,"cpu_model":"Xeon","git_commit":"aaa","rustc":"1.95"}
{"scenario":"queue","run_id":"A","args":["queue"],"backend":"sqlite","n":20000,"concurrency":8,"backlog":0,"drain_jobs_per_s":5000.0,"rounds":1}
{"scenario":"machine","run_id":"B","nproc":2,"cpu_model":"EPYC","git_commit":"bbb","rustc":"1.95"}
{"scenario":"soak","run_id":"B","args":["soak"],"backend":"sqlite","seconds":600}
"#;
        let r = Results::parse(file, Selection::Merge);
        let text = render(&r, &Context::default());
        assert!(text.contains("## Figures of the latest suite runs (generated)"));
        assert!(text.contains(
            "| CPU | Xeon (2 cores available) (run A); EPYC (2 cores available) (run B) |"
        ));
        assert!(text.contains("| Keel commit | aaa (run A); bbb (run B) |"));
        assert!(text.contains("1.95 (? build of keel-bench) |"));
        assert!(!text.contains("1.95 (? build of keel-bench) (run"));
    }
}
