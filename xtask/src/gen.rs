//! `cargo xtask gen`: write the CRD YAML generated from `ferrolb-api` into the chart.

use std::fs;
use std::path::Path;

use anyhow::Context;

/// Where the generated CRDs live, relative to the repository root.
pub const CRD_DIR: &str = "charts/ferrolb/crds";

/// Writes every CRD to `charts/ferrolb/crds/` and removes `ferrolb.io_*.yaml` files no kind owns.
pub fn run(repo_root: &Path) -> anyhow::Result<()> {
    let dir = repo_root.join(CRD_DIR);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = ferrolb_api::rendered_crds().context("rendering CRDs")?;

    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with("ferrolb.io_") && name.ends_with(".yaml");
        if ours && !files.iter().any(|(f, _)| *f == name) {
            let stale = dir.join(&name);
            fs::remove_file(&stale).with_context(|| format!("removing {}", stale.display()))?;
            println!("removed {}", stale.display());
        }
    }
    for (name, yaml) in files {
        let path = dir.join(&name);
        if fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
            fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
