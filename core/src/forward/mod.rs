//! The L4 forwarding plan: which backends serve each VIP:port on this node, and its nftables form.
//!
//! Inputs are plain values (what the speaker reads from Services and EndpointSlices); the output
//! is a deterministic [`ForwardingPlan`]. [`diff`] turns two plans into per-Service changes so an
//! update to one Service never touches another's rules; [`nft`] renders plans and changes into
//! nftables transactions.

mod flows;
pub mod nft;
mod plan;

pub use flows::{StaleFlow, stale_udp_flows};
pub use plan::{FrontendConflict, Planned, plan};

use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

pub use crate::service::ServiceKey;

/// A transport protocol a Service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The protocol's name as nftables spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One port of a Service; endpoints name their target port by the same `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name (may be empty for a single-port Service).
    pub name: String,
    /// The transport protocol.
    pub protocol: Protocol,
    /// The port clients connect to on the VIP.
    pub port: u16,
}

/// `spec.externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TrafficPolicy {
    /// Any ready endpoint in the cluster; the source is masqueraded so replies return here.
    Cluster,
    /// Only this node's endpoints; the client's source address is preserved.
    Local,
}

/// `spec.sessionAffinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SessionAffinity {
    /// Every new connection is balanced independently.
    None,
    /// A client address sticks to one endpoint until `timeout_s` seconds without a new connection.
    ClientIp {
        /// `sessionAffinityConfig.clientIP.timeoutSeconds` (Kubernetes' default is 10800).
        timeout_s: u32,
    },
}

/// An endpoint's EndpointSlice conditions, with Kubernetes' defaults for unset ones already
/// resolved by the caller (ready unset = true, serving unset = ready, terminating unset = false).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EndpointConditions {
    /// `conditions.ready`.
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
}

/// One endpoint address of a Service, from an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint's address.
    pub ip: IpAddr,
    /// Target port per Service port name; a port the endpoint does not list is not served by it.
    pub ports: BTreeMap<String, u16>,
    /// Readiness conditions.
    pub conditions: EndpointConditions,
    /// The node the endpoint runs on, if known.
    pub node: Option<String>,
}

/// Everything the planner needs about one Service whose VIPs this node forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardService {
    /// The Service.
    pub key: ServiceKey,
    /// The VIPs this node handles for it.
    pub vips: Vec<IpAddr>,
    /// Its ports.
    pub ports: Vec<ServicePort>,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.sessionAffinity`.
    pub session_affinity: SessionAffinity,
    /// `spec.loadBalancerSourceRanges`; empty allows everyone.
    pub source_ranges: Vec<IpNet>,
    /// All endpoints from the Service's EndpointSlices (both families).
    pub endpoints: Vec<Endpoint>,
}

/// Whether forwarded connections get this node's address as their source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceNat {
    /// Masquerade (policy Cluster): replies come back through this node whatever the endpoint.
    Masquerade,
    /// Keep the client's address (policy Local): the endpoint is on this node.
    PreserveClient,
}

/// Which clients may connect.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum AllowedSources {
    /// No `loadBalancerSourceRanges`: everyone.
    Any,
    /// Only sources inside these ranges (sorted, deduplicated); other families are refused.
    Only(Vec<IpNet>),
}

/// The address clients connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    /// The VIP.
    pub vip: IpAddr,
    /// The transport protocol.
    pub protocol: Protocol,
    /// The Service port.
    pub port: u16,
}

/// Which endpoint condition the chosen backends were picked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EndpointPool {
    /// Ready endpoints.
    Ready,
    /// Serving-but-terminating endpoints, used only because no ready one is left.
    Terminating,
}

/// Why a frontend refuses connections instead of forwarding them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RejectReason {
    /// The Service has no usable endpoint of the VIP's family for this port.
    NoEndpoints,
    /// Policy Local and no usable endpoint on this node.
    NoLocalEndpoints,
}

/// What a frontend does with a new connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Backends {
    /// Balance over these backends (sorted, non-empty, same family as the VIP).
    Forward {
        /// Where connections go.
        backends: Vec<SocketAddr>,
        /// Which condition selected them.
        pool: EndpointPool,
    },
    /// Refuse: TCP reset or ICMP port unreachable.
    Reject(RejectReason),
}

/// The forwarding decisions for one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    /// Source NAT decision, from the traffic policy.
    pub source_nat: SourceNat,
    /// Session affinity.
    pub affinity: SessionAffinity,
    /// Which clients may connect.
    pub allowed_sources: AllowedSources,
    /// Per VIP:protocol:port, the backends (or a refusal).
    pub frontends: BTreeMap<Frontend, Backends>,
}

/// Everything this node forwards, keyed by Service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ForwardingPlan {
    /// Per Service, its forwarding decisions.
    pub services: BTreeMap<ServiceKey, ServicePlan>,
}

/// One incremental step from one plan to another, scoped to one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A Service is new or its forwarding changed: this is its whole new plan.
    Upsert {
        /// The Service.
        key: ServiceKey,
        /// Its new plan.
        service: ServicePlan,
    },
    /// A Service is no longer forwarded here.
    Remove {
        /// The Service.
        key: ServiceKey,
    },
}

impl Change {
    /// The Service this change is about.
    pub fn key(&self) -> &ServiceKey {
        match self {
            Change::Upsert { key, .. } | Change::Remove { key } => key,
        }
    }
}

/// The per-Service changes that turn `old` into `new`, in key order; unchanged Services are absent.
///
/// One merge pass over both maps in key order: a lookup per Service would cost a tree search
/// of string comparisons each, which at 10,000 Services was most of an update's own time.
pub fn diff(old: &ForwardingPlan, new: &ForwardingPlan) -> Vec<Change> {
    use std::cmp::Ordering;
    let upsert = |key: &ServiceKey, service: &ServicePlan| Change::Upsert {
        key: key.clone(),
        service: service.clone(),
    };
    let mut changes = Vec::new();
    let mut olds = old.services.iter().peekable();
    let mut news = new.services.iter().peekable();
    loop {
        let order = match (olds.peek(), news.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((ok, _)), Some((nk, _))) => ok.cmp(nk),
        };
        match order {
            Ordering::Less => {
                let (key, _) = olds.next().expect("peeked");
                changes.push(Change::Remove { key: key.clone() });
            }
            Ordering::Greater => {
                let (key, service) = news.next().expect("peeked");
                changes.push(upsert(key, service));
            }
            Ordering::Equal => {
                let ((_, was), (key, service)) =
                    (olds.next().expect("peeked"), news.next().expect("peeked"));
                if was != service {
                    changes.push(upsert(key, service));
                }
            }
        }
    }
    changes
}

impl ForwardingPlan {
    /// Applies changes (as produced by [`diff`]) to this plan.
    pub fn apply(&mut self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Upsert { key, service } => {
                    self.services.insert(key.clone(), service.clone());
                }
                Change::Remove { key } => {
                    self.services.remove(key);
                }
            }
        }
    }
}
