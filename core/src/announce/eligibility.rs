//! Which nodes may announce an IP, and on which interface, with a typed reason for every node
//! that may not. The inputs are plain views the speaker fills from its watches.

use super::{NodeName, ServiceKey};
use crate::selector::LabelSelector;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// A Service's `externalTrafficPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TrafficPolicy {
    /// Any node may receive the traffic; kube-proxy forwards it across the cluster.
    #[default]
    Cluster,
    /// Only nodes with a ready local endpoint may receive it (client source IP is kept).
    Local,
}

/// What the election needs from a LoadBalancer Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceView {
    /// Namespace and name.
    pub key: ServiceKey,
    /// The Service's ingress IPs, each with the pool it was allocated from.
    pub ips: BTreeMap<IpAddr, String>,
    /// `externalTrafficPolicy`.
    pub external_traffic_policy: TrafficPolicy,
    /// Nodes hosting at least one ready endpoint (from EndpointSlices).
    pub nodes_with_ready_endpoints: BTreeSet<NodeName>,
}

/// A network interface on a node and its addresses (with prefix length).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceView {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// Addresses with their prefix lengths, e.g. `192.0.2.11/24`.
    pub addrs: Vec<IpNet>,
}

/// What the election needs from a Node and its speaker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// Node name.
    pub name: NodeName,
    /// Node labels, for the advertisements' node selectors.
    pub labels: BTreeMap<String, String>,
    /// The node carries `node.kubernetes.io/exclude-from-external-load-balancers`.
    pub excluded: bool,
    /// The node's `NetworkUnavailable` condition is true.
    pub network_unavailable: bool,
    /// The node's interfaces as its speaker reports them.
    pub interfaces: Vec<InterfaceView>,
}

/// What the election needs from an `L2Advertisement`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct L2AdvView {
    /// Name of the advertisement.
    pub name: String,
    /// Pools it announces, resolved by the adapter (an empty list in the object means every pool).
    pub pools: BTreeSet<String>,
    /// Node selectors; a node is selected by any one of them, and by an empty list.
    pub node_selectors: Vec<LabelSelector>,
    /// Interfaces to announce on; empty means "any interface with an address in the IP's subnet".
    pub interfaces: Vec<String>,
}

/// Why a node may not announce an IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ineligible {
    /// The node's speaker is not in the live membership.
    NotAlive,
    /// The node is labelled `node.kubernetes.io/exclude-from-external-load-balancers`.
    Excluded,
    /// The node's `NetworkUnavailable` condition is true.
    NetworkUnavailable,
    /// No L2Advertisement covers the IP's pool.
    NoAdvertisement,
    /// No advertisement covering the pool selects this node.
    NotSelected,
    /// `externalTrafficPolicy: Local` and no ready endpoint on this node.
    NoLocalEndpoint,
    /// The advertisements name interfaces, and the node has none of them.
    NoListedInterface,
    /// No interface on the node has an address in the IP's subnet.
    NoInterfaceInSubnet,
}

/// Whether a node may announce an IP.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Eligibility {
    /// It may, on this interface.
    Eligible {
        /// The interface to answer and send gratuitous packets on.
        interface: String,
    },
    /// It may not, for this reason.
    Ineligible(Ineligible),
}

impl Eligibility {
    /// The interface, when eligible.
    pub fn interface(&self) -> Option<&str> {
        match self {
            Eligibility::Eligible { interface } => Some(interface),
            Eligibility::Ineligible(_) => None,
        }
    }
}

/// Eligibility of every node in `nodes` for `ip` of `service`, in node name order.
///
/// Checks run in a fixed order and the first failing one is reported: liveness, exclusion,
/// network, advertisement coverage, node selection, endpoints, interface. An IP that is not
/// one of the Service's has no pool and so no advertisement.
pub fn eligible_nodes(
    ip: IpAddr,
    service: &ServiceView,
    nodes: &[NodeView],
    advertisements: &[L2AdvView],
    live: &BTreeSet<NodeName>,
) -> Vec<(NodeName, Eligibility)> {
    let mut covering: Vec<&L2AdvView> = match service.ips.get(&ip) {
        Some(pool) => advertisements
            .iter()
            .filter(|a| a.pools.contains(pool))
            .collect(),
        None => Vec::new(),
    };
    covering.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<(NodeName, Eligibility)> = nodes
        .iter()
        .map(|node| {
            let e = match check(ip, service, node, &covering, live) {
                Ok(interface) => Eligibility::Eligible { interface },
                Err(reason) => Eligibility::Ineligible(reason),
            };
            (node.name.clone(), e)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

fn check(
    ip: IpAddr,
    service: &ServiceView,
    node: &NodeView,
    covering: &[&L2AdvView],
    live: &BTreeSet<NodeName>,
) -> Result<String, Ineligible> {
    if !live.contains(&node.name) {
        return Err(Ineligible::NotAlive);
    }
    if node.excluded {
        return Err(Ineligible::Excluded);
    }
    if node.network_unavailable {
        return Err(Ineligible::NetworkUnavailable);
    }
    if covering.is_empty() {
        return Err(Ineligible::NoAdvertisement);
    }
    let selecting: Vec<&L2AdvView> = covering
        .iter()
        .copied()
        .filter(|a| {
            a.node_selectors.is_empty() || a.node_selectors.iter().any(|s| s.matches(&node.labels))
        })
        .collect();
    if selecting.is_empty() {
        return Err(Ineligible::NotSelected);
    }
    // With no ready endpoint anywhere the IP is still announced (from any node, whatever the
    // policy), so that the forwarder refuses connections at once instead of the client
    // waiting on ARP/NDP that nobody answers.
    if service.external_traffic_policy == TrafficPolicy::Local
        && !service.nodes_with_ready_endpoints.is_empty()
        && !service.nodes_with_ready_endpoints.contains(&node.name)
    {
        return Err(Ineligible::NoLocalEndpoint);
    }
    pick_interface(ip, node, &selecting)
}

/// An interface an advertisement names wins (advertisements by name, then list order); else
/// the interface whose subnet containing `ip` is the most specific (name breaks ties).
fn pick_interface(
    ip: IpAddr,
    node: &NodeView,
    selecting: &[&L2AdvView],
) -> Result<String, Ineligible> {
    let has = |name: &str| node.interfaces.iter().any(|i| i.name == name);
    if let Some(name) = selecting
        .iter()
        .flat_map(|a| a.interfaces.iter())
        .find(|n| has(n))
    {
        return Ok(name.clone());
    }
    if selecting.iter().all(|a| !a.interfaces.is_empty()) {
        return Err(Ineligible::NoListedInterface);
    }
    node.interfaces
        .iter()
        .filter_map(|i| {
            i.addrs
                .iter()
                .filter(|net| net.contains(&ip))
                .map(|net| net.prefix_len())
                .max()
                .map(|p| (p, &i.name))
        })
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, name)| name.clone())
        .ok_or(Ineligible::NoInterfaceInSubnet)
}
