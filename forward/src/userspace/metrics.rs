//! The userspace forwarder's Prometheus metrics: connections, bytes and ejections per Service.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of one Service.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ServiceLabels {
    pub namespace: String,
    pub service: String,
}

/// Labels of one Service and a direction or outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    namespace: String,
    service: String,
    kind: &'static str,
}

/// Labels of one endpoint of a Service.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    namespace: String,
    service: String,
    endpoint: String,
}

/// One Service's per-connection series (clones of the registered ones).
#[derive(Debug, Clone)]
pub(crate) struct Handles {
    pub forwarded: Counter,
    pub active: Gauge,
    pub to_backend: Counter,
    pub to_client: Counter,
}

/// Counters of the userspace path; clones share the same series.
#[derive(Debug, Clone, Default)]
pub struct UserspaceMetrics {
    connections: Family<KindLabels, Counter>,
    active: Family<ServiceLabels, Gauge>,
    bytes: Family<KindLabels, Counter>,
    ejections: Family<EndpointLabels, Counter>,
}

impl UserspaceMetrics {
    /// Registers the metrics (`forward_userspace_…`) in the daemon's `ferrolb_` sub-registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "forward_userspace_connections",
            "Client connections to the userspace forwarder, by outcome (forwarded, no_endpoint, refused_source, backend_failed)",
            self.connections.clone(),
        );
        registry.register(
            "forward_userspace_active_connections",
            "Client connections the userspace forwarder carries now",
            self.active.clone(),
        );
        registry.register(
            "forward_userspace_bytes",
            "Bytes carried, by direction (to_backend, to_client)",
            self.bytes.clone(),
        );
        registry.register(
            "forward_userspace_ejections",
            "Times an endpoint was taken out of balancing after refusing or timing out a connection",
            self.ejections.clone(),
        );
    }

    /// The per-connection series of one Service, looked up once per frontend rather than per
    /// connection.
    pub(crate) fn handles(&self, svc: &ServiceLabels) -> Handles {
        let kind = |kind| KindLabels {
            namespace: svc.namespace.clone(),
            service: svc.service.clone(),
            kind,
        };
        // One statement each: a family's read guard lives to the end of its statement, and a
        // second get_or_create on the same family within it would wait for a write lock.
        let forwarded = self.connections.get_or_create(&kind("forwarded")).clone();
        let active = self.active.get_or_create(svc).clone();
        let to_backend = self.bytes.get_or_create(&kind("to_backend")).clone();
        let to_client = self.bytes.get_or_create(&kind("to_client")).clone();
        Handles {
            forwarded,
            active,
            to_backend,
            to_client,
        }
    }

    pub(crate) fn connection(&self, svc: &ServiceLabels, outcome: &'static str) {
        self.connections
            .get_or_create(&KindLabels {
                namespace: svc.namespace.clone(),
                service: svc.service.clone(),
                kind: outcome,
            })
            .inc();
    }

    pub(crate) fn ejection(&self, svc: &ServiceLabels, endpoint: std::net::SocketAddr) {
        self.ejections
            .get_or_create(&EndpointLabels {
                namespace: svc.namespace.clone(),
                service: svc.service.clone(),
                endpoint: endpoint.to_string(),
            })
            .inc();
    }

    /// Forwarded connections of a Service so far (tests and the bench read it).
    pub fn forwarded(&self, namespace: &str, service: &str) -> u64 {
        self.connections
            .get_or_create(&KindLabels {
                namespace: namespace.into(),
                service: service.into(),
                kind: "forwarded",
            })
            .get()
    }

    /// Ejections of one endpoint so far.
    pub fn ejections(&self, namespace: &str, service: &str, endpoint: std::net::SocketAddr) -> u64 {
        self.ejections
            .get_or_create(&EndpointLabels {
                namespace: namespace.into(),
                service: service.into(),
                endpoint: endpoint.to_string(),
            })
            .get()
    }

    /// Bytes carried for a Service so far: (to backends, to clients).
    pub fn bytes_carried(&self, namespace: &str, service: &str) -> (u64, u64) {
        let get = |kind| {
            self.bytes
                .get_or_create(&KindLabels {
                    namespace: namespace.into(),
                    service: service.into(),
                    kind,
                })
                .get()
        };
        (get("to_backend"), get("to_client"))
    }
}
