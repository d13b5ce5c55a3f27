//! Helpers shared by the allocator's rule tests (`alloc_rules.rs`, `alloc_lifecycle.rs`).
// Each test binary uses a subset of them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_core::alloc::{
    Allocator, Family, FamilyPolicy, FamilyRequest, Pool, Protocol, ServiceKey, ServiceRequest,
    parse_pool_entry,
};

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn pool(name: &str, entries: &[&str]) -> Pool {
    Pool::new(
        name,
        entries
            .iter()
            .map(|e| parse_pool_entry(e).unwrap())
            .collect(),
    )
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn req(name: &str) -> ServiceRequest {
    ServiceRequest::new("default", name)
}

pub fn key(name: &str) -> ServiceKey {
    ServiceKey::new("default", name)
}

pub fn alloc(pools: Vec<Pool>) -> Allocator {
    let mut a = Allocator::new();
    a.set_pools(pools);
    a
}

/// Assigns and returns the addresses, panicking with the error's message on failure.
pub fn ips(a: &mut Allocator, r: &ServiceRequest) -> Vec<IpAddr> {
    a.assign(r)
        .unwrap_or_else(|e| panic!("{}: {e}", r.key))
        .addresses()
}

pub fn shared(name: &str, sharing_key: &str, ports: &[u16]) -> ServiceRequest {
    ServiceRequest {
        sharing_key: Some(sharing_key.into()),
        ports: ports.iter().map(|p| (Protocol::Tcp, *p)).collect(),
        ..req(name)
    }
}

pub fn dual(name: &str, policy: FamilyPolicy) -> ServiceRequest {
    ServiceRequest {
        families: FamilyRequest::new(policy, &[Family::V4, Family::V6]),
        ..req(name)
    }
}
