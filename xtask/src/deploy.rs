//! `cargo xtask lab deploy`: builds the workspace's FerroLB and installs or upgrades it in the
//! running lab with helm, from charts/ferrolb (release `ferrolb` in `ferrolb-system`, the lab's
//! values): what the demo and the end-to-end tests run against.

use std::path::Path;
use std::process::Command;

use crate::{chart, run};

/// Builds controller and speaker (the lab's kubelet runs target/debug's binaries for their
/// images), then `chart::install`s them.
pub fn run(root: &Path) -> anyhow::Result<()> {
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
    chart::install(root, &[])?;
    eprintln!("try `kubectl get ipaddresspools,svc,serviceannouncements -A`");
    Ok(())
}
