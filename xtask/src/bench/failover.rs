//! `cargo xtask bench failover`: layer-2 failover when the owning node's speaker is killed
//! (SIGKILL) or stopped (SIGTERM) while the client probes the VIP.
//!
//! Setup (FerroLB must be deployed: `cargo xtask lab deploy`): namespace `bench-failover`, a
//! pool holding only 192.0.2.220, an L2Advertisement, one echo pod and a Service pinned to
//! the IP. The client probes with broadcast ARP every 20 ms (50 iputils arpings started 20 ms
//! apart: it takes whole seconds as its interval); tcpdump on the LAN bridge sees gratuitous
//! ARP. Per round: signal the owner's speaker, record kill → first gratuitous packet from
//! another MAC and kill → first answer from another MAC, then delete the pod so the
//! DaemonSet makes a fresh one (no crash-loop back-off) and wait for all speakers to be live.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::json;

use super::{ms, percentile, write_json};
use crate::{controlplane, lab, run};

/// Options of `cargo xtask bench failover`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Rounds per signal.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
}

const NS: &str = "bench-failover";
const VIP: &str = "192.0.2.220";
const PROBERS: u64 = 50;
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// What happened on the wire, timestamped as seen.
enum Seen {
    Reply(SystemTime, String),
    Gratuitous(SystemTime, String),
    /// A probe (who-has the VIP from the client) on the LAN bridge, capture timestamp.
    Probe(SystemTime),
    /// An ARP reply for the VIP on the LAN bridge (from any node), capture timestamp.
    WireReply(SystemTime),
}

/// How long after a SIGTERM probes are counted: past the speaker's 1.5 s handover grace and
/// the heir's takeover, with slack.
const TERM_WINDOW: Duration = Duration::from_secs(4);

/// Runs the benchmark.
pub fn run(root: &Path, args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        run::is_root(),
        "bench failover needs root (network namespaces)"
    );
    let k = |a: &[&str]| -> anyhow::Result<String> {
        run::output(controlplane::kubectl_cmd(root).args(a))
    };
    k(&["-n", "ferrolb-system", "get", "daemonset/ferrolb-speaker"])
        .context("FerroLB is not deployed: run `cargo xtask lab deploy` first")?;
    setup(root)?;
    let (tx, rx) = mpsc::channel();
    let mut children = probe(tx.clone())?;
    children.push(capture(tx)?);
    let result = measure(root, &args, &rx);
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = k(&["delete", "namespace", NS, "--wait=false"]);
    let _ = k(&["delete", "ipaddresspool,l2advertisement", NS]);
    let rounds = result?;
    let mut report = serde_json::Map::new();
    println!(
        "signal   n   kill→gratuitous p50/max (ms)   kill→answer p50/max (ms)   max reply gap (ms)   unanswered probes"
    );
    for (signal, rs) in &rounds {
        let mut g: Vec<Duration> = rs.iter().filter_map(|r| r.gratuitous).collect();
        let mut a: Vec<Duration> = rs.iter().filter_map(|r| r.answer).collect();
        let gap = rs.iter().map(|r| r.max_gap).max().unwrap_or_default();
        let probes: usize = rs.iter().filter_map(|r| r.probes).map(|p| p.sent).sum();
        let unanswered: usize = rs
            .iter()
            .filter_map(|r| r.probes)
            .map(|p| p.unanswered)
            .sum();
        let counted = rs.iter().any(|r| r.probes.is_some());
        g.sort();
        a.sort();
        let f = |v: &[Duration], p: f64| percentile(v, p).map_or(f64::NAN, ms);
        println!(
            "{signal:7} {:3}   {:8.0} / {:8.0}              {:8.0} / {:8.0}           {:8.0}   {}",
            rs.len(),
            f(&g, 0.5),
            f(&g, 1.0),
            f(&a, 0.5),
            f(&a, 1.0),
            ms(gap),
            if counted {
                format!("{unanswered} of {probes}")
            } else {
                "-".to_owned()
            }
        );
        report.insert(
            signal.to_string(),
            json!({
                "rounds": rs.len(),
                "gratuitous_ms": {"p50": f(&g, 0.5), "max": f(&g, 1.0), "all": g.iter().map(|d| ms(*d)).collect::<Vec<_>>()},
                "answer_ms": {"p50": f(&a, 0.5), "max": f(&a, 1.0), "all": a.iter().map(|d| ms(*d)).collect::<Vec<_>>()},
                "max_reply_gap_ms": ms(gap),
                "probe_interval_ms": ms(PROBE_INTERVAL),
                "probes": if counted {
                    json!({"window_ms": ms(TERM_WINDOW), "sent": probes, "unanswered": unanswered,
                           "per_round": rs.iter().filter_map(|r| r.probes).map(|p| p.unanswered).collect::<Vec<_>>()})
                } else {
                    serde_json::Value::Null
                },
            }),
        );
    }
    let path = write_json(root, "failover", &serde_json::Value::Object(report))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

struct Round {
    gratuitous: Option<Duration>,
    answer: Option<Duration>,
    /// Longest time without any answer from the kill until the new owner answered.
    max_gap: Duration,
    /// Probes counted on the wire over [`TERM_WINDOW`] (SIGTERM rounds only).
    probes: Option<ProbeCount>,
}

/// Probes seen on the LAN bridge after the signal and how many went unanswered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ProbeCount {
    sent: usize,
    unanswered: usize,
}

/// Counts probes sent in `[from, until)` and those unanswered: a probe is answered when a
/// reply is seen on the wire before the next probe is due ([`PROBE_INTERVAL`] after it), each
/// reply answering one probe, first come first served. The 50 arpings drift against each
/// other, so two probes can leave a millisecond apart: the deadline is the schedule's, not the
/// next probe actually seen. Probes due to be answered after `until` are not counted. Times
/// are the capture's, so both sides of the comparison come from one clock.
fn count_probes(
    probes: &[SystemTime],
    replies: &[SystemTime],
    from: SystemTime,
    until: SystemTime,
) -> ProbeCount {
    let mut probes: Vec<SystemTime> = probes.to_vec();
    probes.sort();
    let mut replies: Vec<SystemTime> = replies.to_vec();
    replies.sort();
    let mut count = ProbeCount::default();
    let mut next_reply = 0;
    for sent in probes {
        let due = sent + PROBE_INTERVAL;
        // Replies before this probe answered earlier ones (or none): skip them.
        while replies.get(next_reply).is_some_and(|r| *r < sent) {
            next_reply += 1;
        }
        let answered = replies.get(next_reply).is_some_and(|r| *r < due);
        if answered {
            next_reply += 1;
        }
        if sent < from || due > until {
            continue;
        }
        count.sent += 1;
        if !answered {
            count.unanswered += 1;
        }
    }
    count
}

fn measure(
    root: &Path,
    args: &Args,
    rx: &mpsc::Receiver<Seen>,
) -> anyhow::Result<Vec<(&'static str, Vec<Round>)>> {
    let mut out = Vec::new();
    for signal in ["KILL", "TERM"] {
        let mut rounds = Vec::new();
        for i in 0..args.rounds {
            wait_all_live(root)?;
            std::thread::sleep(Duration::from_millis(500));
            while rx.try_recv().is_ok() {}
            let owner = current_owner(rx)?;
            let node = lab_node_of_mac(&owner).context("owner MAC is no lab node's")?;
            let pid = speaker_pid(&node).context("no speaker process on the owner")?;
            let killed = SystemTime::now();
            run::signal(pid, signal);
            let r = watch(rx, &owner, killed, signal == "TERM");
            eprintln!(
                "SIG{signal} #{i} {node}: gratuitous {:?} answer {:?} max gap {:?} probes {:?}",
                r.gratuitous, r.answer, r.max_gap, r.probes
            );
            rounds.push(r);
            // A fresh pod instead of the kubelet's growing restart back-off.
            let pods = run::output(
                controlplane::kubectl_cmd(root)
                    .args(["-n", "ferrolb-system", "get", "pods", "-o", "name"])
                    .args(["-l", "app.kubernetes.io/component=speaker"])
                    .args(["--field-selector", &format!("spec.nodeName={node}")]),
            )?;
            for pod in pods.lines() {
                let _ = run::output(controlplane::kubectl_cmd(root).args([
                    "-n",
                    "ferrolb-system",
                    "delete",
                    pod,
                    "--wait=false",
                ]));
            }
        }
        out.push((
            if signal == "KILL" {
                "SIGKILL"
            } else {
                "SIGTERM"
            },
            rounds,
        ));
    }
    Ok(out)
}

/// Watches one round; with `count`, for the whole [`TERM_WINDOW`] (plus capture lag) and
/// counting probes, else until the new owner has sent a gratuitous packet and answered.
fn watch(rx: &mpsc::Receiver<Seen>, old: &str, killed: SystemTime, count: bool) -> Round {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(5);
    let window_end = start + TERM_WINDOW + Duration::from_millis(500);
    let (mut gratuitous, mut answer) = (None, None);
    let mut last_reply = killed;
    let mut max_gap = Duration::ZERO;
    let (mut probes, mut wire_replies) = (Vec::new(), Vec::new());
    let done = |g: &Option<Duration>, a: &Option<Duration>| {
        g.is_some() && a.is_some() && (!count || Instant::now() >= window_end)
    };
    while Instant::now() < deadline.max(if count { window_end } else { deadline })
        && !done(&gratuitous, &answer)
    {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Seen::Probe(at)) => probes.push(at),
            Ok(Seen::WireReply(at)) => wire_replies.push(at),
            Ok(Seen::Reply(at, mac)) => {
                if answer.is_none() {
                    max_gap = max_gap.max(at.duration_since(last_reply).unwrap_or_default());
                    last_reply = at;
                }
                if mac != old && answer.is_none() {
                    answer = at.duration_since(killed).ok();
                }
            }
            Ok(Seen::Gratuitous(at, mac)) if mac != old && gratuitous.is_none() => {
                gratuitous = at.duration_since(killed).ok();
            }
            _ => {}
        }
    }
    Round {
        gratuitous,
        answer,
        max_gap,
        probes: count.then(|| count_probes(&probes, &wire_replies, killed, killed + TERM_WINDOW)),
    }
}

fn current_owner(rx: &mpsc::Receiver<Seen>) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Seen::Reply(_, mac)) = rx.recv_timeout(Duration::from_millis(200)) {
            return Ok(mac);
        }
    }
    bail!("nobody answers ARP for {VIP}")
}

fn wait_all_live(root: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let nodes = nodes(root)?;
    loop {
        let live: BTreeSet<usize> = nodes
            .iter()
            .filter(|n| speakers_live(n) == Some(nodes.len()))
            .copied()
            .collect();
        if live.len() == nodes.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("speakers not all live after 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn nodes(root: &Path) -> anyhow::Result<Vec<usize>> {
    let text = run::output(controlplane::kubectl_cmd(root).args(["get", "nodes", "-o", "name"]))?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim_start_matches("node/node-").parse().ok())
        .collect())
}

fn speakers_live(n: &usize) -> Option<usize> {
    let plan = lab::NodePlan::new(u8::try_from(*n).ok()?);
    let out = Command::new("ip")
        .args(["netns", "exec", &plan.netns, "curl", "-sf", "-m", "1"])
        .arg(format!("http://{}:7473/metrics", plan.lan4))
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("ferrolb_speakers_live "))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn lab_node_of_mac(mac: &str) -> Option<String> {
    (1..=9u8)
        .map(lab::NodePlan::new)
        .find(|p| p.lan_mac.eq_ignore_ascii_case(mac))
        .map(|p| p.name)
}

/// The speaker processes in `node`'s namespace (two while a stopped one is still leaving).
fn speaker_pids(node: &str) -> Vec<u32> {
    let Ok(out) = Command::new("ip")
        .args(["netns", "pids", &format!("ferrolb-{node}")])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "ferrolb-speaker")
                // The lab release's DaemonSet (the chart's default memberlist port), not another install's.
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--memberlist-port=7946"))
        })
        .collect()
}

/// The one speaker of `node`, once any previous one has exited.
fn speaker_pid(node: &str) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let pids = speaker_pids(node);
        if pids.len() == 1 {
            return pids.first().copied();
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn setup(root: &Path) -> anyhow::Result<()> {
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": NS},
         "spec": {"addresses": [format!("{VIP}/32")], "autoAssign": false}},
        {"apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": NS},
         "spec": {"ipAddressPools": [NS]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo", "namespace": NS},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "echo"}},
                  "template": {"metadata": {"labels": {"app": "echo"}},
                               "spec": {"containers": [{"name": "echo", "image": "ferrolb.io/lab/echo",
                                                        "ports": [{"containerPort": 3000}]}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NS,
          "annotations": {"ferrolb.io/loadBalancerIPs": VIP, "ferrolb.io/address-pool": NS}},
         "spec": {"type": "LoadBalancer", "selector": {"app": "echo"},
                  "allocateLoadBalancerNodePorts": false,
                  "ports": [{"port": 80, "targetPort": 3000}]}}
    ]});
    controlplane::kubectl_apply(root, &objects.to_string())
}

fn epoch_now() -> SystemTime {
    SystemTime::now()
}

fn probe(tx: mpsc::Sender<Seen>) -> anyhow::Result<Vec<Child>> {
    let mut children = Vec::new();
    for _ in 0..PROBERS {
        let mut child = Command::new("ip")
            .args(["netns", "exec", lab::CLIENT_NS, "stdbuf", "-oL"])
            .args(["arping", "-b", "-I", "eth0", VIP])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("arping stdout")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Some(mac) = line
                    .contains("reply from")
                    .then(|| line.split('[').nth(1)?.split(']').next())
                    .flatten()
                else {
                    continue;
                };
                if tx
                    .send(Seen::Reply(epoch_now(), mac.to_lowercase()))
                    .is_err()
                {
                    return;
                }
            }
        });
        children.push(child);
        std::thread::sleep(PROBE_INTERVAL);
    }
    Ok(children)
}

/// tcpdump on the LAN bridge: gratuitous ARP (sender IP = target IP = the VIP), the client's
/// probes and every reply for the VIP, with the capture's own timestamps.
fn capture(tx: mpsc::Sender<Seen>) -> anyhow::Result<Child> {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            lab::LAN_NS,
            "tcpdump",
            "-i",
            "br0",
            "-l",
            "-nn",
            "-e",
            "-tt",
        ])
        .args(["arp", "and", "host", VIP])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("tcpdump stdout")?;
    let gratuitous = format!("who-has {VIP} tell {VIP}");
    // iputils arping -b puts ff:ff:ff:ff:ff:ff in the target hardware address, which tcpdump
    // prints: "who-has <VIP> (ff:ff:ff:ff:ff:ff) tell <client>".
    let request = format!("who-has {VIP} ");
    let reply = format!("Reply {VIP} is-at ");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut words = line.split_whitespace();
            let (Some(ts), Some(mac)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(secs) = ts.parse::<f64>() else {
                continue;
            };
            let at = UNIX_EPOCH + Duration::from_secs_f64(secs);
            let mac = mac.to_lowercase();
            let seen = if line.contains(&gratuitous) {
                Seen::Gratuitous(at, mac)
            } else if line.contains(&request) {
                Seen::Probe(at)
            } else if line.contains(&reply) && !line.contains("> ff:ff:ff:ff:ff:ff") {
                // An answer to a probe (unicast to the client), not a gratuitous reply.
                Seen::WireReply(at)
            } else {
                continue;
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn a_probe_is_answered_by_one_reply_before_it_is_due() {
        let probes = [t(0), t(20), t(40), t(41), t(60), t(80), t(1000)];
        // 0 answered at 1; 20 not (nothing in [20, 40)); 40 and 41 each by one of 45 and 50;
        // 60 by 61 (62 is spare); 80 only at 100, its deadline: unanswered; 1000 outside.
        let replies = [t(1), t(45), t(50), t(61), t(62), t(100)];
        assert_eq!(
            count_probes(&probes, &replies, t(0), t(200)),
            ProbeCount {
                sent: 6,
                unanswered: 2
            }
        );
        // Two probes close together, one reply: one of them is unanswered.
        assert_eq!(
            count_probes(&[t(40), t(41)], &[t(45)], t(0), t(200)),
            ProbeCount {
                sent: 2,
                unanswered: 1
            }
        );
        // The window: probes at 20, 40, 41 and 60 (80 is due at 100, outside).
        assert_eq!(
            count_probes(&probes, &replies, t(10), t(90)),
            ProbeCount {
                sent: 4,
                unanswered: 1
            }
        );
        assert_eq!(
            count_probes(&probes, &[], t(0), t(200)),
            ProbeCount {
                sent: 6,
                unanswered: 6
            }
        );
    }
}
