//! The event contracts as data: every event version (schema, example, upcaster), which module
//! publishes what, which listener consumes what and on which queue.
//!
//! `app` is the one crate that sees both the contract (`events::catalog::registry()`) and
//! the wired modules, so it produces this description; the `keel-contracts` binary prints it
//! and `cargo xtask check-contracts` / `cargo xtask docs` (which may not link workspace
//! crates) compare and render it. The modules are the production wiring, built against a
//! throwaway SQLite file that is never migrated.

use anyhow::Context;
use events::{Catalog, EventKey, Module};
use serde_json::{Value, json};

use crate::config::{Overrides, Settings};
use crate::wiring;

/// Bumped when the JSON shape below changes; xtask refuses shapes it does not know.
pub const FORMAT: u32 = 1;

fn key_json(key: &EventKey) -> Value {
    json!({ "name": key.name, "version": key.version })
}

/// The catalog and the modules' side of the contract, as `keel-contracts` prints it.
pub fn describe(catalog: &Catalog, modules: &[Module]) -> Value {
    let events: Vec<Value> = catalog
        .entries()
        .iter()
        .map(|e| {
            json!({
                "name": e.key.name,
                "version": e.key.version,
                "latest": catalog.latest(e.key.name) == Some(e.key.version),
                "upcasts_to": e.upcasts_to(),
                "state_transfer": e.state_transfer,
                "schema": e.schema(),
                "example": e.example(),
                "stored_example": serde_json::to_value(events::schema::example_envelope(e))
                    .unwrap_or(Value::Null),
            })
        })
        .collect();
    let modules: Vec<Value> = modules
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "publishes": m.publishes.iter().map(key_json).collect::<Vec<_>>(),
                "listeners": m.listeners.iter().map(|l| json!({
                    "name": l.name(),
                    "queue": runtime::registry::EVENTS_QUEUE,
                    "inline": l.dispatch() == events::Dispatch::Inline,
                    "consumes": l.consumes().iter().map(key_json).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "jobs": m.jobs.iter().map(|j| json!({
                    "type": j.job_type(),
                    "queue": j.queue(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "format": FORMAT, "events": events, "modules": modules })
}

/// A throwaway SQLite file for wiring the modules without touching a real database.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(purpose: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "keel-{purpose}-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    fn settings(&self) -> anyhow::Result<Settings> {
        let overrides = Overrides {
            database_url: Some(format!("sqlite:{}", self.0.join("keel.db").display())),
            ..Overrides::default()
        };
        Ok(Settings::from_toml("", &overrides)?)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Wires the production modules against a scratch database and describes the contracts.
///
/// # Errors
/// Fails when the modules cannot be wired.
pub async fn dump() -> anyhow::Result<Value> {
    let scratch = Scratch::new("contracts")?;
    let wired = wiring::wire(&scratch.settings()?, wiring::system_clock()).await?;
    let described = describe(events::catalog::registry(), &wired.modules);
    wired.runtime.db().pool().close().await;
    Ok(described)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Consumer contracts: every listener handles the publisher's examples — of the version
    //! it consumes and of every older version upcast to it.

    use events::jobs::FailureKind;

    use super::*;

    #[tokio::test]
    async fn every_listener_handles_the_publishers_examples_of_what_it_consumes() {
        let scratch = Scratch::new("consumer-contracts").unwrap();
        let wired = wiring::wire(&scratch.settings().unwrap(), wiring::system_clock())
            .await
            .unwrap();
        wired.migrate().await.unwrap();
        let catalog = events::catalog::registry();
        let mut handled = 0;
        for module in &wired.modules {
            for listener in &module.listeners {
                for key in listener.consumes() {
                    let examples = catalog.examples_for(key).unwrap();
                    assert!(
                        !examples.is_empty(),
                        "{} consumes {}.v{}, which has no example in the catalog",
                        listener.name(),
                        key.name,
                        key.version
                    );
                    for stored in examples {
                        let envelope = catalog.for_listener(&stored, &listener.consumes()).unwrap();
                        let mut tx = wired.runtime.db().begin().await.unwrap();
                        let outcome = listener.handle(&mut tx, &envelope).await;
                        tx.rollback().await.unwrap();
                        if let Err(e) = outcome {
                            assert_ne!(
                                e.kind,
                                FailureKind::Poison,
                                "{} refuses the publisher's example of {}.v{}: {e}",
                                listener.name(),
                                stored.name,
                                stored.version
                            );
                        }
                        handled += 1;
                    }
                }
            }
        }
        assert!(handled > 0, "no listener consumed anything");
    }

    #[tokio::test]
    async fn the_dump_lists_every_event_module_and_listener() {
        let dump = dump().await.unwrap();
        assert_eq!(dump["format"], FORMAT);
        let events = dump["events"].as_array().unwrap();
        assert_eq!(events.len(), events::catalog::registry().entries().len());
        assert!(events.iter().all(|e| e["schema"]["type"] == "object"));
        let modules: Vec<&str> = dump["modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(modules, ["records", "billing", "notifications", "alerts"]);
    }
}
