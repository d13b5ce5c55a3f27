//! `ferrolb-speaker`: announces Service IPs from its node. In layer-2 mode it answers ARP and
//! NDP for the IPs this node owns (see docs/decisions/0008 and 0012); in BGP mode it announces
//! them to the routers its BGPPeers name (docs/decisions/0017).

mod announcer;
mod bgp;
mod linger;
mod membership;
mod metrics;
mod relevance;
mod report;
mod views;
mod wire;

mod forward;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ferrolb_api::{BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement};
use ferrolb_core::announce::{Mode, NodeName, ServiceKey};
use ferrolb_runtime::{CommonArgs, Daemon, Metrics, init_logging};
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::Api;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::announcer::{Outputs, Settings, Stores};
use crate::metrics::SpeakerMetrics;
use crate::views::Selection;

/// What this node announces right now: each IP with the Service it belongs to (for a shared
/// IP, the first Service by namespace/name). The announcer publishes it after every change;
/// the forwarder consumes it.
pub type Announced = BTreeMap<IpAddr, ServiceKey>;

/// How owners are chosen among eligible nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Rendezvous hash per IP: minimal movement.
    Hash,
    /// Even spread over nodes, more movement on membership changes.
    Balanced,
}

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

    /// Services with this spec.loadBalancerClass (or none) are FerroLB's.
    #[arg(long, value_name = "CLASS", default_value = "ferrolb.io/ferrolb")]
    load_balancer_class: String,

    /// Leave Services without spec.loadBalancerClass to another load balancer.
    #[arg(long)]
    ignore_classless: bool,

    /// UDP port of the speaker membership (SWIM) on the node network.
    #[arg(long, value_name = "PORT", default_value_t = 7946)]
    memberlist_port: u16,

    /// How layer-2 owners are chosen.
    #[arg(long, value_enum, default_value_t = ModeArg::Hash)]
    l2_mode: ModeArg,

    /// The speaker's namespace, where BGPPeers' passwordSecrets are read (the DaemonSet
    /// passes metadata.namespace).
    #[arg(
        long,
        env = "POD_NAMESPACE",
        value_name = "NAMESPACE",
        default_value = "ferrolb-system"
    )]
    namespace: String,
}

// After the handover grace, the announcer needs a moment to stop answering and clean up.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.common.log_level.as_deref(), args.common.log_format)?;
    let speaker_metrics = SpeakerMetrics::default();
    let fwd_metrics = forward::ForwardMetrics::default();
    let metrics = Metrics::new_with("speaker", |r| {
        speaker_metrics.register(r);
        fwd_metrics.register(r);
    });
    let mut daemon =
        Daemon::start_with_metrics("speaker", &args.common, args.metrics_addr, metrics).await?;
    info!(
        node = %args.node_name,
        load_balancer_class = %args.load_balancer_class,
        ignore_classless = args.ignore_classless,
        memberlist_port = args.memberlist_port,
        "speaker settings"
    );

    let client = daemon.client();
    let changed = Arc::new(Notify::new());
    // One change signal from the stores, relayed to each loop that reads them.
    let [
        announcer_changed,
        bgp_changed,
        kernel_changed,
        userspace_changed,
    ] = fan_out(changed.clone());
    let selection = Selection {
        class: args.load_balancer_class,
        classless: !args.ignore_classless,
    };
    let relevance = relevance::Relevance::new(selection.clone());
    let cluster = views::Cluster {
        services: daemon.reflect_notify_when(
            Api::<Service>::all(client.clone()),
            "services",
            changed.clone(),
            {
                let r = relevance.clone();
                move |svc, deleted| r.service(svc, deleted)
            },
        ),
        slices: daemon.reflect_notify_when(
            Api::<EndpointSlice>::all(client.clone()),
            "endpointslices",
            changed.clone(),
            move |slice, _| relevance.slice(slice),
        ),
        nodes: daemon.reflect_notify(Api::<Node>::all(client.clone()), "nodes", changed.clone()),
        pools: daemon.reflect_notify(
            Api::<IPAddressPool>::all(client.clone()),
            "ipaddresspools",
            changed.clone(),
        ),
    };
    let stores = Stores {
        cluster: cluster.clone(),
        advertisements: daemon.reflect_notify(
            Api::<L2Advertisement>::all(client.clone()),
            "l2advertisements",
            changed.clone(),
        ),
        changed: announcer_changed,
    };
    let bgp_stores = bgp::Stores {
        cluster: cluster.clone(),
        peers: daemon.reflect_notify(
            Api::<BGPPeer>::all(client.clone()),
            "bgppeers",
            changed.clone(),
        ),
        advertisements: daemon.reflect_notify(
            Api::<BGPAdvertisement>::all(client.clone()),
            "bgpadvertisements",
            changed.clone(),
        ),
        changed: bgp_changed,
    };

    // The announcer (layer 2) and BGP mode each own a sender; the forwarder gets the union of
    // what they announce plus the two stores (`cluster.services`, `cluster.slices`).
    let (announced_tx, l2_rx) = watch::channel(Announced::new());
    let (attracted_tx, bgp_rx) = watch::channel(Announced::new());
    let announced_rx = union(l2_rx, bgp_rx);
    // The forwarder re-plans on every change of the announced IPs and of the stores.
    let (fwd_stop_tx, fwd_stop_rx) = oneshot::channel::<()>();
    let forwarder = tokio::spawn(forward::run(
        announced_rx,
        cluster.services,
        cluster.slices,
        Some([kernel_changed, userspace_changed]),
        args.node_name.clone(),
        fwd_metrics,
        async move {
            let _ = fwd_stop_rx.await;
        },
    ));
    let (reports_tx, reports_rx) = watch::channel(BTreeMap::new());
    let (takeovers_tx, takeovers_rx) = mpsc::unbounded_channel();
    let node = NodeName::from(args.node_name.as_str());
    let (bgp_stop_tx, bgp_stop_rx) = oneshot::channel();
    let bgp = tokio::spawn(bgp::run(
        bgp_stores,
        bgp::Settings {
            node: node.clone(),
            selection: selection.clone(),
            namespace: args.namespace.clone(),
        },
        Api::namespaced(client.clone(), &args.namespace),
        attracted_tx,
        bgp_stop_rx,
    ));
    let reporter = tokio::spawn(report::run(client, node.clone(), reports_rx, takeovers_rx));
    let (stop_tx, stop_rx) = oneshot::channel();
    let settings = Settings {
        node,
        selection,
        mode: match args.l2_mode {
            ModeArg::Hash => Mode::Hash,
            ModeArg::Balanced => Mode::Balanced,
        },
        memberlist_port: args.memberlist_port,
    };
    let outputs = Outputs {
        announced: announced_tx,
        reports: reports_tx,
        takeovers: takeovers_tx,
    };
    let readiness = daemon.readiness().clone();
    let shutdown = daemon.shutdown_handle();
    let mut announcer = tokio::spawn(async move {
        let res = announcer::run(
            stores,
            settings,
            speaker_metrics,
            readiness,
            outputs,
            stop_rx,
        )
        .await;
        if let Err(err) = &res {
            // Without announcing there is nothing to serve: stop, and let the kubelet restart us.
            tracing::error!(error = %err, "announcer failed");
            shutdown.trigger();
        }
        res
    });

    daemon.run().await?;
    let _ = stop_tx.send(());
    // BGP sessions end with a Cease at once: the routers withdraw our routes while the layer-2
    // handover runs.
    let _ = bgp_stop_tx.send(());
    if tokio::time::timeout(STOP_TIMEOUT, bgp).await.is_err() {
        warn!("BGP sessions did not end in time");
    }
    match tokio::time::timeout(announcer::HANDOVER_GRACE + STOP_TIMEOUT, &mut announcer).await {
        Ok(Ok(Err(err))) => warn!(error = %err, "announcer ended with an error"),
        Ok(_) => {}
        Err(_) => warn!("announcer did not stop in time"),
    }
    // Only now that nothing answers for the IPs any more does the forwarder remove its rules.
    let _ = fwd_stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(3), forwarder).await;
    // The reporter deletes this node's ServiceAnnouncements once its input closes.
    let _ = tokio::time::timeout(Duration::from_secs(3), reporter).await;
    Ok(())
}

/// One receiver of the union of two maps of announced IPs, updated when either changes. An IP
/// in both (a pool announced both ways) keeps the first Service by namespace/name.
fn union(
    a: watch::Receiver<Announced>,
    b: watch::Receiver<Announced>,
) -> watch::Receiver<Announced> {
    fn merged(a: &watch::Receiver<Announced>, b: &watch::Receiver<Announced>) -> Announced {
        let mut out = a.borrow().clone();
        for (ip, key) in b.borrow().iter() {
            let e = out.entry(*ip).or_insert_with(|| key.clone());
            if key < e {
                *e = key.clone();
            }
        }
        out
    }
    let (tx, rx) = watch::channel(merged(&a, &b));
    tokio::spawn(async move {
        let (mut a, mut b) = (a, b);
        // A side whose sender is gone keeps its last value; the union ends with both.
        let (mut a_open, mut b_open) = (true, true);
        while a_open || b_open {
            tokio::select! {
                r = a.changed(), if a_open => a_open = r.is_ok(),
                r = b.changed(), if b_open => b_open = r.is_ok(),
                _ = tx.closed() => break,
            }
            let now = merged(&a, &b);
            tx.send_if_modified(|cur| {
                let changed = *cur != now;
                *cur = now;
                changed
            });
        }
    });
    rx
}

/// Relays every wake-up of `source` to `N` signals of their own: a [`Notify`] wakes one
/// waiter, and several loops wait on the stores' changes. A wake-up that finds a loop busy is
/// kept for it (`notify_one` stores a permit), so none is lost.
fn fan_out<const N: usize>(source: Arc<Notify>) -> [Arc<Notify>; N] {
    let sinks: [Arc<Notify>; N] = std::array::from_fn(|_| Arc::new(Notify::new()));
    let relay = sinks.clone();
    tokio::spawn(async move {
        loop {
            source.notified().await;
            for sink in &relay {
                sink.notify_one();
            }
        }
    });
    sinks
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
        let args = Args::try_parse_from(["ferrolb-speaker", "--node-name", "node-1"]).unwrap();
        assert_eq!(args.node_name, "node-1");
        assert_eq!(args.metrics_addr, "0.0.0.0:7473".parse().unwrap());
        assert_eq!(args.load_balancer_class, "ferrolb.io/ferrolb");
        assert!(!args.ignore_classless);
        assert_eq!(args.memberlist_port, 7946);
        assert_eq!(args.l2_mode, ModeArg::Hash);
    }

    #[tokio::test]
    async fn union_follows_both_sides_and_outlives_one() {
        use ferrolb_core::announce::ServiceKey;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let (l2, l2_rx) = watch::channel(Announced::new());
        let (bgp, bgp_rx) = watch::channel(Announced::new());
        let mut rx = union(l2_rx, bgp_rx);
        l2.send_replace([(ip("192.0.2.240"), ServiceKey::new("ns", "b"))].into());
        bgp.send_replace(
            [
                (ip("203.0.113.10"), ServiceKey::new("ns", "c")),
                (ip("192.0.2.240"), ServiceKey::new("ns", "a")),
            ]
            .into(),
        );
        let want: Announced = [
            (ip("192.0.2.240"), ServiceKey::new("ns", "a")),
            (ip("203.0.113.10"), ServiceKey::new("ns", "c")),
        ]
        .into();
        let got = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|m| *m == want))
            .await
            .is_ok();
        assert!(got, "{:?}", *rx.borrow());
        // BGP mode ends (its sender dropped): layer 2's changes still arrive.
        bgp.send_replace(Announced::new());
        drop(bgp);
        l2.send_replace(Announced::new());
        let got = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|m| m.is_empty()))
            .await
            .is_ok();
        assert!(got, "{:?}", *rx.borrow());
    }

    #[tokio::test]
    async fn fan_out_wakes_every_sink_even_a_busy_one() {
        let source = Arc::new(Notify::new());
        let [a, b] = fan_out(source.clone());
        // Nobody waits yet: the wake-up is kept for each sink.
        source.notify_one();
        for sink in [&a, &b] {
            tokio::time::timeout(Duration::from_secs(1), sink.notified())
                .await
                .expect("each sink is woken");
        }
        // Consumed: no second wake-up without a second change.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), a.notified())
                .await
                .is_err()
        );
    }
}
