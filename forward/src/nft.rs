//! The nftables adapter: applies plans as atomic transactions, `nft -f -` scripts or the same
//! changes as netlink batches of the forwarder's own ([`NfSocket`]).

use crate::ForwardError;
use crate::NfSocket;
use ferrolb_core::forward::nft::{
    CounterKind, ElementDelta, NftConfig, SharedChains, TableParts, counter_sets, delta,
    frontend_key, full, remove_transaction,
};
use ferrolb_core::forward::{
    ForwardingPlan, Frontend, ServiceKey, StaleFlow, diff, stale_udp_flows,
};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How a plan reached the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyKind {
    /// The table was replaced whole (first apply, or recovery after a failed one).
    Full,
    /// Only the changed Services' objects were touched.
    Incremental,
    /// Nothing differed from what was last applied; no transaction ran.
    Unchanged,
}

/// How a transaction reached the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyRoute {
    /// An `nft -f -` process.
    Nft,
    /// Messages over the forwarder's netlink socket: an element-only update, or a full apply of
    /// a table holding no Service's own chains or sets.
    Netlink,
    /// Nothing was sent.
    None,
}

/// What one [`NftForwarder::apply`] did.
#[derive(Debug, Clone)]
pub struct ApplyReport {
    /// Full, incremental or nothing.
    pub kind: ApplyKind,
    /// Services whose rules changed.
    pub services_changed: usize,
    /// The transaction as an `nft` script (empty when unchanged), whichever way it went.
    pub script: String,
    /// How it went.
    pub route: ApplyRoute,
    /// Time from rendering to the kernel's answer (`nft` exiting, or the batch's
    /// acknowledgements).
    pub elapsed: Duration,
    /// UDP flows to endpoints that went away: their conntrack entries still send them there
    /// until [`Flusher::flush`] deletes them (after this apply, so a flushed flow's next packet
    /// meets the new rules). Left to the caller because each flush walks the whole conntrack
    /// table (tens of milliseconds with a busy one), which must not delay the next apply.
    pub stale: Vec<StaleFlow>,
}

/// Keeps FerroLB's nftables table equal to the latest plan.
#[derive(Debug)]
pub struct NftForwarder {
    config: NftConfig,
    argv: Vec<String>,
    conntrack: Vec<String>,
    netlink: Netlink,
    applied: Option<(ForwardingPlan, SharedChains)>,
}

/// Whether element-only updates and full applies go over a netlink socket.
#[derive(Debug)]
enum Netlink {
    /// Opened at the first such update, in this process's network namespace.
    Auto,
    /// This socket.
    Socket(NfSocket),
    /// Never: every transaction is an `nft` process.
    Off,
}

/// The transaction as a netlink batch, where it can be one.
enum Batch {
    /// Element operations only (an incremental update).
    Elements(ElementDelta),
    /// The whole table (a full apply).
    Table(TableParts),
}

impl NftForwarder {
    /// A forwarder owning table `inet <table>`, using `nft` from `PATH`.
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            config: NftConfig::with_table(table),
            argv: vec!["nft".into()],
            conntrack: vec!["conntrack".into()],
            netlink: Netlink::Auto,
            applied: None,
        }
    }

    /// Uses these rendering settings (the table name included).
    pub fn with_config(mut self, config: NftConfig) -> Self {
        self.config = config;
        self
    }

    /// Runs `nft` through this command instead (e.g. `ip netns exec <ns> nft`). Element-only
    /// updates and full applies then go through it too, unless [`Self::with_netlink`] gives a socket opened
    /// where that command runs: one opened here could be in another network namespace.
    pub fn with_command(mut self, argv: Vec<String>) -> Self {
        self.argv = argv;
        self.netlink = Netlink::Off;
        self
    }

    /// Sends element-only updates and full applies over this socket (opened in the table's
    /// network namespace).
    pub fn with_netlink(mut self, socket: NfSocket) -> Self {
        self.netlink = Netlink::Socket(socket);
        self
    }

    /// Runs `conntrack` (conntrack-tools) through this command instead.
    pub fn with_conntrack_command(mut self, argv: Vec<String>) -> Self {
        self.conntrack = argv;
        self
    }

    /// The rendering settings.
    pub fn config(&self) -> &NftConfig {
        &self.config
    }

    /// Makes the kernel forward exactly `plan`, in one atomic transaction.
    ///
    /// The first call replaces whatever a previous run left in the table; later calls only touch
    /// the Services that changed. After a failed call the next one replaces the table whole.
    pub fn apply(&mut self, plan: &ForwardingPlan) -> Result<ApplyReport, ForwardError> {
        let start = Instant::now();
        // On failure `applied` stays None, so the next call replaces the table whole.
        // A full apply after a restart or a failure does not know what went before, so it
        // flushes nothing; the flows of endpoints it dropped then time out (UDP: 30-120 s).
        let mut stale = Vec::new();
        let (kind, services_changed, script, batch, shared, next) = match self.applied.take() {
            None => {
                let f = full(&self.config, plan);
                (
                    ApplyKind::Full,
                    plan.services.len(),
                    f.script,
                    f.parts.map(Batch::Table),
                    f.shared,
                    plan.clone(),
                )
            }
            Some((mut old, mut shared)) => {
                let changes = diff(&old, plan);
                if changes.is_empty() {
                    self.applied = Some((old, shared));
                    return Ok(ApplyReport {
                        kind: ApplyKind::Unchanged,
                        services_changed: 0,
                        script: String::new(),
                        route: ApplyRoute::None,
                        elapsed: start.elapsed(),
                        stale: Vec::new(),
                    });
                }
                let d = delta(&self.config, &old, &mut shared, &changes);
                // Only changed Services can lose a UDP endpoint (a frontend moving between
                // Services changes both): comparing just those keeps an update O(change).
                let only_changed = |p: &ForwardingPlan| ForwardingPlan {
                    services: changes
                        .iter()
                        .filter_map(|c| Some((c.key().clone(), p.services.get(c.key())?.clone())))
                        .collect(),
                };
                stale = stale_udp_flows(&only_changed(&old), &only_changed(plan));
                old.apply(&changes);
                (
                    ApplyKind::Incremental,
                    changes.len(),
                    d.script,
                    d.elements.map(Batch::Elements),
                    shared,
                    old,
                )
            }
        };
        let table = self.config.table.clone();
        let sent = match &batch {
            Some(Batch::Elements(e)) => match self.socket() {
                Some(socket) => socket.apply(&table, e).map(|()| ApplyRoute::Netlink),
                None => self.nft(&["-f", "-"], &script).map(|_| ApplyRoute::Nft),
            },
            Some(Batch::Table(p)) => self.full_over_netlink(p, &script),
            None => self.nft(&["-f", "-"], &script).map(|_| ApplyRoute::Nft),
        };
        let route = match sent {
            Ok(route) => route,
            Err(e) => {
                // The transaction was atomic, but resync whole next time rather than trust our memory.
                warn!(table = %self.config.table, error = %e, ?kind, "forwarding transaction failed");
                return Err(e);
            }
        };
        self.applied = Some((next, shared));
        let elapsed = start.elapsed();
        info!(table = %self.config.table, ?kind, services_changed, ?elapsed, "forwarding rules applied");
        Ok(ApplyReport {
            kind,
            services_changed,
            script,
            route,
            elapsed,
            stale,
        })
    }

    /// A full apply as one netlink batch; if the kernel refuses it, the same transaction as a
    /// script (`nft` is the reference the batch imitates, so a refusal is logged as a bug).
    fn full_over_netlink(
        &mut self,
        parts: &TableParts,
        script: &str,
    ) -> Result<ApplyRoute, ForwardError> {
        let config = self.config.clone();
        if let Some(socket) = self.socket() {
            match socket.apply_full(&config, parts) {
                Ok(()) => return Ok(ApplyRoute::Netlink),
                Err(e) => {
                    warn!(table = %config.table, error = %e, "full apply over netlink refused; applying it with nft instead");
                }
            }
        }
        self.nft(&["-f", "-"], script).map(|_| ApplyRoute::Nft)
    }

    /// The netlink socket, opening it on first use; `None` when
    /// they go through `nft` (configured so, or the socket cannot be had: logged once).
    fn socket(&mut self) -> Option<&mut NfSocket> {
        if let Netlink::Auto = self.netlink {
            self.netlink = match NfSocket::open() {
                Ok(s) => Netlink::Socket(s),
                Err(e) => {
                    warn!(error = %e, "no netfilter netlink socket; every update runs nft");
                    Netlink::Off
                }
            };
        }
        match &mut self.netlink {
            Netlink::Socket(s) => Some(s),
            _ => None,
        }
    }

    /// What flushing stale UDP flows needs, detached from the forwarder so that it can run
    /// beside the next apply.
    pub fn flusher(&self) -> Flusher {
        Flusher {
            conntrack: self.conntrack.clone(),
        }
    }

    /// Removes the table (clean stop); succeeds if it is already gone.
    pub fn remove(&mut self) -> Result<(), ForwardError> {
        self.nft(&["-f", "-"], &remove_transaction(&self.config))?;
        self.applied = None;
        info!(table = %self.config.table, "forwarding table removed");
        Ok(())
    }

    /// Connections and bytes forwarded per Service and frontend since the frontend's counters
    /// were created (they live while it forwards; see
    /// [`ferrolb_core::forward::nft::counter_sets`]). Empty before the first apply.
    pub fn counters(&self) -> Result<CounterReading, ForwardError> {
        self.counter_reader().read()
    }

    /// What reading the counters needs, detached from the forwarder so that a reading (about a
    /// second of `nft` at 10,000 Services) can run beside the next apply.
    pub fn counter_reader(&self) -> CounterReader {
        let frontends = self
            .applied
            .iter()
            .flat_map(|(plan, _)| &plan.services)
            .flat_map(|(key, s)| s.frontends.keys().map(move |fe| (key.clone(), *fe)))
            .collect();
        CounterReader {
            argv: self.argv.clone(),
            table: self.config.table.clone(),
            frontends,
        }
    }

    /// The table as the kernel holds it (`nft -a list table`), for diagnostics and tests.
    pub fn list(&self) -> Result<String, ForwardError> {
        let table = self.config.table.clone();
        self.nft(&["-a", "list", "table", "inet", &table], "")
    }

    fn nft(&self, args: &[&str], stdin: &str) -> Result<String, ForwardError> {
        run(&self.argv, args, stdin)
    }
}

/// Deletes the conntrack entries of UDP flows to endpoints that went away (see
/// [`ApplyReport::stale`]), with `conntrack` from conntrack-tools.
#[derive(Debug, Clone)]
pub struct Flusher {
    conntrack: Vec<String>,
}

impl Flusher {
    /// Flushes `flows`; returns those whose entries are gone (none matching counts). Failures
    /// are logged, not returned: the rules are right, and the entries expire by themselves.
    pub fn flush(&self, flows: &[StaleFlow]) -> Vec<StaleFlow> {
        flows
            .iter()
            .filter(|flow| match self.flush_one(flow) {
                Ok(()) => true,
                Err(e) => {
                    warn!(vip = %flow.frontend.vip, port = flow.frontend.port, backend = %flow.backend, error = %e, "flushing UDP conntrack entries of a removed endpoint failed; they expire by themselves");
                    false
                }
            })
            .copied()
            .collect()
    }

    /// Deletes the conntrack entries of UDP flows from `flow.frontend` DNATed to `flow.backend`.
    fn flush_one(&self, flow: &StaleFlow) -> Result<(), ForwardError> {
        let family = if flow.backend.is_ipv4() {
            "ipv4"
        } else {
            "ipv6"
        };
        let (vip, port) = (
            flow.frontend.vip.to_string(),
            flow.frontend.port.to_string(),
        );
        let (be, be_port) = (
            flow.backend.ip().to_string(),
            flow.backend.port().to_string(),
        );
        let args = [
            "-D",
            "-f",
            family,
            "-p",
            "udp",
            "--orig-dst",
            &vip,
            "--orig-port-dst",
            &port,
            "--reply-src",
            &be,
            "--reply-port-src",
            &be_port,
        ];
        match run(&self.conntrack, &args, "") {
            // conntrack exits non-zero when nothing matched: no flow, nothing to flush.
            Err(ForwardError::Nft { stderr, .. }) if stderr.contains(" 0 flow entries") => Ok(()),
            r => r.map(drop),
        }
    }
}

/// Reads the per-frontend counters of a table (see [`NftForwarder::counter_reader`]).
#[derive(Debug, Clone)]
pub struct CounterReader {
    argv: Vec<String>,
    table: String,
    frontends: Vec<(ServiceKey, Frontend)>,
}

impl CounterReader {
    /// Connections and bytes per Service and frontend of the plan last applied when this
    /// reader was made; empty if none was.
    pub fn read(&self) -> Result<CounterReading, ForwardError> {
        if self.frontends.is_empty() {
            return Ok(BTreeMap::new());
        }
        // One `nft` per set: nft 1.0.6 fails on a second `list set` in one `-f` script.
        let mut text = String::new();
        for (set, _) in counter_sets() {
            text += &run(
                &self.argv,
                &["list", "set", "inet", &self.table, set.as_str()],
                "",
            )?;
        }
        let parsed = parse_set_counters(&text);
        let mut out = CounterReading::new();
        for (key, fe) in &self.frontends {
            let element = frontend_key(fe);
            let mut counts = None;
            for (set, kind) in counter_sets() {
                let Some(&(packets, bytes)) = parsed.get(&(set.as_str(), element.clone())) else {
                    continue;
                };
                let c: &mut FrontendCounts = counts.get_or_insert_with(Default::default);
                match kind {
                    CounterKind::Connections => c.connections = packets,
                    CounterKind::Bytes => c.bytes = bytes,
                }
            }
            if let Some(c) = counts {
                out.entry(key.clone()).or_default().insert(*fe, c);
            }
        }
        Ok(out)
    }
}

/// What the kernel counted for one frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrontendCounts {
    /// Connections forwarded (first packets through the nat chain).
    pub connections: u64,
    /// Bytes forwarded, both directions, IP headers included.
    pub bytes: u64,
}

/// Per Service, per forwarding frontend, its counts.
pub type CounterReading = BTreeMap<ServiceKey, BTreeMap<Frontend, FrontendCounts>>;

/// Per (set, element key), the packets and bytes of its counter in `nft list set` output:
/// `set <name> {` … `elements = { <key> counter packets <n> bytes <m>, … }` (one or more lines).
fn parse_set_counters(text: &str) -> BTreeMap<(&str, String), (u64, u64)> {
    let mut out = BTreeMap::new();
    let mut set = None;
    let mut elements: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("set ").and_then(|l| l.strip_suffix(" {")) {
            set = Some(name);
            continue;
        }
        let body = match (elements.is_some(), line.strip_prefix("elements = {")) {
            (false, Some(body)) => {
                elements = Some(String::new());
                body
            }
            (true, _) => line,
            (false, None) => continue,
        };
        let acc = elements.as_mut().expect("collecting elements");
        let (part, done) = match body.split_once('}') {
            Some((part, _)) => (part, true),
            None => (body, false),
        };
        acc.push_str(part);
        acc.push(' ');
        if !done {
            continue;
        }
        let acc = elements.take().unwrap_or_default();
        let Some(set) = set else { continue };
        for item in acc.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((key, counter)) = item.split_once(" counter packets ") else {
                continue;
            };
            let Some((packets, bytes)) = counter.split_once(" bytes ") else {
                continue;
            };
            if let (Ok(p), Ok(b)) = (packets.trim().parse(), bytes.trim().parse()) {
                out.insert((set, key.trim().to_string()), (p, b));
            }
        }
    }
    out
}

/// Runs `argv` + `args` with `stdin`; its stdout, or its status and stderr as the error.
fn run(argv: &[String], args: &[&str], stdin: &str) -> Result<String, ForwardError> {
    {
        let (program, prefix) = argv.split_first().expect("commands are never empty");
        debug!(%program, ?args, bytes = stdin.len(), "running nft");
        let mut child = Command::new(program)
            .args(prefix)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ForwardError::Spawn {
                program: program.clone(),
                source,
            })?;
        if let Some(mut input) = child.stdin.take() {
            // A write error means nft exited early; its status and stderr say why.
            let _ = input.write_all(stdin.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|source| ForwardError::Spawn {
                program: program.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(ForwardError::Nft {
                program: argv.join(" "),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_element_counters_of_one_and_several_lines_and_ignores_others() {
        let text = "table inet ferrolb {
	set conn4 {
		type ipv4_addr . inet_proto . inet_service
		counter
		elements = { 192.0.2.10 . tcp . 80 counter packets 12 bytes 720 }
	}
}
table inet ferrolb {
	set bytes4 {
		type ipv4_addr . inet_proto . inet_service
		counter
		elements = { 192.0.2.10 . tcp . 80 counter packets 40 bytes 5120,
			     192.0.2.11 . udp . 53 counter packets 2 bytes 130,
			     192.0.2.12 . udp . 54 counter packets x bytes 1 }
	}
}
table inet ferrolb {
	set conn6 {
		type ipv6_addr . inet_proto . inet_service
		counter
	}
}
";
        let got = parse_set_counters(text);
        assert_eq!(
            got,
            BTreeMap::from([
                (("conn4", "192.0.2.10 . tcp . 80".to_string()), (12, 720)),
                (("bytes4", "192.0.2.10 . tcp . 80".to_string()), (40, 5120)),
                (("bytes4", "192.0.2.11 . udp . 53".to_string()), (2, 130)),
            ])
        );
        assert!(parse_set_counters("").is_empty());
    }
}
