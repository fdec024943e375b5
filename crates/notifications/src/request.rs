//! What goes on the wire and what comes back: the guarded client, the body, the signed
//! headers with trace context, the kept part of an answer, a failure in words, and a
//! receiver's `Retry-After`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::ssrf::{self, GuardedResolver};
use crate::{NotificationsConfig, NotificationsError};

/// How much of a receiver's answer is kept with the attempt.
pub(crate) const RESPONSE_SNIPPET_BYTES: usize = 2048;

/// Builds the webhook client: a timeout per attempt, no redirects (following one would
/// bypass the SSRF guard), no proxies, pooled connections, and the guarded resolver unless
/// private targets are allowed.
pub(crate) fn client(config: &NotificationsConfig) -> Result<reqwest::Client, NotificationsError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("keel-webhooks/", env!("CARGO_PKG_VERSION")))
        .timeout(config.request_timeout)
        .connect_timeout(config.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(90));
    if !config.allow_private_targets {
        builder = builder.dns_resolver(GuardedResolver);
    }
    builder.build().map_err(NotificationsError::HttpClient)
}

/// The JSON body: `{"type", "timestamp", "data"}`.
pub(crate) fn body(event: &str, occurred_at: DateTime<Utc>, data: Map<String, Value>) -> Vec<u8> {
    let body = json!({
        "type": event,
        "timestamp": occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    });
    body.to_string().into_bytes()
}

/// The endpoint's custom headers, then the Standard Webhooks headers plus correlation and
/// W3C trace context — set last, so a custom header can never replace a signed one.
pub(crate) fn headers(
    msg_id: &str,
    timestamp: i64,
    signature: &str,
    correlation_id: &str,
    traceparent: &str,
    custom: &BTreeMap<String, String>,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in custom {
        // Validated when stored; one that no longer parses is left out.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut put = |name: &'static str, value: &str| {
        // Every value here is ASCII we built ourselves, except a caller's correlation id,
        // which `CorrelationId::parse` limits to visible ASCII; skip one that is not.
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    put("webhook-id", msg_id);
    put("webhook-timestamp", &timestamp.to_string());
    put("webhook-signature", signature);
    put("x-correlation-id", correlation_id);
    put("traceparent", traceparent);
    headers
}

/// Without trace export, `00-<trace id>-<span id>-01`: the trace id is the correlation id's
/// UUID when it is one, else the first 16 bytes of its SHA-256, so a receiver's traces join
/// Keel's. With trace export the delivery span's own traceparent is sent instead.
pub(crate) fn traceparent(correlation_id: &str, span_id: u64) -> String {
    let trace_id: [u8; 16] = match Uuid::parse_str(correlation_id) {
        Ok(uuid) if !uuid.is_nil() => *uuid.as_bytes(),
        _ => {
            let digest = Sha256::digest(correlation_id.as_bytes());
            let mut id = [0u8; 16];
            id.copy_from_slice(&digest[..16]);
            id
        }
    };
    let hex: String = trace_id.iter().map(|b| format!("{b:02x}")).collect();
    format!("00-{hex}-{span_id:016x}-01")
}

/// A random, non-zero span id (zero is invalid in W3C trace context).
pub(crate) fn span_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

/// The URL as recorded with attempts: without its query string, which may carry a token.
pub(crate) fn without_query(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// The first 2 KB of the response body as lossy UTF-8; the rest is never read.
pub(crate) async fn snippet(mut response: reqwest::Response) -> String {
    let mut kept: Vec<u8> = Vec::new();
    while kept.len() < RESPONSE_SNIPPET_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    kept.truncate(RESPONSE_SNIPPET_BYTES);
    String::from_utf8_lossy(&kept).into_owned()
}

/// Why a request got no answer, in words that carry no URL (it may hold a token).
pub(crate) fn transport_failure(err: &reqwest::Error, timeout: Duration) -> String {
    if let Some(refusal) = ssrf::find_refusal(err) {
        return refusal.to_string();
    }
    if err.is_timeout() {
        return format!("timed out after {}", human(timeout));
    }
    let mut io_kind = None;
    let mut innermost = None;
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        innermost = Some(e.to_string());
        source = e.source();
    }
    match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_owned(),
        Some(std::io::ErrorKind::ConnectionReset) => "connection reset by the receiver".to_owned(),
        Some(std::io::ErrorKind::TimedOut) => format!("timed out after {}", human(timeout)),
        _ => {
            let what = if err.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            match innermost {
                Some(cause) => format!("{what}: {cause}"),
                None => what.to_owned(),
            }
        }
    }
}

/// `10s`, `1.5s` or `250ms`, as durations are written in `keel.toml`.
pub(crate) fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// How long a receiver answering 429 or 503 asks to be left alone: `Retry-After` as seconds
/// or as an HTTP date (read against `now`); `None` when absent or unreadable.
pub(crate) fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let raw = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = raw.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(raw).ok()?.with_timezone(&Utc);
    (at - now).to_std().ok().or(Some(Duration::ZERO))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_type_timestamp_and_data() {
        let mut data = Map::new();
        data.insert("record_id".into(), json!("r1"));
        let body = body(
            "record.created",
            DateTime::from_timestamp_millis(1_764_150_000_123).unwrap(),
            data,
        );
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            parsed,
            json!({"type": "record.created", "timestamp": "2025-11-26T09:40:00.123Z", "data": {"record_id": "r1"}})
        );
    }

    #[test]
    fn traceparent_reuses_a_uuid_correlation_id_and_hashes_any_other() {
        let uuid = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(
            traceparent(uuid, 0xabc),
            "00-0193a1b2c3d47e5f8a9b0c1d2e3f4a5b-0000000000000abc-01"
        );
        let other = traceparent("order-42", 1);
        let digest = Sha256::digest(b"order-42");
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(other, format!("00-{hex}-0000000000000001-01"));
        assert_ne!(span_id(), 0);
    }

    #[test]
    fn recorded_urls_drop_the_query_string() {
        let url = Url::parse("https://a.example/hook?token=secret#frag").unwrap();
        assert_eq!(without_query(&url), "https://a.example/hook");
    }

    #[test]
    fn durations_are_written_as_in_the_config() {
        assert_eq!(human(Duration::from_secs(10)), "10s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_a_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert("retry-after", HeaderValue::from_static("120"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(120)));
        headers.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:29:30 GMT"),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(90)));
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, now), None);
    }

    #[test]
    fn custom_headers_go_under_the_signed_ones() {
        let custom: BTreeMap<String, String> = [
            ("x-tenant".to_owned(), "acme".to_owned()),
            ("webhook-id".to_owned(), "forged".to_owned()),
        ]
        .into();
        let headers = headers("msg_1", 1, "v1,sig", "c", "00-tp", &custom);
        assert_eq!(headers["x-tenant"], "acme");
        assert_eq!(headers["webhook-id"], "msg_1");
        assert_eq!(headers.get_all("webhook-id").iter().count(), 1);
    }
}
