//! `[events]` and `[listeners.<name>]` in `keel.toml`: how long the event log is kept, and
//! listeners' start points in the past (backfills, see `runtime::replay`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use runtime::RuntimeConfig;
use serde::Deserialize;

use crate::config::{ConfigError, DurationValue};

/// `[events]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    /// How long stored events are kept (default: as `[workers] retention`), apart from it;
    /// events a delivery or a feeding replay still needs are kept regardless.
    pub retention: Option<DurationValue>,
    /// Deliveries per second a backfill feeds at most (default 50).
    pub backfill_rate: Option<u32>,
}

/// `[listeners."<name>"]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    /// RFC 3339: at start-up, feed the listener every stored event it consumes since then.
    pub backfill_from: Option<String>,
}

/// Applies both sections to the runtime's configuration.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the key of a bad value.
pub fn apply(
    events: &EventsSection,
    listeners: &BTreeMap<String, ListenerSection>,
    runtime: &mut RuntimeConfig,
) -> Result<(), ConfigError> {
    if let Some(d) = events.retention {
        if d.0.is_zero() {
            return Err(invalid("events.retention", "must be longer than 0"));
        }
        runtime.event_retention = Some(d.0);
    }
    if let Some(rate) = events.backfill_rate {
        if rate == 0 {
            return Err(invalid("events.backfill_rate", "must be at least 1"));
        }
        runtime.backfill_rate = rate;
    }
    for (name, section) in listeners {
        if let Some(raw) = &section.backfill_from {
            let from = DateTime::parse_from_rfc3339(raw)
                .map_err(|_| {
                    invalid(
                        &format!("listeners.\"{name}\".backfill_from"),
                        &format!(
                            "expected an RFC 3339 time like \"2026-01-31T00:00:00Z\", got {raw:?}"
                        ),
                    )
                })?
                .with_timezone(&Utc);
            runtime.backfills.insert(name.clone(), from);
        }
    }
    Ok(())
}

fn invalid(key: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::config::{Overrides, Settings};

    #[test]
    fn event_retention_and_backfills_are_read_and_checked() {
        let s = Settings::from_toml(
            "[events]\nretention = \"30d\"\nbackfill_rate = 5\n\n[listeners.\"a.b\"]\nbackfill_from = \"2026-01-02T03:04:05Z\"\n",
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.runtime.event_retention().as_secs(), 30 * 86400);
        assert_eq!(s.runtime.backfill_rate, 5);
        assert_eq!(
            s.runtime.backfills["a.b"].to_rfc3339(),
            "2026-01-02T03:04:05+00:00"
        );
        let err = Settings::from_toml(
            "[listeners.x]\nbackfill_from = \"yesterday\"\n",
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("listeners.\"x\".backfill_from"), "{err}");
    }
}
