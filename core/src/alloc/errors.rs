//! Why a Service gets no IP, as values whose `reason()` becomes the Service condition's reason.

use std::net::IpAddr;

use super::range::Family;
use super::request::{RequestError, ServiceKey};

/// Why [`Allocator::assign`](super::Allocator::assign) gave a Service no IP.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Every pool the Service may use is full for this family.
    #[error(
        "no free {family} address in pool {pool}: free an address, add addresses to the pool, or use another pool"
    )]
    PoolExhausted {
        /// The pool tried (several are comma-separated, in the order tried).
        pool: String,
        /// The family that ran out.
        family: Family,
    },
    /// No pool may serve this Service (or none has the family it needs).
    #[error("no pool can serve this Service: {why}")]
    NoMatchingPool {
        /// What is missing, e.g. an unknown pool name or a family no pool has.
        why: String,
    },
    /// A requested IP is in no pool this Service may use.
    #[error(
        "requested IP {ip} is not in any pool this Service may use: check the pools' addresses, avoidBuggyIPs and serviceAllocation"
    )]
    RequestedIPNotInPool {
        /// The requested address.
        ip: IpAddr,
    },
    /// A requested IP is held by a Service that does not share it.
    #[error(
        "requested IP {ip} is in use by Service {by}: request another IP, or give both Services the same ferrolb.io/allow-shared-ip key"
    )]
    RequestedIPInUse {
        /// The requested address.
        ip: IpAddr,
        /// A Service holding it.
        by: ServiceKey,
    },
    /// The IP would be shared under the same key, but the Services do not fit together.
    #[error("cannot share {ip} with Service {with}: {why}")]
    SharingConflict {
        /// The shared address.
        ip: IpAddr,
        /// The Service it conflicts with.
        with: ServiceKey,
        /// Which rule failed (a port both use, or different pods under externalTrafficPolicy Local).
        why: String,
    },
    /// The request contradicts itself (e.g. two IPv4 addresses, or a family the Service lacks).
    #[error("invalid request: {why}")]
    InvalidRequest {
        /// What is wrong with it.
        why: String,
    },
}

impl AllocError {
    /// The reason for the Service condition and metrics, e.g. `PoolExhausted`.
    pub fn reason(&self) -> &'static str {
        match self {
            AllocError::PoolExhausted { .. } => "PoolExhausted",
            AllocError::NoMatchingPool { .. } => "NoMatchingPool",
            AllocError::RequestedIPNotInPool { .. } => "RequestedIPNotInPool",
            AllocError::RequestedIPInUse { .. } => "RequestedIPInUse",
            AllocError::SharingConflict { .. } => "SharingConflict",
            AllocError::InvalidRequest { .. } => "InvalidRequest",
        }
    }
}

impl From<RequestError> for AllocError {
    /// A malformed `ferrolb.io/loadBalancerIPs` is an `InvalidRequest`.
    fn from(e: RequestError) -> Self {
        AllocError::InvalidRequest {
            why: format!("ferrolb.io/loadBalancerIPs: {e}"),
        }
    }
}
