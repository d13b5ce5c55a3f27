//! The forwarder's Prometheus metrics, registered into the daemon's registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Labels of one rule update.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpdateLabels {
    kind: String,
    result: String,
}

/// Labels of one Service.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct ServiceLabels {
    namespace: String,
    service: String,
}

/// Rule updates, their latency, and endpoints in use per Service.
#[derive(Debug, Clone)]
pub struct ForwardMetrics {
    updates: Family<UpdateLabels, Counter>,
    latency: Histogram,
    endpoints: Family<ServiceLabels, Gauge>,
    // Label sets currently exported, so Services that went away are removed.
    exported: Arc<Mutex<BTreeSet<ServiceLabels>>>,
}

impl Default for ForwardMetrics {
    fn default() -> Self {
        Self {
            updates: Family::default(),
            // 1 ms .. ~16 s: an update is milliseconds, a full 10k-Service resync about a second.
            latency: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 15,
            )),
            endpoints: Family::default(),
            exported: Arc::default(),
        }
    }
}

impl ForwardMetrics {
    /// Registers the metrics (`forward_…`) in `registry` (the daemon's `ferrolb_` sub-registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "forward_rule_updates",
            "nftables transactions, by kind (full, incremental) and result (ok, error)",
            self.updates.clone(),
        );
        registry.register(
            "forward_rule_update_seconds",
            "Time from planning to nft applying a transaction",
            self.latency.clone(),
        );
        registry.register(
            "forward_endpoints",
            "Endpoints the forwarder balances over, per Service (all its ports and VIPs)",
            self.endpoints.clone(),
        );
    }

    /// Counts one transaction and records its latency.
    pub fn update(&self, kind: &str, ok: bool, took: Duration) {
        self.updates
            .get_or_create(&UpdateLabels {
                kind: kind.into(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
        self.latency.observe(took.as_secs_f64());
    }

    /// Sets endpoints in use per Service (namespace, name, count), dropping Services not listed.
    pub fn set_endpoints(&self, per_service: impl IntoIterator<Item = (String, String, usize)>) {
        let mut now = BTreeSet::new();
        for (namespace, service, n) in per_service {
            let labels = ServiceLabels { namespace, service };
            self.endpoints.get_or_create(&labels).set(n as i64);
            now.insert(labels);
        }
        let mut exported = self.exported.lock().unwrap_or_else(|e| e.into_inner());
        for gone in exported.difference(&now) {
            self.endpoints.remove(gone);
        }
        *exported = now;
    }
}
