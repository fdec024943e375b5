//! The real app served in this process, and a webhook receiver beside it.
//!
//! The app is built from `keel.toml` text through `Settings::from_toml` and
//! `Application::build_with_clock`, listening on `127.0.0.1:0`, on a fresh database
//! (see [`crate::db`]). The receiver is an axum server on `127.0.0.1:0` that notes, for every
//! webhook, the record id in its body and the instant it arrived.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use app::application::{Application, WorkerMode};
use app::config::{Overrides, Settings};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A client for the app's API (cheap to clone: one connection pool).
#[derive(Debug, Clone)]
pub struct Api {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A pooled client without proxy, 30 s per request.
    pub client: reqwest::Client,
}

/// A running application.
#[derive(Debug)]
pub struct ServedApp {
    /// Its API.
    pub api: Api,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
    _mail_dir: tempfile::TempDir,
}

impl ServedApp {
    /// Builds and serves the app on `database_url`, every queue worked, private webhook
    /// targets allowed.
    ///
    /// # Errors
    /// Fails when the configuration is refused or the app does not start.
    pub async fn start(database_url: &str) -> anyhow::Result<Self> {
        Self::start_with(database_url, "").await
    }

    /// As [`ServedApp::start`], with more `keel.toml` appended (e.g. `[broker]`, `[modules]`).
    ///
    /// # Errors
    /// As [`ServedApp::start`].
    pub async fn start_with(database_url: &str, extra_toml: &str) -> anyhow::Result<Self> {
        let mail_dir = tempfile::Builder::new()
            .prefix("keel-bench-mail-")
            .tempdir()?;
        let text = format!(
            "[database]\nurl = {database_url:?}\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
             [webhooks]\nallow_private_targets = true\n\n[smtp]\nmail_dir = {:?}\n",
            mail_dir.path().display().to_string()
        );
        let text = format!("{text}\n{extra_toml}");
        let settings = Settings::from_toml(&text, &Overrides::default())
            .with_context(|| format!("the bench configuration is refused:\n{text}"))?;
        let application = Application::build_with_clock(
            settings,
            WorkerMode::All,
            true,
            app::wiring::system_clock(),
        )
        .await
        .context("building the app")?;
        let port = application.port().context("the app serves HTTP")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(application.run_until(async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()?;
        Ok(Self {
            api: Api {
                base: format!("http://127.0.0.1:{port}"),
                client,
            },
            stop,
            task,
            _mail_dir: mail_dir,
        })
    }

    /// Stops the app and waits for it (in-flight jobs finish or are handed back).
    ///
    /// # Errors
    /// Fails when the app failed while serving.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

impl Api {
    /// `POST /records`; the new record's id when the app answered 201.
    ///
    /// # Errors
    /// Fails on a transport error or any other status.
    pub async fn create_record(&self, i: usize) -> anyhow::Result<String> {
        let response = self
            .client
            .post(format!("{}/records", self.base))
            .json(&serde_json::json!({
                "title": format!("bench record {i}"),
                "owner_email": "bench@example.com",
            }))
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        anyhow::ensure!(
            status.as_u16() == 201,
            "POST /records answered {status}: {body}"
        );
        body["id"]
            .as_str()
            .map(str::to_owned)
            .context("no id in the answer")
    }

    /// Subscribes `url` to `record.created`.
    ///
    /// # Errors
    /// Fails unless the app answers 201.
    pub async fn subscribe(&self, url: &str) -> anyhow::Result<()> {
        let response = self
            .client
            .post(format!("{}/webhook-endpoints", self.base))
            .json(&serde_json::json!({ "url": url, "events": ["record.created"] }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().as_u16() == 201,
            "POST /webhook-endpoints answered {}",
            response.status()
        );
        Ok(())
    }
}

/// Webhooks received so far: (record id, arrival).
type Arrivals = Arc<Mutex<Vec<(String, Instant)>>>;

/// An HTTP server that answers 200 to every webhook and notes when each one arrived.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Where to subscribe it.
    pub url: String,
    arrivals: Arrivals,
}

impl Receiver {
    /// Starts it on `127.0.0.1:0`.
    ///
    /// # Errors
    /// Fails when it cannot bind.
    pub async fn start() -> anyhow::Result<Self> {
        let arrivals: Arrivals = Arc::default();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let router = axum::Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&arrivals));
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self {
            url: format!("http://{address}/hooks"),
            arrivals,
        })
    }

    /// Every webhook so far, taken out (the list starts empty again).
    pub fn take(&self) -> Vec<(String, Instant)> {
        std::mem::take(&mut *lock(&self.arrivals))
    }

    /// How many webhooks are waiting to be taken.
    pub fn pending(&self) -> usize {
        lock(&self.arrivals).len()
    }
}

async fn receive(State(arrivals): State<Arrivals>, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["data"]["record_id"].as_str().map(str::to_owned));
    if let Some(id) = id {
        lock(&arrivals).push((id, at));
    }
    StatusCode::OK
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
