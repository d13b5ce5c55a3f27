//! BFD failover and graceful restart against BIRD 2, FRR (bfdd) and gobgpd, in network
//! namespaces the tests create.
//!
//! Run as root with the daemons installed (tests/install-deps.sh):
//! `cargo test -p ferrolb-bgp --test bgp_bfd_gr -- --ignored --nocapture`.
//!
//! The assertions are functional, with bounds a loaded 2-core CI machine keeps: with a 9 s
//! hold time, BFD (300 ms x 3) must drop the routes within 2.5 s, while the no-BFD control
//! keeps them at least 5 s (the hold time less one keepalive interval, less slack). The
//! measured time is printed on every run. For the precise figures run the failover tests
//! alone with `FERROLB_BGP_MEASURE=1`: each runs 10 times and prints p50 and max, e.g.
//! `FERROLB_BGP_MEASURE=1 cargo test -p ferrolb-bgp --test bgp_bfd_gr -- --ignored
//! --nocapture --test-threads 1 bfd_`.

mod common;

use common::{Daemon, Lab, ROUTER_AS, ROUTER_V4, RouterConfig, SPEAKER_AS, wait_for};
use std::time::{Duration, Instant};

/// The hold time the speaker proposes in the BFD tests (the daemons accept it): small enough
/// that the no-BFD control finishes quickly, large enough to tell BFD apart.
const HOLD: u16 = 9;
/// BFD 300 ms x 3 detects in about 1 s; this leaves CI's scheduling 1.5 s of slack and is
/// still well under the hold time.
const FAILOVER_BOUND: Duration = Duration::from_millis(2500);
/// Without BFD the router keeps the routes until its hold timer (9 s) expires, counted from
/// the last keepalive (every 3 s): at least 6 s after the kill.
const CONTROL_KEPT: Duration = Duration::from_secs(5);

const UP: Duration = Duration::from_secs(30);
const V4: &str = "203.0.113.20/32";
const V6: &str = "2001:db8:ff::20/128";
/// RIB polling period while timing a failover or watching for gaps.
const POLL: Duration = Duration::from_millis(20);

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
        "--advertise",
        V4,
        "--advertise",
        V6,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    if !extra.contains(&"--hold-time") {
        v.extend(["--hold-time".to_string(), "90".to_string()]);
    }
    v
}

/// How many times to run a timed test: 10 with `FERROLB_BGP_MEASURE=1`, else once.
fn runs() -> usize {
    if std::env::var("FERROLB_BGP_MEASURE").is_ok_and(|v| v == "1") {
        10
    } else {
        1
    }
}

/// Prints p50 and max of `times` (upper bounds of when the route left) when measuring.
fn report(what: &str, mut times: Vec<Duration>) {
    if times.len() < 2 {
        return;
    }
    times.sort();
    eprintln!(
        "MEASURE {what}: n={} p50 {:?} max {:?} (all: {times:?})",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
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
/// A failed CLI query counts as neither.
fn time_until_gone(lab: &Lab, t0: Instant, limit: Duration) -> Option<(Duration, Duration)> {
    let mut last_seen = Duration::ZERO;
    while t0.elapsed() < limit {
        let start = t0.elapsed();
        match lab.lookup(V4) {
            Ok(None) => return Some((last_seen, t0.elapsed())),
            Ok(Some(_)) => last_seen = start,
            Err(_) => {}
        }
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
/// no BFD AdminDown reach the router): the daemon drops the routes within
/// [`FAILOVER_BOUND`] (about 1 s measured), well before the 9 s hold time. With
/// `blackhole == false` it is a plain SIGKILL, where the kernel's FIN also tells.
fn bfd_failover(daemon: Daemon, blackhole: bool) {
    let times = (0..runs())
        .map(|_| bfd_failover_once(daemon, blackhole))
        .collect();
    let what = if blackhole { "silent node" } else { "SIGKILL" };
    report(&format!("{daemon:?} BFD failover ({what})"), times);
}

fn bfd_failover_once(daemon: Daemon, blackhole: bool) -> Duration {
    let mut lab = Lab::new(daemon, "bfd");
    lab.start_router(&router(true, false));
    let hold = HOLD.to_string();
    start(
        &mut lab,
        &[
            "--bfd",
            "--bfd-interval-ms",
            "300",
            "--bfd-multiplier",
            "3",
            "--hold-time",
            &hold,
        ],
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
    let took = time_until_gone(&lab, t0, Duration::from_secs(20));
    let (seen, gone) = took.unwrap_or_else(|| panic!("{daemon:?}: route kept 20 s after the kill"));
    eprintln!(
        "{daemon:?} BFD failover ({}): routes dropped between {seen:?} and {gone:?} \
         (bound {FAILOVER_BOUND:?}, hold time {HOLD} s)",
        if blackhole { "silent node" } else { "SIGKILL" }
    );
    // No poll saw the route later than FAILOVER_BOUND after the kill. `seen` is the robust
    // bound: a slow CLI call makes `gone` late but never makes `seen` late.
    assert!(
        seen < FAILOVER_BOUND,
        "{daemon:?}: routes still there {seen:?} after the kill, BFD did not drop them within \
         {FAILOVER_BOUND:?}\n{}",
        lab.router_log()
    );
    // And it was gone before the hold timer could have fired (>= 6 s): generous, since this
    // bound includes a CLI call's latency on a loaded machine.
    assert!(
        gone < CONTROL_KEPT,
        "{daemon:?}: routes gone only after {gone:?}: the hold timer, not BFD?\n{}",
        lab.router_log()
    );
    gone
}

/// The control for [`bfd_failover`]: without BFD a silent node keeps its routes until the
/// hold time (9 s, from the last keepalive) expires, at least [`CONTROL_KEPT`] after the kill.
fn no_bfd_keeps_routes(daemon: Daemon) {
    let mut lab = Lab::new(daemon, "nobfd");
    lab.start_router(&router(false, false));
    start(&mut lab, &["--hold-time", &HOLD.to_string()]);
    assert_routes(&lab);
    lab.blackhole_speaker();
    let t0 = Instant::now();
    lab.kill_speaker();
    let took = time_until_gone(&lab, t0, Duration::from_secs(30));
    let (seen, gone) = took.unwrap_or_else(|| panic!("{daemon:?}: route kept 30 s after the kill"));
    eprintln!(
        "{daemon:?} without BFD (silent node): routes dropped between {seen:?} and {gone:?} \
         (hold time {HOLD} s)"
    );
    assert!(
        gone >= CONTROL_KEPT,
        "{daemon:?}: route dropped after {gone:?} without BFD: the BFD test would prove nothing"
    );
}

/// The other direction: the router goes silent; our BFD session goes down and resets the BGP
/// session at once (Cease/BFD down), long before the hold time.
fn bfd_router_silent(daemon: Daemon) {
    let mut lab = Lab::new(daemon, "bfdr");
    lab.start_router(&router(true, false));
    start(&mut lab, &["--bfd", "--hold-time", &HOLD.to_string()]);
    assert_routes(&lab);
    bfd_up(&lab);
    std::thread::sleep(Duration::from_secs(2));
    lab.blackhole_router();
    let t0 = Instant::now();
    let line = "BFD session down: resetting the BGP session";
    let mut seen = None;
    while seen.is_none() && t0.elapsed() < Duration::from_secs(20) {
        if lab.speaker_log().contains(line) {
            seen = Some(t0.elapsed());
        }
        std::thread::sleep(POLL);
    }
    eprintln!("{daemon:?}: our BFD reset the BGP session after {seen:?} (hold time {HOLD} s)");
    let took = seen.unwrap_or_else(|| panic!("no `{line}`:\n{}", lab.speaker_log()));
    assert!(
        took < FAILOVER_BOUND,
        "{daemon:?}: BFD reset after {took:?}, not within {FAILOVER_BOUND:?}"
    );
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
    let mut lab = Lab::new(daemon, if gr { "gr" } else { "nogr" });
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
        if lab.route_absent(V4) {
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
    while t0.elapsed() < Duration::from_secs(40) {
        polls += 1;
        // V4 on every poll, V6 on every fourth: a CLI call takes 5-50 ms (vtysh the most).
        let prefixes: &[&str] = if polls.is_multiple_of(4) {
            &[V4, V6]
        } else {
            &[V4]
        };
        for p in prefixes {
            // Only a positive "not there": a CLI call that timed out is not a gap.
            if lab.route_absent(p) {
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
    eprintln!(
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
        for p in [V4, V6] {
            assert!(
                wait_for(UP, || lab.route(p)).is_some(),
                "{daemon:?}: {p} gone"
            );
        }
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
    bird_bfd_silent_node_drops_routes_before_hold_time => bfd_failover(Daemon::Bird, true);
    bird_bfd_sigkill_drops_routes_before_hold_time => bfd_failover(Daemon::Bird, false);
    bird_without_bfd_silent_node_keeps_routes_for_hold_time => no_bfd_keeps_routes(Daemon::Bird);
    bird_silent_router_bfd_resets_our_session => bfd_router_silent(Daemon::Bird);
    frr_bfd_silent_node_drops_routes_before_hold_time => bfd_failover(Daemon::Frr, true);
    frr_bfd_sigkill_drops_routes_before_hold_time => bfd_failover(Daemon::Frr, false);
    frr_without_bfd_silent_node_keeps_routes_for_hold_time => no_bfd_keeps_routes(Daemon::Frr);
    frr_silent_router_bfd_resets_our_session => bfd_router_silent(Daemon::Frr);
    gobgp_graceful_restart_keeps_routes => graceful_restart(Daemon::Gobgp, true);
    gobgp_without_graceful_restart_routes_leave => graceful_restart(Daemon::Gobgp, false);
    frr_graceful_restart_keeps_routes => graceful_restart(Daemon::Frr, true);
    bird_graceful_restart_keeps_routes => graceful_restart(Daemon::Bird, true);
    bird_without_graceful_restart_routes_leave => graceful_restart(Daemon::Bird, false);
    frr_without_graceful_restart_routes_leave => graceful_restart(Daemon::Frr, false);
}
