//! Property tests for the layer-2 codecs: encode then decode is the identity, and no input
//! makes a decoder or the responder panic.

use ferrolb_core::announce::NodeName;
use ferrolb_core::l2::arp::{ArpOperation, ArpPacket};
use ferrolb_core::l2::ethernet::{Frame, VlanTag};
use ferrolb_core::l2::ipv6::{Ipv6Header, NEXT_HEADER_ICMPV6};
use ferrolb_core::l2::ndp::{NaFlags, NdpMessage, NdpOption, NdpPacket};
use ferrolb_core::l2::{IpStatus, MacAddr, ResponderState, decide_arp, decide_ndp};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(MacAddr)
}
fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 4]>().prop_map(Ipv4Addr::from)
}
fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    any::<[u8; 16]>().prop_map(Ipv6Addr::from)
}
fn vlan() -> impl Strategy<Value = Option<VlanTag>> {
    proptest::option::of(any::<u16>().prop_map(|tci| VlanTag { tci }))
}

fn arp() -> impl Strategy<Value = ArpPacket> {
    (
        prop_oneof![Just(ArpOperation::Request), Just(ArpOperation::Reply)],
        mac(),
        ipv4(),
        mac(),
        ipv4(),
    )
        .prop_map(
            |(op, sender_mac, sender_ip, target_mac, target_ip)| ArpPacket {
                op,
                sender_mac,
                sender_ip,
                target_mac,
                target_ip,
            },
        )
}

fn option() -> impl Strategy<Value = NdpOption> {
    prop_oneof![
        mac().prop_map(NdpOption::SourceLinkLayer),
        mac().prop_map(NdpOption::TargetLinkLayer),
        // Bodies that fill whole 8-octet units, so they round-trip without padding.
        (
            (3u8..=255).prop_filter("not a link-layer option", |k| *k > 2),
            1usize..4,
            any::<u8>()
        )
            .prop_map(|(kind, units, fill)| NdpOption::Other {
                kind,
                data: vec![fill; units * 8 - 2]
            }),
    ]
}

fn ndp() -> impl Strategy<Value = NdpPacket> {
    let header = (any::<u8>(), 0u32..(1 << 20), any::<u8>(), ipv6(), ipv6()).prop_map(
        |(traffic_class, flow_label, hop_limit, src, dst)| Ipv6Header {
            traffic_class,
            flow_label,
            next_header: NEXT_HEADER_ICMPV6,
            hop_limit,
            src,
            dst,
        },
    );
    let message = prop_oneof![
        (ipv6(), proptest::collection::vec(option(), 0..4))
            .prop_map(|(target, options)| NdpMessage::Solicitation { target, options }),
        (0u8..8, ipv6(), proptest::collection::vec(option(), 0..4)).prop_map(
            |(f, target, options)| NdpMessage::Advertisement {
                flags: NaFlags(f << 5),
                target,
                options
            }
        ),
    ];
    (header, any::<u8>(), message).prop_map(|(ip, code, message)| NdpPacket { ip, code, message })
}

fn state() -> ResponderState {
    let ips = [
        (
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            IpStatus::Announced {
                interface: "eth0".into(),
            },
        ),
        (
            IpAddr::V6("2001:db8:0:1::10".parse().unwrap()),
            IpStatus::Announced {
                interface: "eth0".into(),
            },
        ),
        (
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11)),
            IpStatus::OwnedBy(NodeName::from("b")),
        ),
    ];
    ResponderState {
        interface: "eth0".into(),
        mac: MacAddr([2, 0, 0, 0, 0xd, 1]),
        link_local: None,
        ips: ips.into_iter().collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arp_roundtrip(p in arp()) {
        prop_assert_eq!(ArpPacket::decode(&p.encode()), Ok(p));
    }

    #[test]
    fn arp_frame_roundtrip(dst in mac(), src in mac(), tag in vlan(), p in arp()) {
        let f = Frame::arp(dst, src, tag, p);
        prop_assert_eq!(Frame::decode(&f.encode()), Ok(f));
    }

    #[test]
    fn ndp_roundtrip(p in ndp()) {
        let bytes = p.encode();
        prop_assert_eq!(NdpPacket::decode(&bytes), Ok(p.clone()));
        let f = Frame::ndp(MacAddr([0x33, 0x33, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 1]), None, p);
        prop_assert_eq!(Frame::decode(&f.encode()), Ok(f));
    }

    #[test]
    fn ndp_any_flipped_bit_is_caught_or_harmless(p in ndp(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        // A one-bit error anywhere in the ICMPv6 message or pseudo-header fields fails the
        // checksum; anywhere else it may decode to something else, but never panics.
        let mut bytes = p.encode();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let covered = i >= 8 || i == 6; // addresses, next header, the ICMPv6 message
        match NdpPacket::decode(&bytes) {
            Ok(q) if covered => prop_assert!(false, "flip at {} not caught: {:?}", i, q),
            _ => {}
        }
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Frame::decode(&bytes);
        let _ = ArpPacket::decode(&bytes);
        let _ = NdpPacket::decode(&bytes);
        let _ = Ipv6Header::decode(&bytes);
        let s = state();
        let _ = decide_arp(&bytes, &s);
        let _ = decide_ndp(&bytes, &s);
    }

    #[test]
    fn responder_never_panics_on_plausible_frames(
        prefix in proptest::collection::vec(any::<u8>(), 12..13),
        ethertype in prop_oneof![Just([0x08u8, 0x06]), Just([0x86, 0xdd]), Just([0x81, 0x00])],
        body in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let mut bytes = prefix;
        bytes.extend_from_slice(&ethertype);
        bytes.extend_from_slice(&body);
        let s = state();
        let _ = decide_arp(&bytes, &s);
        let _ = decide_ndp(&bytes, &s);
    }

    #[test]
    fn truncations_of_valid_frames_never_panic(p in ndp(), q in arp(), cut in any::<prop::sample::Index>()) {
        let s = state();
        let six = Frame::ndp(MacAddr([0x33, 0x33, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 1]), None, p).encode();
        let four = Frame::arp(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, 1]), None, q).encode();
        let _ = decide_ndp(&six[..cut.index(six.len())], &s);
        let _ = decide_arp(&four[..cut.index(four.len())], &s);
    }
}
