//! `cargo xtask bench forward`: the L4 forwarder against a hand-written nftables DNAT, on the
//! same network namespaces, in one invocation (issue 6, docs/decisions/0011-benchmarks.md).
//!
//! ```text
//! ferrolb-fwdbench-client          ferrolb-fwdbench-node            ferrolb-fwdbench-backend
//!   198.18.0.2 ── veth ── 198.18.0.1   (forwards)   198.18.1.1 ── veth ── 198.18.1.2, .3
//! ```
//! The VIP 198.18.100.1 is on no interface: the client routes it to the node, which DNATs it
//! (and masquerades, `externalTrafficPolicy: Cluster`) to both backend addresses. The backend
//! runs `iperf3 -s` (bulk) and the echo of `forward/examples/fwdbench.rs` (request/response,
//! connect/request/close); the load generator is the same example in the client namespace.
//!
//! Per round, in alternating order, each [`Subject`] installs its rules in the node namespace,
//! the three loads run, and the rules are removed. Then the kernel path's rule updates with
//! `--services` Services (full apply, one-Service updates) and the connection rate with them
//! present, against one Service just before and after.
//!
//! The userspace path (forward/src/userspace/) adds its subject and HAProxy as its baseline
//! to [`comparisons`], behind a `--userspace` flag in [`Args`], with its own goals.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::write_json;
use crate::run;

#[path = "forward_userspace.rs"]
mod userspace;

/// Options of `cargo xtask bench forward`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Rounds of the three loads per subject (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per load.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrent connections of the request/response and connect/request/close loads.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Services present for the rule-update and connection-rate-at-scale measurements.
    #[arg(long, default_value_t = 10_000)]
    services: u32,
    /// One-Service updates timed with `--services` present.
    #[arg(long, default_value_t = 50)]
    updates: u32,
    /// Also the userspace path, against the baseline and HAProxy (forward_userspace.rs).
    #[arg(long)]
    userspace: bool,
    /// With `--userspace`: connect/request/close through the userspace path for this many
    /// seconds, reported per 10 s window with the decline of the last against the first
    /// (after the same soak through the nftables baseline as the control: twice the time).
    #[arg(long, requires = "userspace", value_name = "SECONDS")]
    soak: Option<u64>,
}

const CLIENT: &str = "ferrolb-fwdbench-client";
const NODE: &str = "ferrolb-fwdbench-node";
const BACKEND: &str = "ferrolb-fwdbench-backend";
const VIP: &str = "198.18.100.1";
const BACKENDS: [&str; 2] = ["198.18.1.2", "198.18.1.3"];
const IPERF_PORT: u16 = 5201;
const ECHO_PORT: u16 = 7000;
const FERROLB_TABLE: &str = "ferrolb-fwdbench";
const BASELINE_TABLE: &str = "fwdbench_baseline";

/// Something that forwards VIP traffic in the node namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    /// FerroLB's kernel path: `NftForwarder` applying the plan of one Service.
    Kernel,
    /// A hand-written nftables DNAT doing the same (random pick of two backends, masquerade).
    NftBaseline,
    /// FerroLB's userspace path (TPROXY + `TcpProxy`).
    Userspace,
    /// HAProxy in TCP mode behind the same interception.
    Haproxy,
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::Kernel => "ferrolb kernel",
            Subject::NftBaseline => "nft DNAT baseline",
            Subject::Userspace => "ferrolb userspace",
            Subject::Haproxy => "haproxy tcp",
        }
    }

    fn install(self, bin: &Path) -> anyhow::Result<()> {
        match self {
            Subject::Kernel => kernel_apply(bin, 1).map(drop),
            Subject::NftBaseline => nft(&baseline_rules()),
            Subject::Userspace | Subject::Haproxy => userspace::install(self, bin),
        }
    }

    fn remove(self) -> anyhow::Result<()> {
        let table = match self {
            Subject::Kernel => format!("inet {FERROLB_TABLE}"),
            Subject::NftBaseline => format!("ip {BASELINE_TABLE}"),
            Subject::Userspace | Subject::Haproxy => return userspace::remove(self),
        };
        nft(&format!("add table {table}\ndelete table {table}\n"))
    }
}

/// One path under test and what it is measured against, with its goals (ratios ours/baseline).
struct Comparison {
    ours: Subject,
    baseline: Subject,
    /// Minimum ratio for bulk, request/response, connect/request/close.
    min_ratio: [f64; 3],
    /// Maximum microseconds added to p99 latency (request/response, connect/request/close).
    max_added_p99_us: f64,
}

/// The comparisons this invocation runs.
fn comparisons(args: &Args) -> Vec<Comparison> {
    let mut v = vec![Comparison {
        ours: Subject::Kernel,
        baseline: Subject::NftBaseline,
        min_ratio: [0.95, 0.95, 0.95],
        max_added_p99_us: 5.0,
    }];
    if args.userspace {
        v.extend(userspace::comparisons());
    }
    v
}

/// The baseline: what an operator would write by hand for the same Service.
fn baseline_rules() -> String {
    let t = format!("ip {BASELINE_TABLE}");
    format!(
        "add table {t}\n\
         add chain {t} pre {{ type nat hook prerouting priority dstnat; policy accept; }}\n\
         add chain {t} post {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         add rule {t} pre ip daddr {VIP} meta l4proto {{ tcp, udp }} th dport {{ {IPERF_PORT}, {ECHO_PORT} }} dnat to numgen random mod 2 map {{ 0 : {}, 1 : {} }}\n\
         add rule {t} post ct status dnat oifname \"fwb-be\" masquerade fully-random\n",
        BACKENDS[0], BACKENDS[1]
    )
}

fn ip_netns(ns: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]);
    c
}

fn nft(script: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = ip_netns(NODE)
        .args(["nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("spawning nft")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "nft failed on:\n{script}");
    Ok(())
}

/// Applies the bench Service plus `services - 1` others with FerroLB (`updates` one-Service
/// changes after); the example's JSON.
fn kernel_rules(bin: &Path, services: u32, updates: u32) -> anyhow::Result<Value> {
    let ports = format!("{IPERF_PORT},{ECHO_PORT}");
    let backends = BACKENDS.join(",");
    let n = services.to_string();
    let u = updates.to_string();
    let mut args = vec!["apply", FERROLB_TABLE, VIP, &ports, &backends, &n];
    if updates > 0 {
        args[0] = "updates";
        args.push(&u);
    }
    let out = run::output(ip_netns(NODE).arg(bin).args(&args))?;
    serde_json::from_str(out.trim()).with_context(|| format!("fwdbench output {out:?}"))
}

fn kernel_apply(bin: &Path, services: u32) -> anyhow::Result<Value> {
    kernel_rules(bin, services, 0)
}

fn sh(args: &[&str]) -> anyhow::Result<()> {
    run::status(Command::new(args[0]).args(&args[1..]))
}

fn teardown() {
    for ns in [CLIENT, NODE, BACKEND] {
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
    }
}

fn setup() -> anyhow::Result<()> {
    teardown();
    for ns in [CLIENT, NODE, BACKEND] {
        sh(&["ip", "netns", "add", ns])?;
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    }
    let links = [
        (CLIENT, "fwb-cl", "198.18.0.1/24", &["198.18.0.2/24"][..]),
        (
            BACKEND,
            "fwb-be",
            "198.18.1.1/24",
            &["198.18.1.2/24", "198.18.1.3/24"][..],
        ),
    ];
    for (peer, dev, node_addr, peer_addrs) in links {
        sh(&[
            "ip", "-n", NODE, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns",
            peer,
        ])?;
        sh(&["ip", "-n", NODE, "addr", "add", node_addr, "dev", dev])?;
        for a in peer_addrs {
            sh(&["ip", "-n", peer, "addr", "add", a, "dev", "eth0"])?;
        }
        sh(&["ip", "-n", NODE, "link", "set", dev, "up"])?;
        sh(&["ip", "-n", peer, "link", "set", "eth0", "up"])?;
        let gw = node_addr.split('/').next().expect("address");
        sh(&["ip", "-n", peer, "route", "add", "default", "via", gw])?;
    }
    let sysctl = |ns: &str, kv: &str| run::status(ip_netns(ns).args(["sysctl", "-qw", kv]));
    sysctl(NODE, "net.ipv4.ip_forward=1")?;
    // Connect/request/close opens tens of thousands of connections from one address.
    sysctl(CLIENT, "net.ipv4.ip_local_port_range=1024 65000")?;
    sysctl(CLIENT, "net.ipv4.tcp_tw_reuse=1")?;
    Ok(())
}

/// Background processes killed (by their own id) when dropped.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_servers(bin: &Path) -> anyhow::Result<Servers> {
    let quiet = |c: &mut Command| -> anyhow::Result<Child> {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| run::describe(c))
    };
    let servers = Servers(vec![
        quiet(ip_netns(BACKEND).args(["iperf3", "-s", "-p", &IPERF_PORT.to_string()]))?,
        quiet(
            ip_netns(BACKEND)
                .arg(bin)
                .args(["serve", &ECHO_PORT.to_string()]),
        )?,
    ]);
    // Both listen within milliseconds; give them a moment on a loaded machine.
    for _ in 0..50 {
        let listening = run::output(ip_netns(BACKEND).args(["ss", "-Hltn"]))?;
        if [IPERF_PORT, ECHO_PORT]
            .iter()
            .all(|p| listening.contains(&format!(":{p} ")))
        {
            return Ok(servers);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the backend servers did not start listening")
}

/// Figures of one load: ops (or bits) per second, p50 and p99 latency in µs where it has them.
#[derive(Debug, Clone, Copy, Default)]
struct Figure {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

fn bulk(seconds: f64) -> anyhow::Result<Figure> {
    let out = run::output(ip_netns(CLIENT).args([
        "iperf3",
        "-J",
        "-c",
        VIP,
        "-p",
        &IPERF_PORT.to_string(),
        "-t",
        &format!("{}", seconds.ceil() as u64),
    ]))?;
    let v: Value = serde_json::from_str(&out).context("iperf3 JSON")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no end.sum_received.bits_per_second")?;
    Ok(Figure {
        rate: bps,
        ..Figure::default()
    })
}

fn load(bin: &Path, kind: &str, args: &Args) -> anyhow::Result<Figure> {
    let out = run::output(ip_netns(CLIENT).arg(bin).args([
        "load",
        kind,
        &format!("{VIP}:{ECHO_PORT}"),
        &args.connections.to_string(),
        &args.seconds.to_string(),
    ]))?;
    let v: Value = serde_json::from_str(out.trim()).context("load JSON")?;
    let f = |k: &str| v[k].as_f64().with_context(|| format!("load JSON: {k}"));
    let errors = f("errors")?;
    if errors > 0.0 {
        eprintln!("  {kind}: {errors} failed operations");
    }
    Ok(Figure {
        rate: f("ops_per_s")?,
        p50_us: f("p50_us")?,
        p99_us: f("p99_us")?,
    })
}

/// Bulk, request/response, connect/request/close through whatever the node has installed.
fn three_loads(bin: &Path, args: &Args) -> anyhow::Result<[Figure; 3]> {
    Ok([
        bulk(args.seconds)?,
        load(bin, "rr", args)?,
        load(bin, "crr", args)?,
    ])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A pause after replacing the table before measuring through it.
const SETTLE: Duration = Duration::from_secs(2);

const LOADS: [&str; 3] = ["bulk", "request/response", "connect/request/close"];

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

/// Runs the benchmark.
pub fn run(root: &Path, args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        run::is_root(),
        "bench forward needs root (network namespaces)"
    );
    anyhow::ensure!(args.services >= 2, "--services must be at least 2");
    anyhow::ensure!(
        args.soak.is_none_or(|s| s >= 2 * userspace::WINDOW_S),
        "--soak needs at least two {} s windows",
        userspace::WINDOW_S
    );
    run::status(Command::new("cargo").current_dir(root).args([
        "build",
        "--release",
        "-p",
        "ferrolb-forward",
        "--example",
        "fwdbench",
        "--example",
        "userspace_proxy",
    ]))?;
    let bin: PathBuf = root.join("target/release/examples/fwdbench");
    // The namespaces have fixed names: a second run would tear down the first's.
    let _lock = exclusive(root)?;
    setup()?;
    let result = start_servers(&bin).and_then(|servers| {
        let r = measure(&bin, &args);
        drop(servers);
        r
    });
    teardown();
    let report = result?;
    let path = write_json(root, "forward", &report)?;
    println!("figures: {}", path.display());
    Ok(())
}

/// Holds `target/bench/forward.lock` (waiting while another run holds it) until dropped.
fn exclusive(root: &Path) -> anyhow::Result<std::fs::File> {
    let path = super::out_path(root, "forward").with_extension("lock");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(&path).with_context(|| format!("{}", path.display()))?;
    if file.try_lock().is_err() {
        eprintln!("another bench forward holds {}; waiting", path.display());
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(file)
}

fn measure(bin: &Path, args: &Args) -> anyhow::Result<Value> {
    let mut out = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "commit": run::output(Command::new("git").args(["rev-parse", "HEAD"])).unwrap_or_default().trim(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "seconds": args.seconds, "connections": args.connections,
    });
    let mut rows = Vec::new();
    let mut all_rounds = Vec::new();
    for cmp in comparisons(args) {
        let mut rounds: Vec<(Subject, [Figure; 3])> = Vec::new();
        for round in 0..args.rounds {
            let order = if round % 2 == 0 {
                [cmp.baseline, cmp.ours]
            } else {
                [cmp.ours, cmp.baseline]
            };
            for subject in order {
                subject.install(bin)?;
                let figs = three_loads(bin, args);
                subject.remove()?;
                let figs = figs?;
                eprintln!(
                    "round {round} {:<18} bulk {:.2} Gbit/s  rr {:.0}/s p99 {:.1} us  crr {:.0}/s p99 {:.1} us",
                    subject.name(),
                    figs[0].rate / 1e9,
                    figs[1].rate,
                    figs[1].p99_us,
                    figs[2].rate,
                    figs[2].p99_us
                );
                rounds.push((subject, figs));
            }
        }
        let pick = |s: Subject, i: usize, f: fn(&Figure) -> f64| -> f64 {
            median(
                rounds
                    .iter()
                    .filter(|(r, _)| *r == s)
                    .map(|(_, figs)| f(&figs[i]))
                    .collect(),
            )
        };
        println!(
            "\n{} vs {} (medians of {} rounds, {} s each, {} connections)",
            cmp.ours.name(),
            cmp.baseline.name(),
            args.rounds,
            args.seconds,
            args.connections
        );
        println!(
            "load                    ours            baseline        ratio  goal     p50 us (ours/base)  p99 us (ours/base)  added p99"
        );
        for (i, load) in LOADS.iter().enumerate() {
            let (o, b) = (
                pick(cmp.ours, i, |f| f.rate),
                pick(cmp.baseline, i, |f| f.rate),
            );
            let ratio = o / b;
            let unit = |v: f64| {
                if i == 0 {
                    format!("{:.2} Gbit/s", v / 1e9)
                } else {
                    format!("{v:.0}/s")
                }
            };
            let mut row = json!({
                "comparison": format!("{} / {}", cmp.ours.name(), cmp.baseline.name()),
                "load": load, "ours": o, "baseline": b, "ratio": ratio,
                "goal_ratio": cmp.min_ratio[i], "ratio_ok": ratio >= cmp.min_ratio[i],
            });
            let mut lat = String::new();
            if i > 0 {
                let p = |s, f: fn(&Figure) -> f64| pick(s, i, f);
                let (o50, b50) = (p(cmp.ours, |f| f.p50_us), p(cmp.baseline, |f| f.p50_us));
                let (o99, b99) = (p(cmp.ours, |f| f.p99_us), p(cmp.baseline, |f| f.p99_us));
                let added = o99 - b99;
                let ok = added <= cmp.max_added_p99_us;
                lat = format!(
                    "{o50:>7.1}/{b50:<7.1}     {o99:>7.1}/{b99:<7.1}     {added:+.1} us {}",
                    verdict(ok)
                );
                row["p50_us"] = json!({"ours": o50, "baseline": b50});
                row["p99_us"] = json!({"ours": o99, "baseline": b99, "added": added,
                    "goal_added_max": cmp.max_added_p99_us, "ok": ok});
            }
            println!(
                "{load:<23} {:<15} {:<15} {ratio:.3}  {:<7}  {lat}",
                unit(o),
                unit(b),
                format!(
                    "{} {}",
                    verdict(ratio >= cmp.min_ratio[i]),
                    cmp.min_ratio[i]
                )
            );
            rows.push(row);
        }
        all_rounds.extend(rounds.iter().map(|(s, f)| {
            json!({"subject": s.name(),
                "bulk_bps": f[0].rate,
                "rr": {"per_s": f[1].rate, "p50_us": f[1].p50_us, "p99_us": f[1].p99_us},
                "crr": {"per_s": f[2].rate, "p50_us": f[2].p50_us, "p99_us": f[2].p99_us}})
        }));
    }
    out["rounds"] = json!(all_rounds);
    out["comparisons"] = json!(rows);
    if let Some(seconds) = args.soak {
        let baseline = median(
            all_rounds
                .iter()
                .filter(|r| r["subject"] == Subject::NftBaseline.name())
                .filter_map(|r| r["crr"]["per_s"].as_f64())
                .collect(),
        );
        out["soak"] = userspace::soak(bin, args, seconds, baseline)?;
    }
    out["scale"] = scale(bin, args)?;
    Ok(out)
}

/// Rule updates with `--services` present, and the connection rate with them against one.
fn scale(bin: &Path, args: &Args) -> anyhow::Result<Value> {
    let n = args.services;
    kernel_apply(bin, 1)?;
    let one_before = load(bin, "crr", args)?;
    let rules = kernel_rules(bin, n, args.updates)?;
    // Replacing a table frees its objects in deferred kernel work; let it finish first.
    std::thread::sleep(SETTLE);
    let many = load(bin, "crr", args);
    kernel_apply(bin, 1)?;
    std::thread::sleep(SETTLE);
    let one_after = load(bin, "crr", args)?;
    Subject::Kernel.remove()?;
    let many = many?;
    let full_ms = rules["full_ms"].as_f64().context("full_ms")?;
    let mut upd: Vec<f64> = rules["update_ms"]
        .as_array()
        .context("update_ms")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    upd.sort_by(f64::total_cmp);
    let q = |p: f64| upd[((p * upd.len() as f64).ceil() as usize).clamp(1, upd.len()) - 1];
    let (p50, p99) = if upd.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        (q(0.5), q(0.99))
    };
    let one = (one_before.rate + one_after.rate) / 2.0;
    let ratio = many.rate / one;
    println!(
        "\nferrolb kernel with {n} Services (each TCP+UDP on one port, one to three endpoints)"
    );
    println!(
        "full apply            {full_ms:>9.1} ms ({})          goal < 1000 ms  {}",
        rules["full_route"].as_str().unwrap_or("?"),
        verdict(full_ms < 1000.0)
    );
    println!(
        "one-Service update    p50 {p50:.1} ms, p99 {p99:.1} ms ({} updates, {} over netlink)  goal p99 < 50 ms  {}",
        upd.len(),
        rules["over_netlink"],
        verdict(p99 < 50.0)
    );
    println!(
        "CPU of an apply       full {} ms, update mean {} ms (ours, the kernel's and nft's; wall above includes waiting for a CPU)",
        rules["full_cpu_ms"], rules["update_cpu_ms_mean"]
    );
    println!(
        "connect/request/close {:.0}/s vs {one:.0}/s with one Service: {ratio:.3}  goal >= 0.9  {}",
        many.rate,
        verdict(ratio >= 0.9)
    );
    Ok(json!({
        "services": n, "full_ms": full_ms, "full_bytes": rules["full_bytes"], "full_route": rules["full_route"],
        "full_cpu_ms": rules["full_cpu_ms"], "update_cpu_ms_mean": rules["update_cpu_ms_mean"],
        "update_ms": {"p50": p50, "p99": p99, "all": upd}, "over_netlink": rules["over_netlink"],
        "crr_per_s": {"one_before": one_before.rate, "one_after": one_after.rate, "many": many.rate,
            "ratio": ratio, "many_p99_us": many.p99_us, "one_p99_us": (one_before.p99_us + one_after.p99_us) / 2.0},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_run_at_a_time() {
        let root = std::env::temp_dir().join(format!("fwdbench-lock-{}", std::process::id()));
        let first = exclusive(&root).unwrap();
        let path = root.join("target/bench/forward.lock");
        let second = std::fs::File::open(&path).unwrap();
        assert!(second.try_lock().is_err(), "a second run must wait");
        drop(first);
        assert!(
            second.try_lock().is_ok(),
            "the lock is released with the first run"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
