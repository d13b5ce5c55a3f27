//! Choosing backends per frontend by kube-proxy's rules.

use super::{
    AllowedSources, Backends, Endpoint, EndpointPool, ForwardService, ForwardingPlan, Frontend,
    RejectReason, ServiceKey, ServicePlan, ServicePort, SourceNat, TrafficPolicy,
};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// Two Services claim the same VIP:protocol:port; the one with the smaller key keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendConflict {
    /// The contested frontend.
    pub frontend: Frontend,
    /// The Service that forwards it.
    pub kept: ServiceKey,
    /// The Service left without it.
    pub dropped: ServiceKey,
}

/// The planner's result: the plan, and the frontend conflicts it resolved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Planned {
    /// What to forward.
    pub plan: ForwardingPlan,
    /// Frontends claimed by more than one Service (the controller should never allow these).
    pub conflicts: Vec<FrontendConflict>,
}

/// Plans forwarding for the Services whose VIPs this node (`node`) handles.
///
/// Service keys must be unique (as in Kubernetes); the result then does not depend on input order.
pub fn plan(services: &[ForwardService], node: &str) -> Planned {
    let mut sorted: Vec<&ForwardService> = services.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut claimed: BTreeMap<Frontend, ServiceKey> = BTreeMap::new();
    let mut out = Planned::default();
    for svc in sorted {
        let mut frontends = BTreeMap::new();
        for port in &svc.ports {
            for &vip in &svc.vips {
                let frontend = Frontend {
                    vip,
                    protocol: port.protocol,
                    port: port.port,
                };
                if let Some(kept) = claimed.get(&frontend) {
                    if *kept != svc.key {
                        out.conflicts.push(FrontendConflict {
                            frontend,
                            kept: kept.clone(),
                            dropped: svc.key.clone(),
                        });
                    }
                    continue;
                }
                claimed.insert(frontend, svc.key.clone());
                frontends.insert(frontend, choose_backends(svc, port, vip, node));
            }
        }
        if frontends.is_empty() {
            continue;
        }
        let service = ServicePlan {
            source_nat: match svc.external_traffic_policy {
                TrafficPolicy::Cluster => SourceNat::Masquerade,
                TrafficPolicy::Local => SourceNat::PreserveClient,
            },
            affinity: svc.session_affinity,
            allowed_sources: allowed_sources(&svc.source_ranges),
            frontends,
        };
        // Two inputs with the same key: the first in (stable) key order wins, like frontends.
        out.plan.services.entry(svc.key.clone()).or_insert(service);
    }
    out.conflicts
        .sort_by(|a, b| (a.frontend, &a.dropped).cmp(&(b.frontend, &b.dropped)));
    out.conflicts.dedup();
    out
}

/// kube-proxy's choice for one port and one VIP family: ready endpoints; if none, serving and
/// terminating ones; with policy Local only those on `node`; none → refuse.
pub fn choose_backends(
    svc: &ForwardService,
    port: &ServicePort,
    vip: IpAddr,
    node: &str,
) -> Backends {
    let local_only = svc.external_traffic_policy == TrafficPolicy::Local;
    let usable: Vec<(&Endpoint, u16)> = svc
        .endpoints
        .iter()
        .filter(|ep| ep.ip.is_ipv4() == vip.is_ipv4())
        .filter_map(|ep| ep.ports.get(&port.name).map(|&p| (ep, p)))
        .collect();
    let in_scope: Vec<&(&Endpoint, u16)> = usable
        .iter()
        .filter(|(ep, _)| !local_only || ep.node.as_deref() == Some(node))
        .collect();
    let pick = |pred: &dyn Fn(&Endpoint) -> bool| -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = in_scope
            .iter()
            .filter(|(ep, _)| pred(ep))
            .map(|(ep, p)| SocketAddr::new(ep.ip, *p))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let ready = pick(&|ep| ep.conditions.ready);
    if !ready.is_empty() {
        return Backends::Forward {
            backends: ready,
            pool: EndpointPool::Ready,
        };
    }
    let terminating = pick(&|ep| ep.conditions.serving && ep.conditions.terminating);
    if !terminating.is_empty() {
        return Backends::Forward {
            backends: terminating,
            pool: EndpointPool::Terminating,
        };
    }
    let any_elsewhere = usable
        .iter()
        .any(|(ep, _)| ep.conditions.ready || (ep.conditions.serving && ep.conditions.terminating));
    if local_only && any_elsewhere {
        Backends::Reject(RejectReason::NoLocalEndpoints)
    } else {
        Backends::Reject(RejectReason::NoEndpoints)
    }
}

fn allowed_sources(ranges: &[IpNet]) -> AllowedSources {
    if ranges.is_empty() {
        return AllowedSources::Any;
    }
    // Aggregation removes overlaps, which an nftables interval set would refuse.
    let mut v = IpNet::aggregate(&ranges.iter().map(IpNet::trunc).collect());
    v.sort();
    AllowedSources::Only(v)
}

#[cfg(test)]
mod tests {
    use super::super::{EndpointConditions, Protocol, SessionAffinity};
    use super::*;

    fn ep(
        ip: &str,
        port: u16,
        node: &str,
        ready: bool,
        serving: bool,
        terminating: bool,
    ) -> Endpoint {
        Endpoint {
            ip: ip.parse().unwrap(),
            ports: [("http".to_string(), port)].into(),
            conditions: EndpointConditions {
                ready,
                serving,
                terminating,
            },
            node: Some(node.to_string()),
        }
    }

    fn svc(policy: TrafficPolicy, endpoints: Vec<Endpoint>) -> ForwardService {
        ForwardService {
            key: ServiceKey::new("default", "web"),
            vips: vec![
                "192.0.2.10".parse().unwrap(),
                "2001:db8::10".parse().unwrap(),
            ],
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
            }],
            external_traffic_policy: policy,
            session_affinity: SessionAffinity::None,
            source_ranges: vec![],
            endpoints,
        }
    }

    fn backends_v4(s: &ForwardService) -> Backends {
        choose_backends(s, &s.ports[0], "192.0.2.10".parse().unwrap(), "node-a")
    }

    fn fwd(addrs: &[&str], pool: EndpointPool) -> Backends {
        Backends::Forward {
            backends: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            pool,
        }
    }

    #[test]
    fn ready_endpoints_win_over_terminating() {
        let s = svc(
            TrafficPolicy::Cluster,
            vec![
                ep("198.18.1.3", 8080, "node-b", true, true, false),
                ep("198.18.1.2", 8080, "node-a", false, true, true),
            ],
        );
        assert_eq!(
            backends_v4(&s),
            fwd(&["198.18.1.3:8080"], EndpointPool::Ready)
        );
    }

    #[test]
    fn serving_terminating_used_only_when_no_ready() {
        let s = svc(
            TrafficPolicy::Cluster,
            vec![
                ep("198.18.1.2", 8080, "node-a", false, true, true),
                ep("198.18.1.3", 8080, "node-b", false, false, true),
                ep("198.18.1.4", 8080, "node-b", false, false, false),
            ],
        );
        assert_eq!(
            backends_v4(&s),
            fwd(&["198.18.1.2:8080"], EndpointPool::Terminating)
        );
    }

    #[test]
    fn no_endpoints_rejects() {
        let s = svc(
            TrafficPolicy::Cluster,
            vec![ep("198.18.1.4", 8080, "node-b", false, false, false)],
        );
        assert_eq!(backends_v4(&s), Backends::Reject(RejectReason::NoEndpoints));
    }

    #[test]
    fn local_uses_only_this_nodes_endpoints() {
        let s = svc(
            TrafficPolicy::Local,
            vec![
                ep("198.18.1.2", 8080, "node-a", true, true, false),
                ep("198.18.2.2", 8080, "node-b", true, true, false),
            ],
        );
        assert_eq!(
            backends_v4(&s),
            fwd(&["198.18.1.2:8080"], EndpointPool::Ready)
        );
        let remote_only = svc(
            TrafficPolicy::Local,
            vec![ep("198.18.2.2", 8080, "node-b", true, true, false)],
        );
        assert_eq!(
            backends_v4(&remote_only),
            Backends::Reject(RejectReason::NoLocalEndpoints)
        );
    }

    #[test]
    fn local_falls_back_to_local_terminating_not_remote_ready() {
        let s = svc(
            TrafficPolicy::Local,
            vec![
                ep("198.18.1.2", 8080, "node-a", false, true, true),
                ep("198.18.2.2", 8080, "node-b", true, true, false),
            ],
        );
        assert_eq!(
            backends_v4(&s),
            fwd(&["198.18.1.2:8080"], EndpointPool::Terminating)
        );
    }

    #[test]
    fn families_and_port_names_are_matched() {
        let mut other_port = ep("198.18.1.5", 9090, "node-a", true, true, false);
        other_port.ports = [("metrics".to_string(), 9090)].into();
        let s = svc(
            TrafficPolicy::Cluster,
            vec![
                ep("2001:db8:1::2", 8080, "node-a", true, true, false),
                other_port,
            ],
        );
        assert_eq!(backends_v4(&s), Backends::Reject(RejectReason::NoEndpoints));
        let v6 = choose_backends(&s, &s.ports[0], "2001:db8::10".parse().unwrap(), "node-a");
        assert_eq!(v6, fwd(&["[2001:db8:1::2]:8080"], EndpointPool::Ready));
    }

    #[test]
    fn plan_sets_nat_sources_and_frontends() {
        let mut s = svc(
            TrafficPolicy::Cluster,
            vec![ep("198.18.1.2", 8080, "node-b", true, true, false)],
        );
        s.source_ranges = vec![
            "192.0.2.0/25".parse().unwrap(),
            "192.0.2.7/24".parse().unwrap(),
        ];
        let planned = plan(&[s], "node-a");
        let sp = &planned.plan.services[&ServiceKey::new("default", "web")];
        assert_eq!(sp.source_nat, SourceNat::Masquerade);
        assert_eq!(
            sp.allowed_sources,
            AllowedSources::Only(vec!["192.0.2.0/24".parse().unwrap()])
        );
        assert_eq!(sp.frontends.len(), 2);
        assert!(planned.conflicts.is_empty());
    }

    #[test]
    fn conflicting_frontend_goes_to_smaller_key() {
        let a = svc(TrafficPolicy::Cluster, vec![]);
        let mut b = a.clone();
        b.key = ServiceKey::new("default", "aaa");
        let planned = plan(&[a, b], "node-a");
        assert_eq!(planned.plan.services.len(), 1);
        assert!(
            planned
                .plan
                .services
                .contains_key(&ServiceKey::new("default", "aaa"))
        );
        assert_eq!(planned.conflicts.len(), 2);
        assert_eq!(
            planned.conflicts[0].dropped,
            ServiceKey::new("default", "web")
        );
    }
}
