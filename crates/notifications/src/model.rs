//! Webhook endpoints and the values they are made of, each valid by construction.

use std::fmt;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use events::{Event, ImportCompleted, InvoiceIssued, InvoicePaid, RecordCreated};
use reqwest::Url;
use uuid::Uuid;

use crate::signing::{self, InvalidSecret, SECRET_PREFIX};
use crate::ssrf;

/// The host of a parsed URL, with IP literals decoded (the URL parser has already normalized
/// forms like `http://2130706433/` to `127.0.0.1`).
enum Host {
    Domain,
    Ip(IpAddr),
}

fn host(url: &Url) -> Option<Host> {
    // `host_str` keeps an IPv6 literal's brackets; strip them before parsing.
    let raw = url.host_str()?;
    let bare = raw.trim_start_matches('[').trim_end_matches(']');
    Some(match bare.parse() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Domain,
    })
}

/// The event names an endpoint may subscribe to: the v1 catalog.
pub(crate) const SUBSCRIBABLE: [&str; 4] = [
    RecordCreated::NAME,
    InvoiceIssued::NAME,
    InvoicePaid::NAME,
    ImportCompleted::NAME,
];

/// The subscription that matches every event.
pub(crate) const ALL_EVENTS: &str = "*";

/// Why a webhook endpoint's input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidEndpoint {
    /// Not an absolute http(s) URL without credentials.
    #[error("{0}")]
    Url(&'static str),
    /// The URL's host is a literal IP in a forbidden range.
    #[error(
        "the url points at a private address ({addr}, {range}); set [webhooks] allow_private_targets to allow it"
    )]
    PrivateTarget {
        /// The literal address.
        addr: IpAddr,
        /// Its range.
        range: &'static str,
    },
    /// An event name outside the catalog, or `*` mixed with names.
    #[error("{0}")]
    Events(String),
    /// A secret that is not `whsec_` + base64 of 24–64 bytes.
    #[error(transparent)]
    Secret(#[from] InvalidSecret),
    /// A custom header that is malformed or would override one Keel sets.
    #[error("{0}")]
    Header(String),
    /// `max_in_flight` or `rate_limit` out of range.
    #[error("{0}")]
    Throttle(String),
}

/// Where deliveries go: an absolute `http`/`https` URL without credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointUrl(Url);

impl EndpointUrl {
    const MAX_LEN: usize = 2048;

    /// Accepts `raw` when it is a deliverable URL; a literal private IP host is refused
    /// unless `allow_private` (host names are checked at delivery, when they resolve).
    pub(crate) fn parse(raw: &str, allow_private: bool) -> Result<Self, InvalidEndpoint> {
        if raw.len() > Self::MAX_LEN {
            return Err(InvalidEndpoint::Url("url must be at most 2048 characters"));
        }
        let url = Url::parse(raw.trim())
            .map_err(|_| InvalidEndpoint::Url("url must be an absolute http or https URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(InvalidEndpoint::Url("url must use http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidEndpoint::Url(
                "url must not carry credentials (user:password@); authenticate with the signature",
            ));
        }
        match host(&url) {
            None => return Err(InvalidEndpoint::Url("url must name a host")),
            Some(Host::Ip(ip)) if !allow_private => {
                if let Err(refusal) = ssrf::check(ip) {
                    return Err(InvalidEndpoint::PrivateTarget {
                        addr: refusal.addr,
                        range: refusal.range,
                    });
                }
            }
            Some(_) => {}
        }
        Ok(Self(url))
    }

    /// The URL as stored and shown.
    pub(crate) fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// The literal IP host of `url`, if it has one (those never reach a DNS resolver).
pub(crate) fn literal_ip(url: &Url) -> Option<IpAddr> {
    match host(url)? {
        Host::Ip(ip) => Some(ip),
        Host::Domain => None,
    }
}

/// Which events an endpoint receives: some catalog names, or all of them (`["*"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventFilter(Vec<String>);

impl EventFilter {
    /// Accepts a non-empty list of catalog names (duplicates dropped, order kept), or
    /// exactly `["*"]`.
    pub(crate) fn parse(names: Vec<String>) -> Result<Self, InvalidEndpoint> {
        if names.is_empty() {
            return Err(InvalidEndpoint::Events(format!(
                "events must list at least one of {} or be [\"*\"]",
                SUBSCRIBABLE.join(", ")
            )));
        }
        if names.iter().any(|n| n == ALL_EVENTS) {
            return if names.iter().all(|n| n == ALL_EVENTS) {
                Ok(Self(vec![ALL_EVENTS.to_owned()]))
            } else {
                Err(InvalidEndpoint::Events(
                    "\"*\" subscribes to every event and must be the only entry".to_owned(),
                ))
            };
        }
        let mut kept: Vec<String> = Vec::with_capacity(names.len());
        for name in names {
            if !SUBSCRIBABLE.contains(&name.as_str()) {
                let shown: String = name.chars().take(64).collect();
                return Err(InvalidEndpoint::Events(format!(
                    "unknown event {shown:?}; known events: {}",
                    SUBSCRIBABLE.join(", ")
                )));
            }
            if !kept.contains(&name) {
                kept.push(name);
            }
        }
        Ok(Self(kept))
    }

    /// The names, in the order given (`["*"]` for all).
    pub(crate) fn names(&self) -> &[String] {
        &self.0
    }
}

/// The key deliveries are signed with: `whsec_` + base64 of 24–64 random bytes.
///
/// Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct WebhookSecret {
    text: String,
    key: Vec<u8>,
}

impl WebhookSecret {
    const GENERATED_LEN: usize = 32;

    /// Accepts a caller-chosen or stored secret.
    pub(crate) fn parse(raw: &str) -> Result<Self, InvalidEndpoint> {
        let key = signing::decode_secret(raw)?;
        Ok(Self {
            text: raw.to_owned(),
            key,
        })
    }

    /// A fresh secret of 32 random bytes.
    pub(crate) fn generate() -> Self {
        let mut key = vec![0u8; Self::GENERATED_LEN];
        rand::fill(&mut key[..]);
        Self {
            text: format!("{SECRET_PREFIX}{}", STANDARD.encode(&key)),
            key,
        }
    }

    /// The secret as shown to the caller once, and stored.
    pub(crate) fn expose(&self) -> &str {
        &self.text
    }

    /// The HMAC key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(\"whsec_…\")")
    }
}

/// A valid endpoint about to be stored.
#[derive(Debug, Clone)]
pub(crate) struct NewEndpoint {
    /// Its id (UUIDv7).
    pub id: Uuid,
    /// Where deliveries go.
    pub url: EndpointUrl,
    /// What it receives.
    pub events: EventFilter,
    /// What deliveries are signed with.
    pub secret: WebhookSecret,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// An endpoint as listed (the secret is shown only at creation and rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointSummary {
    /// Its id.
    pub id: Uuid,
    /// Where deliveries go.
    pub url: String,
    /// What it receives.
    pub events: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Free text for people.
    pub description: String,
    /// When it was disabled; `None` while enabled.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Why: `gone`, `failing` or `manual`.
    pub disabled_reason: Option<String>,
    /// Until when the previous secret still signs, during a rotation.
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// Its settings: headers and throttling.
    pub settings: crate::endpoints::EndpointSettings,
}

/// What a delivery needs to know about its endpoint.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryTarget {
    /// Where to POST.
    pub url: String,
    /// The stored secret text (`whsec_…`); empty once the endpoint is deleted.
    pub secret: String,
    /// Whether the endpoint was deleted; its pending deliveries are cancelled.
    pub deleted: bool,
    /// Whether the endpoint is disabled; its pending deliveries are skipped.
    pub disabled: bool,
    /// Whether its last delivery failed (a success then clears that).
    pub failing: bool,
    /// The previous secret and until when (unix ms) it still signs, during a rotation.
    pub previous_secret: Option<(String, i64)>,
    /// Headers and throttling.
    pub settings: crate::endpoints::EndpointSettings,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn http_and_https_urls_are_accepted() {
        for url in [
            "https://example.com/hooks",
            "http://example.com:8080/a?b=c",
            "https://hooks.example.com",
            "http://localhost:9000/hook",
        ] {
            assert!(EndpointUrl::parse(url, false).is_ok(), "{url}");
        }
    }

    #[test]
    fn relative_non_http_and_credentialed_urls_are_refused() {
        for url in [
            "",
            "/hooks",
            "example.com/hooks",
            "ftp://example.com/",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "https://user:pass@example.com/",
            "https://user@example.com/",
        ] {
            assert!(
                matches!(EndpointUrl::parse(url, false), Err(InvalidEndpoint::Url(_))),
                "{url}"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(2100));
        assert!(matches!(
            EndpointUrl::parse(&long, false),
            Err(InvalidEndpoint::Url(_))
        ));
    }

    #[test]
    fn literal_private_ip_hosts_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1/",
            "http://10.0.0.5:8080/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[fe80::1]/",
            "http://0.0.0.0/",
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            assert!(
                matches!(
                    EndpointUrl::parse(url, false),
                    Err(InvalidEndpoint::PrivateTarget { .. })
                ),
                "{url}"
            );
            assert!(EndpointUrl::parse(url, true).is_ok(), "{url}");
        }
        assert!(EndpointUrl::parse("http://93.184.216.34/", false).is_ok());
        assert!(EndpointUrl::parse("http://[2606:4700:4700::1111]/", false).is_ok());
    }

    #[test]
    fn literal_ip_reads_ipv4_and_bracketed_ipv6_hosts() {
        let v6 = Url::parse("http://[::1]:80/").unwrap();
        assert_eq!(literal_ip(&v6), Some("::1".parse().unwrap()));
        let v4 = Url::parse("http://127.0.0.1/").unwrap();
        assert_eq!(literal_ip(&v4), Some("127.0.0.1".parse().unwrap()));
        let name = Url::parse("http://example.com/").unwrap();
        assert_eq!(literal_ip(&name), None);
    }

    #[test]
    fn event_filters_take_catalog_names_or_a_lone_star() {
        let f =
            EventFilter::parse(names(&["invoice.paid", "record.created", "invoice.paid"])).unwrap();
        assert_eq!(f.names(), names(&["invoice.paid", "record.created"]));
        assert_eq!(
            EventFilter::parse(names(&["*"])).unwrap().names(),
            names(&["*"])
        );
        assert_eq!(
            EventFilter::parse(names(&["*", "*"])).unwrap().names(),
            names(&["*"])
        );
        for bad in [
            &[][..],
            &["record.deleted"][..],
            &["*", "record.created"][..],
            &["RECORD.CREATED"][..],
            &[""][..],
        ] {
            assert!(
                matches!(
                    EventFilter::parse(names(bad)),
                    Err(InvalidEndpoint::Events(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn secrets_must_be_whsec_and_24_to_64_bytes_of_base64() {
        let ok = format!("whsec_{}", STANDARD.encode([1u8; 24]));
        assert_eq!(WebhookSecret::parse(&ok).unwrap().key(), &[1u8; 24]);
        let unpadded = format!("whsec_{}", STANDARD.encode([2u8; 25]).trim_end_matches('='));
        assert_eq!(WebhookSecret::parse(&unpadded).unwrap().key().len(), 25);
        let max = format!("whsec_{}", STANDARD.encode([3u8; 64]));
        assert!(WebhookSecret::parse(&max).is_ok());
        for bad in [
            String::new(),
            STANDARD.encode([1u8; 32]),
            format!("whsec_{}", STANDARD.encode([1u8; 23])),
            format!("whsec_{}", STANDARD.encode([1u8; 65])),
            "whsec_not base64!".to_owned(),
            "whsec_".to_owned(),
        ] {
            assert!(
                matches!(WebhookSecret::parse(&bad), Err(InvalidEndpoint::Secret(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn generated_secrets_are_32_random_bytes_and_parse_back() {
        let a = WebhookSecret::generate();
        let b = WebhookSecret::generate();
        assert_ne!(a, b);
        assert!(a.expose().starts_with("whsec_"));
        assert_eq!(WebhookSecret::parse(a.expose()).unwrap().key(), a.key());
        assert_eq!(a.key().len(), 32);
        assert!(!format!("{a:?}").contains(&a.expose()[6..]));
    }
}
