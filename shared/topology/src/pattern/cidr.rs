//! IP addresses and `cidr` ranges (event-ruler's `CIDR`).

use std::net::{IpAddr, Ipv6Addr};

/// An inclusive range of addresses of one family (a single address for exact IP values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpRange {
    v6: bool,
    low: u128,
    high: u128,
}

/// An address as (is IPv6, value); IPv4-mapped IPv6 addresses count as IPv4, as in Java.
pub(crate) type Ip = (bool, u128);

impl IpRange {
    pub(crate) fn single((v6, value): Ip) -> Self {
        Self { v6, low: value, high: value }
    }

    pub(crate) fn contains(&self, &(v6, value): &Ip) -> bool {
        self.v6 == v6 && (self.low..=self.high).contains(&value)
    }

    /// Parses `address/mask` with event-ruler's checks and messages.
    pub(crate) fn parse(cidr: &str) -> Result<Self, String> {
        // Java's `split("/")` drops trailing empty strings.
        let mut parts: Vec<&str> = cidr.split('/').collect();
        while parts.len() > 1 && parts.last() == Some(&"") {
            parts.pop();
        }
        let [address, mask] = parts.as_slice() else { return Err("Malformed CIDR, one '/' required".into()) };
        let mask: i32 = mask.parse().map_err(|_| "Malformed CIDR, mask bits must be an integer".to_owned())?;
        if mask < 0 {
            return Err("Malformed CIDR, mask bits must not be negative".into());
        }
        if !looks_like_ip(address) {
            return Err(format!("Nonstandard IP address: {address}"));
        }
        let (v6, value) = parse_ip(address).ok_or_else(|| format!("Invalid IP address: {address}"))?;
        let bits: u32 = if v6 { 128 } else { 32 };
        if mask.unsigned_abs() >= bits {
            return Err(if v6 { "IPv6 mask bits must be < 128".into() } else { "IPv4 mask bits must be < 32".into() });
        }
        let variable = bits - mask.unsigned_abs();
        let host = if variable >= 128 { u128::MAX } else { (1u128 << variable) - 1 };
        Ok(Self { v6, low: value & !host, high: value | host })
    }
}

/// event-ruler only treats strings matching these shapes as addresses (`Constants.IPv4_REGEX`,
/// `IPv6_REGEX`): four dot-separated digit runs, or hex digits and colons with a colon.
pub(crate) fn looks_like_ip(s: &str) -> bool {
    let v4 = {
        let parts: Vec<&str> = s.split('.').collect();
        parts.len() == 4 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let v6 = s.contains(':') && s.bytes().all(|b| b == b':' || b.is_ascii_hexdigit());
    v4 || v6
}

/// The address a string spells, if it is an IP literal.
pub(crate) fn parse_ip(s: &str) -> Option<Ip> {
    if !looks_like_ip(s) {
        return None;
    }
    match s.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some((false, u128::from(u32::from(v4)))),
        IpAddr::V6(v6) => Some(mapped(v6)),
    }
}

fn mapped(v6: Ipv6Addr) -> Ip {
    match v6.to_ipv4_mapped() {
        Some(v4) => (false, u128::from(u32::from(v4))),
        None => (true, u128::from(v6)),
    }
}
