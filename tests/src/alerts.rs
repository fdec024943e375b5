//! An alert sink that remembers what it was told, so tests can assert a dead letter raised one.

use std::sync::Mutex;

use runtime::alerts::{Alert, AlertSink};

/// Records every alert raised.
#[derive(Debug, Default)]
pub struct RecordingAlerts {
    raised: Mutex<Vec<Alert>>,
}

impl RecordingAlerts {
    /// Every alert raised so far, oldest first.
    pub fn raised(&self) -> Vec<Alert> {
        self.raised
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The alerts of one kind (e.g. `job_dead`) whose detail names `job_id`.
    pub fn about_job(&self, kind: &str, job_id: &str) -> Vec<Alert> {
        self.raised()
            .into_iter()
            .filter(|a| a.kind == kind && a.detail["job_id"] == job_id)
            .collect()
    }
}

impl AlertSink for RecordingAlerts {
    fn raise(&self, alert: Alert) {
        self.raised
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(alert);
    }
}
