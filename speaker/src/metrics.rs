//! The speaker's own metrics, registered under `ferrolb_` next to the runtime's.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Counters and gauges the announcer and the wire update.
#[derive(Debug, Clone, Default)]
pub struct SpeakerMetrics {
    announced: Gauge,
    live: Gauge,
    answered: Family<ProtocolLabels, Counter>,
    gratuitous: Family<ProtocolLabels, Counter>,
    drops: Family<ReasonLabels, Counter>,
    takeovers: Counter,
}

impl SpeakerMetrics {
    /// Registers every metric in `registry` (the runtime's `ferrolb` sub-registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "l2_announced_ips",
            "Service IPs this node answers ARP/NDP for",
            self.announced.clone(),
        );
        registry.register(
            "speakers_live",
            "Speakers alive in the membership, this one included",
            self.live.clone(),
        );
        registry.register(
            "l2_requests_answered",
            "ARP requests and neighbour solicitations answered",
            self.answered.clone(),
        );
        registry.register(
            "l2_gratuitous_sent",
            "Gratuitous ARP and unsolicited neighbour advertisement packets sent",
            self.gratuitous.clone(),
        );
        registry.register(
            "l2_dropped",
            "ARP/NDP packets not answered, by reason",
            self.drops.clone(),
        );
        registry.register(
            "l2_takeovers",
            "IPs this node started announcing",
            self.takeovers.clone(),
        );
    }

    /// Sets the number of announced IPs.
    pub fn set_announced(&self, n: usize) {
        self.announced.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the number of live speakers.
    pub fn set_live(&self, n: usize) {
        self.live.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// One request answered (`arp` or `ndp`).
    pub fn answered(&self, protocol: &'static str) {
        self.answered
            .get_or_create(&ProtocolLabels { protocol })
            .inc();
    }

    /// One gratuitous packet sent (`arp` or `ndp`).
    pub fn gratuitous(&self, protocol: &'static str) {
        self.gratuitous
            .get_or_create(&ProtocolLabels { protocol })
            .inc();
    }

    /// One packet dropped for `reason`.
    pub fn dropped(&self, reason: &'static str) {
        self.drops.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// One takeover.
    pub fn takeover(&self) {
        self.takeovers.inc();
    }
}
