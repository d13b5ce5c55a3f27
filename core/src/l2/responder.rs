//! The responder's decision for each received frame: the reply to send, or why not
//! (MetalLB's `dropReason`, as an enum).

use super::arp::{ArpOperation, ArpPacket, gratuitous_frames as arp_gratuitous};
use super::ethernet::{ETHERTYPE_ARP, ETHERTYPE_IPV6, EthernetHeader, Frame, VlanTag};
use super::ipv6::multicast_mac;
use super::ndp::{NdpInvalid, NdpMessage, NdpPacket, unsolicited_frame};
use super::{DecodeError, MacAddr};
use crate::announce::{Ineligible, NodeName};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

/// How this node stands towards one Service IP.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IpStatus {
    /// We announce it, on this interface.
    Announced {
        /// The interface we answer on.
        interface: String,
    },
    /// Another node owns it.
    OwnedBy(NodeName),
    /// We may not announce it.
    Ineligible(Ineligible),
    /// We were elected but the plan in force does not announce it yet.
    Pending,
    /// No node is eligible.
    NoOwner,
}

/// What the responder on one interface knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponderState {
    /// The interface frames arrive on.
    pub interface: String,
    /// Its MAC: the address we answer with.
    pub mac: MacAddr,
    /// Its link-local IPv6 address, the source of our advertisements (RFC 4861 §7.2.4 wants an
    /// address of the interface); when unknown the target itself is used.
    pub link_local: Option<Ipv6Addr>,
    /// Every Service IP the election knows, as seen from this node.
    pub ips: BTreeMap<IpAddr, IpStatus>,
}

/// Answer or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send this frame back on the interface.
    Reply(Frame),
    /// Send nothing, for this reason.
    Drop(DropReason),
}

/// Why a received frame gets no answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The bytes do not decode.
    Malformed(DecodeError),
    /// A well-formed NDP packet that fails the RFC 4861 receive checks.
    InvalidNdp(NdpInvalid),
    /// Not ARP (another EtherType).
    NotArp,
    /// An ARP reply (not gratuitous).
    NotArpRequest,
    /// IPv6 that is not a neighbour solicitation (nor a gratuitous advertisement).
    NotNeighborSolicitation,
    /// Sent by this interface (our MAC as the source): a loopback of our own packet.
    FromOurselves,
    /// The sender's MAC is zero, multicast or broadcast, which no station may use.
    BadSenderMac,
    /// The sender uses an IP we announce: a spoof, or another node announcing it too.
    SenderUsesOurIp {
        /// The IP it claims.
        ip: IpAddr,
        /// The sender's MAC, worth logging.
        mac: MacAddr,
    },
    /// Another host announcing its own address (gratuitous ARP, unsolicited NA).
    GratuitousFromOthers,
    /// The target is not a Service IP.
    NotOurIp,
    /// We announce the target, but on another interface.
    WrongInterface {
        /// Where we do announce it.
        announced_on: String,
    },
    /// Another node announces the target.
    NotOwner {
        /// The owner.
        owner: NodeName,
    },
    /// This node may not announce the target.
    NotEligible(Ineligible),
    /// We were elected but do not announce the target yet.
    NotYetAnnounced,
    /// No node is eligible for the target.
    NoOwner,
}

impl ResponderState {
    fn announced_here(&self, ip: IpAddr) -> Result<(), DropReason> {
        match self.ips.get(&ip) {
            None => Err(DropReason::NotOurIp),
            Some(IpStatus::Announced { interface }) if *interface == self.interface => Ok(()),
            Some(IpStatus::Announced { interface }) => Err(DropReason::WrongInterface {
                announced_on: interface.clone(),
            }),
            Some(IpStatus::OwnedBy(owner)) => Err(DropReason::NotOwner {
                owner: owner.clone(),
            }),
            Some(IpStatus::Ineligible(r)) => Err(DropReason::NotEligible(*r)),
            Some(IpStatus::Pending) => Err(DropReason::NotYetAnnounced),
            Some(IpStatus::NoOwner) => Err(DropReason::NoOwner),
        }
    }

    fn announced_anywhere(&self, ip: IpAddr) -> bool {
        matches!(self.ips.get(&ip), Some(IpStatus::Announced { .. }))
    }
}

fn check_sender(
    state: &ResponderState,
    eth: &EthernetHeader,
    sender: Option<MacAddr>,
) -> Result<(), DropReason> {
    if eth.src == state.mac || sender == Some(state.mac) {
        return Err(DropReason::FromOurselves);
    }
    if !eth.src.is_unicast() || sender.is_some_and(|m| !m.is_unicast()) {
        return Err(DropReason::BadSenderMac);
    }
    Ok(())
}

/// Decides what to do with a frame received on `state.interface` by the ARP responder.
pub fn decide_arp(frame: &[u8], state: &ResponderState) -> Decision {
    match arp_reply(frame, state) {
        Ok(f) => Decision::Reply(f),
        Err(r) => Decision::Drop(r),
    }
}

fn arp_reply(frame: &[u8], state: &ResponderState) -> Result<Frame, DropReason> {
    let eth = EthernetHeader::decode(frame).map_err(DropReason::Malformed)?;
    if eth.ethertype != ETHERTYPE_ARP {
        return Err(DropReason::NotArp);
    }
    let arp = ArpPacket::decode(frame.get(eth.len()..).unwrap_or_default())
        .map_err(DropReason::Malformed)?;
    check_sender(state, &eth, Some(arp.sender_mac))?;
    if state.announced_anywhere(IpAddr::V4(arp.sender_ip)) {
        return Err(DropReason::SenderUsesOurIp {
            ip: IpAddr::V4(arp.sender_ip),
            mac: arp.sender_mac,
        });
    }
    if arp.is_gratuitous() {
        return Err(DropReason::GratuitousFromOthers);
    }
    if arp.op != ArpOperation::Request {
        return Err(DropReason::NotArpRequest);
    }
    state.announced_here(IpAddr::V4(arp.target_ip))?;
    Ok(Frame::arp(
        arp.sender_mac,
        state.mac,
        eth.vlan,
        arp.reply_to(state.mac),
    ))
}

/// Decides what to do with a frame received on `state.interface` by the NDP responder.
pub fn decide_ndp(frame: &[u8], state: &ResponderState) -> Decision {
    match ndp_reply(frame, state) {
        Ok(f) => Decision::Reply(f),
        Err(r) => Decision::Drop(r),
    }
}

fn ndp_reply(frame: &[u8], state: &ResponderState) -> Result<Frame, DropReason> {
    let eth = EthernetHeader::decode(frame).map_err(DropReason::Malformed)?;
    if eth.ethertype != ETHERTYPE_IPV6 {
        return Err(DropReason::NotNeighborSolicitation);
    }
    let pkt = match NdpPacket::decode(frame.get(eth.len()..).unwrap_or_default()) {
        Ok(p) => p,
        Err(DecodeError::NotIcmpv6(_) | DecodeError::NotNdp(_)) => {
            return Err(DropReason::NotNeighborSolicitation);
        }
        Err(e) => return Err(DropReason::Malformed(e)),
    };
    pkt.validate().map_err(DropReason::InvalidNdp)?;
    let sender = match pkt.message {
        NdpMessage::Solicitation { .. } => pkt.source_link_layer(),
        NdpMessage::Advertisement { .. } => pkt.target_link_layer(),
    };
    check_sender(state, &eth, sender)?;
    let sender_mac = sender.unwrap_or(eth.src);
    if state.announced_anywhere(IpAddr::V6(pkt.ip.src)) {
        return Err(DropReason::SenderUsesOurIp {
            ip: IpAddr::V6(pkt.ip.src),
            mac: sender_mac,
        });
    }
    let target = pkt.message.target();
    if let NdpMessage::Advertisement { .. } = pkt.message {
        if state.announced_anywhere(IpAddr::V6(target)) {
            return Err(DropReason::SenderUsesOurIp {
                ip: IpAddr::V6(target),
                mac: sender_mac,
            });
        }
        if pkt.ip.dst.is_multicast() {
            return Err(DropReason::GratuitousFromOthers);
        }
        return Err(DropReason::NotNeighborSolicitation);
    }
    state.announced_here(IpAddr::V6(target))?;
    let src = state.link_local.unwrap_or(target);
    let reply = NdpPacket::solicited_advertisement(&pkt, src, state.mac)
        .ok_or(DropReason::NotNeighborSolicitation)?;
    let dst_mac = if reply.ip.dst.is_multicast() {
        multicast_mac(reply.ip.dst)
    } else {
        sender_mac
    };
    Ok(Frame::ndp(dst_mac, state.mac, eth.vlan, reply))
}

/// One round of gratuitous frames for `ip` at `mac`: ARP request and reply for IPv4, an
/// unsolicited advertisement (from `link_local`, else `ip`) for IPv6.
pub fn gratuitous_frames(
    ip: IpAddr,
    mac: MacAddr,
    link_local: Option<Ipv6Addr>,
    vlan: Option<VlanTag>,
) -> Vec<Frame> {
    match ip {
        IpAddr::V4(v4) => arp_gratuitous(mac, v4, vlan).to_vec(),
        IpAddr::V6(v6) => vec![unsolicited_frame(link_local.unwrap_or(v6), mac, v6, vlan)],
    }
}
