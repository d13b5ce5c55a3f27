//! The nftables forwarder against the real kernel, inside network namespaces this test creates
//! (`ferrolb-fwdtest-*`, removed on drop). Topology:
//!
//! ```text
//! cl1 192.0.2.2/28, 2001:db8:1::2 ─┐                 ┌─ b1 198.18.1.2, 2001:db8:b1::2
//!                                  ├── fw (forwarder) ┤
//! cl2 192.0.2.18/28 ───────────────┘                 └─ b2 198.18.2.2, 2001:db8:b2::2
//! ```
//! VIPs (192.0.2.200, 2001:db8:ff::10) live on no interface: clients reach them through `fw`.

mod netns;

use ferrolb_core::forward::{
    Endpoint, EndpointConditions, ForwardService, ForwardingPlan, Frontend, Protocol, ServiceKey,
    ServicePort, SessionAffinity, TrafficPolicy, plan,
};
use ferrolb_forward::{
    ApplyKind, ApplyRoute, ForwardError, FrontendCounts, NfSocket, NftForwarder,
};
use netns::{in_ns, sh};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const VIP4: &str = "192.0.2.200";
const VIP6: &str = "2001:db8:ff::10";
const NODE: &str = "node-fw";

/// A veth from the forwarder: peer namespace, forwarder-side name, addresses, IPv6 addresses.
type Link<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Option<(&'a str, &'a str)>,
);

/// The namespaces of one test; deleted when dropped, also when the test fails.
struct Lab {
    fw: String,
    cl1: String,
    cl2: String,
    b1: String,
    b2: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.fw, &self.cl1, &self.cl2, &self.b1, &self.b2] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    fn new() -> Lab {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let name = |role: &str| format!("ferrolb-fwdtest-{id}-{role}");
        let lab = Lab {
            fw: name("fw"),
            cl1: name("cl1"),
            cl2: name("cl2"),
            b1: name("b1"),
            b2: name("b2"),
        };
        for ns in [&lab.fw, &lab.cl1, &lab.cl2, &lab.b1, &lab.b2] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip",
            "netns",
            "exec",
            &lab.fw,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &lab.fw,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        let links: [Link; 4] = [
            (
                &lab.cl1,
                "c1",
                "192.0.2.1/28",
                "192.0.2.2/28",
                Some(("2001:db8:1::1/64", "2001:db8:1::2/64")),
            ),
            (&lab.cl2, "c2", "192.0.2.17/28", "192.0.2.18/28", None),
            (
                &lab.b1,
                "b1",
                "198.18.1.1/24",
                "198.18.1.2/24",
                Some(("2001:db8:b1::1/64", "2001:db8:b1::2/64")),
            ),
            (
                &lab.b2,
                "b2",
                "198.18.2.1/24",
                "198.18.2.2/24",
                Some(("2001:db8:b2::1/64", "2001:db8:b2::2/64")),
            ),
        ];
        for (peer, dev, fw_addr, peer_addr, v6) in links {
            sh(&[
                "ip", "-n", &lab.fw, "link", "add", dev, "type", "veth", "peer", "name", "eth0",
                "netns", peer,
            ]);
            sh(&["ip", "-n", &lab.fw, "addr", "add", fw_addr, "dev", dev]);
            sh(&["ip", "-n", peer, "addr", "add", peer_addr, "dev", "eth0"]);
            sh(&["ip", "-n", &lab.fw, "link", "set", dev, "up"]);
            sh(&["ip", "-n", peer, "link", "set", "eth0", "up"]);
            let gw4 = fw_addr.split('/').next().unwrap();
            sh(&["ip", "-n", peer, "route", "add", "default", "via", gw4]);
            if let Some((fw6, peer6)) = v6 {
                sh(&["ip", "-n", &lab.fw, "addr", "add", fw6, "dev", dev, "nodad"]);
                sh(&[
                    "ip", "-n", peer, "addr", "add", peer6, "dev", "eth0", "nodad",
                ]);
                sh(&[
                    "ip",
                    "-n",
                    peer,
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    fw6.split('/').next().unwrap(),
                ]);
            }
        }
        echo_server(&lab.b1, "b1");
        echo_server(&lab.b2, "b2");
        lab
    }

    /// [`Self::forwarder`] with a netlink socket of the node's namespace: full applies and
    /// element-only updates go over it, the rest through `nft`.
    fn netlink_forwarder(&self) -> NftForwarder {
        let socket =
            in_ns(&self.fw, NfSocket::open).expect("a netlink socket in the node namespace");
        self.forwarder().with_netlink(socket)
    }

    fn forwarder(&self) -> NftForwarder {
        let argv = ["ip", "netns", "exec", &self.fw, "nft"]
            .map(String::from)
            .to_vec();
        let conntrack = ["ip", "netns", "exec", &self.fw, "conntrack"]
            .map(String::from)
            .to_vec();
        NftForwarder::new("ferrolb")
            .with_command(argv)
            .with_conntrack_command(conntrack)
    }
}

/// TCP and UDP echo on port 8080 that answer `<tag> <peer address>`.
fn echo_server(ns: &str, tag: &'static str) {
    let (tcp, udp) = in_ns(ns, || {
        (
            TcpListener::bind("[::]:8080").expect("tcp bind"),
            UdpSocket::bind("[::]:8080").expect("udp bind"),
        )
    });
    std::thread::spawn(move || {
        for mut conn in tcp.incoming().flatten() {
            let peer = conn
                .peer_addr()
                .map(|p| p.ip().to_canonical().to_string())
                .unwrap_or_default();
            let _ = conn.write_all(format!("{tag} {peer}").as_bytes());
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, peer)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(
                format!("{tag} {}", peer.ip().to_canonical()).as_bytes(),
                peer,
            );
        }
    });
}

/// One TCP request from `ns` to `to`: the echo's answer, or the error kind and how long it took.
fn tcp_get(ns: &str, to: SocketAddr) -> Result<String, (ErrorKind, Duration)> {
    in_ns(ns, move || {
        let start = Instant::now();
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))
            .map_err(|e| (e.kind(), start.elapsed()))?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out)
            .map_err(|e| (e.kind(), start.elapsed()))?;
        Ok(out)
    })
}

fn udp_get(ns: &str, to: SocketAddr) -> Result<String, ErrorKind> {
    in_ns(ns, move || {
        let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let s = UdpSocket::bind(bind).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.connect(to).unwrap();
        s.send(b"ping").map_err(|e| e.kind())?;
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf).map_err(|e| e.kind())?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

fn endpoint(ip: &str) -> Endpoint {
    Endpoint {
        ip: ip.parse().unwrap(),
        ports: [("echo".to_string(), 8080)].into(),
        conditions: EndpointConditions {
            ready: true,
            serving: true,
            terminating: false,
        },
        node: Some(NODE.into()),
    }
}

fn service(name: &str, vips: &[&str], port: u16, endpoints: &[&str]) -> ForwardService {
    ForwardService {
        key: ServiceKey::new("default", name),
        vips: vips.iter().map(|v| v.parse().unwrap()).collect(),
        ports: vec![
            ServicePort {
                name: "echo".into(),
                protocol: Protocol::Tcp,
                port,
            },
            ServicePort {
                name: "echo".into(),
                protocol: Protocol::Udp,
                port,
            },
        ],
        external_traffic_policy: TrafficPolicy::Cluster,
        session_affinity: SessionAffinity::None,
        source_ranges: vec![],
        endpoints: endpoints.iter().map(|e| endpoint(e)).collect(),
    }
}

/// `web` on both VIPs, port 80, with both backends in both families.
fn dual_stack_web() -> ForwardService {
    service(
        "web",
        &[VIP4, VIP6],
        80,
        &[
            "198.18.1.2",
            "198.18.2.2",
            "2001:db8:b1::2",
            "2001:db8:b2::2",
        ],
    )
}

fn plan_of(services: &[ForwardService]) -> ForwardingPlan {
    plan(services, NODE).plan
}

fn vip(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// Answers per backend tag, and the peer addresses the backends saw.
fn tally(
    answers: impl IntoIterator<Item = String>,
) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let (mut tags, mut peers) = (BTreeMap::new(), BTreeMap::new());
    for a in answers {
        let (tag, peer) = a.split_once(' ').expect("echo answer");
        *tags.entry(tag.to_string()).or_default() += 1;
        *peers.entry(peer.to_string()).or_default() += 1;
    }
    (tags, peers)
}

/// How many of `n` TCP requests from `ns` to `to` each backend answered.
fn tcp_tags(ns: &str, to: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    tally((0..n).map(|_| tcp_get(ns, to).unwrap())).0
}

/// How many of `n` UDP requests from `ns` to `to` each backend answered.
fn udp_tags(ns: &str, to: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    tally((0..n).map(|_| udp_get(ns, to).unwrap())).0
}

/// Gives backend namespace `ns` one more address (a new endpoint on the same server).
fn add_address(ns: &str, cidr: &str) {
    sh(&["ip", "-n", ns, "addr", "add", cidr, "dev", "eth0"]);
}

/// Per Service, its frontends' counts added up.
fn service_counts(fwd: &NftForwarder) -> BTreeMap<ServiceKey, FrontendCounts> {
    let reading = fwd.counters().unwrap();
    let sum = |fes: &BTreeMap<_, FrontendCounts>| {
        fes.values()
            .fold(FrontendCounts::default(), |a, c| FrontendCounts {
                connections: a.connections + c.connections,
                bytes: a.bytes + c.bytes,
            })
    };
    reading
        .iter()
        .map(|(k, fes)| (k.clone(), sum(fes)))
        .collect()
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test as root"]
fn tcp_reaches_every_backend_and_cluster_policy_masquerades() {
    let lab = Lab::new();
    let mut fwd = lab.forwarder();
    let report = fwd
        .apply(&plan_of(&[service(
            "web",
            &[VIP4],
            80,
            &["198.18.1.2", "198.18.2.2"],
        )]))
        .unwrap();
    assert_eq!(report.kind, ApplyKind::Full);
    let answers: Vec<String> = (0..40)
        .map(|_| tcp_get(&lab.cl1, vip(VIP4, 80)).expect("tcp via VIP"))
        .collect();
    let (tags, peers) = tally(answers);
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["b1", "b2"], "{tags:?}");
    // Every connection is counted once, for its Service (the metrics read this), and every
    // byte both ways: at least SYN, SYN-ACK, ACK, request, reply (IP headers included).
    let web = ServiceKey::new("default", "web");
    let counts = service_counts(&fwd);
    assert_eq!(counts.keys().collect::<Vec<_>>(), [&web]);
    assert_eq!(counts[&web].connections, 40);
    assert!(counts[&web].bytes >= 40 * 5 * 40, "{counts:?}");
    // The counts survive an endpoint change (the counters are kept, only elements rewritten).
    fwd.apply(&plan_of(&[service("web", &[VIP4], 80, &["198.18.1.2"])]))
        .unwrap();
    tcp_get(&lab.cl1, vip(VIP4, 80)).expect("tcp via VIP");
    let after = service_counts(&fwd)[&web];
    assert_eq!(after.connections, 41);
    assert!(after.bytes > counts[&web].bytes, "{after:?}");
    // Cluster policy: backends see the forwarder's own address on their link, never the client.
    assert!(
        peers.keys().all(|p| p == "198.18.1.1" || p == "198.18.2.1"),
        "{peers:?}"
    );
    // The VIP is no local address of the forwarder, so its kernel never answers ARP for it.
    assert!(!sh(&["ip", "-n", &lab.fw, "-o", "addr"]).contains(VIP4));
    assert!(!sh(&["ip", "-n", &lab.fw, "route", "show", "table", "local"]).contains(VIP4));
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test as root"]
fn kernel_does_not_answer_arp_for_the_vip_yet_dnat_works_on_link() {
    let lab = Lab::new();
    let mut fwd = lab.forwarder();
    fwd.apply(&plan_of(&[service(
        "web",
        &["192.0.2.10"],
        80,
        &["198.18.1.2"],
    )]))
    .unwrap();
    // The client sees the VIP on its own link, as with a layer-2 announcement.
    sh(&[
        "ip",
        "-n",
        &lab.cl1,
        "route",
        "add",
        "192.0.2.10/32",
        "dev",
        "eth0",
    ]);
    let err = tcp_get(&lab.cl1, vip("192.0.2.10", 80)).expect_err("nobody answers ARP for the VIP");
    assert!(
        matches!(err.0, ErrorKind::TimedOut | ErrorKind::HostUnreachable),
        "{err:?}"
    );
    assert!(!sh(&["ip", "-n", &lab.cl1, "neigh", "show", "192.0.2.10"]).contains("lladdr"));
    // What the speaker's ARP reply achieves: the client learns the forwarder's MAC.
    let mac = sh(&["ip", "-n", &lab.fw, "-o", "link", "show", "c1"]);
    let mac = mac
        .split("link/ether ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    sh(&[
        "ip",
        "-n",
        &lab.cl1,
        "neigh",
        "replace",
        "192.0.2.10",
        "lladdr",
        &mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    assert!(
        tcp_get(&lab.cl1, vip("192.0.2.10", 80))
            .expect("tcp via VIP")
            .starts_with("b1 ")
    );
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test as root"]
fn local_policy_preserves_client_address() {
    let lab = Lab::new();
    let mut svc = service("web", &[VIP4], 80, &["198.18.1.2", "198.18.2.2"]);
    svc.external_traffic_policy = TrafficPolicy::Local;
    svc.endpoints[1].node = Some("elsewhere".into());
    lab.forwarder().apply(&plan_of(&[svc])).unwrap();
    for _ in 0..10 {
        assert_eq!(tcp_get(&lab.cl1, vip(VIP4, 80)).unwrap(), "b1 192.0.2.2");
    }
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test as root"]
fn no_endpoints_is_refused_not_timed_out() {
    let lab = Lab::new();
    lab.forwarder()
        .apply(&plan_of(&[service("web", &[VIP4, VIP6], 80, &[])]))
        .unwrap();
    for to in [vip(VIP4, 80), vip(VIP6, 80)] {
        let (kind, took) = tcp_get(&lab.cl1, to).expect_err("no endpoints");
        assert_eq!(kind, ErrorKind::ConnectionRefused, "{to}");
        assert!(took < Duration::from_secs(1), "{to}: {took:?}");
        assert_eq!(
            udp_get(&lab.cl1, to),
            Err(ErrorKind::ConnectionRefused),
            "{to}"
        );
    }
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test as root"]
fn source_ranges_refuse_other_clients() {
    let lab = Lab::new();
    let mut svc = service("web", &[VIP4], 80, &["198.18.1.2"]);
    svc.source_ranges = vec!["192.0.2.0/28".parse().unwrap()];
    lab.forwarder().apply(&plan_of(&[svc])).unwrap();
    assert!(tcp_get(&lab.cl1, vip(VIP4, 80)).unwrap().starts_with("b1 "));
    let (kind, took) = tcp_get(&lab.cl2, vip(VIP4, 80)).expect_err("outside the source ranges");
    assert_ne!(kind, ErrorKind::TimedOut);
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(udp_get(&lab.cl2, vip(VIP4, 80)).is_err());
    assert!(udp_get(&lab.cl1, vip(VIP4, 80)).unwrap().starts_with("b1 "));
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test as root"]
fn udp_and_ipv6_are_forwarded() {
    let lab = Lab::new();
    let svc = dual_stack_web();
    let mut fwd = lab.forwarder();
    fwd.apply(&plan_of(&[svc])).unwrap();
    let udp4: Vec<String> = (0..30)
        .map(|_| udp_get(&lab.cl1, vip(VIP4, 80)).expect("udp v4"))
        .collect();
    assert_eq!(tally(udp4).0.len(), 2);
    let tcp6: Vec<String> = (0..30)
        .map(|_| tcp_get(&lab.cl1, vip(VIP6, 80)).expect("tcp v6"))
        .collect();
    let (tags, peers) = tally(tcp6);
    assert_eq!(tags.len(), 2, "{tags:?}");
    assert!(
        peers.keys().all(|p| p.starts_with("2001:db8:b")),
        "{peers:?}"
    );
    let udp6: Vec<String> = (0..30)
        .map(|_| udp_get(&lab.cl1, vip(VIP6, 80)).expect("udp v6"))
        .collect();
    assert_eq!(tally(udp6).0.len(), 2);
    // Each frontend counts its own: 30 TCP connections over IPv6, UDP flows (one per request,
    // each from a new socket) on both families, and bytes both ways for all four.
    let reading = fwd.counters().unwrap();
    let web = &reading[&ServiceKey::new("default", "web")];
    let at = |ip: &str, protocol| Frontend {
        vip: ip.parse().unwrap(),
        protocol,
        port: 80,
    };
    assert_eq!(web[&at(VIP6, Protocol::Tcp)].connections, 30, "{web:?}");
    assert_eq!(web[&at(VIP4, Protocol::Tcp)].connections, 0, "{web:?}");
    for fe in [at(VIP4, Protocol::Udp), at(VIP6, Protocol::Udp)] {
        assert_eq!(web[&fe].connections, 30, "{fe:?}: {web:?}");
        assert!(web[&fe].bytes >= 30 * 2 * 28, "{fe:?}: {web:?}");
    }
    assert!(
        web[&at(VIP6, Protocol::Tcp)].bytes >= 30 * 5 * 60,
        "{web:?}"
    );
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test as root"]
fn udp_flows_move_to_a_live_endpoint_when_theirs_goes_away() {
    let lab = Lab::new();
    let mut fwd = lab.forwarder();
    let both = service("dns", &[VIP4], 53, &["198.18.1.2", "198.18.2.2"]);
    fwd.apply(&plan_of(std::slice::from_ref(&both))).unwrap();
    // One client socket is one conntrack flow: every answer comes from the same backend.
    let sock = in_ns(&lab.cl1, || UdpSocket::bind("0.0.0.0:0").unwrap());
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.connect(vip(VIP4, 53)).unwrap();
    let ask = || {
        sock.send(b"ping").unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("UDP answer through the VIP");
        tally([String::from_utf8_lossy(&buf[..n]).into_owned()])
            .0
            .into_keys()
            .next()
            .unwrap()
    };
    let first = ask();
    for _ in 0..5 {
        assert_eq!(ask(), first, "a UDP flow sticks to its endpoint");
    }
    // The flow's endpoint leaves the Service; its server keeps running (as a Pod that is
    // still terminating would), so only a conntrack flush moves the flow.
    let (gone, kept) = if first == "b1" {
        ("198.18.1.2", "198.18.2.2")
    } else {
        ("198.18.2.2", "198.18.1.2")
    };
    let one = service("dns", &[VIP4], 53, &[kept]);
    let r = fwd.apply(&plan_of(&[one])).unwrap();
    assert_eq!(r.stale.len(), 1, "{:?}", r.stale);
    assert_eq!(r.stale[0].backend, format!("{gone}:8080").parse().unwrap());
    // Until the flush the flow keeps its conntrack entry, and with it its endpoint.
    assert_eq!(ask(), first, "a stale flow moves only when flushed");
    let flushed = fwd.flusher().flush(&r.stale);
    assert_eq!(flushed, r.stale, "the stale flow's entries were deleted");
    let now = ask();
    assert_ne!(now, first, "the flow moved off the removed endpoint");
    // Adding the endpoint back flushes nothing.
    let r = fwd.apply(&plan_of(std::slice::from_ref(&both))).unwrap();
    assert!(r.stale.is_empty());
    assert_eq!(ask(), now, "adding an endpoint leaves existing flows alone");
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test as root"]
fn endpoints_are_data_in_the_shared_backend_maps() {
    let lab = Lab::new();
    let mut fwd = lab.forwarder();
    let svc = dual_stack_web();
    let report = fwd.apply(&plan_of(std::slice::from_ref(&svc))).unwrap();
    assert!(report.script.contains("map @be4tcp"), "{}", report.script);
    for to in [vip(VIP4, 80), vip(VIP6, 80)] {
        let tcp = tcp_tags(&lab.cl1, to, 30);
        assert_eq!(tcp.len(), 2, "{to}");
        let udp = udp_tags(&lab.cl1, to, 30);
        assert_eq!(udp.len(), 2, "{to}");
    }
    // Swapping an endpoint rewrites only its slot, and traffic follows.
    let mut moved = svc.clone();
    moved.endpoints[1] = endpoint("198.18.1.3");
    add_address(&lab.b1, "198.18.1.3/24");
    let report = fwd.apply(&plan_of(std::slice::from_ref(&moved))).unwrap();
    assert!(!report.script.contains("chain"), "{}", report.script);
    let tcp = tcp_tags(&lab.cl1, vip(VIP4, 80), 30);
    assert_eq!(tcp.keys().collect::<Vec<_>>(), ["b1"]);
    // A third endpoint moves the frontend to the shared pick chain of three.
    let mut grown = moved;
    grown.endpoints.push(endpoint("198.18.2.2"));
    let report = fwd.apply(&plan_of(&[grown])).unwrap();
    assert!(
        report.script.contains("goto pick-v4-tcp-3"),
        "{}",
        report.script
    );
    let tcp = tcp_tags(&lab.cl1, vip(VIP4, 80), 40);
    assert_eq!(tcp.len(), 2);
}

/// The table as `nft -j` lists it, without handles and counter values, with every element
/// list and the objects sorted: what two ways of building one table must agree on.
fn table_content(ns: &str) -> serde_json::Value {
    fn normalize(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(o) => {
                o.remove("handle");
                o.remove("counter");
                o.values_mut().for_each(normalize);
            }
            serde_json::Value::Array(a) => {
                a.iter_mut().for_each(normalize);
                a.sort_by_key(|x| x.to_string());
            }
            _ => {}
        }
    }
    let out = sh(&[
        "ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet", "ferrolb",
    ]);
    let mut v: serde_json::Value = serde_json::from_str(&out).expect("nft JSON");
    let objects = v["nftables"].as_array_mut().expect("nftables array");
    objects.retain(|o| o.get("metainfo").is_none());
    normalize(&mut v);
    v
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test as root"]
fn element_only_updates_go_over_netlink_and_leave_what_nft_would() {
    let lab = Lab::new();
    let mut fwd = lab.netlink_forwarder();
    let web = dual_stack_web();
    // api's three endpoints keep the shared pick chains of three in the table, and keep's two
    // those of two, as a cluster's many Services keep every small count's chain.
    let keep = service("keep", &[VIP4], 82, &["198.18.1.2", "198.18.2.2"]);
    let api = service(
        "api",
        &[VIP4],
        81,
        &["198.18.1.2", "198.18.2.2", "198.18.1.3"],
    );
    let api = [api, keep]; // the other Services, unchanged throughout
    add_address(&lab.b1, "198.18.1.3/24");
    let r = fwd
        .apply(&plan_of(&[web.clone(), api[0].clone(), api[1].clone()]))
        .unwrap();
    assert_eq!((r.kind, r.route), (ApplyKind::Full, ApplyRoute::Netlink));

    // An endpoint swap is elements only: over netlink, and traffic follows it.
    let mut moved = web.clone();
    moved.endpoints[1] = endpoint("198.18.1.3");
    let r = fwd
        .apply(&plan_of(&[moved.clone(), api[0].clone(), api[1].clone()]))
        .unwrap();
    assert_eq!(
        (r.kind, r.route),
        (ApplyKind::Incremental, ApplyRoute::Netlink),
        "{}",
        r.script
    );
    let tcp = tcp_tags(&lab.cl1, vip(VIP4, 80), 30);
    assert_eq!(tcp.keys().collect::<Vec<_>>(), ["b1"]);

    // A third endpoint moves the frontends onto the pick chains api uses: elements only too.
    let mut grown = moved;
    grown.endpoints.push(endpoint("198.18.2.2"));
    let r = fwd
        .apply(&plan_of(&[grown.clone(), api[0].clone(), api[1].clone()]))
        .unwrap();
    assert_eq!(r.route, ApplyRoute::Netlink, "{}", r.script);
    let tcp = tcp_tags(&lab.cl1, vip(VIP4, 80), 40);
    assert_eq!(tcp.len(), 2);
    let udp = udp_tags(&lab.cl1, vip(VIP6, 80), 30);
    assert_eq!(udp.len(), 2, "IPv6 untouched");

    // What netlink built is what nft builds from scratch for the same plan.
    let incremental = table_content(&lab.fw);
    let mut fresh = lab.forwarder();
    fresh
        .apply(&plan_of(&[grown.clone(), api[0].clone(), api[1].clone()]))
        .unwrap();
    assert_eq!(incremental, table_content(&lab.fw));

    // Bad input tried: an element removed behind FerroLB's back. The batch that deletes it is
    // refused whole with the kernel's reason, and the next apply rebuilds the table.
    let behind = format!("delete element inet ferrolb be4tcp {{ {VIP4} . 80 . 2 }}");
    sh(&["ip", "netns", "exec", &lab.fw, "nft", &behind]);
    let mut shrunk = grown.clone();
    shrunk.endpoints.pop(); // back to two IPv4 endpoints (both on b1): slot 2 goes
    let err = fwd.apply(&plan_of(&[shrunk.clone(), api[0].clone(), api[1].clone()]));
    match err {
        Err(ForwardError::Netlink { what, source }) => {
            assert!(what.contains("be4tcp"), "{what}");
            assert_eq!(source.raw_os_error(), Some(2), "ENOENT: {source}");
        }
        other => panic!("expected a netlink refusal, got {other:?}"),
    }
    let r = fwd
        .apply(&plan_of(&[shrunk, api[0].clone(), api[1].clone()]))
        .unwrap();
    assert_eq!((r.kind, r.route), (ApplyKind::Full, ApplyRoute::Netlink));
    let tcp = tcp_tags(&lab.cl1, vip(VIP4, 80), 40);
    assert_eq!(tcp.keys().collect::<Vec<_>>(), ["b1"]);
}

/// `nft -t list table` (sets without their elements): the definitions as `nft` reads them back,
/// `typeof` included, which the JSON listing does not show.
fn table_terse(ns: &str) -> String {
    sh(&[
        "ip", "netns", "exec", ns, "nft", "-t", "list", "table", "inet", "ferrolb",
    ])
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test as root"]
fn full_apply_over_netlink_builds_what_nft_builds() {
    let lab = Lab::new();
    let mut fwd = lab.netlink_forwarder();
    // Both families, both source NAT modes, one to three endpoints, and a Service without any:
    // every kind of base rule, map and pick chain the table can hold.
    let web = service(
        "web",
        &[VIP4, VIP6],
        80,
        &["198.18.1.2", "198.18.2.2", "2001:db8:b1::2"],
    );
    let mut local = service(
        "local",
        &[VIP4, VIP6],
        81,
        &["198.18.2.2", "2001:db8:b2::2"],
    );
    local.external_traffic_policy = TrafficPolicy::Local;
    let empty = service("empty", &[VIP4], 82, &[]);
    let services = [web, local, empty];

    // Bad input tried: what a previous run (or someone) left in FerroLB's table, a chain and
    // an element of a map; the full apply replaces the table whole.
    let leftover = "add table inet ferrolb\nadd chain inet ferrolb leftover\nadd map inet ferrolb svc4 { type ipv4_addr . inet_proto . inet_service : verdict; }\nadd element inet ferrolb svc4 { 192.0.2.201 . tcp . 80 : goto leftover }\n";
    sh(&[
        "ip",
        "netns",
        "exec",
        &lab.fw,
        "sh",
        "-c",
        &format!("printf '{leftover}' | nft -f -"),
    ]);
    let r = fwd.apply(&plan_of(&services)).unwrap();
    assert_eq!((r.kind, r.route), (ApplyKind::Full, ApplyRoute::Netlink));
    let (content, terse) = (table_content(&lab.fw), table_terse(&lab.fw));
    assert!(!terse.contains("leftover"), "{terse}");

    // Traffic follows it: both families, both policies, and the refusal.
    let tcp = tcp_tags(&lab.cl1, vip(VIP4, 80), 40);
    assert_eq!(tcp.len(), 2, "{tcp:?}");
    // The namespaces' IPv6 can take a few seconds after their links come up (neighbour
    // discovery on fresh links): wait for a first answer, then count.
    let ready = Instant::now() + Duration::from_secs(15);
    while tcp_get(&lab.cl1, vip(VIP6, 81)).is_err() {
        assert!(
            Instant::now() < ready,
            "IPv6 through the VIP never answered"
        );
    }
    let (tags, peers) = tally((0..10).map(|_| tcp_get(&lab.cl1, vip(VIP6, 81)).unwrap()));
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["b2"]);
    assert_eq!(
        peers.keys().collect::<Vec<_>>(),
        ["2001:db8:1::2"],
        "Local keeps the client"
    );
    let udp = udp_tags(&lab.cl1, vip(VIP6, 81), 10);
    assert_eq!(udp.keys().collect::<Vec<_>>(), ["b2"]);
    let (kind, _) = tcp_get(&lab.cl1, vip(VIP4, 82)).expect_err("no endpoints");
    assert_ne!(kind, ErrorKind::TimedOut);

    // nft builds the same table from the script; an update after either goes the same way.
    let mut by_nft = lab.forwarder();
    let r = by_nft.apply(&plan_of(&services)).unwrap();
    assert_eq!(r.route, ApplyRoute::Nft);
    assert_eq!(terse, table_terse(&lab.fw));
    assert_eq!(content, table_content(&lab.fw));
    let mut fresh = services.clone();
    fresh[0].endpoints.pop();
    let r = fwd.apply(&plan_of(&fresh)).unwrap();
    assert_eq!(r.kind, ApplyKind::Incremental);
    let after_netlink = table_content(&lab.fw);
    lab.forwarder().apply(&plan_of(&fresh)).unwrap();
    assert_eq!(after_netlink, table_content(&lab.fw));

    // A Service with chains of its own (source ranges) is beyond the batch: the script goes.
    let mut ranged = services.clone();
    ranged[1].source_ranges = vec!["192.0.2.0/28".parse().unwrap()];
    let mut again = lab.netlink_forwarder();
    let r = again.apply(&plan_of(&ranged)).unwrap();
    assert_eq!((r.kind, r.route), (ApplyKind::Full, ApplyRoute::Nft));
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test as root"]
fn client_ip_affinity_sticks_to_one_backend() {
    let lab = Lab::new();
    let mut svc = service("web", &[VIP4], 80, &["198.18.1.2", "198.18.2.2"]);
    svc.session_affinity = SessionAffinity::ClientIp { timeout_s: 60 };
    lab.forwarder().apply(&plan_of(&[svc])).unwrap();
    let answers = tcp_tags(&lab.cl1, vip(VIP4, 80), 20);
    assert_eq!(answers.len(), 1);
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test as root"]
fn updates_touch_only_the_changed_service_and_remove_leaves_nothing() {
    let lab = Lab::new();
    let mut fwd = lab.forwarder();
    let web = service("web", &[VIP4], 80, &["198.18.1.2", "198.18.2.2"]);
    let api = service("api", &[VIP4], 81, &["198.18.1.2", "198.18.2.2"]);
    fwd.apply(&plan_of(&[web.clone(), api.clone()])).unwrap();
    // The rules of the shared pick chains api uses (its own state is elements), with handles.
    let api_rules = |listing: &str| -> Vec<String> {
        listing
            .lines()
            .filter(|l| l.contains("handle") && l.contains("mod 2 map"))
            .map(str::to_string)
            .collect()
    };
    let before = fwd.list().unwrap();
    assert_eq!(api_rules(&before).len(), 2, "{before}"); // TCP and UDP
    tcp_get(&lab.cl1, vip(VIP4, 81)).unwrap();

    let mut web1 = web.clone();
    web1.endpoints.truncate(1);
    let report = fwd.apply(&plan_of(&[web1, api.clone()])).unwrap();
    assert_eq!(
        (report.kind, report.services_changed),
        (ApplyKind::Incremental, 1)
    );
    assert!(!report.script.contains("default/api"), "{}", report.script);
    let after = fwd.list().unwrap();
    // `nft -a` prints handles: the pick chains api shares are the very same kernel objects, and
    // its elements were not recreated (their counters go on).
    assert_eq!(api_rules(&before), api_rules(&after));
    let api_key = ServiceKey::new("default", "api");
    assert_eq!(service_counts(&fwd)[&api_key].connections, 1);
    for _ in 0..10 {
        assert!(tcp_get(&lab.cl1, vip(VIP4, 80)).unwrap().starts_with("b1 "));
    }
    assert_eq!(
        tally((0..30).map(|_| tcp_get(&lab.cl1, vip(VIP4, 81)).unwrap()))
            .0
            .len(),
        2
    );

    // A restart (new forwarder, table left behind with stale state) converges in one go.
    let mut restarted = lab.forwarder();
    assert_eq!(
        restarted
            .apply(&plan_of(std::slice::from_ref(&api)))
            .unwrap()
            .kind,
        ApplyKind::Full
    );
    assert!(!restarted.list().unwrap().contains("default/web"));
    assert!(tcp_get(&lab.cl1, vip(VIP4, 80)).is_err());
    assert_eq!(
        restarted.apply(&plan_of(&[api])).unwrap().kind,
        ApplyKind::Unchanged
    );

    restarted.remove().unwrap();
    assert_eq!(
        sh(&["ip", "netns", "exec", &lab.fw, "nft", "list", "ruleset"]).trim(),
        ""
    );
    restarted.remove().expect("removing twice is fine");
}

#[test]
#[ignore = "needs root and network namespaces: run cargo xtask test as root"]
fn many_services_apply_whole_and_update_one_at_a_time() {
    // Functional only: the timings at 10,000 are `cargo xtask bench forward`'s.
    let count: u32 = 2_000;
    let lab = Lab::new();
    let mut fwd = lab.forwarder();
    let services: Vec<ForwardService> = (0..count)
        .map(|i| {
            let vip = format!("198.19.0.{}", i % 250 + 1);
            service(
                &format!("svc{i}"),
                &[&vip],
                1000 + (i / 250) as u16,
                &["198.18.1.2", "198.18.2.2"],
            )
        })
        .collect();
    let full = fwd.apply(&plan_of(&services)).unwrap();
    assert_eq!(
        (full.kind, full.services_changed),
        (ApplyKind::Full, count as usize)
    );
    // Traffic flows through a Service in the middle of the table.
    let i = (count / 2) as usize;
    let probe = vip(
        &format!("198.19.0.{}", i % 250 + 1),
        1000 + (i / 250) as u16,
    );
    assert!(tcp_get(&lab.cl1, probe).is_ok(), "{probe}");
    let mut changed = services.clone();
    for round in 0..8 {
        // Alternate between a different endpoint (same count) and a count change.
        let (eps, tags): (&[&str], &[&str]) = match round % 4 {
            0 => (&["198.18.1.2"], &["b1"]),
            1 => (&["198.18.2.2"], &["b2"]),
            2 => (&["198.18.1.2", "198.18.2.2"], &["b1", "b2"]),
            _ => (&["198.18.2.2"], &["b2"]),
        };
        changed[i].endpoints = eps.iter().map(|e| endpoint(e)).collect();
        let r = fwd.apply(&plan_of(&changed)).unwrap();
        assert_eq!((r.kind, r.services_changed), (ApplyKind::Incremental, 1));
        // Only svc{i}'s frontend keys appear (counters are kept, so no name at all), plus a
        // shared pick chain coming or going.
        let (ip, port) = (probe.ip(), probe.port());
        let mine = [
            format!("{ip} . tcp . {port}"),
            format!("{ip} . udp . {port}"),
            format!("{ip} . {port} . "),
        ];
        for line in r
            .script
            .lines()
            .filter(|l| !l.contains(" chain ") && !l.contains(" rule "))
        {
            let items = line.split_once('{').expect("element command").1;
            assert!(
                items
                    .split(", ")
                    .all(|e| mine.iter().any(|m| e.contains(m.as_str()))),
                "round {round}: only svc{i} is touched: {}",
                r.script
            );
        }
        assert!(
            r.script
                .lines()
                .filter(|l| l.contains(" chain ") || l.contains(" rule "))
                .all(|l| l.contains(" pick-v4-")),
            "{}",
            r.script
        );
        let answers = (0..12).map(|_| tcp_get(&lab.cl1, probe).expect("tcp via VIP"));
        let (seen, _) = tally(answers);
        assert!(
            seen.keys().all(|t| tags.contains(&t.as_str())),
            "round {round}: {seen:?}"
        );
    }
}
