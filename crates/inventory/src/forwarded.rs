//! The client address behind trusted proxies (`TRUSTED_PROXIES`).
//!
//! Each proxy appends the address of its own peer to `X-Forwarded-For`, so the header reads
//! `<whatever the client wrote>, <appended by proxy 1>, ..., <appended by proxy n>`, and the TCP peer is the last
//! proxy. Only the entries appended by proxies we trust mean anything; everything left of them is what the client
//! chose to send. The client is therefore found from the right, never the left:
//!
//! - [`TrustedProxies::Hops`]`(n)`: the chain is the header's entries followed by the peer; the client is the
//!   entry `n` places from the right (with `n = 1`, the entry the load balancer appended). A chain shorter than
//!   `n + 1` did not come through the configured proxies, so no entry is trusted and the peer is the client.
//! - [`TrustedProxies::Networks`]: walking from the right (the peer first), addresses inside a trusted network
//!   are proxies; the first address outside them is the client. A peer outside them means the header is not
//!   looked at.
//!
//! An entry that is not an address (`unknown`, garbage, an obfuscated RFC 7239 identifier) where the client
//! should be yields the nearest trusted address to its right: the proxy that forwarded it. Entries may carry a
//! port (`1.2.3.4:5678`, `[2001:db8::1]:443`); IPv4-mapped IPv6 addresses are read as IPv4, so a dual-stack
//! listener's peers match IPv4 networks.
//!
//! Hand-written (a few lines over `ipnet` for the networks) because the crates that do this for axum
//! (`axum-client-ip`'s rightmost extractors) trust exactly one hop, not `n` hops or a set of networks, and the
//! walk itself is short enough to be checked in full by the table and property tests below.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Which proxies in front of the app are believed when they say who the client is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TrustedProxies {
    /// None: the client is the TCP peer and `X-Forwarded-For` is ignored (the default).
    #[default]
    None,
    /// This many proxies, counted from the right of `X-Forwarded-For` (the peer is the last of them).
    Hops(usize),
    /// Proxies are the addresses inside these networks.
    Networks(Vec<IpNet>),
}

/// The most hops `TRUSTED_PROXIES` may name: more is surely a typo (a CIDR list would be written instead).
pub const MAX_HOPS: usize = 16;

impl std::str::FromStr for TrustedProxies {
    type Err = String;

    /// `0` (none), a number of hops, or a comma-separated list of networks (`10.0.0.0/8`) and addresses.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Ok(hops) = text.parse::<usize>() {
            return match hops {
                0 => Ok(Self::None),
                n if n <= MAX_HOPS => Ok(Self::Hops(n)),
                n => Err(format!(
                    "{n} hops is more than {MAX_HOPS}; give the number of proxies in front of the app, or their networks"
                )),
            };
        }
        let networks = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                part.parse::<IpNet>()
                    .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| {
                        format!(
                            "'{part}' is neither a number of hops nor a network; use e.g. 1, or 10.0.0.0/8,fd00::/8"
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if networks.is_empty() {
            return Err("is empty; use a number of hops (e.g. 1) or networks (e.g. 10.0.0.0/8)".into());
        }
        Ok(Self::Networks(networks))
    }
}

impl TrustedProxies {
    /// The client's address for a request from `peer` with these headers.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        match self {
            Self::None | Self::Hops(0) => peer,
            Self::Hops(n) => {
                // Entries from the right; the peer is position 0, the client position n.
                let mut entries = forwarded_from_right(headers);
                let mut nearest = peer;
                for _ in 1..*n {
                    match entries.next() {
                        Some(Some(addr)) => nearest = addr,
                        Some(None) => {}
                        None => return peer,
                    }
                }
                match entries.next() {
                    Some(Some(client)) => client,
                    Some(None) => nearest,
                    None => peer,
                }
            }
            Self::Networks(networks) => {
                let trusted = |addr: &IpAddr| networks.iter().any(|net| net.contains(addr));
                if !trusted(&peer) {
                    return peer;
                }
                let mut nearest = peer;
                for entry in forwarded_from_right(headers) {
                    match entry {
                        Some(addr) if trusted(&addr) => nearest = addr,
                        Some(client) => return client,
                        None => return nearest,
                    }
                }
                // Every hop is a trusted address: the leftmost is where the request started.
                nearest
            }
        }
    }
}

/// `X-Forwarded-For` entries from the right, across every such header (later headers are further right);
/// `None` for an entry that is not an address. A header that is not even text counts as one bad entry.
fn forwarded_from_right(headers: &HeaderMap) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    let values: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
    values.into_iter().rev().flat_map(|value| {
        let entries: Vec<Option<IpAddr>> = match value.to_str() {
            Ok(text) => text.rsplit(',').map(parse_entry).collect(),
            Err(_) => vec![None],
        };
        entries
    })
}

/// One entry: an address, optionally with a port (`[v6]:port` for IPv6).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let addr = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(addr.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", HeaderValue::from_str(v).expect("header"));
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    const LB: &str = "10.0.0.5";

    #[test]
    fn settings_parse_to_hops_or_networks() {
        assert_eq!("0".parse(), Ok(TrustedProxies::None));
        assert_eq!(" 2 ".parse(), Ok(TrustedProxies::Hops(2)));
        assert_eq!(
            "10.1.2.3/8, fd00::/8,192.0.2.7".parse(),
            Ok(TrustedProxies::Networks(vec![
                "10.0.0.0/8".parse().expect("net"),
                "fd00::/8".parse().expect("net"),
                "192.0.2.7/32".parse().expect("net"),
            ]))
        );
        for bad in ["17", "-1", "lb", "10.0.0.0/33", ",", "10.0.0.0/8,x"] {
            assert!(bad.parse::<TrustedProxies>().is_err(), "{bad}");
        }
    }

    /// (setting, peer, X-Forwarded-For headers, expected client).
    #[test]
    fn the_client_is_found_from_the_right() {
        let cases: &[(&str, &str, &[&str], &str)] = &[
            // No trust: the peer, whatever the header says.
            ("0", "203.0.113.9", &["1.1.1.1"], "203.0.113.9"),
            // One load balancer: the entry it appended, not the client's own leftmost claim.
            ("1", LB, &["6.6.6.6, 198.51.100.7"], "198.51.100.7"),
            ("1", LB, &["6.6.6.6", "198.51.100.7"], "198.51.100.7"),
            ("1", LB, &["198.51.100.7:51234"], "198.51.100.7"),
            ("1", LB, &["[2001:db8::7]:443"], "2001:db8::7"),
            ("1", LB, &["2001:db8::7"], "2001:db8::7"),
            ("1", LB, &["[2001:db8::7]"], "2001:db8::7"),
            ("1", LB, &["::ffff:198.51.100.7"], "198.51.100.7"),
            // Straight to the app, bypassing the balancer: nothing to trust.
            ("1", "203.0.113.9", &[], "203.0.113.9"),
            ("2", "203.0.113.9", &["6.6.6.6"], "203.0.113.9"),
            // Two hops: CDN then balancer.
            ("2", LB, &["6.6.6.6, 198.51.100.7, 192.0.2.1"], "198.51.100.7"),
            // Garbage where the client should be: the proxy that forwarded it.
            ("1", LB, &["198.51.100.7, unknown"], LB),
            ("2", LB, &["198.51.100.7, unknown, 192.0.2.1"], "192.0.2.1"),
            ("1", LB, &["1.2.3.4.5"], LB),
            // Networks: skip trusted addresses from the right.
            (
                "10.0.0.0/8",
                LB,
                &["6.6.6.6, 198.51.100.7, 10.9.9.9"],
                "198.51.100.7",
            ),
            ("10.0.0.0/8", "203.0.113.9", &["198.51.100.7"], "203.0.113.9"),
            ("10.0.0.0/8", LB, &["10.1.1.1"], "10.1.1.1"),
            ("10.0.0.0/8", LB, &[], LB),
            ("10.0.0.0/8", LB, &["198.51.100.7, junk, 10.2.2.2"], "10.2.2.2"),
            ("fd00::/8", "fd00::5", &["2001:db8::7, fd00::9"], "2001:db8::7"),
            ("10.0.0.0/8", "::ffff:10.0.0.5", &["198.51.100.7"], "198.51.100.7"),
        ];
        for (setting, peer, values, expected) in cases {
            let trusted: TrustedProxies = setting.parse().expect("setting");
            assert_eq!(
                trusted.client(ip(peer), &headers(values)),
                ip(expected),
                "TRUSTED_PROXIES={setting} peer={peer} X-Forwarded-For={values:?}"
            );
        }
    }

    #[test]
    fn a_header_that_is_not_text_counts_as_one_bad_entry() {
        let mut map = HeaderMap::new();
        map.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"198.51.100.7, \xff").expect("opaque header"),
        );
        assert_eq!(TrustedProxies::Hops(1).client(ip(LB), &map), ip(LB));
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u16; 8]>().prop_map(IpAddr::from),
        ]
    }

    proptest! {
        /// Whatever a client puts in front of the trusted entries, the client found is the entry the trusted
        /// proxies appended.
        #[test]
        fn spoofed_leftmost_entries_never_win(
            spoofed in proptest::collection::vec("[ -~]{0,40}", 0..6),
            real in any_ip(),
            proxies in proptest::collection::vec(any::<[u8; 4]>(), 0..3),
        ) {
            let hops = proxies.len() + 1;
            let mut entries: Vec<String> = spoofed.iter().map(|s| s.replace(',', " ")).collect();
            entries.push(match real { IpAddr::V6(v6) => format!("[{v6}]:1234"), v4 => v4.to_string() });
            entries.extend(proxies.iter().map(|p| IpAddr::from(*p).to_string()));
            let map = headers(&[&entries.join(", ")]);
            prop_assert_eq!(TrustedProxies::Hops(hops).client(ip(LB), &map), real.to_canonical());
            // The same chain behind proxies named by network: a real client outside it is found.
            let real = real.to_canonical();
            prop_assume!(!matches!(real, IpAddr::V4(v4) if v4.octets()[0] == 10));
            let networks = TrustedProxies::Networks(vec!["10.0.0.0/8".parse().expect("net")]);
            let mut walked: Vec<String> = spoofed.iter().map(|s| s.replace(',', " ")).collect();
            walked.push(real.to_string());
            walked.extend(proxies.iter().map(|p| format!("10.{}.{}.{}", p[1], p[2], p[3])));
            prop_assert_eq!(networks.client(ip(LB), &headers(&[&walked.join(", ")])), real);
        }

        /// No header, however malformed, makes the lookup fail or pick an address no proxy vouched for.
        #[test]
        fn any_header_yields_the_peer_or_a_listed_address(
            value in "[ -~]{0,200}",
            hops in 0usize..4,
        ) {
            let map = headers(&[&value]);
            let peer = ip(LB);
            let found = TrustedProxies::Hops(hops).client(peer, &map);
            let listed = value.split(',').filter_map(parse_entry).any(|a| a == found);
            prop_assert!(found == peer || listed);
        }
    }
}
