//! What `cargo xtask test` runs, decided from what the machine has: which variables the tests
//! are handed, which tests are skipped (and why), and which gaps are failures instead. Pure,
//! so every case is a test (`xtask/tests/suite.rs`); [`super::probe`] gathers the facts.
//!
//! The rule: a test that runs, runs for real or fails. What cannot run is left out with a
//! libtest `--skip` filter, counted and named in the last line — never reported as passed.
//! A resource named explicitly (its variable is set) must be there, and under CI nothing
//! may be left out.

use std::fmt;

/// The variable naming the PostgreSQL server the tests create their databases on.
pub const POSTGRES_URL_VAR: &str = "KEEL_TEST_POSTGRES_URL";

/// The variable that replaces [`LOCAL_POSTGRES_URL`] as the server tried when
/// [`POSTGRES_URL_VAR`] is unset.
pub const POSTGRES_DEFAULT_VAR: &str = "KEEL_TEST_POSTGRES_DEFAULT_URL";

/// The server tried when [`POSTGRES_URL_VAR`] is unset (each test creates and drops a
/// database of its own; this one only hosts the connection). `tests/src/db.rs` has the same.
pub const LOCAL_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The variable naming the chromium binary the browser tests drive.
pub const CHROMIUM_VAR: &str = "KEEL_CHROMIUM";

/// Something a group of tests cannot run without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A PostgreSQL server: the `…::postgres` variants of `both_backends!`/`postgres_only!`.
    Postgres,
    /// Chromium: the tests in a `browser` module (`tests/tests/dashboard.rs`).
    Browser,
}

impl Need {
    /// Every need, in the order they are reported.
    pub const ALL: [Self; 2] = [Self::Postgres, Self::Browser];

    /// The libtest `--skip` filter (a substring of the test's path) that leaves its tests out.
    #[must_use]
    pub const fn filter(self) -> &'static str {
        match self {
            Self::Postgres => "::postgres",
            Self::Browser => "browser::",
        }
    }

    /// The variable that hands the tests the resource.
    #[must_use]
    pub const fn variable(self) -> &'static str {
        match self {
            Self::Postgres => POSTGRES_URL_VAR,
            Self::Browser => CHROMIUM_VAR,
        }
    }

    /// What its tests are called: `Some(n)` of them, or all (`None`, not counted).
    #[must_use]
    pub fn tests(self, count: Option<usize>) -> String {
        let (one, many) = match self {
            Self::Postgres => ("PostgreSQL variant", "PostgreSQL variants"),
            Self::Browser => ("browser test", "browser tests"),
        };
        match count {
            Some(1) => format!("1 {one}"),
            Some(n) => format!("{n} {many}"),
            None => format!("the {many}"),
        }
    }

    /// How to make the resource available.
    #[must_use]
    pub const fn remedy(self) -> &'static str {
        match self {
            Self::Postgres => "start PostgreSQL there or set KEEL_TEST_POSTGRES_URL",
            Self::Browser => "`apt-get install -y chromium` or set KEEL_CHROMIUM",
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Postgres => "PostgreSQL",
            Self::Browser => "chromium",
        })
    }
}

/// What probing a resource found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It is there (the server accepts connections, the binary exists).
    There,
    /// It is not, and why.
    Missing(String),
    /// It cannot be probed from here (e.g. a Unix-socket URL): the tests are trusted to tell.
    Unprobed,
}

/// One resource the tests may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Where it is or was looked for: a URL or a path, as the tests would be handed it.
    pub location: String,
    /// Named through its variable, rather than the default tried.
    pub explicit: bool,
    /// What probing found.
    pub probe: Probe,
}

/// The facts `cargo xtask test` decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `CI` is set: nothing may be skipped.
    pub ci: bool,
    /// The PostgreSQL server.
    pub postgres: Resource,
    /// The chromium binary.
    pub chromium: Resource,
}

impl Facts {
    /// The resource `need` is about.
    #[must_use]
    pub const fn resource(&self, need: Need) -> &Resource {
        match need {
            Need::Postgres => &self.postgres,
            Need::Browser => &self.chromium,
        }
    }
}

/// Tests left out because their resource is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// What they need.
    pub need: Need,
    /// Where it was looked for, and why it is not there.
    pub why: String,
}

/// What runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Variables for `cargo test`: each resource that is there, handed over explicitly, so a
    /// test that cannot use it fails instead of guessing.
    pub env: Vec<(String, String)>,
    /// The groups left out.
    pub skips: Vec<Skip>,
}

/// A missing resource that may not be skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What is missing.
    pub need: Need,
    /// Why it may not be skipped, and what to do.
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Decides what runs: every resource that is there is handed to the tests; a missing one
/// skips its tests locally, and is refused when it was named explicitly or under CI.
///
/// # Errors
/// Every missing resource that may not be skipped.
pub fn plan(facts: &Facts) -> Result<Plan, Vec<Refusal>> {
    let mut plan = Plan::default();
    let mut refusals = Vec::new();
    for need in Need::ALL {
        let resource = facts.resource(need);
        let Probe::Missing(why) = &resource.probe else {
            plan.env
                .push((need.variable().to_owned(), resource.location.clone()));
            continue;
        };
        if resource.explicit {
            refusals.push(Refusal {
                need,
                message: format!(
                    "{}={} is set, but {why}: fix it, or unset it to let {} be skipped",
                    need.variable(),
                    redacted(&resource.location),
                    need.tests(None)
                ),
            });
        } else if facts.ci {
            refusals.push(Refusal {
                need,
                message: format!(
                    "CI is set, so no test may be skipped, but {why} ({})",
                    need.remedy()
                ),
            });
        } else {
            plan.skips.push(Skip {
                need,
                why: why.clone(),
            });
        }
    }
    if refusals.is_empty() {
        Ok(plan)
    } else {
        Err(refusals)
    }
}

/// The arguments after `cargo` that run the tests: `test`, `--workspace` unless the caller
/// picked packages, the caller's cargo arguments, then after `--` the caller's libtest
/// arguments and one `--skip` per skipped group.
#[must_use]
pub fn test_args(caller: &[String], skips: &[Skip]) -> Vec<String> {
    let filters: Vec<String> = skips
        .iter()
        .flat_map(|s| ["--skip".to_owned(), s.need.filter().to_owned()])
        .collect();
    with_libtest_args(caller, &filters)
}

/// The arguments that list, without running, the tests the caller's arguments select
/// (`--list --format terse`), to count what the skips leave out.
#[must_use]
pub fn list_args(caller: &[String]) -> Vec<String> {
    with_libtest_args(
        caller,
        &[
            "--list".to_owned(),
            "--format".to_owned(),
            "terse".to_owned(),
        ],
    )
}

fn with_libtest_args(caller: &[String], extra: &[String]) -> Vec<String> {
    let (cargo, libtest) = match caller.iter().position(|a| a == "--") {
        Some(i) => (&caller[..i], &caller[i + 1..]),
        None => (caller, &[][..]),
    };
    let picks_packages = cargo.iter().any(|a| {
        a == "--workspace" || a == "--all" || a.starts_with("-p") || a.starts_with("--package")
    });
    let mut args = vec!["test".to_owned()];
    if !picks_packages {
        args.push("--workspace".to_owned());
    }
    args.extend(cargo.iter().cloned());
    if !libtest.is_empty() || !extra.is_empty() {
        args.push("--".to_owned());
        args.extend(libtest.iter().cloned());
        args.extend(extra.iter().cloned());
    }
    args
}

/// How many tests in a `--list --format terse` listing the `filter` leaves out (libtest
/// skips every test whose path contains it).
#[must_use]
pub fn count_left_out(listing: &str, filter: &str) -> usize {
    listing
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .filter(|name| name.contains(filter))
        .count()
}

/// The line printed last: what was skipped (with `counts[i]` tests for `plan.skips[i]`,
/// `None` when not counted), why, and how to run it; or that nothing was, and what ran on.
#[must_use]
pub fn summary(plan: &Plan, counts: &[Option<usize>]) -> String {
    let parts: Vec<String> = plan
        .skips
        .iter()
        .zip(counts)
        .filter(|(_, count)| **count != Some(0))
        .map(|(skip, count)| {
            format!(
                "{} ({}; {})",
                skip.need.tests(*count),
                skip.why,
                skip.need.remedy()
            )
        })
        .collect();
    if !parts.is_empty() {
        return format!(
            "test: skipped {} — not run, not counted as passed",
            parts.join(", ")
        );
    }
    let used: Vec<String> = plan
        .env
        .iter()
        .map(|(key, value)| format!("{key}={}", redacted(value)))
        .collect();
    if used.is_empty() {
        "test: nothing skipped".to_owned()
    } else {
        format!("test: nothing skipped ({})", used.join(", "))
    }
}

/// `location` with the password of a URL's user (`scheme://user:password@…`) masked, for
/// printing.
#[must_use]
pub fn redacted(location: &str) -> String {
    let Some(scheme_end) = location.find("://").map(|i| i + 3) else {
        return location.to_owned();
    };
    let rest = &location[scheme_end..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return location.to_owned();
    };
    match authority[..at].find(':') {
        Some(colon) => format!(
            "{}:***{}",
            &location[..scheme_end + colon],
            &location[scheme_end + at..]
        ),
        None => location.to_owned(),
    }
}
