//! The nftables adapter: applies plans as atomic `nft -f -` transactions.

use crate::ForwardError;
use ferrolb_core::forward::nft::{
    NftConfig, counter_service, delta_transaction, full_transaction, remove_transaction,
};
use ferrolb_core::forward::{ForwardingPlan, ServiceKey, Slots, StaleFlow, diff, stale_udp_flows};
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

/// What one [`NftForwarder::apply`] did.
#[derive(Debug, Clone)]
pub struct ApplyReport {
    /// Full, incremental or nothing.
    pub kind: ApplyKind,
    /// Services whose rules changed.
    pub services_changed: usize,
    /// The transaction sent to `nft` (empty when unchanged).
    pub script: String,
    /// Time from rendering to `nft` exiting (conntrack flushes not included).
    pub elapsed: Duration,
    /// UDP flows to endpoints that went away whose conntrack entries were deleted, so their
    /// next packets are balanced again (failures are logged, not returned: the rules are right).
    pub flushed: Vec<StaleFlow>,
}

/// Keeps FerroLB's nftables table equal to the latest plan.
#[derive(Debug)]
pub struct NftForwarder {
    config: NftConfig,
    argv: Vec<String>,
    conntrack: Vec<String>,
    applied: Option<(ForwardingPlan, Slots)>,
}

impl NftForwarder {
    /// A forwarder owning table `inet <table>`, using `nft` from `PATH`.
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            config: NftConfig::with_table(table),
            argv: vec!["nft".into()],
            conntrack: vec!["conntrack".into()],
            applied: None,
        }
    }

    /// Uses these rendering settings (the table name included).
    pub fn with_config(mut self, config: NftConfig) -> Self {
        self.config = config;
        self
    }

    /// Runs `nft` through this command instead (e.g. `ip netns exec <ns> nft`).
    pub fn with_command(mut self, argv: Vec<String>) -> Self {
        self.argv = argv;
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
        let (kind, services_changed, script, slots) = match self.applied.take() {
            None => {
                let (script, slots) = full_transaction(&self.config, plan);
                (ApplyKind::Full, plan.services.len(), script, slots)
            }
            Some((old, mut slots)) => {
                let changes = diff(&old, plan);
                if changes.is_empty() {
                    self.applied = Some((old, slots));
                    return Ok(ApplyReport {
                        kind: ApplyKind::Unchanged,
                        services_changed: 0,
                        script: String::new(),
                        elapsed: start.elapsed(),
                        flushed: Vec::new(),
                    });
                }
                let script = delta_transaction(&self.config, &old, &mut slots, &changes);
                stale = stale_udp_flows(&old, plan);
                (ApplyKind::Incremental, changes.len(), script, slots)
            }
        };
        if let Err(e) = self.nft(&["-f", "-"], &script) {
            // The transaction was atomic, but resync whole next time rather than trust our memory.
            warn!(table = %self.config.table, error = %e, ?kind, "nft transaction failed");
            return Err(e);
        }
        self.applied = Some((plan.clone(), slots));
        let elapsed = start.elapsed();
        info!(table = %self.config.table, ?kind, services_changed, ?elapsed, "forwarding rules applied");
        // After the rules: a flow flushed before them would be re-created to the old endpoint.
        let flushed = stale
            .into_iter()
            .filter(|flow| match self.flush(flow) {
                Ok(()) => true,
                Err(e) => {
                    warn!(vip = %flow.frontend.vip, port = flow.frontend.port, backend = %flow.backend, error = %e, "flushing UDP conntrack entries of a removed endpoint failed; they expire by themselves");
                    false
                }
            })
            .collect();
        Ok(ApplyReport {
            kind,
            services_changed,
            script,
            elapsed,
            flushed,
        })
    }

    /// Deletes the conntrack entries of UDP flows from `flow.frontend` DNATed to `flow.backend`.
    fn flush(&self, flow: &StaleFlow) -> Result<(), ForwardError> {
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

    /// Removes the table (clean stop); succeeds if it is already gone.
    pub fn remove(&mut self) -> Result<(), ForwardError> {
        self.nft(&["-f", "-"], &remove_transaction(&self.config))?;
        self.applied = None;
        info!(table = %self.config.table, "forwarding table removed");
        Ok(())
    }

    /// Connections forwarded per Service since its counter was created (the packets of its
    /// `conn-…` counter, see [`ferrolb_core::forward::nft::connection_counter`]).
    pub fn connections(&self) -> Result<BTreeMap<ServiceKey, u64>, ForwardError> {
        let table = self.config.table.clone();
        let text = self.nft(&["list", "counters", "table", "inet", &table], "")?;
        Ok(parse_counters(&text))
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

/// Per Service, the packets of its connection counter in `nft list counters` output:
/// `counter <name> {` followed by `packets <n> bytes <m>`.
fn parse_counters(text: &str) -> BTreeMap<ServiceKey, u64> {
    let mut out = BTreeMap::new();
    let mut current = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line
            .strip_prefix("counter ")
            .and_then(|l| l.strip_suffix(" {"))
        {
            current = counter_service(name);
        } else if let (Some(key), Some(rest)) = (&current, line.strip_prefix("packets ")) {
            if let Some(Ok(n)) = rest.split(' ').next().map(str::parse) {
                out.insert(key.clone(), n);
            }
            current = None;
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
    fn reads_connection_counters_and_ignores_others() {
        let text = "table inet ferrolb {
	counter conn-default/web {
		packets 12 bytes 720
	}
	counter someone-elses {
		packets 5 bytes 300
	}
	counter conn-kube-system/dns {
		packets 0 bytes 0
	}
}
";
        let got = parse_counters(text);
        assert_eq!(
            got,
            BTreeMap::from([
                (ServiceKey::new("default", "web"), 12),
                (ServiceKey::new("kube-system", "dns"), 0),
            ])
        );
        assert!(parse_counters("").is_empty());
        assert!(parse_counters("counter conn-bad {\n packets x bytes 1\n}").is_empty());
    }
}
