//! Interop harness: a router namespace running a real BGP daemon and a speaker namespace
//! running `ferrolb-bgp-lab`, joined by a veth pair ([`Topology::Direct`]) or through a third
//! namespace that only forwards ([`Topology::Routed`], for multi-hop). Everything is torn down
//! on drop, also when the test panics; namespaces left by a test process that died (SIGKILL)
//! are removed by the next [`Lab::new`]. Names carry the test's tag, pid and a counter, so
//! tests run in parallel (threads or processes) never share a namespace, link or temp dir.
#![allow(dead_code, clippy::print_stdout, clippy::print_stderr)]

pub mod config;

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Router side of the link.
pub const ROUTER_V4: &str = "192.0.2.1";
/// Speaker side of the link.
pub const SPEAKER_V4: &str = "192.0.2.11";
/// Router IPv6.
pub const ROUTER_V6: &str = "2001:db8:0:1::1";
/// Speaker IPv6 (announced as the IPv6 next hop).
pub const SPEAKER_V6: &str = "2001:db8:0:1::11";
/// The router's ASN.
pub const ROUTER_AS: u32 = 64500;
/// The speaker's ASN for eBGP.
pub const SPEAKER_AS: u32 = 64512;

static NEXT: AtomicU32 = AtomicU32::new(0);
const NS_PREFIX: &str = "ferrolb-bgptest-";

/// How the speaker reaches the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// One veth: speaker and router share 192.0.2.0/24 and 2001:db8:0:1::/64.
    Direct,
    /// Speaker on 198.51.100.0/24 (2001:db8:0:2::/64), a forwarding-only middle namespace,
    /// router on 192.0.2.0/24: two IP hops, so eBGP needs multi-hop (TTL >= 2).
    Routed,
}

/// Which daemon plays the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Daemon {
    /// gobgpd 3.x.
    Gobgp,
    /// BIRD 2.
    Bird,
    /// FRR's bgpd, without zebra.
    Frr,
}

/// How the router is configured.
#[derive(Clone, Debug, Default)]
pub struct RouterConfig {
    /// The router's own ASN.
    pub local_as: u32,
    /// The ASN the router expects from the speaker.
    pub peer_as: u32,
    /// TCP-MD5 password.
    pub password: Option<String>,
    /// BFD with the speaker, 300 ms x 3 (FRR then runs zebra and bfdd next to bgpd).
    pub bfd: bool,
    /// Graceful restart (RFC 4724) with the speaker.
    pub graceful_restart: bool,
    /// eBGP multi-hop with this TTL.
    pub multihop: Option<u8>,
    /// Hold time the router proposes (default: the daemon's).
    pub hold_time: Option<u16>,
    /// The smallest hold time the router accepts from the speaker (BIRD `min hold time`,
    /// FRR `bgp minimum-holdtime`); a smaller one gets OPEN/Unacceptable Hold Time.
    pub min_hold_time: Option<u16>,
}

/// What the daemon shows for a prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Communities as `a:b`.
    pub communities: Vec<String>,
    /// Large communities as `a:b:c`.
    pub large: Vec<String>,
    /// LOCAL_PREF, if the daemon shows it.
    pub local_pref: Option<u32>,
}

/// Two namespaces, one daemon, one speaker.
pub struct Lab {
    pub daemon: Daemon,
    pub topology: Topology,
    pub router_ns: String,
    pub speaker_ns: String,
    /// The forwarding namespace of [`Topology::Routed`].
    pub mid_ns: Option<String>,
    /// The speaker's IPv4 address as the router sees it.
    pub speaker_v4: &'static str,
    /// The speaker's IPv6 address (its IPv6 next hop).
    pub speaker_v6: &'static str,
    pub dir: PathBuf,
    /// veths created in the root namespace, deleted on drop if a move failed.
    links: Vec<String>,
    children: Vec<Child>,
    speaker: Option<(Child, ChildStdin)>,
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn ip(args: &[&str]) {
    let out = run(Command::new("ip").args(args));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `f` every 200 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ns_exists(ns: &str) -> bool {
    std::path::Path::new("/run/netns").join(ns).exists()
}

/// Removes `ferrolb-bgptest-*` namespaces whose test process is gone (killed before its drop
/// guards ran): their processes are killed, then the namespace is deleted.
fn sweep_stale() {
    let Ok(dir) = fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        // `{tag}-{pid}-{n}-{role}`
        let parts: Vec<&str> = rest.rsplitn(4, '-').collect();
        let Some(pid) = parts.get(2).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let pids = run(Command::new("ip").args(["netns", "pids", &name]));
        for p in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", p]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        eprintln!("removed stale namespace {name} (test process {pid} is gone)");
    }
}

impl Lab {
    /// Creates the namespaces and link for a test named `tag` (no `-` in it).
    pub fn new(daemon: Daemon, tag: &str) -> Self {
        Self::with_topology(daemon, tag, Topology::Direct)
    }

    /// Creates the namespaces and links for `topology`.
    pub fn with_topology(daemon: Daemon, tag: &str, topology: Topology) -> Self {
        assert!(!tag.contains('-'), "tag {tag:?}");
        sweep_stale();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let base = format!("{NS_PREFIX}{tag}-{pid}-{n}");
        let (speaker_v4, speaker_v6) = match topology {
            Topology::Direct => (SPEAKER_V4, SPEAKER_V6),
            Topology::Routed => (config::ROUTED_SPEAKER_V4, config::ROUTED_SPEAKER_V6),
        };
        let dir = std::env::temp_dir().join(&base);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        let mut lab = Self {
            daemon,
            topology,
            router_ns: format!("{base}-r"),
            speaker_ns: format!("{base}-s"),
            mid_ns: (topology == Topology::Routed).then(|| format!("{base}-m")),
            speaker_v4,
            speaker_v6,
            dir,
            links: Vec::new(),
            children: Vec::new(),
            speaker: None,
        };
        let all: Vec<String> = [lab.router_ns.clone(), lab.speaker_ns.clone()]
            .into_iter()
            .chain(lab.mid_ns.clone())
            .collect();
        for ns in &all {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // Link names: at most 15 bytes, unique per process and lab.
        let id = format!("{}x{n}", pid % 100_000);
        let (router_ns, speaker_ns) = (lab.router_ns.clone(), lab.speaker_ns.clone());
        match lab.mid_ns.clone() {
            None => lab.veth(
                &format!("fb{id}"),
                (&router_ns, ROUTER_V4, ROUTER_V6),
                (&speaker_ns, SPEAKER_V4, SPEAKER_V6),
            ),
            Some(mid) => {
                use config::*;
                lab.veth(
                    &format!("fb{id}r"),
                    (&router_ns, ROUTER_V4, ROUTER_V6),
                    (&mid, MID_R_V4, MID_R_V6),
                );
                lab.veth(
                    &format!("fb{id}s"),
                    (&speaker_ns, ROUTED_SPEAKER_V4, ROUTED_SPEAKER_V6),
                    (&mid, MID_S_V4, MID_S_V6),
                );
                for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
                    let out =
                        run(Command::new("ip").args(["netns", "exec", &mid, "sysctl", "-qw", key]));
                    assert!(out.status.success(), "sysctl {key}");
                }
                let (r, sp) = (router_ns.as_str(), speaker_ns.as_str());
                ip(&["-n", r, "route", "add", SPEAKER_NET_V4, "via", MID_R_V4]);
                ip(&[
                    "-n",
                    r,
                    "-6",
                    "route",
                    "add",
                    SPEAKER_NET_V6,
                    "via",
                    MID_R_V6,
                ]);
                ip(&["-n", sp, "route", "add", "192.0.2.0/24", "via", MID_S_V4]);
                ip(&[
                    "-n",
                    sp,
                    "-6",
                    "route",
                    "add",
                    "2001:db8:0:1::/64",
                    "via",
                    MID_S_V6,
                ]);
            }
        }
        lab
    }

    /// A veth pair, `{name}a` in `a.0` and `{name}b` in `b.0`, with the given IPv4 and IPv6
    /// addresses, up.
    fn veth(&mut self, name: &str, a: (&str, &str, &str), b: (&str, &str, &str)) {
        let (da, db) = (format!("{name}a"), format!("{name}b"));
        ip(&["link", "add", &da, "type", "veth", "peer", "name", &db]);
        // Until both ends are in their namespaces, drop deletes the pair from the root one.
        self.links.push(da.clone());
        for (dev, (ns, _, _)) in [(&da, a), (&db, b)] {
            ip(&["link", "set", dev, "netns", ns]);
        }
        self.links.pop();
        for (dev, (ns, v4, v6)) in [(&da, a), (&db, b)] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
    }

    /// A command run inside the router namespace.
    pub fn in_router(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.router_ns, program]);
        c
    }

    fn spawn_logged(&mut self, mut cmd: Command, log: &str) {
        let f = fs::File::create(self.dir.join(log)).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("log"))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        self.children.push(child);
    }

    /// Starts the daemon with `cfg`.
    pub fn start_router(&mut self, cfg: &RouterConfig) {
        let d = self.dir.display().to_string();
        let ctx = config::Ctx {
            speaker: self.speaker_v4,
            router: ROUTER_V4,
            topology: self.topology,
            dir: &d,
        };
        match self.daemon {
            Daemon::Gobgp => {
                fs::write(self.dir.join("gobgpd.toml"), config::gobgp(cfg, &ctx)).expect("config");
                let mut c = self.in_router("gobgpd");
                c.args(["-t", "toml", "-f", &format!("{d}/gobgpd.toml")]);
                self.spawn_logged(c, "gobgpd.log");
            }
            Daemon::Bird => {
                fs::write(self.dir.join("bird.conf"), config::bird(cfg, &ctx)).expect("config");
                let mut c = self.in_router("bird");
                c.args([
                    "-f",
                    "-c",
                    &format!("{d}/bird.conf"),
                    "-s",
                    &format!("{d}/bird.ctl"),
                ]);
                c.args(["-P", &format!("{d}/bird.pid")]);
                self.spawn_logged(c, "bird.out");
            }
            Daemon::Frr => {
                fs::write(self.dir.join("bgpd.conf"), config::frr(cfg, &ctx)).expect("config");
                // bgpd registers BFD sessions through zebra, which relays them to bfdd; and a
                // multi-hop peer is only dialled once zebra resolves a route to it.
                let zebra = cfg.bfd || self.topology == Topology::Routed;
                if zebra {
                    self.start_frr_helper("zebra", "");
                    let api = self.dir.join("zserv.api");
                    let up = wait_for(Duration::from_secs(10), || api.exists().then_some(()));
                    assert!(up.is_some(), "zebra did not start: {}", self.router_log());
                }
                if cfg.bfd {
                    self.start_frr_helper("bfdd", &format!("log file {d}/bfdd.log debugging\n"));
                }
                let mut c = self.in_router("/usr/lib/frr/bgpd");
                // -S: no user switch (runs as root in a temp dir); -Z: no zebra (unless BFD
                // needs it), routes are only looked at, never installed; -P 0: no TCP vty.
                c.args(["-S", "-P", "0", "-f", &format!("{d}/bgpd.conf")]);
                if !zebra {
                    c.arg("-Z");
                }
                c.args(["-i", &format!("{d}/bgpd.pid"), "--vty_socket", &d]);
                c.args(["-z", &format!("{d}/zserv.api")]);
                self.spawn_logged(c, "bgpd.out");
            }
        }
        // Let the daemon bind its port and control socket.
        let ok = wait_for(Duration::from_secs(10), || self.router_up().then_some(()));
        assert!(
            ok.is_some(),
            "{:?} did not start: {}",
            self.daemon,
            self.router_log()
        );
    }

    /// Starts FRR's `zebra` or `bfdd` as root with its sockets in the temp dir.
    fn start_frr_helper(&mut self, name: &str, extra: &str) {
        let d = self.dir.display().to_string();
        let conf = format!("{d}/{name}.conf");
        fs::write(&conf, format!("hostname ferrolb-bgptest\n{extra}")).expect("config");
        let mut c = self.in_router(&format!("/usr/lib/frr/{name}"));
        // Without bgpd's -S these switch to the frr user, which needs the vty group
        // membership root lacks; they keep the capabilities they need, and write in the dir.
        let _ = Command::new("chown").args(["-R", "frr:frr", &d]).status();
        c.args(["-u", "frr", "-g", "frr", "-P", "0", "-f", &conf]);
        c.args(["-i", &format!("{d}/{name}.pid"), "--vty_socket", &d]);
        c.args(["-z", &format!("{d}/zserv.api")]);
        if name == "bfdd" {
            c.args(["--bfdctl", &format!("{d}/bfdd.sock")]);
        }
        self.spawn_logged(c, &format!("{name}.out"));
    }

    /// Whether the daemon shows its BFD session with the speaker as Up.
    pub fn bfd_up(&self) -> bool {
        match self.daemon {
            Daemon::Gobgp => false,
            Daemon::Bird => self.cli(&["show", "bfd", "sessions"]).is_some_and(|s| {
                s.lines().any(|l| {
                    l.starts_with(self.speaker_v4) && l.split_whitespace().nth(2) == Some("Up")
                })
            }),
            Daemon::Frr => self
                .cli(&["show bfd peers json"])
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .and_then(|v| v.as_array().cloned())
                .is_some_and(|a| {
                    a.iter()
                        .any(|p| p["peer"] == self.speaker_v4 && p["status"] == "up")
                }),
        }
    }

    fn router_up(&self) -> bool {
        match self.daemon {
            Daemon::Gobgp => self.cli(&["neighbor"]).is_some(),
            Daemon::Bird => self.cli(&["show", "status"]).is_some(),
            Daemon::Frr => self.cli(&["show bgp summary"]).is_some(),
        }
    }

    /// Runs the daemon's CLI; `None` if it failed.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let (ok, out) = self.cli_status(args);
        ok.then_some(out)
    }

    /// Runs the daemon's CLI: whether it exited 0, and its output.
    fn cli_status(&self, args: &[&str]) -> (bool, String) {
        let d = self.dir.display().to_string();
        let mut c = match self.daemon {
            Daemon::Gobgp => self.in_router("gobgp"),
            Daemon::Bird => {
                let mut c = Command::new("birdc");
                c.args(["-s", &format!("{d}/bird.ctl")]);
                c
            }
            Daemon::Frr => {
                let mut c = Command::new("vtysh");
                c.args(["--vty_socket", &d]);
                c
            }
        };
        match self.daemon {
            Daemon::Frr => {
                // Talking to bgpd alone saves connecting to zebra and bfdd on every poll.
                if args.iter().all(|a| a.starts_with("show bgp")) {
                    c.args(["-d", "bgpd"]);
                }
                for a in args {
                    c.args(["-c", a]);
                }
            }
            _ => {
                c.args(args);
            }
        }
        let out = run(&mut c);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Everything the daemon logged so far.
    pub fn router_log(&self) -> String {
        [
            "gobgpd.log",
            "bird.out",
            "bird.log",
            "bgpd.out",
            "bgpd.log",
            "zebra.out",
            "bfdd.out",
            "bfdd.log",
        ]
        .iter()
        .filter_map(|f| fs::read_to_string(self.dir.join(f)).ok())
        .collect::<Vec<_>>()
        .join("\n")
    }

    /// Whether the daemon shows the session with the speaker as established.
    pub fn established(&self) -> bool {
        let speaker = self.speaker_v4;
        match self.daemon {
            Daemon::Gobgp => self
                .cli(&["neighbor", speaker, "-j"])
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .is_some_and(|v| v["state"]["session_state"] == 6),
            Daemon::Bird => self
                .cli(&["show", "protocols", "ferrolb"])
                .is_some_and(|s| s.contains("Established")),
            Daemon::Frr => self
                .cli(&[&format!("show bgp neighbors {speaker} json")])
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .is_some_and(|v| v[speaker]["bgpState"] == "Established"),
        }
    }

    /// What the daemon's RIB holds for `prefix` (learned from the speaker), if anything;
    /// `None` also when the CLI failed (see [`Lab::lookup`] to tell the two apart).
    pub fn route(&self, prefix: &str) -> Option<Seen> {
        self.lookup(prefix).ok().flatten()
    }

    /// Whether the daemon positively shows `prefix` as absent (the CLI answered).
    pub fn route_absent(&self, prefix: &str) -> bool {
        matches!(self.lookup(prefix), Ok(None))
    }

    /// What the daemon's RIB holds for `prefix`: `Err` if the CLI failed or its output could
    /// not be read (a loaded machine makes vtysh or birdc time out now and then), so a gap
    /// check never counts a failed query as a missing route.
    pub fn lookup(&self, prefix: &str) -> Result<Option<Seen>, String> {
        let v6 = prefix.contains(':');
        let fail = || format!("{:?}: CLI query for {prefix} failed", self.daemon);
        match self.daemon {
            Daemon::Gobgp => {
                let fam = if v6 { "ipv6" } else { "ipv4" };
                let s = self
                    .cli(&["global", "rib", "-a", fam, "-j"])
                    .ok_or_else(fail)?;
                let v: serde_json::Value = serde_json::from_str(&s).map_err(|_| fail())?;
                let Some(path) = v.get(prefix).and_then(|p| p.get(0)) else {
                    return Ok(None);
                };
                gobgp_seen(path).map(Some).ok_or_else(fail)
            }
            Daemon::Bird => {
                // birdc exits 1 with `Network not found` for an absent prefix, so that
                // output (after `BIRD x.y.z ready.`, i.e. connected) is the positive "absent".
                let (ok, s) = self.cli_status(&["show", "route", "all", prefix]);
                if s.contains("ready.") && s.contains("Network not found") {
                    return Ok(None);
                }
                if !ok || !s.contains(prefix) {
                    return Err(fail());
                }
                let mut seen = Seen::default();
                for line in s.lines().map(str::trim) {
                    if let Some(r) = line.strip_prefix("BGP.community:") {
                        seen.communities = bird_tuples(r);
                    } else if let Some(r) = line.strip_prefix("BGP.large_community:") {
                        seen.large = bird_tuples(r);
                    } else if let Some(r) = line.strip_prefix("BGP.local_pref:") {
                        seen.local_pref = r.trim().parse().ok();
                    }
                }
                Ok(Some(seen))
            }
            Daemon::Frr => {
                let fam = if v6 { "ipv6" } else { "ipv4" };
                let s = self
                    .cli(&[&format!("show bgp {fam} unicast {prefix} json")])
                    .ok_or_else(fail)?;
                let v: serde_json::Value = serde_json::from_str(&s).map_err(|_| fail())?;
                let Some(path) = v["paths"].get(0) else {
                    return Ok(None);
                };
                let list = |k: &str| -> Vec<String> {
                    path[k]["list"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                Ok(Some(Seen {
                    communities: list("community"),
                    large: list("largeCommunity"),
                    local_pref: path["locPrf"].as_u64().map(|x| x as u32),
                }))
            }
        }
    }

    /// Starts `ferrolb-bgp-lab` in the speaker namespace with `args`, reading commands from a
    /// pipe (see [`Lab::command`]).
    pub fn start_speaker(&mut self, args: &[&str]) {
        // Appended to, so a restarted speaker's log follows the first one.
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("speaker.log"))
            .expect("log");
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.speaker_ns,
                env!("CARGO_BIN_EXE_ferrolb-bgp-lab"),
            ])
            .args([
                "--router-id",
                self.speaker_v4,
                "--next-hop-v6",
                self.speaker_v6,
                "--stdin",
            ])
            .args(["--connect-retry", "2"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("ferrolb-bgp-lab");
        let stdin = child.stdin.take().expect("stdin");
        self.speaker = Some((child, stdin));
    }

    /// Sends `advertise PREFIX` or `withdraw PREFIX` to the speaker.
    pub fn command(&mut self, line: &str) {
        let (_, stdin) = self.speaker.as_mut().expect("speaker started");
        writeln!(stdin, "{line}").expect("speaker stdin");
        stdin.flush().expect("flush");
    }

    /// The speaker's log so far.
    pub fn speaker_log(&self) -> String {
        fs::read_to_string(self.dir.join("speaker.log")).unwrap_or_default()
    }

    /// Kills the speaker with SIGKILL (no NOTIFICATION, no BFD AdminDown) and reaps it.
    pub fn kill_speaker(&mut self) {
        if let Some((mut child, _stdin)) = self.speaker.take() {
            // `ip netns exec` execs the command, so the child's pid is the speaker's.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Drops everything the speaker's namespace sends, as if its node lost power: not even the
    /// FIN of a killed process reaches the router.
    pub fn blackhole_speaker(&self) {
        self.blackhole(&self.speaker_ns);
    }

    /// Drops everything the router's namespace sends.
    pub fn blackhole_router(&self) {
        self.blackhole(&self.router_ns);
    }

    fn blackhole(&self, ns: &str) {
        let rules = "table inet ferrolb_blackhole {\n chain out {\n  type filter hook output priority 0; policy drop;\n }\n}\n";
        let path = self.dir.join("blackhole.nft");
        fs::write(&path, rules).expect("nft rules");
        let out = run(Command::new("ip").args([
            "netns",
            "exec",
            ns,
            "nft",
            "-f",
            &path.display().to_string(),
        ]));
        assert!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the speaker with SIGTERM and waits for it.
    pub fn stop_speaker(&mut self) {
        if let Some((mut child, stdin)) = self.speaker.take() {
            drop(stdin);
            terminate(&mut child);
        }
    }
}

fn bird_tuples(s: &str) -> Vec<String> {
    s.split(')')
        .filter_map(|t| t.split('(').nth(1))
        .map(|t| t.split(',').map(str::trim).collect::<Vec<_>>().join(":"))
        .collect()
}

fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_speaker();
        for c in &mut self.children {
            terminate(c);
        }
        for ns in [&self.router_ns, &self.speaker_ns]
            .into_iter()
            .chain(self.mid_ns.as_ref())
        {
            if ns_exists(ns) {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
        for l in &self.links {
            let _ = Command::new("ip").args(["link", "del", l]).status();
        }
        if std::thread::panicking() {
            println!("logs kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// What gobgp's JSON path shows.
fn gobgp_seen(path: &serde_json::Value) -> Option<Seen> {
    let mut seen = Seen::default();
    for a in path["attrs"].as_array()? {
        match a["type"].as_u64() {
            Some(5) => seen.local_pref = a["value"].as_u64().map(|x| x as u32),
            Some(8) => {
                for c in a["communities"].as_array()? {
                    let c = c.as_u64()?;
                    seen.communities.push(format!("{}:{}", c >> 16, c & 0xFFFF));
                }
            }
            Some(32) => {
                for l in a["value"].as_array()? {
                    seen.large.push(format!(
                        "{}:{}:{}",
                        l["ASN"], l["LocalData1"], l["LocalData2"]
                    ));
                }
            }
            _ => {}
        }
    }
    Some(seen)
}
