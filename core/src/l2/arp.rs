//! ARP for IPv4 over Ethernet (RFC 826), with the gratuitous forms of RFC 5227 §3 / RFC 5944.

use super::ethernet::{Frame, VlanTag};
use super::{DecodeError, Layer, MacAddr, Reader};
use std::net::Ipv4Addr;

/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_LEN: usize = 28;
/// ARP hardware type for Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// ARP protocol type for IPv4 (the IPv4 EtherType).
pub const PTYPE_IPV4: u16 = 0x0800;

/// The ARP operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// Who-has (1).
    Request,
    /// Is-at (2).
    Reply,
}

impl ArpOperation {
    fn code(self) -> u16 {
        match self {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
        }
    }
}

/// An ARP packet for IPv4 over Ethernet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArpPacket {
    /// Request or reply.
    pub op: ArpOperation,
    /// Sender hardware address (SHA).
    pub sender_mac: MacAddr,
    /// Sender protocol address (SPA); 0.0.0.0 in an RFC 5227 probe.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (THA); zero in requests.
    pub target_mac: MacAddr,
    /// Target protocol address (TPA): the address asked about.
    pub target_ip: Ipv4Addr,
}

impl ArpPacket {
    /// A who-has request for `target_ip`.
    pub fn request(sender_mac: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Self {
        Self {
            op: ArpOperation::Request,
            sender_mac,
            sender_ip,
            target_mac: MacAddr::ZERO,
            target_ip,
        }
    }

    /// The reply that says `self.target_ip` is at `our_mac`, addressed to the requester.
    pub fn reply_to(&self, our_mac: MacAddr) -> Self {
        Self {
            op: ArpOperation::Reply,
            sender_mac: our_mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }

    /// A gratuitous request: who-has `ip` tell `ip`, target hardware address zero (RFC 5227 §3).
    pub fn gratuitous_request(mac: MacAddr, ip: Ipv4Addr) -> Self {
        Self {
            op: ArpOperation::Request,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: MacAddr::ZERO,
            target_ip: ip,
        }
    }

    /// A gratuitous reply: `ip` is-at `mac`, to everyone (target hardware address broadcast).
    pub fn gratuitous_reply(mac: MacAddr, ip: Ipv4Addr) -> Self {
        Self {
            op: ArpOperation::Reply,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: MacAddr::BROADCAST,
            target_ip: ip,
        }
    }

    /// True when the sender announces its own address (SPA == TPA).
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }

    /// True for an RFC 5227 probe: a request from 0.0.0.0 checking whether an address is taken.
    pub fn is_probe(&self) -> bool {
        self.op == ArpOperation::Request && self.sender_ip.is_unspecified()
    }

    /// The packet's 28 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ARP_LEN);
        out.extend_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        out.extend_from_slice(&PTYPE_IPV4.to_be_bytes());
        out.push(6);
        out.push(4);
        out.extend_from_slice(&self.op.code().to_be_bytes());
        out.extend_from_slice(&self.sender_mac.0);
        out.extend_from_slice(&self.sender_ip.octets());
        out.extend_from_slice(&self.target_mac.0);
        out.extend_from_slice(&self.target_ip.octets());
        out
    }

    /// Decodes an ARP packet; bytes after the 28 (Ethernet padding) are ignored.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, Layer::Arp);
        let htype = r.u16()?;
        let ptype = r.u16()?;
        let hlen = r.u8()?;
        let plen = r.u8()?;
        // Check the shape before reading addresses: with other lengths the offsets below would
        // read the wrong fields.
        if htype != HTYPE_ETHERNET {
            return Err(DecodeError::ArpHardwareType(htype));
        }
        if ptype != PTYPE_IPV4 {
            return Err(DecodeError::ArpProtocolType(ptype));
        }
        if hlen != 6 {
            return Err(DecodeError::ArpHardwareLength(hlen));
        }
        if plen != 4 {
            return Err(DecodeError::ArpProtocolLength(plen));
        }
        let op = match r.u16()? {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            other => return Err(DecodeError::ArpOperation(other)),
        };
        Ok(Self {
            op,
            sender_mac: r.mac()?,
            sender_ip: r.ipv4()?,
            target_mac: r.mac()?,
            target_ip: r.ipv4()?,
        })
    }
}

/// The frames announcing `ip` at `mac` on takeover: a gratuitous request and a gratuitous reply,
/// both broadcast, since some hosts only update their caches from one of the two.
pub fn gratuitous_frames(mac: MacAddr, ip: Ipv4Addr, vlan: Option<VlanTag>) -> [Frame; 2] {
    [
        Frame::arp(
            MacAddr::BROADCAST,
            mac,
            vlan,
            ArpPacket::gratuitous_request(mac, ip),
        ),
        Frame::arp(
            MacAddr::BROADCAST,
            mac,
            vlan,
            ArpPacket::gratuitous_reply(mac, ip),
        ),
    ]
}
