//! Real receivers in the test process: an HTTP server that records every request and answers
//! what the test programs, and a small SMTP server that accepts and records every message.
//!
//! Both listen on `127.0.0.1:0`, so tests running in parallel never share one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::poll::eventually;

/// One request the HTTP receiver got.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// Its method.
    pub method: Method,
    /// Its path and query.
    pub uri: Uri,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, byte for byte.
    pub body: Bytes,
    /// The status the receiver answered.
    pub answered: u16,
    /// When it arrived (this process's monotonic clock).
    pub at: std::time::Instant,
    /// How many requests (this one included) the receiver was handling when it arrived.
    pub concurrent: usize,
}

impl ReceivedRequest {
    /// A header's value as text (`None` when absent or not text).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

#[derive(Debug, Default)]
struct Script {
    /// Statuses (and a `Retry-After` to send with them) to answer next, one per request,
    /// before falling back to `then`.
    queued: VecDeque<(u16, Option<String>)>,
    /// What to answer when `queued` is empty.
    then: u16,
    /// How long each answer takes.
    delay: Duration,
}

#[derive(Debug)]
struct Shared {
    requests: Mutex<Vec<ReceivedRequest>>,
    script: Mutex<Script>,
    in_flight: std::sync::atomic::AtomicUsize,
}

/// An HTTP server that records every request and answers a programmable status.
#[derive(Debug, Clone)]
pub struct HttpReceiver {
    base: String,
    shared: Arc<Shared>,
}

impl HttpReceiver {
    /// Starts a receiver that answers 200 to everything.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// A port where nothing listens (yet): a receiver that is down until
    /// [`HttpReceiver::start_on`] starts one there.
    pub async fn down() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a port to free");
        listener.local_addr().expect("its address").port()
    }

    /// Starts a receiver on `port` (0: any free port) that answers 200 to everything.
    pub async fn start_on(port: u16) -> Self {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(Script {
                queued: VecDeque::new(),
                then: 200,
                delay: Duration::ZERO,
            }),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        });
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("binding the HTTP receiver");
        let address = listener.local_addr().expect("the receiver's address");
        let app = Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base: format!("http://{address}"),
            shared,
        }
    }

    /// The receiver's URL for `path` (e.g. `/hooks`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the receiver's URL")
    }

    /// Answers `status` to every request from now on.
    pub fn answer(&self, status: u16) {
        let mut script = lock(&self.shared.script);
        script.queued.clear();
        script.then = status;
    }

    /// Answers `status` to the next `times` requests, then what it answered before.
    pub fn answer_next(&self, times: usize, status: u16) {
        lock(&self.shared.script)
            .queued
            .extend(std::iter::repeat_n((status, None), times));
    }

    /// Answers `status` with `Retry-After: <retry_after>` to the next `times` requests.
    pub fn answer_next_retry_after(&self, times: usize, status: u16, retry_after: &str) {
        lock(&self.shared.script).queued.extend(std::iter::repeat_n(
            (status, Some(retry_after.to_owned())),
            times,
        ));
    }

    /// Takes `delay` to answer each request from now on (a slow receiver).
    pub fn delay(&self, delay: Duration) {
        lock(&self.shared.script).delay = delay;
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Waits until at least `n` requests arrived; returns all of them.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<ReceivedRequest> {
        eventually(within, &format!("{n} request(s) at {}", self.base), || {
            let requests = self.requests();
            async move { (requests.len() >= n).then_some(requests) }
        })
        .await
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use std::sync::atomic::Ordering;
    let ((answered, retry_after), delay) = {
        let mut script = lock(&shared.script);
        let then = script.then;
        (
            script.queued.pop_front().unwrap_or((then, None)),
            script.delay,
        )
    };
    let concurrent = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    lock(&shared.requests).push(ReceivedRequest {
        method,
        uri,
        headers,
        body,
        answered,
        at: std::time::Instant::now(),
        concurrent,
    });
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    let status = StatusCode::from_u16(answered).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = axum::response::IntoResponse::into_response(status);
    if let Some(value) = retry_after
        && let Ok(value) = axum::http::HeaderValue::from_str(&value)
    {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One message the SMTP receiver accepted.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message as sent after `DATA`, dot-unstuffed, lines joined with `\r\n`.
    pub data: String,
}

impl ReceivedMail {
    /// The value of the first header called `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push(' ');
                    v.push_str(line.trim());
                    continue;
                }
                break;
            }
            if let Some((key, rest)) = line.split_once(':')
                && key.eq_ignore_ascii_case(name)
            {
                value = Some(rest.trim().to_owned());
            }
        }
        value
    }

    /// The body: everything after the header block.
    pub fn body(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }
}

/// A real SMTP server (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT with their reply
/// codes) that accepts every message and records it.
#[derive(Debug, Clone)]
pub struct SmtpReceiver {
    port: u16,
    mails: Arc<Mutex<Vec<ReceivedMail>>>,
}

impl SmtpReceiver {
    /// Starts the server.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the SMTP receiver");
        let port = listener.local_addr().expect("the SMTP address").port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&mails);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = Arc::clone(&sink);
                tokio::spawn(async move {
                    let _ = session(stream, sink).await;
                });
            }
        });
        Self { port, mails }
    }

    /// `smtp://127.0.0.1:<port>`, for `[smtp] url`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message so far, oldest first.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        lock(&self.mails).clone()
    }

    /// Waits until at least `n` messages arrived; returns all of them.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<ReceivedMail> {
        eventually(within, &format!("{n} mail(s) over SMTP"), || {
            let mails = self.mails();
            async move { (mails.len() >= n).then_some(mails) }
        })
        .await
    }
}

/// One SMTP conversation (RFC 5321, the subset a submission client uses).
async fn session(stream: TcpStream, sink: Arc<Mutex<Vec<ReceivedMail>>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 keel-test ESMTP ready\r\n").await?;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or_default();
        let reply: &[u8] = match verb {
            "EHLO" => b"250-keel-test greets you\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n",
            "HELO" => b"250 keel-test\r\n",
            "MAIL" if upper.starts_with("MAIL FROM:") => {
                from = Some(address_of(&line["MAIL FROM:".len()..]));
                to.clear();
                b"250 2.1.0 Ok\r\n"
            }
            "RCPT" if upper.starts_with("RCPT TO:") => {
                if from.is_none() {
                    b"503 5.5.1 MAIL first\r\n"
                } else {
                    to.push(address_of(&line["RCPT TO:".len()..]));
                    b"250 2.1.5 Ok\r\n"
                }
            }
            "DATA" => {
                if to.is_empty() {
                    b"503 5.5.1 RCPT first\r\n"
                } else {
                    write
                        .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    let mut data: Vec<String> = Vec::new();
                    loop {
                        let Some(l) = lines.next_line().await? else {
                            return Ok(());
                        };
                        if l == "." {
                            break;
                        }
                        data.push(l.strip_prefix('.').map_or(l.clone(), str::to_owned));
                    }
                    lock(&sink).push(ReceivedMail {
                        from: from.take().unwrap_or_default(),
                        to: std::mem::take(&mut to),
                        data: data.join("\r\n"),
                    });
                    b"250 2.0.0 Ok: queued\r\n"
                }
            }
            "RSET" => {
                from = None;
                to.clear();
                b"250 2.0.0 Ok\r\n"
            }
            "NOOP" => b"250 2.0.0 Ok\r\n",
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 5.5.2 Command not recognized\r\n",
        };
        write.write_all(reply).await?;
    }
    Ok(())
}

/// `<a@b>` (with optional parameters after it) → `a@b`.
fn address_of(rest: &str) -> String {
    let rest = rest.trim();
    match (rest.find('<'), rest.find('>')) {
        (Some(open), Some(close)) if open < close => rest[open + 1..close].to_owned(),
        _ => rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}
