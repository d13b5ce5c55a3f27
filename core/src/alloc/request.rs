//! What a Service asks for, as plain values the controller glue fills in from the Service.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

pub use crate::service::ServiceKey;

use super::range::Family;

/// `spec.ipFamilyPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FamilyPolicy {
    /// One address, of the first of `ip_families`.
    #[default]
    SingleStack,
    /// One address per family in `ip_families` if the pools allow, else what they allow.
    PreferDualStack,
    /// One address per family, both families, or none at all.
    RequireDualStack,
}

/// `spec.ipFamilyPolicy` and `spec.ipFamilies`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FamilyRequest {
    /// The policy.
    pub policy: FamilyPolicy,
    /// The families in the Service's order; empty means the requested IPs' families, else IPv4.
    pub ip_families: Vec<Family>,
}

impl FamilyRequest {
    /// SingleStack IPv4.
    pub fn v4() -> FamilyRequest {
        FamilyRequest {
            policy: FamilyPolicy::SingleStack,
            ip_families: vec![Family::V4],
        }
    }

    /// SingleStack IPv6.
    pub fn v6() -> FamilyRequest {
        FamilyRequest {
            policy: FamilyPolicy::SingleStack,
            ip_families: vec![Family::V6],
        }
    }

    /// `policy` over `families`, in that order.
    pub fn new(policy: FamilyPolicy, families: &[Family]) -> FamilyRequest {
        FamilyRequest {
            policy,
            ip_families: families.to_vec(),
        }
    }
}

/// A port's protocol (`spec.ports[].protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the Kubernetes default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// Everything the allocator needs to know about one LoadBalancer Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRequest {
    /// Which Service.
    pub key: ServiceKey,
    /// Labels of the Service's namespace (for pools' namespace selectors).
    pub namespace_labels: BTreeMap<String, String>,
    /// The Service's labels (for pools' service selectors).
    pub service_labels: BTreeMap<String, String>,
    /// `spec.ipFamilyPolicy` and `spec.ipFamilies`.
    pub families: FamilyRequest,
    /// `ferrolb.io/loadBalancerIPs` (see [`parse_requested_ips`]) or `spec.loadBalancerIP`.
    pub requested_ips: Vec<IpAddr>,
    /// `ferrolb.io/address-pool`.
    pub requested_pool: Option<String>,
    /// `ferrolb.io/allow-shared-ip`.
    pub sharing_key: Option<String>,
    /// `spec.ports[]` as (protocol, port).
    pub ports: Vec<(Protocol, u16)>,
    /// `Some(spec.selector)` when `externalTrafficPolicy: Local`, `None` for `Cluster`.
    pub local_traffic_selector: Option<BTreeMap<String, String>>,
    /// The IPs in `status.loadBalancer.ingress` now; kept whenever they are still valid.
    pub current_ips: Vec<IpAddr>,
}

impl ServiceRequest {
    /// A SingleStack IPv4 request from Service `namespace/name` with nothing else set.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ServiceRequest {
        ServiceRequest {
            key: ServiceKey::new(namespace, name),
            families: FamilyRequest::v4(),
            ..ServiceRequest::default()
        }
    }
}

/// Why a `ferrolb.io/loadBalancerIPs` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// An entry is not an IP address.
    #[error("{entry:?} is not an IP address (expected e.g. 192.0.2.10 or 192.0.2.10,2001:db8::10)")]
    NotAnIp {
        /// The entry as written.
        entry: String,
    },
    /// Two addresses of one family: a Service gets at most one per family.
    #[error("{first} and {second} are both {family}: give at most one IPv4 and one IPv6 address")]
    TwoOfOneFamily {
        /// The family named twice.
        family: Family,
        /// The first address of that family.
        first: IpAddr,
        /// The second one.
        second: IpAddr,
    },
}

/// Reads `ferrolb.io/loadBalancerIPs`: comma-separated, at most one address per family.
///
/// Spaces around entries are allowed; an empty or blank value is no request (`Ok(vec![])`).
pub fn parse_requested_ips(text: &str) -> Result<Vec<IpAddr>, RequestError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    for entry in text.split(',') {
        let ip: IpAddr = entry.trim().parse().map_err(|_| RequestError::NotAnIp {
            entry: entry.trim().to_owned(),
        })?;
        if let Some(&first) = ips.iter().find(|i| Family::of(**i) == Family::of(ip)) {
            return Err(RequestError::TwoOfOneFamily {
                family: Family::of(ip),
                first,
                second: ip,
            });
        }
        ips.push(ip);
    }
    Ok(ips)
}
