//! Messages captured from real BGP daemons (see core/testdata/bgp/README.md) decode as expected.

use ferrolb_core::bgp::fsm::{ConnId, Direction, Input, PeerConfig, Session, State};
use ferrolb_core::bgp::*;
use std::net::Ipv4Addr;
use std::time::Instant;

const D4: DecodeContext = DecodeContext {
    as_width: AsWidth::Four,
    peer_kind: PeerKind::External,
};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/testdata/bgp/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

#[test]
fn gobgpd_open() {
    let bytes = fixture("gobgpd-open.bin");
    let Ok(Message::Open(open)) = Message::decode(&bytes, &D4) else {
        panic!("decode")
    };
    assert_eq!(open.version, 4);
    assert_eq!(open.asn(), 65002);
    assert_eq!(open.hold_time, 90);
    assert_eq!(open.bgp_id, Ipv4Addr::new(192, 0, 2, 2));
    assert_eq!(
        open.families(),
        vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
    );
    assert!(open.capabilities.contains(&Capability::RouteRefresh));
    assert!(open.capabilities.contains(&Capability::FourOctetAs(65002)));
    let gr = open
        .capabilities
        .iter()
        .find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr),
            _ => None,
        })
        .expect("graceful restart");
    assert_eq!(gr.restart_time, 120);
    assert_eq!(gr.restart_state, RestartState::Normal);
    assert_eq!(gr.families.len(), 2);
    // FQDN (73) and extended next hop (5) are kept raw.
    let unknown: Vec<u8> = open
        .capabilities
        .iter()
        .filter_map(|c| match c {
            Capability::Unknown { code, .. } => Some(*code),
            _ => None,
        })
        .collect();
    assert_eq!(unknown, vec![73, 5]);

    // And a session configured for that peer accepts it.
    let t0 = Instant::now();
    let mut s = Session::new(PeerConfig::new(65001, 65002, Ipv4Addr::new(192, 0, 2, 1)));
    s.handle(t0, Input::ManualStart);
    s.handle(
        t0,
        Input::TcpConnected {
            conn: ConnId(1),
            direction: Direction::Outbound,
        },
    );
    s.handle(
        t0,
        Input::BytesReceived {
            conn: ConnId(1),
            bytes,
        },
    );
    assert_eq!(s.state(), State::OpenConfirm);
}

#[test]
fn gobgpd_bad_peer_as_notification() {
    let bytes = fixture("gobgpd-notification-bad-peer-as.bin");
    let Ok(Message::Notification(n)) = Message::decode(&bytes, &D4) else {
        panic!("decode")
    };
    assert_eq!(n.error, ErrorCode::Open(OpenMessageError::BadPeerAs));
    assert!(n.data.is_empty());
    assert_eq!(
        Message::Notification(n).encode(&EncodeContext::default()),
        bytes
    );
}
