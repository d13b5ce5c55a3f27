//! The controller's own metrics, registered in the runtime's registry under `ferrolb_`.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
    family: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    write: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: String,
}

/// Allocation counters, pool gauges and write errors.
#[derive(Debug, Clone, Default)]
pub struct ControllerMetrics {
    allocations: Counter,
    failures: Family<ReasonLabels, Counter>,
    pool_size: Family<PoolLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pool_assigned: Family<PoolLabels, Gauge>,
    errors: Family<ErrorLabels, Counter>,
    service_writes: Family<WriteLabels, Counter>,
    is_leader: Gauge,
}

impl ControllerMetrics {
    /// Registers every metric in `registry` (the runtime's `ferrolb_` sub-registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "allocations",
            "Services given IPs (new or changed assignments)",
            self.allocations.clone(),
        );
        registry.register(
            "allocation_failures",
            "Services refused IPs, by reason (PoolExhausted, NoMatchingPool, ...)",
            self.failures.clone(),
        );
        registry.register(
            "pool_size_addresses",
            "Addresses in a pool, by family (a float: IPv6 pools exceed 2^64)",
            self.pool_size.clone(),
        );
        registry.register(
            "pool_assigned_addresses",
            "Addresses of a pool held by Services, by family",
            self.pool_assigned.clone(),
        );
        registry.register(
            "controller_errors",
            "Failed writes to the API server, by kind",
            self.errors.clone(),
        );
        registry.register(
            "service_writes",
            "Requests writing a Service, by what they write (status, annotation)",
            self.service_writes.clone(),
        );
        registry.register(
            "controller_is_leader",
            "1 while this replica holds the leader Lease",
            self.is_leader.clone(),
        );
    }

    /// Counts one successful (new or changed) allocation.
    pub fn allocated(&self) {
        self.allocations.inc();
    }

    /// Counts one refusal with the allocator's reason.
    pub fn failed(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts one request writing a Service's `status` or `annotation`.
    pub fn service_write(&self, what: &str) {
        self.service_writes
            .get_or_create(&WriteLabels {
                write: what.to_owned(),
            })
            .inc();
    }

    /// Counts one failed write.
    pub fn error(&self, label: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                error: label.to_owned(),
            })
            .inc();
    }

    /// Sets a pool's gauges for one family (`ipv4`, `ipv6`).
    pub fn pool(&self, pool: &str, family: &str, assigned: u128, available: u128) {
        let labels = PoolLabels {
            pool: pool.to_owned(),
            family: family.to_owned(),
        };
        self.pool_size
            .get_or_create(&labels)
            .set((assigned + available) as f64);
        self.pool_assigned
            .get_or_create(&labels)
            .set(i64::try_from(assigned).unwrap_or(i64::MAX));
    }

    /// Forgets a deleted pool's gauges.
    pub fn forget_pool(&self, pool: &str) {
        for family in ["ipv4", "ipv6"] {
            let labels = PoolLabels {
                pool: pool.to_owned(),
                family: family.to_owned(),
            };
            self.pool_size.remove(&labels);
            self.pool_assigned.remove(&labels);
        }
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.is_leader.set(i64::from(leader));
    }
}
