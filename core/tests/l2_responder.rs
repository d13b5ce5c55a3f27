//! The responder's decisions as a table: every frame either gets the right reply or a typed
//! reason, including malformed and hostile input.

use ferrolb_core::announce::{Ineligible, NodeName};
use ferrolb_core::l2::arp::ArpPacket;
use ferrolb_core::l2::ethernet::{ETHERTYPE_IPV6, Frame, Payload, VlanTag};
use ferrolb_core::l2::ipv6::{ALL_NODES, icmpv6_checksum, multicast_mac, solicited_node};
use ferrolb_core::l2::ndp::{NaFlags, NdpInvalid, NdpMessage, NdpOption, NdpPacket};
use ferrolb_core::l2::{
    Decision, DecodeError, DropReason, IpStatus, Layer, MacAddr, ResponderState, decide_arp,
    decide_ndp,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const US: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0d, 0x01]);
const CLIENT: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0c, 0x01]);
const OTHER_NODE: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn v4(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, last)
}
fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}
fn link_local() -> Ipv6Addr {
    v6("fe80::ff:fe00:a01")
}
fn client6() -> Ipv6Addr {
    v6("2001:db8:0:1::c1")
}

fn state() -> ResponderState {
    let announced = |i: &str| IpStatus::Announced {
        interface: i.into(),
    };
    let ips = [
        (IpAddr::V4(v4(10)), announced("eth0")),
        (IpAddr::V4(v4(11)), announced("eth1")),
        (
            IpAddr::V4(v4(12)),
            IpStatus::OwnedBy(NodeName::from("node-b")),
        ),
        (
            IpAddr::V4(v4(13)),
            IpStatus::Ineligible(Ineligible::NoLocalEndpoint),
        ),
        (IpAddr::V4(v4(14)), IpStatus::Pending),
        (IpAddr::V4(v4(15)), IpStatus::NoOwner),
        (IpAddr::V6(v6("2001:db8:0:1::10")), announced("eth0")),
        (IpAddr::V6(v6("2001:db8:0:1::11")), announced("eth1")),
        (
            IpAddr::V6(v6("2001:db8:0:1::12")),
            IpStatus::OwnedBy(NodeName::from("node-b")),
        ),
        (
            IpAddr::V6(v6("2001:db8:0:1::13")),
            IpStatus::Ineligible(Ineligible::Excluded),
        ),
    ];
    ResponderState {
        interface: "eth0".into(),
        mac: US,
        link_local: Some(link_local()),
        ips: ips.into_iter().collect(),
    }
}

fn testdata(name: &str) -> Vec<u8> {
    let path = format!("{}/testdata/l2/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path)
        .unwrap()
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn arp_frame(src: MacAddr, p: ArpPacket) -> Vec<u8> {
    Frame::arp(MacAddr::BROADCAST, src, None, p).encode()
}
fn who_has(target: Ipv4Addr) -> Vec<u8> {
    arp_frame(CLIENT, ArpPacket::request(CLIENT, CLIENT4, target))
}
/// A valid ARP request with one byte changed.
fn arp_patched(offset: usize, value: u8) -> Vec<u8> {
    let mut b = who_has(v4(10));
    b[14 + offset] = value;
    b
}

fn drop(r: DropReason) -> Option<DropReason> {
    Some(r)
}

#[test]
fn arp_table() {
    let s = state();
    let tagged = Frame::arp(
        MacAddr::BROADCAST,
        CLIENT,
        Some(VlanTag { tci: 7 }),
        ArpPacket::request(CLIENT, CLIENT4, v4(10)),
    )
    .encode();
    let mut ether_multicast_src = who_has(v4(10));
    ether_multicast_src[6] = 0x01;
    let ipv6 = {
        let mut b = who_has(v4(10));
        b[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        b
    };
    let cases: Vec<(&str, Vec<u8>, Option<DropReason>)> = vec![
        ("request for our IP", who_has(v4(10)), None),
        (
            "RFC 5227 probe for our IP",
            arp_frame(
                CLIENT,
                ArpPacket::request(CLIENT, Ipv4Addr::UNSPECIFIED, v4(10)),
            ),
            None,
        ),
        ("802.1Q-tagged request", tagged, None),
        (
            "announced on another interface",
            who_has(v4(11)),
            drop(DropReason::WrongInterface {
                announced_on: "eth1".into(),
            }),
        ),
        (
            "owned by another node",
            who_has(v4(12)),
            drop(DropReason::NotOwner {
                owner: NodeName::from("node-b"),
            }),
        ),
        (
            "not eligible here",
            who_has(v4(13)),
            drop(DropReason::NotEligible(Ineligible::NoLocalEndpoint)),
        ),
        (
            "elected, not started",
            who_has(v4(14)),
            drop(DropReason::NotYetAnnounced),
        ),
        (
            "nobody eligible",
            who_has(v4(15)),
            drop(DropReason::NoOwner),
        ),
        (
            "not a Service IP",
            who_has(v4(99)),
            drop(DropReason::NotOurIp),
        ),
        (
            "kernel request for a host address",
            testdata("arp_request"),
            drop(DropReason::NotOurIp),
        ),
        (
            "a reply",
            arp_frame(
                CLIENT,
                ArpPacket::request(OTHER_NODE, v4(2), CLIENT4).reply_to(CLIENT),
            ),
            drop(DropReason::NotArpRequest),
        ),
        (
            "kernel reply",
            testdata("arp_reply"),
            drop(DropReason::NotArpRequest),
        ),
        (
            "gratuitous request from another host",
            arp_frame(CLIENT, ArpPacket::gratuitous_request(CLIENT, v4(50))),
            drop(DropReason::GratuitousFromOthers),
        ),
        (
            "gratuitous reply from another host",
            arp_frame(CLIENT, ArpPacket::gratuitous_reply(CLIENT, v4(50))),
            drop(DropReason::GratuitousFromOthers),
        ),
        (
            "another node claims our IP",
            arp_frame(OTHER_NODE, ArpPacket::gratuitous_reply(OTHER_NODE, v4(10))),
            drop(DropReason::SenderUsesOurIp {
                ip: IpAddr::V4(v4(10)),
                mac: OTHER_NODE,
            }),
        ),
        (
            "spoofed sender IP = our VIP",
            arp_frame(CLIENT, ArpPacket::request(CLIENT, v4(10), v4(10 + 1))),
            drop(DropReason::SenderUsesOurIp {
                ip: IpAddr::V4(v4(10)),
                mac: CLIENT,
            }),
        ),
        (
            "our own frame looped back",
            arp_frame(US, ArpPacket::request(US, v4(10), v4(12))),
            drop(DropReason::FromOurselves),
        ),
        (
            "sender MAC is ours, Ethernet source is not",
            arp_frame(CLIENT, ArpPacket::request(US, CLIENT4, v4(10))),
            drop(DropReason::FromOurselves),
        ),
        (
            "broadcast sender MAC",
            arp_frame(
                CLIENT,
                ArpPacket::request(MacAddr::BROADCAST, CLIENT4, v4(10)),
            ),
            drop(DropReason::BadSenderMac),
        ),
        (
            "zero sender MAC",
            arp_frame(CLIENT, ArpPacket::request(MacAddr::ZERO, CLIENT4, v4(10))),
            drop(DropReason::BadSenderMac),
        ),
        (
            "multicast Ethernet source",
            ether_multicast_src,
            drop(DropReason::BadSenderMac),
        ),
        ("not ARP", ipv6, drop(DropReason::NotArp)),
        (
            "empty",
            vec![],
            drop(DropReason::Malformed(DecodeError::Truncated(
                Layer::Ethernet,
            ))),
        ),
        (
            "13 bytes",
            vec![0xff; 13],
            drop(DropReason::Malformed(DecodeError::Truncated(
                Layer::Ethernet,
            ))),
        ),
        (
            "ARP cut at 20 bytes",
            who_has(v4(10))[..14 + 20].to_vec(),
            drop(DropReason::Malformed(DecodeError::Truncated(Layer::Arp))),
        ),
        (
            "ARP header only",
            who_has(v4(10))[..14 + 8].to_vec(),
            drop(DropReason::Malformed(DecodeError::Truncated(Layer::Arp))),
        ),
        (
            "hardware type 6 (IEEE 802)",
            arp_patched(1, 6),
            drop(DropReason::Malformed(DecodeError::ArpHardwareType(6))),
        ),
        (
            "protocol type IPv6",
            arp_patched(2, 0x86),
            drop(DropReason::Malformed(DecodeError::ArpProtocolType(0x8600))),
        ),
        (
            "hardware length 8",
            arp_patched(4, 8),
            drop(DropReason::Malformed(DecodeError::ArpHardwareLength(8))),
        ),
        (
            "protocol length 16",
            arp_patched(5, 16),
            drop(DropReason::Malformed(DecodeError::ArpProtocolLength(16))),
        ),
        (
            "operation 3 (RARP)",
            arp_patched(7, 3),
            drop(DropReason::Malformed(DecodeError::ArpOperation(3))),
        ),
        (
            "operation 0",
            arp_patched(7, 0),
            drop(DropReason::Malformed(DecodeError::ArpOperation(0))),
        ),
    ];
    for (name, bytes, want) in cases {
        match (decide_arp(&bytes, &s), want) {
            (Decision::Reply(f), None) => check_arp_reply(name, &bytes, &f),
            (Decision::Drop(got), Some(want)) => assert_eq!(got, want, "{name}"),
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

fn check_arp_reply(name: &str, request: &[u8], reply: &Frame) {
    let req = Frame::decode(request).unwrap();
    let Payload::Arp(q) = req.payload else {
        panic!("{name}")
    };
    let Payload::Arp(a) = reply.payload else {
        panic!("{name}: reply is not ARP")
    };
    assert_eq!(a, q.reply_to(US), "{name}");
    assert_eq!(
        reply.eth.dst, q.sender_mac,
        "{name}: unicast to the requester"
    );
    assert_eq!(reply.eth.src, US, "{name}");
    assert_eq!(
        reply.eth.vlan, req.eth.vlan,
        "{name}: same VLAN as the request"
    );
    // The bytes we would put on the wire decode back to the same reply.
    assert_eq!(Frame::decode(&reply.encode()).unwrap(), *reply, "{name}");
}

// --- NDP ---

struct Ns {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    options: Vec<NdpOption>,
    hop_limit: u8,
    code: u8,
    eth_src: MacAddr,
}

impl Ns {
    fn to(target: &str) -> Self {
        let target = v6(target);
        Ns {
            src: client6(),
            dst: solicited_node(target),
            target,
            options: vec![NdpOption::SourceLinkLayer(CLIENT)],
            hop_limit: 255,
            code: 0,
            eth_src: CLIENT,
        }
    }
    fn packet(&self) -> NdpPacket {
        let mut p = NdpPacket::solicitation(self.src, CLIENT, self.target);
        p.ip.dst = self.dst;
        p.ip.hop_limit = self.hop_limit;
        p.code = self.code;
        p.message = NdpMessage::Solicitation {
            target: self.target,
            options: self.options.clone(),
        };
        p
    }
    fn bytes(&self) -> Vec<u8> {
        Frame::ndp(multicast_mac(self.dst), self.eth_src, None, self.packet()).encode()
    }
}

fn na(src: Ipv6Addr, dst: Ipv6Addr, flags: NaFlags, target: &str, tlla: MacAddr) -> Vec<u8> {
    let mut p = NdpPacket::unsolicited_advertisement(src, tlla, v6(target));
    p.ip.dst = dst;
    p.message = NdpMessage::Advertisement {
        flags,
        target: v6(target),
        options: vec![NdpOption::TargetLinkLayer(tlla)],
    };
    let eth_dst = if dst.is_multicast() {
        multicast_mac(dst)
    } else {
        US
    };
    Frame::ndp(eth_dst, tlla, None, p).encode()
}

/// Recomputes the ICMPv6 checksum of an untagged frame after a test edited its bytes.
fn fix_checksum(mut b: Vec<u8>) -> Vec<u8> {
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&b[22..38]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&b[38..54]).unwrap());
    b[56..58].fill(0);
    let sum = icmpv6_checksum(src, dst, &b[54..]);
    b[56..58].copy_from_slice(&sum.to_be_bytes());
    b
}

/// An NS for ::10 with its options replaced by raw bytes (payload length and checksum fixed).
fn ns_with_raw_options(raw: &[u8]) -> Vec<u8> {
    let mut b = Ns {
        options: vec![],
        ..Ns::to("2001:db8:0:1::10")
    }
    .bytes();
    b.extend_from_slice(raw);
    let len = (b.len() - 54) as u16;
    b[18..20].copy_from_slice(&len.to_be_bytes());
    fix_checksum(b)
}

#[test]
fn ndp_table() {
    let s = state();
    let mut bad_sum = Ns::to("2001:db8:0:1::10").bytes();
    bad_sum[57] ^= 0xff;
    let found = u16::from_be_bytes([bad_sum[56], bad_sum[57]]);
    let expected = found ^ 0x00ff;
    let mut long_len = Ns::to("2001:db8:0:1::10").bytes();
    long_len[19] += 8;
    let mut v4_in_v6 = Ns::to("2001:db8:0:1::10").bytes();
    v4_in_v6[14] = 0x45;
    let short_icmp = {
        let b = Ns {
            options: vec![],
            ..Ns::to("2001:db8:0:1::10")
        }
        .bytes();
        let mut b = b[..54 + 20].to_vec();
        b[18..20].copy_from_slice(&20u16.to_be_bytes());
        b
    };
    let dad = || Ns {
        src: Ipv6Addr::UNSPECIFIED,
        options: vec![],
        ..Ns::to("2001:db8:0:1::10")
    };
    let cases: Vec<(&str, Vec<u8>, Option<DropReason>)> = vec![
        ("NS for our IP", Ns::to("2001:db8:0:1::10").bytes(), None),
        ("DAD NS (source ::) for our IP", dad().bytes(), None),
        (
            "NUD NS unicast to our IP",
            Ns {
                dst: v6("2001:db8:0:1::10"),
                ..Ns::to("2001:db8:0:1::10")
            }
            .bytes(),
            None,
        ),
        (
            "NS without SLLA",
            Ns {
                dst: v6("2001:db8:0:1::10"),
                options: vec![],
                ..Ns::to("2001:db8:0:1::10")
            }
            .bytes(),
            None,
        ),
        (
            "NS with an unknown option",
            Ns {
                options: vec![
                    NdpOption::Other {
                        kind: 14,
                        data: vec![1; 6],
                    },
                    NdpOption::SourceLinkLayer(CLIENT),
                ],
                ..Ns::to("2001:db8:0:1::10")
            }
            .bytes(),
            None,
        ),
        (
            "announced on another interface",
            Ns::to("2001:db8:0:1::11").bytes(),
            drop(DropReason::WrongInterface {
                announced_on: "eth1".into(),
            }),
        ),
        (
            "owned by another node",
            Ns::to("2001:db8:0:1::12").bytes(),
            drop(DropReason::NotOwner {
                owner: NodeName::from("node-b"),
            }),
        ),
        (
            "not eligible here",
            Ns::to("2001:db8:0:1::13").bytes(),
            drop(DropReason::NotEligible(Ineligible::Excluded)),
        ),
        (
            "not a Service IP",
            Ns::to("2001:db8:0:1::99").bytes(),
            drop(DropReason::NotOurIp),
        ),
        (
            "kernel NS for a host address",
            testdata("ns_multicast"),
            drop(DropReason::NotOurIp),
        ),
        (
            "kernel DAD NS for a host address",
            testdata("ns_dad_global"),
            drop(DropReason::NotOurIp),
        ),
        (
            "hop limit 64 (off-link)",
            Ns {
                hop_limit: 64,
                ..Ns::to("2001:db8:0:1::10")
            }
            .bytes(),
            drop(DropReason::InvalidNdp(NdpInvalid::HopLimit(64))),
        ),
        (
            "hop limit 254",
            Ns {
                hop_limit: 254,
                ..Ns::to("2001:db8:0:1::10")
            }
            .bytes(),
            drop(DropReason::InvalidNdp(NdpInvalid::HopLimit(254))),
        ),
        (
            "code 1",
            Ns {
                code: 1,
                ..Ns::to("2001:db8:0:1::10")
            }
            .bytes(),
            drop(DropReason::InvalidNdp(NdpInvalid::Code(1))),
        ),
        (
            "multicast target",
            Ns {
                target: ALL_NODES,
                ..Ns::to("2001:db8:0:1::10")
            }
            .bytes(),
            drop(DropReason::InvalidNdp(NdpInvalid::TargetMulticast)),
        ),
        (
            "DAD with SLLA",
            Ns {
                options: vec![NdpOption::SourceLinkLayer(CLIENT)],
                ..dad()
            }
            .bytes(),
            drop(DropReason::InvalidNdp(
                NdpInvalid::SourceLinkLayerFromUnspecified,
            )),
        ),
        (
            "DAD to all-nodes",
            Ns {
                dst: ALL_NODES,
                ..dad()
            }
            .bytes(),
            drop(DropReason::InvalidNdp(
                NdpInvalid::UnspecifiedSourceNotToSolicitedNode,
            )),
        ),
        (
            "bad checksum",
            bad_sum,
            drop(DropReason::Malformed(DecodeError::Icmpv6Checksum {
                found,
                expected,
            })),
        ),
        (
            "zero-length option",
            ns_with_raw_options(&[1, 0, 0, 0, 0, 0, 0, 0]),
            drop(DropReason::Malformed(DecodeError::ZeroLengthOption)),
        ),
        (
            "SLLA of 2 units",
            ns_with_raw_options(&[1, 2, 2, 0, 0, 0, 0x0c, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            drop(DropReason::Malformed(DecodeError::LinkLayerOptionLength(2))),
        ),
        (
            "option running past the end",
            ns_with_raw_options(&[14, 2, 0, 0, 0, 0, 0, 0]),
            drop(DropReason::Malformed(DecodeError::Truncated(
                Layer::NdpOption,
            ))),
        ),
        (
            "one stray option byte",
            ns_with_raw_options(&[1]),
            drop(DropReason::Malformed(DecodeError::Truncated(
                Layer::NdpOption,
            ))),
        ),
        (
            "ICMPv6 shorter than 24",
            short_icmp,
            drop(DropReason::Malformed(DecodeError::Truncated(Layer::Icmpv6))),
        ),
        (
            "payload length past the frame",
            long_len,
            drop(DropReason::Malformed(DecodeError::Truncated(Layer::Ipv6))),
        ),
        (
            "IPv4 header in an IPv6 frame",
            v4_in_v6,
            drop(DropReason::Malformed(DecodeError::Ipv6Version(4))),
        ),
        (
            "IPv6 header cut",
            Ns::to("2001:db8:0:1::10").bytes()[..14 + 30].to_vec(),
            drop(DropReason::Malformed(DecodeError::Truncated(Layer::Ipv6))),
        ),
        (
            "our own NS looped back",
            Ns {
                eth_src: US,
                options: vec![NdpOption::SourceLinkLayer(US)],
                ..Ns::to("2001:db8:0:1::12")
            }
            .bytes(),
            drop(DropReason::FromOurselves),
        ),
        (
            "SLLA is our MAC",
            Ns {
                options: vec![NdpOption::SourceLinkLayer(US)],
                ..Ns::to("2001:db8:0:1::10")
            }
            .bytes(),
            drop(DropReason::FromOurselves),
        ),
        (
            "multicast SLLA",
            Ns {
                options: vec![NdpOption::SourceLinkLayer(MacAddr::BROADCAST)],
                ..Ns::to("2001:db8:0:1::10")
            }
            .bytes(),
            drop(DropReason::BadSenderMac),
        ),
        (
            "spoofed source = our VIP",
            Ns {
                src: v6("2001:db8:0:1::10"),
                ..Ns::to("2001:db8:0:1::10")
            }
            .bytes(),
            drop(DropReason::SenderUsesOurIp {
                ip: IpAddr::V6(v6("2001:db8:0:1::10")),
                mac: CLIENT,
            }),
        ),
        (
            "unsolicited NA from another host",
            na(
                client6(),
                ALL_NODES,
                NaFlags::OVERRIDE,
                "2001:db8:0:1::c1",
                CLIENT,
            ),
            drop(DropReason::GratuitousFromOthers),
        ),
        (
            "kernel unsolicited NA",
            testdata("na_unsolicited_override"),
            drop(DropReason::GratuitousFromOthers),
        ),
        (
            "another node advertises our IP",
            na(
                v6("fe80::b01"),
                ALL_NODES,
                NaFlags::OVERRIDE,
                "2001:db8:0:1::10",
                OTHER_NODE,
            ),
            drop(DropReason::SenderUsesOurIp {
                ip: IpAddr::V6(v6("2001:db8:0:1::10")),
                mac: OTHER_NODE,
            }),
        ),
        (
            "solicited NA to us",
            na(
                client6(),
                link_local(),
                NaFlags::SOLICITED,
                "2001:db8:0:1::c1",
                CLIENT,
            ),
            drop(DropReason::NotNeighborSolicitation),
        ),
        (
            "solicited NA to a multicast group",
            na(
                client6(),
                ALL_NODES,
                NaFlags::SOLICITED,
                "2001:db8:0:1::c1",
                CLIENT,
            ),
            drop(DropReason::InvalidNdp(NdpInvalid::SolicitedToMulticast)),
        ),
        (
            "router solicitation",
            testdata("rs_router_solicitation"),
            drop(DropReason::NotNeighborSolicitation),
        ),
        (
            "echo request",
            testdata("icmpv6_echo_request"),
            drop(DropReason::NotNeighborSolicitation),
        ),
        (
            "an ARP frame",
            who_has(v4(10)),
            drop(DropReason::NotNeighborSolicitation),
        ),
        (
            "empty",
            vec![],
            drop(DropReason::Malformed(DecodeError::Truncated(
                Layer::Ethernet,
            ))),
        ),
    ];
    for (name, bytes, want) in cases {
        match (decide_ndp(&bytes, &s), want) {
            (Decision::Reply(f), None) => check_na_reply(name, &bytes, &f),
            (Decision::Drop(got), Some(want)) => assert_eq!(got, want, "{name}"),
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

fn check_na_reply(name: &str, request: &[u8], reply: &Frame) {
    let req = Frame::decode(request).unwrap();
    let Payload::Ndp(ns) = &req.payload else {
        panic!("{name}")
    };
    let Payload::Ndp(na) = &reply.payload else {
        panic!("{name}: reply is not NDP")
    };
    assert_eq!(
        na.validate(),
        Ok(()),
        "{name}: our reply passes the receiver's checks"
    );
    assert_eq!(na.ip.src, link_local(), "{name}");
    assert_eq!(na.target_link_layer(), Some(US), "{name}");
    let NdpMessage::Advertisement { flags, target, .. } = &na.message else {
        panic!("{name}")
    };
    assert_eq!(*target, ns.message.target(), "{name}");
    if ns.ip.src.is_unspecified() {
        assert_eq!(
            (na.ip.dst, *flags),
            (ALL_NODES, NaFlags::OVERRIDE),
            "{name}: DAD answer goes to all nodes, not solicited"
        );
        assert_eq!(reply.eth.dst, multicast_mac(ALL_NODES), "{name}");
    } else {
        assert_eq!(
            (na.ip.dst, *flags),
            (ns.ip.src, NaFlags::SOLICITED | NaFlags::OVERRIDE),
            "{name}"
        );
        assert_eq!(
            reply.eth.dst,
            ns.source_link_layer().unwrap_or(req.eth.src),
            "{name}"
        );
    }
    assert_eq!(Frame::decode(&reply.encode()).unwrap(), *reply, "{name}");
}

#[test]
fn gratuitous_round_per_family() {
    use ferrolb_core::l2::responder::gratuitous_frames;
    let four = gratuitous_frames(IpAddr::V4(v4(10)), US, Some(link_local()), None);
    assert_eq!(four.len(), 2);
    let six = gratuitous_frames(
        IpAddr::V6(v6("2001:db8:0:1::10")),
        US,
        Some(link_local()),
        None,
    );
    let [f] = six.as_slice() else { panic!() };
    let Payload::Ndp(p) = &f.payload else {
        panic!()
    };
    assert_eq!(
        (p.ip.src, p.ip.dst, f.eth.dst),
        (link_local(), ALL_NODES, multicast_mac(ALL_NODES))
    );
    // Another speaker receiving our gratuitous packets does not answer them.
    let mut other = state();
    other.mac = OTHER_NODE;
    other.ips.clear();
    for f in four.iter().chain(six.iter()) {
        let bytes = f.encode();
        let d = if matches!(f.payload, Payload::Arp(_)) {
            decide_arp(&bytes, &other)
        } else {
            decide_ndp(&bytes, &other)
        };
        assert_eq!(d, Decision::Drop(DropReason::GratuitousFromOthers));
    }
}
