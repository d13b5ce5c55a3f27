//! BFD control packets both ways, discards, and the three-way handshake between two sessions.

use ferrolb_core::bfd::{
    BfdAction, BfdConfig, BfdInput, BfdSession, BfdState, BfdTimer, ControlPacket, Diag,
    DiscardReason,
};
use std::time::{Duration, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Down, no diagnostic, mult 3, discriminators 1 and 0, 1 s tx, 300 ms rx, no echo.
const DOWN: [u8; 24] = [
    0x20, 0x40, 0x03, 0x18, 0, 0, 0, 1, 0, 0, 0, 0, 0x00, 0x0f, 0x42, 0x40, 0x00, 0x04, 0x93, 0xe0,
    0, 0, 0, 0,
];

fn down_packet() -> ControlPacket {
    ControlPacket {
        diag: Diag::None,
        state: BfdState::Down,
        poll: false,
        fin: false,
        detect_mult: 3,
        my_discr: 1,
        your_discr: 0,
        desired_min_tx: ms(1000),
        required_min_rx: ms(300),
        required_min_echo_rx: Duration::ZERO,
    }
}

#[test]
fn golden_down_packet_both_ways() {
    assert_eq!(down_packet().encode(), DOWN);
    assert_eq!(ControlPacket::decode(&DOWN), Ok(down_packet()));
}

#[test]
fn golden_up_with_poll_and_diag() {
    let p = ControlPacket {
        diag: Diag::DetectionTimeExpired,
        state: BfdState::Up,
        poll: true,
        your_discr: 7,
        ..down_packet()
    };
    let b = p.encode();
    assert_eq!(b[0], 0x21);
    assert_eq!(b[1], 0xE0);
    assert_eq!(&b[8..12], &[0, 0, 0, 7]);
    assert_eq!(ControlPacket::decode(&b), Ok(p));
}

#[test]
fn discards_follow_rfc5880_6_8_6() {
    let with = |i: usize, v: u8| {
        let mut b = DOWN;
        b[i] = v;
        b
    };
    let cases: [(&[u8], DiscardReason); 7] = [
        (&DOWN[..23], DiscardReason::Truncated),
        (&with(0, 0x40), DiscardReason::Version(2)),
        (&with(3, 20), DiscardReason::Length(20)),
        (&with(2, 0), DiscardReason::ZeroMultiplier),
        (&with(1, 0x41), DiscardReason::Multipoint),
        (&with(7, 0), DiscardReason::ZeroDiscriminator),
        (
            &with(1, 0xC0),
            DiscardReason::NoYourDiscriminator(BfdState::Up),
        ),
    ];
    for (bytes, reason) in cases {
        assert_eq!(ControlPacket::decode(bytes), Err(reason), "{bytes:02x?}");
    }
    assert_eq!(
        ControlPacket::decode(&with(1, 0x44)),
        Err(DiscardReason::Length(24))
    );
}

fn cfg(discr: u32) -> BfdConfig {
    BfdConfig {
        local_discr: discr,
        desired_min_tx: ms(300),
        required_min_rx: ms(300),
        detect_mult: 3,
    }
}

fn sent(actions: &[BfdAction]) -> Vec<ControlPacket> {
    actions
        .iter()
        .filter_map(|a| match a {
            BfdAction::Send(p) => Some(*p),
            _ => None,
        })
        .collect()
}

fn states(actions: &[BfdAction]) -> Vec<BfdState> {
    actions
        .iter()
        .filter_map(|a| match a {
            BfdAction::StateChanged { to, .. } => Some(*to),
            _ => None,
        })
        .collect()
}

#[test]
fn handshake_comes_up_and_detection_takes_it_down() {
    let t = Instant::now();
    let (mut a, mut b) = (BfdSession::new(cfg(1)), BfdSession::new(cfg(2)));
    a.handle(t, BfdInput::Enable);
    b.handle(t, BfdInput::Enable);
    let pa = sent(&a.handle(t, BfdInput::TimerExpired(BfdTimer::Transmit)))[0];
    assert_eq!((pa.state, pa.desired_min_tx), (BfdState::Down, ms(1000)));
    // B hears Down: Init. A hears Init: Up. B hears Up: Up.
    assert_eq!(
        states(&b.handle(t, BfdInput::Received(pa))),
        [BfdState::Init]
    );
    let pb = sent(&b.handle(t, BfdInput::TimerExpired(BfdTimer::Transmit)))[0];
    assert_eq!(pb.your_discr, 1);
    assert_eq!(states(&a.handle(t, BfdInput::Received(pb))), [BfdState::Up]);
    let pa = sent(&a.handle(t, BfdInput::TimerExpired(BfdTimer::Transmit)))[0];
    // Up with a faster rate than 1 s: a Poll Sequence announces it.
    assert!(pa.poll);
    assert_eq!(pa.desired_min_tx, ms(300));
    let acts = b.handle(t, BfdInput::Received(pa));
    assert_eq!(states(&acts), [BfdState::Up]);
    assert!(
        sent(&acts).iter().any(|p| p.fin),
        "a Poll is answered with a Final"
    );
    assert_eq!(b.detection_time(), ms(900));
    // Silence for the detection time: Down with diag 1.
    let acts = b.handle(t + ms(900), BfdInput::TimerExpired(BfdTimer::Detect));
    assert!(acts.contains(&BfdAction::StateChanged {
        from: BfdState::Up,
        to: BfdState::Down,
        diag: Diag::DetectionTimeExpired
    }));
}

#[test]
fn neighbour_admin_down_brings_us_down() {
    let t = Instant::now();
    let (mut a, mut b) = (BfdSession::new(cfg(1)), BfdSession::new(cfg(2)));
    a.handle(t, BfdInput::Enable);
    b.handle(t, BfdInput::Enable);
    let pa = sent(&a.handle(t, BfdInput::TimerExpired(BfdTimer::Transmit)))[0];
    b.handle(t, BfdInput::Received(pa));
    let pb = sent(&b.handle(t, BfdInput::TimerExpired(BfdTimer::Transmit)))[0];
    a.handle(t, BfdInput::Received(pb));
    assert_eq!(a.state(), BfdState::Up);
    let bye = sent(&b.handle(t, BfdInput::Disable))[0];
    assert_eq!(bye.state, BfdState::AdminDown);
    let acts = a.handle(t, BfdInput::Received(bye));
    assert_eq!(states(&acts), [BfdState::Down]);
    assert_eq!(a.state(), BfdState::Down);
}

#[test]
fn packets_for_another_session_are_discarded() {
    let t = Instant::now();
    let mut a = BfdSession::new(cfg(1));
    a.handle(t, BfdInput::Enable);
    let p = ControlPacket {
        your_discr: 99,
        ..down_packet()
    };
    assert_eq!(
        a.handle(t, BfdInput::Received(p)),
        [BfdAction::Discarded(DiscardReason::WrongDiscriminator(99))]
    );
}
