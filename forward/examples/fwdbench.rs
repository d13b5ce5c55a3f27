//! The release-built half of `cargo xtask bench forward` (xtask/src/bench/forward.rs), run by
//! it inside the bench's network namespaces with `ip netns exec`:
//!
//! - `serve <port>`: a TCP echo server (the backends);
//! - `load rr|crr <vip:port> <connections> <seconds>`: request/response over persistent
//!   connections, or connect/request/close, 64-byte messages; prints JSON (ops/s, p50/p99 µs);
//! - `apply <table> <vip> <port,…> <backend,…> <services>`: FerroLB's kernel path, driven
//!   through `NftForwarder` with no Kubernetes: the bench Service (TCP and UDP on each port)
//!   plus `services - 1` others, one full transaction, the table left in place for the load
//!   that follows;
//! - `updates <table> <vip> <port,…> <backend,…> <services> <updates>`: the same full apply,
//!   timed, then one Service changed per transaction; prints JSON (full and per-update ms).
//!
//! Every figure is printed as one JSON line on stdout; errors go to stderr with a non-zero exit.

use ferrolb_core::forward::{
    Endpoint, EndpointConditions, ForwardService, ForwardingPlan, Protocol, ServiceKey,
    ServicePort, SessionAffinity, TrafficPolicy, plan,
};
use ferrolb_forward::{ApplyKind, ApplyRoute, NftForwarder};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const NODE: &str = "fwdbench-node";
const MSG: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match a.as_slice() {
        ["serve", port] => serve(parse(port, "port")),
        ["load", kind, to, conns, secs] => load(
            kind,
            parse(to, "vip:port"),
            parse(conns, "connections"),
            Duration::from_secs_f64(parse(secs, "seconds")),
        ),
        ["apply", table, vip, ports, backends, n] => apply(
            table,
            &bench_service(vip, ports, backends),
            parse(n, "services"),
            0,
        ),
        ["updates", table, vip, ports, backends, n, updates] => apply(
            table,
            &bench_service(vip, ports, backends),
            parse(n, "services"),
            parse(updates, "updates"),
        ),
        _ => Err(format!(
            "usage: fwdbench serve <port> | load rr|crr <vip:port> <conns> <secs> | \
             apply <table> <vip> <port,…> <be,…> <services> | \
             updates <table> <vip> <port,…> <be,…> <services> <updates>; got {args:?}"
        )),
    };
    if let Err(e) = result {
        eprintln!("fwdbench: {e}");
        std::process::exit(1);
    }
}

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> T {
    s.parse().unwrap_or_else(|_| {
        eprintln!("fwdbench: {what}: cannot parse {s:?}");
        std::process::exit(2)
    })
}

/// The Service the load goes through: `vip`, TCP and UDP on each port, to `backends` on the
/// same ports.
fn bench_service(vip: &str, ports: &str, backends: &str) -> ForwardService {
    let ports: Vec<u16> = ports.split(',').map(|p| parse(p, "port")).collect();
    let backends: Vec<IpAddr> = backends
        .split(',')
        .map(|a| parse(a, "backend address"))
        .collect();
    service("target".into(), parse(vip, "vip"), &ports, &backends)
}

/// Echoes whatever arrives, one thread per connection.
fn serve(port: u16) -> Result<(), String> {
    let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("bind: {e}"))?;
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let _ = conn.set_nodelay(true);
            let mut buf = [0u8; 4096];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

/// One exchange on `s`: send a message, read its echo.
fn exchange(s: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = [7u8; MSG];
    s.write_all(&buf)?;
    s.read_exact(&mut buf)
}

/// `conns` threads doing `kind` until `secs` pass; latencies of every operation.
fn load(kind: &str, to: SocketAddr, conns: usize, secs: Duration) -> Result<(), String> {
    let persistent = match kind {
        "rr" => true,
        "crr" => false,
        _ => return Err(format!("load kind {kind:?}: expected rr or crr")),
    };
    let start = Instant::now();
    let deadline = start + secs;
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            std::thread::spawn(move || -> Result<(Vec<u32>, u64), String> {
                let mut lat = Vec::with_capacity(1 << 16);
                let mut errors = 0;
                let connect = || -> std::io::Result<TcpStream> {
                    let s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
                    s.set_nodelay(true)?;
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    Ok(s)
                };
                let mut held = if persistent {
                    Some(connect().map_err(|e| format!("connect {to}: {e}"))?)
                } else {
                    None
                };
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let ok = match held.as_mut() {
                        Some(s) => exchange(s).is_ok(),
                        None => connect().and_then(|mut s| exchange(&mut s)).is_ok(),
                    };
                    if ok {
                        lat.push(t0.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                    } else {
                        errors += 1;
                        if persistent {
                            held = Some(connect().map_err(|e| format!("reconnect {to}: {e}"))?);
                        }
                    }
                }
                Ok((lat, errors))
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (lat, e) = w.join().map_err(|_| "load thread panicked")??;
        all.extend(lat);
        errors += e;
    }
    let took = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let q = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let rank = ((p * all.len() as f64).ceil() as usize).clamp(1, all.len());
        f64::from(all[rank - 1]) / 1e3
    };
    println!(
        "{{\"ops\":{},\"errors\":{errors},\"seconds\":{took:.3},\"ops_per_s\":{:.1},\"p50_us\":{:.1},\"p99_us\":{:.1}}}",
        all.len(),
        all.len() as f64 / took,
        q(0.5),
        q(0.99)
    );
    Ok(())
}

fn endpoint(ip: IpAddr, ports: &[u16]) -> Endpoint {
    Endpoint {
        ip,
        ports: ports.iter().map(|p| (format!("p{p}"), *p)).collect(),
        conditions: EndpointConditions {
            ready: true,
            serving: true,
            terminating: false,
        },
        node: Some(NODE.into()),
    }
}

fn service(name: String, vip: IpAddr, ports: &[u16], backends: &[IpAddr]) -> ForwardService {
    ForwardService {
        key: ServiceKey::new("bench", name),
        vips: vec![vip],
        ports: ports
            .iter()
            .flat_map(|port| {
                [Protocol::Tcp, Protocol::Udp].map(|protocol| ServicePort {
                    name: format!("p{port}"),
                    protocol,
                    port: *port,
                })
            })
            .collect(),
        external_traffic_policy: TrafficPolicy::Cluster,
        session_affinity: SessionAffinity::None,
        source_ranges: vec![],
        endpoints: backends.iter().map(|b| endpoint(*b, ports)).collect(),
    }
}

/// `target` and `n - 1` others on VIPs of 198.18.128.0/17, one port and one, two or three
/// endpoints (of 198.51.100.0/24; two on average), as in a cluster with that many Services on
/// one node: every small endpoint count is some Service's, so its shared pick chain exists.
fn services(target: &ForwardService, n: u32) -> Vec<ForwardService> {
    let mut v = vec![target.clone()];
    let backends: [IpAddr; 3] = [[198, 51, 100, 10], [198, 51, 100, 11], [198, 51, 100, 12]]
        .map(|o| Ipv4Addr::from(o).into());
    for i in 1..n {
        let vip = Ipv4Addr::new(198, 18, 128 + (i / 250 % 120) as u8, (i % 250 + 1) as u8);
        let port = 1000 + (i / 30_000) as u16;
        let count = 1 + i as usize % 3;
        v.push(service(
            format!("svc{i}"),
            vip.into(),
            &[port],
            &backends[..count],
        ));
    }
    v
}

fn plan_of(services: &[ForwardService]) -> ForwardingPlan {
    plan(services, NODE).plan
}

/// Full apply of `n` Services, then `updates` one-Service changes of a filler Service (its
/// endpoints cycling 1, 2, 3, 1: count changes and swaps), the bench Service kept throughout.
fn apply(table: &str, target: &ForwardService, n: u32, updates: u32) -> Result<(), String> {
    if target.endpoints.is_empty() || n == 0 {
        return Err("need at least one backend and one Service".into());
    }
    // FWDBENCH_NFT_ONLY=1: every transaction through `nft -f`, for an A/B of the netlink route.
    let mut fwd = if std::env::var_os("FWDBENCH_NFT_ONLY").is_some() {
        NftForwarder::new(table).with_command(vec!["nft".into()])
    } else {
        NftForwarder::new(table)
    };
    let mut svcs = services(target, n);
    let first = plan_of(&svcs);
    let cpu0 = cpu_ms();
    let full = fwd.apply(&first).map_err(|e| e.to_string())?;
    let full_cpu = cpu_ms() - cpu0;
    let mut update_cpu = 0.0;
    let mut took = Vec::new();
    let mut over_netlink = 0;
    let victim = (n / 2).max(1) as usize;
    for round in 0..updates {
        if victim >= svcs.len() {
            return Err("updates need at least two Services".into());
        }
        let port = svcs[victim].ports[0].port;
        let ips: &[[u8; 4]] = match round % 4 {
            0 => &[[198, 51, 100, 10]],
            1 => &[[198, 51, 100, 10], [198, 51, 100, 11]],
            2 => &[[198, 51, 100, 11], [198, 51, 100, 10], [198, 51, 100, 12]],
            _ => &[[198, 51, 100, 11]],
        };
        svcs[victim].endpoints = ips
            .iter()
            .map(|o| endpoint(Ipv4Addr::from(*o).into(), &[port]))
            .collect();
        let next = plan_of(&svcs);
        let cpu0 = cpu_ms();
        let r = fwd.apply(&next).map_err(|e| e.to_string())?;
        update_cpu += cpu_ms() - cpu0;
        if (r.kind, r.services_changed) != (ApplyKind::Incremental, 1) {
            return Err(format!(
                "update {round}: expected one incremental change, got {:?} of {}",
                r.kind, r.services_changed
            ));
        }
        took.push(r.elapsed.as_secs_f64() * 1e3);
        over_netlink += usize::from(r.route == ApplyRoute::Netlink);
        // As the speaker does, beside the next apply; here after it, out of the timing.
        fwd.flusher().flush(&r.stale);
    }
    let update_cpu = update_cpu / f64::from(updates.max(1));
    let list: Vec<String> = took.iter().map(|t| format!("{t:.3}")).collect();
    println!(
        "{{\"services\":{n},\"full_ms\":{:.3},\"full_cpu_ms\":{full_cpu:.0},\"full_bytes\":{},\"full_route\":\"{:?}\",\"update_ms\":[{}],\"update_cpu_ms_mean\":{update_cpu:.1},\"over_netlink\":{over_netlink}}}",
        full.elapsed.as_secs_f64() * 1e3,
        full.script.len(),
        full.route,
        list.join(",")
    );
    Ok(())
}

/// User plus system CPU milliseconds of this process (netlink batches: the kernel's commit runs
/// in our `sendto`) and its waited-for children (`nft` runs, kernel work in them included):
/// on a busy machine wall time says more about the other load than about the update. Read
/// around each apply only, so neither building the plan nor the conntrack flush counts.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name (the first is field 3): utime, stime,
    // cutime and cstime are fields 14 to 17.
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    let ticks: u64 = rest
        .split(' ')
        .skip(11)
        .take(4)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on every architecture Linux user space sees.
    ticks as f64 * 10.0
}
