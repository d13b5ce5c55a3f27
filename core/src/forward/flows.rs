//! Which connection-tracking entries a plan change leaves pointing at endpoints that are gone.
//!
//! A TCP connection to a removed endpoint ends by itself (RST or timeout), but a UDP "flow"
//! lives in conntrack as long as the client keeps sending, so without a flush its packets keep
//! going to the dead endpoint (kube-proxy flushes them too).

use super::{Backends, ForwardingPlan, Frontend, Protocol};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// UDP flows to `frontend` that the kernel DNATed to `backend`, which no longer serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StaleFlow {
    /// The VIP, protocol (UDP) and port the client sends to.
    pub frontend: Frontend,
    /// The endpoint the flows were sent to.
    pub backend: SocketAddr,
}

fn udp_backends(plan: &ForwardingPlan) -> BTreeMap<Frontend, BTreeSet<SocketAddr>> {
    let mut out: BTreeMap<Frontend, BTreeSet<SocketAddr>> = BTreeMap::new();
    for service in plan.services.values() {
        for (fe, backends) in &service.frontends {
            if fe.protocol != Protocol::Udp {
                continue;
            }
            let set = out.entry(*fe).or_default();
            if let Backends::Forward { backends, .. } = backends {
                set.extend(backends.iter().copied());
            }
        }
    }
    out
}

/// The UDP flows `old` sent to endpoints that `new` no longer uses for the same frontend (the
/// endpoint went away, the frontend now refuses, or it is not forwarded any more), in order.
pub fn stale_udp_flows(old: &ForwardingPlan, new: &ForwardingPlan) -> Vec<StaleFlow> {
    let now = udp_backends(new);
    let mut out = Vec::new();
    for (frontend, backends) in udp_backends(old) {
        let kept = now.get(&frontend);
        for backend in backends {
            if !kept.is_some_and(|k| k.contains(&backend)) {
                out.push(StaleFlow { frontend, backend });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::{
        AllowedSources, EndpointPool, RejectReason, ServiceKey, ServicePlan, SessionAffinity,
        SourceNat,
    };

    fn fe(protocol: Protocol) -> Frontend {
        Frontend {
            vip: "192.0.2.10".parse().unwrap(),
            protocol,
            port: 53,
        }
    }

    fn plan_with(frontends: Vec<(Frontend, Backends)>) -> ForwardingPlan {
        let service = ServicePlan {
            source_nat: SourceNat::Masquerade,
            affinity: SessionAffinity::None,
            allowed_sources: AllowedSources::Any,
            frontends: frontends.into_iter().collect(),
        };
        ForwardingPlan {
            services: [(ServiceKey::new("default", "dns"), service)].into(),
        }
    }

    fn fwd(backends: &[&str]) -> Backends {
        Backends::Forward {
            backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
            pool: EndpointPool::Ready,
        }
    }

    #[test]
    fn removed_udp_endpoints_are_stale_tcp_and_kept_ones_are_not() {
        let old = plan_with(vec![
            (fe(Protocol::Udp), fwd(&["198.18.1.2:53", "198.18.2.2:53"])),
            (fe(Protocol::Tcp), fwd(&["198.18.1.2:53", "198.18.2.2:53"])),
        ]);
        let new = plan_with(vec![
            (fe(Protocol::Udp), fwd(&["198.18.2.2:53", "198.18.3.2:53"])),
            (fe(Protocol::Tcp), fwd(&["198.18.2.2:53"])),
        ]);
        assert_eq!(
            stale_udp_flows(&old, &new),
            vec![StaleFlow {
                frontend: fe(Protocol::Udp),
                backend: "198.18.1.2:53".parse().unwrap()
            }]
        );
        assert!(stale_udp_flows(&old, &old).is_empty());
        assert!(stale_udp_flows(&ForwardingPlan::default(), &new).is_empty());
    }

    #[test]
    fn a_refusing_or_removed_frontend_makes_all_its_flows_stale() {
        let old = plan_with(vec![(fe(Protocol::Udp), fwd(&["198.18.1.2:53"]))]);
        let refusing = plan_with(vec![(
            fe(Protocol::Udp),
            Backends::Reject(RejectReason::NoEndpoints),
        )]);
        let gone = ForwardingPlan::default();
        for new in [refusing, gone] {
            assert_eq!(stale_udp_flows(&old, &new).len(), 1);
        }
        // A port change of the endpoint is a different backend too.
        let moved = plan_with(vec![(fe(Protocol::Udp), fwd(&["198.18.1.2:5353"]))]);
        assert_eq!(stale_udp_flows(&old, &moved)[0].backend.port(), 53);
    }
}
