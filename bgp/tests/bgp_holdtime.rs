//! Hold-time mismatch, both directions, with the expected NOTIFICATION OPEN Message Error /
//! Unacceptable Hold Time (2/6) and a clear log line:
//!
//! - the daemon requires more than we offer (BIRD `min hold time`, FRR
//!   `bgp minimum-holdtime`): it sends 2/6 and our driver logs
//!   `NOTIFICATION received: OPEN message error / unacceptable hold time (2/6)`;
//! - a peer offers 1 or 2 s (RFC 4271 §6.2 forbids them): we send 2/6 and log
//!   `NOTIFICATION sent: ...`. gobgpd can be configured to offer 2 s; a raw TCP client in the
//!   router namespace offers 1 and 2 s and reads the code/subcode back from the bytes.
//!
//! Run as root with the daemons installed (tests/install-deps.sh):
//! `cargo test -p ferrolb-bgp --test bgp_holdtime -- --ignored`.
#![allow(clippy::print_stderr)]

mod common;

use common::{Daemon, Lab, ROUTER_AS, ROUTER_V4, RouterConfig, SPEAKER_AS, wait_for};
use ferrolb_core::bgp::{Capability, EncodeContext, Family, Message, Open};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const UP: Duration = Duration::from_secs(30);
const RECEIVED: &str = "NOTIFICATION received: OPEN message error / unacceptable hold time (2/6)";
const SENT: &str = "NOTIFICATION sent: OPEN message error / unacceptable hold time (2/6)";

fn start_speaker(lab: &mut Lab, hold: u16) {
    let (local_as, peer) = (SPEAKER_AS.to_string(), format!("{ROUTER_V4}:{ROUTER_AS}"));
    let hold = hold.to_string();
    lab.start_speaker(&[
        "--local-as",
        &local_as,
        "--peer",
        &peer,
        "--hold-time",
        &hold,
        "--advertise",
        "203.0.113.40/32",
    ]);
}

fn wait_log(lab: &Lab, line: &str) {
    let seen = wait_for(UP, || lab.speaker_log().contains(line).then_some(()));
    assert!(
        seen.is_some(),
        "{:?}: no `{line}`\n--- speaker ---\n{}\n--- daemon ---\n{}",
        lab.daemon,
        lab.speaker_log(),
        lab.router_log()
    );
    assert!(!lab.established(), "{:?}: established anyway", lab.daemon);
    assert!(!lab.speaker_log().contains("BGP session established"));
    eprintln!("{:?}: `{line}` logged", lab.daemon);
}

/// The daemon's minimum hold time (10 s) is above our 5 s: it refuses our OPEN with 2/6.
fn daemon_minimum_above_ours(daemon: Daemon) {
    let mut lab = Lab::new(daemon, "holdmin");
    lab.start_router(&RouterConfig {
        local_as: ROUTER_AS,
        peer_as: SPEAKER_AS,
        min_hold_time: Some(10),
        ..Default::default()
    });
    start_speaker(&mut lab, 5);
    wait_log(&lab, RECEIVED);
}

/// gobgpd offers 2 s: we refuse its OPEN with 2/6.
#[test]
#[ignore = "needs root, network namespaces and Debian's gobgpd/bird2/frr: run cargo xtask test as root"]
fn gobgp_offering_2s_gets_unacceptable_hold_time() {
    let mut lab = Lab::new(Daemon::Gobgp, "hold2");
    lab.start_router(&RouterConfig {
        local_as: ROUTER_AS,
        peer_as: SPEAKER_AS,
        hold_time: Some(2),
        ..Default::default()
    });
    start_speaker(&mut lab, 90);
    wait_log(&lab, SENT);
}

#[test]
#[ignore = "needs root, network namespaces and Debian's gobgpd/bird2/frr: run cargo xtask test as root"]
fn bird_min_hold_time_above_ours_sends_unacceptable_hold_time() {
    daemon_minimum_above_ours(Daemon::Bird);
}

#[test]
#[ignore = "needs root, network namespaces and Debian's gobgpd/bird2/frr: run cargo xtask test as root"]
fn frr_minimum_holdtime_above_ours_sends_unacceptable_hold_time() {
    daemon_minimum_above_ours(Daemon::Frr);
}

/// Joins the network namespace `ns` (this thread only).
fn enter_netns(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns file");
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns (needs root)");
}

/// One BGP message as (type, body); `None` on EOF, error or timeout.
fn read_msg(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 19];
    s.read_exact(&mut h).ok()?;
    let len = usize::from(u16::from_be_bytes([h[16], h[17]]));
    let mut body = vec![0u8; len.saturating_sub(19)];
    s.read_exact(&mut body).ok()?;
    Some((h[18], body))
}

/// Connects to the speaker, sends an OPEN with `hold` seconds and returns the NOTIFICATION's
/// (code, subcode), retrying while the speaker's session is not ready to accept (it restarts
/// 2 s after the previous refusal).
fn offer(speaker: Ipv4Addr, hold: u16) -> Option<(u8, u8)> {
    let open = Open::new(
        ROUTER_AS,
        hold,
        ROUTER_V4.parse().expect("id"),
        vec![Capability::multiprotocol(Family::Ipv4Unicast)],
    );
    let bytes = Message::Open(open).encode(&EncodeContext::default());
    let deadline = Instant::now() + UP;
    while Instant::now() < deadline {
        let addr = SocketAddr::new(speaker.into(), 179);
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            if s.write_all(&bytes).is_ok() {
                while let Some((kind, body)) = read_msg(&mut s) {
                    if kind == 3 && body.len() >= 2 {
                        return Some((body[0], body[1]));
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

/// A raw client offers 2 s, then 1 s: both get 2/6, and the speaker logs it.
#[test]
#[ignore = "needs root, network namespaces and Debian's gobgpd/bird2/frr: run cargo xtask test as root"]
fn raw_peer_offering_1s_or_2s_gets_unacceptable_hold_time() {
    // No daemon: the test itself plays the router, from the router namespace.
    let mut lab = Lab::new(Daemon::Gobgp, "holdraw");
    start_speaker(&mut lab, 90);
    let ns = lab.router_ns.clone();
    let speaker: Ipv4Addr = lab.speaker_v4.parse().expect("address");
    let got = std::thread::spawn(move || {
        enter_netns(&ns);
        [2u16, 1].map(|hold| (hold, offer(speaker, hold)))
    })
    .join()
    .expect("client thread");
    for (hold, n) in got {
        assert_eq!(
            n,
            Some((2, 6)),
            "hold time {hold}: expected NOTIFICATION 2/6\n{}",
            lab.speaker_log()
        );
        eprintln!("raw peer offering {hold} s: NOTIFICATION 2/6");
    }
    let log = lab.speaker_log();
    assert!(log.matches(SENT).count() >= 2, "{log}");
    assert!(!log.contains("BGP session established"), "{log}");
}
