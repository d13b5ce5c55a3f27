//! Pools as the allocator sees them: ranges, flags and which Services they serve.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::net::IpAddr;

use super::range::{AddressRange, Family, is_buggy_ip};
use crate::selector::LabelSelector;

/// Whether a pool hands out addresses to Services that did not ask for it by name or IP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AutoAssign {
    /// Any Service the pool serves may get an address from it (the CRD default).
    #[default]
    Yes,
    /// Only Services that name the pool or request one of its addresses.
    No,
}

/// Whether a pool skips IPv4 addresses ending in `.0` and `.255`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BuggyIps {
    /// Every address of the ranges is handed out (the CRD default).
    #[default]
    Use,
    /// `.0` and `.255` are treated as not in the pool.
    Avoid,
}

impl From<bool> for AutoAssign {
    /// `spec.autoAssign`.
    fn from(b: bool) -> Self {
        if b { AutoAssign::Yes } else { AutoAssign::No }
    }
}

impl From<bool> for BuggyIps {
    /// `spec.avoidBuggyIPs`.
    fn from(b: bool) -> Self {
        if b { BuggyIps::Avoid } else { BuggyIps::Use }
    }
}

/// `spec.serviceAllocation`: which Services a pool serves and its rank among pools.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolAllocation {
    /// Lower is tried first; pools without a priority come after all pools with one.
    pub priority: Option<i32>,
    /// Namespaces served by name.
    pub namespaces: Vec<String>,
    /// Namespaces served by label (any selector matching is enough).
    pub namespace_selectors: Vec<LabelSelector>,
    /// Services served by label (any selector matching is enough; none means all).
    pub service_selectors: Vec<LabelSelector>,
}

/// An `IPAddressPool`, with its `addresses` already parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    /// The pool's name (`metadata.name`).
    pub name: String,
    /// Its addresses; ranges may be of both families and may overlap.
    pub ranges: Vec<AddressRange>,
    /// `spec.autoAssign`.
    pub auto_assign: AutoAssign,
    /// `spec.avoidBuggyIPs`.
    pub avoid_buggy_ips: BuggyIps,
    /// `spec.serviceAllocation`.
    pub allocation: PoolAllocation,
}

impl Pool {
    /// A pool serving everyone, auto-assigning, using every address: handy in tests.
    pub fn new(name: impl Into<String>, ranges: Vec<AddressRange>) -> Pool {
        Pool {
            name: name.into(),
            ranges,
            auto_assign: AutoAssign::Yes,
            avoid_buggy_ips: BuggyIps::Use,
            allocation: PoolAllocation::default(),
        }
    }

    /// Whether the pool hands out `ip` (in a range, and not a skipped `.0`/`.255`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
            && !(self.avoid_buggy_ips == BuggyIps::Avoid && is_buggy_ip(ip))
    }

    /// Whether the pool has any address of `family`.
    pub fn has_family(&self, family: Family) -> bool {
        self.ranges.iter().any(|r| r.family() == family)
    }

    /// Whether a Service in a namespace labelled `namespace_labels` may use the pool.
    pub fn serves_namespace(
        &self,
        namespace: &str,
        namespace_labels: &BTreeMap<String, String>,
    ) -> bool {
        let a = &self.allocation;
        (a.namespaces.is_empty() && a.namespace_selectors.is_empty())
            || a.namespaces.iter().any(|n| n == namespace)
            || a.namespace_selectors
                .iter()
                .any(|s| s.matches(namespace_labels))
    }

    /// Whether a Service labelled `service_labels` may use the pool (namespace aside).
    pub fn serves_service(&self, service_labels: &BTreeMap<String, String>) -> bool {
        let s = &self.allocation.service_selectors;
        s.is_empty() || s.iter().any(|s| s.matches(service_labels))
    }

    /// The order in which pools are tried: priority (lowest first, none last), then name.
    pub fn rank_cmp(&self, other: &Pool) -> Ordering {
        fn key(p: &Pool) -> (bool, Option<i32>, &str) {
            (
                p.allocation.priority.is_none(),
                p.allocation.priority,
                &p.name,
            )
        }
        key(self).cmp(&key(other))
    }
}
