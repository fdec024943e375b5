//! `keel.toml`, flags and environment, resolved into one typed configuration.
//!
//! Every key is optional; unknown keys and bad values are refused at start with the key's
//! name and what was expected. Precedence: flag > environment > file > default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime::RuntimeConfig;
use runtime::policy::{DEFAULT_QUEUES, PolicyOverride, QueuePolicy};
use serde::{Deserialize, Deserializer};

mod sections;

pub use sections::{BillingSection, ScheduleSection, TelemetrySection, TelemetrySettings};

/// The default SQLite database, created with its folder on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite:./var/keel.db";
/// Where the API listens by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid, or names an unknown key or a bad value.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, naming the key, the line and what was expected.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid config: `{key}` {message}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What was expected.
        message: String,
    },
}

/// The whole `keel.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[database]`
    #[serde(default)]
    pub database: DatabaseSection,
    /// `[http]`
    #[serde(default)]
    pub http: HttpSection,
    /// `[queues.<name>]`
    #[serde(default)]
    pub queues: BTreeMap<String, QueueSection>,
    /// `[job_types."<type>"]`: per job type overrides of its queue's policy.
    #[serde(default)]
    pub job_types: BTreeMap<String, JobTypeSection>,
    /// `[workers]`
    #[serde(default)]
    pub workers: WorkersSection,
    /// `[webhooks]`
    #[serde(default)]
    pub webhooks: WebhooksSection,
    /// `[smtp]`
    #[serde(default)]
    pub smtp: SmtpSection,
    /// `[alerts]`
    #[serde(default)]
    pub alerts: AlertsSection,
    /// `[schedules.<name>]`
    #[serde(default)]
    pub schedules: BTreeMap<String, ScheduleSection>,
    /// `[billing]`
    #[serde(default)]
    pub billing: BillingSection,
    /// `[telemetry]`
    #[serde(default)]
    pub telemetry: TelemetrySection,
    /// `[events]`: the event log's retention and backfill rate.
    #[serde(default)]
    pub events: crate::events_config::EventsSection,
    /// `[listeners."<name>"]`: a listener's start point in the past.
    #[serde(default)]
    pub listeners: BTreeMap<String, crate::events_config::ListenerSection>,
    /// `[broker]`: events on NATS JetStream.
    #[serde(default)]
    pub broker: crate::deployment::BrokerSection,
    /// `[modules]`: which modules run here, and `[modules.remote]`.
    #[serde(default)]
    pub modules: crate::deployment::ModulesSection,
}

/// `[database]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// `postgres://…` or `sqlite:…`.
    pub url: Option<String>,
    /// Pool size.
    pub max_connections: Option<u32>,
}

/// `[http]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Listen address.
    pub listen: Option<String>,
    /// Bearer token of the admin routes; unset disables them.
    pub admin_token: Option<String>,
    /// Largest JSON body accepted (default 1 MiB).
    pub max_body: Option<ByteSize>,
}

/// `[queues.<name>]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    /// Jobs running at once per process.
    pub concurrency: Option<usize>,
    /// 1 try + retries.
    pub max_attempts: Option<u32>,
    /// Delays before each retry; the last repeats.
    pub backoff: Option<Vec<DurationValue>>,
    /// ± fraction.
    pub jitter: Option<f64>,
    /// Attempt timeout.
    pub timeout: Option<DurationValue>,
}

/// `[job_types."<type>"]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobTypeSection {
    /// Replaces the queue's attempt budget.
    pub max_attempts: Option<u32>,
    /// Replaces the queue's schedule.
    pub backoff: Option<Vec<DurationValue>>,
    /// Replaces the queue's timeout.
    pub timeout: Option<DurationValue>,
}

/// `[workers]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersSection {
    /// Heartbeat period.
    pub heartbeat_interval: Option<DurationValue>,
    /// Silence after which a process's jobs are rescued.
    pub dead_after: Option<DurationValue>,
    /// Fallback poll period.
    pub poll_interval: Option<DurationValue>,
    /// How long in-flight jobs may finish after SIGTERM.
    pub shutdown_grace: Option<DurationValue>,
    /// How long completed jobs are kept (and events, unless `[events] retention` is set).
    pub retention: Option<DurationValue>,
    /// How long dead letters are kept.
    pub dead_letter_retention: Option<DurationValue>,
    /// Crashes of its worker after which a job is dead-lettered as poison.
    pub poison_after: Option<u32>,
}

/// `[webhooks]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSection {
    /// Allow loopback/private/link-local targets.
    pub allow_private_targets: Option<bool>,
    /// Per-request timeout.
    pub request_timeout: Option<DurationValue>,
    /// An endpoint whose deliveries all failed for this long is disabled (default 5 days).
    pub disable_after: Option<DurationValue>,
    /// How long a rotated-out secret keeps signing (default 24 h).
    pub rotation_grace: Option<DurationValue>,
    /// The largest outbound body in bytes (default 262144).
    pub max_payload_bytes: Option<usize>,
    /// Re-sends per second by `recover`, per endpoint (default 10).
    pub recover_rate: Option<u32>,
    /// How long the delivery log keeps deliveries and attempts (default 30 days).
    pub delivery_log_retention: Option<DurationValue>,
}

/// `[smtp]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    /// `smtp://host:port`; unset writes `.eml` files.
    pub url: Option<String>,
    /// The From header.
    pub from: Option<String>,
    /// Where `.eml` files go without SMTP.
    pub mail_dir: Option<PathBuf>,
}

/// `[alerts]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// POSTed a JSON alert when a job is dead-lettered.
    pub webhook_url: Option<String>,
    /// Signing secret (`whsec_…`) of alert requests.
    pub secret: Option<String>,
    /// A queue whose oldest ready job is older than this raises an alert.
    pub queue_age_threshold: Option<DurationValue>,
    /// At most one alert per condition per this interval.
    pub min_interval: Option<DurationValue>,
}

/// A duration written as `"250ms"`, `"10s"`, `"10m"`, `"2h"` or `"1d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        parse_duration(&raw)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `"250ms"`, `"10s"`, `"10m"`, `"2h"`, `"1d"`.
///
/// # Errors
/// A message saying what was expected.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let expected = || {
        format!(
            "expected a duration like \"500ms\", \"10s\", \"10m\", \"2h\" or \"1d\", got {raw:?}"
        )
    };
    let n: u64 = num.parse().map_err(|_| expected())?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        "d" => n.saturating_mul(86_400_000),
        _ => return Err(expected()),
    };
    Ok(Duration::from_millis(ms))
}

/// A size written as `"1MiB"`, `"512KiB"` or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(usize),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Self(n)),
            Raw::Text(t) => {
                let t = t.trim();
                let (num, mul) = if let Some(n) = t.strip_suffix("MiB") {
                    (n, 1 << 20)
                } else if let Some(n) = t.strip_suffix("KiB") {
                    (n, 1 << 10)
                } else {
                    (t, 1)
                };
                num.trim()
                    .parse::<usize>()
                    .map(|n| Self(n.saturating_mul(mul)))
                    .map_err(|_| {
                        serde::de::Error::custom(format!(
                            "expected a size like \"1MiB\", \"512KiB\" or a byte count, got {t:?}"
                        ))
                    })
            }
        }
    }
}

/// Values given on the command line or in the environment, which win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config` / `KEEL_CONFIG`.
    pub config_path: Option<PathBuf>,
    /// `--database-url` / `KEEL_DATABASE_URL`.
    pub database_url: Option<String>,
    /// `--listen` / `KEEL_LISTEN`.
    pub listen: Option<String>,
    /// `KEEL_ADMIN_TOKEN`.
    pub admin_token: Option<String>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
    /// `--modules`, which wins over `[modules] enabled`.
    pub modules: Option<Vec<String>>,
}

/// Connections kept for HTTP requests on top of the jobs' (see [`Settings::fit_pool`]).
pub const HTTP_CONNECTIONS: usize = 4;

/// The resolved configuration the app runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Database URL.
    pub database_url: String,
    /// Pool size (handlers and HTTP; the runtime's own connections come on top).
    pub max_connections: u32,
    /// Whether `[database] max_connections` was set, rather than derived.
    pub max_connections_set: bool,
    /// Listen address.
    pub listen: SocketAddr,
    /// Admin bearer token; `None` disables admin routes.
    pub admin_token: Option<String>,
    /// Largest JSON body accepted.
    pub max_body: usize,
    /// Queues and timing.
    pub runtime: RuntimeConfig,
    /// Outbound webhooks and email.
    pub notifications: notifications::NotificationsConfig,
    /// Which modules run here and where the others are served.
    pub modules: crate::deployment::Modules,
    /// Alerting.
    pub alerts: AlertSettings,
    /// `[schedules.<name>]`: overrides and additions to the modules' schedules.
    pub schedules: BTreeMap<String, runtime::schedule::ScheduleOverride>,
    /// `[billing] overdue_after`.
    pub overdue_after: Duration,
    /// Span export over OTLP.
    pub telemetry: TelemetrySettings,
}

/// Where and how alerts go.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// POST target; `None` logs only.
    pub webhook_url: Option<String>,
    /// Signing secret.
    pub secret: Option<String>,
    /// Oldest-ready-job age that raises `queue_stale`.
    pub queue_age_threshold: Duration,
    /// At most one alert per condition per interval.
    pub min_interval: Duration,
}

impl Settings {
    /// Sizes the pool for what this process runs: one connection for each job that may run
    /// at once on the queues it works, plus [`HTTP_CONNECTIONS`] when it serves the API —
    /// so a handler never waits for a connection that busy neighbours hold. Derived when
    /// `[database] max_connections` is unset. A set value is honoured (it may be a limit the
    /// database imposes); when it is smaller than that, the answer is the warning to log:
    /// jobs will then wait for connections — deferred without spending an attempt, never
    /// failed — and it says what to set.
    pub fn fit_pool(&mut self, queues: &[String], serve_http: bool) -> Option<String> {
        let jobs: usize = queues
            .iter()
            .filter_map(|q| self.runtime.queues.get(q))
            .map(|p| p.concurrency)
            .sum();
        let http = if serve_http { HTTP_CONNECTIONS } else { 0 };
        let needed = u32::try_from(jobs + http).unwrap_or(u32::MAX).max(2);
        if !self.max_connections_set {
            self.max_connections = needed;
            return None;
        }
        (self.max_connections < needed).then(|| {
            let per_queue = queues
                .iter()
                .filter_map(|q| {
                    self.runtime
                        .queues
                        .get(q)
                        .map(|p| format!("{q} {}", p.concurrency))
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "database.max_connections = {} is below the {needed} that {jobs} jobs at once ({per_queue}){} may use: jobs will wait for connections (deferred, no attempt spent); set database.max_connections = {needed}, or lower [queues.<name>] concurrency",
                self.max_connections,
                if serve_http {
                    format!(" plus {HTTP_CONNECTIONS} for HTTP requests")
                } else {
                    String::new()
                },
            )
        })
    }

    /// Loads `keel.toml` (the given path, else `./keel.toml` when it exists) and applies
    /// the overrides.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key and what was expected.
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        let file = match &overrides.config_path {
            Some(path) => read_file(path)?,
            None if Path::new("keel.toml").exists() => read_file(Path::new("keel.toml"))?,
            None => FileConfig::default(),
        };
        Self::resolve(file, overrides)
    }

    /// Parses a configuration from TOML text (for tests and tools).
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn from_toml(text: &str, overrides: &Overrides) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: e.to_string(),
        })?;
        Self::resolve(file, overrides)
    }

    fn resolve(file: FileConfig, o: &Overrides) -> Result<Self, ConfigError> {
        let database_url = o
            .database_url
            .clone()
            .or(file.database.url)
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        runtime::storage::backend_of(&database_url).map_err(|e| ConfigError::Invalid {
            key: "database.url".into(),
            message: e.to_string(),
        })?;
        let listen_raw = o
            .listen
            .clone()
            .or(file.http.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_raw.parse().map_err(|_| ConfigError::Invalid {
            key: "http.listen".into(),
            message: format!("expected an address like \"127.0.0.1:8080\", got {listen_raw:?}"),
        })?;
        let admin_token = o
            .admin_token
            .clone()
            .or(file.http.admin_token)
            .filter(|t| !t.is_empty());
        if let Some(t) = &admin_token
            && t.len() < 8
        {
            return Err(ConfigError::Invalid {
                key: "http.admin_token".into(),
                message: "must be at least 8 characters".into(),
            });
        }

        let mut runtime = RuntimeConfig::default();
        for name in file.queues.keys() {
            if !DEFAULT_QUEUES.contains(&name.as_str()) {
                runtime.queues.insert(name.clone(), QueuePolicy::default());
            }
        }
        for (name, q) in &file.queues {
            let key = |k: &str| format!("queues.{name}.{k}");
            let policy = runtime.queues.entry(name.clone()).or_default();
            if let Some(c) = q.concurrency {
                positive(c, &key("concurrency"))?;
                policy.concurrency = c;
            }
            if let Some(n) = q.max_attempts {
                positive(n as usize, &key("max_attempts"))?;
                policy.max_attempts = n;
            }
            if let Some(b) = &q.backoff {
                policy.backoff = schedule(b, &key("backoff"))?;
            }
            if let Some(j) = q.jitter {
                if !(0.0..=1.0).contains(&j) {
                    return Err(ConfigError::Invalid {
                        key: key("jitter"),
                        message: format!("expected a fraction between 0 and 1, got {j}"),
                    });
                }
                policy.jitter = j;
            }
            if let Some(t) = q.timeout {
                policy.timeout = nonzero(t, &key("timeout"))?;
            }
        }
        for (name, j) in &file.job_types {
            let key = |k: &str| format!("job_types.\"{name}\".{k}");
            let backoff = match &j.backoff {
                Some(b) => Some(schedule(b, &key("backoff"))?),
                None => None,
            };
            let timeout = match j.timeout {
                Some(t) => Some(nonzero(t, &key("timeout"))?),
                None => None,
            };
            runtime.job_types.insert(
                name.clone(),
                PolicyOverride {
                    max_attempts: j.max_attempts,
                    backoff,
                    timeout,
                },
            );
        }
        let w = &file.workers;
        if let Some(d) = w.heartbeat_interval {
            runtime.heartbeat_interval = nonzero(d, "workers.heartbeat_interval")?;
        }
        if let Some(d) = w.dead_after {
            runtime.dead_after = nonzero(d, "workers.dead_after")?;
        }
        if let Some(d) = w.poll_interval {
            runtime.poll_interval = nonzero(d, "workers.poll_interval")?;
        }
        if let Some(d) = w.shutdown_grace {
            runtime.shutdown_grace = d.0;
        }
        if let Some(d) = w.retention {
            runtime.retention = nonzero(d, "workers.retention")?;
        }
        if let Some(d) = w.dead_letter_retention {
            runtime.dead_letter_retention = nonzero(d, "workers.dead_letter_retention")?;
        }
        if let Some(n) = w.poison_after {
            if n == 0 {
                return Err(ConfigError::Invalid {
                    key: "workers.poison_after".into(),
                    message: "must be at least 1".into(),
                });
            }
            runtime.poison_after = n;
        }
        crate::events_config::apply(&file.events, &file.listeners, &mut runtime)?;
        if runtime.shutdown_grace >= runtime.dead_after {
            return Err(ConfigError::Invalid {
                key: "workers.shutdown_grace".into(),
                message: "must be shorter than workers.dead_after (jobs still finishing would be rescued and run twice)".into(),
            });
        }
        if runtime.dead_after <= runtime.heartbeat_interval {
            return Err(ConfigError::Invalid {
                key: "workers.dead_after".into(),
                message: "must be longer than workers.heartbeat_interval".into(),
            });
        }

        let defaults = notifications::NotificationsConfig::default();
        let notifications = notifications::NotificationsConfig {
            allow_private_targets: file.webhooks.allow_private_targets.unwrap_or(false),
            request_timeout: match file.webhooks.request_timeout {
                Some(t) => nonzero(t, "webhooks.request_timeout")?,
                None => Duration::from_secs(10),
            },
            smtp_url: file.smtp.url,
            mail_dir: file
                .smtp
                .mail_dir
                .unwrap_or_else(|| PathBuf::from("./var/mail")),
            mail_from: file
                .smtp
                .from
                .unwrap_or_else(|| "Keel <no-reply@keel.localhost>".to_owned()),
            disable_after: match file.webhooks.disable_after {
                Some(d) => nonzero(d, "webhooks.disable_after")?,
                None => defaults.disable_after,
            },
            rotation_grace: match file.webhooks.rotation_grace {
                Some(d) => nonzero(d, "webhooks.rotation_grace")?,
                None => defaults.rotation_grace,
            },
            max_payload_bytes: match file.webhooks.max_payload_bytes {
                Some(0) => {
                    return Err(ConfigError::Invalid {
                        key: "webhooks.max_payload_bytes".into(),
                        message: "must be at least 1".into(),
                    });
                }
                Some(n) => n,
                None => defaults.max_payload_bytes,
            },
            recover_rate: match file.webhooks.recover_rate {
                Some(0) => {
                    return Err(ConfigError::Invalid {
                        key: "webhooks.recover_rate".into(),
                        message: "must be at least 1 a second".into(),
                    });
                }
                Some(n) => n,
                None => defaults.recover_rate,
            },
            delivery_log_retention: match file.webhooks.delivery_log_retention {
                Some(d) => nonzero(d, "webhooks.delivery_log_retention")?,
                None => defaults.delivery_log_retention,
            },
        };
        if let Some(d) = file.alerts.queue_age_threshold {
            runtime.stale_queue_after = nonzero(d, "alerts.queue_age_threshold")?;
        }
        runtime.broker = crate::deployment::resolve_broker(file.broker)?;
        let modules = crate::deployment::Modules::resolve(file.modules, o.modules.as_deref())?;
        let alerts = AlertSettings {
            webhook_url: file.alerts.webhook_url,
            secret: file.alerts.secret,
            queue_age_threshold: file
                .alerts
                .queue_age_threshold
                .map_or(Duration::from_secs(600), |d| d.0),
            min_interval: file
                .alerts
                .min_interval
                .map_or(Duration::from_secs(300), |d| d.0),
        };
        let mut schedules = sections::schedules(file.schedules)?;
        modules.keep_local(
            &mut schedules,
            |s| s.job_type.as_deref(),
            &mut runtime.backfills,
        );
        let overdue_after = sections::overdue_after(&file.billing)?;
        let telemetry = sections::telemetry(file.telemetry, o.otlp_endpoint.clone())?;
        Ok(Self {
            database_url,
            max_connections: file.database.max_connections.unwrap_or(10).max(2),
            max_connections_set: file.database.max_connections.is_some(),
            listen,
            admin_token,
            max_body: file.http.max_body.map_or(1 << 20, |b| b.0),
            runtime,
            notifications,
            modules,
            alerts,
            schedules,
            overdue_after,
            telemetry,
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn positive(n: usize, key: &str) -> Result<(), ConfigError> {
    if n == 0 {
        return Err(ConfigError::Invalid {
            key: key.to_owned(),
            message: "must be at least 1".into(),
        });
    }
    Ok(())
}

fn nonzero(d: DurationValue, key: &str) -> Result<Duration, ConfigError> {
    if d.0.is_zero() {
        return Err(ConfigError::Invalid {
            key: key.to_owned(),
            message: "must be longer than 0".into(),
        });
    }
    Ok(d.0)
}

fn schedule(values: &[DurationValue], key: &str) -> Result<Vec<Duration>, ConfigError> {
    if values.is_empty() {
        return Err(ConfigError::Invalid {
            key: key.to_owned(),
            message: "must list at least one delay, e.g. [\"10s\", \"60s\"]".into(),
        });
    }
    Ok(values.iter().map(|d| d.0).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10").is_err());
    }

    #[test]
    fn defaults_need_no_file() {
        let s = Settings::from_toml("", &Overrides::default()).unwrap();
        assert_eq!(s.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(s.runtime.queues.len(), 4);
        assert_eq!(s.runtime.queues["webhooks"].max_attempts, 6);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = Settings::from_toml("[queues.webhooks]\nconcurency = 3\n", &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("concurency"), "{e}");
    }

    #[test]
    fn bad_values_say_what_was_expected() {
        let e = Settings::from_toml(
            "[queues.webhooks]\ntimeout = \"soon\"\n",
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("expected a duration"), "{e}");
        let e = Settings::from_toml("[queues.emails]\njitter = 3.0\n", &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("queues.emails.jitter"), "{e}");
    }

    #[test]
    fn the_pool_follows_concurrency_unless_set_and_a_small_set_pool_is_warned_about() {
        let mut derived = Settings::from_toml(
            "[queues.webhooks]\nconcurrency = 20\n",
            &Overrides::default(),
        )
        .unwrap();
        let queues: Vec<String> = derived.runtime.queues.keys().cloned().collect();
        let jobs: usize = derived.runtime.queues.values().map(|p| p.concurrency).sum();
        assert_eq!(derived.fit_pool(&queues, true), None);
        assert_eq!(derived.max_connections as usize, jobs + HTTP_CONNECTIONS);
        assert_eq!(derived.fit_pool(&["webhooks".to_owned()], false), None);
        assert_eq!(derived.max_connections, 20);

        let mut set =
            Settings::from_toml("[database]\nmax_connections = 10\n", &Overrides::default())
                .unwrap();
        let warning = set.fit_pool(&["webhooks".to_owned()], true).unwrap();
        assert!(
            warning.contains("database.max_connections = 20"),
            "{warning}"
        );
        assert_eq!(set.max_connections, 10, "a set value is honoured");
        assert_eq!(set.fit_pool(&[], true), None);
    }

    #[test]
    fn the_interface_example_parses() {
        let text = r#"
[database]
url = "postgres://127.0.0.1/keel"
max_connections = 10
[http]
listen = "127.0.0.1:8080"
admin_token = "change-me"
[queues.webhooks]
concurrency = 16
max_attempts = 6
backoff = ["10s", "60s", "10m", "1h", "2h"]
jitter = 0.1
timeout = "30s"
[workers]
heartbeat_interval = "5s"
dead_after = "30s"
[webhooks]
allow_private_targets = false
request_timeout = "10s"
[smtp]
url = "smtp://127.0.0.1:2525"
[alerts]
webhook_url = "http://127.0.0.1:9/alerts"
"#;
        let s = Settings::from_toml(text, &Overrides::default()).unwrap();
        assert_eq!(s.runtime.queues["webhooks"].backoff.len(), 5);
        assert_eq!(s.admin_token.as_deref(), Some("change-me"));
    }
}
