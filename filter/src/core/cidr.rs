//! Source-address allow lists: IPv4 and IPv6 CIDRs, and the `ip:port` strings Envoy reports as
//! a connection's peer address. IPv4-mapped IPv6 peers match IPv4 ranges, and an IPv4-mapped
//! range (`::ffff:10.0.0.0/104`) is read as the IPv4 range it maps (`10.0.0.0/8`): written as
//! IPv6 it could never match, since mapped peers are compared as IPv4.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: u128,
    prefix: u8,
    v4: bool,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR"))?;
        let (bits, v4, max) = match address {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), true, 32u8),
            IpAddr::V6(v6) => (u128::from(v6), false, 128u8),
        };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}` has an invalid prefix length"))?,
            None => max,
        };
        let mask = mask(prefix, max);
        if bits & !mask != 0 {
            return Err(format!("`{text}` has host bits set"));
        }
        if let (IpAddr::V6(v6), Some(v4_prefix)) = (address, prefix.checked_sub(96)) {
            if let Some(mapped) = v6.to_ipv4_mapped() {
                return Ok(Cidr {
                    network: u128::from(u32::from(mapped)),
                    prefix: v4_prefix,
                    v4: true,
                });
            }
        }
        Ok(Cidr {
            network: bits,
            prefix,
            v4,
        })
    }
}

fn mask(prefix: u8, width: u8) -> u128 {
    let all: u128 = if width == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    let host_bits = u32::from(width.saturating_sub(prefix));
    all.checked_shl(host_bits).unwrap_or(0) & all
}

impl Cidr {
    pub fn contains(&self, address: IpAddr) -> bool {
        let (bits, v4) = match address {
            IpAddr::V4(a) => (u128::from(u32::from(a)), true),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(a) => (u128::from(u32::from(a)), true),
                None => (u128::from(a), false),
            },
        };
        if v4 != self.v4 {
            return false;
        }
        let width = if v4 { 32 } else { 128 };
        bits & mask(self.prefix, width) == self.network
    }
}

/// The IP of a peer address as Envoy reports it (`10.0.0.1:5000`, `[::1]:5000`, or bare).
pub fn peer_ip(address: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(address).ok()?;
    if let Ok(socket) = SocketAddr::from_str(text) {
        return Some(socket.ip());
    }
    if let Ok(ip) = IpAddr::from_str(text) {
        return Some(ip);
    }
    Ipv6Addr::from_str(text.trim_start_matches('[').trim_end_matches(']'))
        .ok()
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        peer_ip(s.as_bytes()).unwrap()
    }

    #[test]
    fn matches_v4_and_v6_ranges() {
        assert!(cidr("10.0.0.0/8").contains(ip("10.1.2.3:5000")));
        assert!(!cidr("10.0.0.0/8").contains(ip("11.0.0.1:5000")));
        assert!(cidr("fd00::/8").contains(ip("[fd12::1]:80")));
        assert!(!cidr("fd00::/8").contains(ip("[fe80::1]:80")));
        assert!(cidr("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(cidr("0.0.0.0/0").contains(ip("1.2.3.4:1")));
        assert!(cidr("::/0").contains(ip("[::1]:1")));
        assert!(
            !cidr("::/0").contains(ip("1.2.3.4:1")),
            "families do not mix"
        );
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_ranges() {
        assert!(cidr("10.0.0.0/8").contains(ip("[::ffff:10.0.0.1]:80")));
    }

    #[test]
    fn rejects_malformed_cidrs() {
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.1/8",
            "fd00::/129",
            "x/8",
            "10.0.0.0/",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unparseable_peers_are_none() {
        assert!(peer_ip(b"").is_none());
        assert!(peer_ip(b"\xff").is_none());
        assert!(peer_ip(b"pipe:/tmp/x").is_none());
    }

    #[test]
    fn ipv4_mapped_ranges_are_their_ipv4_range() {
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped, "10.0.0.0/8".parse().unwrap());
        assert!(mapped.contains("10.1.2.3".parse().unwrap()));
        assert!(mapped.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!mapped.contains("11.0.0.1".parse().unwrap()));
        let host: Cidr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(host, "192.0.2.7/32".parse().unwrap());
        assert!("::ffff:10.0.0.1/104".parse::<Cidr>().is_err());
    }
}
