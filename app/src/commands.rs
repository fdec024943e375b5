//! The operator commands: `keel trace`, `keel queues`, `keel dead …`. Each prints a table or
//! tree for people, or JSON (`--json`) for scripts, from the same runtime queries the admin
//! API uses.

use std::fmt::Write as _;

use anyhow::Context;
use runtime::RuntimeError;
use runtime::admin::{self, AttemptRecord, JobRecord};
use runtime::trace::TraceNode;

use crate::cli::DeadCommand;
use crate::config::Settings;
use crate::wiring::{self, Wired};

/// Connects for an operator command. It never migrates: inspecting production with a newer
/// binary must not change its schema — a database behind the binary is refused instead.
pub(crate) async fn connect(settings: &Settings) -> anyhow::Result<Wired> {
    let wired = wiring::wire(settings, wiring::system_clock()).await?;
    let pending = wired
        .pending_migrations()
        .await
        .context("reading the applied migrations")?;
    if !pending.is_empty() {
        anyhow::bail!(
            "the database has {} pending migration(s) ({}…); run `keel migrate` first",
            pending.len(),
            pending[0]
        );
    }
    Ok(wired)
}

/// `keel trace <CORRELATION_ID> [--json]`
///
/// # Errors
/// Fails when nothing carries the id, or the database fails.
pub async fn trace(settings: &Settings, correlation_id: &str, json: bool) -> anyhow::Result<()> {
    let wired = connect(settings).await?;
    let trace = runtime::trace::trace(wired.runtime.db(), correlation_id).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&trace)?);
    } else {
        print!("{}", render_trace(&trace));
    }
    Ok(())
}

/// The trace as an indented tree.
pub fn render_trace(trace: &runtime::trace::Trace) -> String {
    let mut out = format!("trace {} ({} nodes)\n", trace.correlation_id, trace.nodes);
    let count = trace.roots.len();
    for (i, node) in trace.roots.iter().enumerate() {
        render_node(&mut out, node, "", i + 1 == count);
    }
    out
}

fn render_node(out: &mut String, node: &TraceNode, prefix: &str, last: bool) {
    let branch = if last { "└─ " } else { "├─ " };
    let below = format!("{prefix}{}", if last { "   " } else { "│  " });
    let at = |t: &chrono::DateTime<chrono::Utc>| t.format("%H:%M:%S%.3f").to_string();
    let children = match node {
        TraceNode::Request {
            at: t,
            method,
            path,
            status,
            duration_ms,
            children,
            ..
        } => {
            let _ = writeln!(
                out,
                "{prefix}{branch}request {method} {path} → {status} ({duration_ms} ms) at {}",
                at(t)
            );
            children
        }
        TraceNode::Event {
            id,
            at: t,
            name,
            version,
            broker,
            children,
            ..
        } => {
            let _ = writeln!(
                out,
                "{prefix}{branch}event {name} v{version} {id} at {}",
                at(t)
            );
            for note in broker {
                let _ = writeln!(out, "{below}  ↔ {note}");
            }
            children
        }
        TraceNode::Job {
            id,
            at: t,
            queue,
            job_type,
            state,
            attempts,
            children,
        } => {
            let _ = writeln!(
                out,
                "{prefix}{branch}job {job_type} on {queue} [{state}] {id} at {}",
                at(t)
            );
            for a in attempts {
                let _ = writeln!(out, "{below}  · {}", render_attempt(a));
            }
            children
        }
    };
    let n = children.len();
    for (i, child) in children.iter().enumerate() {
        render_node(out, child, &below, i + 1 == n);
    }
}

fn render_attempt(a: &AttemptRecord) -> String {
    let mut line = format!(
        "attempt {} {} at {} ({} ms)",
        a.attempt,
        a.outcome,
        a.started_at.format("%H:%M:%S%.3f"),
        a.duration_ms
    );
    if let Some(d) = &a.detail {
        if let Some(url) = d.get("url").and_then(|v| v.as_str()) {
            let _ = write!(line, " → {url}");
        }
        if let Some(status) = d.get("status") {
            let _ = write!(line, " status {status}");
        }
        if let Some(r) = d.get("recipient").and_then(|v| v.as_str()) {
            let _ = write!(line, " to {r}");
        }
        if let Some(r) = d.get("smtp_reply").and_then(|v| v.as_str()) {
            let _ = write!(line, " smtp {r:?}");
        }
    }
    if let Some(e) = &a.error {
        let _ = write!(line, " — {e}");
    }
    line
}

/// `keel queues [--json]`
///
/// # Errors
/// Fails when the database fails.
pub async fn queues(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let wired = connect(settings).await?;
    let rt = &wired.runtime;
    let names: Vec<String> = rt.config().queues.keys().cloned().collect();
    let stats = admin::queue_stats(rt.db(), rt.time(), &names).await?;
    let replays = runtime::replay::active(rt.db()).await?;
    if json {
        let value = runtime::replay::with_replays(&stats, &replays)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "{:<12} {:>8} {:>10} {:>9} {:>8} {:>9} {:>6} {:>12}",
        "QUEUE", "READY", "SCHEDULED", "RESERVED", "RUNNING", "RETRYING", "DEAD", "OLDEST READY"
    );
    for s in stats {
        let oldest = s
            .oldest_ready_age_seconds
            .map_or_else(|| "-".to_owned(), |a| format!("{a:.1}s"));
        println!(
            "{:<12} {:>8} {:>10} {:>9} {:>8} {:>9} {:>6} {:>12}",
            s.queue, s.ready, s.scheduled, s.reserved, s.running, s.retrying, s.dead, oldest
        );
    }
    if !replays.is_empty() {
        println!("\nREPLAYS AND BACKFILLS (on the events queue)");
        for r in &replays {
            let since = r.since.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339());
            println!(
                "{} {} → {} since {since}: {}/{} enqueued, {} delivered, {} skipped, {} failed, {}/s",
                r.kind,
                r.id,
                r.listener,
                r.enqueued,
                r.total,
                r.delivered,
                r.skipped,
                r.failed,
                r.rate
            );
        }
    }
    Ok(())
}

/// `keel schedules [--json]`
///
/// # Errors
/// Fails when the database fails.
pub async fn schedules(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let wired = connect(settings).await?;
    let list = wired.runtime.schedule_statuses().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("no schedules");
        return Ok(());
    }
    let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        )
    };
    println!(
        "{:<32} {:<16} {:<14} {:<9} {:<20} {:<20} LAST OUTCOME",
        "SCHEDULE", "CRON", "ZONE", "MISSED", "NEXT RUN (UTC)", "LAST RUN (UTC)"
    );
    for s in list {
        let next = if s.paused {
            "paused".to_owned()
        } else {
            at(s.next_run_at)
        };
        println!(
            "{:<32} {:<16} {:<14} {:<9} {:<20} {:<20} {}",
            s.name,
            s.cron,
            s.zone,
            s.missed,
            next,
            at(s.last_run_at),
            s.last_outcome.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// `keel dead list|show|replay`
///
/// # Errors
/// Fails on unknown ids or when the database fails.
pub async fn dead(settings: &Settings, command: DeadCommand) -> anyhow::Result<()> {
    let wired = connect(settings).await?;
    let rt = &wired.runtime;
    match command {
        DeadCommand::List { queue, json } => {
            let items = admin::dead_letters(rt.db(), queue.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else if items.is_empty() {
                println!("no dead letters");
            } else {
                println!(
                    "{:<36} {:<10} {:<34} {:>8}  LAST ERROR",
                    "ID", "QUEUE", "JOB TYPE", "ATTEMPTS"
                );
                for j in items {
                    println!(
                        "{:<36} {:<10} {:<34} {:>8}  {}",
                        j.id,
                        j.queue,
                        j.job_type,
                        j.attempt,
                        j.last_error.as_deref().unwrap_or("")
                    );
                }
            }
        }
        DeadCommand::Show { id, json } => {
            let job = admin::show_job(rt.db(), &id).await.map_err(not_found)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                print!("{}", render_job(&job));
            }
        }
        DeadCommand::Groups { queue, json } => {
            let groups = admin::dead_letter_groups(rt.db(), queue.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&groups)?);
            } else if groups.is_empty() {
                println!("no dead letters");
            } else {
                println!(
                    "{:<16} {:>6} {:<10} {:<34}  ERROR CLASS",
                    "GROUP", "COUNT", "QUEUE", "JOB TYPE"
                );
                for g in groups {
                    println!(
                        "{:<16} {:>6} {:<10} {:<34}  {}",
                        g.id, g.count, g.queue, g.job_type, g.error_class
                    );
                }
            }
        }
        DeadCommand::Replay {
            group: Some(group),
            rate,
            ..
        } => {
            let wake = || {};
            let report = admin::replay_group(
                rt.db(),
                rt.time(),
                &group,
                rate,
                crate::http::admin::GROUP_CANARY_TIMEOUT,
                &wake,
            )
            .await?;
            let state = report.canary_state.as_deref().unwrap_or("-");
            println!(
                "canary {} → {state}; replayed {} more; {} left dead",
                report.canary.as_deref().unwrap_or("-"),
                report.replayed.len(),
                report.left_dead
            );
            if report.canary.is_some() && state != "completed" {
                anyhow::bail!(
                    "the first replayed job did not complete ({state}); the rest of the group was left dead"
                );
            }
        }
        DeadCommand::Replay {
            ids,
            all,
            queue,
            error_contains,
            ..
        } => {
            let ids = if all {
                let mut ids = Vec::new();
                for job in admin::dead_letters(rt.db(), queue.as_deref()).await? {
                    let matches = error_contains.as_deref().is_none_or(|needle| {
                        job.last_error.as_deref().unwrap_or("").contains(needle)
                    });
                    if matches {
                        ids.push(job.id);
                    }
                }
                ids
            } else {
                ids
            };
            let replayed = admin::replay(rt.db(), &ids, rt.time()).await?;
            let missing: Vec<&String> = ids.iter().filter(|i| !replayed.contains(i)).collect();
            println!("replayed {} job(s)", replayed.len());
            if !missing.is_empty() {
                anyhow::bail!(
                    "not dead (or unknown), not replayed: {}",
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        DeadCommand::Purge {
            ids,
            all,
            queue,
            yes,
        } => {
            let ids = if all {
                admin::dead_ids(rt.db(), queue.as_deref()).await?
            } else {
                ids
            };
            if !yes {
                anyhow::bail!(
                    "purging deletes {} dead job(s) and their attempts for good; re-run with --yes to confirm",
                    ids.len()
                );
            }
            let purged = admin::purge(rt.db(), &ids).await?;
            println!("purged {} job(s)", purged.len());
            if purged.len() != ids.len() {
                anyhow::bail!(
                    "{} id(s) were not dead jobs and were left alone",
                    ids.len() - purged.len()
                );
            }
        }
    }
    Ok(())
}

fn not_found(e: RuntimeError) -> anyhow::Error {
    anyhow::anyhow!(e)
}

fn render_job(j: &JobRecord) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "job {}", j.id);
    let _ = writeln!(out, "  queue:           {}", j.queue);
    let _ = writeln!(out, "  type:            {}", j.job_type);
    let _ = writeln!(out, "  state:           {}", j.state);
    let _ = writeln!(out, "  attempts:        {}/{}", j.attempt, j.max_attempts);
    let _ = writeln!(out, "  idempotency key: {}", j.idempotency_key);
    let _ = writeln!(out, "  correlation id:  {}", j.correlation_id);
    let _ = writeln!(out, "  replays:         {}", j.replays);
    let _ = writeln!(out, "  payload:         {}", j.payload);
    if let Some(e) = &j.last_error {
        let _ = writeln!(out, "  last error:      {e}");
    }
    let _ = writeln!(out, "  attempts:");
    for a in &j.attempts {
        let _ = writeln!(out, "    · {}", render_attempt(a));
    }
    out
}
