//! The lab: a cluster on one machine. Nodes are network namespaces on a shared
//! LAN bridge, each running the process kubelet; a client and a router sit on
//! the same LAN, and a remote client behind the router. DESIGN.md has the
//! address plan; `Plan` below is its single source in code.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::{controlplane, run};

/// What `cargo xtask lab` can do.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Make the topology, start the control plane and one kubelet per node (clears leftovers first).
    Up {
        /// How many nodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
        nodes: u8,
    },
    /// Stop everything the lab started and remove every namespace, link and process it made.
    Down,
    /// Show the lab's namespaces, kubelets and control plane.
    Status,
    /// Build the workspace's FerroLB and install (or upgrade) it in the running lab with helm from charts/ferrolb.
    Deploy,
}

/// Prefixes of the network namespaces the lab makes for nodes and pods; `down`
/// sweeps them, with the fixed names below. Other tests' namespaces
/// (`ferrolb-bgptest-*`, `ferrolb-fwdtest-*`) are not the lab's and are left alone.
pub const NS_PREFIXES: [&str; 2] = ["ferrolb-node-", "ferrolb-pod-"];
/// The namespace holding the LAN bridge (a switch).
pub const LAN_NS: &str = "ferrolb-lan";
/// The client on the LAN.
pub const CLIENT_NS: &str = "ferrolb-client";
/// The router between the LAN and the remote network.
pub const ROUTER_NS: &str = "ferrolb-router";
/// The client behind the router.
pub const REMOTE_CLIENT_NS: &str = "ferrolb-remote-client";
/// Prefix of the host-side ends of node management links.
const MGMT_LINK_PREFIX: &str = "flb-m";

/// The addresses of one node (N = 1..=9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    /// 1-based index.
    pub index: u8,
    /// `node-N`: the Node object's name.
    pub name: String,
    /// `ferrolb-node-N`.
    pub netns: String,
    /// 192.0.2.(10+N).
    pub lan4: String,
    /// 2001:db8:0:1::(10+N).
    pub lan6: String,
    /// A fixed, locally administered MAC for the node's LAN interface.
    pub lan_mac: String,
    /// 198.19.0.(10+N).
    pub mgmt4: String,
    /// 198.18.N.0/24.
    pub pod_cidr4: String,
    /// 2001:db8:1:N::/64.
    pub pod_cidr6: String,
}

impl NodePlan {
    /// The plan for node `index`.
    pub fn new(index: u8) -> Self {
        Self {
            index,
            name: format!("node-{index}"),
            netns: format!("ferrolb-node-{index}"),
            lan4: format!("192.0.2.{}", 10 + u16::from(index)),
            lan6: format!("2001:db8:0:1::{}", 10 + u16::from(index)),
            lan_mac: format!("02:fe:c0:00:02:{:02x}", 10 + index),
            mgmt4: format!("198.19.0.{}", 10 + u16::from(index)),
            pod_cidr4: format!("198.18.{index}.0/24"),
            pod_cidr6: format!("2001:db8:1:{index}::/64"),
        }
    }
    fn pod_gw4(&self) -> String {
        format!("198.18.{}.1", self.index)
    }
    fn pod_gw6(&self) -> String {
        format!("2001:db8:1:{}::1", self.index)
    }
}

/// Runs `ip` inside a namespace (or the host's when `ns` is empty).
fn ip(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new("ip");
    if !ns.is_empty() {
        cmd.args(["-n", ns]);
    }
    run::status(cmd.args(args).stdout(Stdio::null()))
}

fn sysctl(ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
    run::status(
        Command::new("ip")
            .args(["netns", "exec", ns, "sysctl", "-q", "-w"])
            .arg(format!("{key}={value}")),
    )
}

/// Whether `up` builds the workspace's binaries first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// Build them (a no-op when they are up to date).
    Binaries,
    /// The caller just built them.
    Skip,
}

/// Runs one `lab` action.
pub fn run(root: &Path, action: Action) -> anyhow::Result<()> {
    match action {
        Action::Up { nodes } => up(root, nodes, Build::Binaries),
        Action::Down => down(root),
        Action::Status => status(root),
        Action::Deploy => crate::deploy::run(root),
    }
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if !run::is_root() {
        bail!(
            "{what} needs root (network namespaces, links and routes): run it as root, e.g. `sudo -E cargo xtask lab up`"
        );
    }
    Ok(())
}

fn nodes_dir(root: &Path) -> PathBuf {
    crate::lab_dir(root).join("nodes")
}

/// Brings the lab up with `nodes` nodes, from whatever state it is in.
pub fn up(root: &Path, nodes: u8, build: Build) -> anyhow::Result<()> {
    require_root("`cargo xtask lab up`")?;
    let started = Instant::now();
    clear(root)?;
    // The kubelet maps images to the workspace's binaries, so they must exist
    // before pods run. The same package set as the test command's build, so
    // neither rebuilds dependencies with other features than the other.
    if build == Build::Binaries {
        run::status(
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .current_dir(root)
                .args(["build", "--quiet", "--workspace", "--bins"]),
        )?;
    }
    controlplane::up(root)?;
    let plans: Vec<NodePlan> = (1..=nodes).map(NodePlan::new).collect();
    make_topology(&plans).context("making the lab's topology")?;
    for plan in &plans {
        start_kubelet(root, plan)?;
    }
    wait_nodes_ready(root, &plans)?;
    eprintln!(
        "lab up with {nodes} nodes in {:.1?}\n  KUBECONFIG={}\n  ip netns exec {CLIENT_NS} curl http://<EXTERNAL-IP>/\n  cargo xtask lab down",
        started.elapsed(),
        controlplane::kubeconfig(root).display()
    );
    Ok(())
}

fn make_topology(plans: &[NodePlan]) -> anyhow::Result<()> {
    // The switch.
    ip("", &["netns", "add", LAN_NS])?;
    ip(LAN_NS, &["link", "add", "br0", "type", "bridge"])?;
    ip(LAN_NS, &["link", "set", "br0", "up"])?;

    let lan_port = |ns: &str, port: &str, mac: Option<&str>| -> anyhow::Result<()> {
        ip(
            LAN_NS,
            &[
                "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
        )?;
        ip(LAN_NS, &["link", "set", port, "master", "br0", "up"])?;
        if let Some(mac) = mac {
            ip(ns, &["link", "set", "eth0", "address", mac])?;
        }
        ip(ns, &["link", "set", "eth0", "up"])
    };
    let host = |ns: &str| -> anyhow::Result<()> {
        ip("", &["netns", "add", ns])?;
        ip(ns, &["link", "set", "lo", "up"])?;
        // Addresses must be usable at once: no duplicate address detection delay in a lab.
        sysctl(ns, "net.ipv6.conf.all.accept_dad", "0")?;
        sysctl(ns, "net.ipv6.conf.default.accept_dad", "0")
    };
    let addr =
        |ns: &str, dev: &str, cidr: &str| ip(ns, &["addr", "add", cidr, "dev", dev, "nodad"]);

    // Router: LAN on eth0, the remote network on eth1.
    host(ROUTER_NS)?;
    lan_port(ROUTER_NS, "router", Some("02:fe:c0:00:02:01"))?;
    addr(ROUTER_NS, "eth0", "192.0.2.1/24")?;
    addr(ROUTER_NS, "eth0", "2001:db8:0:1::1/64")?;
    sysctl(ROUTER_NS, "net.ipv4.ip_forward", "1")?;
    sysctl(ROUTER_NS, "net.ipv6.conf.all.forwarding", "1")?;

    host(REMOTE_CLIENT_NS)?;
    ip(
        ROUTER_NS,
        &[
            "link",
            "add",
            "eth1",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            REMOTE_CLIENT_NS,
        ],
    )?;
    ip(ROUTER_NS, &["link", "set", "eth1", "up"])?;
    ip(REMOTE_CLIENT_NS, &["link", "set", "eth0", "up"])?;
    addr(ROUTER_NS, "eth1", "198.51.100.1/24")?;
    addr(ROUTER_NS, "eth1", "2001:db8:0:2::1/64")?;
    addr(REMOTE_CLIENT_NS, "eth0", "198.51.100.10/24")?;
    addr(REMOTE_CLIENT_NS, "eth0", "2001:db8:0:2::10/64")?;
    ip(
        REMOTE_CLIENT_NS,
        &["route", "add", "default", "via", "198.51.100.1"],
    )?;
    ip(
        REMOTE_CLIENT_NS,
        &["-6", "route", "add", "default", "via", "2001:db8:0:2::1"],
    )?;

    // Client on the LAN.
    host(CLIENT_NS)?;
    lan_port(CLIENT_NS, "client", Some("02:fe:c0:00:02:64"))?;
    addr(CLIENT_NS, "eth0", "192.0.2.100/24")?;
    addr(CLIENT_NS, "eth0", "2001:db8:0:1::100/64")?;
    ip(CLIENT_NS, &["route", "add", "default", "via", "192.0.2.1"])?;
    ip(
        CLIENT_NS,
        &["-6", "route", "add", "default", "via", "2001:db8:0:1::1"],
    )?;

    for plan in plans {
        let ns = plan.netns.as_str();
        host(ns)?;
        sysctl(ns, "net.ipv4.ip_forward", "1")?;
        sysctl(ns, "net.ipv6.conf.all.forwarding", "1")?;
        lan_port(ns, &format!("n{}", plan.index), Some(&plan.lan_mac))?;
        addr(ns, "eth0", &format!("{}/24", plan.lan4))?;
        addr(ns, "eth0", &format!("{}/64", plan.lan6))?;

        // Management link to the control plane on the host.
        let host_end = format!("{MGMT_LINK_PREFIX}{}", plan.index);
        ip(
            "",
            &[
                "link", "add", &host_end, "type", "veth", "peer", "name", "mgmt0", "netns", ns,
            ],
        )?;
        ip(
            "",
            &[
                "link",
                "set",
                &host_end,
                "master",
                controlplane::MGMT_BRIDGE,
                "up",
            ],
        )?;
        ip(ns, &["link", "set", "mgmt0", "up"])?;
        addr(ns, "mgmt0", &format!("{}/24", plan.mgmt4))?;
        // Pods (not only host-network ones) talk to the API server: the host
        // routes their replies back through their node.
        ip(
            "",
            &[
                "route",
                "replace",
                &plan.pod_cidr4,
                "via",
                &plan.mgmt4,
                "dev",
                controlplane::MGMT_BRIDGE,
            ],
        )?;

        // Pod bridge.
        ip(ns, &["link", "add", "cbr0", "type", "bridge"])?;
        ip(ns, &["link", "set", "cbr0", "up"])?;
        addr(ns, "cbr0", &format!("{}/24", plan.pod_gw4()))?;
        addr(ns, "cbr0", &format!("{}/64", plan.pod_gw6()))?;
        for other in plans.iter().filter(|o| o.index != plan.index) {
            ip(ns, &["route", "add", &other.pod_cidr4, "via", &other.lan4])?;
            ip(
                ns,
                &["-6", "route", "add", &other.pod_cidr6, "via", &other.lan6],
            )?;
        }
        // Like any host on a LAN, the node's default gateway is the router: replies to
        // clients on other networks (the remote client) leave through it.
        ip(ns, &["route", "add", "default", "via", "192.0.2.1"])?;
        ip(
            ns,
            &["-6", "route", "add", "default", "via", "2001:db8:0:1::1"],
        )?;
    }
    Ok(())
}

fn start_kubelet(root: &Path, plan: &NodePlan) -> anyhow::Result<()> {
    let dir = nodes_dir(root).join(&plan.name);
    fs::create_dir_all(&dir)?;
    let bin_dir = root.join("target").join("debug");
    let kubelet = bin_dir.join("ferrolb-kubelet");
    let log = fs::File::create(dir.join("kubelet.log"))?;
    let child = Command::new("ip")
        .args(["netns", "exec", &plan.netns])
        .arg(&kubelet)
        .args([
            "--node-name",
            &plan.name,
            "--node-index",
            &plan.index.to_string(),
        ])
        .arg("--kubeconfig")
        .arg(
            crate::lab_dir(root)
                .join("controlplane")
                .join("admin-mgmt.kubeconfig"),
        )
        .arg("--state-dir")
        .arg(&dir)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .args(["--api-server-host", controlplane::MGMT_ADDRESS])
        .args(["--api-server-port", &controlplane::API_PORT.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", kubelet.display()))?;
    fs::write(dir.join("kubelet.pid"), child.id().to_string())?;
    Ok(())
}

fn kubectl_json(root: &Path, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let text = run::output(
        controlplane::kubectl_cmd(root)
            .args(args)
            .args(["-o", "json"]),
    )?;
    Ok(serde_json::from_str(&text)?)
}

/// Nodes that are Ready, by name.
fn ready_nodes(root: &Path) -> anyhow::Result<Vec<String>> {
    let list = kubectl_json(root, &["get", "nodes"])?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    Ok(items
        .iter()
        .filter(|n| {
            n["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .collect())
}

fn wait_nodes_ready(root: &Path, plans: &[NodePlan]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = ready_nodes(root).unwrap_or_default();
        let missing: Vec<&NodePlan> = plans.iter().filter(|p| !ready.contains(&p.name)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        for p in &missing {
            let pid_file = nodes_dir(root).join(&p.name).join("kubelet.pid");
            let alive = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .is_some_and(run::pid_alive);
            if !alive {
                let log = nodes_dir(root).join(&p.name).join("kubelet.log");
                bail!(
                    "the kubelet of {} exited; {}:\n{}",
                    p.name,
                    log.display(),
                    run::tail(&log, 20)
                );
            }
        }
        if Instant::now() > deadline {
            let names: Vec<&str> = missing.iter().map(|p| p.name.as_str()).collect();
            bail!(
                "nodes not Ready after 60 s: {} (see {}/<node>/kubelet.log)",
                names.join(", "),
                nodes_dir(root).display()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Namespaces the lab made, found by prefix (so leftovers of a crashed run are found too).
fn lab_namespaces() -> anyhow::Result<Vec<String>> {
    let out = run::output(Command::new("ip").args(["netns", "list"]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| is_lab_namespace(n))
        .map(str::to_string)
        .collect())
}

/// Whether a namespace is one the lab made (and so one `down` removes).
fn is_lab_namespace(name: &str) -> bool {
    [LAN_NS, CLIENT_NS, ROUTER_NS, REMOTE_CLIENT_NS].contains(&name)
        || NS_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Processes whose network namespace is one of the lab's: `ip netns pids` finds them.
fn processes_in(ns: &str) -> Vec<u32> {
    run::output(Command::new("ip").args(["netns", "pids", ns]))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Stops kubelets (so they stop their pods) and removes every lab namespace and
/// host-side link, but leaves the control plane running.
fn clear(root: &Path) -> anyhow::Result<()> {
    // First ask the kubelets to stop: they stop their pods and remove their namespaces.
    let mut kubelets = Vec::new();
    if let Ok(entries) = fs::read_dir(nodes_dir(root)) {
        for entry in entries.flatten() {
            let pid_file = entry.path().join("kubelet.pid");
            if let Some(pid) = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .filter(|pid| run::pid_alive(*pid))
            {
                run::signal(pid, "TERM");
                kubelets.push(pid);
            }
            let _ = fs::remove_file(pid_file);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    while kubelets.iter().any(|p| run::pid_alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Then whatever is left (a crashed run, a kubelet that did not finish):
    // kill every process in a lab namespace and delete the namespaces.
    for ns in lab_namespaces()? {
        for pid in processes_in(&ns) {
            run::signal(pid, "KILL");
        }
    }
    for ns in lab_namespaces()? {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !processes_in(&ns).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        ip("", &["netns", "del", &ns]).with_context(|| format!("deleting namespace {ns}"))?;
    }
    // Host ends of veths die with their peers; routes via them with them. Sweep
    // any stragglers by name all the same.
    let links = run::output(Command::new("ip").args(["-o", "link", "show"]))?;
    for name in links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
        .filter(|n| n.starts_with(MGMT_LINK_PREFIX))
    {
        // It may vanish between listing and deleting, as its peer's namespace goes.
        let _ = run::succeeds(Command::new("ip").args(["link", "del", &name]));
    }
    Ok(())
}

/// Takes the whole lab down, control plane included.
pub fn down(root: &Path) -> anyhow::Result<()> {
    require_root("`cargo xtask lab down`")?;
    clear(root)?;
    controlplane::down(root)?;
    let _ = fs::remove_dir_all(nodes_dir(root));
    let left = lab_namespaces()?;
    if !left.is_empty() {
        bail!(
            "namespaces still present after lab down: {}",
            left.join(", ")
        );
    }
    eprintln!("lab down: no namespace, link or process of the lab is left");
    Ok(())
}

fn status(root: &Path) -> anyhow::Result<()> {
    let mut out = String::new();
    let namespaces = lab_namespaces()?;
    writeln!(
        out,
        "namespaces: {}",
        if namespaces.is_empty() {
            "none".to_string()
        } else {
            namespaces.join(" ")
        }
    )?;
    if let Ok(entries) = fs::read_dir(nodes_dir(root)) {
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let pid = fs::read_to_string(entry.path().join("kubelet.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            let state = match pid {
                Some(pid) if run::pid_alive(pid) => format!("running (pid {pid})"),
                _ => "not running".to_string(),
            };
            writeln!(
                out,
                "kubelet {}: {state}",
                entry.file_name().to_string_lossy()
            )?;
        }
    }
    print!("{out}");
    controlplane::run(root, controlplane::Action::Status)?;
    if controlplane::kubeconfig(root).exists() {
        match ready_nodes(root) {
            Ok(ready) => println!("Ready nodes: {}", ready.join(" ")),
            Err(e) => println!("nodes: {e:#}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_follow_the_address_plan() {
        let n = NodePlan::new(3);
        assert_eq!(n.name, "node-3");
        assert_eq!(n.netns, "ferrolb-node-3");
        assert_eq!(n.lan4, "192.0.2.13");
        assert_eq!(n.lan6, "2001:db8:0:1::13");
        assert_eq!(n.mgmt4, "198.19.0.13");
        assert_eq!(n.pod_cidr4, "198.18.3.0/24");
        assert_eq!(n.pod_cidr6, "2001:db8:1:3::/64");
        assert_eq!(n.pod_gw4(), "198.18.3.1");
        assert_eq!(n.lan_mac, "02:fe:c0:00:02:0d");
    }

    #[test]
    fn the_sweep_finds_the_labs_namespaces_and_only_those() {
        for ns in [
            LAN_NS,
            CLIENT_NS,
            ROUTER_NS,
            REMOTE_CLIENT_NS,
            &NodePlan::new(9).netns,
        ] {
            assert!(is_lab_namespace(ns), "{ns}");
        }
        assert!(is_lab_namespace("ferrolb-pod-1-0123456789ab"));
        for other in [
            "ferrolb-bgptest-1-r",
            "ferrolb-fwdtest-client",
            "ferrolb-clientx",
            "cni-1",
        ] {
            assert!(!is_lab_namespace(other), "{other}");
        }
    }
}
