//! The forwarder's Prometheus metrics, registered into the daemon's registry.

use ferrolb_core::forward::ServiceKey;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet};
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

/// Rule updates, their latency, endpoints in use and connections forwarded per Service.
#[derive(Debug, Clone)]
pub struct ForwardMetrics {
    updates: Family<UpdateLabels, Counter>,
    latency: Histogram,
    endpoints: Family<ServiceLabels, Gauge>,
    connections: Family<ServiceLabels, Counter>,
    // The kernel counters last read, to add only what they grew by (they restart from zero
    // when a Service's rules are recreated, e.g. after a restart).
    kernel_counts: Arc<Mutex<BTreeMap<ServiceKey, u64>>>,
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
            connections: Family::default(),
            kernel_counts: Arc::default(),
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
        registry.register(
            "forward_connections",
            "Connections the kernel path forwarded, per Service (read from nftables counters)",
            self.connections.clone(),
        );
    }

    /// Adds what each Service's kernel connection counter grew by since the last reading; a
    /// counter lower than before was recreated and counts from zero.
    pub fn observe_connections(&self, now: &BTreeMap<ServiceKey, u64>) {
        let mut last = self.kernel_counts.lock().unwrap_or_else(|e| e.into_inner());
        for (key, &n) in now {
            let before = last.get(key).copied().unwrap_or(0);
            let grew = if n >= before { n - before } else { n };
            let labels = ServiceLabels {
                namespace: key.namespace.clone(),
                service: key.name.clone(),
            };
            self.connections.get_or_create(&labels).inc_by(grew);
        }
        for gone in last.keys().filter(|k| !now.contains_key(*k)) {
            self.connections.remove(&ServiceLabels {
                namespace: gone.namespace.clone(),
                service: gone.name.clone(),
            });
        }
        *last = now.clone();
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

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn scrape(m: &ForwardMetrics) -> String {
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn connections_follow_kernel_counters_across_resets_and_removals() {
        let m = ForwardMetrics::default();
        let web = ServiceKey::new("default", "web");
        let dns = ServiceKey::new("kube-system", "dns");
        m.observe_connections(&BTreeMap::from([(web.clone(), 5), (dns.clone(), 2)]));
        m.observe_connections(&BTreeMap::from([(web.clone(), 8), (dns.clone(), 2)]));
        let line = r#"forward_connections_total{namespace="default",service="web"} 8"#;
        assert!(scrape(&m).contains(line), "{}", scrape(&m));
        // The table was recreated: web's counter restarted and counted 3 since.
        m.observe_connections(&BTreeMap::from([(web.clone(), 3)]));
        let text = scrape(&m);
        let line = r#"forward_connections_total{namespace="default",service="web"} 11"#;
        assert!(text.contains(line), "{text}");
        assert!(
            !text.contains("kube-system"),
            "a Service no longer forwarded is dropped: {text}"
        );
    }
}
