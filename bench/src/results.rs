//! The results file read back: the JSON lines `keel-bench suite` appended, the ones to report
//! (the last suite run, or the latest execution of every command across runs), and typed
//! look-ups the tables, targets and charts share.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

/// Which lines of the file to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Every line of the last suite run in the file.
    LastRun,
    /// For every command, the lines of its latest execution, whichever run it was in.
    Merge,
}

/// The lines reported.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// The selected lines, in file order.
    pub lines: Vec<Value>,
    /// The suite runs they come from, in file order.
    pub runs: Vec<String>,
    /// Lines of the file that were not JSON objects.
    pub unreadable: usize,
}

/// A number field.
pub fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key)?.as_f64()
}

/// A text field.
pub fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?.as_str()
}

/// One peer mode's figures, from a `"scenario":"peer"` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// e.g. `graphile-worker 0.17.3, batched`.
    pub label: String,
    /// The peer's name alone (`graphile-worker`, `apalis`).
    pub name: String,
    /// The peer's version, when it says.
    pub version: Option<String>,
    /// Its mode (`default`, `batched`, …), when it says.
    pub mode: Option<String>,
    /// N.
    pub n: Option<u64>,
    /// Concurrency.
    pub concurrency: Option<u64>,
    /// Bulk enqueue, jobs/s.
    pub enqueue: Option<f64>,
    /// One job per transaction, jobs/s.
    pub enqueue_single: Option<f64>,
    /// Drain, jobs/s.
    pub drain: Option<f64>,
}

impl Peer {
    fn from_line(v: &Value) -> Self {
        let first_text = |keys: &[&str]| keys.iter().find_map(|k| text(v, k)).map(str::to_owned);
        let first_num = |keys: &[&str]| keys.iter().find_map(|k| num(v, k));
        let name = first_text(&["peer", "name", "system"]).unwrap_or_else(|| "peer".into());
        let version = first_text(&["version", "peer_version"]);
        let mode = first_text(&["mode", "variant"]);
        let mut label = match &version {
            Some(ver) => format!("{name} {ver}"),
            None => name.clone(),
        };
        if let Some(m) = &mode {
            label = format!("{label}, {m}");
        }
        Self {
            label,
            name,
            version,
            mode,
            n: v.get("n").and_then(Value::as_u64),
            concurrency: v.get("concurrency").and_then(Value::as_u64),
            enqueue: first_num(&[
                "enqueue_batched_jobs_per_s",
                "enqueue_bulk_jobs_per_s",
                "enqueue_jobs_per_s",
            ]),
            enqueue_single: first_num(&[
                "enqueue_single_jobs_per_s",
                "enqueue_one_per_tx_jobs_per_s",
            ]),
            drain: num(v, "drain_jobs_per_s"),
        }
    }
}

impl Results {
    /// Reads `path` and selects the lines to report.
    ///
    /// # Errors
    /// Fails when the file cannot be read.
    pub fn load(path: &Path, selection: Selection) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Self::parse(&text, selection))
    }

    /// Selects from the text of a results file.
    pub fn parse(file: &str, selection: Selection) -> Self {
        let mut all = Vec::new();
        let mut unreadable = 0;
        for line in file.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Value>(line) {
                Ok(v) if v.is_object() => all.push(v),
                _ => unreadable += 1,
            }
        }
        let run_of = |v: &Value| text(v, "run_id").map(str::to_owned);
        let lines: Vec<Value> = match selection {
            Selection::LastRun => match all.iter().rev().find_map(run_of) {
                Some(last) => all
                    .into_iter()
                    .filter(|v| run_of(v).as_deref() == Some(last.as_str()))
                    .collect(),
                None => all,
            },
            Selection::Merge => {
                // The latest run (file order) of each step keeps all its lines. A step is
                // known by its arguments (the program's path differs between checkouts and
                // build folders), else by its command line.
                let key = |v: &Value| -> Option<String> {
                    if let Some(args) = v.get("args").filter(|a| a.is_array()) {
                        return Some(args.to_string());
                    }
                    text(v, "command").map(str::to_owned)
                };
                let mut latest: BTreeMap<String, Option<String>> = BTreeMap::new();
                for v in &all {
                    let k = key(v).unwrap_or_else(|| v.to_string());
                    if v["scenario"] != "machine" {
                        latest.insert(k, run_of(v));
                    }
                }
                let kept_runs: Vec<Option<String>> = latest.values().cloned().collect();
                let mut seen_machine: Vec<Option<String>> = Vec::new();
                all.into_iter()
                    .filter(|v| {
                        if v["scenario"] == "machine" && key(v).is_none() {
                            // One machine line for every run any kept line comes from.
                            let run = run_of(v);
                            let keep = kept_runs.contains(&run) && !seen_machine.contains(&run);
                            seen_machine.push(run);
                            return keep;
                        }
                        let k = key(v).unwrap_or_else(|| v.to_string());
                        latest.get(&k) == Some(&run_of(v))
                    })
                    .collect()
            }
        };
        let mut runs: Vec<String> = Vec::new();
        for r in lines.iter().filter_map(run_of) {
            if !runs.contains(&r) {
                runs.push(r);
            }
        }
        Self {
            lines,
            runs,
            unreadable,
        }
    }

    /// The lines of `scenario` that are not errors.
    pub fn of<'a>(&'a self, scenario: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.lines
            .iter()
            .filter(move |v| v["scenario"] == scenario && v.get("error").is_none())
    }

    /// The lines that record a failed step.
    pub fn errors(&self) -> impl Iterator<Item = &Value> {
        self.lines.iter().filter(|v| v.get("error").is_some())
    }

    /// The last machine description.
    pub fn machine(&self) -> Option<&Value> {
        self.of("machine").last()
    }

    /// Every machine description (one per run reported), in file order.
    pub fn machines(&self) -> Vec<&Value> {
        self.of("machine").collect()
    }

    /// The runs the lines of `scenarios` come from, in file order.
    pub fn runs_of(&self, scenarios: &[&str]) -> Vec<String> {
        let mut runs: Vec<String> = Vec::new();
        for v in self.lines.iter().filter(|v| {
            scenarios
                .iter()
                .any(|s| v["scenario"] == *s && v.get("error").is_none())
        }) {
            if let Some(r) = text(v, "run_id").filter(|r| !runs.iter().any(|x| x == r)) {
                runs.push(r.to_owned());
            }
        }
        runs
    }

    /// Queue lines with `backlog` jobs queued (0: the throughput runs), by backend then C.
    pub fn queue(&self, backlog: u64) -> Vec<&Value> {
        let mut rows: Vec<&Value> = self
            .of("queue")
            .filter(|v| v["backlog"].as_u64().unwrap_or(0) == backlog)
            .collect();
        rows.sort_by_key(|v| {
            (
                text(v, "backend").unwrap_or("").to_owned(),
                v["n"].as_u64(),
                v["concurrency"].as_u64(),
            )
        });
        rows
    }

    /// Keel's queue line without backlog on `backend` at N = `n`, concurrency `c`.
    pub fn keel_at(&self, backend: &str, n: u64, c: u64) -> Option<&Value> {
        self.queue(0).into_iter().rev().find(|v| {
            text(v, "backend") == Some(backend)
                && v["n"].as_u64() == Some(n)
                && v["concurrency"].as_u64() == Some(c)
        })
    }

    /// The backlog lines of `backend` as (backlog, line), smallest backlog first.
    pub fn backlogs(&self, backend: &str) -> Vec<(u64, &Value)> {
        let mut rows: Vec<(u64, &Value)> = self
            .of("queue")
            .filter(|v| text(v, "backend") == Some(backend))
            .filter_map(|v| Some((v["backlog"].as_u64().filter(|b| *b > 0)?, v)))
            .collect();
        rows.sort_by_key(|(b, _)| *b);
        rows
    }

    /// Every peer mode measured.
    pub fn peers(&self) -> Vec<Peer> {
        self.of("peer").map(Peer::from_line).collect()
    }

    /// The N and concurrency the peers ran at (from the first peer that says both).
    pub fn peer_setting(&self) -> Option<(u64, u64)> {
        self.peers()
            .iter()
            .find_map(|p| Some((p.n?, p.concurrency?)))
    }

    /// Keel on PostgreSQL at the peers' N and concurrency `(n, c)`: the queue scenario the
    /// `peers` subcommand ran beside them (its summary line's `keel`), else the suite's own
    /// queue line at the same N and C.
    pub fn keel_beside_peers(&self, n: u64, c: u64) -> Option<&Value> {
        self.of("peers")
            .filter_map(|v| v.get("keel").filter(|k| k.is_object()))
            .filter(|k| k["n"].as_u64() == Some(n) && k["concurrency"].as_u64() == Some(c))
            .last()
            .or_else(|| self.keel_at("postgres", n, c))
    }

    /// The last line of `scenario` on `backend`.
    pub fn last<'a>(&'a self, scenario: &'a str, backend: &str) -> Option<&'a Value> {
        self.of(scenario)
            .filter(|v| text(v, "backend") == Some(backend))
            .last()
    }

    /// One load (`idle`, `50`, …) of the chain scenario on `backend`.
    pub fn chain_load(&self, backend: &str, load: &str) -> Option<&Value> {
        self.last("chain", backend)?
            .get("loads")?
            .as_array()?
            .iter()
            .find(|l| text(l, "load") == Some(load))
    }

    /// The memory line of `backend` with `backlog` queued.
    pub fn memory(&self, backend: &str, backlog: u64) -> Option<&Value> {
        self.of("memory")
            .filter(|v| {
                text(v, "backend") == Some(backend) && v["backlog"].as_u64() == Some(backlog)
            })
            .last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"scenario":"machine","run_id":"A","nproc":2}
{"scenario":"queue","run_id":"A","command":"q1","backend":"sqlite","n":10,"concurrency":8,"backlog":0,"drain_jobs_per_s":100.0}
{"scenario":"chain","run_id":"A","command":"c1","backend":"sqlite","loads":[{"load":"idle","p50_ms":5.0}]}
not json
{"scenario":"machine","run_id":"B","nproc":2}
{"scenario":"queue","run_id":"B","command":"q1","backend":"sqlite","n":10,"concurrency":8,"backlog":0,"drain_jobs_per_s":200.0}
{"scenario":"peers","run_id":"B","command":"p","error":"unknown scenario"}
"#;

    #[test]
    fn last_run_or_latest_per_command() {
        let last = Results::parse(FILE, Selection::LastRun);
        assert_eq!(last.unreadable, 1);
        assert_eq!(last.runs, vec!["B".to_owned()]);
        assert_eq!(last.lines.len(), 3);
        assert!(last.chain_load("sqlite", "idle").is_none());
        assert_eq!(last.errors().count(), 1);

        let merged = Results::parse(FILE, Selection::Merge);
        assert_eq!(merged.runs, vec!["A".to_owned(), "B".to_owned()]);
        let drain = merged
            .keel_at("sqlite", 10, 8)
            .and_then(|v| num(v, "drain_jobs_per_s"));
        assert_eq!(drain, Some(200.0));
        assert_eq!(merged.queue(0).len(), 1);
        assert_eq!(
            merged
                .chain_load("sqlite", "idle")
                .and_then(|l| num(l, "p50_ms")),
            Some(5.0)
        );
        assert_eq!(merged.machine().and_then(|m| text(m, "run_id")), Some("B"));
        // Both runs contribute lines (q1 from B, c1 from A): both machine lines are kept.
        assert_eq!(merged.machines().len(), 2);
        assert_eq!(merged.runs_of(&["chain"]), vec!["A".to_owned()]);
        // Without a peers summary, Keel beside the peers is the suite's own PostgreSQL line:
        // there is none here.
        assert!(merged.keel_beside_peers(10, 8).is_none());
        let with_peers = Results::parse(
            r#"{"scenario":"peers","keel":{"n":10,"concurrency":8,"drain_jobs_per_s":300.0}}
{"scenario":"queue","backend":"postgres","n":10,"concurrency":8,"drain_jobs_per_s":100.0}"#,
            Selection::LastRun,
        );
        assert_eq!(
            with_peers
                .keel_beside_peers(10, 8)
                .and_then(|v| num(v, "drain_jobs_per_s")),
            Some(300.0)
        );
    }

    #[test]
    fn merge_knows_a_step_by_its_arguments_whatever_the_program_path() {
        let file = r#"{"scenario":"machine","run_id":"A"}
{"scenario":"queue","run_id":"A","command":"./a/keel-bench queue --jobs 10","args":["queue","--jobs","10"],"drain_jobs_per_s":1.0}
{"scenario":"chain","run_id":"A","command":"./a/keel-bench chain","args":["chain"]}
{"scenario":"machine","run_id":"B"}
{"scenario":"queue","run_id":"B","command":"/b/keel-bench queue --jobs 10","args":["queue","--jobs","10"],"drain_jobs_per_s":2.0}
{"scenario":"machine","run_id":"C"}
{"scenario":"soak","run_id":"C","command":"/b/keel-bench soak","args":["soak"]}
"#;
        let merged = Results::parse(file, Selection::Merge);
        let queue: Vec<f64> = merged
            .of("queue")
            .filter_map(|v| num(v, "drain_jobs_per_s"))
            .collect();
        assert_eq!(queue, vec![2.0]);
        assert_eq!(merged.runs, vec!["A", "B", "C"]);
        assert_eq!(merged.machines().len(), 3);
        assert_eq!(merged.of("soak").count(), 1);
        assert_eq!(merged.of("chain").count(), 1);
    }

    #[test]
    fn peer_lines_read_whatever_they_name_their_fields() {
        let v: Value = serde_json::from_str(
            r#"{"scenario":"peer","peer":"graphile-worker","version":"0.17.3","mode":"batched",
                "n":20000,"concurrency":10,"enqueue_jobs_per_s":50000.0,"drain_jobs_per_s":27000.0}"#,
        )
        .expect("valid JSON");
        let p = Peer::from_line(&v);
        assert_eq!(p.label, "graphile-worker 0.17.3, batched");
        assert_eq!((p.n, p.concurrency), (Some(20_000), Some(10)));
        assert_eq!((p.enqueue, p.drain), (Some(50_000.0), Some(27_000.0)));
    }
}
