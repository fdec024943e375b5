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

/// The percentiles (in %) of [`percentile_table`]: the whole distribution at 5 % steps, and
/// its tails.
pub const TABLE_PERCENTILES: [f64; 24] = [
    0.0, 1.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0, 65.0, 70.0,
    75.0, 80.0, 85.0, 90.0, 95.0, 99.0, 99.9, 100.0,
];

/// `[[q, ms], …]` for every q of [`TABLE_PERCENTILES`] (ms rounded to 0.01; empty when there
/// are no samples), compact enough for a JSON line and enough to chart the distribution.
pub fn percentile_table(samples: &[Duration]) -> Vec<[f64; 2]> {
    let mut v: Vec<Duration> = samples.to_vec();
    v.sort();
    if v.is_empty() {
        return Vec::new();
    }
    TABLE_PERCENTILES
        .iter()
        .map(|&q| {
            // Nearest rank; the epsilon keeps 99.9 % of 1 000 at rank 999, not 1 000.
            let rank = ((q / 100.0 * v.len() as f64 - 1e-9).ceil() as usize).clamp(1, v.len());
            let ms = v[rank - 1].as_secs_f64() * 1000.0;
            [q, (ms * 100.0).round() / 100.0]
        })
        .collect()
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
    fn percentile_table_covers_the_distribution_and_its_tails() {
        assert!(percentile_table(&[]).is_empty());
        let samples: Vec<Duration> = (1..=1000).rev().map(Duration::from_millis).collect();
        let table = percentile_table(&samples);
        assert_eq!(table.len(), TABLE_PERCENTILES.len());
        let at = |q: f64| table.iter().find(|[p, _]| *p == q).map(|[_, ms]| *ms);
        assert_eq!(at(0.0), Some(1.0));
        assert_eq!(at(50.0), Some(500.0));
        assert_eq!(at(99.9), Some(999.0));
        assert_eq!(at(100.0), Some(1000.0));
        assert!(table.windows(2).all(|w| w[0][1] <= w[1][1]));
        // Agrees with the single-percentile function.
        assert_eq!(at(90.0), percentile_ms(&samples, 0.9));
    }

    #[test]
    fn stat_lines_parse() {
        let line = "42 (post gres) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 5 0 0";
        assert_eq!(cpu_seconds(line), Some(3.0));
    }
}
