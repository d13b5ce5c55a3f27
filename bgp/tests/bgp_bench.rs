//! Time from `advertise` to the prefix in gobgpd's RIB, over 1,000 prefixes.
//!
//! `cargo test -p ferrolb-bgp --test bgp_bench -- --ignored --nocapture` (root, gobgpd).
//! Each prefix is written to ferrolb-bgp-lab's stdin 2 ms apart; arrival is when
//! `gobgp monitor global rib -j` reports it, so the figure includes the pipe, our driver, TCP,
//! gobgpd's processing and its gRPC stream: an upper bound on our own part.
#![allow(clippy::print_stdout)]

mod common;

use common::{Daemon, Lab, ROUTER_AS, ROUTER_V4, RouterConfig, SPEAKER_AS, wait_for};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const N: u32 = 1000;

#[test]
#[ignore = "needs root, network namespaces and Debian's gobgpd/bird2/frr: run cargo xtask test as root"]
fn advertise_to_gobgpd_rib_latency() {
    let mut lab = Lab::new(Daemon::Gobgp, "bench");
    lab.start_router(&RouterConfig {
        local_as: ROUTER_AS,
        peer_as: SPEAKER_AS,
        ..Default::default()
    });
    let (local_as, peer) = (SPEAKER_AS.to_string(), format!("{ROUTER_V4}:{ROUTER_AS}"));
    lab.start_speaker(&["--local-as", &local_as, "--peer", &peer]);
    assert!(wait_for(Duration::from_secs(20), || lab.established().then_some(())).is_some());

    let mut monitor = lab
        .in_router("gobgp")
        .args(["monitor", "global", "rib", "-j"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gobgp monitor");
    let out = monitor.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let now = Instant::now();
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            for path in v.as_array().into_iter().flatten() {
                if path["withdrawal"] != true
                    && let Some(p) = path["nlri"]["prefix"].as_str()
                {
                    let _ = tx.send((p.to_string(), now));
                }
            }
        }
    });
    // Let the monitor subscribe before the first prefix.
    std::thread::sleep(Duration::from_secs(1));

    let mut sent = HashMap::new();
    for i in 0..N {
        // Documentation space only: 1,000 IPv6 /128s from 2001:db8:ff::/64.
        let p = format!("2001:db8:ff::{:x}/128", i + 1);
        lab.command(&format!("advertise {p}"));
        sent.insert(p, Instant::now());
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lat.len() < N as usize && Instant::now() < deadline {
        if let Ok((p, at)) = rx.recv_timeout(Duration::from_secs(1))
            && let Some(t0) = sent.remove(&p)
        {
            lat.push(at.saturating_duration_since(t0));
        }
    }
    let _ = monitor.kill();
    let _ = monitor.wait();
    assert_eq!(
        lat.len(),
        N as usize,
        "{} prefixes never arrived",
        sent.len()
    );
    lat.sort();
    let pct = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "advertise -> gobgpd RIB over {N} prefixes: p50 {:?}, p99 {:?}, max {:?}",
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1]
    );
}
