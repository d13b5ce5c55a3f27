//! Round-trip property tests: encode then decode gives back the value; arbitrary bytes never
//! panic a decoder.

use ferrolb_core::bgp::attribute::{AttrFlags, UnknownAttribute};
use ferrolb_core::bgp::*;
use ipnet::{Ipv4Net, Ipv6Net};
use proptest::collection::vec;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const FOUR: EncodeContext = EncodeContext {
    as_width: AsWidth::Four,
};
const D4_IBGP: DecodeContext = DecodeContext {
    as_width: AsWidth::Four,
    peer_kind: PeerKind::Internal,
};
const TWO: EncodeContext = EncodeContext {
    as_width: AsWidth::Two,
};
const D2_IBGP: DecodeContext = DecodeContext {
    as_width: AsWidth::Two,
    peer_kind: PeerKind::Internal,
};

fn v4net() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, l)| Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc())
}
fn v6net() -> impl Strategy<Value = Ipv6Net> {
    (any::<u128>(), 0u8..=128)
        .prop_map(|(a, l)| Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc())
}
fn host() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>()
        .prop_map(Ipv4Addr::from)
        .prop_filter("host address", |a| {
            !a.is_unspecified() && !a.is_broadcast() && !a.is_multicast()
        })
}
fn afi_safi_other() -> impl Strategy<Value = (Afi, Safi)> {
    (any::<u16>(), any::<u8>())
        .prop_filter("not a family we parse", |&(a, s)| {
            !((a == 1 || a == 2) && s == 1)
        })
        .prop_map(|(a, s)| (Afi::from(a), Safi::from(s)))
}

fn as_path(max_asn: u32) -> impl Strategy<Value = AsPath> {
    let seg = (1u8..=4, vec(0..=max_asn, 1..20)).prop_map(|(k, asns)| AsSegment {
        kind: SegmentType::from(k),
        asns,
    });
    vec(seg, 0..4).prop_map(|segments| AsPath { segments })
}

fn capability() -> impl Strategy<Value = Capability> {
    let gr_family =
        (any::<u16>(), any::<u8>(), any::<bool>()).prop_map(|(a, s, f)| GracefulRestartFamily {
            afi: a.into(),
            safi: s.into(),
            forwarding: if f {
                ForwardingState::Preserved
            } else {
                ForwardingState::NotPreserved
            },
        });
    prop_oneof![
        (any::<u16>(), any::<u8>()).prop_map(|(a, s)| Capability::Multiprotocol {
            afi: a.into(),
            safi: s.into()
        }),
        Just(Capability::RouteRefresh),
        any::<u32>().prop_map(Capability::FourOctetAs),
        (
            any::<bool>(),
            any::<bool>(),
            0u16..4096,
            vec(gr_family, 0..4)
        )
            .prop_map(|(r, n, t, families)| {
                Capability::GracefulRestart(GracefulRestart {
                    restart_state: if r {
                        RestartState::Restarting
                    } else {
                        RestartState::Normal
                    },
                    notification: if n {
                        NotificationSupport::Supported
                    } else {
                        NotificationSupport::NotSupported
                    },
                    restart_time: t,
                    families,
                })
            }),
        (
            any::<u8>().prop_filter("unknown", |c| ![1, 2, 64, 65].contains(c)),
            vec(any::<u8>(), 0..40)
        )
            .prop_map(|(code, value)| Capability::Unknown { code, value }),
    ]
}

fn open() -> impl Strategy<Value = Open> {
    (
        any::<u16>(),
        any::<u16>().prop_filter("hold", |h| *h != 1 && *h != 2),
        1u32..,
        vec(capability(), 0..30),
    )
        .prop_map(|(my_as, hold_time, id, capabilities)| Open {
            version: 4,
            my_as,
            hold_time,
            bgp_id: Ipv4Addr::from(id),
            capabilities,
        })
}

/// Optional attributes (beyond ORIGIN, AS_PATH, NEXT_HOP), valid for `max_asn`-wide sessions.
fn extra_attribute(max_asn: u32) -> impl Strategy<Value = PathAttribute> {
    let large =
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(global_admin, local1, local2)| {
            LargeCommunity {
                global_admin,
                local1,
                local2,
            }
        });
    let agg = (0..=max_asn, host()).prop_map(|(asn, address)| Aggregator { asn, address });
    prop_oneof![
        any::<u32>().prop_map(PathAttribute::MultiExitDisc),
        any::<u32>().prop_map(PathAttribute::LocalPref),
        Just(PathAttribute::AtomicAggregate),
        agg.prop_map(PathAttribute::Aggregator),
        vec(any::<u32>().prop_map(Community), 1..10).prop_map(PathAttribute::Communities),
        vec(large, 1..10).prop_map(PathAttribute::LargeCommunities),
        (
            any::<Ipv6Addr>(),
            proptest::option::of(any::<Ipv6Addr>()),
            vec(v6net(), 0..10)
        )
            .prop_map(|(next_hop, link_local, nlri)| PathAttribute::MpReach(
                MpReach::Ipv6Unicast {
                    next_hop,
                    link_local,
                    nlri
                }
            )),
        (
            afi_safi_other(),
            vec(any::<u8>(), 0..20),
            vec(any::<u8>(), 0..20)
        )
            .prop_map(|((afi, safi), next_hop, nlri)| {
                PathAttribute::MpReach(MpReach::Other {
                    afi,
                    safi,
                    next_hop,
                    nlri,
                })
            }),
        vec(v6net(), 0..10).prop_map(|w| PathAttribute::MpUnreach(MpUnreach::Ipv6Unicast(w))),
        vec(v4net(), 0..10).prop_map(|w| PathAttribute::MpUnreach(MpUnreach::Ipv4Unicast(w))),
        (afi_safi_other(), vec(any::<u8>(), 0..20)).prop_map(|((afi, safi), withdrawn)| {
            PathAttribute::MpUnreach(MpUnreach::Other {
                afi,
                safi,
                withdrawn,
            })
        }),
        (any::<u8>(), 0u8..=255, vec(any::<u8>(), 0..300))
            .prop_filter("unknown optional", |(_, c, _)| ![
                1, 2, 3, 4, 5, 6, 7, 8, 14, 15, 17, 18, 32
            ]
            .contains(c))
            .prop_map(
                |(f, type_code, value)| PathAttribute::Unknown(UnknownAttribute {
                    // Optional (unknown well-known ones reset the session); extended length is the
                    // encoder's choice, so only values that need it get it.
                    flags: AttrFlags(
                        (f | AttrFlags::OPTIONAL) & !AttrFlags::EXTENDED_LENGTH
                            | if value.len() > 255 {
                                AttrFlags::EXTENDED_LENGTH
                            } else {
                                0
                            }
                    ),
                    type_code,
                    value,
                })
            ),
    ]
}

fn update(max_asn: u32) -> impl Strategy<Value = Update> {
    (
        vec(v4net(), 0..20),
        as_path(max_asn),
        host(),
        vec(extra_attribute(max_asn), 0..6),
        vec(v4net(), 0..20),
    )
        .prop_map(|(withdrawn, path, nh, extra, nlri)| {
            let mut attributes = vec![
                PathAttribute::Origin(Origin::Igp),
                PathAttribute::AsPath(path),
                PathAttribute::NextHop(nh),
            ];
            // Repeated attributes are discarded by design; keep the first of each type.
            for a in extra {
                if !attributes.iter().any(|b| b.type_code() == a.type_code()) {
                    attributes.push(a);
                }
            }
            Update {
                withdrawn,
                attributes,
                nlri,
            }
        })
}

fn notification() -> impl Strategy<Value = Notification> {
    (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..64))
        .prop_map(|(c, s, data)| Notification::new(ErrorCode::from_wire(c, s), data))
}

fn route_refresh() -> impl Strategy<Value = RouteRefresh> {
    (any::<u16>(), any::<u8>(), any::<u8>()).prop_map(|(a, st, s)| RouteRefresh {
        afi: a.into(),
        subtype: st.into(),
        safi: s.into(),
    })
}

proptest! {
    #[test]
    fn open_round_trips(o in open()) {
        let msg = Message::Open(o);
        prop_assert_eq!(Message::decode(&msg.encode(&FOUR), &D4_IBGP), Ok(msg));
    }

    #[test]
    fn update_round_trips_four_octet(u in update(u32::MAX)) {
        let msg = Message::Update(u);
        let bytes = msg.encode(&FOUR);
        prop_assume!(bytes.len() <= MAX_MESSAGE_LEN);
        prop_assert_eq!(Message::decode(&bytes, &D4_IBGP), Ok(msg));
    }

    #[test]
    fn update_round_trips_two_octet(u in update(u32::from(u16::MAX))) {
        let msg = Message::Update(u);
        let bytes = msg.encode(&TWO);
        prop_assume!(bytes.len() <= MAX_MESSAGE_LEN);
        prop_assert_eq!(Message::decode(&bytes, &D2_IBGP), Ok(msg));
    }

    #[test]
    fn four_octet_paths_survive_two_octet_sessions(p in as_path(u32::MAX)) {
        // Only AS_SEQUENCE keeps a length RFC 6793's merge can line up exactly.
        let p = AsPath { segments: p.segments.into_iter().filter(|s| s.kind == SegmentType::AsSequence).collect() };
        let u = Update {
            attributes: vec![PathAttribute::Origin(Origin::Igp), PathAttribute::AsPath(p.clone()), PathAttribute::NextHop(Ipv4Addr::new(192, 0, 2, 1))],
            nlri: vec!["203.0.113.0/24".parse().unwrap()],
            ..Update::default()
        };
        let Ok(Message::Update(d)) = Message::decode(&Message::Update(u).encode(&TWO), &D2_IBGP) else {
            return Err(TestCaseError::fail("decode"));
        };
        prop_assert_eq!(d.effective_as_path(), Some(p));
    }

    #[test]
    fn notification_round_trips(n in notification()) {
        let msg = Message::Notification(n);
        prop_assert_eq!(Message::decode(&msg.encode(&FOUR), &D4_IBGP), Ok(msg));
    }

    #[test]
    fn route_refresh_round_trips(rr in route_refresh()) {
        let msg = Message::RouteRefresh(rr);
        prop_assert_eq!(Message::decode(&msg.encode(&FOUR), &D4_IBGP), Ok(msg));
    }

    #[test]
    fn attribute_round_trips(a in extra_attribute(u32::MAX)) {
        let mut bytes = Vec::new();
        a.encode(&FOUR, &mut bytes);
        let flags = AttrFlags(bytes[0]);
        let value = if flags.is_extended_length() { &bytes[4..] } else { &bytes[3..] };
        prop_assert_eq!(PathAttribute::decode(flags, bytes[1], value, &bytes, &D4_IBGP), Ok(a));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
        let _ = Message::decode(&bytes, &D4_IBGP);
        let _ = Message::decode(&bytes, &D2_IBGP);
        let _ = Update::decode(&bytes, &D4_IBGP);
        let _ = frame(&bytes);
    }

    #[test]
    fn arbitrary_bodies_behind_valid_headers_never_panic(kind in 1u8..=5, body in vec(any::<u8>(), 0..600)) {
        let mut bytes = vec![0xFF; 16];
        bytes.extend_from_slice(&u16::try_from(19 + body.len()).unwrap().to_be_bytes());
        bytes.push(kind);
        bytes.extend_from_slice(&body);
        let _ = Message::decode(&bytes, &D4_IBGP);
        let _ = Message::decode(&bytes, &D2_IBGP);
    }

    #[test]
    fn attribute_lists_of_random_attributes_never_panic(
        attrs in vec((any::<u8>(), prop_oneof![Just(1u8), Just(2), Just(3), Just(4), Just(5), Just(6), Just(7), Just(8), Just(14), Just(15), Just(17), Just(18), Just(32), any::<u8>()], vec(any::<u8>(), 0..40)), 0..8),
        nlri in vec(any::<u8>(), 0..20),
    ) {
        // Random attributes with plausible type codes get past the framing into each parser.
        let mut list = Vec::new();
        for (flags, t, value) in attrs {
            list.extend_from_slice(&[flags & !AttrFlags::EXTENDED_LENGTH, t, value.len() as u8]);
            list.extend_from_slice(&value);
        }
        let mut body = vec![0, 0];
        body.extend_from_slice(&(list.len() as u16).to_be_bytes());
        body.extend_from_slice(&list);
        body.extend_from_slice(&nlri);
        let _ = Update::decode(&body, &D4_IBGP);
        let _ = Update::decode(&body, &D2_IBGP);
    }
}
