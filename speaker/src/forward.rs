//! The L4 forwarder in the speaker: carries traffic for the IPs this node announces to their
//! Services' endpoints (nftables DNAT, docs/decisions/0009-forwarder.md). The loop itself lives
//! in `ferrolb-forward` ([`ferrolb_forward::run`]) so it is tested there; this is the wiring.
//!
//! In `main`: register [`ForwardMetrics`] with the other metrics, then spawn [`run`] with a
//! receiver of the announced-IPs channel and the Service and EndpointSlice stores, and resolve
//! its `stop` after the announcer has stopped answering (so no announced IP is left without
//! rules); `run` then removes the table.

use std::future::Future;
use std::sync::Arc;

use ferrolb_forward::{RunInputs, RunSettings};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::runtime::reflector::Store;
use tokio::sync::{Notify, watch};

use crate::Announced;

pub use ferrolb_forward::ForwardMetrics;

/// Forwards the announced IPs' traffic until `stop` resolves, then removes FerroLB's table.
///
/// `changed`, if given, must be woken after every change of the two stores and be this
/// loop's own (a `Notify` wakes one waiter); without it the loop re-plans every second.
pub async fn run(
    announced: watch::Receiver<Announced>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    changed: Option<Arc<Notify>>,
    node_name: String,
    metrics: ForwardMetrics,
    stop: impl Future<Output = ()> + Send,
) {
    let inputs = RunInputs {
        announced,
        services,
        slices,
        changed,
    };
    ferrolb_forward::run(inputs, RunSettings::new(node_name), metrics, stop).await;
}
