//! How VIP traffic reaches the proxy's sockets without the VIP being a local address: a TPROXY
//! rule per frontend in FerroLB's own table `inet ferrolb-proxy`, which marks the packets and
//! hands them to the listener bound (IP_TRANSPARENT) to VIP:port, and an `ip rule` sending
//! marked packets to a routing table holding only `local default dev lo`. ARP/NDP lookups carry
//! no mark, so the kernel never answers for a VIP (docs/decisions/0014-userspace-forwarder.md).

use crate::ForwardError;
use ferrolb_core::forward::Protocol;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};

/// Where the interception lives in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptConfig {
    /// The nftables table (family `inet`); FerroLB's kernel path uses another (`ferrolb`).
    pub table: String,
    /// The packet-mark bit set on intercepted packets (kube-proxy owns 0x4000 and 0x8000, the
    /// kernel path 0x2000).
    pub mark: u32,
    /// The routing table holding the `local` default route.
    pub route_table: u32,
    /// The `ip rule` priority (before `main`, 32766).
    pub rule_priority: u32,
}

impl Default for InterceptConfig {
    fn default() -> Self {
        Self {
            table: "ferrolb-proxy".into(),
            mark: 0x1000,
            route_table: 2046,
            rule_priority: 2046,
        }
    }
}

/// One intercepted frontend: a VIP, a protocol and a port.
pub type Intercepted = (IpAddr, Protocol, u16);

/// The whole table for `frontends`, as one `nft -f` transaction that also replaces whatever a
/// previous run left (`add` then `delete` then the new table, applied atomically).
pub fn render(cfg: &InterceptConfig, frontends: &BTreeSet<Intercepted>) -> String {
    let t = &cfg.table;
    let mut s = format!("add table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n");
    s.push_str(
        "  chain prerouting {\n    type filter hook prerouting priority mangle; policy accept;\n",
    );
    for (vip, proto, port) in frontends {
        let p = proto.as_str();
        let (fam, dst) = match vip {
            IpAddr::V4(_) => ("ip", SocketAddr::new(*vip, *port).to_string()),
            IpAddr::V6(_) => ("ip6", SocketAddr::new(*vip, *port).to_string()),
        };
        // Mark first: a packet that finds no listener is delivered locally (and dropped)
        // instead of being routed on. Only frontends with a listener get a rule.
        let _ = writeln!(
            s,
            "    {fam} daddr {vip} {p} dport {port} meta mark set meta mark | {:#x} tproxy {fam} to {dst} accept",
            cfg.mark
        );
    }
    s.push_str("  }\n}\n");
    s
}

/// Applies and removes the interception with `nft` and `ip`, in the caller's network namespace.
#[derive(Debug, Clone, Default)]
pub struct Interceptor {
    cfg: InterceptConfig,
    installed: Option<BTreeSet<Intercepted>>,
}

impl Interceptor {
    /// An interceptor with `cfg`; nothing is touched until [`Interceptor::apply`].
    pub fn new(cfg: InterceptConfig) -> Self {
        Self {
            cfg,
            installed: None,
        }
    }

    /// Makes the kernel intercept exactly `frontends`: routing rules (idempotent) and the table
    /// (one transaction, skipped when unchanged since the last successful call).
    pub fn apply(&mut self, frontends: &BTreeSet<Intercepted>) -> Result<bool, ForwardError> {
        if self.installed.as_ref() == Some(frontends) {
            return Ok(false);
        }
        if self.installed.is_none() {
            self.routes_up()?;
        }
        self.installed = None;
        nft(&render(&self.cfg, frontends))?;
        self.installed = Some(frontends.clone());
        Ok(true)
    }

    /// Removes the table, the rules and the routes (also those a previous run left).
    pub fn remove(&mut self) -> Result<(), ForwardError> {
        self.installed = None;
        let t = &self.cfg.table;
        nft(&format!("add table inet {t}\ndelete table inet {t}\n"))?;
        self.routes_down()
    }

    fn routes_up(&self) -> Result<(), ForwardError> {
        // Start from nothing so a crashed run's duplicates do not pile up.
        self.routes_down()?;
        let mark = format!("{:#x}/{:#x}", self.cfg.mark, self.cfg.mark);
        let table = self.cfg.route_table.to_string();
        let prio = self.cfg.rule_priority.to_string();
        for (fam, any) in [("-4", "0.0.0.0/0"), ("-6", "::/0")] {
            ip(&[
                fam, "rule", "add", "fwmark", &mark, "lookup", &table, "priority", &prio,
            ])?;
            ip(&[
                fam, "route", "replace", "local", any, "dev", "lo", "table", &table,
            ])?;
        }
        Ok(())
    }

    fn routes_down(&self) -> Result<(), ForwardError> {
        let mark = format!("{:#x}/{:#x}", self.cfg.mark, self.cfg.mark);
        let table = self.cfg.route_table.to_string();
        let prio = self.cfg.rule_priority.to_string();
        for fam in ["-4", "-6"] {
            // `ip rule del` removes one match per call; "No such file" ends the loop.
            while ip(&[
                fam, "rule", "del", "fwmark", &mark, "lookup", &table, "priority", &prio,
            ])
            .is_ok()
            {}
            let _ = ip(&[fam, "route", "flush", "table", &table]);
        }
        Ok(())
    }
}

fn nft(script: &str) -> Result<(), ForwardError> {
    run("nft", &["-f", "-"], script)
}

fn ip(args: &[&str]) -> Result<(), ForwardError> {
    run("ip", args, "")
}

/// Runs `program` with `args` and `stdin`; its status and stderr as the error.
fn run(program: &str, args: &[&str], stdin: &str) -> Result<(), ForwardError> {
    let spawn_err = |source| ForwardError::Spawn {
        program: program.into(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut input) = child.stdin.take() {
        // A write error means the program exited early; its status and stderr say why.
        let _ = input.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ForwardError::Nft {
            program: format!("{program} {}", args.join(" ")),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_rule_per_frontend_in_its_own_table() {
        let fe = BTreeSet::from([
            ("192.0.2.200".parse().unwrap(), Protocol::Tcp, 80),
            ("2001:db8:ff::10".parse().unwrap(), Protocol::Tcp, 443),
        ]);
        let got = render(&InterceptConfig::default(), &fe);
        assert_eq!(
            got,
            "add table inet ferrolb-proxy\ndelete table inet ferrolb-proxy\ntable inet ferrolb-proxy {\n  chain prerouting {\n    type filter hook prerouting priority mangle; policy accept;\n    ip daddr 192.0.2.200 tcp dport 80 meta mark set meta mark | 0x1000 tproxy ip to 192.0.2.200:80 accept\n    ip6 daddr 2001:db8:ff::10 tcp dport 443 meta mark set meta mark | 0x1000 tproxy ip6 to [2001:db8:ff::10]:443 accept\n  }\n}\n"
        );
    }
}
