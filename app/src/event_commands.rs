//! `keel events list|show|replay`: the event log for operators, and replays of a window of
//! it to one listener (see `runtime::replay` for how a replay is fed and resumed).

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use runtime::event_log::{self, EventFilter, EventRecord};
use runtime::replay::{self, Fed, ReplayProgress, ReplayRequest};

use crate::commands::connect;
use crate::config::Settings;

/// `keel events …`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List stored events, newest first, a page at a time.
    List {
        /// Only this event name (e.g. `record.created`).
        #[arg(long)]
        name: Option<String>,
        /// Only this chain.
        #[arg(long)]
        correlation_id: Option<String>,
        /// Occurred at or after: RFC 3339, or an age such as `2h`.
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Occurred at or before: RFC 3339, or an age such as `10m`.
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// Events per page (1 to 500).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=500))]
        limit: i64,
        /// Start after this cursor (printed at the end of the previous page).
        #[arg(long, value_parser = parse_cursor)]
        cursor: Option<i64>,
        /// Print JSON (`{"items", "next_cursor"}`) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one stored event with its payload.
    Show {
        /// The event's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deliver a window of past events again to one listener, in log order, at a capped
    /// rate, through its inbox (events it processed are skipped unless `--force`). An
    /// interrupted replay carries on with `--resume ID`, or the same arguments again.
    Replay {
        /// The listener's name (e.g. `notifications.on_event_deliver_webhooks`).
        #[arg(long, required_unless_present = "resume")]
        listener: Option<String>,
        /// Events that occurred at or after: RFC 3339, or an age such as `2h`.
        #[arg(long, value_parser = parse_time, required_unless_present = "resume")]
        since: Option<DateTime<Utc>>,
        /// Resume this interrupted replay (its id was printed when it started).
        #[arg(long, conflicts_with_all = ["listener", "since", "until", "dry_run", "force"])]
        resume: Option<String>,
        /// Events that occurred at or before [default: up to the newest now].
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// Count what would be delivered; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Deliveries per second, at most.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        rate: u32,
        /// Run the listener even for events it has processed already.
        #[arg(long)]
        force: bool,
        /// Return once every delivery is enqueued, without waiting for them to run.
        #[arg(long)]
        no_wait: bool,
        /// Print the plan or summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// An RFC 3339 time, or an age (`90s`, `2h`, `7d`) counted back from now.
fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    let age = crate::config::parse_duration(raw).map_err(|_| {
        format!("expected an RFC 3339 time (2026-01-31T00:00:00Z) or an age (2h), got {raw:?}")
    })?;
    let age = chrono::Duration::from_std(age).map_err(|e| e.to_string())?;
    Ok(Utc::now() - age)
}

fn parse_cursor(raw: &str) -> Result<i64, String> {
    event_log::parse_cursor(raw).ok_or_else(|| format!("not a cursor: {raw:?}"))
}

/// Runs `keel events …`.
///
/// # Errors
/// An unknown event or listener, a replay with dead-lettered deliveries, or the database.
pub async fn run(settings: &Settings, command: EventsCommand) -> anyhow::Result<()> {
    let wired = connect(settings).await?;
    let rt = &wired.runtime;
    match command {
        EventsCommand::List {
            name,
            correlation_id,
            since,
            until,
            limit,
            cursor,
            json,
        } => {
            let filter = EventFilter {
                name,
                correlation_id,
                since,
                until,
                before: cursor,
                limit: Some(limit),
            };
            let page = event_log::list(rt.db(), &filter).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
                return Ok(());
            }
            if page.items.is_empty() {
                println!("no events");
            } else {
                println!(
                    "{:>9}  {:<36}  {:<24}  {:<20}  CORRELATION ID",
                    "POSITION", "ID", "EVENT", "OCCURRED AT"
                );
                for e in &page.items {
                    println!(
                        "{:>9}  {:<36}  {:<24}  {:<20}  {}",
                        e.position,
                        e.id,
                        format!("{}.v{}", e.name, e.version),
                        e.occurred_at.format("%Y-%m-%dT%H:%M:%SZ"),
                        e.correlation_id
                    );
                }
            }
            if let Some(next) = page.next_cursor {
                println!("more: --cursor {next}");
            }
        }
        EventsCommand::Show { id, json } => {
            let event = event_log::show(rt.db(), &id)
                .await
                .map_err(anyhow::Error::from)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&event)?);
            } else {
                print!("{}", render_event(&event));
            }
        }
        EventsCommand::Replay {
            listener,
            since,
            until,
            dry_run,
            rate,
            force,
            no_wait,
            json,
            resume,
        } => {
            if let Some(id) = resume {
                return follow(rt, &id, no_wait, json).await;
            }
            let (Some(listener), Some(since)) = (listener, since) else {
                anyhow::bail!("--listener and --since are required (or --resume ID)");
            };
            let request = ReplayRequest {
                listener,
                since,
                until,
                rate,
                force,
            };
            if dry_run {
                let plan = replay::plan(rt.db(), rt.registry(), &request).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&plan)?);
                } else {
                    let fate = if force { "run again" } else { "skipped" };
                    println!(
                        "dry run: would replay {} event(s) to {} (positions {}–{}); {} already processed, {fate}",
                        plan.events,
                        plan.listener,
                        plan.after_position + 1,
                        plan.to_position,
                        plan.already_processed
                    );
                }
                return Ok(());
            }
            replay_to_the_end(rt, &request, no_wait, json).await?;
        }
    }
    Ok(())
}

/// Starts (or resumes) the replay, feeds it to the end with progress on stderr, waits for
/// its deliveries unless `no_wait`, and prints the summary.
async fn replay_to_the_end(
    rt: &runtime::Runtime,
    request: &ReplayRequest,
    no_wait: bool,
    json: bool,
) -> anyhow::Result<()> {
    let started = replay::start(rt.db(), rt.time(), rt.registry(), request).await?;
    eprintln!(
        "{} {} {}: {} event(s) to {}, at most {}/s (interrupted? `keel events replay --resume {}`)",
        if started.resumed {
            "resuming"
        } else {
            "started"
        },
        started.kind,
        started.id,
        started.total,
        started.listener,
        started.rate,
        started.id
    );
    follow(rt, &started.id, no_wait, json).await
}

/// Feeds replay `id` from its checkpoint to the end, then waits for its deliveries unless
/// `no_wait`, and prints the summary.
async fn follow(rt: &runtime::Runtime, id: &str, no_wait: bool, json: bool) -> anyhow::Result<()> {
    let id = replay::progress(rt.db(), id).await?.id;
    let mut last_report = Instant::now();
    let began = Instant::now();
    let mut said_settling = false;
    loop {
        match rt
            .feed_replay(&id)
            .await
            .with_context(|| format!("feeding replay {id} (`--resume {id}` carries on)"))?
        {
            Fed::More(_) => {}
            Fed::Ahead => tokio::time::sleep(Duration::from_millis(200)).await,
            Fed::Settling => {
                if !said_settling && began.elapsed() >= Duration::from_secs(2) {
                    said_settling = true;
                    eprintln!(
                        "… waiting for transactions that were open when the replay began to end \
                         (an idle-in-transaction session holds it back)"
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Fed::Done => break,
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            report(&replay::progress(rt.db(), &id).await?);
        }
    }
    let mut progress = replay::progress(rt.db(), &id).await?;
    while !no_wait && !progress.finished {
        tokio::time::sleep(Duration::from_millis(200)).await;
        progress = replay::progress(rt.db(), &id).await?;
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            report(&progress);
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&progress)?);
    } else {
        println!("{}", summary(&progress, no_wait));
    }
    if progress.failed > 0 {
        anyhow::bail!(
            "{} replayed delivery(ies) were dead-lettered (see `keel dead list --queue events`)",
            progress.failed
        );
    }
    Ok(())
}

fn report(p: &ReplayProgress) {
    eprintln!(
        "… {}/{} enqueued, {} delivered, {} skipped, {} failed",
        p.enqueued, p.total, p.delivered, p.skipped, p.failed
    );
}

/// The last line of a replay.
pub fn summary(p: &ReplayProgress, no_wait: bool) -> String {
    let mut line = format!(
        "replay {} to {}: {} event(s) — {} delivered, {} skipped (already processed), {} failed",
        p.id, p.listener, p.enqueued, p.delivered, p.skipped, p.failed
    );
    if no_wait && !p.finished {
        line.push_str(&format!(
            "; {} still to run",
            p.enqueued - p.delivered - p.skipped - p.failed
        ));
    }
    line
}

fn render_event(e: &EventRecord) -> String {
    format!(
        "event {}\n  name:           {}.v{}\n  position:       {}\n  occurred at:    {}\n  correlation id: {}\n  causation id:   {}\n  payload:        {}\n",
        e.id,
        e.name,
        e.version,
        e.position,
        e.occurred_at.to_rfc3339(),
        e.correlation_id,
        e.causation_id.as_deref().unwrap_or("-"),
        e.payload
    )
}
