//! The `keel` command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Keel: an event-driven modular monolith — HTTP API, outbox and queue workers in one binary.
#[derive(Debug, Parser)]
#[command(name = "keel", version, about, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Options every command takes; each is also an environment variable.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file [default: ./keel.toml when it exists].
    #[arg(long, env = "KEEL_CONFIG", global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// `postgres://…` or `sqlite:…` [default: sqlite:./var/keel.db].
    #[arg(long, env = "KEEL_DATABASE_URL", global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Address the HTTP API listens on [default: 127.0.0.1:8080].
    #[arg(long, env = "KEEL_LISTEN", global = true, value_name = "ADDR")]
    pub listen: Option<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// HTTP API and all queue workers in one process (applies pending migrations first).
    Serve {
        /// API only: leave the queues to `keel work` processes.
        #[arg(long)]
        no_workers: bool,
        /// Only these modules, comma-separated (e.g. `records,billing`); overrides `[modules] enabled`.
        #[arg(long, value_delimiter = ',', value_name = "MODULES")]
        modules: Option<Vec<String>>,
    },
    /// Queue workers only.
    Work {
        /// Only these queues, comma-separated (e.g. `webhooks,emails`).
        #[arg(long, value_delimiter = ',', value_name = "QUEUES")]
        queues: Option<Vec<String>>,
        /// Only these modules' listeners and jobs, comma-separated; overrides `[modules] enabled`.
        #[arg(long, value_delimiter = ',', value_name = "MODULES")]
        modules: Option<Vec<String>>,
    },
    /// Apply pending migrations and exit.
    Migrate,
    /// Show a whole chain as a tree: request → events → listeners → jobs → deliveries.
    Trace {
        /// The correlation id (the `x-correlation-id` of the request that started it).
        correlation_id: String,
        /// Print JSON instead of a tree.
        #[arg(long)]
        json: bool,
    },
    /// Depth of each queue by state, and the age of its oldest ready job.
    Queues {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Scheduled jobs: expression, time zone, next run, last run and its outcome.
    Schedules {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Dead letters: inspect and replay.
    Dead {
        /// What to do with them.
        #[command(subcommand)]
        command: DeadCommand,
    },
    /// The event log: list and show stored events, replay a window of them to a listener.
    Events {
        /// What to do.
        #[command(subcommand)]
        command: crate::event_commands::EventsCommand,
    },
    /// Webhook endpoints: their state and delivery log.
    Webhooks {
        /// What to show.
        #[command(subcommand)]
        command: WebhooksCommand,
    },
}

/// `keel webhooks …`
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Every endpoint with its state (enabled, or disabled with why and since when).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One endpoint: its 24 h success rate and latest deliveries with every attempt.
    Show {
        /// The endpoint's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `keel dead …`
#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List dead letters, newest first.
    List {
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter with every attempt's error.
    Show {
        /// The job id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Dead letters grouped by queue, job type and error class, with counts.
    Groups {
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run dead jobs again with a fresh attempt budget and the same idempotency key.
    Replay {
        /// Job ids to replay.
        #[arg(required_unless_present_any = ["all", "group"], conflicts_with_all = ["all", "group"])]
        ids: Vec<String>,
        /// Replay every dead job (of `--queue`, matching `--error-contains`, when given).
        #[arg(long, conflicts_with = "group")]
        all: bool,
        /// With `--all`: only this queue.
        #[arg(long, requires = "all")]
        queue: Option<String>,
        /// With `--all`: only jobs whose last error contains this text.
        #[arg(long, requires = "all")]
        error_contains: Option<String>,
        /// Replay one group (see `keel dead groups`): one job first, the rest only if it
        /// succeeds, at `--rate` a second. Needs a running worker.
        #[arg(long)]
        group: Option<String>,
        /// With `--group`: jobs replayed per second after the first succeeded.
        #[arg(long, default_value_t = 20, requires = "group")]
        rate: usize,
    },
    /// Delete dead jobs for good.
    Purge {
        /// Job ids to delete.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead job (of `--queue` when given).
        #[arg(long)]
        all: bool,
        /// With `--all`: only this queue.
        #[arg(long, requires = "all")]
        queue: Option<String>,
        /// Confirm: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}
