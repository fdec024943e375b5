//! The running application: bind, migrate, serve, work — and stop cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use events::Clock;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::http::{self, EdgeState};
use crate::wiring::{self, Wired};

/// Which queues this process works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerMode {
    /// Every configured queue.
    All,
    /// None: API only.
    None,
    /// Only these.
    Queues(Vec<String>),
}

/// A built application, bound to its port, ready to run.
#[derive(Debug)]
pub struct Application {
    wired: Wired,
    listener: Option<TcpListener>,
    address: Option<SocketAddr>,
    workers: Option<runtime::Workers>,
    settings: Settings,
}

impl Application {
    /// Wires, migrates, binds (port 0 picks a free one) and starts workers, on the wall clock.
    ///
    /// # Errors
    /// Fails when the database, the migrations, the port or the wiring fail.
    pub async fn build(
        settings: Settings,
        workers: WorkerMode,
        serve_http: bool,
    ) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, workers, serve_http, wiring::system_clock()).await
    }

    /// As [`Application::build`], with an injected clock (tests drive time with it).
    ///
    /// # Errors
    /// As [`Application::build`].
    pub async fn build_with_clock(
        mut settings: Settings,
        workers: WorkerMode,
        serve_http: bool,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let worked: Vec<String> = match &workers {
            WorkerMode::All => settings.runtime.queues.keys().cloned().collect(),
            WorkerMode::None => Vec::new(),
            WorkerMode::Queues(q) => q.clone(),
        };
        if let Some(warning) = settings.fit_pool(&worked, serve_http) {
            tracing::warn!("{warning}");
        }
        let wired = wiring::wire(&settings, clock).await?;
        wired.migrate().await.context("applying migrations")?;
        let (listener, address) = if serve_http {
            let listener = TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("binding {}", settings.listen))?;
            let address = listener.local_addr().context("reading the bound address")?;
            (Some(listener), Some(address))
        } else {
            (None, None)
        };
        let queues = match workers {
            WorkerMode::All => Some(None),
            WorkerMode::None => None,
            WorkerMode::Queues(q) => Some(Some(q)),
        };
        let workers = match queues {
            Some(q) => Some(
                wired
                    .runtime
                    .start_workers(q)
                    .await
                    .context("starting workers")?,
            ),
            None => None,
        };
        Ok(Self {
            wired,
            listener,
            address,
            workers,
            settings,
        })
    }

    /// The address the API listens on (`None` for a workers-only process).
    pub fn address(&self) -> String {
        self.address
            .map_or_else(|| "(no HTTP)".to_owned(), |a| a.to_string())
    }

    /// The bound port, when serving HTTP.
    pub fn port(&self) -> Option<u16> {
        self.address.map(|a| a.port())
    }

    /// The wired runtime (tests inspect queues through it).
    pub fn runtime(&self) -> &runtime::Runtime {
        &self.wired.runtime
    }

    /// Serves until `shutdown` resolves, then stops taking requests and work, finishes or
    /// hands back in-flight jobs, and returns.
    ///
    /// # Errors
    /// Fails when the server fails.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // One signal for both halves: HTTP stops accepting and workers stop claiming at the
        // same moment, and neither waits for the other.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let workers = self.workers.take().map(|workers| {
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let _ = stopped.wait_for(|s| *s).await;
                workers.shutdown().await;
            })
        });
        let requests = runtime::request_log::RequestLog::start(self.wired.runtime.db().clone());
        let result = match self.listener.take() {
            Some(listener) => {
                let routes = self
                    .wired
                    .modules
                    .iter_mut()
                    .map(|m| std::mem::take(&mut m.routes))
                    .collect();
                let state = EdgeState {
                    runtime: self.wired.runtime.clone(),
                    admin_token: self.settings.admin_token.as_deref().map(Arc::from),
                    requests: requests.clone(),
                    modules: self.settings.modules.enabled.clone().into(),
                };
                let router = http::router(routes, state, self.settings.max_body);
                let mut on_stop = stopped.clone();
                let server = axum::serve(listener, router).with_graceful_shutdown(async move {
                    let _ = on_stop.wait_for(|s| *s).await;
                });
                // In-flight requests get the workers' grace period and a little more; a slow
                // upload or an idle keep-alive connection does not hold the process hostage.
                let drain = self.settings.runtime.shutdown_grace + Duration::from_secs(5);
                let mut deadline = stopped.clone();
                tokio::select! {
                    r = server.into_future() => r.context("serving HTTP"),
                    () = async move {
                        let _ = deadline.wait_for(|s| *s).await;
                        tokio::time::sleep(drain).await;
                    } => {
                        tracing::warn!("HTTP connections still open after the grace period; closing them");
                        Ok(())
                    }
                }
            }
            None => {
                let mut s = stopped.clone();
                let _ = s.wait_for(|s| *s).await;
                Ok(())
            }
        };
        tracing::info!("shutting down");
        if let Some(workers) = workers {
            let _ = workers.await;
        }
        requests.close().await;
        self.wired.runtime.db().pool().close().await;
        result
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
