//! Developer workflows: `cargo xtask <command>`.

mod bench;
mod chart;
mod controlplane;
mod demo;
mod deploy;
mod r#gen; // `gen` is a reserved keyword in edition 2024
mod gobuild;
mod helm;
mod lab;
mod run;
mod test;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

/// FerroLB developer tasks.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The demo: lab up, FerroLB installed by its chart, a LoadBalancer Service answering through its EXTERNAL-IP, a node's speaker killed.
    Demo,
    /// Regenerate the CRD YAML in charts/ferrolb/crds/ from the ferrolb-api types.
    Gen,
    /// Run helm (built from the Go module proxy) against the lab: `cargo xtask helm -- list -A`.
    Helm {
        /// Arguments for helm.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Lint, render (drift-checked) or install the Helm chart: `cargo xtask chart lint`.
    Chart {
        #[command(subcommand)]
        action: chart::Action,
    },
    /// Build, start, stop or inspect the lab's Kubernetes control plane.
    Controlplane {
        #[command(subcommand)]
        action: controlplane::Action,
    },
    /// Bring the lab (a cluster of network namespaces and process kubelets) up or down.
    Lab {
        #[command(subcommand)]
        action: lab::Action,
    },
    /// The test command: build everything, start the control plane, run every test.
    Test(test::Args),
    /// Benchmarks against the real control plane, each with its baseline in the same run.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

fn main() -> anyhow::Result<()> {
    let root = repo_root();
    match Cli::parse().command {
        Command::Demo => demo::run(&root),
        Command::Gen => r#gen::run(&root),
        Command::Helm { args } => {
            let helm = helm::build(&root)?;
            run::status(
                std::process::Command::new(helm)
                    .env("KUBECONFIG", controlplane::kubeconfig(&root))
                    .args(args),
            )
        }
        Command::Chart { action } => chart::run(&root, action),
        Command::Controlplane { action } => controlplane::run(&root, action),
        Command::Lab { action } => lab::run(&root, action),
        Command::Test(args) => test::run(&root, args),
        Command::Bench { which } => bench::run(&root, which),
    }
}

/// The repository root: xtask lives one level below it.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}

/// Where the lab keeps its state: `target/lab` (kubeconfig, control plane data, logs).
fn lab_dir(root: &Path) -> PathBuf {
    root.join("target").join("lab")
}
