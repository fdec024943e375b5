//! `--name value` / `--name=value` flags for the scenarios that print one JSON line: read
//! each by name, with a default, and refuse any flag no scenario asked for.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Flags as given, and which of them were read.
#[derive(Debug, Default)]
pub struct Flags {
    values: BTreeMap<String, String>,
    read: RefCell<BTreeSet<String>>,
}

impl Flags {
    /// Splits `args` into flags; every flag takes a value.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut values = BTreeMap::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if !arg.starts_with("--") {
                return Err(format!("unexpected argument `{arg}`"));
            }
            let (name, value) = match arg.split_once('=') {
                Some((n, v)) => (n.to_owned(), v.to_owned()),
                None => (
                    arg.clone(),
                    it.next()
                        .cloned()
                        .ok_or_else(|| format!("`{arg}` needs a value"))?,
                ),
            };
            values.insert(name, value);
        }
        Ok(Self {
            values,
            read: RefCell::default(),
        })
    }

    fn get(&self, name: &str) -> Option<&String> {
        self.read.borrow_mut().insert(name.to_owned());
        self.values.get(name)
    }

    /// A required text flag.
    pub fn text(&self, name: &str) -> Result<String, String> {
        self.get(name)
            .cloned()
            .ok_or_else(|| format!("`{name}` is required"))
    }

    /// A count (`1_000_000` allowed), or `default`.
    pub fn number(&self, name: &str, default: usize) -> Result<usize, String> {
        self.get(name).map_or(Ok(default), |v| count(name, v))
    }

    /// A comma-separated list of counts, or `default`.
    pub fn numbers(&self, name: &str, default: &[usize]) -> Result<Vec<usize>, String> {
        self.get(name).map_or_else(
            || Ok(default.to_vec()),
            |v| v.split(',').map(|x| count(name, x)).collect(),
        )
    }

    /// A duration: seconds (`30`), or a number with a unit (`30s`, `5m`, `1h`, `500ms`), or
    /// `default`.
    pub fn duration(&self, name: &str, default: Duration) -> Result<Duration, String> {
        self.get(name).map_or(Ok(default), |v| duration(name, v))
    }

    /// Fails on a flag that was never read.
    pub fn finish(&self) -> Result<(), String> {
        let read = self.read.borrow();
        match self.values.keys().find(|k| !read.contains(*k)) {
            Some(unknown) => Err(format!("unexpected argument `{unknown}`")),
            None => Ok(()),
        }
    }
}

fn duration(name: &str, v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|e| format!("`{name}`: `{v}` is not a duration ({e})"))?;
    let per_unit = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        other => return Err(format!("`{name}`: unknown unit `{other}` (ms, s, m, h)")),
    };
    Ok(Duration::from_secs(n * per_unit))
}

fn count(name: &str, v: &str) -> Result<usize, String> {
    v.trim()
        .replace('_', "")
        .parse()
        .map_err(|e| format!("`{name}`: {e}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Flags;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn flags_read_with_defaults_and_unknown_ones_refused() {
        let f = Flags::parse(&args(&["--rates=50,200", "--backlog", "1_000_000"]))
            .expect("valid flags");
        assert_eq!(f.numbers("--rates", &[1]), Ok(vec![50, 200]));
        assert_eq!(f.number("--backlog", 0), Ok(1_000_000));
        assert_eq!(f.number("--seconds", 10), Ok(10));
        assert!(f.finish().is_ok());
        let f = Flags::parse(&args(&["--nope", "1"])).expect("valid flags");
        assert!(f.finish().is_err());
        assert!(Flags::parse(&args(&["--seconds"])).is_err());
    }

    #[test]
    fn durations_take_a_unit_or_mean_seconds() {
        let f = Flags::parse(&args(&[
            "--a", "30s", "--b", "2m", "--c", "45", "--d", "250ms",
        ]))
        .expect("valid flags");
        assert_eq!(
            f.duration("--a", Duration::ZERO),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(
            f.duration("--b", Duration::ZERO),
            Ok(Duration::from_secs(120))
        );
        assert_eq!(
            f.duration("--c", Duration::ZERO),
            Ok(Duration::from_secs(45))
        );
        assert_eq!(
            f.duration("--d", Duration::ZERO),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            f.duration("--e", Duration::from_secs(7)),
            Ok(Duration::from_secs(7))
        );
        let f = Flags::parse(&args(&["--a", "3 days", "--b", "s"])).expect("valid flags");
        assert!(f.duration("--a", Duration::ZERO).is_err());
        assert!(f.duration("--b", Duration::ZERO).is_err());
    }
}
