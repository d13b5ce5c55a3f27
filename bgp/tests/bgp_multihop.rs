//! eBGP multi-hop through a real router: the speaker's namespace reaches the daemon's only
//! through a third namespace that forwards (`ip_forward`), so the session's segments cross two
//! IP hops. With `--multihop 2` the session establishes and the prefixes arrive; with the
//! default single-hop TTL 1 the middle router drops our segments and it never does.
//!
//! Run as root with the daemons installed (tests/install-deps.sh):
//! `cargo test -p ferrolb-bgp --test bgp_multihop -- --ignored`.
#![allow(clippy::print_stderr)]

mod common;

use common::{Daemon, Lab, ROUTER_AS, ROUTER_V4, RouterConfig, SPEAKER_AS, Topology, wait_for};
use std::process::Command;
use std::time::Duration;

const UP: Duration = Duration::from_secs(30);
/// How long a session that must not come up is given: several connect retries (2 s) and the
/// daemons' own retries.
const NEVER: Duration = Duration::from_secs(12);
const V4: &str = "203.0.113.30/32";
const V6: &str = "2001:db8:ff::30/128";

fn lab(daemon: Daemon, tag: &str) -> Lab {
    let mut lab = Lab::with_topology(daemon, tag, Topology::Routed);
    lab.start_router(&RouterConfig {
        local_as: ROUTER_AS,
        peer_as: SPEAKER_AS,
        // The daemon side is configured for multi-hop either way: only our TTL differs.
        multihop: Some(2),
        ..Default::default()
    });
    // The path works: two hops, through the middle namespace.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.speaker_ns,
            "ping",
            "-c",
            "1",
            "-W",
            "5",
        ])
        .arg(ROUTER_V4)
        .output()
        .expect("ping");
    assert!(
        out.status.success(),
        "no route to the daemon: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    lab
}

fn start(lab: &mut Lab, extra: &[&str]) {
    let (local_as, peer) = (SPEAKER_AS.to_string(), format!("{ROUTER_V4}:{ROUTER_AS}"));
    let mut args = vec!["--local-as", &local_as, "--peer", &peer];
    args.extend(["--advertise", V4, "--advertise", V6]);
    args.extend(extra);
    lab.start_speaker(&args);
}

/// `--multihop 2`: established, both prefixes in the daemon's RIB.
fn multihop_establishes(daemon: Daemon) {
    let mut lab = lab(daemon, "mh");
    start(&mut lab, &["--multihop", "2"]);
    assert!(
        wait_for(UP, || lab.established().then_some(())).is_some(),
        "{daemon:?}: multi-hop session did not establish\n--- daemon ---\n{}\n--- speaker ---\n{}",
        lab.router_log(),
        lab.speaker_log()
    );
    for p in [V4, V6] {
        assert!(
            wait_for(UP, || lab.route(p)).is_some(),
            "{daemon:?}: {p} not in RIB\n{}",
            lab.speaker_log()
        );
    }
    eprintln!("{daemon:?}: eBGP multi-hop (TTL 2) through a router: established, routes in RIB");
}

/// No `--multihop`: TTL 1 dies at the middle router, so nothing establishes.
fn single_hop_ttl_never_establishes(daemon: Daemon) {
    let mut lab = lab(daemon, "mhttl1");
    start(&mut lab, &[]);
    std::thread::sleep(NEVER);
    assert!(
        !lab.established(),
        "{daemon:?}: established with TTL 1 across a router"
    );
    let log = lab.speaker_log();
    assert!(!log.contains("BGP session established"), "{log}");
    assert!(lab.route(V4).is_none());
    // Our SYNs die at the middle router, which answers ICMP time exceeded.
    assert!(log.contains("connect failed"), "{log}");
    let tail: Vec<&str> = log.lines().rev().take(6).collect();
    eprintln!("{daemon:?} speaker log tail: {tail:#?}");
    eprintln!("{daemon:?}: TTL 1 across a router: not established after {NEVER:?}");
}

macro_rules! multihop {
    ($name:ident, $daemon:expr) => {
        mod $name {
            use super::*;

            #[test]
            #[ignore = "needs root, network namespaces and Debian's gobgpd/bird2/frr: run cargo xtask test as root"]
            fn ebgp_multihop_ttl2_through_a_router() {
                multihop_establishes($daemon);
            }

            #[test]
            #[ignore = "needs root, network namespaces and Debian's gobgpd/bird2/frr: run cargo xtask test as root"]
            fn ttl1_through_a_router_never_establishes() {
                single_hop_ttl_never_establishes($daemon);
            }
        }
    };
}

multihop!(gobgp, Daemon::Gobgp);
multihop!(bird, Daemon::Bird);
multihop!(frr, Daemon::Frr);
