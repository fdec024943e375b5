//! The facts `cargo xtask test` decides on, read from the environment and probed once: is
//! `CI` set, does a PostgreSQL server answer, is there a chromium.
//!
//! PostgreSQL: `KEEL_TEST_POSTGRES_URL` when set, else `KEEL_TEST_POSTGRES_DEFAULT_URL`, else
//! [`LOCAL_POSTGRES_URL`]; "answers" means a TCP connection to its host and port succeeds
//! (a URL without a TCP host, e.g. a Unix socket, is not probed). Chromium: `KEEL_CHROMIUM`
//! when set, else `chromium` on `PATH`.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use super::plan::{
    CHROMIUM_VAR, Facts, LOCAL_POSTGRES_URL, POSTGRES_DEFAULT_VAR, POSTGRES_URL_VAR, Probe,
    Resource, redacted,
};

/// How long a PostgreSQL server gets to accept the probe's connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads the process environment and probes PostgreSQL and chromium.
#[must_use]
pub fn detect() -> Facts {
    Facts {
        ci: var("CI").is_some(),
        postgres: postgres(),
        chromium: chromium(),
    }
}

/// A variable's value, when set and not empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn postgres() -> Resource {
    let (location, explicit) = match var(POSTGRES_URL_VAR) {
        Some(url) => (url, true),
        None => (
            var(POSTGRES_DEFAULT_VAR).unwrap_or_else(|| LOCAL_POSTGRES_URL.to_owned()),
            false,
        ),
    };
    let probe = probe_postgres(&location);
    Resource {
        location,
        explicit,
        probe,
    }
}

/// Whether a server accepts TCP connections at `url`'s host and port.
#[must_use]
pub fn probe_postgres(url: &str) -> Probe {
    let Some((host, port)) = host_and_port(url) else {
        return Probe::Unprobed;
    };
    let addrs = match (host.as_str(), port).to_socket_addrs() {
        Ok(addrs) => addrs.collect::<Vec<_>>(),
        Err(e) => return Probe::Missing(format!("{host} does not resolve ({e})")),
    };
    let mut last = format!("{host} resolves to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(_) => return Probe::There,
            Err(e) => last = format!("no server answers at {} ({})", redacted(url), e.kind()),
        }
    }
    Probe::Missing(last)
}

/// The TCP host and port of a `postgres://` or `postgresql://` URL (port 5432 when not
/// given); `None` when it names none (a Unix socket, several hosts, a `host=` parameter) or
/// is not such a URL.
#[must_use]
pub fn host_and_port(url: &str) -> Option<(String, u16)> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let query = tail.split_once('?').map_or("", |(_, q)| q);
    if query.split('&').any(|p| p.starts_with("host=")) {
        return None;
    }
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hosts.is_empty() || hosts.contains(',') {
        return None;
    }
    let (host, port) = if let Some(bracketed) = hosts.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match hosts.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hosts, None),
        }
    };
    if host.is_empty() || host.starts_with('/') || host.starts_with("%2F") {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 5432,
    };
    Some((host.to_owned(), port))
}

fn chromium() -> Resource {
    if let Some(path) = var(CHROMIUM_VAR) {
        let probe = if Path::new(&path).is_file() {
            Probe::There
        } else {
            Probe::Missing("there is no file there".to_owned())
        };
        return Resource {
            location: path,
            explicit: true,
            probe,
        };
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("chromium"))
            .find(|candidate| candidate.is_file())
    });
    match found {
        Some(path) => Resource {
            location: path.display().to_string(),
            explicit: false,
            probe: Probe::There,
        },
        None => Resource {
            location: "chromium".to_owned(),
            explicit: false,
            probe: Probe::Missing("no `chromium` on PATH".to_owned()),
        },
    }
}
