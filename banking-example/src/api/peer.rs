//! Who is on the other end: the client address of a request, and the key
//! per-address limits use for it.
//!
//! The client is the TCP peer, unless the peer is one of the configured
//! trusted proxies (`TRUSTED_PROXIES`): then it is the right-most
//! `X-Forwarded-For` entry that is not itself a trusted proxy (entries to
//! its left were written by the client and prove nothing). Without trusted
//! proxies the header is ignored, so a client cannot choose its own
//! address.
//!
//! Limits group IPv6 clients by their /64 network: one subscriber usually
//! holds a whole /64 (2^64 addresses), so a per-address limit would be no
//! limit. IPv4-mapped IPv6 addresses count as the IPv4 address.

use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;

use crate::net::canonical;
pub use crate::net::{IpNet, TrustedProxies};

/// The `X-Forwarded-For` header.
pub const FORWARDED_FOR_HEADER: &str = "x-forwarded-for";

/// The client address of a request from `peer` (the TCP peer, when known)
/// with these `headers`.
///
/// ```
/// use banking_example::api::peer::{client_ip, TrustedProxies};
/// use axum::http::HeaderMap;
/// let mut headers = HeaderMap::new();
/// headers.insert("x-forwarded-for", "198.51.100.7, 10.0.0.2".parse().unwrap());
/// let proxy = "10.0.0.1".parse().ok();
/// // Not trusted: the header is ignored.
/// assert_eq!(client_ip(proxy, &headers, &TrustedProxies::none()), proxy);
/// // Trusted (and so is 10.0.0.2, the proxy before it): the client is the first untrusted hop.
/// let trusted = "10.0.0.0/8".parse().unwrap();
/// assert_eq!(client_ip(proxy, &headers, &trusted), "198.51.100.7".parse().ok());
/// ```
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = peer.map(canonical);
    let Some(proxy) = peer.filter(|p| trusted.contains(*p)) else {
        return peer;
    };
    let mut client = proxy;
    // Right to left over every X-Forwarded-For header line's entries.
    let hops: Vec<&str> = headers
        .get_all(FORWARDED_FOR_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            // Garbage from an untrusted hop: the last trusted step is all
            // we know.
            break;
        };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    Some(client)
}

/// One `X-Forwarded-For` entry: an address, maybe with a port or in
/// brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .map(canonical)
}

/// The rate-limit key of a client address: `ip:<IPv4>` or
/// `ip:<IPv6 /64 network>/64`; `ip:unknown` without one.
///
/// ```
/// use banking_example::api::peer::limit_key;
/// assert_eq!(limit_key("203.0.113.9".parse().ok()), "ip:203.0.113.9");
/// assert_eq!(limit_key("2001:db8:1:2:aaaa::1".parse().ok()), "ip:2001:db8:1:2::/64");
/// assert_eq!(limit_key("2001:db8:1:2:ffff::9".parse().ok()), "ip:2001:db8:1:2::/64");
/// assert_eq!(limit_key("::ffff:203.0.113.9".parse().ok()), "ip:203.0.113.9");
/// ```
pub fn limit_key(ip: Option<IpAddr>) -> String {
    match ip.map(canonical) {
        None => "ip:unknown".into(),
        Some(IpAddr::V4(v4)) => format!("ip:{v4}"),
        Some(IpAddr::V6(v6)) => {
            let network = Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64));
            format!("ip:{network}/64")
        }
    }
}

/// The client address of a request, put in its extensions by the rate
/// limiting middleware for the handlers (the auth limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub Option<IpAddr>);

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(FORWARDED_FOR_HEADER, v.parse().unwrap());
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_ipv4_is_exact() {
        assert_eq!(limit_key(ip("2001:db8::1")), limit_key(ip("2001:db8::ffff:1")));
        assert_ne!(limit_key(ip("2001:db8:0:1::1")), limit_key(ip("2001:db8:0:2::1")));
        assert_ne!(limit_key(ip("192.0.2.1")), limit_key(ip("192.0.2.2")));
        assert_eq!(limit_key(None), "ip:unknown");
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted: TrustedProxies = "10.0.0.0/8, ::1".parse().unwrap();
        let h = xff("1.2.3.4, 5.6.7.8");
        // An untrusted peer: its header means nothing.
        assert_eq!(client_ip(ip("192.0.2.1"), &h, &trusted), ip("192.0.2.1"));
        // A trusted peer: the right-most entry (the one it saw) is the client.
        assert_eq!(client_ip(ip("10.1.1.1"), &h, &trusted), ip("5.6.7.8"));
        // Trusted hops are skipped, right to left.
        assert_eq!(
            client_ip(ip("10.1.1.1"), &xff("1.2.3.4, 10.9.9.9"), &trusted),
            ip("1.2.3.4")
        );
        // Every hop trusted: the left-most.
        assert_eq!(
            client_ip(ip("::1"), &xff("10.2.2.2, 10.9.9.9"), &trusted),
            ip("10.2.2.2")
        );
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(client_ip(ip("10.1.1.1"), &xff("evil"), &trusted), ip("10.1.1.1"));
        // Ports and brackets.
        assert_eq!(
            client_ip(ip("10.1.1.1"), &xff("[2001:db8::5]:443"), &trusted),
            ip("2001:db8::5")
        );
        // No header: the proxy itself.
        assert_eq!(client_ip(ip("10.1.1.1"), &HeaderMap::new(), &trusted), ip("10.1.1.1"));
    }

    #[test]
    fn parses_blocks() {
        let t: TrustedProxies = "127.0.0.1, 2001:db8::/32,".parse().unwrap();
        assert!(t.contains("127.0.0.1".parse().unwrap()));
        assert!(t.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!t.contains("127.0.0.2".parse().unwrap()));
        assert!(t.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!t.contains("2001:db9::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("not-an-ip".parse::<TrustedProxies>().is_err());
        let all: TrustedProxies = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
    }
}
