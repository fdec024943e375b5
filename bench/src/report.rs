//! `keel-bench report`: reads the results file, prints the tables, and with `--write` draws
//! the SVG charts and rewrites the generated part of BENCHMARKS.md — only what lies between
//! [`BEGIN`] and [`END`]; the hand-written analysis around it is kept as it is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::charts::{self, Bar, Curve, Panel, Series, SoakPanel, Who};
use crate::flags::Flags;
use crate::results::{Results, Selection, num, text};
use crate::suite::DEFAULT_OUT;
use crate::tables::{self, Context, fmt};

/// Opens the generated part of BENCHMARKS.md.
pub const BEGIN: &str = "<!-- bench:generated:begin -->";
/// Closes it.
pub const END: &str = "<!-- bench:generated:end -->";

/// The usage text of `report`.
pub const USAGE: &str = "\
keel-bench report [--results bench/results/latest.jsonl] [--merge] [--write]
                  [--benchmarks BENCHMARKS.md] [--charts bench/charts]

  prints the tables of the last suite run in the results file (--merge: the latest run of
  every command); --write also draws the SVG charts into --charts and rewrites the part of
  --benchmarks between its bench:generated markers (inserted before the first `## ` heading
  when missing)";

/// What to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The results file.
    pub results: PathBuf,
    /// Which of its lines.
    pub selection: Selection,
    /// Draw the charts and rewrite BENCHMARKS.md.
    pub write: bool,
    /// The document to rewrite.
    pub benchmarks: PathBuf,
    /// Where the charts go.
    pub charts: PathBuf,
}

impl Options {
    /// Parses the flags of `report`.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let switches = ["--write", "--merge"];
        let has = |s: &str| args.iter().any(|a| a == s);
        let rest: Vec<String> = args
            .iter()
            .filter(|a| !switches.contains(&a.as_str()))
            .cloned()
            .collect();
        let f = Flags::parse(&rest)?;
        let text_or = |name: &str, default: &str| f.text(name).unwrap_or_else(|_| default.into());
        let opts = Self {
            results: text_or("--results", DEFAULT_OUT).into(),
            selection: if has("--merge") {
                Selection::Merge
            } else {
                Selection::LastRun
            },
            write: has("--write"),
            benchmarks: text_or("--benchmarks", "BENCHMARKS.md").into(),
            charts: text_or("--charts", "bench/charts").into(),
        };
        f.finish()?;
        Ok(opts)
    }
}

/// Runs `report` with its arguments (after the word `report`).
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &Options) -> anyhow::Result<()> {
    let results = Results::load(&opts.results, opts.selection)?;
    if results.unreadable > 0 {
        eprintln!(
            "report: {} line(s) of {} are not JSON objects, skipped",
            results.unreadable,
            opts.results.display()
        );
    }
    let mut ctx = Context {
        results_file: opts.results.display().to_string(),
        charts: Vec::new(),
    };
    if opts.write {
        std::fs::create_dir_all(&opts.charts)
            .with_context(|| format!("creating {}", opts.charts.display()))?;
        for (alt, path) in draw_charts(&results, &opts.charts)? {
            eprintln!("report: drew {}", path.display());
            ctx.charts.push((alt, link(&opts.benchmarks, &path)));
        }
    }
    let generated = tables::render(&results, &ctx);
    println!("{generated}");
    if opts.write {
        let doc = match std::fs::read_to_string(&opts.benchmarks) {
            Ok(doc) => doc,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".to_owned(),
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", opts.benchmarks.display()));
            }
        };
        let doc = replace_generated(&doc, &generated).map_err(anyhow::Error::msg)?;
        std::fs::write(&opts.benchmarks, doc)
            .with_context(|| format!("writing {}", opts.benchmarks.display()))?;
        eprintln!(
            "report: rewrote the generated part of {}",
            opts.benchmarks.display()
        );
    }
    Ok(())
}

/// `doc` with everything between [`BEGIN`] and [`END`] replaced by `generated`; without the
/// markers, the block is inserted before the first `## ` heading (or at the end).
///
/// # Errors
/// Fails when only one marker is there, or they are in the wrong order.
pub fn replace_generated(doc: &str, generated: &str) -> Result<String, String> {
    let block = format!("{BEGIN}\n\n{}\n{END}", generated.trim_end());
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if b < e => Ok(format!("{}{block}{}", &doc[..b], &doc[e + END.len()..])),
        (None, None) => {
            let at = if doc.starts_with("## ") {
                Some(0)
            } else {
                doc.find("\n## ").map(|i| i + 1)
            };
            Ok(match at {
                Some(i) => format!("{}{block}\n\n{}", &doc[..i], &doc[i..]),
                None => format!("{}\n\n{block}\n", doc.trim_end()),
            })
        }
        _ => Err(format!(
            "BENCHMARKS.md has one of `{BEGIN}` / `{END}` without the other, or in the wrong \
             order: fix it by hand"
        )),
    }
}

/// How BENCHMARKS.md links to `chart`: relative to the document's folder when inside it.
fn link(benchmarks: &Path, chart: &Path) -> String {
    let dir = benchmarks
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let rel = abs(chart)
        .strip_prefix(abs(dir))
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| chart.to_path_buf());
    rel.to_string_lossy().replace('\\', "/")
}

/// The conditions line under each chart's title; `scenarios` name the lines it draws, whose
/// runs it names.
fn subtitle(r: &Results, scenarios: &[&str], extra: &str) -> String {
    let m = r.machine();
    let mut parts = vec![extra.to_owned()];
    if let Some(pg) = m.and_then(|m| text(&m["postgres"], "server_version")) {
        let pg = pg.split_whitespace().next().unwrap_or(pg);
        parts.push(format!("PostgreSQL {pg} local"));
    }
    if let Some(n) = m.and_then(|m| m["nproc"].as_u64()) {
        parts.push(format!("{n} cores"));
    }
    let runs = r.runs_of(scenarios);
    if !runs.is_empty() {
        parts.push(format!(
            "run{} {}",
            if runs.len() > 1 { "s" } else { "" },
            runs.join(", ")
        ));
    }
    parts.retain(|p| !p.is_empty());
    parts.join(" · ")
}

/// Draws every chart the results have figures for; returns (alt text, path) of each.
fn draw_charts(r: &Results, dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut drawn = Vec::new();
    let peers = r.peers();

    // Drain and enqueue at the peers' N and concurrency (or, without peers, the largest N
    // at the concurrency closest to issue 7's 10).
    let setting = r.peer_setting().or_else(|| {
        let rows = r.queue(0);
        let n = rows.iter().filter_map(|v| v["n"].as_u64()).max()?;
        let c = rows
            .iter()
            .filter(|v| v["n"].as_u64() == Some(n))
            .filter_map(|v| v["concurrency"].as_u64())
            .min_by_key(|c| c.abs_diff(10))?;
        Some((n, c))
    });
    if let Some((n, c)) = setting {
        let keel = |backend: &str| {
            if backend == "postgres" {
                r.keel_beside_peers(n, c)
            } else {
                r.keel_at(backend, n, c)
            }
        };
        let mut bars = vec![
            Bar {
                label: "Keel, PostgreSQL".into(),
                who: Who::KeelPostgres,
                drain: keel("postgres").and_then(|v| num(v, "drain_jobs_per_s")),
                enqueue: keel("postgres").and_then(|v| num(v, "enqueue_batched_jobs_per_s")),
            },
            Bar {
                label: "Keel, SQLite".into(),
                who: Who::KeelSqlite,
                drain: keel("sqlite").and_then(|v| num(v, "drain_jobs_per_s")),
                enqueue: keel("sqlite").and_then(|v| num(v, "enqueue_batched_jobs_per_s")),
            },
        ];
        for (i, p) in peers.iter().enumerate() {
            bars.push(Bar {
                label: p.label.clone(),
                who: Who::Peer(i),
                drain: p.drain,
                enqueue: p.enqueue,
            });
        }
        let note = if peers.is_empty() {
            format!("N = {}, C = {c} · peers not in this run", fmt(n as f64))
        } else {
            format!("N = {}, concurrency {c}, same run", fmt(n as f64))
        };
        let path = dir.join("drain.svg");
        charts::drain_chart(
            &path,
            &subtitle(r, &["queue", "peer", "peers"], &note),
            &bars,
        )?;
        drawn.push((
            "Drain and enqueue rate: Keel and the peers".to_owned(),
            path,
        ));
    }

    // Chain latency distributions, one panel per backend.
    let mut panels = Vec::new();
    for (backend, title) in [("sqlite", "SQLite"), ("postgres", "PostgreSQL")] {
        let Some(line) = r.last("chain", backend) else {
            continue;
        };
        let curves: Vec<Curve> = tables::chain_loads(line)
            .into_iter()
            .enumerate()
            .filter_map(|(i, load)| {
                let points: Vec<(f64, f64)> = load["percentiles_ms"]
                    .as_array()?
                    .iter()
                    .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
                    .collect();
                (!points.is_empty()).then(|| Curve {
                    label: tables::load_label(load),
                    color: i,
                    points,
                })
            })
            .collect();
        if !curves.is_empty() {
            panels.push(Panel {
                title: title.to_owned(),
                curves,
            });
        }
    }
    if !panels.is_empty() {
        let path = dir.join("chain-latency.svg");
        charts::latency_chart(
            &path,
            &subtitle(
                r,
                &["chain"],
                "open-loop offered loads, latency from each request's due instant",
            ),
            &panels,
        )?;
        drawn.push((
            "Chain latency distribution at each offered load".to_owned(),
            path,
        ));
    }

    // Drain against concurrency at the largest N.
    let rows = r.queue(0);
    if let Some(n) = rows.iter().filter_map(|v| v["n"].as_u64()).max() {
        let series = |backend: &str, label: &str, who: Who| Series {
            label: label.to_owned(),
            who,
            points: rows
                .iter()
                .filter(|v| text(v, "backend") == Some(backend) && v["n"].as_u64() == Some(n))
                .filter_map(|v| Some((num(v, "concurrency")?, num(v, "drain_jobs_per_s")?)))
                .collect(),
        };
        let keel: Vec<Series> = [
            series("postgres", "Keel, PostgreSQL", Who::KeelPostgres),
            series("sqlite", "Keel, SQLite", Who::KeelSqlite),
        ]
        .into_iter()
        .filter(|s| !s.points.is_empty())
        .collect();
        let peer_points: Vec<Series> = peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.n == Some(n))
            .filter_map(|(i, p)| {
                Some(Series {
                    label: p.label.clone(),
                    who: Who::Peer(i),
                    points: vec![(p.concurrency? as f64, p.drain?)],
                })
            })
            .collect();
        if !keel.is_empty() {
            let path = dir.join("queue-concurrency.svg");
            charts::concurrency_chart(
                &path,
                &subtitle(r, &["queue", "peer"], &format!("N = {}", fmt(n as f64))),
                &keel,
                &peer_points,
            )?;
            drawn.push(("Drain rate against concurrency".to_owned(), path));
        }
    }

    // The soak: row counts and RSS over time, one row per backend.
    let soaks: Vec<(&str, &serde_json::Value)> = [("SQLite", "sqlite"), ("PostgreSQL", "postgres")]
        .into_iter()
        .filter_map(|(title, backend)| Some((title, r.last("soak", backend)?)))
        .collect();
    if !soaks.is_empty() {
        let panels: Vec<SoakPanel> = soaks
            .iter()
            .map(|(title, v)| soak_panel(title, v))
            .collect();
        let distinct = |key: &str| {
            let mut values: Vec<String> = Vec::new();
            for x in soaks.iter().filter_map(|(_, v)| num(v, key)) {
                let x = format!("{x:.0}");
                if !values.contains(&x) {
                    values.push(x);
                }
            }
            values.join(" / ")
        };
        let (seconds, retention) = (distinct("seconds"), distinct("retention_s"));
        let path = dir.join("soak.svg");
        charts::soak_chart(
            &path,
            &subtitle(
                r,
                &["soak"],
                &format!(
                    "{seconds} s of load as fast as the drain allows, retention {retention} s"
                ),
            ),
            &panels,
        )?;
        drawn.push(("Soak: row counts and RSS over time".to_owned(), path));
    }
    Ok(drawn)
}

/// One backend's soak samples as chart series.
fn soak_panel(title: &str, v: &serde_json::Value) -> SoakPanel {
    let samples = v["samples"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let series = |key: &str, scale: f64| -> Vec<(f64, f64)> {
        samples
            .iter()
            .filter_map(|s| Some((num(s, "t_s")?, num(s, key)? * scale)))
            .collect()
    };
    SoakPanel {
        title: title.to_owned(),
        tables: crate::soak::TABLES
            .iter()
            .map(|t| ((*t).to_owned(), series(t, 1.0)))
            .filter(|(_, points)| !points.is_empty())
            .collect(),
        rss: series("rss_kib", 1.0 / 1024.0),
        warmup: num(v, "warmup_s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_part_is_replaced_and_nothing_else() {
        let doc = format!("# B\n\nintro\n\n{BEGIN}\nold figures\n{END}\n\n## Analysis\nprose\n");
        let out = replace_generated(&doc, "new figures\n").expect("markers in order");
        assert_eq!(
            out,
            format!("# B\n\nintro\n\n{BEGIN}\n\nnew figures\n{END}\n\n## Analysis\nprose\n")
        );
        // Idempotent.
        assert_eq!(replace_generated(&out, "new figures\n"), Ok(out.clone()));
    }

    #[test]
    fn markers_are_inserted_before_the_first_section() {
        let out = replace_generated("# B\n\nintro\n\n## Old\nprose\n", "gen").expect("no markers");
        assert_eq!(
            out,
            format!("# B\n\nintro\n\n{BEGIN}\n\ngen\n{END}\n\n## Old\nprose\n")
        );
        let out = replace_generated("# B\n", "gen").expect("no markers");
        assert_eq!(out, format!("# B\n\n{BEGIN}\n\ngen\n{END}\n"));
        assert!(replace_generated(&format!("{END}\n{BEGIN}"), "gen").is_err());
        assert!(replace_generated(&format!("a {BEGIN} b"), "gen").is_err());
    }

    #[test]
    fn charts_link_relative_to_the_document() {
        assert_eq!(
            link(
                Path::new("BENCHMARKS.md"),
                Path::new("bench/charts/drain.svg")
            ),
            "bench/charts/drain.svg"
        );
        assert_eq!(
            link(
                Path::new("docs/BENCHMARKS.md"),
                Path::new("docs/charts/a.svg")
            ),
            "charts/a.svg"
        );
    }
}
