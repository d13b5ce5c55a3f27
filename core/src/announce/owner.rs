//! The owner election: which one of an IP's eligible live nodes answers for it.
//!
//! [`Mode::Hash`] is rendezvous (highest-random-weight) hashing: each IP goes to the eligible
//! node with the highest [`weight`]. Removing a node moves exactly that node's IPs; adding one
//! moves only the IPs it now wins. Load is even only on average.
//!
//! [`Mode::Balanced`] caps every node at `ceil(n_ips / n_nodes)` IPs. It is the unique stable
//! assignment for the rendezvous weights with that capacity, found greedily: take every
//! (IP, node) pair in decreasing weight order and assign it when the IP is still free and the
//! node below capacity. The result depends only on the sets of IPs and nodes, never on input
//! order. A membership change moves the IPs of the node that left (or that the new node wins),
//! plus IPs that return home because the cap itself changed, plus displacement chains; the
//! tests check a bound and ADR 0008 explains why no stateless strict-cap scheme can match
//! rendezvous hashing here. When IPs have different eligible sets (externalTrafficPolicy
//! Local, node selectors) the IPs with fewer eligible nodes claim capacity first, and an IP
//! whose nodes are all full goes to its least loaded node (highest weight on ties), the only
//! case where the cap can be exceeded.

use super::NodeName;
use super::hash::weight;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// How owners are chosen among eligible live nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Rendezvous hash per IP: minimal movement, even load only on average.
    #[default]
    Hash,
    /// Rendezvous preference with a per-node cap of `ceil(n_ips / n_nodes)`.
    Balanced,
}

/// The rendezvous owner of `ip` among `nodes` (order and duplicates do not matter).
pub fn owner(ip: IpAddr, nodes: &[NodeName]) -> Option<NodeName> {
    // Ties on a 64-bit weight are practically impossible; the name breaks them anyway so the
    // result never depends on input order.
    nodes
        .iter()
        .max_by(|a, b| weight(a, ip).cmp(&weight(b, ip)).then_with(|| b.cmp(a)))
        .cloned()
}

/// Owners for many IPs at once, each from its own eligible nodes; IPs with no eligible node
/// are left out.
pub fn assign(
    candidates: &BTreeMap<IpAddr, Vec<NodeName>>,
    mode: Mode,
) -> BTreeMap<IpAddr, NodeName> {
    match mode {
        Mode::Hash => candidates
            .iter()
            .filter_map(|(ip, nodes)| owner(*ip, nodes).map(|n| (*ip, n)))
            .collect(),
        Mode::Balanced => balanced(candidates),
    }
}

fn balanced(candidates: &BTreeMap<IpAddr, Vec<NodeName>>) -> BTreeMap<IpAddr, NodeName> {
    let sets: BTreeMap<IpAddr, BTreeSet<&NodeName>> = candidates
        .iter()
        .filter(|(_, nodes)| !nodes.is_empty())
        .map(|(ip, nodes)| (*ip, nodes.iter().collect()))
        .collect();
    let all_nodes: BTreeSet<&NodeName> = sets.values().flatten().copied().collect();
    if all_nodes.is_empty() {
        return BTreeMap::new();
    }
    let cap = sets.len().div_ceil(all_nodes.len());

    // (choices, weight, node, ip): IPs with fewer eligible nodes claim capacity first, then
    // highest weight first; node and IP break (practically impossible) weight ties.
    let mut pairs: Vec<(usize, u64, &NodeName, IpAddr)> = sets
        .iter()
        .flat_map(|(ip, nodes)| {
            nodes
                .iter()
                .map(move |n| (nodes.len(), weight(n, *ip), *n, *ip))
        })
        .collect();
    pairs.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| b.1.cmp(&a.1))
            .then_with(|| a.2.cmp(b.2))
            .then_with(|| a.3.cmp(&b.3))
    });

    let mut load: BTreeMap<&NodeName, usize> = all_nodes.iter().map(|n| (*n, 0)).collect();
    let mut out: BTreeMap<IpAddr, NodeName> = BTreeMap::new();
    for (_, _, node, ip) in pairs {
        if out.contains_key(&ip) {
            continue;
        }
        let l = load.entry(node).or_default();
        if *l < cap {
            *l += 1;
            out.insert(ip, node.clone());
        }
    }

    // Only reachable when eligible sets differ: every node of this IP is full.
    for (ip, nodes) in &sets {
        if out.contains_key(ip) {
            continue;
        }
        let best = nodes.iter().min_by(|a, b| {
            load[*a]
                .cmp(&load[*b])
                .then_with(|| weight(b, *ip).cmp(&weight(a, *ip)))
                .then_with(|| a.cmp(b))
        });
        if let Some(node) = best {
            *load.entry(node).or_default() += 1;
            out.insert(*ip, (*node).clone());
        }
    }
    out
}
