//! What this deployment runs and where the rest lives: `[modules]` (which modules are wired
//! here), `[modules.remote]` (the public HTTP API of those that are not) and `[broker]`
//! (events on NATS JetStream). Splitting a module off is a change of these keys only.

use std::collections::BTreeMap;
use std::time::Duration;

use runtime::broker::{BrokerConfig, StreamLimits};
use serde::Deserialize;

use crate::config::{ByteSize, ConfigError, DurationValue};

/// Every module this binary can wire, in wiring order.
pub const MODULES: [&str; 3] = ["records", "billing", "notifications"];

/// `[modules]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModulesSection {
    /// The modules wired here; all by default. `--modules` overrides.
    pub enabled: Option<Vec<String>>,
    /// `[modules.remote]`: module → base URL of the deployment that serves it.
    #[serde(default)]
    pub remote: BTreeMap<String, String>,
}

/// `[broker]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    /// `nats://host:port`; unset: events stay in the database.
    pub url: Option<String>,
    /// The stream (default `KEEL_EVENTS`).
    pub stream: Option<String>,
    /// Subjects are `<subject_prefix>.<event name>` (default `keel.events`).
    pub subject_prefix: Option<String>,
    /// Event names published to the broker (default `["*"]`).
    pub publish: Option<Vec<String>>,
    /// Whether local listeners take events from the broker (default false).
    pub consume: Option<bool>,
    /// The stream's `max_age` (default `7d`).
    pub max_age: Option<DurationValue>,
    /// The stream's `max_bytes` (default unlimited).
    pub max_bytes: Option<ByteSize>,
    /// The stream's duplicate window for `Nats-Msg-Id` (default `2h`).
    pub duplicate_window: Option<DurationValue>,
    /// Stream replicas in a cluster (default 1).
    pub replicas: Option<usize>,
    /// A relay whose oldest waiting event is older raises `broker_stuck` (default `5m`).
    pub stuck_after: Option<DurationValue>,
}

/// Which modules run here and where the others are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modules {
    /// Wired in this process, in wiring order.
    pub enabled: Vec<String>,
    /// Base URLs of the modules served elsewhere.
    pub remote: BTreeMap<String, String>,
}

impl Default for Modules {
    fn default() -> Self {
        Self {
            enabled: MODULES.iter().map(|m| (*m).to_owned()).collect(),
            remote: BTreeMap::new(),
        }
    }
}

impl Modules {
    /// Whether `module` is wired here.
    pub fn has(&self, module: &str) -> bool {
        self.enabled.iter().any(|m| m == module)
    }

    /// Whether `name` (`<module>.<…>`: a schedule, a listener, a job type) belongs to a known
    /// module that runs elsewhere — its settings in a `keel.toml` shared by several
    /// deployments are that deployment's business, not a mistake here.
    pub fn elsewhere(&self, name: &str) -> bool {
        name.split_once('.')
            .is_some_and(|(module, _)| MODULES.contains(&module) && !self.has(module))
    }

    /// Leaves out of `schedules` and `backfills` what belongs to modules that run elsewhere
    /// (see [`Modules::elsewhere`]), saying so in the log.
    pub fn keep_local<S, B>(
        &self,
        schedules: &mut BTreeMap<String, S>,
        job_type: impl Fn(&S) -> Option<&str>,
        backfills: &mut BTreeMap<String, B>,
    ) {
        schedules.retain(|name, schedule| {
            let here = !self.elsewhere(name) && !job_type(schedule).is_some_and(|t| self.elsewhere(t));
            if !here {
                tracing::info!(schedule = %name, "schedule left to the deployment that runs its module");
            }
            here
        });
        backfills.retain(|listener, _| {
            let here = !self.elsewhere(listener);
            if !here {
                tracing::info!(%listener, "backfill left to the deployment that runs its module");
            }
            here
        });
    }

    /// `[modules]` with `--modules` (when given) taking the place of `enabled`.
    ///
    /// # Errors
    /// An unknown module name, an empty list, or a remote URL that is not `http(s)://`.
    pub fn resolve(section: ModulesSection, cli: Option<&[String]>) -> Result<Self, ConfigError> {
        let (key, names) = match (cli, section.enabled) {
            (Some(names), _) => ("--modules", names.to_vec()),
            (None, Some(names)) => ("modules.enabled", names),
            (None, None) => return Self::default().with_remote(section.remote),
        };
        if names.is_empty() {
            return Err(invalid(key, "must name at least one module"));
        }
        if let Some(unknown) = names.iter().find(|n| !MODULES.contains(&n.as_str())) {
            return Err(invalid(
                key,
                &format!(
                    "names unknown module `{unknown}` (known: {})",
                    MODULES.join(", ")
                ),
            ));
        }
        let enabled = MODULES
            .iter()
            .filter(|m| names.iter().any(|n| n == *m))
            .map(|m| (*m).to_owned())
            .collect();
        Self {
            enabled,
            remote: BTreeMap::new(),
        }
        .with_remote(section.remote)
    }

    fn with_remote(mut self, remote: BTreeMap<String, String>) -> Result<Self, ConfigError> {
        for (module, url) in &remote {
            let key = format!("modules.remote.{module}");
            if !MODULES.contains(&module.as_str()) {
                return Err(invalid(
                    &key,
                    &format!("names unknown module (known: {})", MODULES.join(", ")),
                ));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    &key,
                    &format!("expected an http(s):// URL, got {url:?}"),
                ));
            }
        }
        self.remote = remote;
        Ok(self)
    }
}

/// `[broker]` as the runtime takes it; `None` when no `url` is set.
///
/// # Errors
/// A value out of range, naming its key.
pub fn resolve_broker(section: BrokerSection) -> Result<Option<BrokerConfig>, ConfigError> {
    let Some(url) = section.url else {
        return Ok(None);
    };
    if !url.split(',').all(|u| {
        let u = u.trim();
        u.starts_with("nats://") || u.starts_with("tls://")
    }) {
        return Err(invalid(
            "broker.url",
            &format!("expected nats://host:port, got {url:?}"),
        ));
    }
    let stream = section.stream.unwrap_or_else(|| "KEEL_EVENTS".to_owned());
    if stream.is_empty()
        || stream
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace())
    {
        return Err(invalid(
            "broker.stream",
            "must be non-empty, without `.`, `*`, `>` or spaces",
        ));
    }
    let subject_prefix = section
        .subject_prefix
        .unwrap_or_else(|| "keel.events".to_owned());
    if subject_prefix.is_empty()
        || subject_prefix
            .split('.')
            .any(|t| t.is_empty() || t.contains(['*', '>', ' ']))
    {
        return Err(invalid(
            "broker.subject_prefix",
            "expected dot-separated tokens without wildcards, like \"keel.events\"",
        ));
    }
    let positive = |d: Option<DurationValue>, key: &str, default: Duration| match d {
        Some(DurationValue(d)) if d.is_zero() => Err(invalid(key, "must be longer than 0")),
        Some(DurationValue(d)) => Ok(d),
        None => Ok(default),
    };
    let defaults = StreamLimits::default();
    let replicas = section.replicas.unwrap_or(1);
    if !(1..=5).contains(&replicas) {
        return Err(invalid("broker.replicas", "expected 1 to 5"));
    }
    Ok(Some(BrokerConfig {
        url,
        stream,
        subject_prefix,
        publish: section.publish.unwrap_or_else(|| vec!["*".to_owned()]),
        consume: section.consume.unwrap_or(false),
        limits: StreamLimits {
            max_age: positive(section.max_age, "broker.max_age", defaults.max_age)?,
            max_bytes: section
                .max_bytes
                .map_or(-1, |b| i64::try_from(b.0).unwrap_or(i64::MAX)),
            duplicate_window: positive(
                section.duplicate_window,
                "broker.duplicate_window",
                defaults.duplicate_window,
            )?,
            replicas,
        },
        stuck_after: positive(
            section.stuck_after,
            "broker.stuck_after",
            Duration::from_secs(300),
        )?,
    }))
}

fn invalid(key: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_list_wins_and_keeps_wiring_order() {
        let m = Modules::resolve(
            ModulesSection::default(),
            Some(&["notifications".to_owned(), "records".to_owned()]),
        )
        .unwrap_or_default();
        assert_eq!(m.enabled, vec!["records", "notifications"]);
    }

    #[test]
    fn unknown_modules_are_refused_by_name() {
        let err = Modules::resolve(ModulesSection::default(), Some(&["payments".to_owned()]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("payments") && err.contains("--modules"),
            "{err}"
        );
    }

    #[test]
    fn no_url_means_no_broker() {
        assert!(matches!(resolve_broker(BrokerSection::default()), Ok(None)));
    }
}
