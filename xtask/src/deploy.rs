//! `cargo xtask lab deploy`: builds the workspace's FerroLB and (re)starts it in a running lab.
//!
//! Today that is the controller; the speakers and then the Helm chart join as they land.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::{controlplane, run};

/// The controller's lab manifest (namespace, RBAC, Deployment).
const CONTROLLER_MANIFEST: &str = "tests/lab/ferrolb-controller.yaml";
const NAMESPACE: &str = "ferrolb-system";
const ROLLOUT_TIMEOUT: &str = "60s";

/// Builds the controller, applies the CRDs and its manifest, restarts it and waits for the rollout.
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
            .args(["build", "--bins", "-p", "ferrolb-controller"]),
    )?;
    let kubectl = |args: &[&str]| -> anyhow::Result<()> {
        run::status(
            Command::new(controlplane::kubectl(root))
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(args),
        )
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
    // A new binary under the same image name: only a restart makes the pods run it.
    kubectl(&[
        "-n",
        NAMESPACE,
        "rollout",
        "restart",
        "deployment/ferrolb-controller",
    ])?;
    kubectl(&[
        "-n",
        NAMESPACE,
        "rollout",
        "status",
        "deployment/ferrolb-controller",
        "--timeout",
        ROLLOUT_TIMEOUT,
    ])
    .context("the controller did not become ready: see `kubectl -n ferrolb-system get pods` and the kubelet logs under target/lab")?;
    eprintln!("ferrolb-controller deployed; try `kubectl get ipaddresspools,svc -A`");
    Ok(())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}
