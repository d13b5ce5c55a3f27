//! The layer-2 speaker in the lab, on real packets: who answers ARP and NDP for a Service IP,
//! gratuitous packets at takeover, node selectors and the exclude label, deletion, and failover
//! when the owner's speaker is killed.
//!
//! The tests run against FerroLB as `cargo xtask lab deploy` installs it (the chart's release
//! `ferrolb`, with only the chart's RBAC; installed or upgraded by
//! `ferrolb_tests::ensure_ferrolb_installed` when missing or older than the build), and use their own
//! addresses (192.0.2.176/28, 192.0.2.192/27, 2001:db8:0:1::b0/124, 2001:db8:0:1::c0/124),
//! pools (autoAssign off, IPs pinned by annotation), L2Advertisements and namespaces, so they run
//! beside the other tests.
//!
//! Timing is not asserted here beyond functional bounds with slack (a loaded CI machine must not
//! flake): convergence is polled for up to 30 s, and failover must happen within 5 s. The
//! precise figures are `cargo xtask bench failover`'s job; the tests print what they measured.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferrolb_tests::{kubectl, workspace_root};
use serde_json::{Value, json};

mod lab_support;
use lab_support::{CLIENT_NS, Env, WAIT, node_mac, ready_pods, speaker_pid};

const LAN_NS: &str = "ferrolb-lan";
const EXCLUDE: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

impl Env {
    /// The test's namespace, pool and advertisement, and a one-replica echo Deployment.
    fn start(test: &str, addresses: &[&str]) -> Env {
        let env = Env::new(&format!("l2-{test}"), addresses);
        env.deploy(
            "echo",
            "ferrolb.io/lab/echo",
            1,
            json!({"ports": [{"containerPort": 3000}]}),
            json!({}),
        );
        env
    }

    fn advertise(&self, node_selectors: Value) {
        self.advertise_spec(json!({"nodeSelectors": node_selectors}));
    }

    fn service(&self, name: &str, ips: &[&str]) {
        self.service_with_policy(name, ips, "Cluster");
    }

    /// A LoadBalancer Service for the echo backend with `externalTrafficPolicy: policy`.
    fn service_with_policy(&self, name: &str, ips: &[&str], policy: &str) {
        self.lb_service(
            name,
            ips,
            json!({
                "externalTrafficPolicy": policy,
                "selector": {"app": "echo"},
                "ports": [{"port": 80, "targetPort": 3000}]
            }),
        );
    }

    /// Waits until exactly `node` reports announcing `ip` for `svc` (none when `None`).
    fn wait_reporters(&self, svc: &str, ip: &str, node: Option<&str>) {
        let want: Vec<String> = node.iter().map(|n| n.to_string()).collect();
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.reporters(svc, ip);
            if got.as_ref() == Some(&want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ServiceAnnouncements for {svc} {ip}: {got:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The node of the echo Deployment's only ready pod, once there is exactly one (a rollout
    /// in progress has two, or none ready), and it runs on `want` when given.
    fn echo_node(&self, want: Option<&str>) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let nodes: Option<Vec<String>> = Some(
                ready_pods(&self.ns, "echo")
                    .iter()
                    .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_owned))
                    .collect(),
            );
            // Exactly one pod, ready, and nothing else left over (terminating pods count).
            let all = kubectl(&[
                "-n", &self.ns, "get", "pods", "-l", "app=echo", "-o", "name",
            ])
            .map(|t| t.lines().count())
            .unwrap_or(0);
            if let Some(n) = nodes
                .as_ref()
                .filter(|n| n.len() == 1 && all == 1 && want.is_none_or(|w| n[0] == w))
            {
                return n[0].clone();
            }
            assert!(
                Instant::now() < deadline,
                "no single ready echo pod (on {want:?}) in {}: {nodes:?} ({all} pods)",
                self.ns
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The lab's schedulable nodes without the exclude label.
fn usable_nodes() -> Vec<String> {
    let text = kubectl(&["get", "nodes", "-o", "json"]).expect("nodes");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["spec"]["unschedulable"] != true)
        .filter(|n| n["metadata"]["labels"][EXCLUDE].is_null())
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// Lines of the lab speakers' container logs that contain every one of `needles`.
fn speaker_log_lines(needles: &[&str]) -> Option<Vec<String>> {
    let nodes = workspace_root().join("target/lab/nodes");
    let mut files = Vec::new();
    let mut stack = vec![nodes];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains("speaker") {
                files.push(p);
            }
        }
    }
    if files.is_empty() {
        return None;
    }
    Some(
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>())
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .collect(),
    )
}

/// MACs that answered `count` ARP requests for `ip` from the client.
fn arping(ip: &str, count: u32) -> Vec<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            CLIENT_NS,
            "arping",
            "-b",
            "-c",
            &count.to_string(),
        ])
        .args(["-w", &(count + 1).to_string(), "-I", "eth0", ip])
        .output()
        .expect("arping");
    reply_macs(&String::from_utf8_lossy(&out.stdout))
}

fn reply_macs(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| Some(l.split('[').nth(1)?.split(']').next()?.to_lowercase()))
        .collect()
}

/// MACs that answered neighbour solicitations for `ip` from the client.
fn ndisc(ip: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", CLIENT_NS, "ndisc6", "-m", "-n", "-r", "2", "-w", "500", ip, "eth0",
        ])
        .output()
        .expect("ndisc6");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("Target link-layer address"))
        .filter_map(|l| l.split_whitespace().last().map(str::to_lowercase))
        .collect()
}

/// Waits until ARP for `ip` is answered by exactly `mac` (or by nobody when `None`).
fn wait_arp(ip: &str, mac: Option<&str>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let macs: BTreeSet<String> = arping(ip, 2).into_iter().collect();
        let want: BTreeSet<String> = mac.iter().map(|m| m.to_string()).collect();
        if macs == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ARP for {ip}: got {macs:?}, want {want:?}"
        );
    }
}

/// Probe processes and their spacing: iputils arping takes whole seconds as its interval, so
/// a probe every 20 ms is 50 arpings started 20 ms apart, each broadcasting once a second.
const PROBERS: u32 = 50;

/// A reply as the probe saw it: which arping process, when it was read, from which MAC, and
/// whether it was unicast (an answer to that process's request) or broadcast (a gratuitous
/// ARP reply, which every process prints).
type Reply = (usize, Instant, String, bool);

/// A continuous broadcast ARP probe from the client; yields every reply.
fn probe(ip: &str) -> (Vec<std::process::Child>, mpsc::Receiver<Reply>) {
    let (tx, rx) = mpsc::channel();
    let mut children = Vec::new();
    for prober in 0..PROBERS as usize {
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", CLIENT_NS, "stdbuf", "-oL", "arping", "-b", "-I", "eth0", ip,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("arping");
        let stdout = child.stdout.take().unwrap();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let unicast = line.starts_with("Unicast");
                if let Some(mac) = reply_macs(&line).pop()
                    && tx.send((prober, Instant::now(), mac, unicast)).is_err()
                {
                    return;
                }
            }
        });
        children.push(child);
        std::thread::sleep(Duration::from_millis(1000 / u64::from(PROBERS)));
    }
    (children, rx)
}

/// Tests that kill speakers run alone; the others share.
static EXCLUSIVE: std::sync::RwLock<()> = std::sync::RwLock::new(());

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn one_owner_answers_arp_and_ndp_and_deletion_silences_it() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    let (v4, v6) = ("192.0.2.193", "2001:db8:0:1::c1");
    let env = Env::start(
        "owner",
        &["192.0.2.193-192.0.2.194", "2001:db8:0:1::c1/128"],
    );
    env.service("web", &[v4, v6]);
    let owner4 = env.announcer("web", v4, None);
    let mac4 = node_mac(&owner4);
    wait_arp(v4, Some(&mac4));
    // Once the IP has settled (a speaker another test killed may be taking it back home,
    // unanswered for a moment, printed when seen); the steady state must be one owner.
    let mut macs = arping(v4, 3);
    for _ in 0..15 {
        if macs.len() == 3 && macs.iter().all(|m| *m == mac4) {
            break;
        }
        eprintln!("not yet one owner for {v4}: {macs:?} (owner {owner4} has {mac4})");
        std::thread::sleep(Duration::from_secs(1));
        macs = arping(v4, 3);
    }
    assert_eq!(
        macs.len(),
        3,
        "one reply per request, from one node: {macs:?}"
    );
    assert!(
        macs.iter().all(|m| *m == mac4),
        "{macs:?} (owner {owner4} has {mac4})"
    );

    // A report deleted behind the speaker's back (by a user, or by a speaker that was cut off
    // and believed it owned the IP) is written again.
    let report = format!("web-{owner4}");
    kubectl(&["-n", &env.ns, "delete", "serviceannouncement", &report]).expect("deleting a report");
    let deadline = Instant::now() + WAIT;
    while kubectl(&["-n", &env.ns, "get", "serviceannouncement", &report]).is_err() {
        assert!(
            Instant::now() < deadline,
            "ServiceAnnouncement {report} not rewritten within {WAIT:?} of its deletion"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let owner6 = env.announcer("web", v6, None);
    let mac6 = node_mac(&owner6);
    let deadline = Instant::now() + WAIT;
    loop {
        let macs = ndisc(v6);
        if !macs.is_empty() && macs.iter().all(|m| *m == mac6) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "NDP for {v6}: {macs:?}, want {mac6}"
        );
    }

    kubectl(&["-n", &env.ns, "delete", "service", "web"]).unwrap();
    wait_arp(v4, None);
    assert!(
        ndisc(v6).is_empty(),
        "NDP still answered after the Service was deleted"
    );
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn selectors_and_exclude_label_move_the_owner_with_gratuitous_arp() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    let vip = "192.0.2.200";
    let env = Env::start("select", &["192.0.2.200/32"]);
    env.service("web", &[vip]);
    let first = env.announcer("web", vip, None);
    wait_arp(vip, Some(&node_mac(&first)));

    // Only another node may announce: it takes over, with gratuitous ARP on the LAN.
    let target = if first == "node-2" {
        "node-3"
    } else {
        "node-2"
    };
    let n = target.trim_start_matches("node-");
    let pcap = std::env::temp_dir().join(format!("{}.pcap", env.ns));
    let mut capture = Command::new("ip")
        .args([
            "netns", "exec", LAN_NS, "tcpdump", "-i", "br0", "-n", "-U", "-w",
        ])
        .arg(&pcap)
        .args(["arp", "and", "host", vip])
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump");
    std::thread::sleep(Duration::from_millis(500));
    env.advertise(json!([{"matchLabels": {"ferrolb.io/lab-node": n}}]));
    assert_eq!(env.announcer("web", vip, Some(&first)), target);
    wait_arp(vip, Some(&node_mac(target)));
    std::thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("kill").arg(capture.id().to_string()).status();
    let _ = capture.wait();
    let text = Command::new("tcpdump")
        .args(["-r"])
        .arg(&pcap)
        .args(["-n", "-e"])
        .output()
        .expect("tcpdump -r");
    let text = String::from_utf8_lossy(&text.stdout);
    let _ = std::fs::remove_file(&pcap);
    let gratuitous: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with_ignore_time(&node_mac(target)))
        .filter(|l| {
            l.contains(&format!("who-has {vip} tell {vip}"))
                || l.contains(&format!("Reply {vip} is-at"))
        })
        .collect();
    assert!(
        gratuitous.iter().any(|l| l.contains("who-has"))
            && gratuitous.iter().any(|l| l.contains("Reply")),
        "no gratuitous request and reply from {target} in the capture:\n{text}"
    );

    // The exclude label takes the only selected node out: nobody answers.
    kubectl(&[
        "label",
        "node",
        target,
        &format!("{EXCLUDE}=true"),
        "--overwrite",
    ])
    .unwrap();
    let result = std::panic::catch_unwind(|| wait_arp(vip, None));
    kubectl(&["label", "node", target, &format!("{EXCLUDE}-")]).unwrap();
    result.unwrap();
    wait_arp(vip, Some(&node_mac(target)));
}

trait StartsWithIgnoreTime {
    fn starts_with_ignore_time(&self, mac: &str) -> bool;
}

impl StartsWithIgnoreTime for &str {
    /// `tcpdump -e` lines are `<time> <src mac> > <dst mac>, ...`.
    fn starts_with_ignore_time(&self, mac: &str) -> bool {
        self.split_whitespace()
            .nth(1)
            .is_some_and(|m| m.eq_ignore_ascii_case(mac))
    }
}

/// Two replies to one request from different MACs arrive together (both nodes answer the
/// same broadcast request at once); consecutive requests are ~20 ms apart (50 probers a
/// second), so a clean handover shows its last old and first new reply that far apart.
const SAME_REQUEST: Duration = Duration::from_millis(3);

/// Replies to one request that came from two MACs: (first MAC, second MAC, gap). Every arping
/// process on the client's interface prints every reply for the VIP (they share the MAC), so
/// one process's stream is the whole wire's; gratuitous broadcasts answer no request.
fn double_answers(replies: &[Reply]) -> Vec<(String, String, Duration)> {
    let answers: Vec<&Reply> = replies.iter().filter(|r| r.0 == 0 && r.3).collect();
    answers
        .windows(2)
        .filter_map(|pair| {
            let gap = pair[1].1.duration_since(pair[0].1);
            (pair[0].2 != pair[1].2 && gap < SAME_REQUEST)
                .then(|| (pair[0].2.clone(), pair[1].2.clone(), gap))
        })
        .collect()
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn killing_the_owner_moves_the_ip_and_its_restart_never_answers_beside_the_heir() {
    let _alone = EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner());
    let vip = "192.0.2.205";
    let env = Env::start("kill", &["192.0.2.205/32"]);
    env.service("web", &[vip]);
    let owner = env.announcer("web", vip, None);
    let old_mac = node_mac(&owner);
    wait_arp(vip, Some(&old_mac));
    let pid = speaker_pid(&owner).expect("the owner's speaker process");
    let (mut children, replies) = probe(vip);
    std::thread::sleep(Duration::from_millis(300));
    while replies.try_recv().is_ok() {}
    let killed = Instant::now();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let mut seen: Vec<Reply> = Vec::new();
    // A functional bound with slack for a loaded machine: the issue's "under a second" (median
    // under 500 ms) is measured by `cargo xtask bench failover`, not asserted here.
    let bound = Duration::from_secs(5);
    let (moved, heir_mac) = loop {
        let left =
            (killed + bound + Duration::from_secs(1)).saturating_duration_since(Instant::now());
        match replies.recv_timeout(left) {
            Ok(r) => {
                seen.push(r.clone());
                if r.2 != old_mac {
                    break (r.1.duration_since(killed), r.2);
                }
            }
            Err(_) => break (Duration::MAX, String::new()),
        }
    };
    assert!(
        moved < bound,
        "no other node answered within {bound:?} of the SIGKILL (got {moved:?})"
    );
    let heir = (1..=9)
        .map(|n| format!("node-{n}"))
        .find(|n| node_mac(n) == heir_mac)
        .expect("the answer came from a lab node");
    eprintln!("SIGKILL of {owner}'s speaker: {heir} answered after {moved:?}");

    // The kubelet restarts the killed speaker; with the same inputs the IP goes home. Keep
    // probing through the restart and for a while after the first answer from home.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut home: Option<Instant> = None;
    while home.is_none_or(|h| h.elapsed() < Duration::from_secs(3)) && Instant::now() < deadline {
        if let Ok(r) = replies.recv_timeout(Duration::from_millis(200)) {
            if r.2 == old_mac && home.is_none() {
                home = Some(r.1);
            }
            seen.push(r);
        }
    }
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let restarted = speaker_pid(&owner);
    assert!(
        restarted.is_some_and(|p| p != pid),
        "the kubelet did not restart {owner}'s speaker within 60 s"
    );
    let home = home
        .unwrap_or_else(|| panic!("{vip} never went home to {owner} after its speaker restarted"));
    eprintln!(
        "{owner}'s speaker restarted; {vip} answered from home {:?} after the kill; {} replies checked",
        home.duration_since(killed),
        seen.len()
    );
    let doubles = double_answers(&seen);
    assert!(
        doubles.is_empty(),
        "one ARP request was answered by two MACs (first, second, gap): {doubles:?}"
    );
}

#[test]
fn double_answers_are_two_macs_within_one_request() {
    let t = Instant::now();
    let ms = Duration::from_millis;
    let us = Duration::from_micros;
    let r = |at: Duration, mac: &str| (0, t + at, mac.to_string(), true);
    let replies = vec![
        r(ms(0), "a"),
        r(ms(20), "b"), // the next request answered by the new owner: a clean handover
        r(ms(40), "b"),
        r(ms(40) + us(400), "a"), // the same request answered twice
        r(ms(60), "a"),
        r(ms(60) + us(100), "a"), // the same MAC twice is a duplicate, not a second owner
        // Another prober's copy, and gratuitous broadcasts: not counted.
        (1, t + ms(80), "b".to_string(), true),
        (0, t + ms(80) + us(200), "b".to_string(), false),
    ];
    let doubles = double_answers(&replies);
    assert_eq!(doubles.len(), 1, "{doubles:?}");
    assert_eq!((doubles[0].0.as_str(), doubles[0].1.as_str()), ("b", "a"));
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn local_policy_owner_follows_the_endpoint() {
    // Labels and moves pods between nodes: alone, so the exclude-label test cannot take the
    // target node out under us.
    let _alone = EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner());
    let (v4, v6) = ("192.0.2.177", "2001:db8:0:1::b1");
    let env = Env::start("local", &["192.0.2.176/30", "2001:db8:0:1::b0/125"]);
    env.service_with_policy("web", &[v4, v6], "Local");
    let first = env.echo_node(None);
    env.wait_reporters("web", v4, Some(&first));
    env.wait_reporters("web", v6, Some(&first));
    wait_arp(v4, Some(&node_mac(&first)));
    let macs = arping(v4, 3);
    assert!(
        !macs.is_empty() && macs.iter().all(|m| *m == node_mac(&first)),
        "Local: only the endpoint's node {first} answers: {macs:?}"
    );

    // Move the only endpoint to another node: the owner follows it.
    let target = usable_nodes()
        .into_iter()
        .find(|n| *n != first)
        .expect("a second usable node");
    env.patch_pod_spec(
        "echo",
        json!({"nodeSelector": {"kubernetes.io/hostname": target}}),
    );
    let moved = Instant::now();
    env.echo_node(Some(&target));
    env.wait_reporters("web", v4, Some(&target));
    env.wait_reporters("web", v6, Some(&target));
    wait_arp(v4, Some(&node_mac(&target)));
    let deadline = Instant::now() + WAIT;
    loop {
        let macs = ndisc(v6);
        if !macs.is_empty() && macs.iter().all(|m| *m == node_mac(&target)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "NDP for {v6}: {macs:?}, want {target}'s MAC"
        );
    }
    eprintln!(
        "Local: owner followed the endpoint {first} -> {target} ({:?} after the patch, rollout included)",
        moved.elapsed()
    );
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn advertisement_interfaces_decide_where_we_answer() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    let vip = "192.0.2.181";
    let env = Env::start("ifaces", &["192.0.2.180/30"]);
    env.advertise_spec(json!({"interfaces": ["eth0"]}));
    env.service("web", &[vip]);
    let owner = env.announcer("web", vip, None);
    wait_arp(vip, Some(&node_mac(&owner)));
    let report = kubectl(&["-n", &env.ns, "get", "serviceannouncements", "-o", "json"]).unwrap();
    let report: Value = serde_json::from_str(&report).unwrap();
    assert!(
        report["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["spec"]["node"] == owner.as_str() && i["spec"]["interface"] == "eth0"),
        "the report names eth0: {report}"
    );

    // No node has the interface: nobody answers, nobody reports, and the speakers say why.
    let before: BTreeSet<String> = speaker_log_lines(&[vip, "NoListedInterface"])
        .unwrap_or_default()
        .into_iter()
        .collect();
    env.advertise_spec(json!({"interfaces": ["nonexistent0"]}));
    env.wait_reporters("web", vip, None);
    wait_arp(vip, None);
    assert!(arping(vip, 3).is_empty(), "answered without the interface");
    let deadline = Instant::now() + WAIT;
    loop {
        match speaker_log_lines(&[vip, "NoListedInterface"]) {
            None => {
                eprintln!("no speaker logs under target/lab/nodes: the reason is not checked");
                break;
            }
            Some(lines) if lines.iter().any(|l| !before.contains(l)) => break,
            Some(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "no speaker logged why {vip} is not announced (NoListedInterface)"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Back to eth0: answered again.
    env.advertise_spec(json!({"interfaces": ["eth0"]}));
    let owner = env.announcer("web", vip, None);
    wait_arp(vip, Some(&node_mac(&owner)));
}
