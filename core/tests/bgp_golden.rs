//! Golden bytes, both ways, for every BGP message and attribute. Expected bytes are written out
//! from the RFC layouts, one field per line.

use ferrolb_core::bgp::attribute::{AttrFlags, UnknownAttribute};
use ferrolb_core::bgp::*;
use ipnet::{Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

const FOUR: EncodeContext = EncodeContext {
    as_width: AsWidth::Four,
};
const TWO: EncodeContext = EncodeContext {
    as_width: AsWidth::Two,
};
const D4: DecodeContext = DecodeContext {
    as_width: AsWidth::Four,
    peer_kind: PeerKind::External,
};
const D4_IBGP: DecodeContext = DecodeContext {
    as_width: AsWidth::Four,
    peer_kind: PeerKind::Internal,
};
const D2: DecodeContext = DecodeContext {
    as_width: AsWidth::Two,
    peer_kind: PeerKind::External,
};

const MARKER: [u8; 16] = [0xFF; 16];

/// Marker, then the given length and type.
fn header(len: u16, kind: u8) -> Vec<u8> {
    let mut v = MARKER.to_vec();
    v.extend_from_slice(&len.to_be_bytes());
    v.push(kind);
    v
}

fn both_ways(msg: &Message, enc: &EncodeContext, dec: &DecodeContext, expected: &[u8]) {
    assert_eq!(msg.encode(enc), expected, "encode {msg:?}");
    assert_eq!(&Message::decode(expected, dec).expect("decode"), msg);
}

fn attr_both_ways(attr: &PathAttribute, enc: &EncodeContext, dec: &DecodeContext, expected: &[u8]) {
    let mut out = Vec::new();
    attr.encode(enc, &mut out);
    assert_eq!(out, expected, "encode {attr:?}");
    let flags = AttrFlags(expected[0]);
    let (value, type_code) = if flags.is_extended_length() {
        (&expected[4..], expected[1])
    } else {
        (&expected[3..], expected[1])
    };
    assert_eq!(
        &PathAttribute::decode(flags, type_code, value, expected, dec).expect("decode"),
        attr
    );
}

fn v4(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Net {
    s.parse().unwrap()
}

#[test]
fn keepalive() {
    let expected = header(19, 4); // marker, length 19, type 4 KEEPALIVE; no body
    both_ways(&Message::Keepalive, &FOUR, &D4, &expected);
}

#[test]
fn open_with_capabilities() {
    let mut expected = header(57, 1); // length 19 + 38, type 1 OPEN
    expected.extend_from_slice(&[
        4, // version
        0xFD, 0xE9, // my AS 65001
        0x00, 0x5A, // hold time 90
        192, 0, 2, 1,  // BGP identifier
        28, // optional parameters length
        2, 6, // parameter: capabilities, 6 bytes
        1, 4, 0x00, 0x01, 0x00, 0x01, // multiprotocol, len 4: AFI 1, reserved, SAFI 1
        2, 6, // parameter: capabilities, 6 bytes
        1, 4, 0x00, 0x02, 0x00, 0x01, // multiprotocol, len 4: AFI 2, reserved, SAFI 1
        2, 2, // parameter: capabilities, 2 bytes
        2, 0, // route refresh, len 0
        2, 6, // parameter: capabilities, 6 bytes
        65, 4, 0x00, 0x00, 0xFD, 0xE9, // 4-octet AS, len 4: 65001
    ]);
    let open = Open::new(
        65001,
        90,
        Ipv4Addr::new(192, 0, 2, 1),
        vec![
            Capability::multiprotocol(Family::Ipv4Unicast),
            Capability::multiprotocol(Family::Ipv6Unicast),
            Capability::RouteRefresh,
        ],
    );
    both_ways(&Message::Open(open.clone()), &FOUR, &D4, &expected);
    assert_eq!(open.asn(), 65001);
    assert_eq!(
        open.families(),
        vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
    );
}

#[test]
fn open_four_octet_asn_uses_as_trans() {
    let mut expected = header(37, 1);
    expected.extend_from_slice(&[
        4, // version
        0x5B, 0xA0, // my AS: AS_TRANS 23456
        0x00, 0xB4, // hold time 180
        192, 0, 2, 2, // BGP identifier
        8, // optional parameters length
        2, 6, // capabilities parameter
        65, 4, 0xFA, 0x56, 0xEA, 0x00, // 4-octet AS 4200000000
    ]);
    let open = Open::new(4_200_000_000, 180, Ipv4Addr::new(192, 0, 2, 2), vec![]);
    assert_eq!(open.my_as, AS_TRANS);
    both_ways(&Message::Open(open.clone()), &FOUR, &D4, &expected);
    assert_eq!(open.asn(), 4_200_000_000);
    // No multiprotocol capability: IPv4 unicast is implied (RFC 4760 §8).
    assert_eq!(open.families(), vec![Family::Ipv4Unicast]);
}

#[test]
fn graceful_restart_and_unknown_capabilities() {
    let mut expected = header(47, 1);
    expected.extend_from_slice(&[
        4, 0xFD, 0xE9, 0x00, 0x00, // version, AS 65001, hold time 0
        192, 0, 2, 1,  // identifier
        18, // optional parameters length
        2, 12, // capabilities parameter, 12 bytes
        64, 10, // graceful restart, len 10
        0x80, 0x78, // flags R=1 N=0, restart time 120
        0x00, 0x01, 0x01, 0x80, // AFI 1 SAFI 1, forwarding state preserved
        0x00, 0x02, 0x01, 0x00, // AFI 2 SAFI 1, not preserved
        2, 2, // capabilities parameter, 2 bytes
        70, 0, // enhanced route refresh (not interpreted), len 0
    ]);
    let gr = GracefulRestart {
        restart_state: RestartState::Restarting,
        notification: NotificationSupport::NotSupported,
        restart_time: 120,
        families: vec![
            GracefulRestartFamily {
                afi: Afi::Ipv4,
                safi: Safi::Unicast,
                forwarding: ForwardingState::Preserved,
            },
            GracefulRestartFamily {
                afi: Afi::Ipv6,
                safi: Safi::Unicast,
                forwarding: ForwardingState::NotPreserved,
            },
        ],
    };
    let open = Open {
        version: 4,
        my_as: 65001,
        hold_time: 0,
        bgp_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: vec![
            Capability::GracefulRestart(gr),
            Capability::Unknown {
                code: 70,
                value: vec![],
            },
        ],
    };
    both_ways(&Message::Open(open), &FOUR, &D4, &expected);
}

#[test]
fn open_all_capabilities_in_one_parameter_decodes() {
    // bird puts every capability in one optional parameter; we must read that too.
    let mut bytes = header(39, 1);
    bytes.extend_from_slice(&[
        4, 0xFD, 0xE9, 0x00, 0x5A, 192, 0, 2, 9,  // version, AS 65001, hold 90, identifier
        10, // optional parameters length
        2, 8, // one capabilities parameter, 8 bytes, holding two capabilities
        2, 0, // route refresh
        1, 4, 0, 2, 0, 1, // multiprotocol IPv6 unicast
    ]);
    let Message::Open(open) = Message::decode(&bytes, &D4).unwrap() else {
        panic!()
    };
    assert_eq!(
        open.capabilities,
        vec![
            Capability::RouteRefresh,
            Capability::Multiprotocol {
                afi: Afi::Ipv6,
                safi: Safi::Unicast
            }
        ]
    );
}

#[test]
fn update_ipv4_announce() {
    let mut expected = header(80, 2); // length 19 + 61, type 2 UPDATE
    expected.extend_from_slice(&[
        0x00, 0x00, // withdrawn routes length 0
        0x00, 0x35, // total path attribute length 53
        0x40, 1, 1, 0, // ORIGIN: well-known transitive, len 1, IGP
        0x40, 2, 6, 2, 1, 0x00, 0x00, 0xFD, 0xE9, // AS_PATH: len 6, AS_SEQUENCE of 1: 65001
        0x40, 3, 4, 192, 0, 2, 1, // NEXT_HOP: len 4, 192.0.2.1
        0x80, 4, 4, 0, 0, 0, 100, // MULTI_EXIT_DISC: optional non-transitive, len 4, 100
        0xC0, 8, 8, 0xFD, 0xE9, 0x00, 0x64, 0xFF, 0xFF, 0xFF,
        0x01, // COMMUNITIES: 65001:100, NO_EXPORT
        0xC0, 32, 12, 0, 0, 0xFD, 0xE9, 0, 0, 0, 1, 0, 0, 0, 2, // LARGE_COMMUNITY 65001:1:2
        24, 203, 0, 113, // NLRI 203.0.113.0/24
    ]);
    let update = Update {
        withdrawn: vec![],
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence([65001])),
            PathAttribute::NextHop(Ipv4Addr::new(192, 0, 2, 1)),
            PathAttribute::MultiExitDisc(100),
            PathAttribute::Communities(vec![Community::new(65001, 100), Community::NO_EXPORT]),
            PathAttribute::LargeCommunities(vec![LargeCommunity {
                global_admin: 65001,
                local1: 1,
                local2: 2,
            }]),
        ],
        nlri: vec![v4("203.0.113.0/24")],
    };
    both_ways(&Message::Update(update), &FOUR, &D4, &expected);
}

#[test]
fn update_ipv4_withdraw() {
    let mut expected = header(32, 2);
    expected.extend_from_slice(&[
        0x00, 0x09, // withdrawn routes length 9
        24, 203, 0, 113, // 203.0.113.0/24
        25, 203, 0, 113, 128, // 203.0.113.128/25
        0x00, 0x00, // total path attribute length 0
    ]);
    let update = Update {
        withdrawn: vec![v4("203.0.113.0/24"), v4("203.0.113.128/25")],
        ..Update::default()
    };
    both_ways(&Message::Update(update), &FOUR, &D4, &expected);
}

#[test]
fn end_of_rib_markers() {
    let mut v4_eor = header(23, 2);
    v4_eor.extend_from_slice(&[0, 0, 0, 0]); // no withdrawn routes, no attributes, no NLRI
    both_ways(
        &Message::Update(Update::end_of_rib(Family::Ipv4Unicast)),
        &FOUR,
        &D4,
        &v4_eor,
    );

    let mut v6_eor = header(29, 2);
    v6_eor.extend_from_slice(&[
        0, 0, // withdrawn routes length 0
        0, 6, // total path attribute length 6
        0x80, 15, 3, 0x00, 0x02,
        0x01, // MP_UNREACH_NLRI, len 3: AFI 2, SAFI 1, nothing withdrawn
    ]);
    both_ways(
        &Message::Update(Update::end_of_rib(Family::Ipv6Unicast)),
        &FOUR,
        &D4,
        &v6_eor,
    );
    let Message::Update(u) = Message::decode(&v6_eor, &D4).unwrap() else {
        panic!()
    };
    assert_eq!(u.end_of_rib_family(), Some(Family::Ipv6Unicast));
}

#[test]
fn mp_reach_ipv6_with_link_local() {
    let expected = [
        0x80, 14, 46, // MP_REACH_NLRI: optional non-transitive, len 46
        0x00, 0x02, 0x01, // AFI 2, SAFI 1
        32,   // next hop length: global + link-local
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, // 2001:db8:0:1::1
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // fe80::1
        0, // reserved
        64, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0xff, 0x00, 0x00, // 2001:db8:ff::/64
    ];
    let attr = PathAttribute::MpReach(MpReach::Ipv6Unicast {
        next_hop: "2001:db8:0:1::1".parse::<Ipv6Addr>().unwrap(),
        link_local: Some("fe80::1".parse().unwrap()),
        nlri: vec![v6("2001:db8:ff::/64")],
    });
    attr_both_ways(&attr, &FOUR, &D4, &expected);
}

#[test]
fn mp_reach_ipv6_global_only_and_ipv4() {
    let expected = [
        0x80, 14, 22, // MP_REACH_NLRI, len 22
        0x00, 0x02, 0x01, 16, // AFI 2, SAFI 1, next hop length 16
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, // 2001:db8:0:1::1
        0, // reserved
        0, // NLRI: the default route ::/0
    ];
    let attr = PathAttribute::MpReach(MpReach::Ipv6Unicast {
        next_hop: "2001:db8:0:1::1".parse().unwrap(),
        link_local: None,
        nlri: vec![v6("::/0")],
    });
    attr_both_ways(&attr, &FOUR, &D4, &expected);

    let expected = [
        0x80, 14, 14, // MP_REACH_NLRI, len 14
        0x00, 0x01, 0x01, 4, 192, 0, 2, 1, // AFI 1, SAFI 1, next hop 192.0.2.1
        0, // reserved
        32, 203, 0, 113, 7, // 203.0.113.7/32
    ];
    let attr = PathAttribute::MpReach(MpReach::Ipv4Unicast {
        next_hop: Ipv4Addr::new(192, 0, 2, 1),
        nlri: vec![v4("203.0.113.7/32")],
    });
    attr_both_ways(&attr, &FOUR, &D4, &expected);
}

#[test]
fn mp_unreach_ipv6() {
    let expected = [
        0x80, 15, 12, // MP_UNREACH_NLRI, len 12
        0x00, 0x02, 0x01, // AFI 2, SAFI 1
        64, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0xff, 0x00, 0x00, // 2001:db8:ff::/64
    ];
    let attr = PathAttribute::MpUnreach(MpUnreach::Ipv6Unicast(vec![v6("2001:db8:ff::/64")]));
    attr_both_ways(&attr, &FOUR, &D4, &expected);
}

#[test]
fn origin_values() {
    attr_both_ways(
        &PathAttribute::Origin(Origin::Egp),
        &FOUR,
        &D4,
        &[0x40, 1, 1, 1],
    );
    attr_both_ways(
        &PathAttribute::Origin(Origin::Incomplete),
        &FOUR,
        &D4,
        &[0x40, 1, 1, 2],
    );
}

#[test]
fn as_path_two_and_four_octets_with_set() {
    let path = AsPath {
        segments: vec![
            AsSegment {
                kind: SegmentType::AsSequence,
                asns: vec![65001, 65002],
            },
            AsSegment {
                kind: SegmentType::AsSet,
                asns: vec![64512],
            },
        ],
    };
    let four = [
        0x40, 2, 16, // AS_PATH, len 16
        2, 2, 0, 0, 0xFD, 0xE9, 0, 0, 0xFD, 0xEA, // AS_SEQUENCE of 2: 65001 65002
        1, 1, 0, 0, 0xFC, 0x00, // AS_SET of 1: 64512
    ];
    attr_both_ways(&PathAttribute::AsPath(path.clone()), &FOUR, &D4, &four);
    let two = [
        0x40, 2, 10, // AS_PATH, len 10
        2, 2, 0xFD, 0xE9, 0xFD, 0xEA, // AS_SEQUENCE of 2, 2-octet ASNs
        1, 1, 0xFC, 0x00, // AS_SET of 1
    ];
    attr_both_ways(&PathAttribute::AsPath(path.clone()), &TWO, &D2, &two);
    assert_eq!(path.path_len(), 3);
    assert_eq!(path.first_as(), Some(65001));
    // An empty AS_PATH (iBGP, locally originated) is a zero-length attribute.
    attr_both_ways(
        &PathAttribute::AsPath(AsPath::default()),
        &FOUR,
        &D4,
        &[0x40, 2, 0],
    );
}

#[test]
fn as4_path_added_for_two_octet_peers_and_merged_back() {
    let update = Update {
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence([4_200_000_000, 65001])),
            PathAttribute::NextHop(Ipv4Addr::new(192, 0, 2, 1)),
        ],
        nlri: vec![v4("203.0.113.0/24")],
        ..Update::default()
    };
    let mut expected = header(60, 2);
    expected.extend_from_slice(&[
        0, 0, // withdrawn routes length
        0, 33, // total path attribute length
        0x40, 1, 1, 0, // ORIGIN IGP
        0x40, 2, 6, 2, 2, 0x5B, 0xA0, 0xFD, 0xE9, // AS_PATH: AS_TRANS 65001
        0xC0, 17, 10, 2, 2, 0xFA, 0x56, 0xEA, 0x00, 0, 0, 0xFD,
        0xE9, // AS4_PATH: 4200000000 65001
        0x40, 3, 4, 192, 0, 2, 1, // NEXT_HOP
        24, 203, 0, 113, // NLRI
    ]);
    let bytes = Message::Update(update).encode(&TWO);
    assert_eq!(bytes, expected);
    let Message::Update(decoded) = Message::decode(&bytes, &D2).unwrap() else {
        panic!()
    };
    assert_eq!(
        decoded.effective_as_path(),
        Some(AsPath::sequence([4_200_000_000, 65001]))
    );
    // A 4-octet speaker ignores AS4_PATH from another one (RFC 6793 §4.1).
    let mut with_as4 = decoded.clone();
    with_as4.attributes[1] = PathAttribute::AsPath(AsPath::sequence([4_200_000_000, 65001]));
    let bytes = Message::Update(with_as4).encode(&FOUR);
    match Update::decode(&bytes[19..], &D4) {
        UpdateOutcome::AttributesDiscarded { discarded, .. } => {
            assert_eq!(discarded[0].type_code, 17)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn next_hop_med_local_pref_atomic_aggregate() {
    attr_both_ways(
        &PathAttribute::NextHop(Ipv4Addr::new(192, 0, 2, 254)),
        &FOUR,
        &D4,
        &[0x40, 3, 4, 192, 0, 2, 254],
    );
    attr_both_ways(
        &PathAttribute::MultiExitDisc(0xDEADBEEF),
        &FOUR,
        &D4,
        &[0x80, 4, 4, 0xDE, 0xAD, 0xBE, 0xEF],
    );
    attr_both_ways(
        &PathAttribute::LocalPref(200),
        &FOUR,
        &D4_IBGP,
        &[0x40, 5, 4, 0, 0, 0, 200],
    );
    attr_both_ways(&PathAttribute::AtomicAggregate, &FOUR, &D4, &[0x40, 6, 0]);
}

#[test]
fn aggregator_both_widths_and_as4_aggregator() {
    let agg = Aggregator {
        asn: 65001,
        address: Ipv4Addr::new(192, 0, 2, 1),
    };
    attr_both_ways(
        &PathAttribute::Aggregator(agg),
        &TWO,
        &D2,
        &[0xC0, 7, 6, 0xFD, 0xE9, 192, 0, 2, 1],
    );
    attr_both_ways(
        &PathAttribute::Aggregator(agg),
        &FOUR,
        &D4,
        &[0xC0, 7, 8, 0, 0, 0xFD, 0xE9, 192, 0, 2, 1],
    );
    let agg4 = Aggregator {
        asn: 4_200_000_000,
        address: Ipv4Addr::new(192, 0, 2, 1),
    };
    attr_both_ways(
        &PathAttribute::As4Aggregator(agg4),
        &TWO,
        &D2,
        &[0xC0, 18, 8, 0xFA, 0x56, 0xEA, 0x00, 192, 0, 2, 1],
    );
}

#[test]
fn well_known_communities_by_name() {
    let all = [
        (Community::NO_EXPORT, "NO_EXPORT", [0xFF, 0xFF, 0xFF, 0x01]),
        (
            Community::NO_ADVERTISE,
            "NO_ADVERTISE",
            [0xFF, 0xFF, 0xFF, 0x02],
        ),
        (
            Community::NO_EXPORT_SUBCONFED,
            "NO_EXPORT_SUBCONFED",
            [0xFF, 0xFF, 0xFF, 0x03],
        ),
        (Community::NO_PEER, "NO_PEER", [0xFF, 0xFF, 0xFF, 0x04]),
        (Community::BLACKHOLE, "BLACKHOLE", [0xFF, 0xFF, 0x02, 0x9A]),
    ];
    for (c, name, bytes) in all {
        assert_eq!(c.to_string(), name);
        assert_eq!(Community::parse(name), Some(c));
        // The API's spelling: lower case with dashes.
        let api = name.to_ascii_lowercase().replace('_', "-");
        assert_eq!(Community::parse(&api), Some(c), "{api}");
        let mut expected = vec![0xC0, 8, 4]; // COMMUNITIES, optional transitive, len 4
        expected.extend_from_slice(&bytes);
        attr_both_ways(&PathAttribute::Communities(vec![c]), &FOUR, &D4, &expected);
    }
    assert_eq!(
        Community::parse("local-as"),
        Some(Community::NO_EXPORT_SUBCONFED),
        "FRR's name"
    );
    for bad in ["65536:1", "1:2:3", "no-such", "", ":"] {
        assert_eq!(Community::parse(bad), None, "{bad}");
    }
    assert_eq!(
        LargeCommunity::parse("64512:1:4294967295"),
        Some(LargeCommunity {
            global_admin: 64512,
            local1: 1,
            local2: u32::MAX
        })
    );
    for bad in ["1:2", "1:2:3:4", "1:x:3", "4294967296:1:1", ""] {
        assert_eq!(LargeCommunity::parse(bad), None, "{bad}");
    }
    assert_eq!(Community::new(65001, 42).to_string(), "65001:42");
    assert_eq!(
        Community::parse("65001:42"),
        Some(Community::new(65001, 42))
    );
    assert_eq!(
        LargeCommunity {
            global_admin: 4_200_000_000,
            local1: 1,
            local2: 2
        }
        .to_string(),
        "4200000000:1:2"
    );
}

#[test]
fn extended_length_when_value_exceeds_255() {
    let cs: Vec<Community> = (0..70).map(|i| Community::new(65001, i)).collect();
    let mut expected = vec![0xD0, 8, 0x01, 0x18]; // optional transitive + extended length, len 280
    for c in &cs {
        expected.extend_from_slice(&c.0.to_be_bytes());
    }
    attr_both_ways(&PathAttribute::Communities(cs), &FOUR, &D4, &expected);
}

#[test]
fn unknown_optional_transitive_kept_and_marked_partial() {
    let attr = PathAttribute::Unknown(UnknownAttribute {
        flags: AttrFlags(0xC0),
        type_code: 99,
        value: vec![0xAB, 0xCD],
    });
    attr_both_ways(&attr, &FOUR, &D4, &[0xC0, 99, 2, 0xAB, 0xCD]);
    let PathAttribute::Unknown(u) = attr else {
        unreachable!()
    };
    assert_eq!(u.for_propagation().unwrap().flags, AttrFlags(0xE0)); // partial bit set
    let non_transitive = UnknownAttribute {
        flags: AttrFlags(0x80),
        ..u
    };
    assert_eq!(non_transitive.for_propagation(), None);
}

#[test]
fn notifications() {
    let mut expected = header(21, 3);
    expected.extend_from_slice(&[4, 0]); // hold timer expired, subcode 0
    both_ways(
        &Message::Notification(Notification::bare(ErrorCode::HoldTimerExpired)),
        &FOUR,
        &D4,
        &expected,
    );

    let mut expected = header(23, 3);
    expected.extend_from_slice(&[2, 2, 0xFD, 0xE9]); // OPEN error, bad peer AS, data: AS 65001
    let n = Notification::open(OpenMessageError::BadPeerAs, [0xFD, 0xE9]);
    both_ways(&Message::Notification(n.clone()), &FOUR, &D4, &expected);
    assert_eq!(
        n.to_string(),
        "OPEN message error / bad peer AS (2/2) data fd e9"
    );

    // Cease, administrative shutdown, with an RFC 9003 shutdown communication.
    let mut expected = header(33, 3);
    expected.extend_from_slice(&[6, 2, 11]);
    expected.extend_from_slice(b"maintenance");
    let Message::Notification(n) = Message::decode(&expected, &D4).unwrap() else {
        panic!()
    };
    assert_eq!(
        n.error,
        ErrorCode::Cease(CeaseSubcode::AdministrativeShutdown)
    );
    assert_eq!(n.shutdown_message(), Some("maintenance"));
    assert_eq!(Message::Notification(n).encode(&FOUR), expected);

    // Every named code and subcode survives the wire.
    for code in 0..=8u8 {
        for sub in 0..=12u8 {
            let e = ErrorCode::from_wire(code, sub);
            assert_eq!(e.to_wire(), (code, sub));
        }
    }
    assert_eq!(
        ErrorCode::from_wire(3, 11),
        ErrorCode::Update(UpdateMessageError::MalformedAsPath)
    );
    assert_eq!(
        ErrorCode::from_wire(6, 7),
        ErrorCode::Cease(CeaseSubcode::ConnectionCollisionResolution)
    );
    assert_eq!(
        ErrorCode::from_wire(1, 1),
        ErrorCode::MessageHeader(MessageHeaderError::ConnectionNotSynchronized)
    );
}

#[test]
fn route_refresh() {
    let mut expected = header(23, 5);
    expected.extend_from_slice(&[0x00, 0x02, 0x00, 0x01]); // AFI 2, subtype 0, SAFI 1
    both_ways(
        &Message::RouteRefresh(RouteRefresh::request(Family::Ipv6Unicast)),
        &FOUR,
        &D4,
        &expected,
    );
}

#[test]
fn framing_a_stream() {
    let mut stream = Message::Keepalive.encode(&FOUR);
    stream.extend_from_slice(&Message::Keepalive.encode(&FOUR)[..10]);
    assert_eq!(frame(&stream), Ok(Some(19)));
    assert_eq!(frame(&stream[19..]), Ok(None));
    assert!(
        frame(&[0xFF, 0xFF, 0x00]).is_err(),
        "a bad marker fails before the header is complete"
    );
}
