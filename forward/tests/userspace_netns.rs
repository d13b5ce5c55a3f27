//! The userspace forwarder against the real kernel, inside network namespaces this test creates
//! (`ferrolb-uspt-*`, removed on drop). Topology:
//!
//! ```text
//! cl 192.0.2.2/24 ── fw 192.0.2.1/24 (proxy; VIP 192.0.2.200 on the same link, on no interface)
//!                    fw ── b1 198.18.1.2   fw ── b2 198.18.2.2   fw ── b3 198.18.3.2 (refuses)
//! ```
//! The client reaches the VIP on its own link, so it must ARP for it: the kernel never answers,
//! the test plays the speaker's reply with a static neighbour entry.

mod netns;

use ferrolb_core::forward::{Frontend, Protocol};
use ferrolb_core::proxy_protocol::{self, Header};
use ferrolb_forward::RunInputs;
use ferrolb_forward::userspace::{
    InterceptConfig, Interceptor, ProxyFrontend, ProxySettings, TcpProxy, UserspaceMetrics,
    userspace_frontends,
};
use ferrolb_forward::userspace::{Relay, UserspaceSettings, run_userspace};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use netns::{in_ns, sh};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const VIP: &str = "192.0.2.200";
const VIP6: &str = "2001:db8:1::200";
const NODE: &str = "node-fw";
const BACKEND_PORT: u16 = 8080;

/// What a backend saw on one connection.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    backend: &'static str,
    header: Option<Header>,
}

/// The namespaces of one test and the proxy running in `fw`; all removed when dropped.
struct Lab {
    fw: String,
    cl: String,
    backends: Vec<String>,
    rt: tokio::runtime::Runtime,
    proxy: Arc<Mutex<Option<TcpProxy>>>,
    interceptor: Arc<Mutex<Interceptor>>,
    metrics: UserspaceMetrics,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(p) = self.proxy.lock().unwrap().take() {
            drop(p);
        }
        for ns in std::iter::once(&self.fw)
            .chain([&self.cl])
            .chain(self.backends.iter())
        {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    /// The lab; `proxy_header` says whether backends expect a PROXY header first.
    fn new(settings: ProxySettings, proxy_header: bool) -> Lab {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "{}-{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let name = |role: &str| format!("ferrolb-uspt-{id}-{role}");
        let (fw, cl) = (name("fw"), name("cl"));
        let backends: Vec<String> = ["b1", "b2", "b3"].iter().map(|b| name(b)).collect();
        for ns in std::iter::once(&fw).chain([&cl]).chain(backends.iter()) {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        for ns in [&fw, &cl] {
            // No duplicate address detection: link-local addresses usable at once for NDP probes.
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.accept_dad=0",
            ]);
        }
        ip(&fw, "link add c type veth peer name eth0 netns", &cl);
        ip(&fw, "addr add 192.0.2.1/24 dev c", "");
        ip(&fw, "addr add 2001:db8:1::1/64 nodad dev c", "");
        ip(&fw, "link set c up", "");
        ip(&cl, "addr add 192.0.2.2/24 dev eth0", "");
        ip(&cl, "addr add 2001:db8:1::2/64 nodad dev eth0", "");
        ip(&cl, "link set eth0 up", "");
        for (i, b) in backends.iter().enumerate() {
            let n = i + 1;
            ip(
                &fw,
                &format!("link add b{n} type veth peer name eth0 netns"),
                b,
            );
            ip(&fw, &format!("addr add 198.18.{n}.1/24 dev b{n}"), "");
            ip(
                &fw,
                &format!("addr add 2001:db8:b{n}::1/64 nodad dev b{n}"),
                "",
            );
            ip(&fw, &format!("link set b{n} up"), "");
            ip(b, &format!("addr add 198.18.{n}.2/24 dev eth0"), "");
            ip(
                b,
                &format!("addr add 2001:db8:b{n}::2/64 nodad dev eth0"),
                "",
            );
            ip(b, "link set eth0 up", "");
            ip(b, &format!("route add default via 198.18.{n}.1"), "");
            ip(b, &format!("-6 route add default via 2001:db8:b{n}::1"), "");
        }
        sh(&[
            "ip",
            "netns",
            "exec",
            &fw,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        let seen = Arc::new(Mutex::new(Vec::new()));
        // b3 listens nowhere: connections to it are refused.
        backend(&backends[0], "b1", proxy_header, seen.clone());
        backend(&backends[1], "b2", proxy_header, seen.clone());
        let metrics = UserspaceMetrics::default();
        let (rt, proxy) = {
            let metrics = metrics.clone();
            in_ns(&fw, move || {
                // Worker threads are spawned from here and inherit the namespace.
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                let proxy = {
                    let _g = rt.enter();
                    TcpProxy::new(settings, metrics)
                };
                (rt, proxy)
            })
        };
        Lab {
            fw,
            cl,
            backends,
            rt,
            proxy: Arc::new(Mutex::new(Some(proxy))),
            interceptor: Arc::new(Mutex::new(Interceptor::new(InterceptConfig::default()))),
            metrics,
            seen,
        }
    }

    /// Serves what `services` and `slices` ask of the userspace path (as the runner does).
    fn apply(&self, services: Vec<Service>, slices: Vec<EndpointSlice>) -> Vec<Frontend> {
        let announced = BTreeSet::from([VIP.parse().unwrap(), VIP6.parse().unwrap()]);
        let (wanted, _notes) = userspace_frontends(&announced, &services, &slices, NODE);
        self.apply_frontends(wanted)
    }

    fn apply_frontends(&self, wanted: BTreeMap<Frontend, ProxyFrontend>) -> Vec<Frontend> {
        let (proxy, interceptor, handle) = (
            self.proxy.clone(),
            self.interceptor.clone(),
            self.rt.handle().clone(),
        );
        in_ns(&self.fw, move || {
            let _g = handle.enter();
            let listening = proxy.lock().unwrap().as_mut().unwrap().apply(&wanted);
            let set = listening
                .iter()
                .map(|f| (f.vip, f.protocol, f.port))
                .collect();
            interceptor.lock().unwrap().apply(&set).expect("intercept");
            listening
        })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Plays the speaker's ARP and NDP replies: the client learns the VIPs at the node's MAC.
    fn learn_vip(&self) {
        let link = sh(&["ip", "-n", &self.fw, "-br", "link", "show", "c"]);
        let mac = link.split_whitespace().nth(2).expect("mac").to_string();
        for vip in [VIP, VIP6] {
            let args = format!("neigh replace {vip} lladdr {mac} dev eth0 nud permanent");
            ip(&self.cl, &args, "");
        }
    }
}

/// `ip -n <ns> <args…> [last]`, the words of `args` split at spaces.
fn ip(ns: &str, args: &str, last: &str) {
    let mut argv = vec!["ip", "-n", ns];
    argv.extend(args.split(' '));
    if !last.is_empty() {
        argv.push(last);
    }
    sh(&argv);
}

/// A Service `name` on the VIP, port 80, with `annotations`.
fn service(name: &str, annotations: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": name, "annotations": annotations},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "web", "port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": VIP}]}}
    }))
    .unwrap()
}

fn userspace(name: &str) -> Service {
    service(name, json!({"ferrolb.io/forwarding": "userspace"}))
}

/// The Service's slice: `(address, ready, terminating)` per endpoint.
fn slice(name: &str, endpoints: &[(&str, bool, bool)]) -> EndpointSlice {
    let eps: Vec<_> = endpoints
        .iter()
        .map(|(ip, ready, terminating)| {
            json!({"addresses": [ip], "nodeName": NODE,
                   "conditions": {"ready": ready, "serving": true, "terminating": terminating}})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": format!("{name}-x"),
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "web", "port": BACKEND_PORT}]
    }))
    .unwrap()
}

/// A backend on port 8080: an optional PROXY header, then a line. `GET …` gets an HTTP answer
/// naming the backend; `stream <n>` gets n KiB slowly; `reset` gets the backend's name and then
/// an RST; anything else gets the backend's name and is then echoed until the client closes (so
/// the client closes first, as in churn).
fn backend(ns: &str, tag: &'static str, proxy_header: bool, seen: Arc<Mutex<Vec<Seen>>>) {
    let (listener, udp) = in_ns(ns, || {
        (
            TcpListener::bind(("::", BACKEND_PORT)).expect("bind"),
            UdpSocket::bind(("::", BACKEND_PORT)).expect("bind udp"),
        )
    });
    let udp_seen = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || serve_backend(conn, tag, proxy_header, seen));
        }
    });
    // UDP: answers every datagram with the tag and what followed a PROXY v2 header, if any.
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = udp.recv_from(&mut buf) {
            let (header, body) = match proxy_protocol::decode(&buf[..n]) {
                Ok((h, used)) if proxy_header => (Some(h), &buf[used..n]),
                _ => (None, &buf[..n]),
            };
            udp_seen.lock().unwrap().push(Seen {
                backend: tag,
                header,
            });
            let mut answer = format!("{tag} ").into_bytes();
            answer.extend_from_slice(body);
            let _ = udp.send_to(&answer, peer);
        }
    });
}

fn serve_backend(
    mut conn: TcpStream,
    tag: &'static str,
    proxy_header: bool,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut header = None;
    let line = loop {
        if proxy_header && header.is_none() {
            match proxy_protocol::decode(&buf) {
                Ok((h, used)) => {
                    header = Some(h);
                    buf.drain(..used);
                }
                Err(proxy_protocol::DecodeError::Incomplete(_)) => {}
                Err(e) => panic!("{tag}: bad PROXY header: {e}"),
            }
        }
        if (!proxy_header || header.is_some())
            && let Some(end) = buf.iter().position(|b| *b == b'\n')
        {
            break String::from_utf8_lossy(&buf[..end]).trim().to_string();
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    seen.lock().unwrap().push(Seen {
        backend: tag,
        header,
    });
    if line.starts_with("GET ") {
        let _ = conn
            .write_all(format!("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n{tag}\n").as_bytes());
    } else if let Some(kib) = line.strip_prefix("stream ") {
        let kib: usize = kib.parse().unwrap();
        let block = vec![b'x'; 1024];
        for i in 0..kib {
            if conn.write_all(&block).is_err() {
                return;
            }
            if i % 64 == 63 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    } else if line == "reset" {
        let _ = conn.write_all(format!("{tag}\n").as_bytes());
        std::thread::sleep(Duration::from_millis(100));
        let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
    } else {
        let _ = conn.write_all(format!("{tag}\n").as_bytes());
        while let Ok(n) = conn.read(&mut chunk) {
            if n == 0 || conn.write_all(&chunk[..n]).is_err() {
                break;
            }
        }
    }
}

/// `curl http://VIP/` from the client namespace: the body (the backend's name).
fn curl(lab: &Lab) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.cl, "curl", "-sS", "--max-time", "5"])
        .arg(format!("http://{VIP}/"))
        .output()
        .expect("curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.parse().unwrap(), port)
}

/// One line exchange from the client: connect, send `hi`, read the backend's name, close first.
fn hello(to: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"hi\n")?;
    let mut name = [0u8; 3];
    s.read_exact(&mut name)?;
    Ok(String::from_utf8_lossy(&name).into_owned())
}

#[test]
fn kernel_never_answers_arp_and_curl_reaches_every_backend() {
    let lab = Lab::new(ProxySettings::default(), false);
    let fe = lab.apply(
        vec![userspace("web")],
        vec![slice(
            "web",
            &[("198.18.1.2", true, false), ("198.18.2.2", true, false)],
        )],
    );
    assert_eq!(fe.len(), 1);
    // The VIP is on the client's link: only an ARP answer could reach it, and none comes.
    let arping = Command::new("ip")
        .args([
            "netns", "exec", &lab.cl, "arping", "-c", "3", "-w", "3", "-I", "eth0", VIP,
        ])
        .output()
        .unwrap();
    assert!(
        !arping.status.success(),
        "the kernel answered ARP for the VIP: {}",
        String::from_utf8_lossy(&arping.stdout)
    );
    // The same probe for the node's own address is answered: the method works.
    sh(&[
        "ip",
        "netns",
        "exec",
        &lab.cl,
        "arping",
        "-c",
        "1",
        "-w",
        "3",
        "-I",
        "eth0",
        "192.0.2.1",
    ]);
    let neigh = sh(&["ip", "-n", &lab.fw, "-4", "addr", "show"]);
    assert!(!neigh.contains(VIP), "the VIP is no local address: {neigh}");
    lab.learn_vip();
    let mut reached = BTreeMap::new();
    for _ in 0..20 {
        let body = curl(&lab).expect("curl through the VIP");
        *reached.entry(body).or_insert(0) += 1;
    }
    assert_eq!(
        reached.keys().map(String::as_str).collect::<Vec<_>>(),
        ["b1", "b2"],
        "{reached:?}"
    );
    assert_eq!(lab.metrics.forwarded("default", "web"), 20);
    let (up, down) = lab.metrics.bytes_carried("default", "web");
    assert!(up > 20 * 40 && down > 20 * 40, "bytes {up} {down}");
}

#[test]
fn proxy_protocol_headers_reach_the_backend() {
    for version in ["v1", "v2"] {
        let port = 80;
        let lab = Lab::new(ProxySettings::default(), true);
        lab.apply(
            vec![service(
                "pp",
                json!({"ferrolb.io/forwarding": "userspace", "ferrolb.io/proxy-protocol": version}),
            )],
            vec![slice("pp", &[("198.18.1.2", true, false)])],
        );
        lab.learn_vip();
        let got = in_ns(&lab.cl, move || hello(vip(port))).expect("hello");
        assert_eq!(got, "b1\n", "{version}");
        let seen = lab.seen();
        assert_eq!(seen.len(), 1, "{version}: {seen:?}");
        let Some(Header::Proxy {
            source,
            destination,
            ..
        }) = seen[0].header
        else {
            panic!("{version}: no PROXY header: {seen:?}");
        };
        assert_eq!(
            source.ip(),
            "192.0.2.2".parse::<IpAddr>().unwrap(),
            "{version}"
        );
        assert_eq!(destination, vip(port), "{version}");
    }
}

/// Bad inputs tried: `ferrolb.io/forwarding: bogus` and `ferrolb.io/proxy-protocol: v3` (on a
/// userspace Service). Neither gets a userspace frontend (the kernel path keeps them), and each
/// is reported with the Service's name.
#[test]
fn bad_annotations_keep_the_kernel_path() {
    let announced = BTreeSet::from([VIP.parse::<IpAddr>().unwrap()]);
    let services = vec![
        service("bogus", json!({"ferrolb.io/forwarding": "bogus"})),
        service(
            "v3",
            json!({"ferrolb.io/forwarding": "userspace", "ferrolb.io/proxy-protocol": "v3"}),
        ),
    ];
    let (wanted, notes) = userspace_frontends(&announced, &services, &[], NODE);
    assert!(wanted.is_empty(), "{wanted:?}");
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert_eq!(notes[0].0.to_string(), "default/bogus");
    assert!(notes[0].1.contains("\"bogus\"") && notes[0].1.contains("kernel path"));
    assert_eq!(notes[1].0.to_string(), "default/v3");
    assert!(notes[1].1.contains("\"v3\"") && notes[1].1.contains("kernel path"));
    for svc in &services {
        assert_eq!(
            ferrolb_forward::k8s::forwarding_path(svc),
            ferrolb_forward::k8s::ForwardingPath::Kernel,
            "the kernel plan must take {:?}",
            svc.metadata.name
        );
    }
}

#[test]
fn refusing_backend_is_ejected_and_no_request_fails() {
    let lab = Lab::new(ProxySettings::default(), false);
    lab.apply(
        vec![userspace("web")],
        vec![slice(
            "web",
            &[("198.18.1.2", true, false), ("198.18.3.2", true, false)],
        )],
    );
    lab.learn_vip();
    for i in 0..20 {
        assert_eq!(
            curl(&lab).unwrap_or_else(|e| panic!("request {i}: {e}")),
            "b1"
        );
    }
    let refusing: SocketAddr = "198.18.3.2:8080".parse().unwrap();
    assert_eq!(
        lab.metrics.ejections("default", "web", refusing),
        1,
        "ejected once, then skipped for the backoff"
    );
    assert_eq!(lab.metrics.forwarded("default", "web"), 20);
}

#[test]
fn draining_keeps_a_long_transfer_while_new_connections_go_elsewhere() {
    let lab = Lab::new(ProxySettings::default(), false);
    let both = [("198.18.1.2", true, false), ("198.18.2.2", true, false)];
    lab.apply(vec![userspace("web")], vec![slice("web", &both)]);
    lab.learn_vip();
    // The first connection goes to the first backend (b1), which echoes. Its 4 MiB go half
    // before the drain and half after it: the gate holds the second half until new connections
    // have gone elsewhere, so the connection is in use across the drain whatever the machine's
    // speed (no timing in the test).
    let (s, name) =
        in_ns(&lab.cl.clone(), || open_with("hi\n")).expect("a connection to the first backend");
    assert_eq!(name, "b1\n");
    assert_eq!(lab.seen()[0].backend, "b1");
    let half = 2 << 20;
    let (open_gate, gate) = std::sync::mpsc::channel::<()>();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let block = vec![b'y'; half];
        w.write_all(&block)?;
        let _ = gate.recv();
        w.write_all(&block)?;
        w.shutdown(std::net::Shutdown::Write)
    });
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        (&s).read_to_end(&mut all).map(|_| all)
    });
    // b1 terminates: not ready, still serving; b2 is ready, so only b2 gets new connections.
    lab.apply(
        vec![userspace("web")],
        vec![slice(
            "web",
            &[("198.18.1.2", false, true), ("198.18.2.2", true, false)],
        )],
    );
    for _ in 0..10 {
        assert_eq!(curl(&lab).expect("curl during the drain"), "b2");
    }
    open_gate.send(()).unwrap();
    writer
        .join()
        .unwrap()
        .expect("the second half written after the drain");
    let echoed = reader.join().unwrap().expect("the echo read to its end");
    assert_eq!(
        echoed.len(),
        2 * half,
        "the in-flight connection finished whole"
    );
    assert!(echoed.iter().all(|b| *b == b'y'), "unchanged bytes");
    // With no ready endpoint left, the terminating one serves again (as the kernel path does).
    lab.apply(
        vec![userspace("web")],
        vec![slice("web", &[("198.18.1.2", false, true)])],
    );
    assert_eq!(
        curl(&lab).expect("terminating endpoint as the last resort"),
        "b1"
    );
}

/// A lab with only b1 behind `web` and the client knowing the VIP, relaying by `relay`.
fn one_backend_lab(relay: Relay) -> Lab {
    let lab = Lab::new(
        ProxySettings {
            relay,
            ..ProxySettings::default()
        },
        false,
    );
    lab.apply(
        vec![userspace("web")],
        vec![slice("web", &[("198.18.1.2", true, false)])],
    );
    lab.learn_vip();
    lab
}

/// The byte counters once the proxy has seen the connection end (it counts after both
/// directions closed, a moment after the client saw its EOF).
fn bytes_once(lab: &Lab, want: (u64, u64)) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let got = lab.metrics.bytes_carried("default", "web");
        if got == want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connects to the VIP and sends `line`, reading the backend's name back.
fn open_with(line: &str) -> std::io::Result<(TcpStream, String)> {
    let mut s = TcpStream::connect_timeout(&vip(80), Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(line.as_bytes())?;
    let mut name = [0u8; 3];
    s.read_exact(&mut name)?;
    Ok((s, String::from_utf8_lossy(&name).into_owned()))
}

/// Splicing (switched to after the first 1 KiB read that fills the buffer; the request line
/// and short reads are copied) and copying only.
const RELAYS: [Relay; 2] = [
    Relay::Splice {
        pipe: 64 * 1024,
        buffer: 1024,
    },
    Relay::Copy { buffer: 64 * 1024 },
];

#[test]
fn large_echo_comes_back_byte_for_byte_and_is_counted() {
    for relay in RELAYS {
        let lab = one_backend_lab(relay);
        // 24 MiB of varied bytes (a counter mixed through xorshift) echoed by b1 while still
        // being written: both directions flow at once, through many pipe refills.
        let len = 24 << 20;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let data: Arc<Vec<u8>> = Arc::new(
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect(),
        );
        let sent = data.clone();
        let echoed = in_ns(&lab.cl.clone(), move || {
            let (s, name) = open_with("hi\n")?;
            assert_eq!(name, "b1\n");
            let mut w = s.try_clone()?;
            let writer = std::thread::spawn(move || {
                w.write_all(&sent)?;
                w.shutdown(std::net::Shutdown::Write)
            });
            let mut back = Vec::with_capacity(len);
            (&s).read_to_end(&mut back)?;
            writer.join().unwrap()?;
            Ok::<_, std::io::Error>(back)
        })
        .expect("echo through the proxy");
        assert_eq!(echoed.len(), len, "{relay:?}: every byte came back");
        assert!(echoed == *data, "{relay:?}: the bytes came back unchanged");
        let want = (3 + len as u64, 3 + len as u64);
        assert_eq!(bytes_once(&lab, want), want, "{relay:?}: counters");
    }
}

#[test]
fn half_close_keeps_the_other_direction_flowing() {
    for relay in RELAYS {
        let lab = one_backend_lab(relay);
        // The client sends its request and its FIN at once; b1 then streams 1 MiB slowly
        // (~0.4 s). A proxy that ended the connection at the first EOF would cut it short.
        let got = in_ns(&lab.cl.clone(), || {
            let mut s = TcpStream::connect_timeout(&vip(80), Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(b"stream 1024\n")?;
            s.shutdown(std::net::Shutdown::Write)?;
            let mut all = Vec::new();
            s.read_to_end(&mut all)?;
            Ok::<_, std::io::Error>(all)
        })
        .expect("stream after the client's FIN");
        assert_eq!(
            got.len(),
            1024 * 1024,
            "{relay:?}: the whole stream arrived"
        );
        assert!(got.iter().all(|b| *b == b'x'), "{relay:?}: unchanged bytes");
        let want = (12, 1024 * 1024);
        assert_eq!(bytes_once(&lab, want), want, "{relay:?}: counters");
    }
}

#[test]
fn backend_reset_reaches_the_client_as_a_reset() {
    for relay in RELAYS {
        let lab = one_backend_lab(relay);
        let outcome = in_ns(&lab.cl.clone(), || {
            let (mut s, name) = open_with("reset\n")?;
            assert_eq!(name, "b1\n");
            let mut rest = Vec::new();
            Ok::<_, std::io::Error>(s.read_to_end(&mut rest).map_err(|e| e.kind()))
        })
        .expect("connection");
        assert_eq!(
            outcome,
            Err(ErrorKind::ConnectionReset),
            "{relay:?}: the backend's RST, not a clean FIN"
        );
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            lab.metrics.bytes_carried("default", "web"),
            (0, 0),
            "{relay:?}: a reset connection is not counted (ADR 0014)"
        );
        assert_eq!(lab.metrics.forwarded("default", "web"), 1);
    }
}

#[test]
fn churn_reuses_source_ports_without_eaddrnotavail() {
    // 64 source ports and 64 ephemeral ports: without reuse of TIME_WAIT four-tuples the
    // proxy would run out after ~128 connections (the client closes first, so every backend
    // connection of the proxy ends in TIME_WAIT for 60 s).
    let settings = ProxySettings {
        source_ports: 61_000..=61_063,
        ..ProxySettings::default()
    };
    let lab = Lab::new(settings, false);
    sh(&[
        "ip",
        "netns",
        "exec",
        &lab.fw,
        "sysctl",
        "-qw",
        "net.ipv4.ip_local_port_range=40000 40063",
    ]);
    lab.apply(
        vec![userspace("web")],
        vec![slice(
            "web",
            &[("198.18.1.2", true, false), ("198.18.2.2", true, false)],
        )],
    );
    lab.learn_vip();
    let n = 3000;
    let failures = in_ns(&lab.cl.clone(), move || {
        let mut failures = Vec::new();
        for i in 0..n {
            if let Err(e) = hello(vip(80)) {
                failures.push((i, e.to_string()));
            }
        }
        failures
    });
    assert!(
        failures.is_empty(),
        "{} of {n} failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(lab.metrics.forwarded("default", "web"), n as u64);
    let tw = sh(&[
        "ip",
        "netns",
        "exec",
        &lab.fw,
        "ss",
        "-Htan",
        "state",
        "time-wait",
    ]);
    assert!(
        tw.lines().count() <= 2 * 64 + 64,
        "TIME_WAIT stays bounded by the port ranges: {}",
        tw.lines().count()
    );
}

#[test]
fn no_endpoints_and_outside_sources_are_refused_not_black_holed() {
    let lab = Lab::new(ProxySettings::default(), false);
    let mut svc = userspace("web");
    lab.apply(vec![svc.clone()], vec![slice("web", &[])]);
    lab.learn_vip();
    let cl = lab.cl.clone();
    let (r, took) = in_ns(&cl, || {
        let start = Instant::now();
        (hello(vip(80)), start.elapsed())
    });
    let kind = r.expect_err("no endpoint").kind();
    assert!(
        matches!(
            kind,
            ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused | ErrorKind::UnexpectedEof
        ),
        "{kind:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "refused at once, not a timeout: {took:?}"
    );

    svc.spec.as_mut().unwrap().load_balancer_source_ranges = Some(vec!["198.51.100.0/24".into()]);
    lab.apply(
        vec![svc],
        vec![slice("web", &[("198.18.1.2", true, false)])],
    );
    let r = in_ns(&cl, || hello(vip(80)));
    assert!(
        r.is_err(),
        "a client outside loadBalancerSourceRanges is refused: {r:?}"
    );
    assert!(lab.seen().is_empty(), "the backend never saw it");
}

#[test]
fn stop_removes_table_rules_and_routes_and_a_restart_reconciles() {
    let lab = Lab::new(ProxySettings::default(), false);
    lab.apply(
        vec![userspace("web")],
        vec![slice("web", &[("198.18.1.2", true, false)])],
    );
    let fw = lab.fw.clone();
    let state = move || {
        let fw = fw.clone();
        (
            sh(&["ip", "netns", "exec", &fw, "nft", "list", "tables"]),
            sh(&["ip", "-n", &fw, "-4", "rule", "show"])
                + &sh(&["ip", "-n", &fw, "-6", "rule", "show"]),
            sh(&["ip", "-n", &fw, "-4", "route", "show", "table", "2046"]),
        )
    };
    let (tables, rules, routes) = state();
    assert!(tables.contains("inet ferrolb-proxy"), "{tables}");
    assert_eq!(rules.matches("lookup 2046").count(), 2, "{rules}");
    assert!(routes.contains("local default dev lo"), "{routes}");
    // A crashed run leaves everything; a new one replaces it without duplicates.
    let cfg = InterceptConfig::default();
    let fe = BTreeSet::from([(
        VIP.parse().unwrap(),
        ferrolb_core::forward::Protocol::Tcp,
        81,
    )]);
    let fw = lab.fw.clone();
    in_ns(&fw, move || {
        Interceptor::new(cfg).apply(&fe).expect("restart")
    });
    let (tables, rules, _) = state();
    assert_eq!(rules.matches("lookup 2046").count(), 2, "{rules}");
    let ruleset = sh(&[
        "ip",
        "netns",
        "exec",
        &lab.fw,
        "nft",
        "list",
        "table",
        "inet",
        "ferrolb-proxy",
    ]);
    assert!(
        ruleset.contains("dport 81") && !ruleset.contains("dport 80 "),
        "{ruleset}"
    );
    assert_eq!(tables.matches("ferrolb-proxy").count(), 1);
    let cfg = InterceptConfig::default();
    in_ns(&lab.fw, move || {
        Interceptor::new(cfg).remove().expect("remove")
    });
    let (tables, rules, routes) = state();
    assert!(!tables.contains("ferrolb-proxy"), "{tables}");
    assert!(!rules.contains("2046"), "{rules}");
    assert!(routes.trim().is_empty(), "{routes}");
}

#[test]
fn ipv6_vip_gets_no_kernel_ndp_answer_and_reaches_every_backend() {
    let lab = Lab::new(ProxySettings::default(), false);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "web6",
                     "annotations": {"ferrolb.io/forwarding": "userspace"}},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "web", "port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": VIP6}]}}
    }))
    .unwrap();
    let mut sl = slice(
        "web6",
        &[
            ("2001:db8:b1::2", true, false),
            ("2001:db8:b2::2", true, false),
        ],
    );
    sl.address_type = "IPv6".into();
    let fe = lab.apply(vec![svc], vec![sl]);
    assert_eq!(fe.len(), 1, "{fe:?}");
    let ndisc = |target: &str| {
        Command::new("ip")
            .args([
                "netns", "exec", &lab.cl, "ndisc6", "-q", "-r", "2", "-w", "500", target, "eth0",
            ])
            .output()
            .unwrap()
            .status
            .success()
    };
    // The node's own address is answered once the link is up: the probe works.
    let start = Instant::now();
    while !ndisc("2001:db8:1::1") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no NDP answer from the node"
        );
    }
    assert!(!ndisc(VIP6), "the kernel answered NDP for the VIP");
    lab.learn_vip();
    let to = SocketAddr::new(VIP6.parse().unwrap(), 80);
    let names: BTreeSet<String> = in_ns(&lab.cl, move || {
        (0..10)
            .map(|_| hello(to).expect("hello over IPv6"))
            .collect()
    });
    assert_eq!(
        names,
        BTreeSet::from(["b1\n".to_string(), "b2\n".to_string()])
    );
}

/// UDP through the VIP: every flow (client socket) gets answers from the VIP:port, flows are
/// balanced over both backends, and with `proxy-protocol: v2` each datagram carries the header.
#[test]
fn udp_flows_are_balanced_and_answered_from_the_vip() {
    let lab = Lab::new(ProxySettings::default(), true);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "dns",
                     "annotations": {"ferrolb.io/forwarding": "userspace",
                                     "ferrolb.io/proxy-protocol": "v2"}},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "web", "port": 53, "protocol": "UDP"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": VIP}]}}
    }))
    .unwrap();
    let fe = lab.apply(
        vec![svc],
        vec![slice(
            "dns",
            &[("198.18.1.2", true, false), ("198.18.2.2", true, false)],
        )],
    );
    assert_eq!(fe.len(), 1, "{fe:?}");
    lab.learn_vip();
    let answers: Vec<String> = in_ns(&lab.cl, || {
        (0..6)
            .map(|i| {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                // Connected: only datagrams from the VIP:port are received.
                s.connect(vip(53)).unwrap();
                let mut out = String::new();
                for n in 0..2 {
                    s.send(format!("q{i}.{n}").as_bytes()).unwrap();
                    let mut buf = [0u8; 512];
                    let got = s.recv(&mut buf).expect("an answer from the VIP");
                    out += &String::from_utf8_lossy(&buf[..got]);
                    out += ";";
                }
                out
            })
            .collect()
    });
    let mut backends = BTreeSet::new();
    for (i, a) in answers.iter().enumerate() {
        let tag = &a[..2];
        assert_eq!(
            *a,
            format!("{tag} q{i}.0;{tag} q{i}.1;"),
            "one flow, one backend"
        );
        backends.insert(tag.to_string());
    }
    assert_eq!(
        backends,
        BTreeSet::from(["b1".to_string(), "b2".to_string()])
    );
    let seen = lab.seen();
    assert_eq!(seen.len(), 12);
    for s in &seen {
        let Some(Header::Proxy {
            source,
            destination,
            ..
        }) = s.header
        else {
            panic!("a datagram without a PROXY v2 header: {s:?}");
        };
        assert_eq!(source.ip(), "192.0.2.2".parse::<IpAddr>().unwrap());
        assert_eq!(destination, vip(53));
    }
    assert_eq!(lab.metrics.forwarded("default", "dns"), 6);
}

/// What a crashed earlier run leaves: the interception of a frontend nobody serves (port 9999).
fn leave_leftovers(lab: &Lab) {
    let stale = BTreeSet::from([(VIP.parse().unwrap(), Protocol::Tcp, 9999)]);
    in_ns(&lab.fw, move || {
        Interceptor::new(InterceptConfig::default())
            .apply(&stale)
            .expect("leftover")
    });
}

/// Starts the speaker's userspace loop in the proxy namespace on stores holding `services` and
/// `slices`, with the VIP announced; the task and the sender that stops it.
fn spawn_runner(
    lab: &Lab,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
    settings: UserspaceSettings,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let mut svc_writer = Writer::<Service>::default();
    let mut slice_writer = Writer::<EndpointSlice>::default();
    let (svc_store, slice_store) = (svc_writer.as_reader(), slice_writer.as_reader());
    svc_writer.apply_watcher_event(&Event::Init);
    for s in services {
        svc_writer.apply_watcher_event(&Event::InitApply(s));
    }
    svc_writer.apply_watcher_event(&Event::InitDone);
    slice_writer.apply_watcher_event(&Event::Init);
    for s in slices {
        slice_writer.apply_watcher_event(&Event::InitApply(s));
    }
    slice_writer.apply_watcher_event(&Event::InitDone);
    let announced = BTreeMap::from([(VIP.parse::<IpAddr>().unwrap(), ())]);
    // The sender is dropped here: the loop keeps the last announced IPs.
    let (_, announced) = tokio::sync::watch::channel(announced);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (metrics, handle) = (lab.metrics.clone(), lab.rt.handle().clone());
    let task = in_ns(&lab.fw, move || {
        let inputs = RunInputs {
            announced,
            services: svc_store,
            slices: slice_store,
            changed: None,
        };
        handle.spawn(run_userspace(inputs, settings, metrics, async {
            let _ = stop_rx.await;
        }))
    });
    (task, stop_tx)
}

/// The speaker's loop on real stores: it removes what an earlier run left, serves only the
/// annotated Service, and on stop removes the table, the rules and the routes.
#[test]
fn runner_serves_annotated_services_and_cleans_up_on_stop() {
    let lab = Lab::new(ProxySettings::default(), false);
    leave_leftovers(&lab);
    let slices = ["web", "kernel"].map(|n| slice(n, &[("198.18.1.2", true, false)]));
    let settings = UserspaceSettings {
        poll: Duration::from_millis(100),
        stop_grace: Duration::from_millis(200),
        ..UserspaceSettings::new(NODE)
    };
    let (task, stop_tx) = spawn_runner(
        &lab,
        vec![userspace("web"), service("kernel", json!({}))],
        slices.to_vec(),
        settings,
    );
    lab.learn_vip();
    let start = Instant::now();
    while curl(&lab).as_deref() != Ok("b1") {
        assert!(start.elapsed() < Duration::from_secs(10), "never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ruleset = sh(&[
        "ip",
        "netns",
        "exec",
        &lab.fw,
        "nft",
        "list",
        "table",
        "inet",
        "ferrolb-proxy",
    ]);
    assert_eq!(
        ruleset.matches("tproxy").count(),
        1,
        "only web:80: {ruleset}"
    );
    assert!(
        ruleset.contains("dport 80 ") && !ruleset.contains("9999"),
        "{ruleset}"
    );
    stop_tx.send(()).unwrap();
    lab.rt.block_on(task).expect("runner");
    let tables = sh(&["ip", "netns", "exec", &lab.fw, "nft", "list", "tables"]);
    assert!(!tables.contains("ferrolb-proxy"), "{tables}");
    let rules = sh(&["ip", "-n", &lab.fw, "rule", "show"]);
    assert!(!rules.contains("2046"), "{rules}");
    let routes = sh(&["ip", "-n", &lab.fw, "route", "show", "table", "2046"]);
    assert!(routes.trim().is_empty(), "{routes}");
    assert!(curl(&lab).is_err(), "nothing serves the VIP after stop");
}

/// An earlier run's table, rules and routes go away at start even when no Service asks for the
/// userspace path (then nothing is installed again).
#[test]
fn runner_removes_leftovers_without_userspace_services() {
    let lab = Lab::new(ProxySettings::default(), false);
    leave_leftovers(&lab);
    let (task, stop_tx) = spawn_runner(
        &lab,
        vec![service("kernel", json!({}))],
        Vec::new(),
        UserspaceSettings::new(NODE),
    );
    let start = Instant::now();
    loop {
        let tables = sh(&["ip", "netns", "exec", &lab.fw, "nft", "list", "tables"]);
        let rules = sh(&["ip", "-n", &lab.fw, "rule", "show"]);
        if !tables.contains("ferrolb-proxy") && !rules.contains("2046") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "leftovers stay: {tables} {rules}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let tables = sh(&["ip", "netns", "exec", &lab.fw, "nft", "list", "tables"]);
    assert!(
        !tables.contains("ferrolb-proxy"),
        "nothing installed again: {tables}"
    );
    stop_tx.send(()).unwrap();
    lab.rt.block_on(task).expect("runner");
}
