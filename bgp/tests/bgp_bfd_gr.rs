//! BFD failover and graceful restart against BIRD 2, FRR (bfdd) and gobgpd, in network
//! namespaces the tests create.
//!
//! Run as root with the daemons installed (tests/install-deps.sh):
//! `cargo test -p ferrolb-bgp --test bgp_bfd_gr -- --ignored --nocapture --test-threads 1`
//! (one at a time: the failover times are measured).

mod common;

use common::{Daemon, Lab, ROUTER_AS, ROUTER_V4, RouterConfig, SPEAKER_AS, wait_for};
use std::time::{Duration, Instant};

const UP: Duration = Duration::from_secs(30);
const V4: &str = "203.0.113.20/32";
const V6: &str = "2001:db8:ff::20/128";
/// RIB polling period while timing a failover or watching for gaps.
const POLL: Duration = Duration::from_millis(20);
/// BFD 300 ms x 3 must beat this; the BGP hold time (90 s) would not.
const FAILOVER_BOUND: Duration = Duration::from_secs(1);

fn router(bfd: bool, graceful_restart: bool) -> RouterConfig {
    RouterConfig {
        local_as: ROUTER_AS,
        peer_as: SPEAKER_AS,
        bfd,
        graceful_restart,
        ..Default::default()
    }
}

fn speaker_args(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--local-as",
        &SPEAKER_AS.to_string(),
        "--peer",
        &format!("{ROUTER_V4}:{ROUTER_AS}"),
        "--hold-time",
        "90",
        "--advertise",
        V4,
        "--advertise",
        V6,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn start(lab: &mut Lab, extra: &[&str]) {
    let args = speaker_args(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.start_speaker(&args);
}

fn assert_routes(lab: &Lab) {
    assert!(
        wait_for(UP, || lab.established().then_some(())).is_some(),
        "{:?}: session did not establish\n--- daemon ---\n{}\n--- speaker ---\n{}",
        lab.daemon,
        lab.router_log(),
        lab.speaker_log()
    );
    for p in [V4, V6] {
        assert!(
            wait_for(UP, || lab.route(p)).is_some(),
            "{:?}: {p} not in RIB\n{}",
            lab.daemon,
            lab.speaker_log()
        );
    }
}

/// Polls the RIB every [`POLL`] until `V4` is gone. The route left between the start of the
/// last poll that saw it and the end of the first that did not: both bounds, since `t0`.
fn time_until_gone(lab: &Lab, t0: Instant, limit: Duration) -> Option<(Duration, Duration)> {
    let mut last_seen = Duration::ZERO;
    while t0.elapsed() < limit {
        let start = t0.elapsed();
        if lab.route(V4).is_none() {
            return Some((last_seen, t0.elapsed()));
        }
        last_seen = start;
        std::thread::sleep(POLL);
    }
    None
}

fn bfd_up(lab: &Lab) {
    assert!(
        wait_for(UP, || lab.bfd_up().then_some(())).is_some(),
        "{:?}: BFD did not come up\n--- daemon ---\n{}\n--- speaker ---\n{}",
        lab.daemon,
        lab.router_log(),
        lab.speaker_log()
    );
    assert!(lab.speaker_log().contains("BFD state changed"));
}

/// BFD comes up; the speaker's node goes silent (egress dropped, then SIGKILL, so no FIN and
/// no BFD AdminDown reach the router): the daemon drops the routes within 1 s, not the hold
/// time. With `blackhole == false` it is a plain SIGKILL, where the kernel's FIN also tells.
fn bfd_failover(daemon: Daemon, blackhole: bool) {
    let mut lab = Lab::new(daemon, "h2bfd");
    lab.start_router(&router(true, false));
    start(
        &mut lab,
        &["--bfd", "--bfd-interval-ms", "300", "--bfd-multiplier", "3"],
    );
    assert_routes(&lab);
    bfd_up(&lab);
    // Let BFD leave the slow (1 s) rate it uses before Up.
    std::thread::sleep(Duration::from_secs(2));
    if blackhole {
        lab.blackhole_speaker();
    }
    let t0 = Instant::now();
    lab.kill_speaker();
    let took = time_until_gone(&lab, t0, Duration::from_secs(10));
    let (seen, gone) = took.unwrap_or_else(|| panic!("{daemon:?}: route kept 10 s after the kill"));
    println!(
        "{daemon:?} BFD failover ({}): routes dropped between {seen:?} and {gone:?}",
        if blackhole { "silent node" } else { "SIGKILL" }
    );
    // The upper bound: the route was gone by the time the daemon answered.
    assert!(
        gone < FAILOVER_BOUND,
        "{daemon:?}: routes dropped after {gone:?}, not within {FAILOVER_BOUND:?}\n{}",
        lab.router_log()
    );
}

/// The control for [`bfd_failover`]: without BFD a silent node keeps its routes (hold time).
fn no_bfd_keeps_routes(daemon: Daemon) {
    let mut lab = Lab::new(daemon, "h2nobfd");
    lab.start_router(&router(false, false));
    start(&mut lab, &[]);
    assert_routes(&lab);
    lab.blackhole_speaker();
    lab.kill_speaker();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        lab.route(V4).is_some(),
        "{daemon:?}: route dropped without BFD: the BFD test would prove nothing"
    );
}

/// The other direction: the router goes silent; our BFD session goes down and resets the BGP
/// session at once (Cease/BFD down), long before the hold time.
fn bfd_router_silent(daemon: Daemon) {
    let mut lab = Lab::new(daemon, "h2bfdr");
    lab.start_router(&router(true, false));
    start(&mut lab, &["--bfd"]);
    assert_routes(&lab);
    bfd_up(&lab);
    std::thread::sleep(Duration::from_secs(2));
    lab.blackhole_router();
    let t0 = Instant::now();
    let line = "BFD session down: resetting the BGP session";
    let mut seen = None;
    while seen.is_none() && t0.elapsed() < Duration::from_secs(5) {
        if lab.speaker_log().contains(line) {
            seen = Some(t0.elapsed());
        }
        std::thread::sleep(POLL);
    }
    println!("{daemon:?}: our BFD reset the BGP session after {seen:?}");
    let took = seen.unwrap_or_else(|| panic!("no `{line}`:\n{}", lab.speaker_log()));
    assert!(took < FAILOVER_BOUND, "{took:?}");
    assert!(
        lab.speaker_log()
            .contains("NOTIFICATION sent: cease / BFD down (6/10)"),
        "{}",
        lab.speaker_log()
    );
}

/// Graceful restart: SIGKILL the speaker and start it again 2 s later with the Restart State
/// bit; the daemon keeps the routes throughout (RIB polled continuously, zero gaps). With `gr == false` it
/// is the control: the routes do leave.
fn graceful_restart(daemon: Daemon, gr: bool) {
    let mut lab = Lab::new(daemon, if gr { "h2gr" } else { "h2nogr" });
    lab.start_router(&router(false, gr));
    let first: &[&str] = if gr {
        &["--graceful-restart", "120"]
    } else {
        &[]
    };
    start(&mut lab, first);
    assert_routes(&lab);
    let t0 = Instant::now();
    lab.kill_speaker();
    // Down for 2 s (the restart time is 120 s): long enough that a daemon without graceful
    // restart visibly drops the routes (the control), where an immediate restart can re-learn
    // them between two polls.
    let mut polls = 0u32;
    let mut gaps = Vec::new();
    while t0.elapsed() < Duration::from_secs(2) {
        polls += 1;
        if lab.route(V4).is_none() {
            gaps.push((V4, t0.elapsed()));
        }
        std::thread::sleep(POLL);
    }
    let again: &[&str] = if gr {
        &["--graceful-restart", "120", "--restarting"]
    } else {
        &[]
    };
    start(&mut lab, again);
    let mut reestablished = None;
    // Watch through the restart, the new session and its End-of-RIB, and a while after.
    while t0.elapsed() < Duration::from_secs(20) {
        polls += 1;
        // V4 on every poll, V6 on every fourth: a CLI call takes 5-50 ms (vtysh the most).
        let prefixes: &[&str] = if polls.is_multiple_of(4) {
            &[V4, V6]
        } else {
            &[V4]
        };
        for p in prefixes {
            if lab.route(p).is_none() {
                gaps.push((*p, t0.elapsed()));
            }
        }
        if reestablished.is_none()
            && lab.speaker_log().matches("BGP session established").count() >= 2
        {
            reestablished = Some(t0.elapsed());
        }
        if reestablished.is_some_and(|r| t0.elapsed() > r + Duration::from_secs(5)) {
            break;
        }
        std::thread::sleep(POLL);
    }
    println!(
        "{daemon:?} graceful restart={gr}: re-established after {reestablished:?}; {polls} polls over {:?} \
         (one per {:?}), route missing in {}",
        t0.elapsed(),
        t0.elapsed() / polls.max(1),
        gaps.len()
    );
    assert!(
        reestablished.is_some(),
        "{daemon:?}: no new session\n{}\n{}",
        lab.speaker_log(),
        lab.router_log()
    );
    if gr {
        assert!(
            gaps.is_empty(),
            "{daemon:?}: routes missing at {gaps:?}\n{}",
            lab.router_log()
        );
        // And the routes are the new session's, not stale ones kept forever.
        assert!(lab.route(V4).is_some() && lab.route(V6).is_some());
    } else {
        assert!(
            !gaps.is_empty(),
            "{daemon:?}: routes never left without graceful restart: the test would prove nothing"
        );
    }
}

macro_rules! ignored {
    ($($name:ident => $body:expr;)*) => {
        $(
            #[test]
            #[ignore = "needs root, network namespaces and Debian's gobgpd/bird2/frr: run cargo xtask test as root"]
            fn $name() {
                $body;
            }
        )*
    };
}

ignored! {
    bird_bfd_silent_node_drops_routes_within_1s => bfd_failover(Daemon::Bird, true);
    bird_bfd_sigkill_drops_routes_within_1s => bfd_failover(Daemon::Bird, false);
    bird_without_bfd_silent_node_keeps_routes => no_bfd_keeps_routes(Daemon::Bird);
    bird_silent_router_bfd_resets_our_session => bfd_router_silent(Daemon::Bird);
    frr_bfd_silent_node_drops_routes_within_1s => bfd_failover(Daemon::Frr, true);
    frr_bfd_sigkill_drops_routes_within_1s => bfd_failover(Daemon::Frr, false);
    frr_without_bfd_silent_node_keeps_routes => no_bfd_keeps_routes(Daemon::Frr);
    frr_silent_router_bfd_resets_our_session => bfd_router_silent(Daemon::Frr);
    gobgp_graceful_restart_keeps_routes => graceful_restart(Daemon::Gobgp, true);
    gobgp_without_graceful_restart_routes_leave => graceful_restart(Daemon::Gobgp, false);
    frr_graceful_restart_keeps_routes => graceful_restart(Daemon::Frr, true);
    bird_graceful_restart_keeps_routes => graceful_restart(Daemon::Bird, true);
    bird_without_graceful_restart_routes_leave => graceful_restart(Daemon::Bird, false);
    frr_without_graceful_restart_routes_leave => graceful_restart(Daemon::Frr, false);
}
