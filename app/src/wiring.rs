//! Wiring: connect the database, build the runtime, construct every module with the ports
//! it needs, and register them. The only place where module meets module — through ports.

use std::sync::Arc;

use anyhow::Context;
use events::{Clock, Module, SystemClock};
use runtime::Runtime;

use crate::alerts::WebhookAlerts;
use crate::config::Settings;

/// The wall clock, for production.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// The runtime and every module, wired.
#[derive(Debug)]
pub struct Wired {
    /// The runtime.
    pub runtime: Runtime,
    /// The modules, in wiring order.
    pub modules: Vec<Module>,
}

impl Wired {
    /// Applies the runtime's and every module's pending migrations.
    ///
    /// # Errors
    /// As [`Runtime::migrate`].
    pub async fn migrate(&self) -> Result<usize, runtime::RuntimeError> {
        let refs: Vec<&Module> = self.modules.iter().collect();
        self.runtime.migrate(&refs).await
    }

    /// Migrations not yet applied to this database.
    ///
    /// # Errors
    /// Fails when the database cannot answer.
    pub async fn pending_migrations(&self) -> Result<Vec<i64>, runtime::RuntimeError> {
        let sets: Vec<&[events::Migration]> = self
            .modules
            .iter()
            .map(|m| m.migrations.as_slice())
            .collect();
        runtime::migrate::pending(self.runtime.db(), &sets).await
    }
}

/// Connects and wires everything.
///
/// # Errors
/// Fails when the database cannot be reached or a module cannot be built.
pub async fn wire(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Wired> {
    let db = runtime::connect(&settings.database_url, settings.max_connections)
        .await
        .with_context(|| format!("connecting to {}", redact(&settings.database_url)))?;
    let alerts = Arc::new(WebhookAlerts::new(&settings.alerts, clock.clone())?);
    let rt = Runtime::new(
        db.clone(),
        settings.database_url.clone(),
        clock.clone(),
        settings.runtime.clone(),
        alerts.clone(),
    );
    let modules = build_modules(settings, &db, &rt, &clock, alerts)?;
    let refs: Vec<&Module> = modules.iter().collect();
    rt.install(&refs).context("registering modules")?;
    rt.configure_schedules(&refs, &settings.schedules)
        .context("configuring schedules")?;
    Ok(Wired {
        runtime: rt,
        modules,
    })
}

/// Builds the modules enabled here (`[modules] enabled`, `--modules`); a query port whose
/// owner runs elsewhere is its HTTP adapter ([`crate::remote`]) at `[modules.remote]`.
fn build_modules(
    settings: &Settings,
    db: &events::Db,
    rt: &Runtime,
    clock: &Arc<dyn Clock>,
    alerts: Arc<WebhookAlerts>,
) -> anyhow::Result<Vec<Module>> {
    let here = &settings.modules;
    let remote = |owner: &'static str, asker: &str| -> anyhow::Result<Arc<crate::remote::Remote>> {
        let base = here.remote.get(owner).with_context(|| {
            format!(
                "module `{asker}` needs `{owner}`, which is not enabled here: set [modules.remote] {owner} = \"http://…\" or enable it"
            )
        })?;
        crate::remote::port(owner, base)
    };
    let records_port = |asker: &str| -> anyhow::Result<Arc<dyn events::queries::RecordDirectory>> {
        if here.has("records") {
            Ok(records::record_directory(db.clone()))
        } else {
            Ok(remote("records", asker)?)
        }
    };
    let mut modules = Vec::new();
    if here.has("records") {
        modules.push(records::module(records::RecordsDeps {
            db: db.clone(),
            outbox: rt.outbox(),
            jobs: rt.jobs(),
            clock: clock.clone(),
        }));
    }
    if here.has("billing") {
        modules.push(billing::module(billing::BillingDeps {
            db: db.clone(),
            outbox: rt.outbox(),
            clock: clock.clone(),
            records: records_port("billing")?,
            overdue_after: settings.overdue_after,
        }));
    }
    if here.has("notifications") {
        let invoices: Arc<dyn events::queries::InvoiceDirectory> = if here.has("billing") {
            billing::invoice_directory(db.clone())
        } else {
            remote("billing", "notifications")?
        };
        let imports: Arc<dyn events::queries::ImportDirectory> = if here.has("records") {
            records::import_directory(db.clone())
        } else {
            remote("records", "notifications")?
        };
        modules.push(
            notifications::module(notifications::NotificationsDeps {
                db: db.clone(),
                jobs: rt.jobs(),
                outbox: rt.outbox(),
                clock: clock.clone(),
                records: records_port("notifications")?,
                invoices,
                imports,
                config: settings.notifications.clone(),
            })
            .context("building the notifications module")?,
        );
        // The operator alert for a disabled endpoint follows the module that publishes it.
        modules.push(crate::operator_alerts::module(alerts));
    }
    Ok(modules)
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite:./var/keel.db"), "sqlite:./var/keel.db");
    }
}
