//! The runtime's own counters, read in this process: a `metrics` recorder that keeps every
//! counter the runtime increments (by name and labels) and lets a scenario read them back,
//! e.g. `keel_pruned_rows_total{table}`. Gauges and histograms are dropped.
//!
//! A process has one global recorder: install it once, before the runtime starts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// A counter's identity: its name and its labels, sorted.
type Id = (String, Vec<(String, String)>);

/// Every counter incremented since [`Counters::install`], shared with the recorder.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    values: Arc<Mutex<BTreeMap<Id, Arc<AtomicU64>>>>,
}

impl Counters {
    /// Installs a recorder feeding a new set of counters as this process's global recorder.
    ///
    /// # Errors
    /// Fails when a global recorder is installed already.
    pub fn install() -> anyhow::Result<Self> {
        let counters = Self::default();
        metrics::set_global_recorder(CountingRecorder(counters.clone()))
            .map_err(|_| anyhow::anyhow!("a metrics recorder is installed already"))?;
        Ok(counters)
    }

    /// The counter `name`, by the value of its label `label` (counters without it are left
    /// out; the same label value under different other labels is summed).
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, u64> {
        let values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = BTreeMap::new();
        for ((n, labels), value) in values.iter() {
            if n != name {
                continue;
            }
            if let Some((_, v)) = labels.iter().find(|(k, _)| k == label) {
                *out.entry(v.clone()).or_insert(0) += value.load(Ordering::Relaxed);
            }
        }
        out
    }

    fn handle(&self, key: &Key) -> Arc<AtomicU64> {
        let mut labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            values
                .entry((key.name().to_owned(), labels))
                .or_insert_with(|| Arc::new(AtomicU64::new(0))),
        )
    }
}

/// The recorder itself (installed once, globally).
#[derive(Debug)]
struct CountingRecorder(Counters);

impl Recorder for CountingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.handle(key))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_kept_by_label() {
        let counters = Counters::default();
        let recorder = CountingRecorder(counters.clone());
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("keel_pruned_rows_total", "table" => "jobs").increment(5000);
            metrics::counter!("keel_pruned_rows_total", "table" => "jobs").increment(12);
            metrics::counter!("keel_pruned_rows_total", "table" => "inbox").increment(3);
            metrics::counter!("keel_other_total", "table" => "jobs").increment(1);
            metrics::gauge!("keel_queue_depth").set(9.0);
        });
        let pruned = counters.by_label("keel_pruned_rows_total", "table");
        assert_eq!(pruned.get("jobs"), Some(&5012));
        assert_eq!(pruned.get("inbox"), Some(&3));
        assert_eq!(pruned.len(), 2);
        assert!(counters.by_label("keel_missing", "table").is_empty());
    }
}
