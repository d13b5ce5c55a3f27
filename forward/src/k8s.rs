//! From Kubernetes objects to the planner's plain inputs: Services and EndpointSlices in,
//! [`ForwardService`]s for the IPs this node announces out. Pure functions, no client.

use ferrolb_core::forward::{
    Endpoint, EndpointConditions, ForwardService, Protocol, ServiceKey, ServicePort,
    SessionAffinity, TrafficPolicy,
};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The per-Service annotation choosing the forwarding path.
pub const FORWARDING_ANNOTATION: &str = "ferrolb.io/forwarding";

/// The label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10_800;

/// The forwarding path a Service asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardingPath {
    /// nftables DNAT (default).
    Kernel,
    /// `ferrolb.io/forwarding: userspace`: the userspace proxy carries it; the kernel plan
    /// leaves it out.
    Userspace,
}

/// Something in a Service the forwarder could not use, for a log line or an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// A `loadBalancerSourceRanges` entry that is not a CIDR; it is ignored.
    BadSourceRange(String),
    /// A port with a protocol we do not forward.
    UnknownProtocol(String),
    /// A port number out of range.
    BadPort(i32),
}

/// One Service converted: the planner's input, the path it asked for, and what was skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The planner's input.
    pub service: ForwardService,
    /// Which path the annotation asks for.
    pub path: ForwardingPath,
    /// Parts of the spec that could not be used.
    pub skipped: Vec<Skipped>,
}

/// The key of a Service object.
pub fn service_key(svc: &Service) -> Option<ServiceKey> {
    Some(ServiceKey::new(
        svc.metadata.namespace.clone()?,
        svc.metadata.name.clone()?,
    ))
}

/// The Service's LoadBalancer ingress IPs (from status), or none when it is no LoadBalancer.
pub fn ingress_ips(svc: &Service) -> Vec<IpAddr> {
    let is_lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    if !is_lb {
        return Vec::new();
    }
    ferrolb_api::service::ingress_ips(svc)
}

/// Converts every LoadBalancer Service with an ingress IP in `announced` (the IPs this node
/// announces) whose annotation asks for `path`, together with its EndpointSlices. Services
/// sharing an IP are all included: the planner splits them by port. Each path plans only its
/// own Services, so a Service is never carried by both.
pub fn forward_inputs<'a>(
    announced: &BTreeSet<IpAddr>,
    path: ForwardingPath,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Vec<Converted> {
    let mut by_service: BTreeMap<ServiceKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let owner = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        if let (Some(ns), Some(name)) = (slice.metadata.namespace.as_ref(), owner) {
            by_service
                .entry(ServiceKey::new(ns.clone(), name.clone()))
                .or_default()
                .push(slice);
        }
    }
    let mut out = Vec::new();
    for svc in services {
        let vips: Vec<IpAddr> = ingress_ips(svc)
            .into_iter()
            .filter(|ip| announced.contains(ip))
            .collect();
        let Some(key) = service_key(svc) else {
            continue;
        };
        if vips.is_empty() {
            continue;
        }
        if forwarding_path(svc) != path {
            continue;
        }
        let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
        out.push(convert(svc, key, vips, slices));
    }
    out
}

/// One Service and its slices as the planner's input, for the given VIPs.
pub fn convert(
    svc: &Service,
    key: ServiceKey,
    vips: Vec<IpAddr>,
    slices: &[&EndpointSlice],
) -> Converted {
    let mut skipped = Vec::new();
    let spec = svc.spec.clone().unwrap_or_default();
    let mut ports = Vec::new();
    for p in spec.ports.iter().flatten() {
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        let Some(protocol) = protocol(proto) else {
            skipped.push(Skipped::UnknownProtocol(proto.to_string()));
            continue;
        };
        let Ok(port) = u16::try_from(p.port) else {
            skipped.push(Skipped::BadPort(p.port));
            continue;
        };
        ports.push(ServicePort {
            name: p.name.clone().unwrap_or_default(),
            protocol,
            port,
        });
    }
    let external_traffic_policy = match spec.external_traffic_policy.as_deref() {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    };
    let session_affinity = match spec.session_affinity.as_deref() {
        Some("ClientIP") => SessionAffinity::ClientIp {
            timeout_s: spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_S),
        },
        _ => SessionAffinity::None,
    };
    let mut source_ranges = Vec::new();
    for r in spec.load_balancer_source_ranges.iter().flatten() {
        match r.trim().parse::<IpNet>() {
            Ok(net) => source_ranges.push(net),
            Err(_) => skipped.push(Skipped::BadSourceRange(r.clone())),
        }
    }
    Converted {
        service: ForwardService {
            key,
            vips,
            ports,
            external_traffic_policy,
            session_affinity,
            source_ranges,
            endpoints: endpoints(slices),
        },
        path: forwarding_path(svc),
        skipped,
    }
}

/// The path the Service's annotations ask for: kernel unless `ferrolb.io/forwarding: userspace`
/// with no or a valid `ferrolb.io/proxy-protocol` ([`crate::userspace::selection`]).
pub fn forwarding_path(svc: &Service) -> ForwardingPath {
    // One reading of the annotations for both paths: a bad value (an unknown path, or
    // `ferrolb.io/proxy-protocol: v3`) keeps the Service on the kernel path.
    match crate::userspace::selection(svc).0 {
        crate::userspace::Selection::Userspace { .. } => ForwardingPath::Userspace,
        crate::userspace::Selection::Kernel => ForwardingPath::Kernel,
    }
}

fn protocol(name: &str) -> Option<Protocol> {
    match name {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

/// Endpoints of IPv4/IPv6 slices, with unset conditions resolved as Kubernetes defines them
/// (ready unset = ready, serving unset = ready, terminating unset = not terminating).
pub fn endpoints(slices: &[&EndpointSlice]) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue; // FQDN slices carry no address to DNAT to
        }
        let ports: BTreeMap<String, u16> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    u16::try_from(p.port?).ok()?,
                ))
            })
            .collect();
        for ep in &slice.endpoints {
            // kube-proxy uses the first address: the others are the same Pod's.
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse().ok()) else {
                continue;
            };
            let c = ep.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            out.push(Endpoint {
                ip,
                ports: ports.clone(),
                conditions: EndpointConditions {
                    ready,
                    serving: c.and_then(|c| c.serving).unwrap_or(ready),
                    terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                },
                node: ep.node_name.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn web() -> Service {
        service(json!({
            "metadata": {"namespace": "default", "name": "web",
                         "annotations": {"ferrolb.io/forwarding": "userspace"}},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                     "sessionAffinity": "ClientIP",
                     "loadBalancerSourceRanges": ["192.0.2.0/28", "nonsense"],
                     "ports": [{"name": "http", "port": 80},
                               {"name": "dns", "port": 53, "protocol": "UDP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.230"}, {"ip": "2001:db8::230"}]}}
        }))
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn converts_spec_fields_and_slices() {
        let s = slice(json!({
            "metadata": {"namespace": "default", "name": "web-x",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["198.18.1.2"], "nodeName": "n1"},
                {"addresses": ["198.18.1.3"], "conditions": {"ready": false, "serving": true, "terminating": true}}
            ],
            "ports": [{"name": "http", "port": 8080}]
        }));
        let other = slice(json!({
            "metadata": {"namespace": "other", "name": "web-y",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["198.18.9.9"]}]
        }));
        let announced = BTreeSet::from(["192.0.2.230".parse().unwrap()]);
        let svcs = [web()];
        let out = forward_inputs(&announced, ForwardingPath::Userspace, &svcs, [&s, &other]);
        assert_eq!(out.len(), 1);
        let c = &out[0];
        assert_eq!(c.path, ForwardingPath::Userspace);
        assert_eq!(c.skipped, vec![Skipped::BadSourceRange("nonsense".into())]);
        let f = &c.service;
        assert_eq!(f.vips, vec!["192.0.2.230".parse::<IpAddr>().unwrap()]);
        assert_eq!(f.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(
            f.session_affinity,
            SessionAffinity::ClientIp { timeout_s: 10_800 }
        );
        assert_eq!(f.ports[1].protocol, Protocol::Udp);
        assert_eq!(f.ports[0].protocol, Protocol::Tcp);
        assert_eq!(f.source_ranges, vec!["192.0.2.0/28".parse().unwrap()]);
        assert_eq!(
            f.endpoints.len(),
            2,
            "the other namespace's slice is not ours"
        );
        assert_eq!(f.endpoints[0].node.as_deref(), Some("n1"));
        assert!(f.endpoints[0].conditions.ready && f.endpoints[0].conditions.serving);
        let term = f.endpoints[1].conditions;
        assert!(!term.ready && term.serving && term.terminating);
        assert_eq!(f.endpoints[1].ports["http"], 8080);
    }

    #[test]
    fn only_announced_load_balancers_are_forwarded() {
        let mut cluster_ip = web();
        cluster_ip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        let announced = BTreeSet::from(["192.0.2.231".parse().unwrap()]);
        let path = ForwardingPath::Userspace;
        assert!(forward_inputs(&announced, path, &[web()], []).is_empty());
        let announced = BTreeSet::from(["192.0.2.230".parse().unwrap()]);
        assert!(forward_inputs(&announced, path, &[cluster_ip], []).is_empty());
    }

    #[test]
    fn userspace_services_are_left_out_of_the_kernel_plan() {
        let announced = BTreeSet::from(["192.0.2.230".parse().unwrap()]);
        let mut kernel = web();
        kernel.metadata.name = Some("plain".into());
        kernel.metadata.annotations = None;
        let mut other_value = web();
        other_value.metadata.name = Some("typo".into());
        other_value.metadata.annotations =
            Some([(FORWARDING_ANNOTATION.to_string(), "Userspace ".to_string())].into());
        let svcs = [web(), kernel, other_value];
        let names = |path| -> Vec<String> {
            forward_inputs(&announced, path, &svcs, [])
                .into_iter()
                .map(|c| c.service.key.name)
                .collect()
        };
        // Only the exact value selects userspace; anything else stays in the kernel.
        assert_eq!(names(ForwardingPath::Kernel), ["plain", "typo"]);
        assert_eq!(names(ForwardingPath::Userspace), ["web"]);
    }
}
