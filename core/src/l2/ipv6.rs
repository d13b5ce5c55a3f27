//! The IPv6 header (RFC 8200), the ICMPv6 checksum (RFC 4443 §2.3) and the multicast addresses
//! NDP uses (RFC 4291 §2.7.1, RFC 2464 §7).

use super::{DecodeError, Layer, MacAddr, Reader};
use std::net::Ipv6Addr;

/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// Next-header value of ICMPv6.
pub const NEXT_HEADER_ICMPV6: u8 = 58;
/// All-nodes link-local multicast, ff02::1.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// An IPv6 header without its payload length, which encoders compute from the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Header {
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits; higher bits are dropped on encode).
    pub flow_label: u32,
    /// Next header (58 for ICMPv6).
    pub next_header: u8,
    /// Hop limit; NDP requires 255 so off-link senders cannot forge it.
    pub hop_limit: u8,
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
}

impl Ipv6Header {
    /// Appends the 40 header bytes for a payload of `payload_len` bytes.
    pub fn encode_into(&self, payload_len: u16, out: &mut Vec<u8>) {
        let first =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0x000f_ffff);
        out.extend_from_slice(&first.to_be_bytes());
        out.extend_from_slice(&payload_len.to_be_bytes());
        out.push(self.next_header);
        out.push(self.hop_limit);
        out.extend_from_slice(&self.src.octets());
        out.extend_from_slice(&self.dst.octets());
    }

    /// The 40 header bytes for a payload of `payload_len` bytes.
    pub fn encode(&self, payload_len: u16) -> Vec<u8> {
        let mut out = Vec::with_capacity(IPV6_HEADER_LEN);
        self.encode_into(payload_len, &mut out);
        out
    }

    /// Decodes the header and returns it with exactly the payload its length field covers
    /// (bytes beyond it, such as Ethernet padding, are dropped).
    pub fn decode(buf: &[u8]) -> Result<(Self, &[u8]), DecodeError> {
        let mut r = Reader::new(buf, Layer::Ipv6);
        let first = r.u32()?;
        let version = (first >> 28) as u8;
        if version != 6 {
            return Err(DecodeError::Ipv6Version(version));
        }
        let payload_len = usize::from(r.u16()?);
        let next_header = r.u8()?;
        let hop_limit = r.u8()?;
        let src = r.ipv6()?;
        let dst = r.ipv6()?;
        let payload = r.take(payload_len)?;
        let header = Self {
            traffic_class: (first >> 20) as u8,
            flow_label: first & 0x000f_ffff,
            next_header,
            hop_limit,
            src,
            dst,
        };
        Ok((header, payload))
    }
}

/// The ICMPv6 checksum of `message` (with its checksum field zeroed) under the pseudo-header
/// of RFC 8200 §8.1. Verifying a received message: compute over it as received and expect 0.
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        let mut chunks = bytes.chunks_exact(2);
        for c in &mut chunks {
            sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u64::from(u16::from_be_bytes([*last, 0]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    // Upper-layer length as 32 bits, three zero bytes, next header.
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, NEXT_HEADER_ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The solicited-node multicast group of `ip`: ff02::1:ff00:0/104 plus its low 24 bits.
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// True when `addr` is in ff02::1:ff00:0/104.
pub fn is_solicited_node(addr: Ipv6Addr) -> bool {
    addr.octets()[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff]
}

/// The Ethernet MAC an IPv6 multicast group maps to: 33:33 and the group's low 32 bits.
pub fn multicast_mac(group: Ipv6Addr) -> MacAddr {
    let o = group.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solicited_node_group_and_mac() {
        let ip: Ipv6Addr = "2001:db8:0:1::4d:c0de".parse().unwrap();
        let group = solicited_node(ip);
        assert_eq!(group, "ff02::1:ff4d:c0de".parse::<Ipv6Addr>().unwrap());
        assert!(is_solicited_node(group));
        assert!(!is_solicited_node(ALL_NODES));
        assert_eq!(multicast_mac(group).to_string(), "33:33:ff:4d:c0:de");
        assert_eq!(multicast_mac(ALL_NODES).to_string(), "33:33:00:00:00:01");
    }

    #[test]
    fn checksum_of_odd_length_pads_with_zero() {
        let a = icmpv6_checksum(Ipv6Addr::UNSPECIFIED, ALL_NODES, &[0x12]);
        let b = icmpv6_checksum(Ipv6Addr::UNSPECIFIED, ALL_NODES, &[0x12, 0x00]);
        // Same sum, but the length in the pseudo-header differs by one.
        assert_eq!(a.wrapping_sub(b), 1);
    }

    #[test]
    fn wrong_version_and_short_payload() {
        let mut bytes = Ipv6Header {
            traffic_class: 0,
            flow_label: 0,
            next_header: NEXT_HEADER_ICMPV6,
            hop_limit: 255,
            src: Ipv6Addr::LOCALHOST,
            dst: ALL_NODES,
        }
        .encode(8);
        assert_eq!(
            Ipv6Header::decode(&bytes),
            Err(DecodeError::Truncated(Layer::Ipv6))
        );
        bytes.extend_from_slice(&[0; 8]);
        assert!(Ipv6Header::decode(&bytes).is_ok());
        bytes[0] = 0x45;
        assert_eq!(Ipv6Header::decode(&bytes), Err(DecodeError::Ipv6Version(4)));
    }
}
