//! The lab's process kubelet: registers a Node and runs the Pods bound to it as processes
//! in per-pod network namespaces. See docs/decisions/0005-process-kubelet.md.

mod env;
mod error;
mod image;
mod ipam;
mod kubelet;
mod net;
mod node;
mod pod;
mod probe;
mod runtime;
mod status;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

/// Command-line options (the lab's `lab up` passes all of them).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The Node name, `node-N`.
    #[arg(long)]
    node_name: String,
    /// N: picks the node's addresses and pod CIDRs from the lab's address plan.
    #[arg(long)]
    node_index: u8,
    /// Kubeconfig with the API server's management address.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Pod state (records, logs, token files) lives under `<state-dir>/pods/<uid>/`.
    #[arg(long)]
    state_dir: PathBuf,
    /// Where the workspace binaries the images map to are (`target/debug`).
    #[arg(long)]
    bin_dir: PathBuf,
    /// `KUBERNETES_SERVICE_HOST` for pods.
    #[arg(long, default_value = "198.19.0.1")]
    api_server_host: String,
    /// `KUBERNETES_SERVICE_PORT` for pods.
    #[arg(long, default_value_t = 6443)]
    api_server_port: u16,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Before anything else: the parent that ran `ip netns exec` may not wait for us.
    let host_mount_ns = net::remember_host_mount_ns();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    if args.log_json {
        fmt.json().init();
    } else {
        fmt.init();
    }

    let plan = ipam::NodePlan::new(args.node_index)
        .with_context(|| format!("--node-index must be 1..={}", ipam::MAX_NODE_INDEX))?;
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", args.kubeconfig.display()))?;
    let client = kube::Client::try_from(config)?;
    let bin_dir = std::path::absolute(&args.bin_dir)?;
    let pods_dir = std::path::absolute(args.state_dir.join("pods"))?;
    std::fs::create_dir_all(&pods_dir)
        .with_context(|| format!("creating {}", pods_dir.display()))?;

    let shared = Arc::new(pod::Shared {
        client,
        node: node::Identity::detect(args.node_name.clone(), plan),
        bin_dir,
        pods_dir,
        api_host: args.api_server_host,
        api_port: args.api_server_port,
        ipam: Mutex::new(ipam::Ipam::new(plan)),
    });
    info!(node = %args.node_name, index = plan.index, pod_cidr4 = %plan.pod_cidr4(), pod_cidr6 = %plan.pod_cidr6(), "ferrolb-kubelet starting");
    match &host_mount_ns {
        net::MountNs::NotFound => tracing::warn!(
            "running in a private mount namespace and found the host's nowhere: pod namespaces will only be visible to this kubelet"
        ),
        other => info!(mount_ns = ?other, "where pod namespace files are made"),
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping"),
            _ = int.recv() => info!("SIGINT: stopping"),
        }
    };
    kubelet::run(shared, shutdown).await;
    info!("ferrolb-kubelet stopped");
    Ok(())
}
