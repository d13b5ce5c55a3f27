//! Kubernetes objects to the election's plain views (`ferrolb_core::announce`). No I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_api::{IPAddressPool, L2Advertisement};
use ferrolb_core::alloc::{AddressRange, parse_pool_entry};
use ferrolb_core::announce::{
    InterfaceView, L2AdvView, LabelSelector, NodeName, NodeView, Requirement, ServiceKey,
    ServiceView, TrafficPolicy,
};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sSelector;
use kube::runtime::reflector::Store;

/// Nodes carrying this label never announce (the Kubernetes convention).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// The label EndpointSlices carry naming their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

pub use ferrolb_api::service::Selection;

/// The watched objects both ways of announcing (layer 2 and BGP) read.
#[derive(Clone)]
pub struct Cluster {
    /// Services.
    pub services: Store<Service>,
    /// EndpointSlices.
    pub slices: Store<EndpointSlice>,
    /// Nodes.
    pub nodes: Store<Node>,
    /// IPAddressPools.
    pub pools: Store<IPAddressPool>,
}

/// The Services as they are now: the objects, the parsed pools and the views of ours.
pub struct Services {
    /// Every Service in the store.
    pub objects: Vec<Arc<Service>>,
    /// The pools, parsed.
    pub pools: Vec<PoolRanges>,
    /// Our Services with IPs from the pools.
    pub views: Vec<ServiceView>,
}

impl Cluster {
    /// The Node called `name`, if the store has it.
    pub fn node(&self, name: &NodeName) -> Option<Arc<Node>> {
        self.nodes
            .state()
            .into_iter()
            .find(|n| n.metadata.name.as_deref() == Some(name.as_str()))
    }

    /// Reads the stores into [`Services`].
    pub fn services(&self, selection: &Selection) -> Services {
        let pools = pool_ranges(&self.pools.state());
        let ready = ready_nodes(&self.slices.state());
        let objects = self.services.state();
        let views = service_views(&objects, selection, &pools, &ready);
        Services {
            objects,
            pools,
            views,
        }
    }
}

/// A pool's name and parsed ranges (entries that do not parse are skipped: the API server
/// validates them, and the controller reports the rest).
#[derive(Debug, Clone)]
pub struct PoolRanges {
    /// Pool name.
    pub name: String,
    /// Its address ranges.
    pub ranges: Vec<AddressRange>,
    /// Its labels, for advertisements' pool selectors.
    pub labels: BTreeMap<String, String>,
}

/// Parses the pools once per computation.
pub fn pool_ranges(pools: &[std::sync::Arc<IPAddressPool>]) -> Vec<PoolRanges> {
    let mut out: Vec<PoolRanges> = pools
        .iter()
        .map(|p| PoolRanges {
            name: p.metadata.name.clone().unwrap_or_default(),
            ranges: p
                .spec
                .addresses
                .iter()
                .filter_map(|a| parse_pool_entry(a).ok())
                .collect(),
            labels: p.metadata.labels.clone().unwrap_or_default(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The pool `ip` belongs to (first by name when pools overlap, which the controller flags).
pub fn pool_of(ip: IpAddr, pools: &[PoolRanges]) -> Option<&str> {
    pools
        .iter()
        .find(|p| p.ranges.iter().any(|r| r.contains(ip)))
        .map(|p| p.name.as_str())
}

pub use ferrolb_api::service::{ingress_ips, key as service_key};

/// The name of the Service an EndpointSlice belongs to (its `kubernetes.io/service-name`).
pub fn slice_service(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)
        .map(String::as_str)
}

/// Nodes with at least one ready endpoint, per Service, from EndpointSlices.
pub fn ready_nodes(
    slices: &[std::sync::Arc<EndpointSlice>],
) -> BTreeMap<ServiceKey, BTreeSet<NodeName>> {
    let mut out: BTreeMap<ServiceKey, BTreeSet<NodeName>> = BTreeMap::new();
    for slice in slices {
        let Some(svc) = slice_service(slice) else {
            continue;
        };
        let key = ServiceKey::new(slice.metadata.namespace.clone().unwrap_or_default(), svc);
        let entry = out.entry(key).or_default();
        for ep in &slice.endpoints {
            // Absent `ready` means ready (the API's documented default).
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if let (true, Some(node)) = (ready, &ep.node_name) {
                entry.insert(NodeName::from(node.as_str()));
            }
        }
    }
    out
}

/// The election's views of our Services with IPs.
pub fn service_views(
    services: &[std::sync::Arc<Service>],
    selection: &Selection,
    pools: &[PoolRanges],
    ready: &BTreeMap<ServiceKey, BTreeSet<NodeName>>,
) -> Vec<ServiceView> {
    services
        .iter()
        .filter(|s| selection.is_ours(s))
        .filter_map(|s| {
            let key = service_key(s);
            let ips: BTreeMap<IpAddr, String> = ingress_ips(s)
                .into_iter()
                .filter_map(|ip| pool_of(ip, pools).map(|p| (ip, p.to_owned())))
                .collect();
            if ips.is_empty() {
                return None;
            }
            let local = s
                .spec
                .as_ref()
                .and_then(|sp| sp.external_traffic_policy.as_deref())
                == Some("Local");
            Some(ServiceView {
                nodes_with_ready_endpoints: ready.get(&key).cloned().unwrap_or_default(),
                key,
                ips,
                external_traffic_policy: if local {
                    TrafficPolicy::Local
                } else {
                    TrafficPolicy::Cluster
                },
            })
        })
        .collect()
}

/// The election's view of a Node; `interfaces` only for our own node (others' are unknown
/// to us, and only our own eligibility decides what we answer).
pub fn node_view(node: &Node, interfaces: Vec<InterfaceView>) -> NodeView {
    let labels: BTreeMap<String, String> = node.metadata.labels.clone().unwrap_or_default();
    let network_unavailable = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True")
        });
    NodeView {
        name: NodeName::from(node.metadata.name.clone().unwrap_or_default()),
        excluded: labels.contains_key(EXCLUDE_LABEL),
        labels,
        network_unavailable,
        interfaces,
    }
}

/// The pools an advertisement names, by name or by selector; naming none means every pool.
pub fn advertised_pools(
    names: &[String],
    selectors: &[K8sSelector],
    pools: &[PoolRanges],
) -> BTreeSet<String> {
    let selectors: Vec<LabelSelector> = selectors.iter().map(selector).collect();
    let all = names.is_empty() && selectors.is_empty();
    pools
        .iter()
        .filter(|p| {
            all || names.contains(&p.name) || selectors.iter().any(|s| s.matches(&p.labels))
        })
        .map(|p| p.name.clone())
        .collect()
}

/// The election's view of an L2Advertisement, its pools resolved by name and selector.
pub fn adv_view(adv: &L2Advertisement, pools: &[PoolRanges]) -> L2AdvView {
    let spec = &adv.spec;
    L2AdvView {
        name: adv.metadata.name.clone().unwrap_or_default(),
        pools: advertised_pools(
            &spec.ip_address_pools,
            &spec.ip_address_pool_selectors,
            pools,
        ),
        node_selectors: spec.node_selectors.iter().map(selector).collect(),
        interfaces: spec.interfaces.clone(),
    }
}

/// A Kubernetes label selector as core's plain selector. An unknown operator matches
/// nothing (the API server's schema refuses them anyway).
pub fn selector(s: &K8sSelector) -> LabelSelector {
    let match_expressions = s
        .match_expressions
        .iter()
        .flatten()
        .map(|e| {
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            match e.operator.as_str() {
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                _ => Requirement::In(e.key.clone(), BTreeSet::new()),
            }
        })
        .collect();
    LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions,
    }
}

/// A Node's InternalIPs, IPv4 first (for seeding the membership).
pub fn internal_ips(node: &Node) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, NodeCondition, NodeStatus, ServiceSpec,
        ServiceStatus,
    };
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta};
    use std::sync::Arc;

    fn svc(name: &str, class: Option<&str>, ips: &[&str], etp: &str) -> Arc<Service> {
        Arc::new(Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                load_balancer_class: class.map(Into::into),
                external_traffic_policy: Some(etp.into()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(
                        ips.iter()
                            .map(|ip| LoadBalancerIngress {
                                ip: Some((*ip).into()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                }),
                ..Default::default()
            }),
        })
    }

    fn pools() -> Vec<PoolRanges> {
        vec![PoolRanges {
            name: "lan".into(),
            ranges: vec![parse_pool_entry("192.0.2.192/27").unwrap()],
            labels: [("tier".to_string(), "gold".to_string())].into(),
        }]
    }

    #[test]
    fn services_of_our_class_with_pool_ips() {
        let sel = Selection {
            class: "ferrolb.io/ferrolb".into(),
            classless: true,
        };
        let services = vec![
            svc("a", None, &["192.0.2.193", "198.51.100.1"], "Local"),
            svc("b", Some("other"), &["192.0.2.194"], "Cluster"),
            svc("c", Some("ferrolb.io/ferrolb"), &[], "Cluster"),
        ];
        let ready = [(
            ServiceKey::new("ns", "a"),
            BTreeSet::from([NodeName::from("node-1")]),
        )]
        .into();
        let views = service_views(&services, &sel, &pools(), &ready);
        assert_eq!(views.len(), 1, "{views:?}");
        let a = &views[0];
        assert_eq!(a.key, ServiceKey::new("ns", "a"));
        assert_eq!(a.ips.len(), 1, "an IP outside every pool is not announced");
        assert_eq!(a.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(a.nodes_with_ready_endpoints.len(), 1);
        let strict = Selection {
            classless: false,
            ..sel
        };
        assert!(service_views(&services, &strict, &pools(), &ready).is_empty());
    }

    #[test]
    fn ready_endpoints_by_node() {
        let ep = |node: &str, ready: Option<bool>| Endpoint {
            addresses: vec!["198.18.1.2".into()],
            node_name: Some(node.into()),
            conditions: Some(EndpointConditions {
                ready,
                ..Default::default()
            }),
            ..Default::default()
        };
        let slice = Arc::new(EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), "a".to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: vec![
                ep("node-1", Some(true)),
                ep("node-2", Some(false)),
                ep("node-3", None),
            ],
            ports: None,
        });
        let got = ready_nodes(&[slice]);
        let nodes = &got[&ServiceKey::new("ns", "a")];
        assert_eq!(
            nodes,
            &BTreeSet::from([NodeName::from("node-1"), NodeName::from("node-3")])
        );
    }

    #[test]
    fn node_exclusion_and_network() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some("node-1".into()),
                labels: Some([(EXCLUDE_LABEL.to_string(), String::new())].into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "NetworkUnavailable".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = node_view(&node, vec![]);
        assert!(v.excluded && v.network_unavailable);
    }

    #[test]
    fn advertisement_pools_and_selectors() {
        let mut adv = L2Advertisement::new("a", Default::default());
        assert_eq!(
            adv_view(&adv, &pools()).pools.len(),
            1,
            "empty means every pool"
        );
        adv.spec.ip_address_pools = vec!["other".into()];
        assert!(adv_view(&adv, &pools()).pools.is_empty());
        adv.spec.ip_address_pool_selectors = vec![K8sSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["gold".into()]),
            }]),
            match_labels: None,
        }];
        assert_eq!(adv_view(&adv, &pools()).pools.len(), 1);
    }
}
