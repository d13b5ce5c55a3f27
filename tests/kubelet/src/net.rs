//! Pod network namespaces, made with iproute2's `ip` (see ADR 0005 for why not rtnetlink).

use std::process::Stdio;

use tokio::process::Command;
use tracing::debug;

use crate::error::{Error, Result};
use crate::ipam::{NodePlan, PodAddrs};

/// Every pod namespace name starts with this, so `lab down` can sweep leftovers.
pub const POD_NS_PREFIX: &str = "ferrolb-pod-";
/// The pod bridge in the node namespace.
const BRIDGE: &str = "cbr0";

/// The prefix of this node's pod namespaces: `ferrolb-pod-<N>-`.
pub fn node_prefix(plan: NodePlan) -> String {
    format!("{POD_NS_PREFIX}{}-", plan.index)
}

/// A pod's namespace name: node index and the start of the pod uid (short, unique, and
/// greppable back to the pod).
pub fn pod_ns(plan: NodePlan, uid: &str) -> String {
    let short: String = uid.chars().filter(|c| *c != '-').take(12).collect();
    format!("{}{short}", node_prefix(plan))
}

/// The node-side veth of pod host number `host` (interface names are at most 15 bytes).
fn host_veth(host: u8) -> String {
    format!("vpod{host}")
}

/// Runs a command to completion; a non-zero exit is an error carrying its stderr.
pub async fn run(program: &str, args: &[&str]) -> Result<String> {
    let line = format!("{program} {}", args.join(" "));
    debug!(command = %line, "run");
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::Command {
            command: line.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: line,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn ip(args: &[&str]) -> Result<()> {
    run("ip", args).await.map(drop)
}

/// Creates namespace `ns` with `eth0` on `cbr0` holding `addrs`, default routes via the
/// node's gateways, and `lo` up. Leftovers of the same name are removed first.
pub async fn create(plan: NodePlan, ns: &str, addrs: PodAddrs) -> Result<()> {
    delete(ns).await;
    let veth = host_veth(addrs.host);
    let _ = ip(&["link", "del", &veth]).await;
    let v4 = format!("{}/24", addrs.v4);
    let v6 = format!("{}/64", addrs.v6);
    let (gw4, gw6) = (plan.gateway4().to_string(), plan.gateway6().to_string());
    ip(&["netns", "add", ns]).await?;
    let steps: [&[&str]; 9] = [
        &["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns],
        &["link", "set", &veth, "master", BRIDGE, "up"],
        &["-n", ns, "link", "set", "lo", "up"],
        &["-n", ns, "link", "set", "eth0", "up"],
        &["-n", ns, "addr", "add", &v4, "dev", "eth0"],
        // No duplicate address detection: addresses come from our own allocator, and DAD
        // would hold the address back for a second or more.
        &["-n", ns, "addr", "add", &v6, "dev", "eth0", "nodad"],
        &["-n", ns, "route", "add", "default", "via", &gw4],
        &["-n", ns, "-6", "route", "add", "default", "via", &gw6],
        &["-n", ns, "link", "set", "eth0", "mtu", "1500"],
    ];
    for step in steps {
        if let Err(e) = ip(step).await {
            delete(ns).await;
            return Err(e);
        }
    }
    Ok(())
}

/// Kills every process left in `ns` and deletes it (which removes its veth pair too).
/// Best effort: a namespace that does not exist is fine.
pub async fn delete(ns: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", ns]).await {
        for pid in pids.split_whitespace() {
            let _ = run("kill", &["-KILL", pid]).await;
        }
    }
    let _ = ip(&["netns", "del", ns]).await;
}

/// This node's pod namespaces that exist now.
pub async fn list(plan: NodePlan) -> Vec<String> {
    let prefix = node_prefix(plan);
    run("ip", &["netns", "list"])
        .await
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limits_and_the_sweep_prefix() {
        let plan = NodePlan::new(244).unwrap();
        let ns = pod_ns(plan, "0b3c5d7e-1111-2222-3333-444455556666");
        assert_eq!(ns, "ferrolb-pod-244-0b3c5d7e1111");
        assert!(ns.starts_with(POD_NS_PREFIX));
        assert!(host_veth(254).len() <= 15);
    }
}
