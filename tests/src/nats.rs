//! A real NATS server with JetStream for a test: `nats-server -a 127.0.0.1 -p PORT -js -sd
//! DIR` on a free port with a store of its own, which the test can stop and start again (on
//! the same port and store) to see what Keel does while the broker is away.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;

use crate::poll::eventually;

/// A `nats-server` child process.
#[derive(Debug)]
pub struct NatsServer {
    /// The port it listens on (the same after [`NatsServer::restart`]).
    pub port: u16,
    store: TempDir,
    child: Option<tokio::process::Child>,
}

impl NatsServer {
    /// Starts a server on a free port and waits until it accepts connections.
    pub async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port for nats-server");
        let store = tempfile::Builder::new()
            .prefix("keel-nats-")
            .tempdir()
            .expect("a store folder for nats-server");
        let mut server = Self {
            port,
            store,
            child: None,
        };
        server.restart().await;
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The folder JetStream stores the stream in.
    pub fn store(&self) -> PathBuf {
        self.store.path().to_owned()
    }

    /// Starts the server again (after [`NatsServer::stop`]) on the same port and store.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let child = tokio::process::Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nats-server (Debian package `nats-server`): {e}")
            });
        self.child = Some(child);
        let port = self.port;
        eventually(
            Duration::from_secs(20),
            "nats-server to accept connections",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }

    /// Stops the server (SIGKILL: the broker is simply gone) and waits until it is.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// The stream's messages on `subject_filter`, in stream order: (sequence, subject,
    /// `Nats-Msg-Id`, body), read with an ephemeral ordered consumer.
    pub async fn messages(&self, stream: &str) -> Vec<(u64, String, String, serde_json::Value)> {
        use futures::StreamExt;
        let client = async_nats::connect(self.url())
            .await
            .expect("connecting to nats");
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(stream).await.expect("the stream exists");
        let last = stream
            .info()
            .await
            .expect("stream info")
            .state
            .last_sequence;
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await
            .expect("an ordered consumer");
        let mut out = Vec::new();
        if last == 0 {
            return out;
        }
        let mut messages = consumer.messages().await.expect("messages");
        while let Some(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .ok()
            .flatten()
        {
            let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
            let id = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            let body = serde_json::from_slice(&m.payload).unwrap_or(serde_json::Value::Null);
            out.push((seq, m.subject.to_string(), id, body));
            if seq >= last {
                break;
            }
        }
        out
    }
}
