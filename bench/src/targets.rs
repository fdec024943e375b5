//! The targets of issue 7, judged from the figures of a run: met or missed, and by how much.
//! Nothing here is hard-coded but the targets themselves.

use crate::results::{Results, num, text};
use crate::tables::fmt;

/// Whether a bigger or a smaller figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// At least the limit.
    Higher,
    /// Under the limit.
    Lower,
    /// At most the limit.
    AtMost,
}

/// One target and what was measured against it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// What the target says, e.g. `idle chain p50 < 3 ms (SQLite)`.
    pub name: String,
    /// The limit.
    pub limit: f64,
    /// Which side of the limit passes.
    pub better: Better,
    /// The unit of the limit and the figure (`ms`, `jobs/s`, `×`).
    pub unit: &'static str,
    /// The figure compared (`None`: not measured in this run).
    pub measured: Option<f64>,
    /// Where the figure comes from.
    pub detail: String,
}

impl Target {
    /// Whether the figure passes (`None` when not measured).
    pub fn met(&self) -> Option<bool> {
        let m = self.measured?;
        Some(match self.better {
            Better::Higher => m >= self.limit,
            Better::Lower => m < self.limit,
            Better::AtMost => m <= self.limit,
        })
    }

    /// `met`, `missed by …` with the gap in the unit and as a factor, or `not measured`.
    pub fn verdict(&self) -> String {
        let Some(m) = self.measured else {
            return "not measured in this run".to_owned();
        };
        let gap = (m - self.limit).abs();
        let unit = if self.unit == "×" {
            String::new()
        } else {
            format!(" {}", self.unit)
        };
        let higher = self.better == Better::Higher;
        match (self.met(), higher) {
            (Some(true), true) => format!(
                "**met** ({} over, {:.2}× the limit)",
                fmt(gap) + &unit,
                m / self.limit
            ),
            (Some(true), false) => format!(
                "**met** ({} under, {:.2}× the limit)",
                fmt(gap) + &unit,
                m / self.limit
            ),
            (_, true) => {
                let factor = if m > 0.0 {
                    format!("{:.2}×", self.limit / m)
                } else {
                    "∞×".to_owned()
                };
                format!(
                    "**missed** by {} (needs {factor} the figure)",
                    fmt(gap) + &unit
                )
            }
            (_, false) => format!(
                "**missed** by {} ({:.2}× the limit)",
                fmt(gap) + &unit,
                m / self.limit
            ),
        }
    }
}

fn backend_label(backend: &str) -> &'static str {
    if backend == "postgres" {
        "PostgreSQL"
    } else {
        "SQLite"
    }
}

/// Every target of issue 7, with this run's figures.
pub fn evaluate(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();

    // Drain on PostgreSQL ≥ 1.5 × graphile-worker batched, same run, same N and concurrency.
    let graphile_batched = r.peers().into_iter().find(|p| {
        p.name.contains("graphile")
            && p.mode
                .as_deref()
                .is_some_and(|m| m.contains("batch") || m.contains("local"))
    });
    let (measured, detail) = match (&graphile_batched, r.peer_setting()) {
        (Some(g), Some((n, c))) => {
            let keel = r
                .keel_beside_peers(n, c)
                .and_then(|v| num(v, "drain_jobs_per_s"));
            match (keel, g.drain) {
                (Some(k), Some(d)) if d > 0.0 => (
                    Some(k / d),
                    format!(
                        "Keel {} jobs/s ÷ {} {} jobs/s; N = {}, C = {c}",
                        fmt(k),
                        g.label,
                        fmt(d),
                        fmt(n as f64)
                    ),
                ),
                _ => (None, format!("no Keel PostgreSQL run at N = {n}, C = {c}")),
            }
        }
        _ => (None, "graphile-worker batched not in this run".to_owned()),
    };
    out.push(Target {
        name: "PostgreSQL drain ≥ 1.5 × graphile-worker batched".into(),
        limit: 1.5,
        better: Better::Higher,
        unit: "×",
        measured,
        detail,
    });

    // SQLite drain ≥ 20 000 jobs/s: the best concurrency of the throughput runs.
    let best = r
        .queue(0)
        .into_iter()
        .filter(|v| text(v, "backend") == Some("sqlite"))
        .filter_map(|v| Some((num(v, "drain_jobs_per_s")?, v)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    out.push(Target {
        name: "SQLite drain ≥ 20 000 jobs/s".into(),
        limit: 20_000.0,
        better: Better::Higher,
        unit: "jobs/s",
        measured: best.map(|(d, _)| d),
        detail: best.map_or_else(String::new, |(_, v)| {
            format!(
                "best of the concurrencies: C = {}, N = {}",
                v["concurrency"],
                fmt(num(v, "n").unwrap_or(f64::NAN))
            )
        }),
    });

    for backend in ["sqlite", "postgres"] {
        let label = backend_label(backend);
        let idle = r.chain_load(backend, "idle");
        for (key, limit) in [("p50_ms", 3.0), ("p99_ms", 10.0)] {
            out.push(Target {
                name: format!("idle chain {} < {limit} ms ({label})", &key[..3]),
                limit,
                better: Better::Lower,
                unit: "ms",
                measured: idle.and_then(|l| num(l, key)),
                detail: idle.map_or_else(String::new, |l| {
                    format!("{} sequential requests", l["requests_ok"])
                }),
            });
        }
        let busy = r.chain_load(backend, "1000");
        out.push(Target {
            name: format!("chain p99 < 50 ms at 1 000 req/s ({label})"),
            limit: 50.0,
            better: Better::Lower,
            unit: "ms",
            measured: busy.and_then(|l| num(l, "p99_ms")),
            detail: busy.map_or_else(String::new, |l| {
                format!(
                    "delivered {} webhooks/s",
                    fmt(num(l, "delivered_per_s").unwrap_or(f64::NAN))
                )
            }),
        });
    }

    // Write path ≥ 70 % of pgbench at the same client count (PostgreSQL only).
    let runs = r
        .last("write", "postgres")
        .and_then(|v| v["runs"].as_array().cloned())
        .unwrap_or_default();
    if runs.is_empty() {
        out.push(Target {
            name: "write path ≥ 0.70 × pgbench".into(),
            limit: 0.7,
            better: Better::Higher,
            unit: "×",
            measured: None,
            detail: String::new(),
        });
    }
    for run in &runs {
        out.push(Target {
            name: format!("write path ≥ 0.70 × pgbench, K = {}", run["clients"]),
            limit: 0.7,
            better: Better::Higher,
            unit: "×",
            measured: num(run, "ratio"),
            detail: format!(
                "{} POST /records per s ÷ {} TPS",
                fmt(num(run, "keel_requests_per_s").unwrap_or(f64::NAN)),
                fmt(num(run, "pgbench_tps").unwrap_or(f64::NAN))
            ),
        });
    }

    // Backlog 1 M vs 10 k: drain ratio ≥ 0.9, RSS flat.
    for backend in ["sqlite", "postgres"] {
        let label = backend_label(backend);
        let rows = r.backlogs(backend);
        let at = |m: u64| {
            rows.iter()
                .filter(|(b, _)| *b == m)
                .find_map(|(_, v)| num(v, "drain_jobs_per_s"))
        };
        let (small, big) = (at(10_000), at(1_000_000));
        out.push(Target {
            name: format!("backlog 1 M ÷ 10 k drain ≥ 0.9 ({label})"),
            limit: 0.9,
            better: Better::Higher,
            unit: "×",
            measured: small.zip(big).map(|(s, b)| b / s),
            detail: small.zip(big).map_or_else(
                || "needs both backlogs; --quick skips the 1 M one".to_owned(),
                |(s, b)| format!("{} ÷ {} jobs/s", fmt(b), fmt(s)),
            ),
        });
        let hwm = |m: u64| r.memory(backend, m).and_then(|v| num(v, "vm_hwm_kib"));
        let (small, big) = (hwm(10_000), hwm(1_000_000));
        out.push(Target {
            name: format!("peak RSS 1 M ÷ 10 k ≤ 1.10, i.e. flat ({label})"),
            limit: 1.10,
            better: Better::AtMost,
            unit: "×",
            measured: small.zip(big).map(|(s, b)| b / s),
            detail: small.zip(big).map_or_else(
                || "needs both backlogs; --quick skips the 1 M one".to_owned(),
                |(s, b)| format!("VmHWM {} ÷ {} KiB", fmt(b), fmt(s)),
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Selection;

    fn target(limit: f64, better: Better, unit: &'static str, m: Option<f64>) -> Target {
        Target {
            name: "t".into(),
            limit,
            better,
            unit,
            measured: m,
            detail: String::new(),
        }
    }

    #[test]
    fn verdicts_say_by_how_much() {
        let t = target(3.0, Better::Lower, "ms", Some(5.0));
        assert_eq!(t.met(), Some(false));
        assert_eq!(t.verdict(), "**missed** by 2.00 ms (1.67× the limit)");
        let t = target(10.0, Better::Lower, "ms", Some(9.2));
        assert_eq!(t.verdict(), "**met** (0.80 ms under, 0.92× the limit)");
        let t = target(20_000.0, Better::Higher, "jobs/s", Some(13_441.0));
        assert_eq!(
            t.verdict(),
            "**missed** by 6 559 jobs/s (needs 1.49× the figure)"
        );
        let t = target(0.9, Better::Higher, "×", Some(1.05));
        assert_eq!(t.verdict(), "**met** (0.15 over, 1.17× the limit)");
        assert_eq!(
            target(1.0, Better::Higher, "×", None).verdict(),
            "not measured in this run"
        );
    }

    #[test]
    fn targets_come_from_the_figures() {
        let file = r#"{"scenario":"peer","run_id":"A","peer":"graphile-worker","mode":"batched","n":100,"concurrency":10,"drain_jobs_per_s":1000.0}
{"scenario":"queue","run_id":"A","backend":"postgres","n":100,"concurrency":10,"backlog":0,"drain_jobs_per_s":2000.0}
{"scenario":"queue","run_id":"A","backend":"sqlite","n":100,"concurrency":8,"backlog":0,"drain_jobs_per_s":21000.0}
{"scenario":"queue","run_id":"A","backend":"sqlite","n":100,"concurrency":32,"backlog":10000,"drain_jobs_per_s":100.0}
{"scenario":"queue","run_id":"A","backend":"sqlite","n":100,"concurrency":32,"backlog":1000000,"drain_jobs_per_s":80.0}
{"scenario":"chain","run_id":"A","backend":"sqlite","loads":[{"load":"idle","requests_ok":300,"p50_ms":2.5,"p99_ms":12.0}]}
"#;
        let r = Results::parse(file, Selection::LastRun);
        let targets = evaluate(&r);
        let find = |name: &str| {
            targets
                .iter()
                .find(|t| t.name.starts_with(name))
                .unwrap_or_else(|| panic!("no target {name}"))
        };
        assert_eq!(find("PostgreSQL drain").measured, Some(2.0));
        assert_eq!(find("PostgreSQL drain").met(), Some(true));
        assert_eq!(find("SQLite drain").met(), Some(true));
        assert_eq!(find("idle chain p50 < 3 ms (SQLite)").met(), Some(true));
        assert_eq!(find("idle chain p99 < 10 ms (SQLite)").met(), Some(false));
        assert_eq!(find("idle chain p50 < 3 ms (PostgreSQL)").met(), None);
        assert_eq!(
            find("backlog 1 M ÷ 10 k drain ≥ 0.9 (SQLite)").measured,
            Some(0.8)
        );
        assert_eq!(
            find("backlog 1 M ÷ 10 k drain ≥ 0.9 (SQLite)").met(),
            Some(false)
        );
        assert_eq!(find("write path").met(), None);
    }
}
