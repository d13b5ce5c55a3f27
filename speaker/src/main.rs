//! `ferrolb-speaker`: announces Service IPs from its node (announcing lands later; today
//! it connects, keeps its caches and serves health and metrics).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use clap::Parser;
use ferrolb_core::announce::ServiceKey;
use ferrolb_runtime::{CommonArgs, Daemon, init_logging};
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::Api;
use tokio::sync::watch;
use tracing::info;

// The forwarder (speaker/src/forward.rs, another engineer's) declares `mod forward;` here.

/// What this node announces right now: each IP with the Service it belongs to (for a shared
/// IP, the first Service by namespace/name). The announcer publishes it after every change;
/// the forwarder consumes it.
pub type Announced = BTreeMap<IpAddr, ServiceKey>;

/// FerroLB speaker: announces LoadBalancer IPs by ARP/NDP and BGP from this node.
#[derive(Debug, Parser)]
#[command(name = "ferrolb-speaker", version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7473")]
    metrics_addr: SocketAddr,

    /// The Node this speaker runs on (the DaemonSet passes spec.nodeName).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    node_name: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.common.log_level.as_deref(), args.common.log_format)?;
    let mut daemon = Daemon::start("speaker", &args.common, args.metrics_addr).await?;
    info!(node = %args.node_name, "speaker settings");

    let client = daemon.client();
    let services = daemon.reflect(Api::<Service>::all(client.clone()), "services");
    let endpoint_slices =
        daemon.reflect(Api::<EndpointSlice>::all(client.clone()), "endpointslices");
    let _nodes = daemon.reflect(Api::<Node>::all(client), "nodes");

    // The announcer owns the sender; the forwarder gets a receiver plus the two stores.
    let (_announced_tx, _announced_rx) = watch::channel(Announced::new());
    let (_services, _endpoint_slices) = (services, endpoint_slices);

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
    fn node_name_from_flag() {
        let args = Args::try_parse_from(["ferrolb-speaker", "--node-name", "node-1"]).unwrap();
        assert_eq!(args.node_name, "node-1");
        assert_eq!(args.metrics_addr, "0.0.0.0:7473".parse().unwrap());
    }
}
