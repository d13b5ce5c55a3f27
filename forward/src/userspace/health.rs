//! Which endpoints the proxy avoids for now: an endpoint that refuses or times out a connection
//! is ejected for a backoff that doubles with each consecutive failure; a success clears it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Ejection backoff bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// After the first failure.
    pub first: Duration,
    /// Upper bound after repeated failures.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(2),
            max: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Ejected {
    until: Instant,
    failures: u32,
}

/// Ejected endpoints, shared by all frontends (an endpoint refusing one Service refuses the
/// same address for every Service).
#[derive(Debug, Default)]
pub(crate) struct Health {
    backoff: Backoff,
    ejected: Mutex<HashMap<SocketAddr, Ejected>>,
}

impl Health {
    pub(crate) fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            ejected: Mutex::default(),
        }
    }

    /// `backends` starting at `start` (round robin), healthy ones first, then the ejected ones
    /// soonest-back first (tried only when every healthy one failed).
    pub(crate) fn order(
        &self,
        backends: &[SocketAddr],
        start: usize,
        now: Instant,
    ) -> Vec<SocketAddr> {
        let n = backends.len();
        let ejected = self.ejected.lock().unwrap_or_else(|e| e.into_inner());
        let mut healthy = Vec::with_capacity(n);
        let mut out: Vec<(Instant, SocketAddr)> = Vec::new();
        for i in 0..n {
            let b = backends[(start + i) % n];
            match ejected.get(&b) {
                Some(e) if e.until > now => out.push((e.until, b)),
                _ => healthy.push(b),
            }
        }
        out.sort_by_key(|(until, _)| *until);
        healthy.extend(out.into_iter().map(|(_, b)| b));
        healthy
    }

    /// Records a failed connect; true when this ejects the endpoint (it was not ejected).
    pub(crate) fn fail(&self, b: SocketAddr, now: Instant) -> bool {
        let mut ejected = self.ejected.lock().unwrap_or_else(|e| e.into_inner());
        let e = ejected.entry(b).or_insert(Ejected {
            until: now,
            failures: 0,
        });
        let newly = e.until <= now;
        e.failures = e.failures.saturating_add(1);
        let factor = 1u32 << (e.failures - 1).min(16);
        e.until = now + (self.backoff.first * factor).min(self.backoff.max);
        newly
    }

    /// Records a successful connect.
    pub(crate) fn ok(&self, b: SocketAddr) {
        let mut ejected = self.ejected.lock().unwrap_or_else(|e| e.into_inner());
        ejected.remove(&b);
    }

    /// Forgets endpoints no frontend uses any more.
    pub(crate) fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        let mut ejected = self.ejected.lock().unwrap_or_else(|e| e.into_inner());
        ejected.retain(|b, _| keep(b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ejected_endpoints_go_last_until_their_backoff_ends() {
        let h = Health::new(Backoff::default());
        let bs = [a("198.18.1.2:80"), a("198.18.2.2:80"), a("198.18.3.2:80")];
        let t0 = Instant::now();
        assert_eq!(h.order(&bs, 1, t0), vec![bs[1], bs[2], bs[0]]);
        assert!(h.fail(bs[1], t0));
        assert!(!h.fail(bs[1], t0), "already ejected");
        assert_eq!(h.order(&bs, 1, t0), vec![bs[2], bs[0], bs[1]]);
        // Two failures: 4 s.
        assert_eq!(
            h.order(&bs, 1, t0 + Duration::from_secs(3)),
            vec![bs[2], bs[0], bs[1]]
        );
        assert_eq!(
            h.order(&bs, 1, t0 + Duration::from_secs(5)),
            vec![bs[1], bs[2], bs[0]]
        );
        h.ok(bs[1]);
        assert!(h.fail(bs[1], t0), "a success resets the count");
        assert_eq!(
            h.order(&bs, 0, t0 + Duration::from_secs(3)),
            bs.to_vec(),
            "2 s after one failure"
        );
    }

    #[test]
    fn backoff_is_capped() {
        let h = Health::new(Backoff::default());
        let b = a("198.18.1.2:80");
        let t0 = Instant::now();
        for _ in 0..40 {
            h.fail(b, t0);
        }
        assert_eq!(h.order(&[b], 0, t0 + Duration::from_secs(31)), vec![b]);
    }
}
