//! Forwarding outlives announcing for a moment: when this node stops answering for an IP (its
//! owner came back, or a new owner was elected), clients that have not yet seen the new
//! owner's gratuitous packets still send to this node's MAC. Keeping the IP's forwarding rules
//! for [`FORWARD_LINGER`] carries that traffic instead of dropping it, so a handover is
//! make-before-break. Answering ARP/NDP still stops at once: only forwarding lingers.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::Announced;

/// How long an IP this node gave up is still forwarded: the new owner's gratuitous packets go
/// out several times over a few seconds, by which time every client that listens has moved.
pub const FORWARD_LINGER: Duration = Duration::from_secs(10);

/// The IPs to forward: those announced now and those given up less than a period ago.
#[derive(Debug)]
pub struct Linger {
    period: Duration,
    last: Announced,
    released: BTreeMap<IpAddr, (ferrolb_core::announce::ServiceKey, Instant)>,
}

impl Linger {
    /// Lingering for `period`.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: Announced::new(),
            released: BTreeMap::new(),
        }
    }

    /// Takes what is announced now; returns what to forward now.
    pub fn update(&mut self, announced: Announced, now: Instant) -> Announced {
        for (ip, key) in &self.last {
            if !announced.contains_key(ip) {
                self.released.entry(*ip).or_insert((key.clone(), now));
            }
        }
        self.released.retain(|ip, (_, since)| {
            !announced.contains_key(ip) && now.duration_since(*since) < self.period
        });
        let mut forward: Announced = self
            .released
            .iter()
            .map(|(ip, (key, _))| (*ip, key.clone()))
            .collect();
        forward.extend(announced.iter().map(|(ip, k)| (*ip, k.clone())));
        self.last = announced;
        forward
    }

    /// When the next lingering IP expires (call [`Linger::update`] again then).
    pub fn next_expiry(&self) -> Option<Instant> {
        self.released
            .values()
            .map(|(_, since)| *since + self.period)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announced(ips: &[(&str, &str)]) -> Announced {
        ips.iter()
            .map(|(ip, svc)| {
                (
                    ip.parse().unwrap(),
                    ferrolb_core::announce::ServiceKey::new("ns", *svc),
                )
            })
            .collect()
    }

    #[test]
    fn a_given_up_ip_is_forwarded_for_the_period_then_dropped() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut l = Linger::new(s(10));
        let both = announced(&[("192.0.2.1", "a"), ("192.0.2.2", "b")]);
        assert_eq!(l.update(both.clone(), t0), both);
        assert_eq!(l.next_expiry(), None);
        // b moves away: still forwarded, expiring 10 s later.
        let only_a = announced(&[("192.0.2.1", "a")]);
        assert_eq!(l.update(only_a.clone(), t0 + s(1)), both);
        assert_eq!(l.next_expiry(), Some(t0 + s(11)));
        // Unrelated updates do not restart its clock.
        assert_eq!(l.update(only_a.clone(), t0 + s(5)), both);
        assert_eq!(l.next_expiry(), Some(t0 + s(11)));
        assert_eq!(l.update(only_a.clone(), t0 + s(11)), only_a);
        assert_eq!(l.next_expiry(), None);
    }

    #[test]
    fn an_ip_that_comes_back_is_announced_again_and_no_longer_lingers() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut l = Linger::new(s(10));
        let a = announced(&[("192.0.2.1", "a")]);
        l.update(a.clone(), t0);
        l.update(Announced::new(), t0 + s(1));
        assert_eq!(l.update(a.clone(), t0 + s(2)), a);
        assert_eq!(l.next_expiry(), None);
        // Given up again later: a fresh period from then.
        l.update(Announced::new(), t0 + s(30));
        assert_eq!(l.next_expiry(), Some(t0 + s(40)));
        // The IP now belongs to another Service here: the current one wins.
        let other = announced(&[("192.0.2.1", "other")]);
        assert_eq!(l.update(other.clone(), t0 + s(31)), other);
    }
}
