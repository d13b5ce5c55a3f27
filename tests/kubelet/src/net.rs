//! Pod network namespaces, made with iproute2's `ip` (see ADR 0005 for why not rtnetlink).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::OnceLock;

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

/// The host's mount namespace, held open for the kubelet's lifetime, and a path to it.
static HOST_MOUNT_NS: OnceLock<Option<(File, String)>> = OnceLock::new();

/// Where the kubelet makes pod namespace files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountNs {
    /// The kubelet already runs in the host's mount namespace.
    Own,
    /// Through `nsenter --mount=<path>` (the kubelet runs in a private one).
    Host(String),
    /// The kubelet runs in a private mount namespace and found no other: pod namespaces
    /// will only be visible to the kubelet.
    NotFound,
}

fn mount_ns_of(pid: &str) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

/// The mount namespace most processes are in, other than `ours`.
fn most_common_mount_ns(ours: &std::path::Path) -> Option<String> {
    let mut counts: std::collections::BTreeMap<std::path::PathBuf, (usize, String)> =
        std::collections::BTreeMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Some(ns) = mount_ns_of(&pid).filter(|ns| ns != ours) {
            counts.entry(ns).or_insert((0, pid)).0 += 1;
        }
    }
    counts
        .into_values()
        .max_by_key(|(n, _)| *n)
        .map(|(_, pid)| pid)
}

/// Finds and holds the mount namespace `ip netns add|del` must run in; call first in main.
///
/// The kubelet is started by `ip netns exec`, which puts it in a private *slave* mount
/// namespace: a namespace file it bind-mounts under /run/netns would exist only for itself.
/// Made in the host's mount namespace instead, the mount propagates to the host (so
/// `lab down`, tests and humans can `ip netns exec` into pods) and down into the kubelet's.
/// The host's is the parent's (whoever ran `ip netns exec`), else init's, else (the parent
/// is gone and /proc/1/ns is unreadable, as in some sandboxes) the one most processes share.
pub fn remember_host_mount_ns() -> MountNs {
    let Some(ours) = mount_ns_of("self") else {
        return MountNs::NotFound;
    };
    let parent = std::os::unix::process::parent_id().to_string();
    if mount_ns_of(&parent).as_ref() == Some(&ours) {
        return MountNs::Own;
    }
    let found = HOST_MOUNT_NS.get_or_init(|| {
        let pid = [parent.as_str(), "1"]
            .into_iter()
            .find(|p| mount_ns_of(p).is_some_and(|ns| ns != ours))
            .map(String::from)
            .or_else(|| most_common_mount_ns(&ours))?;
        // Keep it open: the process may exit, the namespace must stay reachable.
        let file = File::open(format!("/proc/{pid}/ns/mnt")).ok()?;
        let path = format!("/proc/{}/fd/{}", std::process::id(), file.as_raw_fd());
        Some((file, path))
    });
    match found {
        Some((_, path)) => MountNs::Host(path.clone()),
        None => MountNs::NotFound,
    }
}

fn host_mount_ns() -> Option<&'static str> {
    HOST_MOUNT_NS
        .get()
        .and_then(Option::as_ref)
        .map(|(_, path)| path.as_str())
}

/// `ip netns <args>` in the host's mount namespace.
async fn ip_netns(args: &[&str]) -> Result<String> {
    let mut argv = vec!["netns"];
    argv.extend_from_slice(args);
    match host_mount_ns() {
        Some(ns) => {
            let mount = format!("--mount={ns}");
            let mut full = vec![mount.as_str(), "--", "ip"];
            full.extend_from_slice(&argv);
            run("nsenter", &full).await
        }
        None => run("ip", &argv).await,
    }
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
    ip_netns(&["add", ns]).await?;
    let steps: [&[&str]; 9] = [
        &[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
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
    let _ = ip_netns(&["del", ns]).await;
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
