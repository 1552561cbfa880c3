//! Which addresses deliveries may reach (SPEC §7), as pure functions: the address ranges
//! an operator allows, and what counts as internal (private, loopback, link-local,
//! metadata, documentation, tunnels…). The sender applies them to resolved addresses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// Which destination addresses deliveries may reach.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed: Vec<Cidr>,
}

impl AddressPolicy {
    pub fn new(allowed: Vec<Cidr>) -> Self {
        Self { allowed }
    }

    /// Public addresses always; others (private, loopback, link-local, metadata, …) only
    /// inside an allowed range. An IPv6 address that stands for an IPv4 one (IPv4-mapped,
    /// NAT64) is judged as that IPv4 address.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = embedded_v4(ip).map_or(ip, IpAddr::V4);
        !is_internal(ip) || self.allowed.iter().any(|c| c.contains(ip))
    }
}

/// The IPv4 address an IPv6 address reaches, when it is only a way of writing one:
/// IPv4-mapped (`::ffff:a.b.c.d`) or NAT64's well-known prefix (`64:ff9b::a.b.c.d`, which
/// RFC 6052 allows only for global IPv4 addresses and a DNS64 resolver hands out for
/// every IPv4-only host on an IPv6-only network).
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    in_range(u128::from(v6), NAT64_WELL_KNOWN).then(|| Ipv4Addr::from(u128::from(v6) as u32))
}

/// An IPv6 range as (network, prefix length).
type Range6 = (u128, u32);

const fn range6(segments: [u16; 8], prefix: u32) -> Range6 {
    let mut network = 0u128;
    let mut i = 0;
    while i < 8 {
        network = (network << 16) | segments[i] as u128;
        i += 1;
    }
    (network, prefix)
}

fn in_range(ip: u128, (network, prefix): Range6) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    ip & mask == network & mask
}

const NAT64_WELL_KNOWN: Range6 = range6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
/// Global unicast: everything outside it (loopback, `::/96` IPv4-compatible, unique local,
/// link-local, the deprecated site-local `fec0::/10`, multicast, discard-only `100::/64`,
/// local-use NAT64 `64:ff9b:1::/48`, …) is not an internet destination.
const GLOBAL_UNICAST: Range6 = range6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);
/// Inside global unicast, what is not globally routable or tunnels to an IPv4 address of
/// the sender's choosing.
const SPECIAL_V6: [Range6; 4] = [
    // IETF protocol assignments: Teredo (2001::/32, a tunnel to any IPv4 address),
    // benchmarking (2001:2::/48), ORCHID; the few anycast services in it are no webhooks.
    range6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
    range6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    range6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),     // 6to4: a tunnel to any IPv4 address
    range6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),     // documentation (RFC 9637)
];

/// IPv4 ranges that are not internet destinations (IANA's special-purpose registry, the
/// ones not globally reachable), as (network, prefix length).
const SPECIAL_V4: [(u32, u32); 15] = [
    (0x0000_0000, 8),  // "this network"
    (0x0a00_0000, 8),  // private
    (0x6440_0000, 10), // carrier-grade NAT
    (0x7f00_0000, 8),  // loopback
    (0xa9fe_0000, 16), // link-local, with the metadata address 169.254.169.254
    (0xac10_0000, 12), // private
    (0xc000_0000, 24), // IETF protocol assignments
    (0xc000_0200, 24), // documentation (TEST-NET-1)
    (0xc058_6300, 24), // 6to4 relay anycast (deprecated)
    (0xc0a8_0000, 16), // private
    (0xc612_0000, 15), // benchmarking
    (0xc633_6400, 24), // documentation (TEST-NET-2)
    (0xcb00_7100, 24), // documentation (TEST-NET-3)
    (0xe000_0000, 4),  // multicast
    (0xf000_0000, 4),  // reserved, and the broadcast address
];

/// Addresses that reach this machine, its network, cloud metadata services, or anything
/// else that is not a public internet destination.
pub fn is_internal(ip: IpAddr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_internal_v4(v4);
    }
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            !in_range(bits, GLOBAL_UNICAST) || SPECIAL_V6.iter().any(|r| in_range(bits, *r))
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let bits = u32::from(ip);
    SPECIAL_V4.iter().any(|&(network, prefix)| {
        let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
        bits & mask == network & mask
    })
}

/// An address range, `10.0.0.0/8` or `::1/128`; a bare address is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Why a text is not an address range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("'{0}' is not an address range such as 10.0.0.0/8")]
    NotARange(String),
    #[error("'{text}': the prefix length must be 0–{max}")]
    Prefix { text: String, max: u8 },
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let s = s.trim();
        let (addr, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let network: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::NotARange(s.to_owned()))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                p.parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| CidrError::Prefix {
                        text: s.to_owned(),
                        max,
                    })?
            }
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_ranges() {
        let net: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(net.contains("127.1.2.3".parse().unwrap()));
        assert!(!net.contains("128.0.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let one: Cidr = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err() && "nope".parse::<Cidr>().is_err());
    }
}
