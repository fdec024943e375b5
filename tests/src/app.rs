//! `spawn_app`: the real `keel` application, started in the test process on a random port
//! against a [`TestDb`], with fast queue schedules — and `KeelProcess`, the real `keel`
//! binary as a child process, for the tests that must kill it.
//!
//! Everything goes through the public surface a user has: `keel.toml` text parsed by
//! `Settings::from_toml`, `Application::build_with_clock`, and the HTTP API.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use app::application::{Application, WorkerMode};
use app::config::{Overrides, Settings};
use events::Clock;
use reqwest::{Client, Response};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::db::TestDb;
use crate::poll::eventually;

/// The admin token every test app is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The queues `keel` has by default, each given a fast schedule by [`AppOptions`].
const QUEUES: [&str; 4] = ["events", "webhooks", "emails", "imports"];

/// How a test app is configured. `Default` is what most chain tests want: private targets
/// allowed (receivers listen on 127.0.0.1), retries after 50 ms without jitter, `.eml`
/// files instead of SMTP.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// `[webhooks] allow_private_targets`.
    pub allow_private_targets: bool,
    /// `[smtp] url`, e.g. an [`crate::receivers::SmtpReceiver`]'s.
    pub smtp_url: Option<String>,
    /// `max_attempts` of every queue (`None`: keel's default, 6).
    pub max_attempts: Option<u32>,
    /// `backoff` of every queue.
    pub backoff: Vec<String>,
    /// `[webhooks] request_timeout`.
    pub request_timeout: String,
    /// `[http] max_body`, e.g. `"4KiB"` (`None`: keel's default).
    pub max_body: Option<String>,
    /// More TOML, appended as is (tables the options above do not write).
    pub extra_toml: String,
    /// More keys of `[webhooks]`, e.g. `disable_after = "1s"`.
    pub webhooks_toml: String,
    /// The clock; `None` is the wall clock.
    pub clock: Option<Arc<dyn Clock>>,
    /// Which queues the app works.
    pub workers: WorkerMode,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            allow_private_targets: true,
            smtp_url: None,
            max_attempts: None,
            backoff: vec!["50ms".to_owned()],
            request_timeout: "5s".to_owned(),
            max_body: None,
            extra_toml: String::new(),
            webhooks_toml: String::new(),
            clock: None,
            workers: WorkerMode::All,
        }
    }
}

impl AppOptions {
    /// The `keel.toml` these options stand for, on `database_url`, listening on `listen`.
    pub fn toml(&self, database_url: &str, listen: &str, mail_dir: &Path) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "[database]\nurl = {database_url:?}\n");
        let _ = writeln!(
            t,
            "[http]\nlisten = {listen:?}\nadmin_token = {ADMIN_TOKEN:?}"
        );
        if let Some(max_body) = &self.max_body {
            let _ = writeln!(t, "max_body = {max_body:?}");
        }
        for queue in QUEUES {
            let _ = writeln!(t, "\n[queues.{queue}]\njitter = 0.0");
            let _ = writeln!(t, "backoff = {:?}", self.backoff);
            if let Some(n) = self.max_attempts {
                let _ = writeln!(t, "max_attempts = {n}");
            }
        }
        let _ = writeln!(
            t,
            "\n[workers]\nheartbeat_interval = \"200ms\"\ndead_after = \"1s\"\npoll_interval = \"250ms\"\nshutdown_grace = \"500ms\""
        );
        let _ = writeln!(
            t,
            "\n[webhooks]\nallow_private_targets = {}\nrequest_timeout = {:?}",
            self.allow_private_targets, self.request_timeout
        );
        t.push_str(&self.webhooks_toml);
        let _ = writeln!(
            t,
            "\n[smtp]\nmail_dir = {:?}",
            mail_dir.display().to_string()
        );
        if let Some(url) = &self.smtp_url {
            let _ = writeln!(t, "url = {url:?}");
        }
        t.push('\n');
        t.push_str(&self.extra_toml);
        t
    }
}

/// A running application and a client for its API.
#[derive(Debug)]
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A client without timeouts surprises: 10 s per request.
    pub client: Client,
    runtime: runtime::Runtime,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _mail_dir: TempDir,
}

/// Starts the application on `db` with `options`; panics with the reason when it cannot.
pub async fn spawn_app(db: &TestDb, options: AppOptions) -> TestApp {
    let mail_dir = tempfile::Builder::new()
        .prefix("keel-mail-")
        .tempdir()
        .expect("a temporary mail folder");
    let text = options.toml(db.url(), "127.0.0.1:0", mail_dir.path());
    let settings = Settings::from_toml(&text, &Overrides::default())
        .unwrap_or_else(|e| panic!("the test configuration is refused: {e}\n{text}"));
    let clock = options
        .clock
        .clone()
        .unwrap_or_else(app::wiring::system_clock);
    let application = Application::build_with_clock(settings, options.workers.clone(), true, clock)
        .await
        .unwrap_or_else(|e| panic!("the application does not start: {e:#}"));
    let port = application.port().expect("the test app serves HTTP");
    let runtime = application.runtime().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(application.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        client: client(),
        runtime,
        stop: Some(stop),
        task: Some(task),
        _mail_dir: mail_dir,
    }
}

/// The client tests talk to keel with.
pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("a reqwest client")
}

impl TestApp {
    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The wired runtime, for what only operators see.
    pub fn runtime(&self) -> &runtime::Runtime {
        &self.runtime
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path` with the admin token, expecting 200 and JSON.
    pub async fn admin_get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        expect_json(response, 200).await
    }

    /// `POST path` with the admin token, expecting 200 and JSON.
    pub async fn admin_post(&self, path: &str) -> Value {
        let response = self
            .client
            .post(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        expect_json(response, 200).await
    }

    /// Creates a webhook endpoint for `events` at `url`; returns its id and secret.
    pub async fn subscribe(&self, url: &str, events: &[&str]) -> (String, String) {
        let response = self
            .post(
                "/webhook-endpoints",
                &serde_json::json!({ "url": url, "events": events }),
            )
            .await;
        let body = expect_json(response, 201).await;
        (
            body["id"].as_str().expect("an endpoint id").to_owned(),
            body["secret"].as_str().expect("a secret").to_owned(),
        )
    }

    /// Creates a record; returns the whole answer.
    pub async fn create_record(&self, title: &str, owner_email: &str) -> Value {
        let response = self
            .post(
                "/records",
                &serde_json::json!({ "title": title, "owner_email": owner_email }),
            )
            .await;
        expect_json(response, 201).await
    }

    /// Waits until no job is ready, running or retrying on any queue.
    pub async fn settle(&self, within: Duration) {
        eventually(within, "every queue to drain", || async {
            let stats = self.admin_get("/admin/queues").await;
            let busy = stats["queues"]
                .as_array()
                .expect("a list of queues")
                .iter()
                .any(|q| q["ready"] != 0 || q["running"] != 0 || q["retrying"] != 0);
            (!busy).then_some(())
        })
        .await;
    }

    /// Stops taking requests and work, lets in-flight work finish, and waits for the app.
    pub async fn shutdown(mut self) {
        self.stop_now().await;
    }

    async fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(15), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => panic!("the application failed: {e:#}"),
                Ok(Err(e)) => panic!("the application task failed: {e}"),
                Err(_) => panic!("the application did not stop within 15 s"),
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // A test that panicked never called `shutdown`: stop the app anyway.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Reads a JSON answer, asserting its status (the body is shown when it differs).
pub async fn expect_json(response: Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let url = response.url().clone();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(got, status, "{url} answered {got}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {text}"))
}

/// Asserts a response is the error contract `{"error": {"code", "message"}}` with `status`
/// and `code`; returns the message.
pub async fn expect_error(response: Response, status: u16, code: &str) -> String {
    let body = expect_json(response, status).await;
    assert_eq!(body["error"]["code"], code, "error code of {body}");
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("an error message in {body}"));
    assert!(!message.is_empty(), "an empty error message in {body}");
    message.to_owned()
}

/// The real `keel` binary, running `keel serve` as a child process — for tests that must
/// kill it with SIGKILL.
#[derive(Debug)]
pub struct KeelProcess {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    child: tokio::process::Child,
    config: std::path::PathBuf,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _dir: TempDir,
}

impl KeelProcess {
    /// Starts `keel serve` on `db` with `options` (a config file in a folder of its own, which
    /// is also its working directory) and waits until it listens.
    ///
    /// `binary` is the `keel` executable: integration tests of this package pass
    /// `env!("CARGO_BIN_EXE_keel-under-test")`, the real `app/src/main.rs` that cargo builds
    /// for them (cargo tells only integration tests where a package's binaries are).
    pub async fn start(binary: &Path, db: &TestDb, options: &AppOptions) -> Self {
        Self::start_with(binary, db, options, &["serve"]).await
    }

    /// As [`KeelProcess::start`], running `keel <args…>` (e.g. `serve --modules records`, or
    /// `work --queues webhooks`). A `serve` is waited for until it listens; anything else
    /// until it logged that its workers started (`base` is then empty).
    pub async fn start_with(
        binary: &Path,
        db: &TestDb,
        options: &AppOptions,
        args: &[&str],
    ) -> Self {
        let serving = args.first() == Some(&"serve");
        let dir = tempfile::Builder::new()
            .prefix("keel-process-")
            .tempdir()
            .expect("a temporary folder for keel");
        let config = dir.path().join("keel.toml");
        std::fs::write(
            &config,
            options.toml(db.url(), "127.0.0.1:0", &dir.path().join("mail")),
        )
        .expect("writing keel.toml");
        let mut child = tokio::process::Command::new(binary)
            .arg("--config")
            .arg(&config)
            .args(args)
            .current_dir(dir.path())
            .env("KEEL_LOG_FORMAT", "json")
            .env("RUST_LOG", "info,sqlx=warn")
            .env_remove("KEEL_DATABASE_URL")
            .env_remove("KEEL_LISTEN")
            .env_remove("KEEL_ADMIN_TOKEN")
            .env_remove("KEEL_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stderr = child.stderr.take().expect("keel's stderr is piped");
        let (found, address) = oneshot::channel::<String>();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = logs.clone();
        // Read the logs until "keel is listening", then keep draining them (and keeping
        // them, for tests that read them) so keel never blocks on a full pipe.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut found = Some(found);
            while let Ok(Some(line)) = lines.next_line().await {
                kept.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line.clone());
                let ready = if serving {
                    line.contains("keel is listening")
                } else {
                    line.contains("workers started")
                };
                if let Some(tx) = found.take_if(|_| ready) {
                    let address = serde_json::from_str::<Value>(&line)
                        .ok()
                        .and_then(|v| v["address"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    let _ = tx.send(address);
                } else if line.contains("\"ERROR\"") {
                    eprintln!("keel: {line}");
                }
            }
        });
        let address = tokio::time::timeout(Duration::from_secs(30), address)
            .await
            .expect("keel did not report its address within 30 s")
            .expect("keel exited before listening");
        Self {
            base: if serving {
                format!("http://{address}")
            } else {
                String::new()
            },
            child,
            config,
            logs,
            _dir: dir,
        }
    }

    /// Its process id (`None` once it exited).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The `keel.toml` it runs with, for CLI commands against the same database.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Every log line it wrote so far (JSON, one object a line).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: no shutdown, no goodbye; waits until the process is gone.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("sending SIGKILL to keel");
        let status = self.child.wait().await.expect("waiting for keel to die");
        assert!(!status.success(), "a killed keel exits unsuccessfully");
    }
}
