//! BGP mode, sans-IO: which peers this node keeps sessions with, which prefixes it announces
//! to each, and so which Service IPs it attracts traffic for.
//!
//! Unlike layer 2, nothing is elected: every node an advertisement selects announces the IP
//! and the routers spread traffic over them (ECMP). Each speaker computes only its own node's
//! plan from the same objects.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::{NodeView, ServiceKey, ServiceView, TrafficPolicy};
use crate::bgp::{Community, LargeCommunity};
use crate::selector::LabelSelector;

/// What the plan needs from a `BGPPeer`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BgpPeerView {
    /// Name of the BGPPeer.
    pub name: String,
    /// Node selectors; a node is selected by any one of them, and by an empty list.
    pub node_selectors: Vec<LabelSelector>,
}

/// What the plan needs from a `BGPAdvertisement`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpAdvView {
    /// Name of the advertisement.
    pub name: String,
    /// Pools it announces, resolved by the adapter (an empty list in the object means every pool).
    pub pools: BTreeSet<String>,
    /// Node selectors; a node is selected by any one of them, and by an empty list.
    pub node_selectors: Vec<LabelSelector>,
    /// BGPPeer names to announce to; empty means every peer of the node.
    pub peers: BTreeSet<String>,
    /// Prefix length IPv4 IPs are announced with (32: the IP alone).
    pub aggregation_v4: u8,
    /// Prefix length IPv6 IPs are announced with (128: the IP alone).
    pub aggregation_v6: u8,
    /// LOCAL_PREF (iBGP peers only).
    pub local_pref: Option<u32>,
    /// Communities attached to the prefixes.
    pub communities: BTreeSet<Community>,
    /// Large communities attached to the prefixes.
    pub large_communities: BTreeSet<LargeCommunity>,
}

impl Default for BgpAdvView {
    fn default() -> Self {
        Self {
            name: String::new(),
            pools: BTreeSet::new(),
            node_selectors: Vec::new(),
            peers: BTreeSet::new(),
            aggregation_v4: 32,
            aggregation_v6: 128,
            local_pref: None,
            communities: BTreeSet::new(),
            large_communities: BTreeSet::new(),
        }
    }
}

/// The attributes of one announced prefix. When several advertisements announce the same
/// prefix to the same peer, their communities are merged and the highest LOCAL_PREF wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixAttrs {
    /// LOCAL_PREF, if any advertisement sets one.
    pub local_pref: Option<u32>,
    /// Every community of every advertisement announcing the prefix.
    pub communities: BTreeSet<Community>,
    /// Every large community of every advertisement announcing the prefix.
    pub large_communities: BTreeSet<LargeCommunity>,
    /// The advertisements announcing it (for logs and status).
    pub advertisements: BTreeSet<String>,
}

/// This node's BGP plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BgpPlan {
    /// Peers this node keeps sessions with (their node selectors select it).
    pub peers: BTreeSet<String>,
    /// Per peer (every one of `peers`, perhaps with nothing), the prefixes to announce.
    pub routes: BTreeMap<String, BTreeMap<IpNet, PrefixAttrs>>,
    /// The Service IPs this node announces to at least one peer, each with its Service (for
    /// a shared IP, the first by namespace/name): the forwarder carries their traffic.
    pub attracted: BTreeMap<IpAddr, ServiceKey>,
}

fn selected(selectors: &[LabelSelector], node: &NodeView) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| s.matches(&node.labels))
}

/// The prefix `ip` is announced as under an advertisement's aggregation lengths.
pub fn prefix(ip: IpAddr, adv: &BgpAdvView) -> IpNet {
    let len = match ip {
        IpAddr::V4(_) => adv.aggregation_v4.min(32),
        IpAddr::V6(_) => adv.aggregation_v6.min(128),
    };
    IpNet::new(ip, len)
        .expect("length clamped to the family's width")
        .trunc()
}

/// The plan of node `node`.
///
/// A node announces an IP of a Service to a peer when: the node is not excluded from load
/// balancers and its network is available; an advertisement covers the IP's pool and selects
/// the node; with `externalTrafficPolicy: Local`, the node has a ready endpoint; and the peer
/// is one of the node's peers and one the advertisement names (or it names none).
pub fn bgp_plan(
    node: &NodeView,
    services: &[ServiceView],
    peers: &[BgpPeerView],
    advertisements: &[BgpAdvView],
) -> BgpPlan {
    let mut plan = BgpPlan {
        peers: peers
            .iter()
            .filter(|p| selected(&p.node_selectors, node))
            .map(|p| p.name.clone())
            .collect(),
        ..BgpPlan::default()
    };
    plan.routes = plan
        .peers
        .iter()
        .map(|p| (p.clone(), BTreeMap::new()))
        .collect();
    if node.excluded || node.network_unavailable {
        return plan;
    }
    let ours: Vec<&BgpAdvView> = advertisements
        .iter()
        .filter(|a| selected(&a.node_selectors, node))
        .collect();
    for service in services {
        if service.external_traffic_policy == TrafficPolicy::Local
            && !service.nodes_with_ready_endpoints.contains(&node.name)
        {
            continue;
        }
        for (ip, pool) in &service.ips {
            for adv in ours.iter().filter(|a| a.pools.contains(pool)) {
                let net = prefix(*ip, adv);
                let targets = plan
                    .peers
                    .iter()
                    .filter(|p| adv.peers.is_empty() || adv.peers.contains(*p));
                let mut announced = false;
                for peer in targets {
                    let attrs = plan
                        .routes
                        .get_mut(peer)
                        .expect("a route table per peer")
                        .entry(net)
                        .or_default();
                    attrs.local_pref = attrs.local_pref.max(adv.local_pref);
                    attrs.communities.extend(adv.communities.iter().copied());
                    attrs
                        .large_communities
                        .extend(adv.large_communities.iter().copied());
                    attrs.advertisements.insert(adv.name.clone());
                    announced = true;
                }
                if announced {
                    let key = plan
                        .attracted
                        .entry(*ip)
                        .or_insert_with(|| service.key.clone());
                    if service.key < *key {
                        *key = service.key.clone();
                    }
                }
            }
        }
    }
    plan
}
