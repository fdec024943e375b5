//! `cargo xtask test`'s decisions: what runs, what is skipped (and said so), and what fails
//! instead — for every mix of PostgreSQL and chromium being there, named, missing, and CI.

use xtask::suite::plan::{
    self, Facts, LOCAL_POSTGRES_URL, Need, Plan, Probe, Resource, Skip, count_left_out, list_args,
    redacted, summary, test_args,
};
use xtask::suite::probe::host_and_port;

fn there(location: &str) -> Resource {
    Resource {
        location: location.to_owned(),
        explicit: false,
        probe: Probe::There,
    }
}

fn missing(location: &str, why: &str) -> Resource {
    Resource {
        location: location.to_owned(),
        explicit: false,
        probe: Probe::Missing(why.to_owned()),
    }
}

fn explicit(resource: Resource) -> Resource {
    Resource {
        explicit: true,
        ..resource
    }
}

/// A laptop with everything: the default PostgreSQL answers, chromium is on PATH.
fn everything() -> Facts {
    Facts {
        ci: false,
        postgres: there(LOCAL_POSTGRES_URL),
        chromium: there("/usr/bin/chromium"),
    }
}

fn no_server() -> Resource {
    missing(
        LOCAL_POSTGRES_URL,
        "no server answers at postgres://postgres@127.0.0.1:5432/postgres (connection refused)",
    )
}

fn no_chromium() -> Resource {
    missing("chromium", "no `chromium` on PATH")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| (*a).to_owned()).collect()
}

fn needs(plan: &Plan) -> Vec<Need> {
    plan.skips.iter().map(|s| s.need).collect()
}

#[test]
fn with_everything_there_both_are_handed_to_the_tests_and_nothing_is_skipped() {
    let plan = plan::plan(&everything()).expect("nothing missing");
    assert_eq!(
        plan.env,
        [
            (
                "KEEL_TEST_POSTGRES_URL".to_owned(),
                LOCAL_POSTGRES_URL.to_owned()
            ),
            ("KEEL_CHROMIUM".to_owned(), "/usr/bin/chromium".to_owned()),
        ]
    );
    assert!(plan.skips.is_empty());
    assert_eq!(test_args(&[], &plan.skips), ["test", "--workspace"]);
}

#[test]
fn a_missing_default_server_skips_the_postgres_variants_locally() {
    let plan = plan::plan(&Facts {
        postgres: no_server(),
        ..everything()
    })
    .expect("skipped, not refused");
    assert_eq!(needs(&plan), [Need::Postgres]);
    assert_eq!(
        plan.env,
        [("KEEL_CHROMIUM".to_owned(), "/usr/bin/chromium".to_owned())],
        "no URL is handed over for a server that is not there"
    );
    assert_eq!(
        test_args(&[], &plan.skips),
        ["test", "--workspace", "--", "--skip", "::postgres"]
    );
}

#[test]
fn a_missing_chromium_skips_the_browser_tests_locally() {
    let plan = plan::plan(&Facts {
        chromium: no_chromium(),
        ..everything()
    })
    .expect("skipped, not refused");
    assert_eq!(needs(&plan), [Need::Browser]);
    assert_eq!(
        test_args(&[], &plan.skips),
        ["test", "--workspace", "--", "--skip", "browser::"]
    );
}

#[test]
fn with_both_missing_both_groups_are_skipped() {
    let plan = plan::plan(&Facts {
        ci: false,
        postgres: no_server(),
        chromium: no_chromium(),
    })
    .expect("skipped, not refused");
    assert_eq!(needs(&plan), [Need::Postgres, Need::Browser]);
    assert!(plan.env.is_empty());
    assert_eq!(
        test_args(&[], &plan.skips),
        [
            "test",
            "--workspace",
            "--",
            "--skip",
            "::postgres",
            "--skip",
            "browser::"
        ]
    );
}

#[test]
fn under_ci_nothing_may_be_skipped() {
    for facts in [
        Facts {
            postgres: no_server(),
            ..everything()
        },
        Facts {
            chromium: no_chromium(),
            ..everything()
        },
    ] {
        let refusals = plan::plan(&Facts { ci: true, ..facts }).expect_err("refused under CI");
        assert_eq!(refusals.len(), 1);
        assert!(
            refusals[0]
                .message
                .starts_with("CI is set, so no test may be skipped"),
            "{}",
            refusals[0]
        );
    }
    let both = plan::plan(&Facts {
        ci: true,
        postgres: no_server(),
        chromium: no_chromium(),
    })
    .expect_err("refused under CI");
    let missing: Vec<Need> = both.iter().map(|r| r.need).collect();
    assert_eq!(
        missing,
        [Need::Postgres, Need::Browser],
        "every gap is named at once"
    );
}

#[test]
fn under_ci_with_everything_there_the_plan_is_the_same_as_locally() {
    let ci = plan::plan(&Facts {
        ci: true,
        ..everything()
    });
    assert_eq!(ci, plan::plan(&everything()));
}

#[test]
fn a_named_resource_that_is_missing_fails_even_locally() {
    let refusals = plan::plan(&Facts {
        postgres: explicit(missing(
            "postgres://postgres:secret@127.0.0.1:1/x",
            "no server answers at postgres://postgres:***@127.0.0.1:1/x (connection refused)",
        )),
        ..everything()
    })
    .expect_err("KEEL_TEST_POSTGRES_URL is a promise");
    assert_eq!(refusals.len(), 1);
    assert_eq!(
        refusals[0].message,
        "KEEL_TEST_POSTGRES_URL=postgres://postgres:***@127.0.0.1:1/x is set, but no server \
         answers at postgres://postgres:***@127.0.0.1:1/x (connection refused): fix it, or \
         unset it to let the PostgreSQL variants be skipped"
    );
    let refusals = plan::plan(&Facts {
        chromium: explicit(missing("/opt/nothing", "there is no file there")),
        ..everything()
    })
    .expect_err("KEEL_CHROMIUM is a promise");
    assert_eq!(refusals[0].need, Need::Browser);
}

#[test]
fn a_url_that_cannot_be_probed_is_handed_over_and_the_tests_decide() {
    let socket = "postgres://postgres@/postgres?host=/var/run/postgresql";
    let plan = plan::plan(&Facts {
        ci: true,
        postgres: Resource {
            location: socket.to_owned(),
            explicit: true,
            probe: Probe::Unprobed,
        },
        ..everything()
    })
    .expect("not refused");
    assert_eq!(
        plan.env[0],
        ("KEEL_TEST_POSTGRES_URL".to_owned(), socket.to_owned())
    );
}

#[test]
fn the_callers_arguments_pass_through_before_the_skips() {
    let skips = [Skip {
        need: Need::Postgres,
        why: String::new(),
    }];
    assert_eq!(
        test_args(
            &args(&["--release", "--", "dashboard", "--nocapture"]),
            &skips
        ),
        [
            "test",
            "--workspace",
            "--release",
            "--",
            "dashboard",
            "--nocapture",
            "--skip",
            "::postgres"
        ]
    );
    assert_eq!(
        test_args(&args(&["-p", "tests", "--test", "chain"]), &[]),
        ["test", "-p", "tests", "--test", "chain"],
        "a caller who picks packages gets no --workspace"
    );
    assert_eq!(
        test_args(&args(&["--package=xtask"]), &[]),
        ["test", "--package=xtask"]
    );
    assert_eq!(
        list_args(&args(&["-p", "tests", "--", "dashboard"])),
        [
            "test",
            "-p",
            "tests",
            "--",
            "dashboard",
            "--list",
            "--format",
            "terse"
        ]
    );
}

#[test]
fn counting_finds_the_tests_a_filter_leaves_out() {
    let listing = "\
records_are_created::postgres: test
records_are_created::sqlite: test
listen_wakes_other_processes::postgres: test
browser::an_operator_replays_a_dead_group: test
crates/events/src/lib.rs - catalog (line 12): test
bench_claims::postgres: benchmark
";
    assert_eq!(count_left_out(listing, Need::Postgres.filter()), 2);
    assert_eq!(count_left_out(listing, Need::Browser.filter()), 1);
    assert_eq!(count_left_out("", Need::Postgres.filter()), 0);
}

#[test]
fn the_last_line_names_what_was_skipped_why_and_how_to_run_it() {
    let plan = plan::plan(&Facts {
        ci: false,
        postgres: no_server(),
        chromium: no_chromium(),
    })
    .expect("skipped");
    assert_eq!(
        summary(&plan, &[Some(51), Some(1)]),
        "test: skipped 51 PostgreSQL variants (no server answers at \
         postgres://postgres@127.0.0.1:5432/postgres (connection refused); start PostgreSQL \
         there or set KEEL_TEST_POSTGRES_URL), 1 browser test (no `chromium` on PATH; \
         `apt-get install -y chromium` or set KEEL_CHROMIUM) — not run, not counted as passed"
    );
    assert!(
        summary(&plan, &[Some(0), None]).starts_with("test: skipped the browser tests (no"),
        "a group the caller's filters left out anyway is not mentioned; an uncounted one is"
    );
    assert_eq!(summary(&plan, &[Some(0), Some(0)]), "test: nothing skipped");
}

#[test]
fn the_last_line_says_what_ran_when_nothing_was_skipped() {
    let plan = plan::plan(&Facts {
        postgres: there("postgres://keel:hunter2@db:5432/postgres"),
        ..everything()
    })
    .expect("nothing missing");
    assert_eq!(
        summary(&plan, &[]),
        "test: nothing skipped (KEEL_TEST_POSTGRES_URL=postgres://keel:***@db:5432/postgres, \
         KEEL_CHROMIUM=/usr/bin/chromium)"
    );
}

#[test]
fn passwords_are_masked_when_printed() {
    assert_eq!(
        redacted("postgres://u:p@h:5432/db?sslmode=disable"),
        "postgres://u:***@h:5432/db?sslmode=disable"
    );
    assert_eq!(redacted("postgres://u@h/db"), "postgres://u@h/db");
    assert_eq!(redacted("/usr/bin/chromium"), "/usr/bin/chromium");
}

#[test]
fn the_probe_finds_a_urls_tcp_host_and_port() {
    let hp = |url: &str| host_and_port(url);
    assert_eq!(hp(LOCAL_POSTGRES_URL), Some(("127.0.0.1".to_owned(), 5432)));
    assert_eq!(
        hp("postgresql://u:p@db.example:6543/x?sslmode=require"),
        Some(("db.example".to_owned(), 6543))
    );
    assert_eq!(
        hp("postgres://localhost"),
        Some(("localhost".to_owned(), 5432))
    );
    assert_eq!(
        hp("postgres://[::1]:5433/x"),
        Some(("::1".to_owned(), 5433))
    );
    assert_eq!(
        hp("postgres://postgres@127.0.0.1:1/x"),
        Some(("127.0.0.1".to_owned(), 1))
    );
    // Nothing to probe over TCP: a Unix socket, several hosts, not a PostgreSQL URL.
    assert_eq!(hp("postgres:///x"), None);
    assert_eq!(hp("postgres://u@/x?host=/var/run/postgresql"), None);
    assert_eq!(hp("postgres://%2Fvar%2Frun%2Fpostgresql/x"), None);
    assert_eq!(hp("postgres://a:5432,b:5432/x"), None);
    assert_eq!(hp("sqlite:keel.db"), None);
    assert_eq!(hp("postgres://h:notaport/x"), None);
}
