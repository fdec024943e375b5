//! The sections of `keel.toml` for scheduled jobs (`[schedules.<name>]`), billing
//! (`[billing]`) and tracing export (`[telemetry]`), and how each resolves.

use std::collections::BTreeMap;
use std::time::Duration;

use events::Missed;
use runtime::schedule::{ScheduleOverride, parse_cron, parse_zone};
use serde::Deserialize;

use super::{ConfigError, DurationValue, nonzero};

/// `[schedules.<name>]`: override a module's schedule, pause it, or add one for an existing
/// job type.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    /// Cron expression: five fields, or six with seconds first.
    pub cron: Option<String>,
    /// IANA time zone the expression is read in (default `UTC`).
    pub zone: Option<String>,
    /// The job type to enqueue (required for a schedule no module declares).
    pub job_type: Option<String>,
    /// The job's payload (a table).
    pub payload: Option<serde_json::Value>,
    /// `true` stops enqueuing.
    pub paused: Option<bool>,
    /// `"skip"` or `"run_once"`: what ticks missed during downtime become.
    pub missed: Option<Missed>,
}

/// `[billing]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingSection {
    /// How long an invoice stays open before it becomes overdue (default 30 days).
    pub overdue_after: Option<DurationValue>,
}

/// `[telemetry]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// OTLP/HTTP endpoint (e.g. `http://127.0.0.1:4318`); unset: no export
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT` overrides it).
    pub otlp_endpoint: Option<String>,
    /// How often finished spans are sent (default 5 s).
    pub export_interval: Option<DurationValue>,
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// OTLP/HTTP base endpoint; `None` turns export off (no exporter, no overhead).
    pub otlp_endpoint: Option<String>,
    /// Batch export period.
    pub export_interval: Duration,
}

/// Checks the `[schedules.*]` tables, naming the key of a bad expression or zone.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `schedules.<name>.<key>`.
pub fn schedules(
    sections: BTreeMap<String, ScheduleSection>,
) -> Result<BTreeMap<String, ScheduleOverride>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, s) in sections {
        let invalid = |k: &str, message: String| ConfigError::Invalid {
            key: format!("schedules.{name}.{k}"),
            message,
        };
        if let Some(cron) = &s.cron {
            parse_cron(cron).map_err(|e| invalid("cron", e))?;
        }
        if let Some(zone) = &s.zone {
            parse_zone(zone).map_err(|e| invalid("zone", e))?;
        }
        if let Some(payload) = &s.payload
            && !payload.is_object()
        {
            return Err(invalid("payload", "expected a table".to_owned()));
        }
        out.insert(
            name,
            ScheduleOverride {
                cron: s.cron,
                zone: s.zone,
                job_type: s.job_type,
                payload: s.payload,
                paused: s.paused,
                missed: s.missed,
            },
        );
    }
    Ok(out)
}

/// `[billing] overdue_after`, or its default.
///
/// # Errors
/// [`ConfigError::Invalid`] for zero.
pub fn overdue_after(section: &BillingSection) -> Result<Duration, ConfigError> {
    match section.overdue_after {
        Some(d) => nonzero(d, "billing.overdue_after"),
        None => Ok(billing::DEFAULT_OVERDUE_AFTER),
    }
}

/// `[telemetry]`; `OTEL_EXPORTER_OTLP_ENDPOINT` (given as `env`) wins over the file, as
/// every environment variable does.
///
/// # Errors
/// [`ConfigError::Invalid`] for an endpoint that is not `http(s)://…`.
pub fn telemetry(
    section: TelemetrySection,
    env: Option<String>,
) -> Result<TelemetrySettings, ConfigError> {
    let (endpoint, key) = match env.filter(|e| !e.trim().is_empty()) {
        Some(e) => (Some(e), "OTEL_EXPORTER_OTLP_ENDPOINT"),
        None => (section.otlp_endpoint, "telemetry.otlp_endpoint"),
    };
    let endpoint = endpoint.filter(|e| !e.trim().is_empty());
    if let Some(e) = &endpoint
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        return Err(ConfigError::Invalid {
            key: key.to_owned(),
            message: format!("expected an http(s):// URL of an OTLP/HTTP receiver, got {e:?}"),
        });
    }
    Ok(TelemetrySettings {
        otlp_endpoint: endpoint,
        export_interval: match section.export_interval {
            Some(d) => nonzero(d, "telemetry.export_interval")?,
            None => Duration::from_secs(5),
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{Overrides, Settings};

    #[test]
    fn a_schedule_section_resolves_to_its_override() {
        let text = "[schedules.sweep]\ncron = \"0 2 * * *\"\nzone = \"Asia/Tokyo\"\njob_type = \"x.y\"\npayload = { days = 3 }\npaused = true\nmissed = \"run_once\"\n";
        let settings = Settings::from_toml(text, &Overrides::default()).unwrap();
        let sweep = &settings.schedules["sweep"];
        assert_eq!(sweep.cron.as_deref(), Some("0 2 * * *"));
        assert_eq!(sweep.zone.as_deref(), Some("Asia/Tokyo"));
        assert_eq!(sweep.payload, Some(serde_json::json!({ "days": 3 })));
        assert_eq!(
            (sweep.paused, sweep.missed),
            (Some(true), Some(Missed::RunOnce))
        );
        assert_eq!(settings.overdue_after, billing::DEFAULT_OVERDUE_AFTER);
    }

    #[test]
    fn a_payload_that_is_not_a_table_is_refused_naming_the_key() {
        let err = Settings::from_toml("[schedules.s]\npayload = 3\n", &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("schedules.s.payload"), "{err}");
    }

    #[test]
    fn the_environments_endpoint_wins_and_unset_means_no_export() {
        let file = "[telemetry]\notlp_endpoint = \"http://file:4318\"\n";
        let from_file = Settings::from_toml(file, &Overrides::default()).unwrap();
        assert_eq!(
            from_file.telemetry.otlp_endpoint.as_deref(),
            Some("http://file:4318")
        );
        let env = Overrides {
            otlp_endpoint: Some("http://env:4318".to_owned()),
            ..Overrides::default()
        };
        let from_env = Settings::from_toml(file, &env).unwrap();
        assert_eq!(
            from_env.telemetry.otlp_endpoint.as_deref(),
            Some("http://env:4318")
        );
        let none = Settings::from_toml("", &Overrides::default()).unwrap();
        assert_eq!(none.telemetry.otlp_endpoint, None);
        let bad = Settings::from_toml(
            "[telemetry]\notlp_endpoint = \"collector:4318\"\n",
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("telemetry.otlp_endpoint"), "{bad}");
    }
}
