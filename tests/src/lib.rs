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
