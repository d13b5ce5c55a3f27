//! Ethernet II framing (IEEE 802.3), with one 802.1Q tag tolerated, and the frames the
//! responder reads and writes.

use super::arp::ArpPacket;
use super::ndp::NdpPacket;
use super::{DecodeError, Layer, MacAddr, Reader};

/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType (TPID) of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// Smallest Ethernet frame without the FCS; shorter frames are padded with zeros on encode.
pub const MIN_FRAME_LEN: usize = 60;
/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;

/// An 802.1Q tag: priority, drop eligibility and VLAN id packed in the TCI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// Tag control information: PCP (3 bits), DEI (1 bit), VID (12 bits).
    pub tci: u16,
}

impl VlanTag {
    /// The VLAN id.
    pub fn vid(self) -> u16 {
        self.tci & 0x0fff
    }
}

/// An Ethernet II header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EthernetHeader {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// The 802.1Q tag, when the frame carried one.
    pub vlan: Option<VlanTag>,
    /// EtherType of the payload (after the tag, if any).
    pub ethertype: u16,
}

impl EthernetHeader {
    /// Bytes this header takes on the wire: 14, or 18 with a tag.
    pub fn len(&self) -> usize {
        HEADER_LEN + if self.vlan.is_some() { 4 } else { 0 }
    }

    /// Never true: a header always has bytes (here for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends the header to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.dst.0);
        out.extend_from_slice(&self.src.0);
        if let Some(tag) = self.vlan {
            out.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            out.extend_from_slice(&tag.tci.to_be_bytes());
        }
        out.extend_from_slice(&self.ethertype.to_be_bytes());
    }

    /// The header's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        self.encode_into(&mut out);
        out
    }

    /// Decodes the header at the start of `buf`; the payload starts at `buf[header.len()..]`.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, Layer::Ethernet);
        let dst = r.mac()?;
        let src = r.mac()?;
        let mut ethertype = r.u16()?;
        let mut vlan = None;
        if ethertype == ETHERTYPE_VLAN {
            let mut tag = Reader::new(r.rest(), Layer::VlanTag);
            vlan = Some(VlanTag { tci: tag.u16()? });
            ethertype = tag.u16()?;
        }
        Ok(Self {
            dst,
            src,
            vlan,
            ethertype,
        })
    }
}

/// What an Ethernet frame carries, as far as the layer-2 responder cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// An ARP packet (EtherType 0x0806).
    Arp(ArpPacket),
    /// An IPv6 neighbour solicitation or advertisement (EtherType 0x86dd).
    Ndp(NdpPacket),
    /// Any other EtherType, kept as bytes (including any padding).
    Other(Vec<u8>),
}

/// A whole Ethernet frame: header and decoded payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The Ethernet header; its `ethertype` is rewritten from the payload on encode.
    pub eth: EthernetHeader,
    /// The payload.
    pub payload: Payload,
}

impl Frame {
    /// A frame carrying an ARP packet.
    pub fn arp(dst: MacAddr, src: MacAddr, vlan: Option<VlanTag>, packet: ArpPacket) -> Self {
        Self {
            eth: EthernetHeader {
                dst,
                src,
                vlan,
                ethertype: ETHERTYPE_ARP,
            },
            payload: Payload::Arp(packet),
        }
    }

    /// A frame carrying an NDP packet.
    pub fn ndp(dst: MacAddr, src: MacAddr, vlan: Option<VlanTag>, packet: NdpPacket) -> Self {
        Self {
            eth: EthernetHeader {
                dst,
                src,
                vlan,
                ethertype: ETHERTYPE_IPV6,
            },
            payload: Payload::Ndp(packet),
        }
    }

    /// The frame's bytes, padded with zeros to the 60-byte Ethernet minimum.
    pub fn encode(&self) -> Vec<u8> {
        let mut eth = self.eth;
        let body = match &self.payload {
            Payload::Arp(p) => {
                eth.ethertype = ETHERTYPE_ARP;
                p.encode()
            }
            Payload::Ndp(p) => {
                eth.ethertype = ETHERTYPE_IPV6;
                p.encode()
            }
            Payload::Other(b) => b.clone(),
        };
        let mut out = Vec::with_capacity((eth.len() + body.len()).max(MIN_FRAME_LEN));
        eth.encode_into(&mut out);
        out.extend_from_slice(&body);
        if out.len() < MIN_FRAME_LEN {
            out.resize(MIN_FRAME_LEN, 0);
        }
        out
    }

    /// Decodes a frame: ARP and IPv6 NDP are parsed (trailing padding ignored), anything else is
    /// kept as bytes. IPv6 that is not NS/NA is an error ([`DecodeError::NotIcmpv6`],
    /// [`DecodeError::NotNdp`]) so callers can tell it apart from garbage.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let eth = EthernetHeader::decode(buf)?;
        let rest = buf.get(eth.len()..).unwrap_or_default();
        let payload = match eth.ethertype {
            ETHERTYPE_ARP => Payload::Arp(ArpPacket::decode(rest)?),
            ETHERTYPE_IPV6 => Payload::Ndp(NdpPacket::decode(rest)?),
            _ => Payload::Other(rest.to_vec()),
        };
        Ok(Self { eth, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
    const B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);

    #[test]
    fn untagged_header_golden() {
        let bytes = [
            0x02, 0, 0, 0, 0, 0x0a, // destination
            0x02, 0, 0, 0, 0, 0x0b, // source
            0x08, 0x06, // EtherType ARP
        ];
        let h = EthernetHeader::decode(&bytes).unwrap();
        assert_eq!(
            h,
            EthernetHeader {
                dst: A,
                src: B,
                vlan: None,
                ethertype: ETHERTYPE_ARP
            }
        );
        assert_eq!(h.encode(), bytes);
        assert_eq!(h.len(), 14);
    }

    #[test]
    fn tagged_header_golden() {
        let bytes = [
            0x02, 0, 0, 0, 0, 0x0a, // destination
            0x02, 0, 0, 0, 0, 0x0b, // source
            0x81, 0x00, // TPID 802.1Q
            0xa0, 0x64, // PCP 5, DEI 0, VID 100
            0x86, 0xdd, // EtherType IPv6
        ];
        let h = EthernetHeader::decode(&bytes).unwrap();
        assert_eq!(h.vlan.map(VlanTag::vid), Some(100));
        assert_eq!(h.ethertype, ETHERTYPE_IPV6);
        assert_eq!(h.encode(), bytes);
        assert_eq!(h.len(), 18);
    }

    #[test]
    fn truncated_headers() {
        assert_eq!(
            EthernetHeader::decode(&[0; 13]),
            Err(DecodeError::Truncated(Layer::Ethernet))
        );
        let mut tagged = vec![0; 12];
        tagged.extend_from_slice(&[0x81, 0x00, 0x00]);
        assert_eq!(
            EthernetHeader::decode(&tagged),
            Err(DecodeError::Truncated(Layer::VlanTag))
        );
    }

    #[test]
    fn other_payload_is_padded() {
        let f = Frame {
            eth: EthernetHeader {
                dst: A,
                src: B,
                vlan: None,
                ethertype: 0x88b5,
            },
            payload: Payload::Other(vec![1, 2, 3]),
        };
        let bytes = f.encode();
        assert_eq!(bytes.len(), MIN_FRAME_LEN);
        assert_eq!(&bytes[14..17], &[1, 2, 3]);
    }
}
