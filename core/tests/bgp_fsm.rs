//! The session state machine driven through whole sequences, as an I/O driver would.

use ferrolb_core::bgp::fsm::{
    Action, AutoRestart, CloseReason, ConnId, ConnectMode, Direction, GracefulRestartConfig, Input,
    Jitter, PeerConfig, Session, State, Timer,
};
use ferrolb_core::bgp::*;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 5);
const C1: ConnId = ConnId(1);
const C2: ConnId = ConnId(2);
const FOUR: EncodeContext = EncodeContext {
    as_width: AsWidth::Four,
};

fn config() -> PeerConfig {
    PeerConfig::new(65001, 65002, LOCAL_ID)
}

fn peer_open(asn: u32, id: [u8; 4], hold: u16) -> Vec<u8> {
    let caps = vec![
        Capability::multiprotocol(Family::Ipv4Unicast),
        Capability::multiprotocol(Family::Ipv6Unicast),
        Capability::RouteRefresh,
    ];
    Message::Open(Open::new(asn, hold, Ipv4Addr::from(id), caps)).encode(&FOUR)
}

fn keepalive() -> Vec<u8> {
    Message::Keepalive.encode(&FOUR)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Messages sent, by connection.
fn sent(actions: &[Action]) -> Vec<(ConnId, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                conn,
                message,
                bytes,
            } => {
                assert_eq!(&message.encode(&FOUR), bytes, "bytes match the message");
                Some((*conn, message.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The only message sent.
fn one(actions: &[Action]) -> (ConnId, Message) {
    let mut all = sent(actions);
    assert_eq!(all.len(), 1, "{actions:?}");
    all.remove(0)
}

fn closed(actions: &[Action]) -> Vec<(ConnId, CloseReason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Close { conn, reason } => Some((*conn, reason.clone())),
            _ => None,
        })
        .collect()
}

fn timer_at(actions: &[Action], timer: Timer) -> Option<Instant> {
    actions.iter().rev().find_map(|a| match a {
        Action::SetTimer { timer: t, at } if *t == timer => Some(*at),
        _ => None,
    })
}

fn notification(n: Notification) -> Message {
    Message::Notification(n)
}

/// Drives a session from Idle to Established on C1 (outbound); returns it and the start time.
fn established(config: PeerConfig) -> (Session, Instant, Vec<Action>) {
    let t0 = Instant::now();
    let mut s = Session::new(config);
    let a = s.handle(t0, Input::ManualStart);
    assert!(a.contains(&Action::Connect));
    assert_eq!(s.state(), State::Connect);
    s.handle(
        t0,
        Input::TcpConnected {
            conn: C1,
            direction: Direction::Outbound,
        },
    );
    s.handle(
        t0,
        Input::BytesReceived {
            conn: C1,
            bytes: peer_open(65002, [192, 0, 2, 9], 90),
        },
    );
    let a = s.handle(
        t0,
        Input::BytesReceived {
            conn: C1,
            bytes: keepalive(),
        },
    );
    assert_eq!(s.state(), State::Established);
    (s, t0, a)
}

#[test]
fn idle_to_established_and_routes() {
    let t0 = Instant::now();
    let mut s = Session::new(config());
    assert_eq!(s.state(), State::Idle);

    let a = s.handle(t0, Input::ManualStart);
    assert_eq!(a[0], Action::Connect);
    assert_eq!(timer_at(&a, Timer::ConnectRetry), Some(t0 + secs(120)));
    assert!(a.contains(&Action::StateChanged {
        from: State::Idle,
        to: State::Connect
    }));

    let a = s.handle(
        t0,
        Input::TcpConnected {
            conn: C1,
            direction: Direction::Outbound,
        },
    );
    let (C1, Message::Open(open)) = one(&a) else {
        panic!("{a:?}")
    };
    assert_eq!(open.asn(), 65001);
    assert_eq!(open.hold_time, 90);
    assert!(
        open.capabilities
            .contains(&Capability::multiprotocol(Family::Ipv6Unicast))
    );
    assert!(a.contains(&Action::CancelTimer(Timer::ConnectRetry)));
    assert_eq!(
        timer_at(&a, Timer::Hold(C1)),
        Some(t0 + secs(240)),
        "large hold timer in OpenSent"
    );
    assert_eq!(s.state(), State::OpenSent);

    let t1 = t0 + secs(1);
    let a = s.handle(
        t1,
        Input::BytesReceived {
            conn: C1,
            bytes: peer_open(65002, [192, 0, 2, 9], 60),
        },
    );
    assert_eq!(sent(&a), vec![(C1, Message::Keepalive)]);
    assert_eq!(
        timer_at(&a, Timer::Hold(C1)),
        Some(t1 + secs(60)),
        "negotiated hold is the smaller"
    );
    assert_eq!(
        timer_at(&a, Timer::Keepalive(C1)),
        Some(t1 + secs(20)),
        "keepalive is a third"
    );
    assert_eq!(s.state(), State::OpenConfirm);

    let a = s.handle(
        t1,
        Input::BytesReceived {
            conn: C1,
            bytes: keepalive(),
        },
    );
    let n = a.iter().find_map(|a| match a {
        Action::SessionEstablished(n) => Some(n.clone()),
        _ => None,
    });
    let n = n.expect("established");
    assert_eq!(
        (n.hold_time, n.keepalive, n.as_width),
        (60, 20, AsWidth::Four)
    );
    assert_eq!(n.families, vec![Family::Ipv4Unicast, Family::Ipv6Unicast]);
    assert_eq!(n.peer_open.bgp_id, Ipv4Addr::new(192, 0, 2, 9));
    assert!(a.contains(&Action::StateChanged {
        from: State::OpenConfirm,
        to: State::Established
    }));

    // Routes are parsed and counted.
    let update = Update {
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence([65002])),
            PathAttribute::NextHop(Ipv4Addr::new(192, 0, 2, 9)),
            PathAttribute::MpReach(MpReach::Ipv6Unicast {
                next_hop: "2001:db8:0:1::9".parse().unwrap(),
                link_local: None,
                nlri: vec!["2001:db8:ff::/64".parse().unwrap()],
            }),
        ],
        nlri: vec![
            "198.51.100.0/24".parse().unwrap(),
            "198.51.100.0/25".parse().unwrap(),
        ],
        ..Update::default()
    };
    let a = s.handle(
        t1,
        Input::BytesReceived {
            conn: C1,
            bytes: Message::Update(update).encode(&FOUR),
        },
    );
    assert!(a.contains(&Action::RoutesReceived {
        family: Family::Ipv4Unicast,
        announced: 2,
        withdrawn: 0,
        total: 2
    }));
    assert!(a.contains(&Action::RoutesReceived {
        family: Family::Ipv6Unicast,
        announced: 1,
        withdrawn: 0,
        total: 1
    }));
    assert_eq!(
        timer_at(&a, Timer::Hold(C1)),
        Some(t1 + secs(60)),
        "an UPDATE restarts the hold timer"
    );

    let withdraw = Update {
        withdrawn: vec!["198.51.100.0/25".parse().unwrap()],
        ..Update::default()
    };
    let a = s.handle(
        t1,
        Input::BytesReceived {
            conn: C1,
            bytes: Message::Update(withdraw).encode(&FOUR),
        },
    );
    assert!(a.contains(&Action::RoutesReceived {
        family: Family::Ipv4Unicast,
        announced: 0,
        withdrawn: 1,
        total: 1
    }));
    assert_eq!(s.received_count(Family::Ipv4Unicast), 1);

    for f in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
        let a = s.handle(
            t1,
            Input::BytesReceived {
                conn: C1,
                bytes: Message::Update(Update::end_of_rib(f)).encode(&FOUR),
            },
        );
        assert!(a.contains(&Action::EndOfRib(f)));
    }

    // Our keepalives go out when the timer fires, and the timer is re-armed.
    let t2 = t1 + secs(20);
    let a = s.handle(t2, Input::TimerExpired(Timer::Keepalive(C1)));
    assert_eq!(sent(&a), vec![(C1, Message::Keepalive)]);
    assert_eq!(timer_at(&a, Timer::Keepalive(C1)), Some(t2 + secs(20)));

    // Sending an UPDATE encodes it for the session.
    let ours = Update::end_of_rib(Family::Ipv6Unicast);
    let a = s.handle(t2, Input::SendUpdate(ours.clone()));
    assert_eq!(sent(&a), vec![(C1, Message::Update(ours))]);

    let a = s.handle(
        t2,
        Input::BytesReceived {
            conn: C1,
            bytes: Message::RouteRefresh(RouteRefresh::request(Family::Ipv6Unicast)).encode(&FOUR),
        },
    );
    assert!(a.contains(&Action::RouteRefreshRequested(Family::Ipv6Unicast)));
}

#[test]
fn hold_timer_expiry_sends_notification_and_restarts() {
    let (mut s, t0, a) = established(config());
    let hold_at = timer_at(&a, Timer::Hold(C1)).unwrap();
    assert_eq!(hold_at, t0 + secs(90));

    // A stale expiry (the driver raced a restart of the timer) is ignored.
    let a = s.handle(
        t0 + secs(30),
        Input::BytesReceived {
            conn: C1,
            bytes: keepalive(),
        },
    );
    let new_at = timer_at(&a, Timer::Hold(C1)).unwrap();
    assert!(
        s.handle(hold_at, Input::TimerExpired(Timer::Hold(C1)))
            .is_empty()
    );
    assert_eq!(s.state(), State::Established);

    let a = s.handle(new_at, Input::TimerExpired(Timer::Hold(C1)));
    assert_eq!(
        sent(&a),
        vec![(
            C1,
            notification(Notification::bare(ErrorCode::HoldTimerExpired))
        )]
    );
    assert_eq!(closed(&a), vec![(C1, CloseReason::HoldTimerExpired)]);
    assert!(a.contains(&Action::SessionDown(CloseReason::HoldTimerExpired)));
    assert!(a.contains(&Action::CancelTimer(Timer::Keepalive(C1))));
    assert_eq!(s.state(), State::Idle);
    assert!(s.negotiated().is_none());

    // Automatic restart after the idle hold time.
    let restart_at = timer_at(&a, Timer::IdleHold).expect("idle hold armed");
    let a = s.handle(restart_at, Input::TimerExpired(Timer::IdleHold));
    assert!(a.contains(&Action::Connect));
    assert_eq!(s.state(), State::Connect);
}

#[test]
fn hold_time_negotiation() {
    let t0 = Instant::now();
    let cases = [
        // (our hold, our keepalive, peer hold) -> (hold timer, keepalive timer)
        (90, None, 30, Some(30), Some(10)),
        (90, None, 0, None, None),
        (0, None, 90, None, None),
        (90, Some(5), 180, Some(90), Some(5)),
        (9, Some(10), 180, Some(9), Some(3)),
        (3, None, 3, Some(3), Some(1)),
    ];
    for (ours, ka, theirs, want_hold, want_ka) in cases {
        let mut s = Session::new(PeerConfig {
            hold_time: ours,
            keepalive: ka,
            ..config()
        });
        s.handle(t0, Input::ManualStart);
        s.handle(
            t0,
            Input::TcpConnected {
                conn: C1,
                direction: Direction::Outbound,
            },
        );
        let a = s.handle(
            t0,
            Input::BytesReceived {
                conn: C1,
                bytes: peer_open(65002, [192, 0, 2, 9], theirs),
            },
        );
        assert_eq!(
            timer_at(&a, Timer::Hold(C1)).map(|t| t - t0),
            want_hold.map(secs),
            "hold {ours}/{theirs}"
        );
        assert_eq!(
            timer_at(&a, Timer::Keepalive(C1)).map(|t| t - t0),
            want_ka.map(secs),
            "keepalive {ours}/{theirs}"
        );
        if want_hold.is_none() {
            assert!(
                a.contains(&Action::CancelTimer(Timer::Hold(C1))),
                "large OpenSent hold timer is cancelled"
            );
        }
    }
}

#[test]
fn peer_as_mismatch_is_bad_peer_as() {
    let t0 = Instant::now();
    let mut s = Session::new(config());
    s.handle(t0, Input::ManualStart);
    s.handle(
        t0,
        Input::TcpConnected {
            conn: C1,
            direction: Direction::Outbound,
        },
    );
    let a = s.handle(
        t0,
        Input::BytesReceived {
            conn: C1,
            bytes: peer_open(65099, [192, 0, 2, 9], 90),
        },
    );
    let want = Notification::open(OpenMessageError::BadPeerAs, 65099u16.to_be_bytes());
    assert_eq!(sent(&a), vec![(C1, notification(want.clone()))]);
    assert_eq!(closed(&a), vec![(C1, CloseReason::ProtocolError(want))]);
    assert_eq!(s.state(), State::Idle);
    assert!(
        !a.iter().any(|a| matches!(a, Action::SessionDown(_))),
        "never established, so never down"
    );
}

#[test]
fn open_errors_from_the_peer() {
    let t0 = Instant::now();
    let cases = [
        (
            peer_open(65002, [192, 0, 2, 9], 2),
            ErrorCode::Open(OpenMessageError::UnacceptableHoldTime),
        ),
        (
            peer_open(65002, [0, 0, 0, 0], 90),
            ErrorCode::Open(OpenMessageError::BadBgpIdentifier),
        ),
        (
            keepalive(),
            ErrorCode::Fsm(FsmError::UnexpectedMessageInOpenSent),
        ),
        (
            Message::Update(Update::default()).encode(&FOUR),
            ErrorCode::Fsm(FsmError::UnexpectedMessageInOpenSent),
        ),
    ];
    for (bytes, want) in cases {
        let mut s = Session::new(config());
        s.handle(t0, Input::ManualStart);
        s.handle(
            t0,
            Input::TcpConnected {
                conn: C1,
                direction: Direction::Outbound,
            },
        );
        let a = s.handle(t0, Input::BytesReceived { conn: C1, bytes });
        let (C1, Message::Notification(n)) = one(&a) else {
            panic!("{a:?}")
        };
        assert_eq!(n.error, want);
        assert_eq!(s.state(), State::Idle);
    }
    // iBGP: the same identifier as ours is refused (RFC 6286).
    let mut s = Session::new(PeerConfig::new(65001, 65001, LOCAL_ID));
    s.handle(t0, Input::ManualStart);
    s.handle(
        t0,
        Input::TcpConnected {
            conn: C1,
            direction: Direction::Outbound,
        },
    );
    let a = s.handle(
        t0,
        Input::BytesReceived {
            conn: C1,
            bytes: peer_open(65001, LOCAL_ID.octets(), 90),
        },
    );
    let (C1, Message::Notification(n)) = one(&a) else {
        panic!("{a:?}")
    };
    assert_eq!(n.error, ErrorCode::Open(OpenMessageError::BadBgpIdentifier));
}

/// Both sides dial at once; the peer's OPEN arrives on C1 (outbound) first, then on C2 (inbound).
fn collide(local_id: Ipv4Addr, peer_id: [u8; 4]) -> (Session, Vec<Action>) {
    let t0 = Instant::now();
    let mut s = Session::new(PeerConfig {
        local_id,
        ..config()
    });
    s.handle(t0, Input::ManualStart);
    s.handle(
        t0,
        Input::TcpConnected {
            conn: C1,
            direction: Direction::Outbound,
        },
    );
    let a = s.handle(
        t0,
        Input::TcpConnected {
            conn: C2,
            direction: Direction::Inbound,
        },
    );
    assert!(
        matches!(sent(&a).as_slice(), [(C2, Message::Open(_))]),
        "the inbound connection gets an OPEN too"
    );
    s.handle(
        t0,
        Input::BytesReceived {
            conn: C1,
            bytes: peer_open(65002, peer_id, 90),
        },
    );
    assert_eq!(s.state(), State::OpenConfirm);
    let a = s.handle(
        t0,
        Input::BytesReceived {
            conn: C2,
            bytes: peer_open(65002, peer_id, 90),
        },
    );
    (s, a)
}

#[test]
fn collision_peer_higher_id_keeps_inbound() {
    let (mut s, a) = collide(Ipv4Addr::new(192, 0, 2, 1), [192, 0, 2, 9]);
    let cease = notification(Notification::cease(
        CeaseSubcode::ConnectionCollisionResolution,
    ));
    assert_eq!(sent(&a), vec![(C1, cease), (C2, Message::Keepalive)]);
    assert_eq!(closed(&a), vec![(C1, CloseReason::CollisionLost)]);
    assert_eq!(s.state(), State::OpenConfirm);
    s.handle(
        Instant::now(),
        Input::BytesReceived {
            conn: C2,
            bytes: keepalive(),
        },
    );
    assert_eq!(s.state(), State::Established);
    assert_eq!(s.negotiated().unwrap().conn, C2);
}

#[test]
fn collision_local_higher_id_keeps_outbound() {
    let (mut s, a) = collide(Ipv4Addr::new(192, 0, 2, 200), [192, 0, 2, 9]);
    let cease = notification(Notification::cease(
        CeaseSubcode::ConnectionCollisionResolution,
    ));
    assert_eq!(sent(&a), vec![(C2, cease)]);
    assert_eq!(closed(&a), vec![(C2, CloseReason::CollisionLost)]);
    assert_eq!(s.state(), State::OpenConfirm);
    s.handle(
        Instant::now(),
        Input::BytesReceived {
            conn: C1,
            bytes: keepalive(),
        },
    );
    assert_eq!(s.state(), State::Established);
    assert_eq!(s.negotiated().unwrap().conn, C1);
}

#[test]
fn connection_after_established_is_rejected() {
    let (mut s, t0, _) = established(config());
    let a = s.handle(
        t0,
        Input::TcpConnected {
            conn: C2,
            direction: Direction::Inbound,
        },
    );
    assert_eq!(
        sent(&a),
        vec![(
            C2,
            notification(Notification::cease(CeaseSubcode::ConnectionRejected))
        )]
    );
    assert_eq!(closed(&a), vec![(C2, CloseReason::ConnectionRejected)]);
    assert_eq!(s.state(), State::Established);
}

#[test]
fn established_closes_a_rival_still_in_open_sent() {
    let t0 = Instant::now();
    let mut s = Session::new(config());
    s.handle(t0, Input::ManualStart);
    s.handle(
        t0,
        Input::TcpConnected {
            conn: C1,
            direction: Direction::Outbound,
        },
    );
    s.handle(
        t0,
        Input::TcpConnected {
            conn: C2,
            direction: Direction::Inbound,
        },
    );
    s.handle(
        t0,
        Input::BytesReceived {
            conn: C1,
            bytes: peer_open(65002, [192, 0, 2, 9], 90),
        },
    );
    let a = s.handle(
        t0,
        Input::BytesReceived {
            conn: C1,
            bytes: keepalive(),
        },
    );
    assert_eq!(closed(&a), vec![(C2, CloseReason::CollisionLost)]);
    assert_eq!(s.state(), State::Established);
}

#[test]
fn passive_mode_accepts_only() {
    let t0 = Instant::now();
    let mut s = Session::new(PeerConfig {
        mode: ConnectMode::Passive,
        ..config()
    });
    let a = s.handle(t0, Input::ManualStart);
    assert!(!a.contains(&Action::Connect));
    assert_eq!(s.state(), State::Active);
    s.handle(
        t0,
        Input::TcpConnected {
            conn: C2,
            direction: Direction::Inbound,
        },
    );
    // The peer's OPEN arrives split across three reads.
    let open = peer_open(65002, [192, 0, 2, 9], 90);
    s.handle(
        t0,
        Input::BytesReceived {
            conn: C2,
            bytes: open[..5].to_vec(),
        },
    );
    s.handle(
        t0,
        Input::BytesReceived {
            conn: C2,
            bytes: open[5..30].to_vec(),
        },
    );
    assert_eq!(s.state(), State::OpenSent);
    let mut rest = open[30..].to_vec();
    rest.extend_from_slice(&keepalive()); // and the KEEPALIVE in the same read
    s.handle(
        t0,
        Input::BytesReceived {
            conn: C2,
            bytes: rest,
        },
    );
    assert_eq!(s.state(), State::Established);
}

#[test]
fn stopped_session_refuses_connections() {
    let mut s = Session::new(config());
    let a = s.handle(
        Instant::now(),
        Input::TcpConnected {
            conn: C1,
            direction: Direction::Inbound,
        },
    );
    assert_eq!(closed(&a), vec![(C1, CloseReason::ConnectionRejected)]);
    assert!(sent(&a).is_empty());
}

#[test]
fn manual_stop_sends_cease_and_stays_idle() {
    let (mut s, t0, _) = established(config());
    let a = s.handle(t0, Input::ManualStop);
    let cease = notification(Notification::cease(CeaseSubcode::AdministrativeShutdown));
    assert_eq!(sent(&a), vec![(C1, cease)]);
    assert!(a.contains(&Action::SessionDown(CloseReason::ManualStop)));
    assert_eq!(
        timer_at(&a, Timer::IdleHold),
        None,
        "no automatic restart after a manual stop"
    );
    assert_eq!(s.state(), State::Idle);
    let a = s.handle(t0, Input::SendUpdate(Update::default()));
    assert_eq!(a, vec![Action::NotEstablished]);
}

#[test]
fn reset_with_cease_subcode_restarts() {
    let (mut s, t0, _) = established(config());
    let a = s.handle(t0, Input::Reset(CeaseSubcode::BfdDown));
    assert_eq!(
        sent(&a),
        vec![(C1, notification(Notification::cease(CeaseSubcode::BfdDown)))]
    );
    assert!(a.contains(&Action::SessionDown(CloseReason::Reset(
        CeaseSubcode::BfdDown
    ))));
    assert!(timer_at(&a, Timer::IdleHold).is_some());
}

#[test]
fn connect_failure_and_retry_with_jitter() {
    let t0 = Instant::now();
    let mut s = Session::new(PeerConfig {
        connect_retry: secs(100),
        auto_restart: AutoRestart::Never,
        ..config()
    });
    s.set_jitter(Jitter::percent(75));
    let a = s.handle(t0, Input::ManualStart);
    assert_eq!(timer_at(&a, Timer::ConnectRetry), Some(t0 + secs(75)));
    s.handle(t0, Input::TcpConnectFailed);
    assert_eq!(s.state(), State::Active);
    s.set_jitter(Jitter::percent(10)); // clamped to 75
    let a = s.handle(t0 + secs(75), Input::TimerExpired(Timer::ConnectRetry));
    assert!(a.contains(&Action::Connect));
    assert_eq!(timer_at(&a, Timer::ConnectRetry), Some(t0 + secs(150)));
    assert_eq!(s.state(), State::Connect);
}

#[test]
fn notification_from_peer_takes_session_down() {
    let (mut s, t0, _) = established(config());
    let n = Notification::cease(CeaseSubcode::PeerDeconfigured);
    let a = s.handle(
        t0,
        Input::BytesReceived {
            conn: C1,
            bytes: notification(n.clone()).encode(&FOUR),
        },
    );
    assert!(sent(&a).is_empty(), "no NOTIFICATION in reply to one");
    assert_eq!(
        closed(&a),
        vec![(C1, CloseReason::NotificationReceived(n.clone()))]
    );
    assert!(a.contains(&Action::SessionDown(CloseReason::NotificationReceived(n))));
}

#[test]
fn tcp_closed_takes_session_down() {
    let (mut s, t0, _) = established(config());
    let a = s.handle(t0, Input::TcpClosed { conn: C1 });
    assert!(a.contains(&Action::SessionDown(CloseReason::TcpClosed)));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn malformed_updates_when_established() {
    let (mut s, t0, _) = established(config());
    // ORIGIN 9: treat-as-withdraw, the session stays up.
    let mut body = vec![
        0, 0, 0, 11, 0x40, 1, 1, 9, 0x40, 3, 4, 192, 0, 2, 9, 24, 198, 51, 100,
    ];
    let mut msg = vec![0xFF; 16];
    msg.extend_from_slice(&u16::try_from(19 + body.len()).unwrap().to_be_bytes());
    msg.push(2);
    msg.append(&mut body);
    let a = s.handle(
        t0,
        Input::BytesReceived {
            conn: C1,
            bytes: msg,
        },
    );
    assert!(
        matches!(&a[..], [.., Action::TreatedAsWithdraw(p), Action::RoutesReceived { withdrawn: 1, .. }] if p.subcode == UpdateMessageError::InvalidOriginAttribute),
        "{a:?}"
    );
    assert_eq!(s.state(), State::Established);

    // A bad marker mid-stream: session reset.
    let mut bad = keepalive();
    bad[0] = 0;
    let a = s.handle(
        t0,
        Input::BytesReceived {
            conn: C1,
            bytes: bad,
        },
    );
    let want = Notification::header(MessageHeaderError::ConnectionNotSynchronized, Vec::new());
    assert_eq!(sent(&a), vec![(C1, notification(want.clone()))]);
    assert!(a.contains(&Action::SessionDown(CloseReason::ProtocolError(want))));
}

#[test]
fn open_in_established_is_an_fsm_error() {
    let (mut s, t0, _) = established(config());
    let a = s.handle(
        t0,
        Input::BytesReceived {
            conn: C1,
            bytes: peer_open(65002, [192, 0, 2, 9], 90),
        },
    );
    let want = Notification::bare(ErrorCode::Fsm(FsmError::UnexpectedMessageInEstablished));
    assert_eq!(sent(&a), vec![(C1, notification(want))]);
}

#[test]
fn two_octet_peer_gets_as_trans_and_as4_path() {
    let t0 = Instant::now();
    let mut s = Session::new(PeerConfig::new(4_200_000_000, 65002, LOCAL_ID));
    s.handle(t0, Input::ManualStart);
    let a = s.handle(
        t0,
        Input::TcpConnected {
            conn: C1,
            direction: Direction::Outbound,
        },
    );
    let (_, Message::Open(ours)) = one(&a) else {
        panic!()
    };
    assert_eq!(ours.my_as, AS_TRANS);
    // An old peer without the 4-octet capability.
    let old = Open {
        version: 4,
        my_as: 65002,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(192, 0, 2, 9),
        capabilities: vec![],
    };
    s.handle(
        t0,
        Input::BytesReceived {
            conn: C1,
            bytes: Message::Open(old).encode(&FOUR),
        },
    );
    s.handle(
        t0,
        Input::BytesReceived {
            conn: C1,
            bytes: keepalive(),
        },
    );
    let n = s.negotiated().unwrap();
    assert_eq!(n.as_width, AsWidth::Two);
    assert_eq!(
        n.families,
        vec![Family::Ipv4Unicast],
        "no multiprotocol capability: IPv4 only"
    );
    let update = Update {
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence([4_200_000_000])),
            PathAttribute::NextHop(LOCAL_ID),
        ],
        nlri: vec!["203.0.113.10/32".parse().unwrap()],
        ..Update::default()
    };
    let a = s.handle(t0, Input::SendUpdate(update));
    let bytes = a
        .iter()
        .find_map(|a| match a {
            Action::Send { bytes, .. } => Some(bytes.clone()),
            _ => None,
        })
        .unwrap();
    let two = DecodeContext {
        as_width: AsWidth::Two,
        peer_kind: PeerKind::External,
    };
    let Ok(Message::Update(u)) = Message::decode(&bytes, &two) else {
        panic!()
    };
    assert_eq!(
        u.attribute(2),
        Some(&PathAttribute::AsPath(AsPath::sequence([u32::from(
            AS_TRANS
        )])))
    );
    assert_eq!(
        u.effective_as_path(),
        Some(AsPath::sequence([4_200_000_000]))
    );
}

#[test]
fn graceful_restart_flags_in_our_open() {
    let gr = GracefulRestartConfig {
        restart_time: 120,
        restart_state: RestartState::Restarting,
        forwarding: ForwardingState::Preserved,
    };
    let open = PeerConfig {
        graceful_restart: Some(gr),
        ..config()
    }
    .open();
    let cap = open
        .capabilities
        .iter()
        .find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(cap.restart_state, RestartState::Restarting);
    assert_eq!(cap.restart_time, 120);
    assert_eq!(cap.families.len(), 2);
    assert!(
        cap.families
            .iter()
            .all(|f| f.forwarding == ForwardingState::Preserved)
    );
}
