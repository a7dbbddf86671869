//! The client's IP address behind reverse proxies, for rate limiting and audit entries.
//!
//! `X-Forwarded-For` is a list each proxy appends the address it received the request from to:
//! `client, proxy1, proxy2`, and the TCP peer is the last proxy. Anyone can send the header with
//! made-up entries, so only entries added by proxies we trust mean anything. The rule: if the
//! peer is not a trusted proxy, the header is the client's own claim and is ignored. Otherwise
//! walk the list from the right (the most recently added, by our own proxies), skip addresses of
//! trusted proxies, and take the first one that is not: that is the address our outermost proxy
//! saw. Entries to its left were written by the client and are not believed.
//!
//! A malformed entry on the walk means the chain cannot be trusted; we then use the peer, which
//! is at worst the proxy's address: rate limits get coarser, but a client cannot pick its IP.
//!
//! If a request carries several `X-Forwarded-For` headers, the caller joins them with `,` in
//! order (RFC 9110 §5.3) before calling [`client_ip`].

use crate::error::IdentityError;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network: address and prefix length, e.g. `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix`, or a bare address as a single host (`/32`, `/128`).
    ///
    /// Strict: the prefix must fit the family and the address must have no bits set beyond it
    /// (`10.0.0.1/8` is refused). Such a value is almost always a typo in the proxy list, and
    /// guessing which network was meant could trust far more addresses than intended.
    pub fn parse(text: &str) -> Result<Self, IdentityError> {
        let invalid = || IdentityError::InvalidCidr(text.chars().take(64).collect());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => {
                if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid());
                }
                (addr, Some(prefix.parse::<u8>().map_err(|_| invalid())?))
            }
            None => (text, None),
        };
        let network = canonical(addr.parse::<IpAddr>().map_err(|_| invalid())?);
        let max = max_prefix(network);
        let prefix = prefix.unwrap_or(max);
        if prefix > max || to_bits(network) & !mask(prefix, max) != 0 {
            return Err(invalid());
        }
        Ok(Self { network, prefix })
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network. IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`, what a
    /// dual-stack socket reports for an IPv4 peer) are matched as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                let m = mask(self.prefix, max_prefix(ip));
                to_bits(ip) & m == to_bits(self.network)
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cidr::parse(s)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// IPv4-mapped IPv6 addresses become IPv4; everything else is unchanged.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

const fn max_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_bits()),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

/// The netmask of `prefix` bits within a `max`-bit address, in the low `max` bits of a u128.
fn mask(prefix: u8, max: u8) -> u128 {
    let full: u128 = if max == 128 { u128::MAX } else { (1u128 << max) - 1 };
    let host_bits = u32::from(max.saturating_sub(prefix));
    if host_bits >= 128 { 0 } else { full & !((1u128 << host_bits) - 1) }
}

fn is_trusted(ip: IpAddr, trusted_proxies: &[Cidr]) -> bool {
    trusted_proxies.iter().any(|cidr| cidr.contains(ip))
}

/// Longest `X-Forwarded-For` chain we walk. Real chains have a handful of hops; the bound keeps
/// the work per request small whatever a client sends.
const MAX_HOPS: usize = 32;

/// The client's address. See the module documentation for the rule.
pub fn client_ip(peer: IpAddr, x_forwarded_for: Option<&str>, trusted_proxies: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted_proxies) {
        return peer;
    }
    let Some(header) = x_forwarded_for else {
        return peer;
    };
    let mut leftmost_trusted = None;
    for (hop, entry) in header.rsplit(',').enumerate() {
        if hop >= MAX_HOPS {
            return peer;
        }
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            return peer;
        };
        let ip = canonical(ip);
        if !is_trusted(ip, trusted_proxies) {
            return ip;
        }
        leftmost_trusted = Some(ip);
    }
    // Every hop is one of our proxies: the request started inside (a health check, a job).
    leftmost_trusted.unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies() -> Vec<Cidr> {
        vec![Cidr::parse("10.0.0.0/8").unwrap(), Cidr::parse("fd00::/8").unwrap()]
    }

    #[test]
    fn cidr_parsing() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.1.2")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        assert!(!c.contains(ip("fd00::1")));
        assert_eq!(c.to_string(), "10.0.0.0/8");
        let host = Cidr::parse("192.0.2.7").unwrap();
        assert_eq!(host.prefix(), 32);
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("198.51.100.1")) && !all.contains(ip("::1")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
        assert_eq!(Cidr::parse("::1/128").unwrap().prefix(), 128);
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0/8",
            "",
            "/8",
            "::/129",
            "fd00::1/8",
            "10.0.0.0/0008",
            "10.0.0.0/8 ",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn untrusted_peer_header_is_ignored() {
        // A client connecting directly claims to be someone else.
        assert_eq!(client_ip(ip("203.0.113.9"), Some("1.2.3.4"), &proxies()), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("203.0.113.9"), Some("10.0.0.1"), &proxies()), ip("203.0.113.9"));
        // No proxies configured: XFF is never believed.
        assert_eq!(client_ip(ip("10.0.0.5"), Some("1.2.3.4"), &[]), ip("10.0.0.5"));
    }

    #[test]
    fn trusted_chain_gives_the_first_untrusted_hop_from_the_right() {
        assert_eq!(client_ip(ip("10.0.0.5"), Some("198.51.100.4"), &proxies()), ip("198.51.100.4"));
        assert_eq!(client_ip(ip("10.0.0.5"), Some("198.51.100.4, 10.0.0.7"), &proxies()), ip("198.51.100.4"));
        assert_eq!(client_ip(ip("::ffff:10.0.0.5"), Some("198.51.100.4,10.1.1.1"), &proxies()), ip("198.51.100.4"));
    }

    #[test]
    fn client_supplied_entries_to_the_left_are_not_believed() {
        // The client sent "X-Forwarded-For: 1.1.1.1" itself; our proxy appended the real address.
        assert_eq!(client_ip(ip("10.0.0.5"), Some("1.1.1.1, 198.51.100.4"), &proxies()), ip("198.51.100.4"));
        // The client pretends to be one of our proxies: still the address our proxy saw wins.
        assert_eq!(client_ip(ip("10.0.0.5"), Some("10.9.9.9, 198.51.100.4"), &proxies()), ip("198.51.100.4"));
    }

    #[test]
    fn malformed_or_missing_falls_back_to_peer() {
        let peer = ip("10.0.0.5");
        assert_eq!(client_ip(peer, None, &proxies()), peer);
        assert_eq!(client_ip(peer, Some(""), &proxies()), peer);
        assert_eq!(client_ip(peer, Some("not-an-ip"), &proxies()), peer);
        assert_eq!(client_ip(peer, Some("198.51.100.4, garbage"), &proxies()), peer);
        assert_eq!(client_ip(peer, Some("198.51.100.4:443"), &proxies()), peer);
        assert_eq!(client_ip(peer, Some("198.51.100.4,,10.0.0.7"), &proxies()), peer);
        // A malformed entry left of the first untrusted hop is never reached.
        assert_eq!(client_ip(peer, Some("garbage, 198.51.100.4"), &proxies()), ip("198.51.100.4"));
    }

    #[test]
    fn all_trusted_gives_leftmost() {
        assert_eq!(client_ip(ip("10.0.0.5"), Some("10.0.0.9, 10.0.0.7"), &proxies()), ip("10.0.0.9"));
    }

    #[test]
    fn overlong_chains_fall_back_to_peer() {
        let chain = vec!["10.0.0.1"; 100].join(",");
        assert_eq!(client_ip(ip("10.0.0.5"), Some(&chain), &proxies()), ip("10.0.0.5"));
    }

    proptest! {
        #[test]
        fn never_panics(header in ".{0,200}", peer in any::<[u8; 4]>()) {
            let _ = client_ip(IpAddr::from(peer), Some(&header), &proxies());
        }

        #[test]
        fn cidr_parse_never_panics(text in ".{0,50}") {
            let _ = Cidr::parse(&text);
        }

        #[test]
        fn untrusted_peer_always_wins(header in ".{0,100}", last in 11u8..=255) {
            let peer = IpAddr::from([last, 1, 2, 3]);
            prop_assert_eq!(client_ip(peer, Some(&header), &proxies()), peer);
        }
    }
}
