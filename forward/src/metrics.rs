//! The forwarder's Prometheus metrics, registered into the daemon's registry.

use crate::{CounterReading, FrontendCounts};
use ferrolb_core::forward::{Frontend, ServiceKey};
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

/// Rule updates, their latency, endpoints in use, connections and bytes forwarded per Service.
#[derive(Debug, Clone)]
pub struct ForwardMetrics {
    updates: Family<UpdateLabels, Counter>,
    latency: Histogram,
    endpoints: Family<ServiceLabels, Gauge>,
    connections: Family<ServiceLabels, Counter>,
    bytes: Family<ServiceLabels, Counter>,
    // The kernel counters last read, per Service and frontend, to add only what they grew by
    // (they restart from zero when a frontend's counters are recreated, e.g. after a restart).
    kernel_counts: Arc<Mutex<CounterReading>>,
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
            bytes: Family::default(),
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
        registry.register(
            "forward_bytes",
            "Bytes the kernel path forwarded per Service, both directions, IP headers included (read from nftables counters)",
            self.bytes.clone(),
        );
    }

    /// Adds what each Service's kernel connection and byte counters (one pair per frontend)
    /// grew by since the last reading; a counter lower than before was recreated and counts
    /// from zero. Services no longer read are dropped.
    pub fn observe_counters(&self, now: &CounterReading) {
        let mut last = self.kernel_counts.lock().unwrap_or_else(|e| e.into_inner());
        let grew = |n: u64, before: u64| if n >= before { n - before } else { n };
        let none = BTreeMap::new();
        for (key, frontends) in now {
            let before: &BTreeMap<Frontend, FrontendCounts> = last.get(key).unwrap_or(&none);
            let (mut conns, mut bytes) = (0, 0);
            for (fe, n) in frontends {
                let b = before.get(fe).copied().unwrap_or_default();
                conns += grew(n.connections, b.connections);
                bytes += grew(n.bytes, b.bytes);
            }
            let labels = labels(key);
            self.connections.get_or_create(&labels).inc_by(conns);
            self.bytes.get_or_create(&labels).inc_by(bytes);
        }
        for gone in last.keys().filter(|k| !now.contains_key(*k)) {
            self.connections.remove(&labels(gone));
            self.bytes.remove(&labels(gone));
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

fn labels(key: &ServiceKey) -> ServiceLabels {
    ServiceLabels {
        namespace: key.namespace.clone(),
        service: key.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_core::forward::Protocol;
    use prometheus_client::encoding::text::encode;

    fn scrape(m: &ForwardMetrics) -> String {
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn connections_and_bytes_follow_kernel_counters_across_resets_and_removals() {
        let m = ForwardMetrics::default();
        let web = ServiceKey::new("default", "web");
        let dns = ServiceKey::new("kube-system", "dns");
        let fe = |port| Frontend {
            vip: "192.0.2.10".parse().unwrap(),
            protocol: Protocol::Tcp,
            port,
        };
        let c = |connections, bytes| FrontendCounts { connections, bytes };
        let reading = |v: Vec<(&ServiceKey, u16, FrontendCounts)>| {
            let mut r = CounterReading::new();
            for (k, port, counts) in v {
                r.entry(k.clone()).or_default().insert(fe(port), counts);
            }
            r
        };
        m.observe_counters(&reading(vec![
            (&web, 80, c(5, 900)),
            (&web, 443, c(4, 300)),
            (&dns, 53, c(2, 80)),
        ]));
        m.observe_counters(&reading(vec![
            (&web, 80, c(8, 1500)),
            (&web, 443, c(4, 300)),
            (&dns, 53, c(2, 80)),
        ]));
        let text = scrape(&m);
        for line in [
            r#"forward_connections_total{namespace="default",service="web"} 12"#,
            r#"forward_bytes_total{namespace="default",service="web"} 1800"#,
            r#"forward_bytes_total{namespace="kube-system",service="dns"} 80"#,
        ] {
            assert!(text.contains(line), "{line} missing: {text}");
        }
        // Port 443 was removed and added again: its counters restarted and counted 3 and 200
        // since, while port 80's went on.
        m.observe_counters(&reading(vec![
            (&web, 80, c(9, 1600)),
            (&web, 443, c(3, 200)),
        ]));
        let text = scrape(&m);
        for line in [
            r#"forward_connections_total{namespace="default",service="web"} 16"#,
            r#"forward_bytes_total{namespace="default",service="web"} 2100"#,
        ] {
            assert!(text.contains(line), "{line} missing: {text}");
        }
        assert!(
            !text.contains("kube-system"),
            "a Service no longer forwarded is dropped: {text}"
        );
    }
}
