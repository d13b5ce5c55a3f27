//! The IP allocator: which LoadBalancer Service holds which address of which pool.
//!
//! Pure: plain values in ([`Pool`], [`ServiceRequest`]), plain values out ([`Assignment`],
//! [`AllocError`], [`PoolsReport`], [`PoolCounts`]). No kube types, no I/O, no clock.
//!
//! # How the controller uses it
//!
//! 1. Parse every `IPAddressPool` with [`parse_pool_entry`] and call [`Allocator::set_pools`].
//!    Re-run [`Allocator::assign`] for every Service in [`PoolsReport::invalidated`] (their IPs
//!    were already released) and every pending Service; put [`PoolsReport::overlaps`] in the
//!    pools' `Overlapping` conditions and [`Allocator::pool_counts`] in their status.
//! 2. For each LoadBalancer Service, build a [`ServiceRequest`] (with `current_ips` from
//!    `status.loadBalancer.ingress`) and call [`Allocator::assign`]; on `Ok` write the IPs (if
//!    [`Assignment::changed`]) and `ferrolb.io/ip-allocated-from-pool`; on `Err` the Service
//!    holds nothing any more: clear its ingress, set the condition to [`AllocError::reason`] and
//!    emit the error's `Display` text as the Event message.
//! 3. When a Service is deleted or stops being ours, call [`Allocator::release`].
//!
//! # Restarts
//!
//! The Services' status is the only record. On start: `set_pools`, then [`Allocator::restore`]
//! every Service that already holds IPs (non-empty `current_ips`), then `assign` every Service
//! (holders again, first, then the others). `restore` only re-registers still-valid addresses
//! and never takes a new one, so no Service (not even a holder whose address became invalid or
//! who lacks a family) can take an address whose holder is not back yet. A holder whose
//! addresses are valid keeps them exactly: a restart never moves or duplicates an IP.
//! (Calling `assign` for holders first works too, except that a holder that needs a *new*
//! address could take one belonging to a holder not yet seen.)
//!
//! # Memory
//!
//! State is proportional to the number of held addresses, never to pool size: held addresses
//! are also kept per family as maximal runs (`start -> end`, `u128`), so the lowest free address
//! of a range is found in a few `O(log n)` lookups, and an IPv6 /64 (or /0) pool costs no more
//! than a /30.

mod errors;
mod pool;
mod range;
mod request;
mod rules;
mod state;
mod table;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

pub use crate::selector::{LabelSelector, Requirement};
pub use errors::AllocError;
pub use pool::{AutoAssign, BuggyIps, Pool, PoolAllocation};
pub use range::{AddressRange, Family, PoolEntryError, is_buggy_ip, parse_pool_entry};
pub use request::{
    FamilyPolicy, FamilyRequest, Protocol, RequestError, ServiceKey, ServiceRequest,
    parse_requested_ips,
};

use state::State;

/// What a successful [`Allocator::assign`] gave a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The Service's addresses, in its `ipFamilies` order, each with the pool it came from
    /// (the allocator's own copy of the pool name, shared rather than copied per call).
    pub ips: Vec<(IpAddr, Arc<str>)>,
    /// Whether `ips` differ from the request's `current_ips` (so the status needs writing).
    pub changed: bool,
}

impl Assignment {
    /// Just the addresses, in order.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.ips.iter().map(|(ip, _)| *ip).collect()
    }
}

/// Two pools that have at least one address in common (reported, not refused).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Overlap {
    /// The pool whose name sorts first.
    pub a: String,
    /// The other pool.
    pub b: String,
    /// One address both hand out (the lowest of the first overlapping ranges found).
    pub example: IpAddr,
}

/// What [`Allocator::set_pools`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolsReport {
    /// Pairs of pools sharing addresses, sorted.
    pub overlaps: Vec<Overlap>,
    /// Services that lost one or more IPs (no longer in a pool they may use); all their IPs
    /// were released: re-run [`Allocator::assign`] for them. Sorted.
    pub invalidated: Vec<ServiceKey>,
    /// Services that kept their IPs but whose pool name changed (rewrite
    /// `ferrolb.io/ip-allocated-from-pool`). Sorted.
    pub repooled: Vec<ServiceKey>,
}

impl PoolsReport {
    /// The pools `pool` overlaps with, for its `Overlapping` condition.
    pub fn overlapping_with(&self, pool: &str) -> Vec<&str> {
        self.overlaps
            .iter()
            .filter_map(|o| {
                if o.a == pool {
                    Some(o.b.as_str())
                } else if o.b == pool {
                    Some(o.a.as_str())
                } else {
                    None
                }
            })
            .collect()
    }
}

/// Exact address counts of one pool (what `ferrolb_api::IPAddressPoolStatus::set_counts` takes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// IPv4 addresses held by Services (from this pool).
    pub assigned_v4: u128,
    /// IPv6 addresses held by Services (from this pool).
    pub assigned_v6: u128,
    /// IPv4 addresses still free (not held by anyone, through any pool).
    pub available_v4: u128,
    /// IPv6 addresses still free.
    pub available_v6: u128,
}

/// The allocator: pools, and which Services hold which addresses.
#[derive(Debug, Default)]
pub struct Allocator {
    state: State,
}

impl Allocator {
    /// An allocator with no pools and no assignments.
    pub fn new() -> Allocator {
        Allocator::default()
    }

    /// Replaces the pool set; releases the IPs of Services no longer allowed them and says who.
    pub fn set_pools(&mut self, pools: Vec<Pool>) -> PoolsReport {
        self.state.set_pools(pools)
    }

    /// Gives the Service its IPs: the current ones if still valid, else requested, else free.
    ///
    /// Rules, in order: `current_ips` (and what this allocator already gave the Service) are
    /// kept when they are in a pool the Service may use (its `ferrolb.io/address-pool` if set),
    /// of a family it still wants, equal to `requested_ips` if any, and not held by another
    /// Service it cannot share with. Missing families are then filled from `requested_ips`
    /// (each must be in a pool the Service may use, auto-assign or not), or else from the
    /// pools the Service may use (`requested_pool`, or the auto-assign pools serving its
    /// namespace and labels), by priority: first an address already shared under the
    /// Service's sharing key whose ports do not collide, then the lowest free address.
    /// IPv6 for a dual-stack Service comes from the IPv4 address's pool when it can.
    ///
    /// Idempotent: the same request again returns the same IPs. On `Err` the Service holds
    /// no IP afterwards.
    pub fn assign(&mut self, req: &ServiceRequest) -> Result<Assignment, AllocError> {
        self.state.assign(req)
    }

    /// Restart only: re-registers the still-valid `current_ips` (same checks as `assign`) and
    /// takes no new address; returns what was kept. Call for all holders before any `assign`.
    pub fn restore(&mut self, req: &ServiceRequest) -> Vec<(IpAddr, Arc<str>)> {
        self.state.restore(req)
    }

    /// Frees every IP the Service holds (nothing happens if it holds none).
    pub fn release(&mut self, key: &ServiceKey) {
        self.state.release(key);
    }

    /// The IPs the Service holds, with their pools, in its family order.
    pub fn held(&self, key: &ServiceKey) -> Vec<(IpAddr, String)> {
        self.state.held(key)
    }

    /// The Services holding `ip` (several when shared), sorted.
    pub fn holders(&self, ip: IpAddr) -> Vec<ServiceKey> {
        self.state.holders(ip)
    }

    /// Counts for pool `name` (all zero for an unknown pool).
    pub fn pool_counts(&self, name: &str) -> PoolCounts {
        self.state.pool_counts(name)
    }

    /// The current pools, by name.
    pub fn pools(&self) -> &BTreeMap<String, Pool> {
        self.state.pools()
    }

    /// How many entries the internal tables hold; grows with held IPs, never with pool size.
    pub fn footprint(&self) -> usize {
        self.state.footprint()
    }
}
