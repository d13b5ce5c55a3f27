//! BFD property tests: packets round-trip, arbitrary bytes never panic the decoder, and two
//! sessions with any intervals come Up and agree on detection times (RFC 5880 §6.8.4).

use ferrolb_core::bfd::{
    BfdAction, BfdConfig, BfdInput, BfdSession, BfdState, BfdTimer, ControlPacket, Diag,
};
use proptest::collection::vec;
use proptest::prelude::*;
use std::time::{Duration, Instant};

fn state() -> impl Strategy<Value = BfdState> {
    prop_oneof![
        Just(BfdState::AdminDown),
        Just(BfdState::Down),
        Just(BfdState::Init),
        Just(BfdState::Up)
    ]
}

prop_compose! {
    fn packet()(diag in 0u8..32, st in state(), poll: bool, fin: bool, mult in 1u8..,
                my in 1u32.., your: u32, tx: u32, rx: u32, echo: u32) -> ControlPacket {
        let up = matches!(st, BfdState::Init | BfdState::Up);
        ControlPacket {
            diag: Diag::from(diag),
            state: st,
            poll,
            fin,
            detect_mult: mult,
            my_discr: my,
            your_discr: if up { your.max(1) } else { your },
            desired_min_tx: Duration::from_micros(tx.into()),
            required_min_rx: Duration::from_micros(rx.into()),
            required_min_echo_rx: Duration::from_micros(echo.into()),
        }
    }
}

/// Runs two sessions against each other, delivering every packet at once, for `steps` timer
/// expiries; returns both final states.
fn converse(a: &mut BfdSession, b: &mut BfdSession, t0: Instant, steps: usize) {
    let mut now = t0;
    let mut timers: Vec<(Instant, bool, BfdTimer)> = Vec::new();
    let mut inbox: Vec<(bool, BfdInput)> =
        vec![(true, BfdInput::Enable), (false, BfdInput::Enable)];
    for _ in 0..steps {
        while let Some((to_a, input)) = inbox.pop() {
            let s = if to_a { &mut *a } else { &mut *b };
            for act in s.handle(now, input) {
                match act {
                    BfdAction::Send(p) => inbox.push((!to_a, BfdInput::Received(p))),
                    BfdAction::SetTimer { timer, at } => {
                        timers.retain(|(_, x, t)| !(*x == to_a && *t == timer));
                        timers.push((at, to_a, timer));
                    }
                    BfdAction::CancelTimer(timer) => {
                        timers.retain(|(_, x, t)| !(*x == to_a && *t == timer))
                    }
                    _ => {}
                }
            }
        }
        timers.sort_by_key(|(at, ..)| *at);
        let Some((at, to_a, timer)) = timers.first().copied() else {
            return;
        };
        timers.remove(0);
        now = at;
        inbox.push((to_a, BfdInput::TimerExpired(timer)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn packets_round_trip(p in packet()) {
        prop_assert_eq!(ControlPacket::decode(&p.encode()), Ok(p));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..64)) {
        let _ = ControlPacket::decode(&bytes);
    }

    #[test]
    fn two_sessions_come_up_and_agree_on_detection(
        tx_a in 10u64..2000, rx_a in 10u64..2000, mult_a in 1u8..10,
        tx_b in 10u64..2000, rx_b in 10u64..2000, mult_b in 1u8..10,
    ) {
        let cfg = |d, tx, rx, mult| BfdConfig {
            local_discr: d,
            desired_min_tx: Duration::from_millis(tx),
            required_min_rx: Duration::from_millis(rx),
            detect_mult: mult,
        };
        let mut a = BfdSession::new(cfg(1, tx_a, rx_a, mult_a));
        let mut b = BfdSession::new(cfg(2, tx_b, rx_b, mult_b));
        converse(&mut a, &mut b, Instant::now(), 40);
        prop_assert_eq!((a.state(), b.state()), (BfdState::Up, BfdState::Up));
        // A detects B's silence after B's multiplier times the slower of B's tx and A's rx.
        prop_assert_eq!(
            a.detection_time(),
            Duration::from_millis(rx_a.max(tx_b)) * u32::from(mult_b)
        );
        prop_assert_eq!(
            b.detection_time(),
            Duration::from_millis(rx_b.max(tx_a)) * u32::from(mult_a)
        );
    }
}

/// Found by the property above: a state change re-armed the transmit timer from "now", so
/// the side with multiplier 1 kept postponing its packets past the peer's detection time.
#[test]
fn state_changes_never_postpone_packets_past_detection() {
    let cfg = |d, tx, mult| BfdConfig {
        local_discr: d,
        desired_min_tx: Duration::from_millis(tx),
        required_min_rx: Duration::from_millis(10),
        detect_mult: mult,
    };
    let mut a = BfdSession::new(cfg(1, 1663, 2));
    let mut b = BfdSession::new(cfg(2, 1000, 1));
    converse(&mut a, &mut b, Instant::now(), 60);
    assert_eq!((a.state(), b.state()), (BfdState::Up, BfdState::Up));
}
