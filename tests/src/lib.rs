//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};

/// The repository root (the Cargo workspace root).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives one level below the workspace root")
        .to_path_buf()
}

/// The lab's admin kubeconfig: `$FERROLB_KUBECONFIG`, else `<workspace root>/target/lab/kubeconfig`.
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("FERROLB_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/lab/kubeconfig"))
}

/// A binary of this workspace, `target/<profile>/<name>`, next to the running test
/// executable's `deps/` folder. The test command builds them first
/// (`cargo build --workspace --bins`).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` before this test",
        path.display()
    );
    path
}

/// A client for the lab's API server, from [`kubeconfig_path`].
pub async fn client() -> anyhow::Result<kube::Client> {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).with_context(|| {
        format!(
            "reading kubeconfig {} (start the lab with `cargo xtask controlplane up`)",
            path.display()
        )
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", path.display()))?;
    Ok(kube::Client::try_from(config)?)
}

/// The field manager the tests apply with.
pub const FIELD_MANAGER: &str = "ferrolb-tests";

/// Server-side applies every CRD in `charts/ferrolb/crds/` and waits until each is Established.
///
/// Returns the CRD names. Applying the committed YAML (not `ferrolb_api::crds()`) tests what
/// the chart actually ships; the api crate's drift test keeps the two equal.
pub async fn apply_crds(client: &kube::Client) -> anyhow::Result<Vec<String>> {
    let dir = workspace_root().join("charts/ferrolb/crds");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    paths.sort();

    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying {}", path.display()))?;
        names.push(name);
    }
    for name in &names {
        let established = await_condition(api.clone(), name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .with_context(|| format!("CRD {name} not Established after 30s"))??;
    }
    Ok(names)
}

/// A name unique to this process and call, for objects a test creates.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// The lab's kubectl, `target/lab/bin/kubectl` (put there by `cargo xtask lab up`).
pub fn kubectl_path() -> PathBuf {
    workspace_root().join("target/lab/bin/kubectl")
}

/// Runs the lab's kubectl with [`kubeconfig_path`]; its stdout, or the error text.
pub fn kubectl(args: &[&str]) -> Result<String, String> {
    kubectl_stdin(args, None)
}

/// [`kubectl`] with `stdin` piped in (for `apply -f -`).
pub fn kubectl_stdin(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(kubectl_path());
    cmd.arg("--kubeconfig").arg(kubeconfig_path()).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("running {}: {e}", kubectl_path().display()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A Helm release of charts/ferrolb in the lab, as `cargo xtask chart install` makes it.
#[derive(Debug, Clone, Copy)]
pub struct Release {
    /// The release name; it contains "ferrolb", so the objects are `<name>-controller` etc.
    pub name: &'static str,
    /// The namespace it is installed into.
    pub namespace: &'static str,
    /// Values on top of the lab's (`key=value`, as for `helm --set`).
    pub set: &'static [&'static str],
    /// Whether the release runs speakers (`speaker.enabled`).
    pub speaker: bool,
}

/// The lab's FerroLB: what `cargo xtask lab deploy` installs (release `ferrolb` in
/// `ferrolb-system`, the lab's values) and the demo and the README use.
pub const LAB_RELEASE: Release = Release {
    name: "ferrolb",
    namespace: "ferrolb-system",
    set: &[],
    speaker: true,
};

impl Release {
    /// The controller Deployment's name (and the controller's Lease's).
    pub fn controller(&self) -> String {
        format!("{}-controller", self.name)
    }

    /// The speaker DaemonSet's name.
    pub fn speaker(&self) -> String {
        format!("{}-speaker", self.name)
    }

    /// The release's pods of `component` (controller or speaker), as the API server has them.
    pub fn pods(&self, component: &str) -> Vec<k8s_openapi::api::core::v1::Pod> {
        let selector = format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component={component}",
            self.name
        );
        let json = kubectl(&[
            "-n",
            self.namespace,
            "get",
            "pods",
            "-l",
            &selector,
            "-o",
            "json",
        ])
        .unwrap_or_else(|e| panic!("listing the pods of release {}: {e}", self.name));
        let list: serde_json::Value = serde_json::from_str(&json).expect("kubectl's JSON");
        serde_json::from_value(list["items"].clone()).expect("a list of Pods")
    }

    /// Installs the release if missing, upgrades it if a pod runs an older binary than
    /// target/<profile>/, and waits until its workloads are rolled out. Once per test binary
    /// and release. Panics with what to run when it cannot.
    pub fn ensure_installed(&self) {
        use std::sync::Mutex;
        static DONE: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
        let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
        if done.contains(&self.name) {
            return;
        }
        let mut workloads = vec![("deployment", self.controller(), "controller")];
        if self.speaker {
            workloads.push(("daemonset", self.speaker(), "speaker"));
        }
        let by_helm = workloads.iter().all(|(kind, name, _)| {
            kubectl(&[
                "-n",
                self.namespace,
                "get",
                kind,
                name,
                "-o",
                r"jsonpath={.metadata.labels.app\.kubernetes\.io/managed-by}",
            ])
            .is_ok_and(|by| by == "Helm")
        });
        let stale: Vec<String> = if by_helm {
            workloads
                .iter()
                .flat_map(|(_, _, component)| self.stale_pods(component))
                .collect()
        } else {
            Vec::new()
        };
        if !by_helm || !stale.is_empty() {
            if by_helm {
                eprintln!(
                    "{}: {} run an older binary than target/: upgrading the release",
                    self.name,
                    stale.join(", ")
                );
            } else {
                eprintln!(
                    "release {} not found in {}: installing the chart",
                    self.name, self.namespace
                );
            }
            let mut cmd = std::process::Command::new(workspace_binary("xtask"));
            cmd.args([
                "chart",
                "install",
                "--release",
                self.name,
                "-n",
                self.namespace,
            ])
            .current_dir(workspace_root());
            let speaker = format!("speaker.enabled={}", self.speaker);
            for v in self.set.iter().copied().chain([speaker.as_str()]) {
                cmd.args(["--set", v]);
            }
            let status = cmd.status();
            assert!(
                status.as_ref().is_ok_and(|s| s.success()),
                "installing release {} with the chart failed ({status:?}): see the output above; \
                 `cargo xtask lab deploy` installs the lab's (after `sudo -E cargo xtask lab up`)",
                self.name
            );
        }
        for (kind, name, _) in &workloads {
            kubectl(&[
                "-n",
                self.namespace,
                "rollout",
                "status",
                &format!("{kind}/{name}"),
                "--timeout=120s",
            ])
            .unwrap_or_else(|e| {
                panic!(
                    "{kind}/{name} is not ready: {e}\nsee `kubectl -n {} get pods` and \
                     target/lab/nodes/node-N/pods/<pod uid>/<container>.log; \
                     `cargo xtask lab deploy` reinstalls the lab's FerroLB",
                    self.namespace
                )
            });
        }
        done.push(self.name);
    }

    /// The release's pods of `component` whose container started before
    /// target/<profile>/ferrolb-`component` was last built.
    fn stale_pods(&self, component: &str) -> Vec<String> {
        let built = std::fs::metadata(workspace_binary(&format!("ferrolb-{component}")))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        let Some(built) = built else {
            return Vec::new();
        };
        self.pods(component)
            .iter()
            .filter(|pod| {
                let started = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first())
                    .and_then(|c| c.state.as_ref())
                    .and_then(|s| s.running.as_ref())
                    .and_then(|r| r.started_at.as_ref())
                    .map(|t| t.0.as_second());
                started.is_some_and(|s| u64::try_from(s).unwrap_or(0) < built)
            })
            .filter_map(|pod| pod.metadata.name.clone())
            .collect()
    }
}

/// Makes sure FerroLB runs in the lab as `cargo xtask lab deploy` installs it ([`LAB_RELEASE`]:
/// the chart's args, ServiceAccounts and RBAC only, the workspace's current binaries), installing
/// or upgrading it with `xtask chart install` when it is missing, was not made by helm, or runs
/// an older build. Once per test binary.
pub fn ensure_ferrolb_installed() {
    LAB_RELEASE.ensure_installed();
}
