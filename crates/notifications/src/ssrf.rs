//! The SSRF guard: which addresses a webhook may never reach, and a DNS resolver that
//! enforces it on the very addresses the connection will use.
//!
//! Checking a host name once and connecting later would let DNS rebinding slip past (the
//! second lookup answers `127.0.0.1`), so the check lives in the resolver the HTTP client
//! connects through. Literal IP hosts never reach a resolver; callers check them with
//! [`forbidden_range`] before sending.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The named range `ip` falls in when a webhook must not reach it, or `None` for a public
/// unicast address.
pub(crate) fn forbidden_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let range = match (a, b, c) {
        (0, _, _) => "unspecified",
        (10, _, _) => "private",
        (100, 64..=127, _) => "shared address space (CGNAT)",
        (127, _, _) => "loopback",
        (169, 254, _) => "link-local (cloud metadata)",
        (172, 16..=31, _) => "private",
        (192, 0, 0) => "IETF protocol assignments",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay anycast",
        (192, 168, _) => "private",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    };
    Some(range)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // Addresses that embed an IPv4 address are judged by it: IPv4-mapped (::ffff:a.b.c.d),
    // IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:AABB:CCDD::).
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let s = ip.segments();
    let embedded_low = || Ipv4Addr::from(((u32::from(s[6])) << 16) | u32::from(s[7]));
    if s[..6] == [0; 6] {
        return forbidden_v4(embedded_low()).or(Some("IPv4-compatible"));
    }
    // IPv4-translated (::ffff:0:a.b.c.d, RFC 2765).
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return forbidden_v4(embedded_low());
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(embedded_low());
    }
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2]));
        return forbidden_v4(v4);
    }
    let range = match s[0] {
        0x0064 if s[1] == 0xff9b && s[2] == 0x0001 => "local-use NAT64",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only",
        0x2001 if s[1] == 0x0db8 => "documentation",
        0x2001 if s[1] < 0x0200 => "IETF protocol assignments (incl. Teredo)",
        0x3fff if s[1] < 0x1000 => "documentation",
        0xfc00..=0xfdff => "unique local (private)",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xff00..=0xffff => "multicast",
        _ => return None,
    };
    Some(range)
}

/// A host that resolved to an address the guard forbids; the attempt fails with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PrivateTarget {
    /// The forbidden address.
    pub addr: IpAddr,
    /// Its range, e.g. `loopback`.
    pub range: &'static str,
}

impl fmt::Display for PrivateTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "target resolves to a private address ({}, {})",
            self.addr, self.range
        )
    }
}

impl std::error::Error for PrivateTarget {}

/// Refuses `ip` when it is forbidden.
pub(crate) fn check(ip: IpAddr) -> Result<(), PrivateTarget> {
    match forbidden_range(ip) {
        Some(range) => Err(PrivateTarget { addr: ip, range }),
        None => Ok(()),
    }
}

/// Refuses a whole resolution when any one address is forbidden: a name that answers with
/// one public and one private address is treated as private, since the client may pick
/// either.
pub(crate) fn check_all(addrs: &[SocketAddr]) -> Result<(), PrivateTarget> {
    addrs.iter().try_for_each(|a| check(a.ip()))
}

/// The system resolver behind the guard; installed on the webhook client unless private
/// targets are allowed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            check_all(&addrs)?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Finds a [`PrivateTarget`] refusal anywhere in an error's source chain (the HTTP client
/// wraps what the resolver returned).
pub(crate) fn find_refusal<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a PrivateTarget> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(refusal) = e.downcast_ref::<PrivateTarget>() {
            return Some(refusal);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_and_special_ipv4_ranges_are_forbidden() {
        for addr in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.0.9",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(
                forbidden_range(ip(addr)).is_some(),
                "{addr} must be forbidden"
            );
        }
    }

    #[test]
    fn public_ipv4_addresses_are_allowed() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.169.0.1",
            "198.20.0.1",
        ] {
            assert_eq!(forbidden_range(ip(addr)), None, "{addr} must be allowed");
        }
    }

    #[test]
    fn private_and_special_ipv6_ranges_are_forbidden() {
        for addr in [
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0:127.0.0.1",
            "::ffff:0:10.0.0.1",
            "::ffff:0:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b:1::1",
            "100::1",
            "2001:db8::1",
            "2001::1",
            "2002:7f00:1::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(
                forbidden_range(ip(addr)).is_some(),
                "{addr} must be forbidden"
            );
        }
    }

    #[test]
    fn public_ipv6_addresses_are_allowed() {
        for addr in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "::ffff:0:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert_eq!(forbidden_range(ip(addr)), None, "{addr} must be allowed");
        }
    }

    #[test]
    fn a_resolution_with_any_private_address_is_refused() {
        let public: SocketAddr = "8.8.8.8:0".parse().unwrap();
        let private: SocketAddr = "[::1]:0".parse().unwrap();
        assert!(check_all(&[public]).is_ok());
        let refusal = check_all(&[public, private]).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "target resolves to a private address (::1, loopback)"
        );
    }

    #[tokio::test]
    async fn the_guarded_resolver_refuses_localhost() {
        let name: Name = "localhost".parse().unwrap();
        let err = GuardedResolver.resolve(name).await.err().unwrap();
        let refusal = find_refusal(err.as_ref()).unwrap();
        assert_eq!(refusal.range, "loopback");
    }
}
