//! Golden bytes for the layer-2 codecs, both ways: hand-built frames commented field by field,
//! and frames the Linux kernel sent (core/testdata/l2/, see its README).

use ferrolb_core::l2::arp::{ArpOperation, ArpPacket, gratuitous_frames};
use ferrolb_core::l2::ethernet::{ETHERTYPE_ARP, ETHERTYPE_IPV6, EthernetHeader, Frame, Payload};
use ferrolb_core::l2::ipv6::{ALL_NODES, Ipv6Header, NEXT_HEADER_ICMPV6};
use ferrolb_core::l2::ndp::{NaFlags, NdpMessage, NdpOption, NdpPacket, unsolicited_frame};
use ferrolb_core::l2::{DecodeError, MacAddr};
use std::net::{Ipv4Addr, Ipv6Addr};

const US: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
const CLIENT: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0c, 0x01]);
const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn testdata(name: &str) -> Vec<u8> {
    let path = format!("{}/testdata/l2/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn payload_arp(f: &Frame) -> ArpPacket {
    match &f.payload {
        Payload::Arp(a) => *a,
        other => panic!("not ARP: {other:?}"),
    }
}

fn payload_ndp(f: &Frame) -> &NdpPacket {
    match &f.payload {
        Payload::Ndp(p) => p,
        other => panic!("not NDP: {other:?}"),
    }
}

#[rustfmt::skip]
const ARP_REQUEST: [u8; 60] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet destination: broadcast
    0x02, 0x00, 0x00, 0x00, 0x0c, 0x01, // Ethernet source: the client
    0x08, 0x06,                         // EtherType: ARP
    0x00, 0x01,                         // hardware type: Ethernet
    0x08, 0x00,                         // protocol type: IPv4
    0x06,                               // hardware address length
    0x04,                               // protocol address length
    0x00, 0x01,                         // operation: request
    0x02, 0x00, 0x00, 0x00, 0x0c, 0x01, // sender MAC
    192, 0, 2, 100,                     // sender IP
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target MAC: unknown
    192, 0, 2, 10,                      // target IP: the VIP
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding to 60 bytes
];

#[test]
fn arp_request_both_ways() {
    let f = Frame::decode(&ARP_REQUEST).unwrap();
    assert_eq!(
        f.eth,
        EthernetHeader {
            dst: MacAddr::BROADCAST,
            src: CLIENT,
            vlan: None,
            ethertype: ETHERTYPE_ARP
        }
    );
    assert_eq!(payload_arp(&f), ArpPacket::request(CLIENT, CLIENT4, VIP4));
    assert_eq!(
        Frame::arp(
            MacAddr::BROADCAST,
            CLIENT,
            None,
            ArpPacket::request(CLIENT, CLIENT4, VIP4)
        )
        .encode(),
        ARP_REQUEST
    );
}

#[rustfmt::skip]
const ARP_REPLY: [u8; 60] = [
    0x02, 0x00, 0x00, 0x00, 0x0c, 0x01, // Ethernet destination: the requester
    0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, // Ethernet source: us
    0x08, 0x06,                         // EtherType: ARP
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, // Ethernet, IPv4, 6, 4
    0x00, 0x02,                         // operation: reply
    0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, // sender MAC: us
    192, 0, 2, 10,                      // sender IP: the VIP
    0x02, 0x00, 0x00, 0x00, 0x0c, 0x01, // target MAC: the requester
    192, 0, 2, 100,                     // target IP: the requester
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding
];

#[test]
fn arp_reply_both_ways() {
    let request = payload_arp(&Frame::decode(&ARP_REQUEST).unwrap());
    let reply = request.reply_to(US);
    assert_eq!(Frame::arp(CLIENT, US, None, reply).encode(), ARP_REPLY);
    let back = Frame::decode(&ARP_REPLY).unwrap();
    assert_eq!(payload_arp(&back), reply);
    assert_eq!(reply.op, ArpOperation::Reply);
}

#[test]
fn gratuitous_request_and_reply_bytes() {
    let [req, rep] = gratuitous_frames(US, VIP4, None);
    #[rustfmt::skip]
    let want_req: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // broadcast
        0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, // us
        0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04,
        0x00, 0x01,                         // request
        0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, // sender MAC: us
        192, 0, 2, 10,                      // sender IP: the VIP
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target MAC: zero (RFC 5227)
        192, 0, 2, 10,                      // target IP: the VIP again
    ];
    #[rustfmt::skip]
    let want_rep: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // broadcast
        0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, // us
        0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04,
        0x00, 0x02,                         // reply
        0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, // sender MAC: us
        192, 0, 2, 10,                      // sender IP: the VIP
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // target MAC: broadcast
        192, 0, 2, 10,                      // target IP: the VIP
    ];
    for (frame, want) in [(req, want_req), (rep, want_rep)] {
        let bytes = frame.encode();
        assert_eq!(&bytes[..42], &want);
        assert!(bytes[42..].iter().all(|b| *b == 0) && bytes.len() == 60);
        let arp = payload_arp(&Frame::decode(&bytes).unwrap());
        assert!(arp.is_gratuitous());
    }
}

#[rustfmt::skip]
const NS: [u8; 86] = [
    0x33, 0x33, 0xff, 0x00, 0x00, 0x10, // Ethernet destination: the solicited-node group's MAC
    0x02, 0x00, 0x00, 0x00, 0x0c, 0x01, // Ethernet source: the client
    0x86, 0xdd,                         // EtherType: IPv6
    0x60, 0x00, 0x00, 0x00,             // version 6, traffic class 0, flow label 0
    0x00, 0x20,                         // payload length 32
    0x3a,                               // next header: ICMPv6
    0xff,                               // hop limit 255
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xc1, // source 2001:db8:0:1::c1
    0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0x00, 0x00, 0x10, // ff02::1:ff00:10
    0x87,                               // ICMPv6 type 135: neighbour solicitation
    0x00,                               // code 0
    0x0f, 0x49,                         // checksum (computed independently)
    0x00, 0x00, 0x00, 0x00,             // reserved
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x10, // target 2001:db8:0:1::10
    0x01, 0x01,                         // option: source link-layer address, 1 unit
    0x02, 0x00, 0x00, 0x00, 0x0c, 0x01, // the client's MAC
];

#[test]
fn neighbor_solicitation_both_ways() {
    let f = Frame::decode(&NS).unwrap();
    let p = payload_ndp(&f);
    let want = NdpPacket::solicitation(v6("2001:db8:0:1::c1"), CLIENT, v6("2001:db8:0:1::10"));
    assert_eq!(*p, want);
    assert_eq!(p.validate(), Ok(()));
    let dst = ferrolb_core::l2::ipv6::multicast_mac(want.ip.dst);
    assert_eq!(Frame::ndp(dst, CLIENT, None, want).encode(), NS);
}

#[rustfmt::skip]
const NA_SOLICITED: [u8; 86] = [
    0x02, 0x00, 0x00, 0x00, 0x0c, 0x01, // Ethernet destination: the solicitor
    0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, // Ethernet source: us
    0x86, 0xdd,                         // IPv6
    0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, // v6, length 32, ICMPv6, hop limit 255
    0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0x00, 0x0a, 0x01, // our link-local
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xc1, // the solicitor
    0x88,                               // ICMPv6 type 136: neighbour advertisement
    0x00,                               // code 0
    0xa5, 0xdb,                         // checksum (computed independently)
    0x60, 0x00, 0x00, 0x00,             // flags: Solicited + Override
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x10, // target: the VIP
    0x02, 0x01,                         // option: target link-layer address, 1 unit
    0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, // our MAC
];

#[test]
fn solicited_advertisement_both_ways() {
    let ns = payload_ndp(&Frame::decode(&NS).unwrap()).clone();
    let na = NdpPacket::solicited_advertisement(&ns, v6("fe80::ff:fe00:a01"), US).unwrap();
    assert_eq!(
        Frame::ndp(CLIENT, US, None, na.clone()).encode(),
        NA_SOLICITED
    );
    assert_eq!(payload_ndp(&Frame::decode(&NA_SOLICITED).unwrap()), &na);
    let NdpMessage::Advertisement { flags, .. } = na.message else {
        panic!()
    };
    assert_eq!(flags, NaFlags::SOLICITED | NaFlags::OVERRIDE);
}

#[test]
fn unsolicited_advertisement_bytes() {
    let bytes =
        unsolicited_frame(v6("fe80::ff:fe00:a01"), US, v6("2001:db8:0:1::10"), None).encode();
    #[rustfmt::skip]
    let want: [u8; 86] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01, // all-nodes MAC
        0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, // us
        0x86, 0xdd,
        0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff,
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0x00, 0x0a, 0x01, // our link-local
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,             // ff02::1
        0x88, 0x00,
        0x15, 0x53,                         // checksum (computed independently)
        0x20, 0x00, 0x00, 0x00,             // flags: Override only
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x10,
        0x02, 0x01, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, // TLLA: us
    ];
    assert_eq!(bytes, want);
    let p = payload_ndp(&Frame::decode(&bytes).unwrap()).clone();
    assert_eq!(p.ip.dst, ALL_NODES);
    assert_eq!(p.validate(), Ok(()));
}

#[test]
fn tagged_arp_request_decodes_and_keeps_its_tag() {
    let mut bytes = ARP_REQUEST[..12].to_vec();
    bytes.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]); // 802.1Q, VID 42
    bytes.extend_from_slice(&ARP_REQUEST[12..]);
    let f = Frame::decode(&bytes).unwrap();
    assert_eq!(f.eth.vlan.map(|t| t.vid()), Some(42));
    assert_eq!(payload_arp(&f), ArpPacket::request(CLIENT, CLIENT4, VIP4));
    assert_eq!(&f.encode()[..bytes.len() - 4], &bytes[..bytes.len() - 4]);
}

// Frames the kernel sent: decode to the expected values and re-encode to the same bytes.

fn roundtrip_kernel(name: &str) -> Frame {
    let bytes = testdata(name);
    let f = Frame::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        f.encode()[..bytes.len()],
        bytes[..],
        "{name} re-encodes byte for byte"
    );
    f
}

#[test]
fn kernel_arp() {
    let a = payload_arp(&roundtrip_kernel("arp_request"));
    let b = MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]);
    let a_mac = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
    assert_eq!(
        a,
        ArpPacket::request(
            a_mac,
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(192, 0, 2, 2)
        )
    );
    let r = payload_arp(&roundtrip_kernel("arp_reply"));
    assert_eq!(r, a.reply_to(b));
}

#[test]
fn kernel_ndp() {
    let a_mac = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
    let b_mac = MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]);

    let ns = payload_ndp(&roundtrip_kernel("ns_multicast")).clone();
    assert_eq!(
        ns,
        NdpPacket::solicitation(v6("2001:db8:0:1::1"), a_mac, v6("2001:db8:0:1::2"))
    );

    let na = payload_ndp(&roundtrip_kernel("na_solicited")).clone();
    assert_eq!(
        na,
        NdpPacket::solicited_advertisement(&ns, v6("2001:db8:0:1::2"), b_mac).unwrap()
    );

    let dad = payload_ndp(&roundtrip_kernel("ns_dad_global")).clone();
    assert!(dad.ip.src.is_unspecified());
    assert_eq!(dad.validate(), Ok(()));
    assert!(
        matches!(dad.message.options(), [NdpOption::Other { kind: 14, data }] if data.len() == 6),
        "nonce option"
    );

    let un = payload_ndp(&roundtrip_kernel("na_unsolicited_override")).clone();
    assert_eq!(
        un,
        NdpPacket::unsolicited_advertisement(
            v6("fe80::ff:fe00:a01"),
            a_mac,
            v6("fe80::ff:fe00:a01")
        )
    );

    let nud = payload_ndp(&roundtrip_kernel("ns_unicast_nud")).clone();
    assert_eq!(nud.ip.dst, v6("2001:db8:0:1::1"));
    assert_eq!(nud.source_link_layer(), Some(b_mac));

    let bare = payload_ndp(&roundtrip_kernel("na_solicited_no_tlla")).clone();
    assert_eq!(bare.target_link_layer(), None);
    assert!(matches!(
        bare.message,
        NdpMessage::Advertisement {
            flags: NaFlags(0x40),
            ..
        }
    ));
    for p in [&ns, &na, &un, &nud, &bare] {
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.ip.next_header, NEXT_HEADER_ICMPV6);
    }
}

#[test]
fn kernel_non_ndp_icmpv6_is_told_apart() {
    assert_eq!(
        Frame::decode(&testdata("rs_router_solicitation")),
        Err(DecodeError::NotNdp(133))
    );
    assert_eq!(
        Frame::decode(&testdata("icmpv6_echo_request")),
        Err(DecodeError::NotNdp(128))
    );
    let h = EthernetHeader::decode(&testdata("icmpv6_echo_request")).unwrap();
    assert_eq!(h.ethertype, ETHERTYPE_IPV6);
    let (ip, _) = Ipv6Header::decode(&testdata("icmpv6_echo_request")[14..]).unwrap();
    assert_eq!(ip.hop_limit, 64);
}
