//! A whole Ethernet frame as the ARP responder sees it: the ARP decoder on the bytes after an
//! untagged header, the frame decoder, and `decide_arp` (decode, sender checks, reply).
#![no_main]
use ferrolb_core::l2::{ArpPacket, Frame, IpStatus, MacAddr, ResponderState, decide_arp};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;

static STATE: LazyLock<ResponderState> = LazyLock::new(|| {
    let announced = IpStatus::Announced {
        interface: "eth0".into(),
    };
    ResponderState {
        interface: "eth0".into(),
        mac: MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]),
        link_local: None,
        ips: BTreeMap::from([
            // The testdata frames ask for .2 and say they are .1.
            (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), announced.clone()),
            (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3)), IpStatus::Pending),
        ]),
    }
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ArpPacket::decode(data.get(14..).unwrap_or_default());
    let _ = Frame::decode(data);
    let _ = decide_arp(data, &STATE);
});
