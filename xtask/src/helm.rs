//! helm, built from the Go module proxy at the version pinned in tests/helm/go.mod.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::gobuild;

/// The helm module path whose version tests/helm/go.mod pins.
const MODULE: &str = "helm.sh/helm/v4";

/// `target/lab/bin/helm`.
pub fn path(root: &Path) -> PathBuf {
    crate::lab_dir(root).join("bin").join("helm")
}

/// The pinned helm version: the `helm.sh/helm/v4` requirement in tests/helm/go.mod.
pub fn pinned_version(root: &Path) -> anyhow::Result<String> {
    required_version(root, MODULE)
}

/// The version of `module` that tests/helm/go.mod requires.
fn required_version(root: &Path, wanted: &str) -> anyhow::Result<String> {
    let gomod = fs::read_to_string(root.join("tests/helm/go.mod"))?;
    gomod
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let first = words.next()?;
            let (found, version) = if first == "require" {
                (words.next()?, words.next()?)
            } else {
                (first, words.next()?)
            };
            (found == wanted).then(|| version.to_string())
        })
        .next()
        .with_context(|| format!("tests/helm/go.mod does not require {wanted}"))
}

/// Builds helm if needed and points `target/lab/bin/helm` at it.
pub fn build(root: &Path) -> anyhow::Result<PathBuf> {
    let version = pinned_version(root)?;
    // Helm's Makefile derives the Kubernetes version it assumes (for
    // `.Capabilities.KubeVersion` and deprecation lints) from client-go's v0.x.y.
    let client_go = required_version(root, "k8s.io/client-go")?;
    let kube_minor = client_go
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .context("client-go's version has no minor part")?
        .to_string();
    let mut ldflags = vec![format!("-X {MODULE}/internal/version.version={version}")];
    for (pkg, major, minor) in [
        (
            "pkg/chart/v2/lint/rules",
            "k8sVersionMajor",
            "k8sVersionMinor",
        ),
        (
            "pkg/internal/v3/lint/rules",
            "k8sVersionMajor",
            "k8sVersionMinor",
        ),
        ("pkg/chart/common", "k8sVersionMajor", "k8sVersionMinor"),
        (
            "internal/version",
            "kubeClientVersionMajor",
            "kubeClientVersionMinor",
        ),
    ] {
        ldflags.push(format!("-X {MODULE}/{pkg}.{major}=1"));
        ldflags.push(format!("-X {MODULE}/{pkg}.{minor}={kube_minor}"));
    }
    let bin = gobuild::build_cached(&gobuild::GoProgram {
        name: "helm",
        what: format!("helm {version}"),
        src: root.join("tests").join("helm"),
        package: "helm.sh/helm/v4/cmd/helm",
        // What helm's own Makefile sets, so `helm version` tells the truth.
        ldflags,
        version,
        before_build: &|| Ok(()),
    })?;
    gobuild::link(&bin, &path(root))?;
    Ok(bin)
}
