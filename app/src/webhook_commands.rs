//! `keel webhooks list|show`: webhook endpoints and their delivery log from the command line,
//! read from the database as the dashboard's webhook pages are (never a secret).

use anyhow::Context;
use notifications::report;

use crate::cli::WebhooksCommand;
use crate::commands::connect;
use crate::config::Settings;

/// Runs `keel webhooks …`.
///
/// # Errors
/// Fails on an unknown or malformed id, or when the database fails.
pub async fn webhooks(settings: &Settings, command: WebhooksCommand) -> anyhow::Result<()> {
    let wired = connect(settings).await?;
    let rt = &wired.runtime;
    match command {
        WebhooksCommand::List { json } => {
            let endpoints = report::endpoints(rt.db()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&endpoints)?);
                return Ok(());
            }
            println!("{:<36}  {:<28}  URL", "ID", "STATE");
            for e in endpoints {
                let state = match &e.disabled {
                    Some((at, reason)) => format!("disabled ({reason}, {})", at.format("%F %T")),
                    None => "enabled".to_owned(),
                };
                println!("{:<36}  {state:<28}  {}", e.id, e.url);
            }
            Ok(())
        }
        WebhooksCommand::Show { id, json } => {
            let uuid = uuid::Uuid::parse_str(&id)
                .with_context(|| format!("{id:?} is not a webhook endpoint id (a UUID)"))?;
            let shown = report::endpoint(rt.db(), uuid, rt.clock().now())
                .await?
                .with_context(|| format!("no webhook endpoint {id}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&shown)?);
                return Ok(());
            }
            let e = &shown.endpoint;
            println!("{}  {}", e.id, e.url);
            match &e.disabled {
                Some((at, reason)) => println!("disabled: {reason}, since {}", at.format("%F %T")),
                None => println!("enabled"),
            }
            println!(
                "last 24 h: {} of {} attempts succeeded",
                shown.succeeded_24h, shown.attempts_24h
            );
            for d in &shown.deliveries {
                println!(
                    "{}  {:<16} {:<10} {}",
                    d.message_id,
                    d.event,
                    d.status,
                    d.occurred_at.format("%F %T")
                );
                for a in &d.attempts {
                    let code = a
                        .status_code
                        .map_or_else(|| "-".to_owned(), |c| c.to_string());
                    println!(
                        "    {}  {code:>3}  {:>6} ms  {}",
                        a.attempted_at.format("%F %T"),
                        a.duration_ms,
                        a.error.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
    }
}
