//! The admin dashboard in a real browser — Debian's `chromium`, headless, driven over the
//! DevTools protocol: log in through the form, see a dead webhook delivery's group, fix the
//! receiver, press "Replay group", read the chain on the trace page and the endpoint's
//! delivery log and success rate on its webhook page. Plus, over plain
//! HTTP, the rules the pages keep: the token (or a session) for every page, a CSRF token for
//! every change, a confirmation for purge, and 403 — not open — without a configured token.
//!
//! The browser test lives in `mod browser` and fails without chromium (`KEEL_CHROMIUM`, else
//! `chromium` on `PATH`), naming the command that installs it. `cargo xtask test` (the
//! README's command) probes for chromium the same way and, when there is none, leaves out
//! every test whose path contains `browser::` and says so in its last line — except under CI,
//! where that is a failure (`.ci/run` installs chromium). The HTTP rules run either way.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use app::application::{Application, WorkerMode};
use app::config::{Overrides, Settings};
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;
use tests::app::{ADMIN_TOKEN, AppOptions, TestApp, spawn_app};
use tests::receivers::HttpReceiver;
use tests::{TestDb, both_backends, eventually};

const WITHIN: Duration = Duration::from_secs(20);
const DELIVER: &str = "notifications.deliver_webhook";

/// The variable naming the chromium binary; without it, `chromium` is looked for on `PATH`.
const CHROMIUM_VAR: &str = "KEEL_CHROMIUM";

/// A webhooks queue that gives up fast: two attempts, 20 ms apart, no jitter.
fn dying_fast() -> AppOptions {
    AppOptions {
        max_attempts: Some(2),
        backoff: vec!["20ms".to_owned()],
        ..AppOptions::default()
    }
}

/// Subscribes a receiver that answers 500, creates a record under `correlation_id`, and
/// waits for its delivery to die; returns the dead job's id.
async fn a_dead_delivery(app: &TestApp, receiver: &HttpReceiver, correlation_id: &str) -> String {
    receiver.answer(500);
    app.subscribe(&receiver.url("/hooks"), &["record.created"])
        .await;
    let created = app
        .client
        .post(app.url("/records"))
        .header("x-correlation-id", correlation_id)
        .json(&serde_json::json!({ "title": "Doomed", "owner_email": "d@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    eventually(WITHIN, "the delivery to be dead-lettered", || async {
        let list = app.admin_get("/admin/dead-letters").await;
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job_type"] == DELIVER)
            .map(|j| j["id"].as_str().unwrap().to_owned())
    })
    .await
}

/// Chromium under the DevTools protocol, in a fresh profile, with one tab.
struct Chromium {
    tab: Arc<Tab>,
    _browser: Browser,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts chromium: `KEEL_CHROMIUM`, else `chromium` on `PATH`.
    ///
    /// # Panics
    /// When there is none: a browser test that runs without a browser fails (`cargo xtask
    /// test` leaves it out instead, and says so).
    fn launch() -> Self {
        let path = match std::env::var_os(CHROMIUM_VAR).filter(|v| !v.is_empty()) {
            Some(path) => PathBuf::from(path),
            None => std::env::var_os("PATH")
                .and_then(|dirs| {
                    std::env::split_paths(&dirs)
                        .map(|dir| dir.join("chromium"))
                        .find(|candidate| candidate.is_file())
                })
                .unwrap_or_else(|| {
                    panic!(
                        "the browser test cannot run: no `chromium` on PATH and {CHROMIUM_VAR} \
                         is unset. Install it with `apt-get update && apt-get install -y \
                         chromium` (CI's .ci/run does), set {CHROMIUM_VAR} to a chromium binary, \
                         or run `cargo xtask test`, which skips browser tests without one and \
                         says so"
                    )
                }),
        };
        assert!(
            path.is_file(),
            "the browser test cannot run: {CHROMIUM_VAR}={} is not a file",
            path.display()
        );
        let profile = tempfile::Builder::new()
            .prefix("keel-chromium-")
            .tempdir()
            .unwrap();
        let options = LaunchOptions::default_builder()
            .path(Some(path))
            .headless(true)
            .sandbox(false)
            .window_size(Some((1200, 720)))
            .user_data_dir(Some(profile.path().to_path_buf()))
            .idle_browser_timeout(Duration::from_secs(120))
            .args(
                [
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--hide-scrollbars",
                ]
                .iter()
                .map(OsStr::new)
                .collect(),
            )
            .build()
            .unwrap();
        let browser =
            Browser::new(options).unwrap_or_else(|e| panic!("chromium did not start: {e:#}"));
        let tab = browser.new_tab().unwrap();
        tab.set_default_timeout(WITHIN);
        Self {
            tab,
            _browser: browser,
            _profile: profile,
        }
    }

    /// Opens `url` and waits until `selector` is on the page that answered.
    fn open(&self, url: &str, selector: &str) {
        self.tab.navigate_to(url).unwrap();
        self.tab.wait_until_navigated().unwrap();
        self.wait_for(selector);
    }

    fn wait_for(&self, selector: &str) {
        if let Err(e) = self.tab.wait_for_element(selector) {
            panic!(
                "{selector} did not appear on {}: {e:#}\n{}",
                self.tab.get_url(),
                self.tab.get_content().unwrap_or_default()
            );
        }
    }

    /// The visible text of the first element matching `selector`.
    fn text(&self, selector: &str) -> String {
        self.tab
            .wait_for_element(selector)
            .and_then(|e| e.get_inner_text())
            .unwrap_or_else(|e| panic!("no text for {selector} on {}: {e:#}", self.tab.get_url()))
    }

    /// Clicks `selector`, then waits for `then` on the page that follows.
    fn click(&self, selector: &str, then: &str) {
        self.tab
            .wait_for_element(selector)
            .unwrap()
            .click()
            .unwrap();
        self.wait_for(then);
    }

    /// Types `text` into the field `selector` and presses Enter.
    fn submit(&self, selector: &str, text: &str, then: &str) {
        self.tab
            .wait_for_element(selector)
            .unwrap()
            .click()
            .unwrap();
        self.tab.send_character(text).unwrap();
        self.tab.press_key("Enter").unwrap();
        self.wait_for(then);
    }

    fn url(&self) -> String {
        self.tab.get_url()
    }

    fn screenshot(&self) -> Vec<u8> {
        self.tab
            .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
            .unwrap()
    }
}

/// Runs blocking browser work without stalling the app that runs on the same runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The tests that drive chromium: `cargo xtask test` skips this module (`browser::`) when
/// there is none, and says so.
mod browser {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_operator_replays_a_dead_webhook_group_from_the_dashboard_and_reads_its_trace() {
        let chromium = blocking(Chromium::launch);
        let db = TestDb::sqlite();
        let receiver = HttpReceiver::start().await;
        let app = spawn_app(&db, dying_fast()).await;
        let correlation_id = "dashboard-story-1";
        let dead_id = a_dead_delivery(&app, &receiver, correlation_id).await;

        // Every page sends a stranger to the login form; the form lets the operator in.
        blocking(|| {
            chromium.open(&app.url("/admin"), "input[name=token]");
            assert!(
                chromium.url().ends_with("/admin/login"),
                "{}",
                chromium.url()
            );
            chromium.submit("input[name=token]", ADMIN_TOKEN, "#queues");
            assert!(chromium.url().ends_with("/admin"), "{}", chromium.url());
        });
        let queues = blocking(|| chromium.text("#queues"));
        assert!(queues.contains("webhooks"), "{queues}");
        assert_eq!(blocking(|| chromium.text("#queues a.badge.bad")), "1");
        save_screenshot("admin-dashboard.png", &blocking(|| chromium.screenshot()));

        // The dead-letter page shows the group with its error.
        blocking(|| chromium.open(&app.url("/admin/dead"), "#groups"));
        let groups = blocking(|| chromium.text("#groups"));
        assert!(groups.contains(DELIVER), "{groups}");
        assert!(groups.contains("receiver answered 500"), "{groups}");
        save_screenshot("admin-dead.png", &blocking(|| chromium.screenshot()));

        // The receiver recovers; "Replay group" sends the canary, which now succeeds.
        receiver.answer(200);
        blocking(|| chromium.click("form.replay-group button", ".flash.ok"));
        let flash = blocking(|| chromium.text(".flash.ok"));
        assert!(flash.contains("Replaying 1 job"), "{flash}");
        let job = eventually(WITHIN, "the replayed delivery to complete", || async {
            let job = app
                .admin_get(&format!("/admin/dead-letters/{dead_id}"))
                .await;
            (job["state"] == "completed").then_some(job)
        })
        .await;
        assert_eq!(job["replays"], 1, "{job}");
        let answered: Vec<u16> = receiver.requests().iter().map(|r| r.answered).collect();
        assert_eq!(answered, [500, 500, 200]);

        // The trace page, found through its search box, tells the whole story.
        blocking(|| {
            chromium.open(&app.url("/admin/trace"), "input#correlation_id");
            chromium.submit("input#correlation_id", correlation_id, "#trace");
        });
        let tree = blocking(|| chromium.text("#trace"));
        save_screenshot("admin-trace.png", &blocking(|| chromium.screenshot()));
        for expected in ["POST /records", "record.created", DELIVER, "completed"] {
            assert!(
                tree.contains(expected),
                "{expected:?} is not in the trace:\n{tree}"
            );
        }
        let delivery = &tree[tree.find(DELIVER).unwrap()..];
        let statuses: Vec<&str> = delivery
            .match_indices("status ")
            .map(|(i, _)| &delivery[i + 7..i + 10])
            .collect();
        assert_eq!(statuses, ["500", "500", "200"], "{tree}");

        // The webhooks page lists the endpoint; its page shows the 24 h success rate and
        // the delivery log: every attempt with its status code.
        blocking(|| {
            chromium.open(&app.url("/admin/webhooks"), "#endpoints");
            chromium.click("#endpoints a", "#deliveries");
        });
        let rate = blocking(|| chromium.text("#success-rate"));
        assert!(rate.contains("33.3 %"), "1 of 3 attempts succeeded: {rate}");
        let log = blocking(|| chromium.text("#deliveries"));
        save_screenshot(
            "admin-webhook-endpoint.png",
            &blocking(|| chromium.screenshot()),
        );
        assert!(
            log.contains("record.created") && log.contains("succeeded"),
            "{log}"
        );
        let codes: Vec<&str> = log
            .lines()
            .filter_map(|l| {
                ["500", "200"]
                    .into_iter()
                    .find(|c| l.contains(&format!("· {c} ·")))
            })
            .collect();
        assert_eq!(codes, ["500", "500", "200"], "{log}");

        app.shutdown().await;
    }
}

/// Writes a screenshot into the test's scratch folder (`target/…/tmp`); the queues page also
/// goes to `KEEL_DASHBOARD_SCREENSHOT` when set (how `docs/admin-dashboard.png` is refreshed).
fn save_screenshot(name: &str, png: &[u8]) {
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name), png).unwrap();
    if name == "admin-dashboard.png"
        && let Some(path) = std::env::var_os("KEEL_DASHBOARD_SCREENSHOT")
    {
        std::fs::write(&path, png).unwrap();
    }
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap()
}

fn location(response: &Response) -> &str {
    response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn form(client: &Client, url: String, body: &str) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body.to_owned())
}

/// The value of the first `name="csrf"` field on a page.
fn csrf_of(page: &str) -> String {
    let start = page.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

both_backends!(dashboard_pages_need_a_session_or_the_token_and_changes_need_the_csrf_token);

async fn dashboard_pages_need_a_session_or_the_token_and_changes_need_the_csrf_token(db: TestDb) {
    let receiver = HttpReceiver::start().await;
    let app = spawn_app(&db, dying_fast()).await;
    let dead_id = a_dead_delivery(&app, &receiver, "dashboard-auth-1").await;
    let http = no_redirects();

    let anonymous = http.get(app.url("/admin")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&anonymous), "/admin/login");
    let bearer = http
        .get(app.url("/admin/dead"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::OK);
    let csp = bearer.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(bearer.text().await.unwrap().contains(DELIVER));
    // The webhook pages, on either backend: the endpoint's page shows its failed attempts.
    let endpoints = app
        .get("/webhook-endpoints")
        .await
        .json::<Value>()
        .await
        .unwrap();
    let endpoint_id = endpoints["items"][0]["id"].as_str().unwrap().to_owned();
    let anonymous = http
        .get(app.url(&format!("/admin/webhooks/{endpoint_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    let page = http
        .get(app.url(&format!("/admin/webhooks/{endpoint_id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("0.0 %") && page.contains("receiver answered 500"),
        "{page}"
    );
    let missing = http
        .get(app.url("/admin/webhooks/no-such-endpoint"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let wrong = http
        .get(app.url("/admin"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let overview = http
        .get(app.url("/admin"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), StatusCode::OK);
    let overview = overview.text().await.unwrap();
    assert!(
        overview.contains("Done / hour") && overview.contains("webhooks"),
        "{overview}"
    );
    // The last hour as a server-drawn chart beside the numbers: the dead delivery's two
    // failed attempts, from the database.
    assert!(
        overview.contains(
            "<svg class=\"activity\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" \
             aria-label=\"webhooks, last hour: 0 completed, 2 failed attempts\""
        ),
        "{overview}"
    );
    // One bar, or two when the attempts fell either side of a minute's turn.
    let bars = overview.matches("<rect class=\"failed\"").count();
    assert!((1..=2).contains(&bars), "{overview}");
    assert!(!overview.contains("<script"), "no JavaScript");

    let refused = form(&http, app.url("/admin/login"), "token=not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get(SET_COOKIE).is_none());
    let login = form(
        &http,
        app.url("/admin/login"),
        &format!("token={ADMIN_TOKEN}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&login), "/admin");
    let set_cookie = login.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains(ADMIN_TOKEN),
        "the token never goes into the cookie"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let job_url = app.url(&format!("/admin/jobs/{dead_id}"));
    let page = http
        .get(&job_url)
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains("receiver answered 500"), "{page}");
    let csrf = csrf_of(&page);

    // A forged form (no CSRF token) changes nothing.
    let forged = form(&http, format!("{job_url}/purge"), "confirm=yes")
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // Purge without the confirmation box changes nothing either, and says why.
    let unconfirmed = form(&http, format!("{job_url}/purge"), &format!("csrf={csrf}"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(unconfirmed.status(), StatusCode::SEE_OTHER);
    let page = http
        .get(&job_url)
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("tick the box to confirm"), "{page}");
    let job = app
        .admin_get(&format!("/admin/dead-letters/{dead_id}"))
        .await;
    assert_eq!(job["state"], "dead");

    let purged = form(
        &http,
        format!("{job_url}/purge"),
        &format!("csrf={csrf}&confirm=yes"),
    )
    .header(COOKIE, &cookie)
    .send()
    .await
    .unwrap();
    assert_eq!(purged.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&purged), "/admin/dead");
    let gone = app
        .client
        .get(app.url(&format!("/admin/dead-letters/{dead_id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);

    let logout = form(&http, app.url("/admin/logout"), &format!("csrf={csrf}"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::SEE_OTHER);
    assert!(
        logout.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = http
        .get(app.url("/admin"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::SEE_OTHER, "the session ended");

    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_the_dashboard_says_admin_is_disabled() {
    let db = TestDb::sqlite();
    let mail = tempfile::tempdir().unwrap();
    let text = AppOptions::default()
        .toml(db.url(), "127.0.0.1:0", mail.path())
        .replace(&format!("admin_token = {ADMIN_TOKEN:?}"), "");
    let settings = Settings::from_toml(&text, &Overrides::default()).unwrap();
    let application = Application::build_with_clock(
        settings,
        WorkerMode::None,
        true,
        app::wiring::system_clock(),
    )
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{}", application.port().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(application.run_until(async move {
        let _ = stopped.await;
    }));
    let http = no_redirects();

    for (method, path) in [
        ("GET", "/admin"),
        ("GET", "/admin/login"),
        ("GET", "/admin/dead"),
    ] {
        let response = http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .bearer_auth("anything")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method} {path}");
        let page = response.text().await.unwrap();
        assert!(page.contains("Admin is disabled"), "{page}");
    }
    let login = form(&http, format!("{base}/admin/login"), "token=")
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::FORBIDDEN);
    assert!(login.headers().get(SET_COOKIE).is_none());
    let api: Value = http
        .get(format!("{base}/admin/queues"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["error"]["code"], "admin_disabled");

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
