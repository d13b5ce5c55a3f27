//! The L4 forwarder in the speaker: carries traffic for the IPs this node announces to their
//! Services' endpoints, by nftables DNAT (docs/decisions/0009-forwarder.md) or, for Services
//! annotated `ferrolb.io/forwarding: userspace`, by the userspace proxy
//! (docs/decisions/0014-userspace-forwarder.md). Both loops live in `ferrolb-forward`
//! ([`ferrolb_forward::run`], [`run_userspace`]) so they are tested there; this is the wiring.
//!
//! In `main`: register [`ForwardMetrics`] with the other metrics, then spawn [`run`] with a
//! receiver of the announced-IPs channel and the Service and EndpointSlice stores, and resolve
//! its `stop` after the announcer has stopped answering (so no announced IP is left without
//! rules); `run` then removes both paths' tables (and the userspace path's rules and routes).

use std::future::Future;
use std::sync::Arc;

use ferrolb_forward::userspace::{UserspaceMetrics, UserspaceSettings, run_userspace};
use ferrolb_forward::{RunInputs, RunSettings};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::runtime::reflector::Store;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, watch};

use crate::Announced;

/// The forwarder's metrics: the kernel path's and the userspace path's.
#[derive(Debug, Clone, Default)]
pub struct ForwardMetrics {
    kernel: ferrolb_forward::ForwardMetrics,
    userspace: UserspaceMetrics,
}

impl ForwardMetrics {
    /// Registers both paths' metrics in the daemon's `ferrolb_` sub-registry.
    pub fn register(&self, registry: &mut Registry) {
        self.kernel.register(registry);
        self.userspace.register(registry);
    }
}

/// Forwards the announced IPs' traffic until `stop` resolves, then removes FerroLB's tables.
///
/// `changed`, if given, must be woken after every change of the two stores, one signal for the
/// kernel loop and one for the userspace loop (a `Notify` wakes one waiter); without them the
/// loops re-plan every second as well as on announced-IP changes.
pub async fn run(
    announced: watch::Receiver<Announced>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    changed: Option<[Arc<Notify>; 2]>,
    node_name: String,
    metrics: ForwardMetrics,
    stop: impl Future<Output = ()> + Send,
) {
    let (kernel_changed, userspace_changed) = match changed {
        Some([k, u]) => (Some(k), Some(u)),
        None => (None, None),
    };
    let userspace = RunInputs {
        announced: announced.clone(),
        services: services.clone(),
        slices: slices.clone(),
        changed: userspace_changed,
    };
    let kernel = RunInputs {
        announced,
        services,
        slices,
        changed: kernel_changed,
    };
    // One stop for both loops.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::join!(
        async move {
            stop.await;
            let _ = stop_tx.send(true);
        },
        ferrolb_forward::run(
            kernel,
            RunSettings::new(node_name.clone()),
            metrics.kernel,
            stopped(stop_rx.clone()),
        ),
        run_userspace(
            userspace,
            UserspaceSettings::new(node_name),
            metrics.userspace,
            stopped(stop_rx),
        ),
    );
}
