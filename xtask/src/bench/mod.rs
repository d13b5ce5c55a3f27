//! `cargo xtask bench`: benchmarks against the lab's real control plane.
//!
//! Each benchmark measures its baseline (the ceiling a plain client reaches on the same
//! machine) in the same invocation and reports the ratio, prints a table and writes its
//! figures as JSON to `target/bench/<name>.json` (docs/decisions/0011-benchmarks.md).

mod alloc;
mod failover;
mod forward;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::controlplane;

/// Which benchmark to run.
#[derive(Debug, Subcommand)]
pub enum Which {
    /// Controller allocation: Services/s, create-to-IP latency and RSS, against a plain
    /// client writing the same statuses.
    Alloc(alloc::Args),
    /// Layer-2 failover: SIGKILL and SIGTERM of the owning speaker while the client probes.
    Failover(failover::Args),
    /// The L4 forwarder against a hand-written nftables DNAT in network namespaces: bulk,
    /// request/response, connect/request/close, rule updates at 10,000 Services.
    Forward(forward::Args),
}

/// Runs one benchmark.
pub fn run(root: &Path, which: Which) -> anyhow::Result<()> {
    match which {
        Which::Alloc(args) => alloc::run(root, args),
        Which::Failover(args) => failover::run(root, args),
        Which::Forward(args) => forward::run(root, args),
    }
}

/// Where benchmarks write their JSON.
fn out_path(root: &Path, name: &str) -> PathBuf {
    root.join("target")
        .join("bench")
        .join(format!("{name}.json"))
}

/// Writes `value` as pretty JSON to `target/bench/<name>.json` and returns the path.
fn write_json(root: &Path, name: &str, value: &serde_json::Value) -> anyhow::Result<PathBuf> {
    let path = out_path(root, name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A client for the lab's API server. No client-side rate limit: kube-rs has none.
async fn client(root: &Path) -> anyhow::Result<kube::Client> {
    let path = controlplane::kubeconfig(root);
    let kubeconfig = Kubeconfig::read_from(&path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// The `p`-quantile (0..=1) of sorted `values` by nearest rank; `None` when empty.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Milliseconds with a fraction, for tables and JSON.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A process's peak and current resident set (`VmHWM`, `VmRSS`) in bytes.
fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&v, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 0.5), None);
        let one = [Duration::from_millis(7)];
        assert_eq!(percentile(&one, 0.99), Some(Duration::from_millis(7)));
    }

    #[test]
    fn reads_own_rss() {
        let (peak, now) = rss(std::process::id()).expect("/proc/self/status");
        assert!(peak >= now && now > 0);
    }
}
