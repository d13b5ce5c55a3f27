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

use clap::{ArgAction, CommandFactory, Parser};
use ferrolb_api::IPAddressPool;
use ferrolb_core::LabelSelector;
use ferrolb_runtime::{CommonArgs, Daemon, Metrics, init_logging};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Api;
use kube::runtime::reflector::Store;
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

    /// Seconds the Lease stays valid without renewal: a killed leader is replaced within
    /// this plus one --lease-retry-period.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=3600))]
    lease_duration: u64,

    /// Seconds a leader that cannot renew keeps writing; must be under --lease-duration so
    /// it has stopped before anyone may take over.
    #[arg(long, value_name = "SECONDS", default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=3600))]
    lease_renew_deadline: u64,

    /// Seconds between the leader's renewals; must be under --lease-renew-deadline.
    #[arg(long, value_name = "SECONDS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    lease_renew_period: u64,

    /// Seconds between a follower's checks whether the Lease expired.
    #[arg(long, value_name = "SECONDS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    lease_retry_period: u64,

    /// Use only IPAddressPools this label selector matches (kubectl's `-l` syntax: `k=v`,
    /// `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, comma-separated); lets several
    /// controllers (tests, or one per tenant with its own class) share a cluster without
    /// seeing each other's pools.
    #[arg(long, value_name = "SELECTOR", value_parser = LabelSelector::parse)]
    pool_selector: Option<LabelSelector>,
}

impl Args {
    /// The election timing from the flags, or why it cannot work.
    fn lease_timing(&self) -> Result<lease::Timing, String> {
        lease::Timing::new(
            Duration::from_secs(self.lease_duration),
            Duration::from_secs(self.lease_renew_deadline),
            Duration::from_secs(self.lease_renew_period),
            Duration::from_secs(self.lease_retry_period),
        )
    }
}

// One thread: the controller waits on the API server; its passes take milliseconds. A
// single thread also means a single malloc arena, which keeps peak RSS down (ADR 0007).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let timing = match args.lease_timing() {
        Ok(timing) => timing,
        Err(why) => Args::command()
            .error(clap::error::ErrorKind::ArgumentConflict, why)
            .exit(),
    };
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
    let selection = Selection {
        class: args.load_balancer_class,
        classless: !args.ignore_classless,
    };
    // Services and Namespaces are cached whole-cluster: keep only what the controller reads.
    // A pass runs for events about our Services (or ones that just stopped being ours) and
    // Services still carrying our marks, not for everyone else's churn.
    let ours = ferrolb_api::service::Ours::new(selection.clone());
    let (services, services_watch) = reflect_slim(
        &daemon,
        Api::<Service>::all(client.clone()),
        "services",
        ferrolb_runtime::Wake::when(changed.clone(), move |svc, deleted| {
            ours.event(svc, deleted) || status::observed(svc).has_our_marks()
        }),
        convert::slim_service,
    );
    let (namespaces, namespaces_watch) = reflect_slim(
        &daemon,
        Api::<Namespace>::all(client.clone()),
        "namespaces",
        ferrolb_runtime::Wake::always(changed.clone()),
        convert::slim_namespace,
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
            timing,
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
        selection,
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
    services_watch.abort();
    namespaces_watch.abort();
    Ok(())
}

/// A store of `resource` kept by a spawned watch that slims every object with `strip`, with
/// the daemon's readiness gate and metrics (as `Daemon::reflect_notify` does, plus `strip`).
fn reflect_slim<K>(
    daemon: &Daemon,
    api: Api<K>,
    resource: &'static str,
    wake: ferrolb_runtime::Wake<K>,
    strip: fn(&mut K),
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, watch) = ferrolb_runtime::reflect_stripped(
        api,
        resource,
        daemon
            .readiness()
            .gate(resource, "waiting for initial list"),
        daemon.metrics().clone(),
        Some(wake),
        strip,
    );
    (store, tokio::spawn(watch))
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
        let timing = args.lease_timing().unwrap();
        assert_eq!(timing.lease_duration, Duration::from_secs(10));
        assert_eq!(timing.renew_deadline, Duration::from_secs(7));
    }

    /// Bad inputs tried: a renew deadline not under the Lease, a renewal period not under
    /// the deadline, a zero and a non-numeric duration.
    #[test]
    fn lease_timing_that_cannot_work_is_refused() {
        let parse = |flags: &[&str]| {
            let mut argv = vec!["ferrolb-controller"];
            argv.extend_from_slice(flags);
            Args::try_parse_from(argv)
        };
        let err = parse(&["--lease-duration", "5", "--lease-renew-deadline", "5"])
            .unwrap()
            .lease_timing()
            .unwrap_err();
        assert!(
            err.contains(
                "--lease-renew-deadline (5 s) must be shorter than --lease-duration (5 s)"
            ),
            "{err}"
        );
        let err = parse(&["--lease-renew-period", "7"])
            .unwrap()
            .lease_timing()
            .unwrap_err();
        assert!(
            err.contains(
                "--lease-renew-period (7 s) must be shorter than --lease-renew-deadline (7 s)"
            ),
            "{err}"
        );
        assert!(parse(&["--lease-duration", "0"]).is_err());
        assert!(parse(&["--lease-retry-period", "soon"]).is_err());
        let ok = parse(&["--lease-duration", "15", "--lease-renew-deadline", "10"]).unwrap();
        assert_eq!(
            ok.lease_timing().unwrap().lease_duration,
            Duration::from_secs(15)
        );
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

    #[test]
    fn pool_selector_takes_kubectl_syntax_and_refuses_bad_ones() {
        let parse =
            |sel: &str| Args::try_parse_from(["ferrolb-controller", "--pool-selector", sel]);
        let args = parse("!e2e.ferrolb.io/release,tenant in (a,b)").unwrap();
        let selector = args.pool_selector.unwrap();
        let labels = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(selector.matches(&labels(&[("tenant", "a")])));
        assert!(!selector.matches(&labels(&[("tenant", "a"), ("e2e.ferrolb.io/release", "x")])));
        for bad in ["tenant in (a", "=a", "tenant=a,,b=c"] {
            let err = parse(bad).expect_err(bad).to_string();
            assert!(err.contains("--pool-selector"), "{bad}: {err}");
        }
    }
}
