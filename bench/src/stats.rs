//! Small statistics: medians over rounds, percentiles over samples, and CPU time read from
//! `/proc` (this process, and every local `postgres` process).

use std::time::Duration;

/// The median of `values` (`None` when empty).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The `p`-th percentile (nearest rank, `p` in 0..=1) of `samples`, in milliseconds.
pub fn percentile_ms(samples: &[Duration], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v: Vec<Duration> = samples.to_vec();
    v.sort();
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1].as_secs_f64() * 1000.0)
}

/// Linux reports CPU time in clock ticks; 100 per second on every mainstream kernel.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) used so far by this process and by every process named
/// `postgres` on this machine (`None` where `/proc` is unavailable).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSnapshot {
    /// This process.
    pub keel: Option<f64>,
    /// All local PostgreSQL processes (server-wide: other clients count too).
    pub postgres: Option<f64>,
}

impl CpuSnapshot {
    /// Reads `/proc` now.
    pub fn take() -> Self {
        let keel = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| cpu_seconds(&s));
        let postgres = std::fs::read_dir("/proc").ok().map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                .filter(|stat| stat.contains("(postgres)"))
                .filter_map(|stat| cpu_seconds(&stat))
                .sum()
        });
        Self { keel, postgres }
    }

    /// CPU seconds spent since `earlier`, per 1 000 jobs.
    pub fn per_thousand_since(&self, earlier: &Self, jobs: usize) -> (Option<f64>, Option<f64>) {
        let per = |now: Option<f64>, then: Option<f64>| {
            Some((now? - then?) * 1000.0 / jobs.max(1) as f64)
        };
        (
            per(self.keel, earlier.keel),
            per(self.postgres, earlier.postgres),
        )
    }
}

/// utime + stime of one `/proc/<pid>/stat` line, in seconds.
fn cpu_seconds(stat: &str) -> Option<f64> {
    // The command name may hold spaces and parentheses: fields start after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After `)`: state is field 3 of the man page, so utime (14) and stime (15) are 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&samples, 0.5), Some(50.0));
        assert_eq!(percentile_ms(&samples, 0.99), Some(99.0));
    }

    #[test]
    fn stat_lines_parse() {
        let line = "42 (post gres) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 5 0 0";
        assert_eq!(cpu_seconds(line), Some(3.0));
    }
}
