//! `ferrolb-controller`: allocates IPs to LoadBalancer Services (allocation lands later;
//! today it connects, keeps its caches and serves health and metrics).

use std::net::SocketAddr;

use clap::Parser;
use ferrolb_runtime::{CommonArgs, Daemon, init_logging};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Api;
use tracing::info;

/// FerroLB controller: assigns external IPs to Services of type LoadBalancer.
#[derive(Debug, Parser)]
#[command(name = "ferrolb-controller", version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7472")]
    metrics_addr: SocketAddr,

    /// Services with this spec.loadBalancerClass (or none) are FerroLB's.
    #[arg(long, value_name = "CLASS", default_value = "ferrolb.io/ferrolb")]
    load_balancer_class: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.common.log_level.as_deref(), args.common.log_format)?;
    let mut daemon = Daemon::start("controller", &args.common, args.metrics_addr).await?;
    info!(load_balancer_class = %args.load_balancer_class, "controller settings");

    let client = daemon.client();
    // Held for the allocator, which lands with the IPAddressPool logic.
    let _services = daemon.reflect(Api::<Service>::all(client.clone()), "services");
    let _namespaces = daemon.reflect(Api::<Namespace>::all(client), "namespaces");

    daemon.run().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let args = Args::try_parse_from(["ferrolb-controller"]).unwrap();
        assert_eq!(args.metrics_addr, "0.0.0.0:7472".parse().unwrap());
        assert_eq!(args.load_balancer_class, "ferrolb.io/ferrolb");
    }
}
