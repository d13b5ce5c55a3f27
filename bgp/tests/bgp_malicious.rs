//! A malicious peer against the driver: raw TCP clients send malformed lengths, unknown
//! well-known (mandatory) attributes and truncated messages. Each gets the right NOTIFICATION
//! on the wire (code/subcode asserted from the bytes), and another peer's session stays up and
//! keeps being served throughout.
//!
//! The test moves its thread into a fresh, unnamed network namespace (`unshare`), so it needs
//! root: `cargo test -p ferrolb-bgp --test bgp_malicious -- --ignored`.

use ferrolb_bgp::{PeerConfig, RouteAttrs, Speaker, SpeakerConfig};
use ferrolb_core::bgp::fsm::{AutoRestart, ConnectMode};
use ferrolb_core::bgp::{Capability, EncodeContext, Family, Message, Open, State};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

const SPEAKER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const ATTACKER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const GOOD: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const PEER_AS: u32 = 64500;
const READ: Duration = Duration::from_secs(5);

/// When the bad bytes are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// As the first message, instead of an OPEN.
    Connect,
    /// After the session is Established.
    Established,
}

/// What the speaker must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// NOTIFICATION with this code and subcode, then the connection closes.
    Notification(u8, u8),
    /// Nothing: RFC 7606 treat-as-withdraw keeps the session.
    SessionKept,
    /// The connection closes without a NOTIFICATION (we half-closed mid-message).
    Closed,
}

fn header(len: u16, kind: u8) -> Vec<u8> {
    let mut v = vec![0xFF; 16];
    v.extend_from_slice(&len.to_be_bytes());
    v.push(kind);
    v
}

fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = header(19 + body.len() as u16, kind);
    v.extend_from_slice(body);
    v
}

/// An UPDATE body: ORIGIN IGP, AS_PATH [64500] (4-octet), NEXT_HOP 192.0.2.2, `extra`
/// attributes appended, NLRI 198.51.100.0/24.
fn update(extra: &[u8], origin: u8) -> Vec<u8> {
    let mut attrs = vec![0x40, 1, 1, origin, 0x40, 2, 6, 2, 1];
    attrs.extend_from_slice(&PEER_AS.to_be_bytes());
    attrs.extend_from_slice(&[0x40, 3, 4, 192, 0, 2, 2]);
    attrs.extend_from_slice(extra);
    let mut body = vec![0, 0];
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(&attrs);
    body.extend_from_slice(&[24, 198, 51, 100]);
    msg(2, &body)
}

fn cases() -> Vec<(&'static str, Phase, Vec<u8>, Expect)> {
    use Expect::*;
    use Phase::*;
    let mut bad_marker = msg(4, &[]);
    bad_marker[3] = 0;
    let mut short_open = header(23, 1);
    short_open.extend_from_slice(&[4, 0xFB, 0xF4, 0]);
    let mut open_v3 = Message::Open(open(GOOD)).encode(&EncodeContext::default());
    open_v3[19] = 3;
    let mut truncated = update(&[], 0);
    truncated.truncate(30);
    vec![
        ("bad marker", Connect, bad_marker, Notification(1, 1)),
        ("length 18", Connect, header(18, 4), Notification(1, 2)),
        ("unknown type 9", Connect, msg(9, &[]), Notification(1, 3)),
        (
            "OPEN shorter than 29",
            Connect,
            short_open,
            Notification(1, 2),
        ),
        ("OPEN version 3", Connect, open_v3, Notification(2, 1)),
        (
            "length 5000",
            Established,
            header(5000, 2),
            Notification(1, 2),
        ),
        (
            "KEEPALIVE of 20 bytes",
            Established,
            msg(4, &[0]),
            Notification(1, 2),
        ),
        (
            "unknown well-known attribute",
            Established,
            update(&[0x40, 99, 1, 0], 0),
            Notification(3, 2),
        ),
        (
            "attribute length overrun",
            Established,
            msg(2, &[0, 0, 0, 40, 0x40, 1, 1, 0]),
            Notification(3, 1),
        ),
        (
            "withdrawn length overrun",
            Established,
            msg(2, &[0, 9, 24, 203, 0, 113, 0, 0]),
            Notification(3, 1),
        ),
        ("bad ORIGIN value", Established, update(&[], 7), SessionKept),
        ("truncated then FIN", Established, truncated, Closed),
    ]
}

fn open(id: Ipv4Addr) -> Open {
    Open::new(
        PEER_AS,
        90,
        id,
        vec![Capability::multiprotocol(Family::Ipv4Unicast)],
    )
}

/// Moves this thread into a new network namespace with the test addresses on `lo`.
fn private_netns() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (needs root)");
    let ip = |args: &[&str]| {
        let ok = Command::new("ip").args(args).status().expect("ip");
        assert!(ok.success(), "ip {args:?}");
    };
    ip(&["link", "set", "lo", "up"]);
    for a in [SPEAKER, ATTACKER, GOOD] {
        ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"]);
    }
}

async fn connect(from: Ipv4Addr) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    s.bind(SocketAddr::new(from.into(), 0)).expect("bind");
    s.connect(SocketAddr::new(SPEAKER.into(), 179))
        .await
        .expect("connect")
}

/// One message as (type, body); `None` on EOF or timeout.
async fn read_msg(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 19];
    timeout(READ, s.read_exact(&mut h)).await.ok()?.ok()?;
    let len = usize::from(u16::from_be_bytes([h[16], h[17]]));
    let mut body = vec![0u8; len.saturating_sub(19)];
    timeout(READ, s.read_exact(&mut body)).await.ok()?.ok()?;
    Some((h[18], body))
}

/// Connects from `from` and completes OPEN / KEEPALIVE.
async fn establish(from: Ipv4Addr) -> TcpStream {
    let mut s = connect(from).await;
    let bytes = Message::Open(open(from)).encode(&EncodeContext::default());
    s.write_all(&bytes).await.expect("send OPEN");
    assert_eq!(read_msg(&mut s).await.map(|m| m.0), Some(1), "OPEN");
    assert_eq!(read_msg(&mut s).await.map(|m| m.0), Some(4), "KEEPALIVE");
    s.write_all(&msg(4, &[])).await.expect("send KEEPALIVE");
    s
}

async fn wait_state(speaker: &Speaker, peer: Ipv4Addr, want: State) {
    for _ in 0..200 {
        if speaker.peer_status(peer.into()).map(|s| s.state) == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{peer} never reached {want:?}");
}

/// Reads until a NOTIFICATION or EOF; the NOTIFICATION's (code, subcode), and whether the
/// connection was closed afterwards.
async fn notification(s: &mut TcpStream) -> (Option<(u8, u8)>, bool) {
    while let Some((kind, body)) = read_msg(s).await {
        if kind == 3 && body.len() >= 2 {
            let got = (body[0], body[1]);
            let closed = read_msg(s).await.is_none();
            return (Some(got), closed);
        }
    }
    (None, true)
}

fn peer(addr: Ipv4Addr) -> PeerConfig {
    let mut session = ferrolb_core::bgp::PeerConfig::new(64512, PEER_AS, SPEAKER);
    session.mode = ConnectMode::Passive;
    session.auto_restart = AutoRestart::After(Duration::from_millis(200));
    session.families = vec![Family::Ipv4Unicast];
    PeerConfig::new(IpAddr::V4(addr), session)
}

#[test]
#[ignore = "needs root (unshare of a network namespace): run cargo xtask test as root"]
fn malformed_input_gets_the_right_notification_and_other_peers_stay_up() {
    private_netns();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let speaker = Speaker::new(SpeakerConfig {
            listen: vec![SocketAddr::new(SPEAKER.into(), 179)],
        })
        .await
        .expect("speaker");
        speaker.add_peer(peer(ATTACKER)).expect("peer");
        speaker.add_peer(peer(GOOD)).expect("peer");
        speaker.advertise("203.0.113.10/32".parse().unwrap(), RouteAttrs::default());
        let mut good = establish(GOOD).await;
        wait_state(&speaker, GOOD, State::Established).await;

        let mut failures = Vec::new();
        for (name, phase, bytes, expect) in cases() {
            wait_state(&speaker, ATTACKER, State::Active).await;
            let mut s = match phase {
                Phase::Connect => connect(ATTACKER).await,
                Phase::Established => {
                    let s = establish(ATTACKER).await;
                    wait_state(&speaker, ATTACKER, State::Established).await;
                    s
                }
            };
            s.write_all(&bytes).await.expect("send");
            let got = match expect {
                Expect::Notification(..) => match notification(&mut s).await {
                    (Some((c, sc)), true) => Expect::Notification(c, sc),
                    (Some((c, sc)), false) => {
                        failures.push(format!("{name}: {c}/{sc} but the connection stayed open"));
                        continue;
                    }
                    (None, _) => Expect::Closed,
                },
                Expect::SessionKept => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    s.write_all(&msg(4, &[])).await.expect("KEEPALIVE");
                    let state = speaker.peer_status(ATTACKER.into()).map(|p| p.state);
                    if state == Some(State::Established) {
                        Expect::SessionKept
                    } else {
                        Expect::Closed
                    }
                }
                Expect::Closed => {
                    s.shutdown().await.expect("FIN");
                    match notification(&mut s).await {
                        (Some((c, sc)), _) => Expect::Notification(c, sc),
                        (None, _) => Expect::Closed,
                    }
                }
            };
            println!("{name}: {got:?}");
            if got != expect {
                failures.push(format!("{name}: expected {expect:?}, got {got:?}"));
            }
            drop(s);
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));

        // The other peer never lost its session and is still served.
        let status = speaker.peer_status(GOOD.into()).expect("good peer");
        assert_eq!((status.state, status.established), (State::Established, 1));
        speaker.advertise("203.0.113.99/32".parse().unwrap(), RouteAttrs::default());
        good.write_all(&msg(4, &[])).await.expect("KEEPALIVE");
        let mut saw = false;
        while let Some((kind, body)) = read_msg(&mut good).await {
            if kind == 2 && body.ends_with(&[32, 203, 0, 113, 99]) {
                saw = true;
                break;
            }
        }
        assert!(saw, "the good peer did not get the new prefix");
        speaker.shutdown().await;
    });
}
