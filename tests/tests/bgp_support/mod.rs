//! A real BGP router for the lab: BIRD 2 in the lab's router namespace (`ferrolb-router`,
//! 192.0.2.1, AS 64513) with one eBGP session per lab node (AS 64512) and a kernel protocol
//! that installs what it learns in the 203.0.113.0/24 BGP range into the namespace's routing
//! table, equal-cost paths merged (ECMP), so the remote client behind the router reaches the
//! nodes. Its config, control socket, pid and log files live in a temp dir of its own, never
//! the system's /run/bird. Dropping the [`Router`] stops BIRD (it withdraws its kernel routes
//! as it shuts down) and flushes any BIRD route left in the range, also when a test panics; a
//! BIRD left by a test process that died is stopped by the next [`Router::start`].
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The lab's router namespace.
pub const ROUTER_NS: &str = "ferrolb-router";
/// The router's LAN address: the BGPPeer's `peerAddress`.
pub const ROUTER_V4: &str = "192.0.2.1";
/// The router's AS: the BGPPeer's `peerASN`.
pub const ROUTER_AS: u32 = 64513;
/// The nodes' AS: the BGPPeer's `myASN`.
pub const NODE_AS: u32 = 64512;
/// The BGP pools' range (DESIGN.md's address plan): the only routes the router installs.
pub const BGP_RANGE: &str = "203.0.113.0/24";

/// Temp dirs are `<temp>/<DIR_PREFIX><test pid>-<n>`, so a stale one names its process.
const DIR_PREFIX: &str = "ferrolb-e2e-bird-";

/// The lab's LAN address of `node-N` (192.0.2.(10+N), xtask's address plan).
pub fn node_lan4(node: &str) -> String {
    let n: u8 = node
        .trim_start_matches("node-")
        .parse()
        .unwrap_or_else(|_| panic!("{node} is not a lab node name (node-N)"));
    format!("192.0.2.{}", 10 + u16::from(n))
}

/// BIRD's protocol name for `node-N` (a BIRD symbol cannot hold a `-`).
fn protocol_of(node: &str) -> String {
    node.replace('-', "_")
}

/// One route to a prefix as BIRD shows it (`show route all`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BirdRoute {
    /// The protocol (session) it was learned from.
    pub protocol: String,
    /// Whether BIRD marks it as the best route (`*`).
    pub best: bool,
    /// The BGP NEXT_HOP attribute.
    pub next_hop: Option<String>,
    /// The gateway BIRD resolved (`via X on DEV`).
    pub via: Option<String>,
    /// The AS_PATH attribute.
    pub as_path: Option<String>,
    /// The COMMUNITY attribute's values as `a:b` (well-known ones by number: `65535:65281`).
    pub communities: Vec<String>,
    /// The LARGE_COMMUNITY attribute's values as `a:b:c`.
    pub large_communities: Vec<String>,
}

/// Reads `birdc show route all <prefix>` output: one entry per route, in BIRD's order.
pub fn parse_routes(text: &str) -> Vec<BirdRoute> {
    let mut routes: Vec<BirdRoute> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // `203.0.113.225/32     unicast [node_1 06:31:43.273] * (100) [AS64512i]`, the
        // following routes to the same prefix without the prefix.
        if let Some((_, rest)) = trimmed.split_once("unicast [") {
            routes.push(BirdRoute {
                protocol: rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                best: rest
                    .split_once(']')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('*')),
                ..BirdRoute::default()
            });
            continue;
        }
        let Some(route) = routes.last_mut() else {
            continue;
        };
        if let Some(rest) = trimmed.strip_prefix("via ") {
            route.via = rest.split_whitespace().next().map(str::to_owned);
        } else if let Some(rest) = trimmed.strip_prefix("BGP.next_hop:") {
            route.next_hop = rest.split_whitespace().next().map(str::to_owned);
        } else if let Some(rest) = trimmed.strip_prefix("BGP.as_path:") {
            route.as_path = Some(rest.trim().to_owned());
        } else if let Some(rest) = trimmed.strip_prefix("BGP.community:") {
            route.communities = bird_tuples(rest);
        } else if let Some(rest) = trimmed.strip_prefix("BGP.large_community:") {
            route.large_communities = bird_tuples(rest);
        }
    }
    routes
}

/// `(64512,100) (65535,65281)` or `(64512, 1, 2)` as `64512:100`, ... (`a:b:c`).
fn bird_tuples(text: &str) -> Vec<String> {
    text.split(')')
        .filter_map(|t| t.split_once('(').map(|(_, v)| v))
        .map(|v| v.split(',').map(str::trim).collect::<Vec<_>>().join(":"))
        .collect()
}

/// One row of `birdc show protocols`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The protocol's name.
    pub protocol: String,
    /// BIRD's protocol state (`up`, `start`, ...).
    pub state: String,
    /// The BGP state and last error (`Established`, `Active  Socket: Connection refused`, ...).
    pub info: String,
}

/// Reads `birdc show protocols` output: the BGP protocols' rows by name.
pub fn parse_sessions(text: &str) -> BTreeMap<String, Session> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // Name Proto Table State Since(time) Info...
            (cols.len() >= 5 && cols[1] == "BGP").then(|| {
                let info = line
                    .split_once(cols[4])
                    .map(|(_, r)| r.trim().to_owned())
                    .unwrap_or_default();
                let s = Session {
                    protocol: cols[0].to_owned(),
                    state: cols[3].to_owned(),
                    info,
                };
                (s.protocol.clone(), s)
            })
        })
        .collect()
}

/// The gateways of the kernel route to exactly `prefix`, from `ip -j route show exact`:
/// one for a plain route, several for a multipath (ECMP) one, none when there is no route.
pub fn kernel_gateways(json: &str) -> Vec<String> {
    let routes: Vec<Value> = serde_json::from_str(json).unwrap_or_default();
    let gateway = |v: &Value| v["gateway"].as_str().map(str::to_owned);
    let mut out: Vec<String> = routes
        .iter()
        .flat_map(|r| match r["nexthops"].as_array() {
            Some(hops) => hops.iter().filter_map(gateway).collect(),
            None => gateway(r).into_iter().collect::<Vec<_>>(),
        })
        .collect();
    out.sort();
    out
}

/// BIRD's configuration: sessions to `nodes` (names `node-N`), learned routes in the BGP
/// range installed in the kernel with ECMP, files under `dir`.
pub fn bird_config(nodes: &[String], dir: &Path) -> String {
    let mut conf = format!(
        "router id {ROUTER_V4};\n\
         log \"{log}\" all;\n\
         protocol device {{ scan time 5; }}\n\
         # learn off, persist off (the defaults): BIRD owns only its routes, removes them on exit.\n\
         protocol kernel {{\n\
         \x20 ipv4 {{ import none; export where net ~ [ {BGP_RANGE}+ ]; }};\n\
         \x20 merge paths on;\n\
         }}\n\
         # Dial the nodes too, and retry soon after a refused dial or a session error.\n\
         template bgp lab_node {{\n\
         \x20 local {ROUTER_V4} as {ROUTER_AS};\n\
         \x20 connect retry time 2;\n\
         \x20 error wait time 1, 5;\n\
         \x20 debug {{ states, routes, events }};\n\
         \x20 ipv4 {{ import all; export none; }};\n\
         }}\n",
        log = dir.join("bird.log").display(),
    );
    for node in nodes {
        conf += &format!(
            "protocol bgp {} from lab_node {{ neighbor {} as {NODE_AS}; }}\n",
            protocol_of(node),
            node_lan4(node)
        );
    }
    conf
}

/// BIRD running in the lab's router namespace; stopped, its routes flushed, on drop.
#[derive(Debug)]
pub struct Router {
    dir: PathBuf,
    child: Child,
    /// Node name by BIRD protocol name.
    nodes: BTreeMap<String, String>,
}

fn output(cmd: &mut Command) -> (bool, String) {
    match cmd.stdin(Stdio::null()).output() {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, format!("{cmd:?}: {e}")),
    }
}

fn in_router(program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ROUTER_NS, program]);
    cmd
}

/// Removes BIRD's routes in the BGP range from the router's table (a BIRD that was killed
/// leaves them behind).
fn flush_routes() {
    let _ = output(Command::new("ip").args([
        "-n", ROUTER_NS, "route", "flush", "root", BGP_RANGE, "proto", "bird",
    ]));
}

/// Whether `pid` runs BIRD with files under `dir` (so it is ours to stop).
fn is_bird_of(pid: u32, dir: &Path) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "bird")
        && fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*dir.to_string_lossy()))
}

/// SIGTERM (BIRD withdraws its kernel routes and sends its peers a Cease as it exits), then
/// SIGKILL if it is still BIRD of `dir` after 5 s.
fn stop_bird(pid: u32, dir: &Path) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_bird_of(pid, dir) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if is_bird_of(pid, dir) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

/// Stops the BIRDs of test processes that died before their drop ran, and removes their dirs.
fn sweep_stale() {
    let tmp = std::env::temp_dir();
    for entry in fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if owner == std::process::id() || Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let dir = entry.path();
        if let Some(pid) = fs::read_to_string(dir.join("bird.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .filter(|pid| is_bird_of(*pid, &dir))
        {
            eprintln!(
                "stopping BIRD {pid} left by test process {owner} ({})",
                dir.display()
            );
            stop_bird(pid, &dir);
            flush_routes();
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

impl Router {
    /// Starts BIRD in the router namespace with a session to each of `nodes` (`node-N`) and
    /// waits until its control socket answers. Panics, saying why, if the namespace is missing
    /// or something else already listens on the router's BGP port.
    pub fn start(nodes: &[String]) -> Router {
        assert!(
            Path::new("/run/netns").join(ROUTER_NS).exists(),
            "no {ROUTER_NS} namespace: bring the lab up (`cargo xtask lab up`)"
        );
        sweep_stale();
        let (_, listening) = output(in_router("ss").args(["-Hltnp", "sport = :179"]));
        assert!(
            listening.trim().is_empty(),
            "something already listens on {ROUTER_V4}:179 in {ROUTER_NS} (another BGP test?):\n\
             {listening}"
        );
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("BIRD's temp dir");
        fs::write(dir.join("bird.conf"), bird_config(nodes, &dir)).expect("bird.conf");
        let out = fs::File::create(dir.join("bird.out")).expect("bird.out");
        // `ip netns exec` execs BIRD, so the child is BIRD itself; -f keeps it in the foreground.
        let child = in_router("bird")
            .arg("-f")
            .arg("-c")
            .arg(dir.join("bird.conf"))
            .arg("-s")
            .arg(dir.join("bird.ctl"))
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("bird.out"))
            .stderr(out)
            .spawn()
            .expect("starting bird (apt-get install bird2)");
        let mut router = Router {
            dir,
            child,
            nodes: nodes.iter().map(|n| (protocol_of(n), n.clone())).collect(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !router.birdc(&["show", "status"]).0 {
            if let Ok(Some(status)) = router.child.try_wait() {
                panic!("bird exited ({status}):\n{}", router.log());
            }
            assert!(
                Instant::now() < deadline,
                "bird's control socket did not answer within 10 s:\n{}",
                router.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        router
    }

    /// Runs `birdc` against this BIRD's socket: whether it exited 0, and what it printed.
    pub fn birdc(&self, args: &[&str]) -> (bool, String) {
        output(
            Command::new("birdc")
                .arg("-s")
                .arg(self.dir.join("bird.ctl"))
                .args(args),
        )
    }

    /// The sessions with the nodes, by node name.
    pub fn sessions(&self) -> BTreeMap<String, Session> {
        parse_sessions(&self.birdc(&["show", "protocols"]).1)
            .into_iter()
            .filter_map(|(proto, s)| Some((self.nodes.get(&proto)?.clone(), s)))
            .collect()
    }

    /// The routes BIRD learned to exactly `prefix`: `Ok(empty)` when BIRD says it has none,
    /// `Err` when birdc failed otherwise (a loaded machine makes it time out now and then),
    /// so a wait for a withdrawal never takes a failed query for one.
    pub fn routes(&self, prefix: &str) -> Result<Vec<BirdRoute>, String> {
        let (ok, text) = self.birdc(&["show", "route", "all", prefix]);
        // birdc exits 1 with this after `BIRD x.y.z ready.` for an absent prefix.
        if text.contains("ready.") && text.contains("Network not found") {
            return Ok(Vec::new());
        }
        if !ok || !text.contains(prefix) {
            return Err(format!("birdc show route all {prefix}: {text}"));
        }
        Ok(parse_routes(&text))
    }

    /// The nodes BIRD learned `prefix` from, with each route's BGP next hop, by node name;
    /// routes from sessions that are not a node's show under their protocol name.
    pub fn routes_by_node(&self, prefix: &str) -> Result<BTreeMap<String, BirdRoute>, String> {
        Ok(self
            .routes(prefix)?
            .into_iter()
            .map(|r| {
                let node = self.nodes.get(&r.protocol).unwrap_or(&r.protocol).clone();
                (node, r)
            })
            .collect())
    }

    /// The gateways of the router namespace's kernel route to exactly `prefix`, sorted.
    pub fn kernel_gateways(&self, prefix: &str) -> Vec<String> {
        let (_, json) = output(
            Command::new("ip").args(["-j", "-n", ROUTER_NS, "route", "show", "exact", prefix]),
        );
        kernel_gateways(&json)
    }

    /// The lines BIRD logged about its session with `node`.
    pub fn node_log(&self, node: &str) -> Vec<String> {
        let proto = format!("{}:", protocol_of(node));
        fs::read_to_string(self.dir.join("bird.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&proto))
            .map(str::to_owned)
            .collect()
    }

    /// What BIRD logged, and its sessions now: for failure messages.
    pub fn log(&self) -> String {
        let read = |f: &str| fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        let log = read("bird.log");
        let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>();
        format!(
            "{}\n{}\n--- bird.log (last 40 lines) ---\n{}",
            read("bird.out"),
            self.birdc(&["show", "protocols"]).1,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "BIRD at the failure ({}):\n{}",
                self.dir.display(),
                self.log()
            );
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            stop_bird(self.child.id(), &self.dir);
        }
        let _ = self.child.wait();
        flush_routes();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
