//! Interop against gobgpd, BIRD 2 and FRR in network namespaces the tests create.
//!
//! Run as root with the daemons installed (tests/install-deps.sh):
//! `cargo test -p ferrolb-bgp --test bgp_interop -- --ignored`.

mod common;

use common::{Daemon, Lab, ROUTER_AS, ROUTER_V4, RouterConfig, SPEAKER_AS, wait_for};
use std::time::Duration;

const UP: Duration = Duration::from_secs(20);
const V4: &str = "203.0.113.10/32";
const V6: &str = "2001:db8:ff::10/128";

fn peer_arg(asn: u32) -> String {
    format!("{ROUTER_V4}:{asn}")
}

fn router(local_as: u32, peer_as: u32, password: Option<&str>) -> RouterConfig {
    RouterConfig {
        local_as,
        peer_as,
        password: password.map(str::to_string),
        ..Default::default()
    }
}

fn assert_up(lab: &Lab) {
    assert!(
        wait_for(UP, || lab.established().then_some(())).is_some(),
        "{:?}: session did not establish\n--- daemon ---\n{}\n--- speaker ---\n{}",
        lab.daemon,
        lab.router_log(),
        lab.speaker_log()
    );
}

/// eBGP: IPv4 and IPv6 prefixes arrive with their communities and large communities, and
/// leave when withdrawn (over stdin) and when the speaker stops (SIGTERM).
fn ebgp_routes_and_withdraw(daemon: Daemon) {
    let mut lab = Lab::new(daemon, "ebgp");
    lab.start_router(&router(ROUTER_AS, SPEAKER_AS, None));
    let local_as = SPEAKER_AS.to_string();
    let peer = peer_arg(ROUTER_AS);
    lab.start_speaker(&[
        "--local-as",
        &local_as,
        "--peer",
        &peer,
        "--advertise",
        V4,
        "--advertise",
        V6,
        "--community",
        "65000:1",
        "--large-community",
        "65000:1:2",
    ]);
    assert_up(&lab);
    for p in [V4, V6] {
        let seen = wait_for(UP, || lab.route(p))
            .unwrap_or_else(|| panic!("{daemon:?}: {p} not in RIB\n{}", lab.speaker_log()));
        assert_eq!(seen.communities, ["65000:1"], "{daemon:?} {p}");
        assert_eq!(seen.large, ["65000:1:2"], "{daemon:?} {p}");
    }
    lab.command(&format!("withdraw {V4}"));
    lab.command(&format!("withdraw {V6}"));
    for p in [V4, V6] {
        let gone = wait_for(UP, || lab.route(p).is_none().then_some(()));
        assert!(
            gone.is_some(),
            "{daemon:?}: {p} still in RIB after withdraw"
        );
    }
    lab.command("advertise 203.0.113.11/32");
    assert!(wait_for(UP, || lab.route("203.0.113.11/32")).is_some());
    lab.stop_speaker();
    let gone = wait_for(UP, || lab.route("203.0.113.11/32").is_none().then_some(()));
    assert!(gone.is_some(), "{daemon:?}: route kept after SIGTERM");
    assert!(lab.speaker_log().contains("administrative shutdown"));
}

/// iBGP: LOCAL_PREF is sent and shown.
fn ibgp_local_pref(daemon: Daemon) {
    let mut lab = Lab::new(daemon, "ibgp");
    lab.start_router(&router(ROUTER_AS, ROUTER_AS, None));
    let local_as = ROUTER_AS.to_string();
    let peer = peer_arg(ROUTER_AS);
    lab.start_speaker(&[
        "--local-as",
        &local_as,
        "--peer",
        &peer,
        "--advertise",
        V4,
        "--advertise",
        V6,
        "--community",
        "65000:1",
        "--large-community",
        "65000:1:2",
        "--local-pref",
        "200",
    ]);
    assert_up(&lab);
    for p in [V4, V6] {
        let seen = wait_for(UP, || lab.route(p))
            .unwrap_or_else(|| panic!("{daemon:?}: {p} not in RIB\n{}", lab.speaker_log()));
        assert_eq!(seen.local_pref, Some(200), "{daemon:?} {p}");
        assert_eq!(seen.communities, ["65000:1"], "{daemon:?} {p}");
        assert_eq!(seen.large, ["65000:1:2"], "{daemon:?} {p}");
    }
}

/// TCP-MD5: the same password establishes and carries routes.
fn md5_password(daemon: Daemon) {
    let mut lab = Lab::new(daemon, "md5");
    lab.start_router(&router(ROUTER_AS, SPEAKER_AS, Some("ferrolb-secret")));
    let local_as = SPEAKER_AS.to_string();
    let peer = peer_arg(ROUTER_AS);
    lab.start_speaker(&[
        "--local-as",
        &local_as,
        "--peer",
        &peer,
        "--advertise",
        V4,
        "--password",
        "ferrolb-secret",
    ]);
    assert_up(&lab);
    assert!(wait_for(UP, || lab.route(V4)).is_some());
}

/// TCP-MD5: a wrong password never establishes (the kernel drops the unsigned segments).
fn md5_wrong_password(daemon: Daemon) {
    let mut lab = Lab::new(daemon, "md5bad");
    lab.start_router(&router(ROUTER_AS, SPEAKER_AS, Some("ferrolb-secret")));
    let local_as = SPEAKER_AS.to_string();
    let peer = peer_arg(ROUTER_AS);
    lab.start_speaker(&[
        "--local-as",
        &local_as,
        "--peer",
        &peer,
        "--advertise",
        V4,
        "--password",
        "wrong",
    ]);
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        !lab.established(),
        "{daemon:?}: established with a wrong password"
    );
    assert!(!lab.speaker_log().contains("BGP session established"));
    assert!(
        lab.speaker_log().contains("connect failed"),
        "speaker should log failed connects:\n{}",
        lab.speaker_log()
    );
}

/// A wrong ASN on either side: OPEN Message Error / Bad Peer AS, with a clear log line.
fn wrong_asn(daemon: Daemon) {
    // The speaker expects 64999 but the router is 64500: we send Bad Peer AS.
    let mut lab = Lab::new(daemon, "asn");
    lab.start_router(&router(ROUTER_AS, SPEAKER_AS, None));
    let local_as = SPEAKER_AS.to_string();
    let peer = peer_arg(64999);
    lab.start_speaker(&["--local-as", &local_as, "--peer", &peer]);
    let line = "NOTIFICATION sent: OPEN message error / bad peer AS (2/2)";
    let sent = wait_for(UP, || lab.speaker_log().contains(line).then_some(()));
    assert!(
        sent.is_some(),
        "{daemon:?}: no `{line}`:\n{}",
        lab.speaker_log()
    );
    assert!(!lab.established());
    drop(lab);

    // The router expects 64999 but we are 64512: the router sends Bad Peer AS.
    let mut lab = Lab::new(daemon, "asn2");
    lab.start_router(&router(ROUTER_AS, 64999, None));
    let peer = peer_arg(ROUTER_AS);
    lab.start_speaker(&["--local-as", &local_as, "--peer", &peer]);
    let line = "NOTIFICATION received: OPEN message error / bad peer AS (2/2)";
    let got = wait_for(UP, || lab.speaker_log().contains(line).then_some(()));
    assert!(
        got.is_some(),
        "{daemon:?}: no `{line}`:\n{}",
        lab.speaker_log()
    );
}

macro_rules! interop {
    ($name:ident, $daemon:expr) => {
        mod $name {
            use super::*;

            #[test]
            #[ignore = "needs root, network namespaces and Debian's gobgpd/bird2/frr: run cargo xtask test as root"]
            fn ebgp_ipv4_ipv6_communities_withdraw() {
                ebgp_routes_and_withdraw($daemon);
            }

            #[test]
            #[ignore = "needs root, network namespaces and Debian's gobgpd/bird2/frr: run cargo xtask test as root"]
            fn ibgp_local_pref() {
                super::ibgp_local_pref($daemon);
            }

            #[test]
            #[ignore = "needs root, network namespaces and Debian's gobgpd/bird2/frr: run cargo xtask test as root"]
            fn md5_password() {
                super::md5_password($daemon);
            }

            #[test]
            #[ignore = "needs root, network namespaces and Debian's gobgpd/bird2/frr: run cargo xtask test as root"]
            fn md5_wrong_password_never_establishes() {
                md5_wrong_password($daemon);
            }

            #[test]
            #[ignore = "needs root, network namespaces and Debian's gobgpd/bird2/frr: run cargo xtask test as root"]
            fn wrong_asn_bad_peer_as() {
                wrong_asn($daemon);
            }
        }
    };
}

interop!(gobgp, Daemon::Gobgp);
interop!(bird, Daemon::Bird);
interop!(frr, Daemon::Frr);
