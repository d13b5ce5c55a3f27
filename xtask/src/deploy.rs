//! `cargo xtask lab deploy`: builds the workspace's FerroLB and (re)starts it in a running lab.
//!
//! The controller (a Deployment) and the speakers (a DaemonSet, one per node); the Helm chart
//! replaces these manifests when it lands.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::{controlplane, run};

/// The controller's lab manifest (namespace, RBAC, Deployment).
const CONTROLLER_MANIFEST: &str = "tests/lab/ferrolb-controller.yaml";
/// The speakers' lab manifest (RBAC, DaemonSet); the controller's makes the namespace.
const SPEAKER_MANIFEST: &str = "tests/lab/ferrolb-speaker.yaml";
const NAMESPACE: &str = "ferrolb-system";
const ROLLOUT_TIMEOUT: &str = "60s";

/// Builds controller and speaker, applies the CRDs and their manifests, restarts them and waits
/// for the rollouts.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let kubeconfig = controlplane::kubeconfig(root);
    anyhow::ensure!(
        kubeconfig.is_file(),
        "{} is missing: bring the lab up first (`sudo -E cargo xtask lab up`)",
        kubeconfig.display()
    );
    // The lab's kubelet maps the image to target/debug/ferrolb-controller.
    run::status(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(root)
            .args([
                "build",
                "--bins",
                "-p",
                "ferrolb-controller",
                "-p",
                "ferrolb-speaker",
            ]),
    )?;
    let kubectl = |args: &[&str]| -> anyhow::Result<()> {
        run::status(controlplane::kubectl_cmd(root).args(args))
    };
    // CRDs first: the controller watches IPAddressPools from its first second.
    let crds = root.join("charts/ferrolb/crds");
    kubectl(&["apply", "--server-side", "-f", path_str(&crds)?])?;
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd",
        "--all",
    ])
    .context("waiting for the CRDs to be Established")?;
    let manifest: PathBuf = root.join(CONTROLLER_MANIFEST);
    kubectl(&["apply", "-f", path_str(&manifest)?])?;
    kubectl(&["apply", "-f", path_str(&root.join(SPEAKER_MANIFEST))?])?;
    // A new binary under the same image name: only a restart makes the pods run it.
    for workload in ["deployment/ferrolb-controller", "daemonset/ferrolb-speaker"] {
        kubectl(&["-n", NAMESPACE, "rollout", "restart", workload])?;
    }
    for workload in ["deployment/ferrolb-controller", "daemonset/ferrolb-speaker"] {
        kubectl(&[
            "-n",
            NAMESPACE,
            "rollout",
            "status",
            workload,
            "--timeout",
            ROLLOUT_TIMEOUT,
        ])
        .with_context(|| format!("{workload} did not become ready: see `kubectl -n ferrolb-system get pods` and the kubelet logs under target/lab"))?;
    }
    eprintln!(
        "ferrolb-controller and ferrolb-speaker deployed; try `kubectl get ipaddresspools,svc,svcann -A`"
    );
    Ok(())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}
