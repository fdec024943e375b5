//! The `keel` binary's library: configuration, wiring and the HTTP edge.
//!
//! `app` is the only place that knows every module. It builds the runtime, hands each module
//! the ports it needs (the outbox, the job queue, the other modules' query ports), merges
//! their routes, registers their listeners and jobs, and runs the chosen command.

pub mod alerts;
pub mod application;
pub mod cli;
pub mod commands;
pub mod config;
pub mod contracts;
pub mod deployment;
pub mod event_commands;
pub mod events_config;
pub mod http;
pub mod operator_alerts;
pub mod remote;
pub mod telemetry;
pub mod webhook_commands;
pub mod wiring;

use anyhow::Context;

use crate::application::{Application, WorkerMode};
use crate::cli::{Cli, Command};
use crate::config::{Overrides, Settings};

/// Runs one CLI invocation to completion.
///
/// # Errors
/// Any failure, as one line for stderr.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let modules = match &cli.command {
        Command::Serve { modules, .. } | Command::Work { modules, .. } => modules.clone(),
        _ => None,
    };
    if let Some(unknown) = modules
        .iter()
        .flatten()
        .find(|m| !deployment::MODULES.contains(&m.as_str()))
    {
        <Cli as clap::CommandFactory>::command()
            .error(
                clap::error::ErrorKind::InvalidValue,
                format!(
                    "unknown module `{unknown}` for --modules (known: {})",
                    deployment::MODULES.join(", ")
                ),
            )
            .exit();
    }
    let overrides = Overrides {
        config_path: cli.global.config.clone(),
        database_url: cli.global.database_url.clone(),
        listen: cli.global.listen.clone(),
        admin_token: std::env::var("KEEL_ADMIN_TOKEN").ok(),
        otlp_endpoint: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok(),
        modules,
    };
    let settings = Settings::load(&overrides)?;
    let telemetry = telemetry::init(
        telemetry::LogFormat::from_env(),
        std::io::stderr,
        &settings.telemetry,
    )?;
    let result = dispatch(cli, settings).await;
    telemetry.shutdown();
    result
}

async fn dispatch(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { no_workers, .. } => {
            let mode = if no_workers {
                WorkerMode::None
            } else {
                WorkerMode::All
            };
            let app = Application::build(settings, mode, true).await?;
            tracing::info!(address = %app.address(), "keel is listening");
            app.run_until(application::shutdown_signal()).await
        }
        Command::Work { queues, .. } => {
            if let Some(unknown) = queues
                .iter()
                .flatten()
                .find(|q| !settings.runtime.queues.contains_key(*q))
            {
                let known: Vec<&str> = settings.runtime.queues.keys().map(String::as_str).collect();
                <Cli as clap::CommandFactory>::command()
                    .error(
                        clap::error::ErrorKind::InvalidValue,
                        format!(
                            "unknown queue `{unknown}` for --queues (known: {})",
                            known.join(", ")
                        ),
                    )
                    .exit();
            }
            let mode = queues.map_or(WorkerMode::All, WorkerMode::Queues);
            let app = Application::build(settings, mode, false).await?;
            app.run_until(application::shutdown_signal()).await
        }
        Command::Migrate => {
            let wired = wiring::wire(&settings, wiring::system_clock()).await?;
            let n = wired.migrate().await.context("applying migrations")?;
            println!("migrations up to date ({n} known)");
            Ok(())
        }
        Command::Trace {
            correlation_id,
            json,
        } => commands::trace(&settings, &correlation_id, json).await,
        Command::Queues { json } => commands::queues(&settings, json).await,
        Command::Schedules { json } => commands::schedules(&settings, json).await,
        Command::Dead { command } => commands::dead(&settings, command).await,
        Command::Events { command } => event_commands::run(&settings, command).await,
        Command::Webhooks { command } => webhook_commands::webhooks(&settings, command).await,
    }
}
