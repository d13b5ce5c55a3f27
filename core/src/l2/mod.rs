//! Layer-2 announcing on the wire, sans-IO: Ethernet, ARP, IPv6 and NDP codecs, and the
//! responder's decision for every ARP request and neighbour solicitation that arrives.
//!
//! Decoders take bytes and never panic: a short buffer or a hostile length field is a typed
//! [`DecodeError`], and every packet the responder does not answer carries a
//! [`responder::DropReason`] so tests and debug logs say why.

pub mod arp;
pub mod ethernet;
pub mod ipv6;
pub mod ndp;
pub mod responder;

pub use arp::{ArpOperation, ArpPacket};
pub use ethernet::{EthernetHeader, Frame, Payload, VlanTag};
pub use ipv6::Ipv6Header;
pub use ndp::{NaFlags, NdpInvalid, NdpMessage, NdpOption, NdpPacket};
pub use responder::{Decision, DropReason, IpStatus, ResponderState, decide_arp, decide_ndp};

use std::fmt;
use std::str::FromStr;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00, the "unknown" target hardware address in ARP requests.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// True for group addresses (the I/G bit), which includes broadcast.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 0x01 == 0x01
    }

    /// True for 00:00:00:00:00:00.
    pub fn is_zero(self) -> bool {
        self == Self::ZERO
    }

    /// True when this may be the address of one station: not zero, not a group address.
    pub fn is_unicast(self) -> bool {
        !self.is_zero() && !self.is_multicast()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a MAC address (want six hex octets separated by ':')")]
pub struct ParseMacError;

impl FromStr for MacAddr {
    type Err = ParseMacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for slot in &mut out {
            let part = parts.next().ok_or(ParseMacError)?;
            if part.len() != 2 {
                return Err(ParseMacError);
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| ParseMacError)?;
        }
        if parts.next().is_some() {
            return Err(ParseMacError);
        }
        Ok(MacAddr(out))
    }
}

/// The layer a truncated input ran out in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    /// The 14-byte Ethernet II header.
    Ethernet,
    /// An 802.1Q tag.
    VlanTag,
    /// The 28-byte ARP body.
    Arp,
    /// The 40-byte IPv6 header, or a payload shorter than its length field says.
    Ipv6,
    /// The fixed part of an ICMPv6 NDP message.
    Icmpv6,
    /// An NDP option running past the end of the message.
    NdpOption,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Ethernet => "Ethernet header",
            Layer::VlanTag => "802.1Q tag",
            Layer::Arp => "ARP packet",
            Layer::Ipv6 => "IPv6 packet",
            Layer::Icmpv6 => "ICMPv6 message",
            Layer::NdpOption => "NDP option",
        })
    }
}

/// Why bytes could not be decoded as the frame or packet asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside this layer.
    #[error("truncated {0}")]
    Truncated(Layer),
    /// ARP hardware type other than Ethernet (1).
    #[error("ARP hardware type {0} is not Ethernet (1)")]
    ArpHardwareType(u16),
    /// ARP protocol type other than IPv4 (0x0800).
    #[error("ARP protocol type {0:#06x} is not IPv4")]
    ArpProtocolType(u16),
    /// ARP hardware address length other than 6.
    #[error("ARP hardware address length {0} is not 6")]
    ArpHardwareLength(u8),
    /// ARP protocol address length other than 4.
    #[error("ARP protocol address length {0} is not 4")]
    ArpProtocolLength(u8),
    /// ARP operation other than request (1) or reply (2).
    #[error("ARP operation {0} is neither request nor reply")]
    ArpOperation(u16),
    /// The IP version nibble is not 6.
    #[error("IP version {0} in an IPv6 frame")]
    Ipv6Version(u8),
    /// The IPv6 next header is not ICMPv6 (58); extension headers are not followed.
    #[error("IPv6 next header {0} is not ICMPv6")]
    NotIcmpv6(u8),
    /// An ICMPv6 type other than neighbour solicitation (135) or advertisement (136).
    #[error("ICMPv6 type {0} is not NDP NS/NA")]
    NotNdp(u8),
    /// The ICMPv6 checksum does not match the pseudo-header and message.
    #[error("ICMPv6 checksum {found:#06x}, expected {expected:#06x}")]
    Icmpv6Checksum {
        /// The checksum in the packet.
        found: u16,
        /// The checksum the packet should carry.
        expected: u16,
    },
    /// An NDP option with length 0, which RFC 4861 §4.6 says to discard the packet for.
    #[error("NDP option of length 0")]
    ZeroLengthOption,
    /// A link-layer address option whose length is not one 8-octet unit (Ethernet).
    #[error("NDP link-layer address option of {0} units, Ethernet needs 1")]
    LinkLayerOptionLength(u8),
}

/// A bounds-checked reader: every read says whether the bytes were there, so a length field in
/// the input can never make us index past the end.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    layer: Layer,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], layer: Layer) -> Self {
        Self { buf, layer }
    }
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated(self.layer));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn mac(&mut self) -> Result<MacAddr, DecodeError> {
        Ok(MacAddr(self.array()?))
    }
    pub(crate) fn ipv4(&mut self) -> Result<std::net::Ipv4Addr, DecodeError> {
        Ok(std::net::Ipv4Addr::from(self.array::<4>()?))
    }
    pub(crate) fn ipv6(&mut self) -> Result<std::net::Ipv6Addr, DecodeError> {
        Ok(std::net::Ipv6Addr::from(self.array::<16>()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_and_prints() {
        let mac: MacAddr = "02:00:5e:10:00:01".parse().unwrap();
        assert_eq!(mac, MacAddr([0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]));
        assert_eq!(mac.to_string(), "02:00:5e:10:00:01");
        assert!(mac.is_unicast());
        assert!(MacAddr::BROADCAST.is_multicast());
        for bad in [
            "",
            "02:00:5e:10:00",
            "02:00:5e:10:00:01:02",
            "0:00:5e:10:00:01",
            "zz:00:5e:10:00:01",
        ] {
            assert_eq!(bad.parse::<MacAddr>(), Err(ParseMacError), "{bad}");
        }
    }
}
