//! `ferrolb-controller`: allocates IPs to LoadBalancer Services from IPAddressPools and
//! says on each Service and pool what it did and why.

mod convert;
mod error;
mod events;
mod lease;
mod metrics;
mod reconcile;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Parser};
use ferrolb_api::IPAddressPool;
use ferrolb_runtime::{CommonArgs, Daemon, Metrics, init_logging};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Api;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::convert::Selection;
use crate::metrics::ControllerMetrics;
use crate::status::IpMode;

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

    /// Leave Services without spec.loadBalancerClass to another load balancer.
    #[arg(long)]
    ignore_classless: bool,

    /// ipMode written in status.loadBalancer.ingress: proxy when FerroLB's forwarder
    /// carries the traffic (kube-proxy then leaves it alone), vip otherwise.
    #[arg(long, value_enum, default_value_t = IpMode::Proxy)]
    ip_mode: IpMode,

    /// Elect one writing replica with a Lease; `--leader-elect=false` for a single replica.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    leader_elect: bool,

    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "ferrolb-system")]
    lease_namespace: String,

    /// Name of the leader Lease.
    #[arg(long, default_value = "ferrolb-controller")]
    lease_name: String,

    /// Use only IPAddressPools with this label (`key=value`); lets several controllers
    /// (tests, or one per tenant with its own class) share a cluster without seeing each
    /// other's pools.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pool_selector: Option<(String, String)>,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.common.log_level.as_deref(), args.common.log_format)?;
    let controller_metrics = ControllerMetrics::default();
    let metrics = Metrics::new_with("controller", |r| controller_metrics.register(r));
    let mut daemon =
        Daemon::start_with_metrics("controller", &args.common, args.metrics_addr, metrics).await?;
    let identity = identity();
    info!(
        load_balancer_class = %args.load_balancer_class,
        ignore_classless = args.ignore_classless,
        ip_mode = args.ip_mode.as_str(),
        leader_elect = args.leader_elect,
        lease = %format!("{}/{}", args.lease_namespace, args.lease_name),
        %identity,
        "controller settings"
    );

    let client = daemon.client();
    let changed = Arc::new(Notify::new());
    let services = daemon.reflect_notify(
        Api::<Service>::all(client.clone()),
        "services",
        changed.clone(),
    );
    let namespaces = daemon.reflect_notify(
        Api::<Namespace>::all(client.clone()),
        "namespaces",
        changed.clone(),
    );
    let pools = daemon.reflect_notify(
        Api::<IPAddressPool>::all(client.clone()),
        "ipaddresspools",
        changed.clone(),
    );

    let stop = daemon.shutdown_handle();
    let (leader_tx, leader_rx) = watch::channel(!args.leader_elect);
    let election = args.leader_elect.then(|| {
        let cfg = lease::LeaseConfig::new(
            args.lease_namespace.clone(),
            args.lease_name.clone(),
            identity.clone(),
        );
        let api = Api::<Lease>::namespaced(client.clone(), &args.lease_namespace);
        tokio::spawn(lease::run(api, cfg, leader_tx, stop.clone()))
    });

    let ctx = reconcile::Context {
        recorder: events::Publisher::new(client.clone(), "ferrolb-controller".to_owned(), identity),
        client,
        services,
        namespaces,
        pools,
        selection: Selection {
            class: args.load_balancer_class,
            classless: !args.ignore_classless,
        },
        pool_selector: args.pool_selector,
        ip_mode: args.ip_mode,
        metrics: controller_metrics,
    };
    let reconciler = tokio::spawn(reconcile::run(ctx, changed, leader_rx, stop));

    daemon.run().await?;
    // The Lease is released on the way out so the other replica need not wait for expiry.
    if let Some(election) = election
        && tokio::time::timeout(Duration::from_secs(3), election)
            .await
            .is_err()
    {
        warn!("lease release timed out; the other replica takes over when it expires");
    }
    reconciler.abort();
    Ok(())
}

/// The pod name (`POD_NAME`), else `<hostname>-<pid>`: unique per replica.
fn identity() -> String {
    if let Some(name) = std::env::var("POD_NAME").ok().filter(|n| !n.is_empty()) {
        return name;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "controller".to_owned());
    format!("{host}-{}", std::process::id())
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
        assert!(args.leader_elect);
        assert!(!args.ignore_classless);
        assert_eq!(args.ip_mode, IpMode::Proxy);
        assert_eq!(args.lease_name, "ferrolb-controller");
    }

    #[test]
    fn flags() {
        let args = Args::try_parse_from([
            "ferrolb-controller",
            "--leader-elect=false",
            "--ip-mode",
            "vip",
            "--ignore-classless",
            "--lease-namespace",
            "x",
        ])
        .unwrap();
        assert!(!args.leader_elect);
        assert_eq!(args.ip_mode, IpMode::Vip);
        assert!(args.ignore_classless);
        assert_eq!(args.lease_namespace, "x");
    }
}
