//! IPv6 Neighbor Discovery (RFC 4861): Neighbor Solicitation and Advertisement with their
//! link-layer address options, the receive-side validity checks, and the replies we send.

use super::ethernet::{Frame, VlanTag};
use super::ipv6::{
    ALL_NODES, Ipv6Header, NEXT_HEADER_ICMPV6, icmpv6_checksum, is_solicited_node, multicast_mac,
    solicited_node,
};
use super::{DecodeError, Layer, MacAddr, Reader};
use std::net::Ipv6Addr;

/// ICMPv6 type of a Neighbor Solicitation.
pub const TYPE_NS: u8 = 135;
/// ICMPv6 type of a Neighbor Advertisement.
pub const TYPE_NA: u8 = 136;
/// Option type of the Source Link-Layer Address option.
pub const OPT_SOURCE_LL: u8 = 1;
/// Option type of the Target Link-Layer Address option.
pub const OPT_TARGET_LL: u8 = 2;
/// The only hop limit NDP accepts: a packet that crossed a router would have less.
pub const NDP_HOP_LIMIT: u8 = 255;
/// Shortest NS or NA: type, code, checksum, flags/reserved, target.
pub const MIN_NDP_LEN: usize = 24;

/// An NDP option.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NdpOption {
    /// Source Link-Layer Address (type 1): the sender's MAC.
    SourceLinkLayer(MacAddr),
    /// Target Link-Layer Address (type 2): the MAC the target is at.
    TargetLinkLayer(MacAddr),
    /// Any other option, kept so it round-trips.
    Other {
        /// Option type.
        kind: u8,
        /// Option body after type and length; padded with zeros to a multiple of 8 on encode.
        data: Vec<u8>,
    },
}

impl NdpOption {
    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            NdpOption::SourceLinkLayer(mac) | NdpOption::TargetLinkLayer(mac) => {
                let kind = if matches!(self, NdpOption::SourceLinkLayer(_)) {
                    OPT_SOURCE_LL
                } else {
                    OPT_TARGET_LL
                };
                out.extend_from_slice(&[kind, 1]);
                out.extend_from_slice(&mac.0);
            }
            NdpOption::Other { kind, data } => {
                // Length is in 8-octet units and one byte wide; longer bodies are cut.
                let units = (data.len() + 2).div_ceil(8).clamp(1, 255);
                let body = units * 8 - 2;
                out.extend_from_slice(&[*kind, units as u8]);
                out.extend(data.iter().copied().chain(std::iter::repeat(0)).take(body));
            }
        }
    }

    fn decode_all(buf: &[u8]) -> Result<Vec<Self>, DecodeError> {
        let mut r = Reader::new(buf, Layer::NdpOption);
        let mut out = Vec::new();
        while !r.rest().is_empty() {
            let kind = r.u8()?;
            let units = r.u8()?;
            if units == 0 {
                return Err(DecodeError::ZeroLengthOption);
            }
            let body = r.take(usize::from(units) * 8 - 2)?;
            out.push(match kind {
                OPT_SOURCE_LL | OPT_TARGET_LL => {
                    if units != 1 {
                        return Err(DecodeError::LinkLayerOptionLength(units));
                    }
                    let mac = Reader::new(body, Layer::NdpOption).mac()?;
                    if kind == OPT_SOURCE_LL {
                        NdpOption::SourceLinkLayer(mac)
                    } else {
                        NdpOption::TargetLinkLayer(mac)
                    }
                }
                _ => NdpOption::Other {
                    kind,
                    data: body.to_vec(),
                },
            });
        }
        Ok(out)
    }
}

/// The R, S and O flags of a Neighbor Advertisement (the first byte of its flags word).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NaFlags(pub u8);

impl NaFlags {
    /// R: the sender is a router.
    pub const ROUTER: NaFlags = NaFlags(0x80);
    /// S: sent in response to a solicitation.
    pub const SOLICITED: NaFlags = NaFlags(0x40);
    /// O: replace cached link-layer addresses.
    pub const OVERRIDE: NaFlags = NaFlags(0x20);

    /// True when every flag in `other` is set here.
    pub fn contains(self, other: NaFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for NaFlags {
    type Output = NaFlags;
    fn bitor(self, rhs: NaFlags) -> NaFlags {
        NaFlags(self.0 | rhs.0)
    }
}

/// An NS or NA body.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NdpMessage {
    /// Neighbor Solicitation: who has `target`?
    Solicitation {
        /// The address being resolved.
        target: Ipv6Addr,
        /// Options, normally a Source Link-Layer Address.
        options: Vec<NdpOption>,
    },
    /// Neighbor Advertisement: `target` is at the Target Link-Layer Address.
    Advertisement {
        /// R, S, O.
        flags: NaFlags,
        /// The address advertised.
        target: Ipv6Addr,
        /// Options, normally a Target Link-Layer Address.
        options: Vec<NdpOption>,
    },
}

impl NdpMessage {
    /// The target address.
    pub fn target(&self) -> Ipv6Addr {
        match self {
            NdpMessage::Solicitation { target, .. } | NdpMessage::Advertisement { target, .. } => {
                *target
            }
        }
    }

    /// The options.
    pub fn options(&self) -> &[NdpOption] {
        match self {
            NdpMessage::Solicitation { options, .. }
            | NdpMessage::Advertisement { options, .. } => options,
        }
    }
}

/// Why a well-formed NS or NA must still be discarded (RFC 4861 §7.1.1, §7.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum NdpInvalid {
    /// Hop limit not 255: the packet may come from off-link.
    #[error("hop limit {0}, NDP requires 255")]
    HopLimit(u8),
    /// ICMPv6 code not 0.
    #[error("ICMPv6 code {0}, NDP requires 0")]
    Code(u8),
    /// The target is a multicast address.
    #[error("target is a multicast address")]
    TargetMulticast,
    /// A DAD solicitation (source ::) carrying a Source Link-Layer Address option.
    #[error("solicitation from :: carries a source link-layer address")]
    SourceLinkLayerFromUnspecified,
    /// A DAD solicitation (source ::) not sent to a solicited-node group.
    #[error("solicitation from :: not sent to a solicited-node group")]
    UnspecifiedSourceNotToSolicitedNode,
    /// An advertisement to a multicast destination with the Solicited flag.
    #[error("solicited advertisement sent to a multicast address")]
    SolicitedToMulticast,
}

/// An IPv6 packet carrying an NS or NA.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NdpPacket {
    /// The IPv6 header; `next_header` is forced to ICMPv6 on encode.
    pub ip: Ipv6Header,
    /// The ICMPv6 code (0 in every valid packet; kept so invalid ones can be built and tested).
    pub code: u8,
    /// The message.
    pub message: NdpMessage,
}

impl NdpPacket {
    fn new(src: Ipv6Addr, dst: Ipv6Addr, message: NdpMessage) -> Self {
        Self {
            ip: Ipv6Header {
                traffic_class: 0,
                flow_label: 0,
                next_header: NEXT_HEADER_ICMPV6,
                hop_limit: NDP_HOP_LIMIT,
                src,
                dst,
            },
            code: 0,
            message,
        }
    }

    /// A solicitation for `target` to its solicited-node group; a source of :: (DAD) gets no
    /// Source Link-Layer Address option.
    pub fn solicitation(src: Ipv6Addr, src_mac: MacAddr, target: Ipv6Addr) -> Self {
        let options = if src.is_unspecified() {
            vec![]
        } else {
            vec![NdpOption::SourceLinkLayer(src_mac)]
        };
        Self::new(
            src,
            solicited_node(target),
            NdpMessage::Solicitation { target, options },
        )
    }

    /// An unsolicited advertisement to all nodes with Override set: "`target` is now at `mac`".
    pub fn unsolicited_advertisement(src: Ipv6Addr, mac: MacAddr, target: Ipv6Addr) -> Self {
        let message = NdpMessage::Advertisement {
            flags: NaFlags::OVERRIDE,
            target,
            options: vec![NdpOption::TargetLinkLayer(mac)],
        };
        Self::new(src, ALL_NODES, message)
    }

    /// The advertisement answering a solicitation for its target (RFC 4861 §7.2.4): to the
    /// solicitor with Solicited and Override, or to all nodes without Solicited when the
    /// solicitor is :: (DAD). `None` if `ns` is not a solicitation.
    pub fn solicited_advertisement(ns: &NdpPacket, src: Ipv6Addr, mac: MacAddr) -> Option<Self> {
        let NdpMessage::Solicitation { target, .. } = ns.message else {
            return None;
        };
        let (dst, flags) = if ns.ip.src.is_unspecified() {
            (ALL_NODES, NaFlags::OVERRIDE)
        } else {
            (ns.ip.src, NaFlags::SOLICITED | NaFlags::OVERRIDE)
        };
        let message = NdpMessage::Advertisement {
            flags,
            target,
            options: vec![NdpOption::TargetLinkLayer(mac)],
        };
        Some(Self::new(src, dst, message))
    }

    /// The Source Link-Layer Address option's MAC, if present.
    pub fn source_link_layer(&self) -> Option<MacAddr> {
        self.message.options().iter().find_map(|o| match o {
            NdpOption::SourceLinkLayer(m) => Some(*m),
            _ => None,
        })
    }

    /// The Target Link-Layer Address option's MAC, if present.
    pub fn target_link_layer(&self) -> Option<MacAddr> {
        self.message.options().iter().find_map(|o| match o {
            NdpOption::TargetLinkLayer(m) => Some(*m),
            _ => None,
        })
    }

    /// The ICMPv6 message bytes with the checksum filled in.
    pub fn encode_icmp(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        let (kind, flags, target, options) = match &self.message {
            NdpMessage::Solicitation { target, options } => (TYPE_NS, 0, target, options),
            NdpMessage::Advertisement {
                flags,
                target,
                options,
            } => (TYPE_NA, flags.0 & 0xe0, target, options),
        };
        out.extend_from_slice(&[kind, self.code, 0, 0, flags, 0, 0, 0]);
        out.extend_from_slice(&target.octets());
        for o in options {
            o.encode_into(&mut out);
        }
        let sum = icmpv6_checksum(self.ip.src, self.ip.dst, &out);
        out[2..4].copy_from_slice(&sum.to_be_bytes());
        out
    }

    /// The whole IPv6 packet's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let icmp = self.encode_icmp();
        let mut ip = self.ip;
        ip.next_header = NEXT_HEADER_ICMPV6;
        let mut out = Vec::with_capacity(40 + icmp.len());
        ip.encode_into(u16::try_from(icmp.len()).unwrap_or(u16::MAX), &mut out);
        out.extend_from_slice(&icmp);
        out
    }

    /// Decodes an IPv6 packet carrying an NS or NA and verifies its checksum. Structure only:
    /// call [`NdpPacket::validate`] for the RFC 4861 receive checks.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (ip, icmp) = Ipv6Header::decode(buf)?;
        if ip.next_header != NEXT_HEADER_ICMPV6 {
            return Err(DecodeError::NotIcmpv6(ip.next_header));
        }
        let mut r = Reader::new(icmp, Layer::Icmpv6);
        let kind = r.u8()?;
        if kind != TYPE_NS && kind != TYPE_NA {
            return Err(DecodeError::NotNdp(kind));
        }
        if icmp.len() < MIN_NDP_LEN {
            return Err(DecodeError::Truncated(Layer::Icmpv6));
        }
        let code = r.u8()?;
        let found = r.u16()?;
        if icmpv6_checksum(ip.src, ip.dst, icmp) != 0 {
            let mut zeroed = icmp.to_vec();
            zeroed[2..4].fill(0);
            return Err(DecodeError::Icmpv6Checksum {
                found,
                expected: icmpv6_checksum(ip.src, ip.dst, &zeroed),
            });
        }
        let flags = NaFlags(r.u8()? & 0xe0);
        r.take(3)?;
        let target = r.ipv6()?;
        let options = NdpOption::decode_all(r.rest())?;
        let message = if kind == TYPE_NS {
            NdpMessage::Solicitation { target, options }
        } else {
            NdpMessage::Advertisement {
                flags,
                target,
                options,
            }
        };
        Ok(Self { ip, code, message })
    }

    /// The RFC 4861 §7.1 receive checks for a decoded NS or NA.
    pub fn validate(&self) -> Result<(), NdpInvalid> {
        if self.ip.hop_limit != NDP_HOP_LIMIT {
            return Err(NdpInvalid::HopLimit(self.ip.hop_limit));
        }
        if self.code != 0 {
            return Err(NdpInvalid::Code(self.code));
        }
        if self.message.target().is_multicast() {
            return Err(NdpInvalid::TargetMulticast);
        }
        match &self.message {
            NdpMessage::Solicitation { .. } if self.ip.src.is_unspecified() => {
                if !is_solicited_node(self.ip.dst) {
                    return Err(NdpInvalid::UnspecifiedSourceNotToSolicitedNode);
                }
                if self.source_link_layer().is_some() {
                    return Err(NdpInvalid::SourceLinkLayerFromUnspecified);
                }
            }
            NdpMessage::Advertisement { flags, .. }
                if self.ip.dst.is_multicast() && flags.contains(NaFlags::SOLICITED) =>
            {
                return Err(NdpInvalid::SolicitedToMulticast);
            }
            _ => {}
        }
        Ok(())
    }
}

/// The frame carrying an unsolicited advertisement of `target` at `mac` to all nodes, sent
/// several times on takeover.
pub fn unsolicited_frame(
    src: Ipv6Addr,
    mac: MacAddr,
    target: Ipv6Addr,
    vlan: Option<VlanTag>,
) -> Frame {
    Frame::ndp(
        multicast_mac(ALL_NODES),
        mac,
        vlan,
        NdpPacket::unsolicited_advertisement(src, mac, target),
    )
}
