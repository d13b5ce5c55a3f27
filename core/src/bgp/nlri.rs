//! Address families and the prefix encoding shared by NLRI, withdrawn routes and MP_*_NLRI.

use super::{Reader, wire_enum};
use ipnet::{Ipv4Net, Ipv6Net};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

wire_enum! {
    /// Address Family Identifier (IANA).
    pub enum Afi: u16 {
        /// IPv4.
        Ipv4 = 1 => "IPv4",
        /// IPv6.
        Ipv6 = 2 => "IPv6",
    }
}

wire_enum! {
    /// Subsequent Address Family Identifier (IANA).
    pub enum Safi: u8 {
        /// Unicast forwarding.
        Unicast = 1 => "unicast",
        /// Multicast forwarding.
        Multicast = 2 => "multicast",
    }
}

/// The address families this speaker exchanges routes for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 unicast (AFI 1, SAFI 1).
    Ipv4Unicast,
    /// IPv6 unicast (AFI 2, SAFI 1).
    Ipv6Unicast,
}

impl Family {
    /// The family for an AFI/SAFI pair, if we speak it.
    pub fn from_afi_safi(afi: Afi, safi: Safi) -> Option<Self> {
        match (afi, safi) {
            (Afi::Ipv4, Safi::Unicast) => Some(Self::Ipv4Unicast),
            (Afi::Ipv6, Safi::Unicast) => Some(Self::Ipv6Unicast),
            _ => None,
        }
    }

    /// AFI of this family.
    pub fn afi(self) -> Afi {
        match self {
            Self::Ipv4Unicast => Afi::Ipv4,
            Self::Ipv6Unicast => Afi::Ipv6,
        }
    }

    /// SAFI of this family.
    pub fn safi(self) -> Safi {
        Safi::Unicast
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipv4Unicast => "ipv4-unicast",
            Self::Ipv6Unicast => "ipv6-unicast",
        })
    }
}

/// Why a run of encoded prefixes could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefixError {
    /// Prefix length beyond 32 (IPv4) or 128 (IPv6).
    LengthTooLong(u8),
    /// The prefix bytes run past the end of the field.
    Truncated,
}

fn prefix_bytes(len: u8) -> usize {
    usize::from(len).div_ceil(8)
}

/// Reads one (length, prefix) run into `N` bytes, or says why not.
fn read_prefix<const N: usize>(r: &mut Reader<'_>) -> Result<([u8; N], u8), PrefixError> {
    let len = r.u8().ok_or(PrefixError::Truncated)?;
    if usize::from(len) > N * 8 {
        return Err(PrefixError::LengthTooLong(len));
    }
    let bytes = r.take(prefix_bytes(len)).ok_or(PrefixError::Truncated)?;
    let mut addr = [0u8; N];
    addr[..bytes.len()].copy_from_slice(bytes);
    Ok((addr, len))
}

/// Decodes IPv4 prefixes; host bits beyond the length are cleared (RFC 4271 says they are
/// irrelevant), so equal routes compare equal.
pub fn decode_ipv4_prefixes(buf: &[u8]) -> Result<Vec<Ipv4Net>, PrefixError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while !r.is_empty() {
        let (addr, len) = read_prefix::<4>(&mut r)?;
        let net =
            Ipv4Net::new(Ipv4Addr::from(addr), len).map_err(|_| PrefixError::LengthTooLong(len))?;
        out.push(net.trunc());
    }
    Ok(out)
}

/// Decodes IPv6 prefixes; host bits are cleared as for IPv4.
pub fn decode_ipv6_prefixes(buf: &[u8]) -> Result<Vec<Ipv6Net>, PrefixError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while !r.is_empty() {
        let (addr, len) = read_prefix::<16>(&mut r)?;
        let net =
            Ipv6Net::new(Ipv6Addr::from(addr), len).map_err(|_| PrefixError::LengthTooLong(len))?;
        out.push(net.trunc());
    }
    Ok(out)
}

/// Encodes IPv4 prefixes as (length, minimal prefix bytes).
pub fn encode_ipv4_prefixes(prefixes: &[Ipv4Net], out: &mut Vec<u8>) {
    for p in prefixes {
        out.push(p.prefix_len());
        out.extend_from_slice(&p.network().octets()[..prefix_bytes(p.prefix_len())]);
    }
}

/// Encodes IPv6 prefixes as (length, minimal prefix bytes).
pub fn encode_ipv6_prefixes(prefixes: &[Ipv6Net], out: &mut Vec<u8>) {
    for p in prefixes {
        out.push(p.prefix_len());
        out.extend_from_slice(&p.network().octets()[..prefix_bytes(p.prefix_len())]);
    }
}
