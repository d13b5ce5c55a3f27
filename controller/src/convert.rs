//! Kubernetes objects to the allocator's plain values, and back. No I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_api::IPAddressPool;
use ferrolb_core::alloc::{
    self, AllocError, Family, FamilyPolicy, FamilyRequest, Pool, PoolAllocation, Protocol,
    ServiceRequest,
};
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Namespace, Service, ServicePort, ServiceSpec,
    ServiceStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

/// Requested addresses, comma-separated, at most one per family.
pub const ANN_LOAD_BALANCER_IPS: &str = "ferrolb.io/loadBalancerIPs";
/// The pool a Service asks for by name.
pub const ANN_ADDRESS_POOL: &str = "ferrolb.io/address-pool";
/// Services with the same key may share an IP.
pub const ANN_ALLOW_SHARED_IP: &str = "ferrolb.io/allow-shared-ip";
/// Written by the controller: the pool(s) the Service's IPs came from.
pub const ANN_ALLOCATED_FROM_POOL: &str = "ferrolb.io/ip-allocated-from-pool";
/// The Service condition the controller owns.
pub const CONDITION_ALLOCATED: &str = "ferrolb.io/Allocated";

pub use ferrolb_api::service::{Selection, ingress_ips, key as service_key};

/// Keeps only what the controller reads of a Service, before it enters the cache (every
/// Service of the cluster is cached for as long as it exists): identity and versions;
/// `ferrolb.io/` annotations; for LoadBalancers the labels, type, class, families, requested
/// IP, ports (protocol and number) and, with `externalTrafficPolicy: Local`, the selector;
/// for other Services only the type; the ingress IPs and modes and our condition.
/// Whatever is not listed here reads as absent to the controller, so a field the controller
/// starts to read must be added here.
pub fn slim_service(svc: &mut Service) {
    let Service {
        metadata: m,
        spec,
        status,
    } = std::mem::take(svc);
    let lb = spec
        .as_ref()
        .is_some_and(|s| s.type_.as_deref() == Some("LoadBalancer"));
    let annotations = m
        .annotations
        .map(|a| {
            a.into_iter()
                .filter(|(k, _)| k.starts_with("ferrolb.io/"))
                .collect::<BTreeMap<_, _>>()
        })
        .filter(|a| !a.is_empty());
    svc.metadata = ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        generation: m.generation,
        creation_timestamp: m.creation_timestamp,
        deletion_timestamp: m.deletion_timestamp,
        labels: m.labels.filter(|_| lb),
        annotations,
        ..ObjectMeta::default()
    };
    svc.spec = spec.map(|s| {
        if !lb {
            return ServiceSpec {
                type_: s.type_,
                ..ServiceSpec::default()
            };
        }
        let local = s.external_traffic_policy.as_deref() == Some("Local");
        ServiceSpec {
            type_: s.type_,
            load_balancer_class: s.load_balancer_class,
            ip_families: s.ip_families,
            ip_family_policy: s.ip_family_policy,
            load_balancer_ip: s.load_balancer_ip,
            ports: s.ports.map(|ports| {
                ports
                    .into_iter()
                    .map(|p| ServicePort {
                        port: p.port,
                        protocol: p.protocol,
                        ..ServicePort::default()
                    })
                    .collect()
            }),
            external_traffic_policy: s.external_traffic_policy.filter(|_| local),
            selector: s.selector.filter(|_| local),
            ..ServiceSpec::default()
        }
    });
    svc.status = status.map(|st| ServiceStatus {
        load_balancer: st.load_balancer.map(|lb| LoadBalancerStatus {
            ingress: lb.ingress.map(|ingress| {
                ingress
                    .into_iter()
                    .map(|i| LoadBalancerIngress {
                        ip: i.ip,
                        ip_mode: i.ip_mode,
                        ..LoadBalancerIngress::default()
                    })
                    .collect()
            }),
        }),
        conditions: st
            .conditions
            .map(|c| {
                c.into_iter()
                    .filter(|c| c.type_ == CONDITION_ALLOCATED)
                    .collect::<Vec<_>>()
            })
            .filter(|c| !c.is_empty()),
    });
}

/// Keeps only a Namespace's name, version and labels (for pools' namespace selectors).
pub fn slim_namespace(ns: &mut Namespace) {
    let m = std::mem::take(&mut ns.metadata);
    *ns = Namespace {
        metadata: ObjectMeta {
            name: m.name,
            uid: m.uid,
            resource_version: m.resource_version,
            labels: m.labels,
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
}

/// Builds the allocator's request from a Service and its namespace's labels.
///
/// Malformed input the allocator cannot judge (annotation values, families, protocols) is an
/// [`AllocError::InvalidRequest`] naming the field, so it lands in the condition and Event.
pub fn service_request(
    svc: &Service,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<ServiceRequest, AllocError> {
    let invalid = |why: String| AllocError::InvalidRequest { why };
    // Borrowed, not cloned: this runs for every Service on every pass.
    let no_spec = ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&no_spec);
    let annotation = |name: &str| svc.metadata.annotations.as_ref()?.get(name);

    let ip_families = spec
        .ip_families
        .iter()
        .flatten()
        .map(|f| match f.as_str() {
            "IPv4" => Ok(Family::V4),
            "IPv6" => Ok(Family::V6),
            other => Err(invalid(format!(
                "spec.ipFamilies: unknown family {other:?}"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let policy = match spec.ip_family_policy.as_deref() {
        None | Some("SingleStack") => FamilyPolicy::SingleStack,
        Some("PreferDualStack") => FamilyPolicy::PreferDualStack,
        Some("RequireDualStack") => FamilyPolicy::RequireDualStack,
        Some(other) => {
            return Err(invalid(format!(
                "spec.ipFamilyPolicy: unknown policy {other:?}"
            )));
        }
    };

    let requested_ips = match annotation(ANN_LOAD_BALANCER_IPS) {
        Some(text) => alloc::parse_requested_ips(text)?,
        None => match spec.load_balancer_ip.as_deref().map(str::trim) {
            None | Some("") => Vec::new(),
            Some(ip) => vec![ip.parse::<IpAddr>().map_err(|_| {
                invalid(format!("spec.loadBalancerIP: {ip:?} is not an IP address"))
            })?],
        },
    };

    let requested_pool = match annotation(ANN_ADDRESS_POOL).map(|p| p.trim()) {
        None => None,
        Some("") => {
            return Err(invalid(format!(
                "{ANN_ADDRESS_POOL} is empty: name a pool or remove the annotation"
            )));
        }
        Some(pool) if pool.contains(',') || pool.contains(char::is_whitespace) => {
            return Err(invalid(format!(
                "{ANN_ADDRESS_POOL}: {pool:?} is not a pool name (one name, no commas or spaces)"
            )));
        }
        Some(pool) => Some(pool.to_owned()),
    };

    let sharing_key = match annotation(ANN_ALLOW_SHARED_IP).map(|k| k.trim()) {
        None => None,
        Some("") => {
            return Err(invalid(format!(
                "{ANN_ALLOW_SHARED_IP} is empty: give a sharing key or remove the annotation"
            )));
        }
        Some(key) => Some(key.to_owned()),
    };

    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let protocol = match p.protocol.as_deref() {
                None | Some("TCP") => Protocol::Tcp,
                Some("UDP") => Protocol::Udp,
                Some("SCTP") => Protocol::Sctp,
                Some(other) => {
                    return Err(invalid(format!("spec.ports: unknown protocol {other:?}")));
                }
            };
            let port = u16::try_from(p.port)
                .map_err(|_| invalid(format!("spec.ports: {} is not a port", p.port)))?;
            Ok((protocol, port))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let local_traffic_selector = (spec.external_traffic_policy.as_deref() == Some("Local"))
        .then(|| spec.selector.clone().unwrap_or_default());

    Ok(ServiceRequest {
        key: service_key(svc),
        namespace_labels: namespace_labels.clone(),
        service_labels: svc.metadata.labels.clone().unwrap_or_default(),
        families: FamilyRequest::new(policy, &ip_families),
        requested_ips,
        requested_pool,
        sharing_key,
        ports,
        local_traffic_selector,
        current_ips: ingress_ips(svc),
    })
}

/// Builds the allocator's pool from an `IPAddressPool`; the error says what is wrong with it.
pub fn pool(crd: &IPAddressPool) -> Result<Pool, String> {
    let name = crd.metadata.name.clone().unwrap_or_default();
    let ranges = crd
        .spec
        .addresses
        .iter()
        .map(|entry| alloc::parse_pool_entry(entry.trim()).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let allocation = match &crd.spec.service_allocation {
        None => PoolAllocation::default(),
        Some(sa) => PoolAllocation {
            priority: sa.priority,
            namespaces: sa.namespaces.clone(),
            namespace_selectors: sa
                .namespace_selectors
                .iter()
                .map(|s| selector(s).map_err(|e| format!("namespaceSelectors: {e}")))
                .collect::<Result<_, _>>()?,
            service_selectors: sa
                .service_selectors
                .iter()
                .map(|s| selector(s).map_err(|e| format!("serviceSelectors: {e}")))
                .collect::<Result<_, _>>()?,
        },
    };
    Ok(Pool {
        name,
        ranges,
        auto_assign: crd.spec.auto_assign.into(),
        avoid_buggy_ips: crd.spec.avoid_buggy_ips.into(),
        allocation,
    })
}

/// A Kubernetes label selector as the allocator's plain selector.
pub fn selector(s: &LabelSelector) -> Result<alloc::LabelSelector, String> {
    let match_expressions = s
        .match_expressions
        .iter()
        .flatten()
        .map(|e| {
            let key = e.key.clone();
            let values = e.values.iter().flatten().cloned().collect();
            Ok(match e.operator.as_str() {
                "In" => alloc::Requirement::In(key, values),
                "NotIn" => alloc::Requirement::NotIn(key, values),
                "Exists" => alloc::Requirement::Exists(key),
                "DoesNotExist" => alloc::Requirement::DoesNotExist(key),
                other => return Err(format!("unknown operator {other:?}")),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(alloc::LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(yaml: &str) -> Service {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const BASIC: &str = "
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  type: LoadBalancer
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  ports: [{port: 80}, {port: 53, protocol: UDP}]
status:
  loadBalancer:
    ingress: [{ip: 192.0.2.130, ipMode: Proxy}]
";

    /// A Service as the API server sends it, with fields the controller never reads.
    const FULL: &str = "
metadata:
  name: web
  namespace: shop
  uid: 5d5b2f3e-0000-4000-8000-000000000001
  resourceVersion: '4711'
  generation: 3
  creationTimestamp: '2026-11-21T10:00:00Z'
  labels: {app: web}
  annotations:
    ferrolb.io/loadBalancerIPs: 192.0.2.10
    ferrolb.io/allow-shared-ip: front
    ferrolb.io/ip-allocated-from-pool: lan
    kubectl.kubernetes.io/last-applied-configuration: '{\"a\": \"long JSON copy\"}'
  finalizers: [service.kubernetes.io/load-balancer-cleanup]
  managedFields: [{manager: kubectl, operation: Update, fieldsType: FieldsV1, fieldsV1: {}}]
spec:
  type: LoadBalancer
  loadBalancerClass: ferrolb.io/ferrolb
  clusterIP: 198.19.128.10
  clusterIPs: [198.19.128.10]
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  externalTrafficPolicy: Local
  healthCheckNodePort: 31000
  selector: {app: web}
  sessionAffinity: None
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}]
status:
  loadBalancer:
    ingress: [{ip: 192.0.2.10, ipMode: Proxy, ports: [{port: 80, protocol: TCP}]}]
  conditions:
  - {type: ferrolb.io/Allocated, status: 'True', reason: IPAllocated, message: assigned 192.0.2.10 from pool lan, lastTransitionTime: '2026-11-21T10:00:01Z'}
  - {type: other.example/Thing, status: 'True', reason: R, message: m, lastTransitionTime: '2026-11-21T10:00:01Z'}
";

    /// Slimming changes nothing the controller decides or writes from a Service: the same
    /// request, the same observed view, the same selection; and it drops what it never reads.
    #[test]
    fn a_slim_service_reads_the_same() {
        let labels = BTreeMap::from([("team".to_owned(), "a".to_owned())]);
        let selection = Selection {
            class: "ferrolb.io/ferrolb".to_owned(),
            classless: true,
        };
        let mut other_class = svc(FULL);
        other_class.spec.as_mut().unwrap().load_balancer_class = Some("x.example/lb".into());
        let mut cluster_ip = svc(FULL);
        cluster_ip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        let mut cluster_policy = svc(FULL);
        cluster_policy
            .spec
            .as_mut()
            .unwrap()
            .external_traffic_policy = Some("Cluster".into());
        for full in [
            svc(FULL),
            svc(BASIC),
            other_class,
            cluster_ip,
            cluster_policy,
        ] {
            let mut slim = full.clone();
            slim_service(&mut slim);
            // Requests are built for LoadBalancers only (of any class: ours, or a foreign
            // one whose marks we may have to remove).
            let lb = full.spec.as_ref().unwrap().type_.as_deref() == Some("LoadBalancer");
            if lb {
                assert_eq!(
                    service_request(&slim, &labels),
                    service_request(&full, &labels)
                );
            }
            assert_eq!(
                crate::status::observed(&slim),
                crate::status::observed(&full)
            );
            assert_eq!(selection.is_ours(&slim), selection.is_ours(&full));
            assert_eq!(service_key(&slim), service_key(&full));
            let (m, f) = (&slim.metadata, &full.metadata);
            assert_eq!(
                (
                    &m.uid,
                    &m.resource_version,
                    &m.generation,
                    &m.creation_timestamp
                ),
                (
                    &f.uid,
                    &f.resource_version,
                    &f.generation,
                    &f.creation_timestamp
                )
            );
        }
        let mut slim = svc(FULL);
        slim_service(&mut slim);
        let m = &slim.metadata;
        assert!(m.managed_fields.is_none() && m.finalizers.is_none());
        assert_eq!(
            m.annotations.as_ref().unwrap().len(),
            3,
            "only ferrolb.io/ annotations"
        );
        let spec = slim.spec.as_ref().unwrap();
        assert!(spec.cluster_ip.is_none() && spec.health_check_node_port.is_none());
        let conditions = slim.status.as_ref().unwrap().conditions.as_ref().unwrap();
        assert_eq!(conditions.len(), 1, "only our condition");
    }

    #[test]
    fn a_slim_namespace_keeps_its_labels() {
        let mut ns: Namespace = serde_yaml_ng::from_str(
            "metadata: {name: shop, labels: {team: a}, annotations: {x: y}}\nspec: {finalizers: [kubernetes]}",
        )
        .unwrap();
        slim_namespace(&mut ns);
        assert_eq!(ns.metadata.name.as_deref(), Some("shop"));
        assert_eq!(ns.metadata.labels.as_ref().unwrap()["team"], "a");
        assert!(ns.metadata.annotations.is_none() && ns.spec.is_none());
    }

    #[test]
    fn basic_service_becomes_a_request() {
        let labels = BTreeMap::from([("team".to_owned(), "a".to_owned())]);
        let req = service_request(&svc(BASIC), &labels).unwrap();
        assert_eq!(req.key, alloc::ServiceKey::new("shop", "web"));
        assert_eq!(req.namespace_labels, labels);
        assert_eq!(req.service_labels["app"], "web");
        assert_eq!(req.families, FamilyRequest::v4());
        assert_eq!(req.ports, vec![(Protocol::Tcp, 80), (Protocol::Udp, 53)]);
        assert_eq!(
            req.current_ips,
            vec!["192.0.2.130".parse::<IpAddr>().unwrap()]
        );
        assert!(req.requested_ips.is_empty());
        assert_eq!(req.requested_pool, None);
        assert_eq!(req.local_traffic_selector, None);
    }

    #[test]
    fn annotations_and_dual_stack() {
        let s = svc("
metadata:
  name: web
  namespace: shop
  annotations:
    ferrolb.io/loadBalancerIPs: 192.0.2.140, 2001:db8:0:1::140
    ferrolb.io/address-pool: lan
    ferrolb.io/allow-shared-ip: k1
spec:
  type: LoadBalancer
  ipFamilies: [IPv6, IPv4]
  ipFamilyPolicy: RequireDualStack
  externalTrafficPolicy: Local
  selector: {app: web}
");
        let req = service_request(&s, &BTreeMap::new()).unwrap();
        assert_eq!(
            req.families,
            FamilyRequest::new(FamilyPolicy::RequireDualStack, &[Family::V6, Family::V4])
        );
        assert_eq!(req.requested_ips.len(), 2);
        assert_eq!(req.requested_pool.as_deref(), Some("lan"));
        assert_eq!(req.sharing_key.as_deref(), Some("k1"));
        assert_eq!(
            req.local_traffic_selector,
            Some(BTreeMap::from([("app".to_owned(), "web".to_owned())]))
        );
    }

    #[test]
    fn deprecated_load_balancer_ip_is_a_request() {
        let s = svc("
metadata: {name: a, namespace: b}
spec: {type: LoadBalancer, loadBalancerIP: 192.0.2.150}
");
        let req = service_request(&s, &BTreeMap::new()).unwrap();
        assert_eq!(
            req.requested_ips,
            vec!["192.0.2.150".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn bad_input_is_an_invalid_request() {
        let cases = [
            "annotations: {ferrolb.io/loadBalancerIPs: not-an-ip}",
            "annotations: {ferrolb.io/loadBalancerIPs: '192.0.2.1,192.0.2.2'}",
            "annotations: {ferrolb.io/address-pool: ''}",
            "annotations: {ferrolb.io/address-pool: 'a,b'}",
            "annotations: {ferrolb.io/allow-shared-ip: ' '}",
        ];
        for meta in cases {
            let s = svc(&format!(
                "metadata: {{name: a, namespace: b, {meta}}}\nspec: {{type: LoadBalancer}}"
            ));
            let err = service_request(&s, &BTreeMap::new()).unwrap_err();
            assert_eq!(err.reason(), "InvalidRequest", "{meta}: {err}");
        }
        let s = svc("
metadata: {name: a, namespace: b}
spec: {type: LoadBalancer, loadBalancerIP: nope}
");
        let err = service_request(&s, &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("spec.loadBalancerIP"), "{err}");
    }

    #[test]
    fn selection_follows_type_and_class() {
        let sel = Selection {
            class: "ferrolb.io/ferrolb".to_owned(),
            classless: true,
        };
        let lb = |class: Option<&str>, type_: &str| {
            let mut s = svc("metadata: {name: a, namespace: b}\nspec: {}");
            let spec = s.spec.as_mut().unwrap();
            spec.type_ = Some(type_.to_owned());
            spec.load_balancer_class = class.map(str::to_owned);
            s
        };
        assert!(sel.is_ours(&lb(None, "LoadBalancer")));
        assert!(sel.is_ours(&lb(Some("ferrolb.io/ferrolb"), "LoadBalancer")));
        assert!(!sel.is_ours(&lb(Some("other.io/lb"), "LoadBalancer")));
        assert!(!sel.is_ours(&lb(None, "ClusterIP")));
        let strict = Selection {
            classless: false,
            ..sel
        };
        assert!(!strict.is_ours(&lb(None, "LoadBalancer")));
        assert!(strict.is_ours(&lb(Some("ferrolb.io/ferrolb"), "LoadBalancer")));
    }

    #[test]
    fn pool_crd_becomes_a_pool() {
        let crd: IPAddressPool = serde_yaml_ng::from_str(
            "
apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: lan}
spec:
  addresses: [192.0.2.128/26, 192.0.2.200-192.0.2.210, 2001:db8:0:1::/64]
  autoAssign: false
  avoidBuggyIPs: true
  serviceAllocation:
    priority: 5
    namespaces: [shop]
    serviceSelectors:
      - matchExpressions: [{key: tier, operator: In, values: [front]}]
",
        )
        .unwrap();
        let p = pool(&crd).unwrap();
        assert_eq!(p.name, "lan");
        assert_eq!(p.ranges.len(), 3);
        assert_eq!(p.auto_assign, alloc::AutoAssign::No);
        assert_eq!(p.avoid_buggy_ips, alloc::BuggyIps::Avoid);
        assert_eq!(p.allocation.priority, Some(5));
        assert_eq!(p.allocation.namespaces, vec!["shop".to_owned()]);
        assert_eq!(
            p.allocation.service_selectors[0].match_expressions[0],
            alloc::Requirement::In("tier".into(), ["front".to_owned()].into())
        );

        let mut bad = crd.clone();
        bad.spec.addresses = vec!["192.0.2.0/33".to_owned()];
        assert!(pool(&bad).is_err());
    }
}
