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
    let record_directory = records::record_directory(db.clone());
    let modules = vec![
        records::module(records::RecordsDeps {
            db: db.clone(),
            outbox: rt.outbox(),
            jobs: rt.jobs(),
            clock: clock.clone(),
        }),
        billing::module(billing::BillingDeps {
            db: db.clone(),
            outbox: rt.outbox(),
            clock: clock.clone(),
            records: record_directory.clone(),
            overdue_after: settings.overdue_after,
        }),
        notifications::module(notifications::NotificationsDeps {
            db: db.clone(),
            jobs: rt.jobs(),
            outbox: rt.outbox(),
            clock: clock.clone(),
            records: record_directory,
            invoices: billing::invoice_directory(db.clone()),
            imports: records::import_directory(db.clone()),
            config: settings.notifications.clone(),
        })
        .context("building the notifications module")?,
        crate::operator_alerts::module(alerts),
    ];
    let refs: Vec<&Module> = modules.iter().collect();
    rt.install(&refs).context("registering modules")?;
    rt.configure_schedules(&refs, &settings.schedules)
        .context("configuring schedules")?;
    Ok(Wired {
        runtime: rt,
        modules,
    })
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
