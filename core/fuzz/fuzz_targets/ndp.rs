//! A whole Ethernet frame as the NDP responder sees it: the frame decoder (Ethernet, VLAN,
//! IPv6, ICMPv6, options), the RFC 4861 checks, and `decide_ndp`.
//!
//! The first byte is a control byte: when its low bit is set the ICMPv6 checksum of the rest is
//! fixed up before decoding, so the fuzzer gets past the checksum to the option parser and the
//! receive checks instead of spending its time on a 16-bit guess.
#![no_main]
use ferrolb_core::l2::ipv6::icmpv6_checksum;
use ferrolb_core::l2::{
    EthernetHeader, Frame, IpStatus, Ipv6Header, MacAddr, Payload, ResponderState, decide_ndp,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::LazyLock;

static STATE: LazyLock<ResponderState> = LazyLock::new(|| {
    let announced = IpStatus::Announced {
        interface: "eth0".into(),
    };
    let ip = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().unwrap());
    ResponderState {
        interface: "eth0".into(),
        mac: MacAddr([0x02, 0, 0, 0, 0x0c, 0x01]),
        link_local: None,
        // The testdata frames ask for ::2 and fe80::ff:fe00:a01 and come from ::1.
        ips: BTreeMap::from([
            (ip("2001:db8:0:1::2"), announced.clone()),
            (ip("fe80::ff:fe00:a01"), announced),
            (ip("2001:db8:0:1::3"), IpStatus::Pending),
        ]),
    }
});

/// Rewrites the ICMPv6 checksum of an Ethernet/IPv6 frame so that it verifies.
fn fix_checksum(frame: &mut [u8]) {
    let Ok(eth) = EthernetHeader::decode(frame) else {
        return;
    };
    let ip_off = eth.len();
    let Ok((ip, icmp)) = Ipv6Header::decode(&frame[ip_off..]) else {
        return;
    };
    let len = icmp.len();
    let icmp_off = ip_off + 40;
    if len < 4 {
        return;
    }
    frame[icmp_off + 2..icmp_off + 4].fill(0);
    let sum = icmpv6_checksum(ip.src, ip.dst, &frame[icmp_off..icmp_off + len]);
    frame[icmp_off + 2..icmp_off + 4].copy_from_slice(&sum.to_be_bytes());
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mut frame = rest.to_vec();
    if control & 1 == 1 {
        fix_checksum(&mut frame);
    }
    if let Ok(Frame {
        payload: Payload::Ndp(pkt),
        ..
    }) = Frame::decode(&frame)
    {
        let _ = pkt.validate();
        let _ = pkt.source_link_layer();
        let _ = pkt.target_link_layer();
    }
    let _ = decide_ndp(&frame, &STATE);
});
